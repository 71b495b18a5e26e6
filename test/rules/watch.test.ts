/** Hot reload: edits take effect without a restart; broken edits keep the last valid rules and say where. */
import t from 'tap';
import { rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { RuleError } from '../../src/rules/errors.js';
import { RuleLoadError, type LoadedRules } from '../../src/rules/load.js';
import { watchRules } from '../../src/rules/watch.js';
import { statement, subject, tempDir } from './helpers.js';

type Event = { kind: 'reload'; rules: LoadedRules } | { kind: 'invalid'; errors: RuleError[] };

/** Callbacks as a queue of events that tests await (no sleeping). */
function eventQueue() {
  const events: Event[] = [];
  const waiting: Array<(event: Event) => void> = [];
  const push = (event: Event) => {
    const waiter = waiting.shift();
    if (waiter) waiter(event);
    else events.push(event);
  };
  return {
    options: {
      onReload: (rules: LoadedRules) => push({ kind: 'reload', rules }),
      onInvalid: (errors: RuleError[]) => push({ kind: 'invalid', errors }),
    },
    next: (): Promise<Event> => {
      const event = events.shift();
      return event ? Promise.resolve(event) : new Promise((resolve) => waiting.push(resolve));
    },
  };
}

const DELETE = statement({ command: 'DELETE', classes: ['write'] });
const allowAll = 'default: allow\n';
const denyWrites = 'rules:\n  - name: deny-writes\n    match: {class: write}\n    action: deny\n';

t.test('added, edited (by rename) and removed files take effect within a second', async (t) => {
  const dir = await tempDir(t, { '00-base.yaml': allowAll });
  const queue = eventQueue();
  const watcher = await watchRules(dir, queue.options);
  t.teardown(() => watcher.close());
  const decide = () => watcher.ruleSet.decide([DELETE], subject());
  t.equal(decide().action, 'allow');

  let started = Date.now();
  await writeFile(join(dir, '10-team.yaml'), denyWrites);
  let event = await queue.next();
  t.equal(event.kind, 'reload', 'a new file is picked up');
  t.ok(Date.now() - started < 1000, 'within a second');
  t.equal(decide().action, 'deny');
  t.equal(decide().rule, 'deny-writes');
  t.equal(watcher.current.ruleCount, 1);

  // Editors save by writing a temporary file and renaming it over the original.
  started = Date.now();
  await writeFile(join(dir, '.10-team.yaml.tmp'), denyWrites.replace('deny\n', 'step-up\n'));
  await rename(join(dir, '.10-team.yaml.tmp'), join(dir, '10-team.yaml'));
  event = await queue.next();
  t.equal(event.kind, 'reload', 'a rename over the file is picked up');
  t.ok(Date.now() - started < 1000, 'within a second');
  t.equal(decide().action, 'step-up');

  await rm(join(dir, '10-team.yaml'));
  event = await queue.next();
  t.equal(event.kind, 'reload', 'a removed file is picked up');
  t.equal(decide().action, 'allow');
});

t.test('an invalid edit keeps the last valid rules and reports file and line', async (t) => {
  const dir = await tempDir(t, { '00-base.yaml': allowAll, '10-team.yaml': denyWrites });
  const queue = eventQueue();
  const watcher = await watchRules(dir, queue.options);
  t.teardown(() => watcher.close());

  await writeFile(join(dir, '10-team.yaml'), denyWrites.replace('class: write', 'clas: write'));
  const event = await queue.next();
  t.equal(event.kind, 'invalid');
  if (event.kind !== 'invalid') return;
  t.equal(event.errors.length, 1);
  t.equal(event.errors[0]!.file, join(dir, '10-team.yaml'));
  t.equal(event.errors[0]!.line, 3);
  t.equal(event.errors[0]!.column, 13);
  t.match(event.errors[0]!.message, /unknown key `clas`/);
  t.equal(watcher.ruleSet.decide([DELETE], subject()).action, 'deny', 'the previous rules still decide');

  await writeFile(join(dir, '10-team.yaml'), denyWrites.replace('deny\n', 'step-up\n'));
  const fixed = await queue.next();
  t.equal(fixed.kind, 'reload', 'fixing the file reloads');
  t.equal(watcher.ruleSet.decide([DELETE], subject()).action, 'step-up');
});

t.test('an edit that only breaks the set across files (duplicate name) is refused too', async (t) => {
  const dir = await tempDir(t, { '00-base.yaml': allowAll, '10-team.yaml': denyWrites });
  const queue = eventQueue();
  const watcher = await watchRules(dir, queue.options);
  t.teardown(() => watcher.close());
  await writeFile(join(dir, '20-copy.yaml'), denyWrites);
  const event = await queue.next();
  t.equal(event.kind, 'invalid');
  if (event.kind === 'invalid') t.match(event.errors[0]!.message, /duplicate rule name `deny-writes`: also defined at .*10-team\.yaml:2:11/);
  t.equal(watcher.current.files.length, 2, 'still the two valid files');
});

t.test('reload() re-reads on demand and ignores unchanged content', async (t) => {
  const dir = await tempDir(t, { '00-base.yaml': allowAll });
  const watcher = await watchRules(dir, { debounceMs: 60_000 });
  t.teardown(() => watcher.close());
  t.equal(await watcher.reload(), 'unchanged');
  await writeFile(join(dir, '10-team.yaml'), denyWrites);
  t.equal(await watcher.reload(), 'reloaded');
  t.equal(watcher.ruleSet.decide([DELETE], subject()).action, 'deny');
});

t.test('after close() edits no longer apply', async (t) => {
  const dir = await tempDir(t, { '00-base.yaml': allowAll });
  let reloads = 0;
  const watcher = await watchRules(dir, { onReload: () => reloads++ });
  watcher.close();
  await writeFile(join(dir, '10-team.yaml'), denyWrites);
  t.equal(await watcher.reload(), 'unchanged', 'a closed watcher does not reload');
  t.equal(reloads, 0);
  t.equal(watcher.ruleSet.decide([DELETE], subject()).action, 'allow');
});

t.test('invalid rules at start: watchRules rejects, so the proxy does not start', async (t) => {
  const dir = await tempDir(t, { '00-base.yaml': 'default: maybe\n' });
  await t.rejects(watchRules(dir), RuleLoadError);
  const missing = join(dir, 'nope');
  await t.rejects(watchRules(missing), { errors: [{ message: 'the rules directory does not exist' }] });
  const empty = await tempDir(t);
  await t.rejects(watchRules(empty), { errors: [{ message: /no rule files/ }] });
});
