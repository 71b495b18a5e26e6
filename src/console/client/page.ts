/**
 * The console's one HTML page (server side: compiled with the server, not the page's modules). Everything
 * dynamic is filled in by app.js and the modules it imports from the API and the WebSocket
 * (with textContent: no HTML is ever built from data). No inline script or style: the CSP forbids them.
 */
const ICON =
  "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 32 32'%3E%3Crect width='32' height='32' rx='7' fill='%23335eea'/%3E%3Cpath d='M9 21h5v-5h5v-5h5' stroke='white' stroke-width='3' fill='none' stroke-linecap='round' stroke-linejoin='round'/%3E%3C/svg%3E";

export function pageHtml(): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>stepgate console</title>
<link rel="icon" href="${ICON}">
<link rel="stylesheet" href="/static/app.css">
<script src="/static/webauthn.js" defer></script>
<script type="module" src="/static/app.js"></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header class="top">
  <a class="brand" href="/"><img src="${ICON}" alt="" width="24" height="24"> stepgate <span class="sub">console</span></a>
  <nav id="nav" class="nav" aria-label="Console sections" hidden>
    <a href="/" data-nav="console">Approvals</a>
    <a href="/connect" data-nav="connect" id="connect-nav" hidden>Connect</a>
    <a href="/audit" data-nav="audit" id="audit-nav">Audit trail</a>
  </nav>
  <p id="status" class="status" role="status" aria-live="polite"></p>
  <div id="who" class="who" hidden>
    <span>Signed in as <strong id="who-name"></strong></span>
    <button type="button" class="link" data-action="sign-out">Sign out</button>
  </div>
</header>

<div id="unreachable" class="banner" role="alert" hidden>
  <p><strong>stepgate is unreachable.</strong> The console lost its live connection: statements held meanwhile
    and decisions made elsewhere are not shown until it is back. <span id="unreachable-retry"></span></p>
  <button type="button" data-action="reconnect-now">Try now</button>
</div>

