//! The web dashboard: sign-in with a read key (an HttpOnly, SameSite=Strict session cookie),
//! server-rendered pages (`sonde-ui`) over the same data as the JSON API, filters carried in
//! the URL, a CSV/JSON download of every chart, and live updates over server-sent events.

mod cache;
mod health;
mod latency;
mod overview;
mod relevance;

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, html};
use parking_lot::Mutex;
use rand::RngCore;
use serde::Deserialize;
use sonde_latency::Filter;
use sonde_ui::{LineChart, NavItem, number};

use crate::{AppState, Scope, now_ms};

pub use cache::PageCache;
pub use health::{get_health_page, get_quarantine_page, post_quarantine_replay};
pub use latency::get_latency_page;
pub use overview::get_overview;
pub use relevance::{get_relevance_page, get_summary_page};

const COOKIE: &str = "sonde_session";
/// Sessions last 12 hours.
const TTL_MS: i64 = 12 * 3_600_000;
/// A one-time sign-in link is good for 30 minutes.
const LINK_TTL_MS: i64 = 30 * 60_000;
const MINUTE: i64 = 60_000;
/// No script or style from anywhere but this server; no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; frame-ancestors 'none'; form-action 'self'";

/// The pages, in navigation order.
pub const NAV: [NavItem; 5] = [
    NavItem {
        path: "/overview",
        label: "Overview",
    },
    NavItem {
        path: "/latency",
        label: "Latency & SLOs",
    },
    NavItem {
        path: "/relevance",
        label: "Relevance",
    },
    NavItem {
        path: "/health",
        label: "Data health",
    },
    NavItem {
        path: "/summary",
        label: "Summary",
    },
];

/// Signed-in sessions and unused one-time sign-in links, with their expiry and scope (in
/// memory: a restart signs everyone out).
#[derive(Default)]
pub struct Sessions {
    tokens: Mutex<HashMap<String, (i64, Scope)>>,
    links: Mutex<HashMap<String, (i64, Scope)>>,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl Sessions {
    fn create(&self, scope: Scope) -> String {
        let token = random_token();
        let now = now_ms();
        let mut map = self.tokens.lock();
        map.retain(|_, (exp, _)| *exp > now);
        map.insert(token.clone(), (now + TTL_MS, scope));
        token
    }

    fn scope(&self, token: &str) -> Option<Scope> {
        self.tokens
            .lock()
            .get(token)
            .filter(|(exp, _)| *exp > now_ms())
            .map(|(_, s)| *s)
    }

    fn remove(&self, token: &str) {
        self.tokens.lock().remove(token);
    }

    /// A one-time code that signs its first user in with read scope (`sonde demo` prints it
    /// as a link, so nobody pastes a key).
    pub fn sign_in_link(&self) -> String {
        let code = random_token();
        let now = now_ms();
        let mut map = self.links.lock();
        map.retain(|_, (exp, _)| *exp > now);
        map.insert(code.clone(), (now + LINK_TTL_MS, Scope::Read));
        format!("/login/link?code={code}")
    }

    fn redeem(&self, code: &str) -> Option<Scope> {
        self.links
            .lock()
            .remove(code)
            .filter(|(exp, _)| *exp > now_ms())
            .map(|(_, s)| s)
    }
}

fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The scope of the request's live session; otherwise the redirect to the sign-in page.
fn signed_in(state: &AppState, headers: &HeaderMap, here: &str) -> Result<Scope, Redirect> {
    session_token(headers)
        .and_then(|t| state.sessions.scope(&t))
        .ok_or_else(|| Redirect::to(&format!("/login?next={}", encode(here))))
}

/// Percent-encode a query value, keeping `/` readable in `next=` paths.
fn encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// Only local paths: an open redirect would let a link send a signed-in user anywhere.
fn local(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/overview"
    }
}

/// `?next=` of the sign-in page.
#[derive(Debug, Default, Deserialize)]
pub struct NextParam {
    next: Option<String>,
}

/// `GET /login`.
pub async fn get_login(Query(p): Query<NextParam>) -> Response {
    html_page(sonde_ui::login_page(
        None,
        local(p.next.as_deref().unwrap_or("/overview")),
    ))
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    key: String,
    #[serde(default)]
    next: String,
}

