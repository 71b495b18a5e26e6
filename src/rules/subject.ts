/** The subject `rules explain` and `rules test` decide for when the command line or test case says nothing. */
import type { Subject } from './types.js';

export const DEFAULT_SUBJECT: Readonly<Omit<Subject, 'now'>> = {
  user: 'stepgate',
  groups: [],
  database: 'postgres',
  application: 'psql',
  clientAddress: '127.0.0.1',
  tls: false,
};

/** One line: `user alice (groups dba) on database postgres via psql from 127.0.0.1 without TLS at ...`. */
export function describeSubject(subject: Subject): string {
  const groups = subject.groups.length ? ` (groups ${subject.groups.join(', ')})` : ' (no groups)';
  return (
    `user ${subject.user}${groups} on database ${subject.database} via ${subject.application || '(no application name)'} ` +
    `from ${subject.clientAddress || '(no address)'} ${subject.tls ? 'with' : 'without'} TLS at ${subject.now.toISOString()}`
  );
}
