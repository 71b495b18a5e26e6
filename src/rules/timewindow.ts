/**
 * `time:` — weekly windows in a named time zone. A window that ends before it starts crosses midnight:
 * `{days: [fri], from: "22:00", to: "06:00"}` covers Friday 22:00 to Saturday 06:00 (the days name the
 * day a window starts). `to` is exclusive; `24:00` is allowed as an end.
 */

export const WEEKDAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] as const;
const FULL_NAMES = ['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday'];

export interface TimeWindow {
  /** days[0] is Monday. */
  days: boolean[];
  /** Minutes after local midnight; 0..1439. */
  fromMinute: number;
  /** Minutes after local midnight; 1..1440. Less than fromMinute: the window crosses midnight. */
  toMinute: number;
  /** IANA name as resolved by Intl (`utc` -> `UTC`). */
  tz: string;
  /** As written, for explanations. */
  text: string;
}

/** 0 = Monday, or -1. Accepts `mon` and `monday`, any case. */
export function weekdayIndex(name: string): number {
  const lower = name.trim().toLowerCase();
  const short = WEEKDAYS.indexOf(lower as (typeof WEEKDAYS)[number]);
  return short >= 0 ? short : FULL_NAMES.indexOf(lower);
}

/** `mon-fri` (wrapping: `fri-mon` is Fri, Sat, Sun, Mon) or a single day; null when unreadable. */
export function parseDayItem(text: string): number[] | null {
  const parts = text.split('-');
  if (parts.length === 1) {
    const day = weekdayIndex(parts[0]!);
    return day < 0 ? null : [day];
  }
  if (parts.length !== 2) return null;
  const first = weekdayIndex(parts[0]!);
  const last = weekdayIndex(parts[1]!);
  if (first < 0 || last < 0) return null;
  const days = [first];
  for (let day = first; day !== last; ) {
    day = (day + 1) % 7;
    days.push(day);
  }
  return days;
}

/** `09:00` -> 540; `24:00` only when `allow24`; null when not `HH:MM`. */
export function parseClock(text: string, allow24: boolean): number | null {
  const match = /^(\d{1,2}):(\d{2})$/.exec(text.trim());
  if (!match) return null;
  const hours = Number(match[1]);
  const minutes = Number(match[2]);
  if (minutes > 59) return null;
  if (hours === 24 && minutes === 0 && allow24) return 1440;
  if (hours > 23) return null;
  return hours * 60 + minutes;
}

/** The canonical IANA name for `tz`, or null when Intl does not know it. */
export function resolveTimeZone(tz: string): string | null {
  try {
    return new Intl.DateTimeFormat('en-US', { timeZone: tz }).resolvedOptions().timeZone;
  } catch {
    return null;
  }
}

/** Time-zone names for "did you mean" suggestions. */
export function knownTimeZones(): string[] {
  const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
  return ['UTC', ...zones];
}

export function windowMatches(window: TimeWindow, now: Date): boolean {
  const clock = localClock(window.tz, now);
  const { days, fromMinute, toMinute } = window;
  if (fromMinute < toMinute) {
    return days[clock.weekday]! && clock.minute >= fromMinute && clock.minute < toMinute;
  }
  // Crosses midnight: the evening part belongs to today, the morning part to yesterday's window.
  return (
    (days[clock.weekday]! && clock.minute >= fromMinute) || (days[(clock.weekday + 6) % 7]! && clock.minute < toMinute)
  );
}

export interface LocalClock {
  /** 0 = Monday. */
  weekday: number;
  /** Minutes after local midnight. */
  minute: number;
}

interface ZoneClock {
  format: Intl.DateTimeFormat;
  /** The minute (epoch ms / 60000) the cached value is for. */
  epochMinute: number;
  value: LocalClock;
}

const clocks = new Map<string, ZoneClock>();
const SHORT_WEEKDAYS = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'];

/**
 * Weekday and minute of day in `tz`. Formatting with Intl is slow and allocates, so each zone keeps its
 * last answer for the rest of that minute (every zone in use today is offset by whole minutes).
 */
export function localClock(tz: string, now: Date): LocalClock {
  const epochMinute = Math.floor(now.getTime() / 60_000);
  let zone = clocks.get(tz);
  if (zone === undefined) {
    const format = new Intl.DateTimeFormat('en-US', {
      timeZone: tz,
      weekday: 'short',
      hour: '2-digit',
      minute: '2-digit',
      hourCycle: 'h23',
    });
    zone = { format, epochMinute: NaN, value: { weekday: 0, minute: 0 } };
    clocks.set(tz, zone);
  }
  if (zone.epochMinute !== epochMinute) {
    let weekday = 0;
    let hour = 0;
    let minute = 0;
    for (const part of zone.format.formatToParts(now)) {
      if (part.type === 'weekday') weekday = SHORT_WEEKDAYS.indexOf(part.value);
      else if (part.type === 'hour') hour = Number(part.value) % 24;
      else if (part.type === 'minute') minute = Number(part.value);
    }
    zone.epochMinute = epochMinute;
    zone.value = { weekday, minute: hour * 60 + minute };
  }
  return zone.value;
}