/// A redirect to `next` that sets a new session cookie of `scope`.
fn open_session(state: &AppState, scope: Scope, next: &str) -> Response {
    let token = state.sessions.create(scope);
    let cookie = format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        TTL_MS / 1000
    );
    let mut resp = Redirect::to(next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `POST /login`: a read (or admin) key opens a session of that key's scope.
pub async fn post_login(State(state): State<AppState>, Form(f): Form<LoginForm>) -> Response {
    let next = local(&f.next).to_string();
    match state.project.scope_of(f.key.trim()) {
        Some(s) if s.allows(Scope::Read) => open_session(&state, s, &next),
        _ => {
            let mut resp = html_page(sonde_ui::login_page(
                Some("That is not a read key of this project."),
                &next,
            ));
            *resp.status_mut() = StatusCode::UNAUTHORIZED;
            resp
        }
    }
}

/// `?code=` of a one-time sign-in link.
#[derive(Debug, Deserialize)]
pub struct LinkParam {
    code: String,
}

/// `GET /login/link?code=`: redeem a one-time sign-in link. The page it lands on is
/// same-site, so the Strict cookie it sets is sent with the redirect that follows.
pub async fn get_login_link(State(state): State<AppState>, Query(p): Query<LinkParam>) -> Response {
    match state.sessions.redeem(&p.code) {
        Some(scope) => open_session(&state, scope, "/overview"),
        None => {
            let mut resp = html_page(sonde_ui::login_page(
                Some("That sign-in link was used already or has expired; sign in with a read key."),
                "/overview",
            ));
            *resp.status_mut() = StatusCode::UNAUTHORIZED;
            resp
        }
    }
}

/// `POST /logout`.
pub async fn post_logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(t) = session_token(&headers) {
        state.sessions.remove(&t);
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("sonde_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    resp
}

/// `GET /`.
pub async fn get_root() -> Redirect {
    Redirect::to("/overview")
}

/// `GET /assets/live.js`: the dashboard's only script (live updates).
pub async fn get_live_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        sonde_ui::LIVE_JS,
    )
        .into_response()
}

/// Filters of the pages, carried in the URL so a view can be shared, and how to answer
/// (the page, only its live region, or one chart's data).
#[derive(Debug, Default, Deserialize, Clone)]
pub struct PageFilters {
    /// Minutes back from now (default 60).
    pub minutes: Option<i64>,
    /// Only this surface.
    pub surface: Option<String>,
    /// Only this model version.
    pub model: Option<String>,
    /// Only this experiment (the relevance page compares its variants).
    pub experiment: Option<String>,
    /// Only this variant.
    pub variant: Option<String>,
    /// Only this user segment: `device:<value>` or `region:<value>`.
    pub segment: Option<String>,
    /// The quantile the latency page charts (default 0.99).
    pub q: Option<f64>,
    /// `1`: only the live region (what the page script swaps in).
    pub partial: Option<String>,
    /// The id of a chart whose data to download instead of the page.
    pub download: Option<String>,
    /// `csv` (default) or `json`, with `download`.
    pub format: Option<String>,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.clone().filter(|s| !s.is_empty())
}

impl PageFilters {
    fn surface(&self) -> Option<String> {
        nonempty(&self.surface)
    }

    /// The rollup filter of these filters (the segment does not apply to rollups).
    fn rollups(&self) -> Filter {
        Filter {
            surface: self.surface(),
            model_version: nonempty(&self.model),
            experiment: nonempty(&self.experiment),
            variant: nonempty(&self.variant),
        }
    }

    /// `(dimension, value)` of the segment filter.
    fn segment(&self) -> Option<(&'static str, String)> {
        let s = nonempty(&self.segment)?;
        let (dim, value) = s.split_once(':')?;
        let dim = match dim {
            "device" => "device",
            "region" => "region",
            _ => return None,
        };
        Some((dim, value.to_string()))
    }

    /// The filters as a query string (without the output parameters), for links.
    fn query(&self) -> String {
        let mut parts = vec![format!("minutes={}", self.window().0)];
        for (k, v) in [
            ("surface", &self.surface),
            ("model", &self.model),
            ("experiment", &self.experiment),
            ("variant", &self.variant),
            ("segment", &self.segment),
        ] {
            if let Some(v) = nonempty(v) {
                parts.push(format!("{k}={}", encode(&v)));
            }
        }
        if let Some(q) = self.q {
            parts.push(format!("q={q}"));
        }
        parts.join("&")
    }

    /// The quantile to chart: `q` when in (0, 1), else 0.99.
    fn quantile(&self) -> f64 {
        self.q.filter(|q| *q > 0.0 && *q < 1.0).unwrap_or(0.99)
    }

    /// The window: `(minutes, from, to, step)`, `[from, to)` ending at the current minute,
    /// with a step giving at most ~120 points.
    fn window(&self) -> (i64, i64, i64, i64) {
        let minutes = self.minutes.unwrap_or(60).clamp(5, 7 * 24 * 60);
        // Past two days, windows end on the hour: the live ranking sums keep minutes for
        // two days and hours beyond.
        let unit = if minutes > 2 * 1440 {
            60 * MINUTE
        } else {
            MINUTE
        };
        let to = (now_ms() + unit - 1).div_euclid(unit) * unit;
        (
            minutes,
            to - minutes * MINUTE,
            to,
            (minutes / 120).max(1) * MINUTE,
        )
    }

