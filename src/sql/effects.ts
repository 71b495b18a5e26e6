/**
 * What running a piece of hidden code can do: a view's query, a function's body, a domain's checks, an
 * operator's function. Effects are what the code adds to a statement that reaches it: classes beyond `read`
 * (reading is what every statement does), flags, reasons, and whether it may change how later SQL is read.
 */
import type { StatementClass, StatementFlag, StatementInfo } from './types.js';

/** Reasons kept per piece of code: enough to say why, not a trace of everything it calls. */
const MAX_REASONS = 6;

export class Effects {
  readonly classes = new Set<StatementClass>();
  readonly flags = new Set<StatementFlag>();
  readonly reasons: string[] = [];
  changesParsing = false;

  get empty(): boolean {
    return this.classes.size === 0 && this.flags.size === 0 && !this.changesParsing;
  }

  addClass(c: StatementClass, reason?: string): void {
    if (c !== 'read') this.classes.add(c);
    if (reason !== undefined) this.addReason(reason);
  }

  addFlag(f: StatementFlag, reason?: string): void {
    if (f !== 'multi_statement') this.flags.add(f);
    if (reason !== undefined) this.addReason(reason);
  }

  addReason(reason: string): void {
    if (this.reasons.length < MAX_REASONS && !this.reasons.includes(reason)) this.reasons.push(reason);
  }

  /** Adds another piece of code's effects; its reasons are prefixed with how it is reached (`view public.v`). */
  merge(other: Effects, via?: string): void {
    for (const c of other.classes) this.classes.add(c);
    for (const f of other.flags) this.flags.add(f);
    for (const r of other.reasons) this.addReason(via === undefined ? r : `${via}: ${r}`);
    if (other.changesParsing) this.changesParsing = true;
  }

  /** Adds what one statement of hidden code does (classes, flags, reasons). */
  mergeStatement(info: StatementInfo): void {
    let explained = false;
    for (const c of info.classes) if (c !== 'read') this.classes.add(c);
    for (const f of info.flags) if (f !== 'multi_statement') this.flags.add(f);
    for (const r of info.reasons) {
      this.addReason(r);
      explained = true;
    }
    if (!explained && info.classes.some((c) => c !== 'read')) this.addReason(`runs ${info.command}`);
    if (info.changesParsing) this.changesParsing = true;
  }
}

/** The shared empty value: never add to it. */
export const NO_EFFECTS: Effects = Object.freeze(new Effects()) as Effects;
