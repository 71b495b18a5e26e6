/** The console's stylesheet (served as /static/app.css). Plain CSS; light and dark; respects reduced motion. */
export const CONSOLE_CSS = `
:root {
  --bg: #f6f7fb; --panel: #ffffff; --text: #1b2030; --muted: #5b6275; --line: #dde1ea;
  --accent: #335eea; --accent-text: #ffffff; --danger: #c42b2b; --ok: #17804a; --warn: #a15c00;
  --code-bg: #f0f2f7; --focus: #ffb020; --chip: #eef1f8;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, Ubuntu, sans-serif;
  color-scheme: light dark;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #12141b; --panel: #1b1e28; --text: #e8eaf2; --muted: #a3a9bb; --line: #2e3342;
    --accent: #7d9bff; --accent-text: #0d1020; --danger: #ff7a7a; --ok: #5fd39a; --warn: #ffb35c;
    --code-bg: #11131a; --chip: #262a37;
  }
}
* { box-sizing: border-box; }
/* The hidden attribute wins over display rules below (.who, .nav are flex boxes). */
[hidden] { display: none !important; }
html, body { margin: 0; background: var(--bg); color: var(--text); }
body { line-height: 1.5; font-size: 16px; }
a { color: var(--accent); }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 0.92em; }
.skip { position: absolute; left: -999px; top: 0; }
.skip:focus { left: 1rem; top: 1rem; background: var(--panel); padding: .5rem 1rem; z-index: 10; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }

.top { display: flex; align-items: center; gap: 1rem; padding: .75rem 1.5rem; background: var(--panel);
  border-bottom: 1px solid var(--line); flex-wrap: wrap; }
.brand { display: flex; align-items: center; gap: .5rem; font-weight: 700; font-size: 1.1rem; color: var(--text); text-decoration: none; }
.brand .sub { font-weight: 400; color: var(--muted); }
.status { margin: 0 0 0 auto; font-size: .9rem; color: var(--muted); display: flex; align-items: center; gap: .4rem; }
.status::before { content: ""; width: .6rem; height: .6rem; border-radius: 50%; background: var(--line); display: inline-block; }
.status[data-state="live"]::before { background: var(--ok); }
.status[data-state="connecting"]::before { background: var(--warn); }
.status:empty::before { display: none; }
.who { display: flex; align-items: center; gap: .75rem; font-size: .95rem; }

main { max-width: 72rem; margin: 0 auto; padding: 1.5rem; }
main:focus { outline: none; }
.view.narrow { max-width: 34rem; margin: 3rem auto; }
h1 { font-size: 1.5rem; margin: 0 0 1rem; display: flex; align-items: center; gap: .6rem; }
h2 { font-size: 1.15rem; margin: 0 0 .5rem; }
.muted { color: var(--muted); }
.small { font-size: .9rem; }
.empty { color: var(--muted); font-style: italic; }
.error { color: var(--danger); font-weight: 600; min-height: 1.5em; margin: .5rem 0; }
.error:empty { min-height: 0; margin: 0; }
.count { background: var(--danger); color: #fff; border-radius: 999px; padding: 0 .6rem; font-size: .95rem; }

.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 12px; padding: 1.25rem 1.5rem; margin-bottom: 1.25rem; }
.columns { display: grid; grid-template-columns: repeat(auto-fit, minmax(20rem, 1fr)); gap: 1.25rem; }
.columns .panel { margin-bottom: 1.25rem; }

button { font: inherit; border-radius: 8px; border: 1px solid var(--line); background: var(--panel); color: var(--text);
  padding: .5rem 1rem; cursor: pointer; }
button:hover:not(:disabled) { border-color: var(--accent); }
button:disabled { opacity: .55; cursor: not-allowed; }
button.primary { background: var(--accent); color: var(--accent-text); border-color: var(--accent); font-weight: 600; }
button.danger { color: var(--danger); border-color: currentColor; }
button.big { padding: .75rem 1.5rem; font-size: 1.05rem; }
button.link { border: none; background: none; color: var(--accent); padding: 0; text-decoration: underline; }
input { font: inherit; padding: .45rem .6rem; border-radius: 8px; border: 1px solid var(--line); background: var(--bg); color: var(--text); }
.field { display: flex; flex-direction: column; gap: .3rem; margin: 1rem 0; font-weight: 600; }
.field input { font-weight: 400; }

.cards { display: flex; flex-direction: column; gap: 1rem; }
.card { border: 1px solid var(--line); border-left: 5px solid var(--accent); border-radius: 10px; padding: 1rem 1.25rem;
  background: var(--panel); }
.card.focus { box-shadow: 0 0 0 3px var(--focus); }
.card.expired { opacity: .6; }
.card h3 { margin: 0; font-size: 1.1rem; }
.card .head { display: flex; justify-content: space-between; gap: 1rem; flex-wrap: wrap; align-items: baseline; }
.facts { display: flex; flex-wrap: wrap; gap: .25rem 1.25rem; margin: .5rem 0; font-size: .92rem; color: var(--muted); padding: 0; }
.facts div { display: flex; gap: .35rem; }
.facts dt { font-weight: 600; }
.facts dd { margin: 0; color: var(--text); }
.card .rule { margin: .5rem 0; }
.card .rule .name { font-family: ui-monospace, monospace; background: var(--chip); border-radius: 6px; padding: .05rem .4rem; }
.card pre { background: var(--code-bg); border: 1px solid var(--line); border-radius: 8px; padding: .75rem 1rem;
  white-space: pre-wrap; word-break: break-word; margin: .5rem 0; max-height: 16rem; overflow: auto; }
.chips { list-style: none; display: flex; flex-wrap: wrap; gap: .35rem; padding: 0; margin: .25rem 0 .5rem; }
.chips li { background: var(--chip); border-radius: 999px; padding: .05rem .6rem; font-size: .85rem; }
.chips li.flag { border: 1px dashed var(--muted); background: none; }
.reasons { margin: .25rem 0 .5rem 1.25rem; padding: 0; font-size: .9rem; color: var(--muted); }
.needs { margin: .5rem 0; font-size: .95rem; }
.note { margin: .5rem 0; padding: .5rem .75rem; border-radius: 8px; background: var(--chip); font-size: .95rem; }
.timer { font-size: .92rem; color: var(--muted); text-align: right; min-width: 12rem; }
.timer .left { font-weight: 700; color: var(--text); }
.timer .left.urgent { color: var(--danger); }
.bar { height: 6px; border-radius: 3px; background: var(--chip); overflow: hidden; margin-top: .3rem; }
.bar span { display: block; height: 100%; background: var(--accent); transition: width 1s linear; }
.actions { display: flex; flex-wrap: wrap; gap: .75rem; align-items: flex-end; margin-top: .75rem; }
.actions label { display: flex; flex-direction: column; font-size: .85rem; color: var(--muted); gap: .2rem; flex: 1 1 14rem; }
.result { font-weight: 600; margin: .5rem 0 0; }
.result.ok { color: var(--ok); }

.list { list-style: none; padding: 0; margin: 0 0 1rem; }
.list li { display: flex; gap: .75rem; align-items: center; justify-content: space-between; padding: .6rem 0; border-bottom: 1px solid var(--line); flex-wrap: wrap; }
.list li:last-child { border-bottom: none; }
.list .what { display: flex; flex-direction: column; }
.list .meta { color: var(--muted); font-size: .88rem; }
.list .buttons { display: flex; gap: .5rem; align-items: center; }
.status-approved { color: var(--ok); font-weight: 600; }
.status-rejected, .status-expired, .status-cancelled, .status-withdrawn, .status-shutdown, .status-unavailable { color: var(--danger); font-weight: 600; }

.nav { display: flex; gap: .25rem; }
.nav a { padding: .3rem .75rem; border-radius: 8px; text-decoration: none; color: var(--muted); font-weight: 600; }
.nav a:hover { color: var(--text); background: var(--chip); }
.nav a[aria-current="page"] { color: var(--text); background: var(--chip); }

.panel-head { display: flex; justify-content: space-between; align-items: baseline; gap: 1rem; flex-wrap: wrap; margin-bottom: .5rem; }
.panel-head h2 { margin: 0; }
.verify { font-weight: 700; margin: .25rem 0 .5rem; display: flex; align-items: center; gap: .5rem; }
.verify::before { content: ""; width: .75rem; height: .75rem; border-radius: 50%; background: var(--line); flex: none; }
.verify[data-audit-status="verified"] { color: var(--ok); }
.verify[data-audit-status="verified"]::before { background: var(--ok); }
.verify[data-audit-status="broken"], .verify[data-audit-status="error"] { color: var(--danger); }
.verify[data-audit-status="broken"]::before, .verify[data-audit-status="error"]::before { background: var(--danger); }
.verify[data-audit-status="running"]::before { background: var(--warn); }
.verify:empty::before { display: none; }
.facts-list { margin: 0 0 .75rem 1.25rem; padding: 0; font-size: .92rem; color: var(--muted); }
.problems { margin: 0 0 .75rem 1.25rem; padding: 0; font-size: .92rem; }
.problems li.error strong { color: var(--danger); }
.problems li.warning strong { color: var(--warn); }

.filters { display: flex; flex-wrap: wrap; gap: .75rem; align-items: flex-end; margin: .75rem 0; }
.filters label { display: flex; flex-direction: column; font-size: .85rem; color: var(--muted); gap: .2rem; }
.table-wrap { overflow-x: auto; }
table.sessions { border-collapse: collapse; width: 100%; font-size: .92rem; }
table.sessions th { text-align: left; font-size: .82rem; color: var(--muted); font-weight: 600; padding: .4rem .5rem; border-bottom: 1px solid var(--line); white-space: nowrap; }
table.sessions td { padding: .45rem .5rem; border-bottom: 1px solid var(--line); white-space: nowrap; }
table.sessions tbody tr { cursor: pointer; }
table.sessions tbody tr:hover { background: var(--chip); }
table.sessions .num { text-align: right; font-variant-numeric: tabular-nums; }
table.sessions td.denied { color: var(--danger); font-weight: 700; }
table.sessions td.held { color: var(--warn); font-weight: 700; }
.mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
#audit-more, #audit-timeline-more { margin-top: .75rem; }

.timeline { list-style: none; padding: 0; margin: .75rem 0; display: flex; flex-direction: column; gap: .35rem; }
.timeline .step { border-left: 4px solid var(--line); padding: .1rem 0 .1rem .75rem; }
.timeline .step pre { margin: 0; white-space: pre-wrap; word-break: break-word; background: none; border: none; padding: 0; }
.timeline .kind-statement { border-left-color: var(--accent); margin-top: .5rem; }
.timeline .decision-deny { border-left-color: var(--danger); }
.timeline .decision-step-up { border-left-color: var(--warn); }
.timeline .resolved-approved { border-left-color: var(--ok); }
.timeline .resolved-rejected, .timeline .resolved-expired, .timeline .resolved-cancelled, .timeline .resolved-withdrawn, .timeline .resolved-shutdown,
.timeline .resolved-unavailable, .timeline .outcome-error { border-left-color: var(--danger); }
.timeline .kind-header pre { color: var(--muted); }
.timeline .chips { margin: .35rem 0 0; }
.timeline .chips li.command { font-weight: 700; }
.timeline .chips li.table { font-family: ui-monospace, monospace; }
.timeline .why { margin: .2rem 0 0; }

/* Live connection lost: said plainly, above everything. */
.banner { display: flex; align-items: center; justify-content: space-between; gap: 1rem; flex-wrap: wrap;
  padding: .6rem 1.5rem; background: var(--danger); color: #fff; }
.banner p { margin: 0; }
.banner button { background: #fff; color: var(--danger); border-color: #fff; }

/* What a preview of the held statement did (it ran; not committed). */
.preview { border: 1px dashed var(--warn); border-radius: 8px; padding: .4rem .75rem; margin: .5rem 0; }
.preview p { margin: .2rem 0; }
.preview-unavailable { border-color: var(--line); color: var(--muted); }
.preview .notices { margin: .2rem 0; font-size: .9rem; }
.outcome { display: block; }
.decided { border-left: 5px solid var(--muted); }
.decided[data-status="approved"] { border-left-color: var(--ok); }
.decided[data-status="rejected"], .decided[data-status="expired"] { border-left-color: var(--danger); }
.decided-status { font-weight: 600; }

@media (prefers-reduced-motion: reduce) { * { transition: none !important; animation: none !important; } }
@media (max-width: 40rem) { main { padding: 1rem; } .timer { text-align: left; } .top { padding: .75rem 1rem; } }
`;