    /// Relevance parameters over `[from, to)` for these filters, grouped by `group_by`.
    fn relevance(
        &self,
        state: &AppState,
        from: i64,
        to: i64,
        group_by: &str,
    ) -> crate::relevance::RelevanceParams {
        let seg = self.segment();
        let seg_of = |dim: &str| seg.as_ref().filter(|s| s.0 == dim).map(|s| s.1.clone());
        crate::relevance::RelevanceParams {
            surface: self.surface(),
            model_version: nonempty(&self.model),
            experiment: nonempty(&self.experiment),
            variant: nonempty(&self.variant),
            device: seg_of("device"),
            region: seg_of("region"),
            group_by: Some(group_by.into()),
            from: Some(from.to_string()),
            to: Some(to.to_string()),
            gains: state.config.gains,
            ..Default::default()
        }
    }
}

/// The values each filter can take: what the rollups have seen, and the segments of the
/// last hour's decisions.
#[derive(Debug, Default)]
struct Choices {
    surfaces: Vec<String>,
    models: Vec<String>,
    experiments: Vec<String>,
    variants: Vec<String>,
    segments: Vec<String>,
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.retain(|s| !s.is_empty());
    v.sort();
    v.dedup();
    v
}

async fn choices(state: &AppState) -> Choices {
    let (surfaces, models, experiments, variants) = state.store.with_rollups(|r| {
        let keys = r.keys();
        (
            sorted(keys.iter().map(|k| k.surface.clone()).collect()),
            sorted(keys.iter().map(|k| k.model_version.clone()).collect()),
            sorted(keys.iter().map(|k| k.experiment.clone()).collect()),
            sorted(keys.iter().map(|k| k.variant.clone()).collect()),
        )
    });
    Choices {
        surfaces,
        models,
        experiments,
        variants,
        segments: state.segments.get(&state.store).await,
    }
}

/// The device and region values of the last hour's decisions, refreshed at most every five
/// minutes (a filter list must not cost a scan per page view).
#[derive(Default)]
pub struct SegmentCache {
    cached: tokio::sync::Mutex<Option<(i64, Vec<String>)>>,
}

impl SegmentCache {
    async fn get(&self, store: &sonde_store::Store) -> Vec<String> {
        let mut guard = self.cached.lock().await;
        let now = now_ms();
        if let Some((at, v)) = guard.as_ref()
            && now - at < 5 * MINUTE
        {
            return v.clone();
        }
        let sql = format!(
            "SELECT DISTINCT 'device:' || device FROM decisions WHERE device IS NOT NULL AND event_time >= {from} \
             UNION SELECT DISTINCT 'region:' || region FROM decisions WHERE region IS NOT NULL AND event_time >= {from}",
            from = crate::relevance::ts_lit(now - 60 * MINUTE)
        );
        let values = match store.query(&sql, sonde_store::QueryLimits::default()).await {
            Ok(r) => crate::sql::rows(&r.batches)
                .into_iter()
                .filter_map(|row| row.first().and_then(|v| v.as_str()).map(str::to_string))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "listing segments for the dashboard filters");
                Vec::new()
            }
        };
        let values = sorted(values);
        *guard = Some((now, values.clone()));
        values
    }
}

/// The quantiles the latency page offers.
const QUANTILES: [(f64, &str); 5] = [
    (0.5, "p50"),
    (0.9, "p90"),
    (0.95, "p95"),
    (0.99, "p99"),
    (0.999, "p99.9"),
];

/// The name of quantile `q`: `p99`, or `q0.97` for one not offered.
fn quantile_label(q: f64) -> String {
    QUANTILES
        .iter()
        .find(|(x, _)| (x - q).abs() < 1e-9)
        .map_or_else(|| format!("q{q}"), |(_, l)| (*l).to_string())
}

/// The time ranges a page offers, in minutes.
const RANGES: [(i64, &str); 5] = [
    (15, "15 min"),
    (60, "1 hour"),
    (360, "6 hours"),
    (1440, "24 hours"),
    (10080, "7 days"),
];

