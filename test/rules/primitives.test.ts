/** The small parsers behind rule files: durations, clocks, days, suggestions, time zones. */
import t from 'tap';
import { formatDuration, parseDuration } from '../../src/util/units.js';
import { nearest } from '../../src/rules/errors.js';
import { globProblem } from '../../src/rules/glob.js';
import { localClock, parseClock, parseDayItem } from '../../src/rules/timewindow.js';
import { oneRule, statement, subject } from './helpers.js';

t.test('durations', async (t) => {
  const cases: Array<[string, number | null]> = [
    ['90s', 90_000],
    ['10m', 600_000],
    ['1h30m', 5_400_000],
    ['1d', 86_400_000],
    ['2h5s', 7_205_000],
    ['0s', 0],
    ['10', null],
    ['10 m', null],
    ['m', null],
    ['', null],
    ['1m1h', null],
    ['1.5h', null],
    ['250ms', 250],
    ['1s500ms', 1500],
  ];
  for (const [text, ms] of cases) t.equal(parseDuration(text), ms, text);
  t.equal(formatDuration(5_400_000), '1h30m');
  t.equal(formatDuration(120_000), '2m');
});

t.test('clock times and days', async (t) => {
  t.equal(parseClock('09:00', false), 540);
  t.equal(parseClock('9:05', false), 545);
  t.equal(parseClock('24:00', true), 1440);
  t.equal(parseClock('24:00', false), null);
  t.equal(parseClock('12:60', false), null);
  t.equal(parseClock('noon', false), null);
  t.same(parseDayItem('mon-fri'), [0, 1, 2, 3, 4]);
  t.same(parseDayItem('sat-mon'), [5, 6, 0]);
  t.same(parseDayItem('Sunday'), [6]);
  t.equal(parseDayItem('mon-fri-sat'), null);
});

t.test('local clock follows daylight saving time', async (t) => {
  t.same(localClock('Europe/Berlin', new Date('2024-07-01T07:30:00Z')), { weekday: 0, minute: 9 * 60 + 30 }, 'CEST = UTC+2');
  t.same(localClock('Europe/Berlin', new Date('2024-01-08T07:30:00Z')), { weekday: 0, minute: 8 * 60 + 30 }, 'CET = UTC+1');
  const rules = oneRule('{time: {days: [mon-fri], from: "09:00", to: "18:00", tz: Europe/Berlin}}');
  t.equal(rules.decide([statement()], subject({ now: new Date('2024-07-01T07:30:00Z') })).action, 'deny', 'summer: 09:30 local');
  t.equal(rules.decide([statement()], subject({ now: new Date('2024-01-08T07:30:00Z') })).action, 'allow', 'winter: 08:30 local');
});

t.test('suggestions', async (t) => {
  t.equal(nearest('tabels', ['tables', 'columns']), 'tables');
  t.equal(nearest('databse', ['database', 'application']), 'database');
  t.equal(nearest('colour', ['class', 'tables']), undefined);
});

t.test('glob problems', async (t) => {
  t.equal(globProblem('orders_*'), null);
  t.equal(globProblem('ord?rs'), null);
  t.match(globProblem('{a,b}')?.message, /not supported/);
  t.match(globProblem('a\\*')?.message, /not supported/);
  t.match(globProblem(' orders')?.message, /spaces/);
});
