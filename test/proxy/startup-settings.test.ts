/**
 * Startup parameters and `options`, read as PostgreSQL reads them (pg_split_opts, process_postgres_switches,
 * ParseLongOption, ProcessStartupPacket), and the parameters stepgate sends upstream instead.
 */
import t from 'tap';
import { finalSetting, parseBool, parseOptions, readStartup, settingAsSql, splitOptions, upstreamParameters, type StartupSettingsError } from '../../src/proxy/startup-settings.js';

t.test('pg_split_opts: ASCII white space separates, a backslash escapes the next character', async (t) => {
  const cases: [string, string[]][] = [
    ['-c a=1 -c b=2', ['-c', 'a=1', '-c', 'b=2']],
    ['  -c\ta=1\n\v\f\r-cb=2  ', ['-c', 'a=1', '-cb=2']],
    ['-c application_name=two\\ words', ['-c', 'application_name=two words']],
    ['-c a=back\\\\slash', ['-c', 'a=back\\slash']],
    // A backslash at the very end escapes nothing and is dropped; alone, it makes an empty word.
    ['-c a=x\\', ['-c', 'a=x']],
    ['\\', ['']],
    ['\\ ', [' ']],
    // Unicode spaces are not C isspace(): part of the word.
    ['-c application_name=a\u00a0b\u2003c', ['-c', 'application_name=a\u00a0b\u2003c']],
    ['-c\u00a0a=1', ['-c\u00a0a=1']],
    ['', []],
    ['   ', []],
  ];
  for (const [options, words] of cases) t.same(splitOptions(options), words, JSON.stringify(options));
});

t.test('switches: -c name=value, -cname=value, --name=value; - becomes _ in names', async (t) => {
  t.same(parseOptions('-c a=1 -cb=2 --c-d=3 -c search-path=x-y --e=f=g'), [
    ['a', '1'],
    ['b', '2'],
    ['c_d', '3'],
    ['search_path', 'x-y'],
    ['e', 'f=g'],
  ]);
  t.same(parseOptions('-c a= '), [['a', '']], 'an empty value');
  t.same(parseOptions('-c a=1 --'), [['a', '1']], '-- ends the switches');
  t.same(parseOptions('-c -x=1'), [['_x', '1']], '-c takes the next word whatever it is');
  for (const bad of ['-c', '-c a', '--a', '-c =1', '--=1', '-B 100', '-D /tmp', 'foo', '-', '-c a=1 -- b', '-Fc a=1', '\\']) {
    t.throws(() => parseOptions(bad), { name: 'StartupSettingsError' }, `${JSON.stringify(bad)} is refused`);
  }
});

t.test('the startup packet: options first, then the parameters in order; the last user/database/options/replication', async (t) => {
  const r = readStartup([
    ['user', 'u1'],
    ['work_mem', '2MB'],
    ['options', '-c work_mem=0'],
    ['application_name', 'app'],
    ['database', 'd1'],
    ['_pq_.proto', 'x'],
    ['options', '-c work_mem=1MB -c statement_timeout=5'],
    ['user', 'u2'],
    ['database', 'd2'],
    ['replication', 'false'],
    ['work_mem', '3MB'],
  ]);
  t.same(r, {
    user: 'u2',
    database: 'd2',
    replication: 'false',
    settings: [
      ['work_mem', '1MB'],
      ['statement_timeout', '5'],
      ['work_mem', '2MB'],
      ['application_name', 'app'],
      ['work_mem', '3MB'],
    ],
  });
  t.equal(finalSetting(r.settings, 'work_mem'), '3MB');
  t.equal(finalSetting(r.settings, 'search_path'), undefined);
  t.same(upstreamParameters('d2', r.settings), [['database', 'd2'], ...r.settings], 'upstream: the database, then every judged setting');
});

t.test('settings that are not settings are refused, in options and as parameters', async (t) => {
  const refused = [
    [['options', '-c options=-c\\ role=x']],
    [['options', '-c replication=database']],
    [['options', '-c database=other']],
    [['options', '--user=x']],
    [['options', '-c _pq_.x=1']],
    [['options', '-c _PQ_.x=1']],
    [['options', '-c Options=x']],
    [['Database', 'other']],
    [['USER', 'x']],
    [['Replication', 'database']],
  ] as [string, string][][];
  for (const parameters of refused) {
    const err = t.throws(() => readStartup(parameters), { name: 'StartupSettingsError' }, JSON.stringify(parameters)) as StartupSettingsError;
    t.equal(err?.sqlstate, '42501');
    t.match(err?.hint, /connection parameters of their own/);
  }
  // As parameters, these names are the server's own keywords (case-sensitive) and _pq_.* are protocol options.
  t.same(readStartup([['user', 'a'], ['database', 'b'], ['_pq_.x', '1']]).settings, []);
});

t.test("parse_bool, as the server reads replication's value", async (t) => {
  for (const v of ['true', 'TRUE', 't', 'tr', 'yes', 'y', 'on', 'ON', '1']) t.equal(parseBool(v), true, v);
  for (const v of ['false', 'f', 'fa', 'no', 'n', 'off', 'of', 'OFF', '0']) t.equal(parseBool(v), false, v);
  for (const v of ['', 'o', 'truex', 'offf', '2', '01', ' true', 'database']) t.equal(parseBool(v), null, JSON.stringify(v));
});

t.test('a setting as SQL', async (t) => {
  t.equal(settingAsSql('Work_Mem', "1'MB"), `SET "work_mem" = '1''MB'`);
  t.equal(settingAsSql('my.setting', 'x'), `SET "my.setting" = 'x'`);
});