/// The filter form of a page, as a GET form (so the URL carries the filters).
fn filter_form(action: &str, f: &PageFilters, c: &Choices) -> Markup {
    let (minutes, ..) = f.window();
    let select = |name: &str, label: &str, current: &Option<String>, values: &[String]| {
        html! {
            label { (label)
                select name=(name) {
                    option value="" { "All" }
                    @for v in values {
                        option value=(v) selected[current.as_deref() == Some(v.as_str())] { (v) }
                    }
                }
            }
        }
    };
    html! {
        form.filters method="get" action=(action) {
            label { "Time range"
                select name="minutes" {
                    @for (m, label) in RANGES {
                        option value=(m) selected[m == minutes] { (label) }
                    }
                }
            }
            (select("surface", "Surface", &f.surface, &c.surfaces))
            (select("model", "Model version", &f.model, &c.models))
            (select("experiment", "Experiment", &f.experiment, &c.experiments))
            (select("variant", "Variant", &f.variant, &c.variants))
            (select("segment", "Segment", &f.segment, &c.segments))
            @if action == "/latency" {
                label { "Quantile"
                    select name="q" {
                        @for (q, label) in QUANTILES {
                            option value=(q) selected[(f.quantile() - q).abs() < 1e-9] { (label) }
                        }
                    }
                }
            }
            button type="submit" { "Apply" }
        }
    }
}

/// What a page handler renders: the page, its charts (for downloads) and how often its live
/// region refreshes.
#[derive(Clone)]
struct Rendered {
    title: &'static str,
    path: &'static str,
    filters: Markup,
    body: Markup,
    charts: Vec<(&'static str, LineChart)>,
    live_every_secs: u64,
}

/// A chart with the links to download its data.
fn chart_block(id: &str, chart: &LineChart, path: &str, f: &PageFilters) -> Markup {
    let base = format!("{path}?{}&download={id}", f.query());
    html! {
        (chart.render())
        p.downloads { "Data: " a href=(format!("{base}&format=csv")) download { "CSV" } " · " a href=(format!("{base}&format=json")) { "JSON" } }
    }
}

fn html_page(m: Markup) -> Response {
    let mut resp = Html(m.into_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Answer with the page, its live region (`partial=1`) or a chart's data (`download=`).
fn respond(r: &Rendered, f: &PageFilters) -> Response {
    if let Some(id) = f.download.as_deref() {
        let Some((_, chart)) = r.charts.iter().find(|(c, _)| *c == id) else {
            return (
                StatusCode::NOT_FOUND,
                format!(
                    "no chart {id:?} on {}; charts: {}",
                    r.path,
                    r.charts.iter().map(|c| c.0).collect::<Vec<_>>().join(", ")
                ),
            )
                .into_response();
        };
        return if f.format.as_deref() == Some("json") {
            axum::Json(chart).into_response()
        } else {
            let disposition = format!("attachment; filename=\"sonde-{id}.csv\"");
            let mut resp = (
                [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
                chart.to_csv(),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&disposition) {
                resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            resp
        };
    }
    if f.partial.as_deref() == Some("1") {
        let mut resp = html_page(r.body.clone());
        resp.headers_mut()
            .insert("x-sonde-partial", HeaderValue::from_static("1"));
        return resp;
    }
    html_page(sonde_ui::page(
        r.title,
        &NAV,
        r.path,
        r.filters.clone(),
        r.body.clone(),
        r.live_every_secs,
    ))
}

/// `?every=` of the live stream.
#[derive(Debug, Deserialize)]
pub struct LiveParams {
    every: Option<u64>,
}

/// What changes when data arrives or an alert moves.
pub(crate) fn data_version(state: &AppState) -> u64 {
    let c = state.store.counters();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let firing = state.alerts.states().iter().filter(|a| a.firing).count() as u64;
    load(&c.accepted)
        .wrapping_add(load(&c.quarantined))
        .wrapping_add(load(&c.spans))
        .wrapping_add(firing << 48)
}

/// `GET /live?every=N`: server-sent events telling a page to refresh its live region, at
/// most every `N` seconds (at least 2) when data arrived, and at least once a minute (the
/// window slides).
pub async fn get_live(
    State(state): State<AppState>,
    Query(p): Query<LiveParams>,
    headers: HeaderMap,
) -> Response {
    if signed_in(&state, &headers, "/overview").is_err() {
        return (StatusCode::UNAUTHORIZED, "sign in first").into_response();
    }
    let every = Duration::from_secs(p.every.unwrap_or(5).clamp(2, 3600));
    let start = (data_version(&state), tokio::time::Instant::now());
    let stream = futures::stream::unfold(
        (state, start),
        move |(state, (last, last_sent))| async move {
            loop {
                tokio::time::sleep(every).await;
                let v = data_version(&state);
                if v != last || last_sent.elapsed() >= Duration::from_secs(60) {
                    let event = Event::default().event("update").data(v.to_string());
                    let next = (v, tokio::time::Instant::now());
                    return Some((Ok::<_, Infallible>(event), (state, next)));
                }
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn pct(x: f64) -> String {
    format!("{}%", number(Some(x * 100.0), 2))
}
