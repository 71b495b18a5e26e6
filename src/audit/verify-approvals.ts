/**
 * The approvals part of `stepgate audit verify`: every passkey approval recorded in a `challenge.resolved`
 * event (a held statement) or a `login.resolved` event (a login held at connect) is checked again from the
 * trail alone, independently of the hash chain (which whoever can rewrite the file and holds the signing
 * key can rebuild):
 *
 *   1. the statement it approves is recomputed from the recorded events (connection.start, statement,
 *      preview) into its digest (src/stepup/evidence.ts), and with the event's challenge id and the recorded
 *      nonce into the WebAuthn challenge, which must be the one inside the signed clientDataJSON
 *      (`type` webauthn.get): an edited statement, or an assertion copied from another approval, fails here;
 *   2. no assertion is recorded twice (a replayed one);
 *   3. authenticatorData names the recorded relying party and says the user was verified;
 *   4. the signature over authenticatorData ‖ SHA-256(clientDataJSON) holds with the public key recorded
 *      when the passkey was enrolled (`passkey.enrolled`, COSE): a forged or altered assertion fails here.
 *
 * TOTP and recovery-code approvals have no signature to check: they are counted, not failed. Passkey
 * approvals recorded before stepgate signed them are counted as unsigned, until the trail's first signed
 * approval or key record; after that a passkey approval without its assertion is a break (the evidence
 * was removed). A signed approval whose passkey has no key in the trail (enrolled before keys were
 * recorded, or its enrollment pruned) is a warning: its signature cannot be checked, as is an approval
 * whose statement retention pruned.
 */
import { createHash } from 'node:crypto';
import type Database from 'better-sqlite3';
import { approvalChallenge, describeRecorded, statementDigest, type ApprovalStatement, type SignedAssertion } from '../stepup/evidence.js';
import type { EventRow } from './format.js';

export interface ApprovalCounts {
  /** Passkey approvals whose assertion was checked and holds. */
  verified: number;
  /** Approvals with a TOTP or recovery code: nothing to check a signature of. */
  codes: number;
  /** Passkey approvals recorded before stepgate kept their assertion. */
  unsigned: number;
  /** Signed passkey approvals that cannot be checked: no public key in the trail, or the statement pruned. */
  noKey: number;
  /** Approvals that failed a check (reported as errors). */
  failed: number;
}

interface RecordedApprover {
  user: string;
  credential: string | null;
  factor?: string;
  passkey?: string;
  signed?: SignedAssertion;
}

interface KeyRecord {
  user: string;
  name: string;
  publicKey: Uint8Array;
}

type Report = (seq: number, message: string) => void;

/** `pruned`: retention removed the trail's first events (an approval may have outlived its statement). */
export async function checkApprovals(db: Database.Database, describe: (row: EventRow) => string, error: Report, warning: Report, pruned = false): Promise<ApprovalCounts> {
  const counts: ApprovalCounts = { verified: 0, codes: 0, unsigned: 0, noKey: 0, failed: 0 };
  const starts = new Map<number, Record<string, unknown>>();
  /** Held statements by `session:sseq` (only those can be approved), and their previews. */
  const held = new Map<string, Record<string, unknown>>();
  const previews = new Map<string, Record<string, unknown>>();
  const keys = new Map<string, KeyRecord>();
  const assertions = new Map<string, number>();
  let signing = false;
  // Iterated, not loaded: a trail can hold millions of statements (only held ones are kept, below).
  const rows = db
    .prepare("SELECT seq, session, sseq, time, kind, body, hash FROM events WHERE kind IN ('connection.start', 'statement', 'preview', 'challenge.resolved', 'login.resolved', 'passkey.enrolled') ORDER BY seq")
    .iterate() as IterableIterator<EventRow>;
  for (const row of rows) {
    // Most statements were allowed: not worth parsing (a held one's decision says "step-up").
    if (row.kind === 'statement' && !row.body.includes('"step-up"')) continue;
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(row.body) as Record<string, unknown>;
    } catch {
      continue; // the chain check reports it
    }
    switch (row.kind) {
      case 'connection.start':
        starts.set(row.session, { connection: body.connection, user: body.user, database: body.database });
        continue;
      case 'statement':
        if ((body.decision as { action?: unknown } | undefined)?.action === 'step-up') held.set(`${row.session}:${row.sseq}`, body);
        continue;
      case 'preview':
        previews.set(`${row.session}:${String(body.statement)}`, body);
        continue;
      case 'passkey.enrolled':
        signing = true;
        if (typeof body.credential === 'string' && typeof body.public_key === 'string') {
          keys.set(body.credential, { user: String(body.user), name: String(body.name ?? ''), publicKey: new Uint8Array(Buffer.from(body.public_key, 'base64url')) });
        }
        continue;
    }
    // challenge.resolved (a held statement) or login.resolved (a login held at connect)
    const login = row.kind === 'login.resolved';
    const key = `${row.session}:${String(body.statement)}`;
    const statement = login ? undefined : held.get(key);
    if (!login) held.delete(key); // resolved once: kept no longer
    if (body.status !== 'approved' || typeof body.challenge !== 'string') continue;
    const challenge = body.challenge;
    for (const a of (body.approvers as RecordedApprover[] | undefined) ?? []) {
      if (a.factor === 'totp' || a.factor === 'recovery') {
        counts.codes++;
        continue;
      }
      if (a.credential === null || a.credential === undefined) continue; // an earlier grant, no ceremony
      const who = `the approval by ${a.user} with passkey ${passkeyName(a, keys)}`;
      const fail = (message: string): void => {
        counts.failed++;
        error(row.seq, `event ${describe(row)}: ${who} ${message}`);
      };
      if (!a.signed) {
        if (signing) fail('has no signed assertion: stepgate records one with every passkey approval (it was removed from the trail)');
        else counts.unsigned++;
        continue;
      }
      signing = true;
      let description: ApprovalStatement;
      let what: string;
      if (login) {
        // The login's facts are in the event itself.
        description = {
          v: 1,
          kind: 'connect',
          connection: String(body.connection),
          user: String(body.user),
          database: String(body.database),
          sql: null,
          params: null,
          rule: typeof body.rule === 'string' ? body.rule : null,
          file: typeof body.file === 'string' ? body.file : null,
          preview: null,
        };
        what = 'the login (this event) was changed after it was approved';
      } else {
        const start = starts.get(row.session);
        if (!statement || !start) {
          if (pruned && row.session !== 0) {
            // Retention removed the statement (or its session's start) and kept its approval.
            counts.noKey++;
            warning(row.seq, `event ${describe(row)}: ${who} cannot be checked: the statement it approves was pruned by retention`);
          } else fail(`approves statement #${String(body.statement)} of session ${row.session}, which is not in the trail as a held statement`);
          continue;
        }
        description = describeRecorded(start, statement, previews.get(key) ?? null);
        what = `the statement (session ${row.session} #${String(body.statement)}) was changed after it was approved`;
      }
      const problem = await checkAssertion({ ...a, signed: a.signed }, description, challenge, what, keys, assertions, row.seq);
      if (problem === null) counts.verified++;
      else if (problem === NO_KEY) {
        counts.noKey++;
        warning(row.seq, `event ${describe(row)}: ${who} cannot be signature-checked: the trail holds no public key for this passkey (enrolled before stepgate recorded keys, or its passkey.enrolled event was pruned)`);
      } else fail(problem);
    }
  }
  return counts;
}

