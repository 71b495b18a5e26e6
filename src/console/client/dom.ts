/**
 * Small DOM helpers of the console page: element lookup, building elements, the status line, the screen
 * reader announcer, busy buttons, and how times are written.
 *
 * Invariant: data never becomes HTML. h() sets text with textContent and attributes with setAttribute;
 * nothing here parses markup.
 */

export type Attr = string | number | boolean | null | undefined;
export type Child = Node | string | number | null | undefined | false | readonly Child[];

/** An element the page is known to have (page.ts): a missing one is a bug, reported loudly. */
export function $(id: string): HTMLElement {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el;
}

export function $input(id: string): HTMLInputElement {
  return $(id) as HTMLInputElement;
}

export function $button(id: string): HTMLButtonElement {
  return $(id) as HTMLButtonElement;
}

/** An element with attributes (`class`, `text` for its text, anything else as an attribute) and children. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs?: Record<string, Attr> | null, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = String(v);
    else if (k === 'text') el.textContent = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el: Element, children: readonly Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** The status line in the header (`live`, `connecting`, or '' for none). */
export function setStatus(kind: string, text: string): void {
  const el = $('status');
  el.dataset.state = kind;
  el.textContent = text;
}

/** Says something to screen readers (the page's assertive live region). */
export function announce(text: string): void {
  const el = $('announcer');
  el.textContent = '';
  requestAnimationFrame(() => (el.textContent = text));
}

/** Runs fn with the button disabled and labelled `label` meanwhile. */
export async function busy<T>(button: HTMLButtonElement, label: string | null, fn: () => Promise<T>): Promise<T> {
  const old = button.textContent;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  if (label) button.textContent = label;
  try {
    return await fn();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
    button.textContent = old;
  }
}

/** A countdown: "42 s", "3 min 5 s", "1 h 2 min". */
export function fmt(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** A length of time, rounded: "30 s", "5 min", "1.5 h". */
export function fmtDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 360) / 10} h`;
}

/** A time in UTC, to the second ("2026-11-24 10:00:00"); '—' for none. */
export function fmtUtc(ms: number | null | undefined): string {
  return ms === null || ms === undefined ? '—' : new Date(ms).toISOString().replace('T', ' ').slice(0, 19);
}

/** A time of day in the viewer's locale. */
export function fmtTime(ms: number): string {
  return new Date(ms).toLocaleTimeString();
}

/** The closest element with `selector` around an event's target (null when the target is not an element). */
export function closest<E extends Element = HTMLElement>(target: EventTarget | null, selector: string): E | null {
  return target instanceof Element ? target.closest<E>(selector) : null;
}