<main id="main" tabindex="-1">
  <section id="view-loading" class="view">
    <p class="muted">Loading…</p>
  </section>

  <section id="view-signin" class="view narrow" hidden aria-labelledby="signin-title">
    <h1 id="signin-title">Sign in</h1>
    <p>stepgate holds statements that need a second look until you approve them here with your passkey.</p>
    <div id="signin-sso" hidden>
      <button type="button" class="primary big" data-action="sign-in-sso">Sign in with single sign-on</button>
      <p class="muted small">Local accounts sign in with their passkey:</p>
    </div>
    <button type="button" class="primary big" data-action="sign-in">Sign in with a passkey</button>
    <p id="signin-error" class="error" role="alert"></p>
    <p class="muted small">No passkey yet? Ask your stepgate administrator for an enrollment link
      (<code>stepgate users enroll YOUR-NAME</code>) and open it in this browser.</p>
  </section>

  <section id="view-enroll" class="view narrow" hidden aria-labelledby="enroll-title">
    <h1 id="enroll-title">Register a passkey</h1>
    <div id="enroll-ready" hidden>
      <p>Welcome, <strong id="enroll-user"></strong>. Register a passkey for stepgate: your fingerprint, face,
        device PIN or security key. You will use it to sign in here and to approve statements that
        stepgate holds for you.</p>
      <p class="muted small" id="enroll-existing" hidden></p>
      <label class="field" for="enroll-name">Name for this passkey
        <input id="enroll-name" name="passkey-name" maxlength="64" autocomplete="off" required>
      </label>
      <button type="button" class="primary big" data-action="register-passkey">Register a passkey</button>
    </div>
    <p id="enroll-error" class="error" role="alert"></p>
  </section>

  <section id="view-console" class="view" hidden>
    <section id="decided" class="panel decided" hidden aria-labelledby="decided-title">
      <h1 id="decided-title">This statement was already decided</h1>
      <p id="decided-what" class="muted"></p>
      <p id="decided-status" class="decided-status"></p>
      <p id="decided-outcome"></p>
    </section>

    <section class="panel" aria-labelledby="pending-title">
      <h1 id="pending-title">Waiting for approval <span id="pending-count" class="count" hidden></span></h1>
      <p id="pending-empty" class="empty">Nothing is waiting. Statements that need your passkey appear here
        the moment stepgate holds them; keep this page open.</p>
      <div id="pending" class="cards"></div>
    </section>

    <div class="columns">
      <section class="panel" aria-labelledby="grants-title">
        <h2 id="grants-title">Active grants</h2>
        <p class="muted small">After an approval, some rules let the same kind of statement through for a while
          without asking again. Revoke a grant to be asked again at once.</p>
        <p id="grants-empty" class="empty">No active grants.</p>
        <ul id="grants" class="list"></ul>
      </section>

      <section class="panel" aria-labelledby="recent-title">
        <h2 id="recent-title">Recently decided</h2>
        <p id="recent-empty" class="empty">Nothing yet.</p>
        <ol id="recent" class="list"></ol>
      </section>
    </div>

    <section class="panel" aria-labelledby="passkeys-title">
      <h2 id="passkeys-title">Your passkeys</h2>
      <ul id="passkeys" class="list"></ul>
      <button type="button" data-action="add-passkey">Add a passkey</button>
      <p id="passkeys-error" class="error" role="alert"></p>
    </section>

    <section class="panel" aria-labelledby="totp-title">
      <h2 id="totp-title">Authenticator app</h2>
      <p id="totp-state" class="muted small"></p>
      <div class="buttons">
        <button type="button" id="totp-setup-button" data-action="totp-setup">Set up an authenticator app</button>
        <button type="button" id="totp-recovery-button" data-action="totp-recovery" hidden>New recovery codes</button>
        <button type="button" id="totp-remove-button" class="danger" data-action="totp-remove" hidden>Remove the authenticator app</button>
      </div>
      <div id="totp-enroll" hidden>
        <p>Scan this code with your authenticator app (or type the key), then enter the 6-digit code it shows.</p>
        <img id="totp-qr" alt="QR code for your authenticator app" width="220" height="220">
        <p class="small">Key: <code id="totp-secret"></code></p>
        <label class="field" for="totp-code">Code <input id="totp-code" inputmode="numeric" autocomplete="one-time-code" maxlength="6"></label>
        <button type="button" class="primary" data-action="totp-confirm">Confirm</button>
      </div>
      <div id="recovery" hidden>
        <p class="note">Your recovery codes. Each works once, in place of a code from the app. They are shown only now: keep them somewhere safe.</p>
        <ol id="recovery-codes" class="codes"></ol>
      </div>
      <p id="totp-error" class="error" role="alert"></p>
    </section>
  </section>

  <section id="view-connect" class="view" hidden aria-labelledby="connect-title">
    <h1 id="connect-title">Connect to the database</h1>
    <section id="cli-request" class="panel" hidden aria-labelledby="cli-title">
      <h2 id="cli-title">A terminal asks for a database credential</h2>
      <p>Does this code match the one <code>stepgate login</code> shows? <strong id="cli-code" class="code"></strong></p>
      <p class="muted small" id="cli-from"></p>
      <p class="note">Confirm only if you ran <code>stepgate login</code> yourself just now and it shows this code:
        whoever runs that terminal gets a database login as you.</p>
      <div id="cli-buttons" class="buttons" hidden>
        <button type="button" class="primary" data-action="cli-approve">Yes, give it a credential</button>
        <button type="button" class="danger" data-action="cli-deny">No</button>
      </div>
      <p id="cli-result" role="status"></p>
    </section>
    <section class="panel" aria-labelledby="creds-title">
      <h2 id="creds-title">Database credentials</h2>
      <p class="muted small" id="connect-where"></p>
      <p class="muted small" id="connect-ttl"></p>
      <button type="button" class="primary" data-action="issue-credential">Get a database credential</button>
      <div id="issued" hidden>
        <p class="note">Shown once. Password: <code id="issued-password"></code></p>
        <p class="small">psql:</p><pre class="sql"><code id="issued-psql"></code></pre>
        <p class="small">.pgpass line:</p><pre class="sql"><code id="issued-pgpass"></code></pre>
      </div>
      <p id="credentials-empty" class="empty">No active credentials.</p>
      <ul id="credentials" class="list"></ul>
      <p id="connect-error" class="error" role="alert"></p>
    </section>
  </section>

  <section id="view-audit" class="view" hidden aria-labelledby="audit-title">
    <h1 id="audit-title">Audit trail</h1>
    <p id="audit-denied" class="note" hidden>The audit trail is shown to members of the group <code>auditors</code>.
      Ask your stepgate administrator if you need it (<code>stepgate users add NAME --groups auditors</code>).</p>
    <div id="audit-body" hidden>
      <section class="panel" aria-labelledby="verify-title">
        <div class="panel-head">
          <h2 id="verify-title">Chain verification</h2>
          <button type="button" data-action="verify-audit">Verify now</button>
        </div>
        <p id="audit-status" class="verify" data-audit-status="" role="status" aria-live="polite"></p>
        <ul id="audit-verify-facts" class="facts-list"></ul>
        <ul id="audit-problems" class="problems" hidden></ul>
        <ul id="audit-instances" class="instances" hidden></ul>
      </section>

      <section id="audit-sessions-panel" class="panel" aria-labelledby="sessions-title">
        <h2 id="sessions-title">Sessions</h2>
        <p class="muted small">Every connection through stepgate, newest first. Times are UTC. Filters take what
          <code>stepgate audit sessions</code> takes: a user name, and times as ISO 8601 or a time ago (<code>2h</code>, <code>7d</code>).</p>
        <div class="filters">
          <label for="audit-user">User <input id="audit-user" name="user" autocomplete="off" maxlength="200"></label>
          <label for="audit-since">Since <input id="audit-since" name="since" autocomplete="off" maxlength="64" placeholder="7d"></label>
          <label for="audit-until">Until <input id="audit-until" name="until" autocomplete="off" maxlength="64" placeholder="2026-11-24T10:00:00Z"></label>
          <button type="button" class="primary" data-action="audit-filter">Show</button>
          <button type="button" data-action="audit-clear">Clear</button>
        </div>
        <p id="audit-sessions-error" class="error" role="alert"></p>
        <div class="table-wrap">
          <table class="sessions">
            <thead><tr><th scope="col" id="audit-instance-col" hidden>Instance</th><th scope="col">Session</th><th scope="col">User</th><th scope="col">Database</th><th scope="col">Client</th>
              <th scope="col">Application</th><th scope="col">Start (UTC)</th><th scope="col">End (UTC)</th>
              <th scope="col" class="num">Statements</th><th scope="col" class="num">Denied</th><th scope="col" class="num">Held</th></tr></thead>
            <tbody id="audit-sessions"></tbody>
          </table>
        </div>
        <p id="audit-sessions-empty" class="empty" hidden>No sessions match.</p>
        <button type="button" id="audit-more" data-action="audit-more" hidden>Load more</button>
      </section>

      <section id="audit-timeline-panel" class="panel" hidden aria-labelledby="timeline-title">
        <div class="panel-head">
          <h2 id="timeline-title">Session</h2>
          <button type="button" data-action="audit-back">Back to sessions</button>
        </div>
        <dl id="audit-session-facts" class="facts"></dl>
        <p class="muted small">As <code>stepgate audit replay</code> shows it: each statement at its prompt (secrets masked
          as stored), the rule that decided it, approvals and what happened, with the time (UTC) and the pause since the step before.</p>
        <ol id="audit-timeline" class="timeline"></ol>
        <button type="button" id="audit-timeline-more" data-action="audit-timeline-more" hidden>Load more</button>
        <p id="audit-timeline-error" class="error" role="alert"></p>
      </section>
    </div>
  </section>
</main>
<div id="announcer" class="visually-hidden" aria-live="assertive" aria-atomic="true"></div>
<noscript><p class="error">The stepgate console needs JavaScript.</p></noscript>
</body>
</html>
`;
}