const NO_KEY = Symbol('no key');

/** The WebAuthn helpers, loaded when the first signature is checked (half a second of module loading). */
let helpers: Promise<typeof import('@simplewebauthn/server/helpers')> | null = null;

/**
 * Checks one recorded assertion against the description it must sign; null when it holds, NO_KEY when the
 * passkey's key is not in the trail, else what is wrong (completing "the approval by ... with passkey ...").
 */
async function checkAssertion(
  a: RecordedApprover & { signed: SignedAssertion },
  description: ApprovalStatement,
  challenge: string,
  changed: string,
  keys: Map<string, KeyRecord>,
  assertions: Map<string, number>,
  seq: number,
): Promise<string | typeof NO_KEY | null> {
  const s = a.signed;
  let client: { type?: unknown; challenge?: unknown };
  let clientBytes: Buffer;
  try {
    clientBytes = Buffer.from(String(s.client_data_json), 'base64url');
    client = JSON.parse(clientBytes.toString('utf8')) as typeof client;
  } catch {
    return 'carries a clientDataJSON that is not JSON';
  }
  if (client.type !== 'webauthn.get') return `carries a clientDataJSON of type ${JSON.stringify(client.type)}, not webauthn.get`;
  const digest = statementDigest(description);
  if (client.challenge !== approvalChallenge(digest, challenge, String(s.nonce)).toString('base64url')) {
    const asRecorded = approvalChallenge(String(s.digest), challenge, String(s.nonce)).toString('base64url');
    if (s.digest !== digest && client.challenge === asRecorded) {
      return `was signed for another ${description.kind === 'connect' ? 'login' : 'statement'} than the one recorded: ${changed} (its digest is ${digest.slice(0, 12)}…, the signed one ${String(s.digest).slice(0, 12)}…)`;
    }
    return `carries an assertion that does not answer this approval's challenge (${challenge}): it was made for another approval (replayed) or altered`;
  }
  const seen = assertions.get(s.signature);
  if (seen !== undefined) return `repeats the assertion recorded in event ${seen} (replayed)`;
  assertions.set(s.signature, seq);
  const record = keys.get(a.credential ?? '');
  if (!record) return NO_KEY;
  if (record.user !== a.user) return `names a passkey that was enrolled for ${record.user}`;
  helpers ??= import('@simplewebauthn/server/helpers');
  const { parseAuthenticatorData, verifySignature } = await helpers;
  let authData;
  try {
    authData = parseAuthenticatorData(new Uint8Array(Buffer.from(String(s.authenticator_data), 'base64url')));
  } catch {
    return 'carries authenticatorData that cannot be read';
  }
  if (!Buffer.from(authData.rpIdHash).equals(createHash('sha256').update(String(s.rp_id)).digest())) return `carries an assertion for another relying party than ${JSON.stringify(s.rp_id)}`;
  if (!authData.flags.up || !authData.flags.uv) return 'carries an assertion made without user presence and verification';
  const signed = Buffer.concat([Buffer.from(String(s.authenticator_data), 'base64url'), createHash('sha256').update(clientBytes).digest()]);
  let ok = false;
  try {
    ok = await verifySignature({ signature: new Uint8Array(Buffer.from(String(s.signature), 'base64url')), data: new Uint8Array(signed), credentialPublicKey: record.publicKey as Uint8Array<ArrayBuffer> });
  } catch {
    ok = false;
  }
  return ok ? null : "carries a signature that is not valid for this passkey's public key: the assertion was forged or altered";
}

function passkeyName(a: RecordedApprover, keys: Map<string, KeyRecord>): string {
  const name = a.passkey ?? keys.get(a.credential ?? '')?.name;
  const id = (a.credential ?? '').slice(0, 10);
  return name ? `"${name}" (${id}…)` : `${id}…`;
}
