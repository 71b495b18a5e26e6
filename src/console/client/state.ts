/**
 * What the page knows, in one object shared by its modules: who is signed in, the held statements and
 * their cards, grants, recently decided statements, and the server's clock.
 *
 * Invariant: `challenges` and `cards` have the same keys (a card per held statement shown).
 */
import type { ChallengeView, GrantView, MeView, ResolvedView } from '../protocol.js';

export const state = {
  me: null as MeView | null,
  challenges: new Map<string, ChallengeView>(),
  cards: new Map<string, HTMLElement>(),
  grants: [] as GrantView[],
  /** Newest first. */
  recent: [] as ResolvedView[],
  /** The server's clock minus ours (ms). */
  offset: 0,
  /** /c/ID: the statement the address asks for, and whether it was shown. */
  focusId: null as string | null,
  focusDone: false,
  signedOut: false,
  ticker: null as number | null,
  refresher: null as number | null,
};

/** Now on the server's clock. */
export function now(): number {
  return Date.now() + state.offset;
}
