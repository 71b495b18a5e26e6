/**
 * Browser notifications of held statements (served as /static/notifications.js; approvals.ts calls it when
 * a statement is held or decided, app.ts adds its button).
 *
 * Invariants:
 * - Opt-in only: nothing is asked of the browser until the person presses the button, and a notification
 *   is shown only when they turned it on in this browser (localStorage) AND the browser granted permission.
 * - Only while the tab is in the background (document.visibilityState === 'hidden'): a visible console
 *   already shows the card and announces it.
 * - Only statements this person can approve now (challenge.you.canApprove): an author waiting for a DBA
 *   is not told about their own statement.
 * - One notification per held statement (tagged with its id), closed when the statement is decided.
 * - What is shown is what the card shows (already redacted by the server); data goes to the Notification
 *   API and textContent only, never into HTML.
 */

import type { ChallengeView } from '../protocol.js';

const STORAGE_KEY = 'stepgate.notifications';

/** The parts of a challenge this module reads. */
type HeldChallenge = Pick<ChallengeView, 'id' | 'user' | 'database' | 'rule' | 'you'>;

const shown: Map<string, Notification> = new Map();
let button: HTMLButtonElement | null = null;
let note: HTMLElement | null = null;

const supported = (): boolean => typeof window.Notification === 'function';

/** Turned on here, and allowed by the browser. */
export function notificationsOn(): boolean {
  return supported() && Notification.permission === 'granted' && localStorage.getItem(STORAGE_KEY) === 'on';
}

function render(): void {
  if (!button || !note) return;
  const blocked = supported() && Notification.permission === 'denied';
  button.textContent = notificationsOn() ? 'Turn off notifications' : 'Notify me when a statement waits';
  button.setAttribute('aria-pressed', String(notificationsOn()));
  button.disabled = blocked;
  note.textContent = blocked
    ? 'Notifications are blocked for this site: allow them in your browser’s site settings.'
    : notificationsOn()
      ? 'You get a notification while this tab is in the background.'
      : '';
}

async function toggle(): Promise<void> {
  if (notificationsOn()) {
    localStorage.removeItem(STORAGE_KEY);
    return render();
  }
  const permission = Notification.permission === 'granted' ? 'granted' : await Notification.requestPermission();
  if (permission === 'granted') localStorage.setItem(STORAGE_KEY, 'on');
  render();
}

/** Adds the opt-in button under the "Waiting for approval" heading (once). Browsers without the API get none. */
export function initNotifications(): void {
  if (button || !supported()) return;
  const heading = document.getElementById('pending-title');
  if (!heading) return;
  const row = document.createElement('p');
  row.className = 'muted small notify-row';
  button = document.createElement('button');
  button.type = 'button';
  button.className = 'link';
  button.dataset.action = 'toggle-notifications';
  button.addEventListener('click', () => void toggle());
  note = document.createElement('span');
  note.id = 'notify-note';
  row.append(button, ' ', note);
  heading.after(row);
  render();
  // Site settings can change while the console is open: follow them.
  navigator.permissions
    ?.query({ name: 'notifications' })
    .then((status) => {
      status.onchange = render;
      render();
    })
    .catch(() => {});
}

/** A statement was held (the hub's `challenge` message); `summary` is the card's title ("DELETE on orders"). */
export function notifyHeld(challenge: HeldChallenge, summary: string): void {
  if (!notificationsOn() || document.visibilityState !== 'hidden' || !challenge.you?.canApprove || shown.has(challenge.id)) return;
  const n = new Notification('stepgate: waiting for your approval', {
    body: `${summary}\n${challenge.user} on ${challenge.database} · rule ${challenge.rule}`,
    tag: `stepgate-${challenge.id}`,
  });
  shown.set(challenge.id, n);
  n.onclick = () => {
    window.focus();
    n.close();
  };
  n.onclose = () => shown.delete(challenge.id);
}

/** The statement was decided (the hub's `resolved` message), or is gone: its notification goes too. */
export function notifyResolved(id: string): void {
  shown.get(id)?.close();
  shown.delete(id);
}
