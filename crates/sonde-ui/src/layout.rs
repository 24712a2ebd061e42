//! Page layout, navigation and the sign-in form.

use maud::{DOCTYPE, Markup, PreEscaped, html};

/// One entry of the navigation.
#[derive(Debug, Clone, Copy)]
pub struct NavItem {
    /// Path, e.g. `/overview`.
    pub path: &'static str,
    /// Label.
    pub label: &'static str,
}

const CSS: &str = r#"
:root { color-scheme: light dark; --bg: #fff; --fg: #1b1f24; --muted: #59636e; --line: #d1d9e0;
  --card: #f6f8fa; --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; --accent: #0969da; }
@media (prefers-color-scheme: dark) { :root { --bg: #0d1117; --fg: #e6edf3; --muted: #9198a1;
  --line: #3d444d; --card: #151b23; --ok: #3fb950; --warn: #d29922; --bad: #f85149; --accent: #4493f8; } }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, sans-serif; background: var(--bg); color: var(--fg); }
header { display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; align-items: center; padding: .75rem 1.25rem;
  border-bottom: 1px solid var(--line); }
header .brand { font-weight: 700; }
nav ul { display: flex; flex-wrap: wrap; gap: .25rem 1rem; list-style: none; margin: 0; padding: 0; }
nav a { color: var(--fg); text-decoration: none; padding: .2rem .1rem; }
nav a[aria-current="page"] { border-bottom: 2px solid var(--accent); font-weight: 600; }
a:focus-visible, button:focus-visible, input:focus-visible, select:focus-visible { outline: 2px solid var(--accent); outline-offset: 2px; }
main { padding: 1rem 1.25rem 3rem; max-width: 1280px; }
h1 { font-size: 1.4rem; margin: .25rem 0 1rem; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: .75rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: .75rem; }
.card .value { font-size: 1.5rem; font-weight: 600; }
.muted { color: var(--muted); }
.ok { color: var(--ok); } .warn { color: var(--warn); } .bad { color: var(--bad); }
table { border-collapse: collapse; width: 100%; margin: .25rem 0 1rem; }
caption { text-align: left; padding: .25rem 0; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid var(--line); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.table-wrap { overflow-x: auto; }
form.filters { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: end; margin-bottom: 1rem; }
form.filters label { display: flex; flex-direction: column; font-size: .85rem; color: var(--muted); }
input, select, button { font: inherit; padding: .3rem .5rem; border: 1px solid var(--line);
  border-radius: 4px; background: var(--bg); color: var(--fg); }
button { background: var(--accent); color: #fff; border-color: var(--accent); cursor: pointer; }
figure { margin: .5rem 0 1.25rem; }
figcaption { font-size: .85rem; color: var(--muted); }
svg.chart { width: 100%; height: auto; max-width: 960px; }
svg.chart text { fill: var(--muted); font-size: 11px; }
svg.chart .grid { stroke: var(--line); stroke-width: 1; }
.signin { max-width: 420px; margin: 10vh auto; padding: 1.5rem; }
.signin input { width: 100%; margin: .25rem 0 .75rem; }
.error { color: var(--bad); }
.skip { position: absolute; left: -999px; } .skip:focus { left: 1rem; top: .5rem; background: var(--bg); padding: .25rem .5rem; z-index: 1; }
.downloads { font-size: .85rem; color: var(--muted); margin-top: -.75rem; }
pre.raw { white-space: pre-wrap; word-break: break-all; background: var(--card); padding: .5rem; border-radius: 4px; font-size: .8rem; max-height: 16rem; overflow: auto; }
@media (max-width: 640px) { main { padding: .75rem .5rem 2rem; } form.filters label { flex: 1 1 40%; } }
"#;

/// The document head.
fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Sonde" }
            style { (PreEscaped(CSS)) }
        }
    }
}

/// The dashboard's only script: on each `update` from `/live`, fetch the page's live region
/// again (same URL and filters, `partial=1`) and swap it in, without a reload. Pages work
/// without it; they just do not update.
pub const LIVE_JS: &str = r#"(() => {
  const live = document.getElementById('live');
  const every = Number(document.body.dataset.liveEvery || 0);
  const status = document.getElementById('live-status');
  if (!live || !every || !window.EventSource) return;
  let updates = 0, busy = false;
  const source = new EventSource('/live?every=' + every);
  source.onopen = () => { if (status) status.textContent = 'Live'; };
  source.onerror = () => { if (status) status.textContent = 'Reconnecting…'; };
  source.addEventListener('update', async () => {
    if (busy) return;
    busy = true;
    try {
      const url = new URL(location.href);
      url.searchParams.set('partial', '1');
      const r = await fetch(url, { credentials: 'same-origin' });
      if (r.ok && r.headers.get('x-sonde-partial')) {
        live.innerHTML = await r.text();
        updates += 1;
        document.body.dataset.liveUpdates = String(updates);
        if (status) status.textContent = 'Live · updated ' + new Date().toLocaleTimeString();
      } else {
        source.close();
        if (status) status.textContent = 'Signed out: reload to sign in';
      }
    } catch (e) {
      if (status) status.textContent = 'Update failed; retrying';
    } finally {
      busy = false;
    }
  });
})();
"#;

/// A full page: head, navigation with `active` marked, the filter form, and `body` in the
/// live region, which the script refreshes every `live_every_secs` when data changed (0:
/// never).
pub fn page(
    title: &str,
    nav: &[NavItem],
    active: &str,
    filters: Markup,
    body: Markup,
    live_every_secs: u64,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body data-live-every=(live_every_secs) {
                a.skip href="#main" { "Skip to content" }
                header {
                    span.brand { "Sonde" }
                    nav aria-label="Pages" {
                        ul {
                            @for item in nav {
                                li {
                                    @if item.path == active {
                                        a href=(item.path) aria-current="page" { (item.label) }
                                    } @else {
                                        a href=(item.path) { (item.label) }
                                    }
                                }
                            }
                        }
                    }
                    span #live-status .muted role="status" style="margin-left:auto" {}
                    form method="post" action="/logout" {
                        button type="submit" { "Sign out" }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (filters)
                    div #live { (body) }
                }
                @if live_every_secs > 0 {
                    script src="/assets/live.js" defer {}
                }
            }
        }
    }
}

/// The sign-in page: a form posting a read key to `/login`.
pub fn login_page(error: Option<&str>, next: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sign in"))
            body {
                main.signin {
                    h1 { "Sonde" }
                    p.muted { "Sign in with a read key of this project (printed by " code { "sonde init" } ")." }
                    @if let Some(e) = error {
                        p.error role="alert" { (e) }
                    }
                    form method="post" action="/login" {
                        label for="key" { "Read key" }
                        input id="key" name="key" type="password" autocomplete="current-password" required autofocus;
                        input type="hidden" name="next" value=(next);
                        button type="submit" { "Sign in" }
                    }
                }
            }
        }
    }
}
