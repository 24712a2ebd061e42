//! `GET /v1/health/data`: is the instrumentation itself healthy? Per event type and surface:
//! volume and rate, event-time lag, time since the last event, late, future and backfilled
//! shares, duplicates and conflicting duplicates; rejections by code, orphan interactions,
//! the quarantine, and distinct users, sessions and items per hour. See `docs/health.md`.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sonde_latency::Sketch;
use sonde_store::arrow::array::{Array, RecordBatch};
use sonde_store::receipts::{self, REJECTED, ReceiptCell, Receipts};

use crate::columns::{i64s, utf8};
use crate::relevance::ts_lit;
use crate::{ApiError, AppState, Scope, authorize};

const MINUTE: i64 = 60_000;

/// The surface column of `table`'s rows (decisions only; `''` for the others).
fn surface_of(table: &str) -> &'static str {
    if table == "decisions" {
        "surface"
    } else {
        "''"
    }
}

/// Event tables and the type of their events.
const SOURCES: [(&str, &str); 6] = [
    ("decision", "decisions"),
    ("interaction", "interactions"),
    ("conversion", "conversions"),
    ("touch", "touches"),
    ("identify", "identities"),
    ("exposure", "exposures"),
];

/// Outcomes of ingest per event type and surface since the server started (duplicates are
/// not stored, so only the collector can count them).
#[derive(Debug, Default)]
pub struct IngestTally {
    by_source: Mutex<BTreeMap<(&'static str, String), Outcomes>>,
    /// When each source's last stored event was received, read from the store once (at the
    /// first report); `by_source` carries it on from there.
    stored_last: tokio::sync::OnceCell<BTreeMap<(String, String), i64>>,
    /// Cardinality of the settled hours, and when it was counted (epoch ms).
    cardinality: Mutex<(i64, BTreeMap<i64, HourCardinality>)>,
}

/// Counts of one source.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Outcomes {
    /// Stored.
    pub accepted: u64,
    /// Retries of stored events (same content).
    pub duplicates: u64,
    /// Reused ids with different content.
    pub conflicting_duplicates: u64,
    /// When the last delivery of this source was received (epoch ms).
    #[serde(skip)]
    pub last_received_ms: i64,
}

impl IngestTally {
    /// Count a batch's outcomes (one lock per batch).
    /// `source_of[i]` indexes `sources` for the i-th outcome.
    pub(crate) fn add(
        &self,
        outcomes: &[sonde_store::Seen],
        source_of: &[usize],
        sources: &[(&'static str, String)],
        received_at: i64,
    ) {
        let mut local = vec![Outcomes::default(); sources.len()];
        for (seen, at) in outcomes.iter().zip(source_of) {
            let Some(o) = local.get_mut(*at) else {
                continue;
            };
            match seen {
                sonde_store::Seen::New => o.accepted += 1,
                sonde_store::Seen::Duplicate => o.duplicates += 1,
                sonde_store::Seen::Conflict => {
                    o.duplicates += 1;
                    o.conflicting_duplicates += 1;
                }
            }
        }
        let mut map = self.by_source.lock();
        for ((kind, surface), o) in sources.iter().zip(local) {
            if o.accepted + o.duplicates == 0 {
                continue;
            }
            let t = map.entry((kind, surface.clone())).or_default();
            t.accepted += o.accepted;
            t.duplicates += o.duplicates;
            t.conflicting_duplicates += o.conflicting_duplicates;
            t.last_received_ms = t.last_received_ms.max(received_at);
        }
    }

    /// A copy of the counts.
    pub fn snapshot(&self) -> BTreeMap<(&'static str, String), Outcomes> {
        self.by_source.lock().clone()
    }
}

/// Query parameters.
#[derive(Debug, Default, Deserialize)]
pub struct HealthParams {
    /// Window of the rates and lags, in minutes (default 60).
    pub window_minutes: Option<i64>,
    /// An interaction is an orphan when its decision has not arrived this long after it
    /// (default 10 minutes).
    pub grace_minutes: Option<i64>,
}

/// One event type and surface.
#[derive(Debug, Default, Serialize)]
pub struct SourceHealth {
    /// Event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Surface (decisions only; empty for other types).
    pub surface: String,
    /// Events received in the window.
    pub events: u64,
    /// Events per second over the last 5 minutes.
    pub rate_per_sec_5m: f64,
    /// When the last event of this source was received (epoch ms, all time).
    pub last_received_ms: Option<i64>,
    /// Seconds since then.
    pub seconds_since_last: Option<f64>,
    /// Median of `received_at − event_time` in the window, backfills excluded (1%).
    pub lag_p50_ms: Option<f64>,
    /// 99th percentile of the same.
    pub lag_p99_ms: Option<f64>,
    /// Share of the window's events flagged late.
    pub late_rate: f64,
    /// Share flagged as from the future.
    pub future_rate: f64,
    /// Share imported as backfill.
    pub backfill_rate: f64,
    /// Ingest outcomes since the server started.
    pub since_start: Outcomes,
    /// `duplicates / (accepted + duplicates)` since start.
    pub duplicate_rate: f64,
    /// `conflicting_duplicates / (accepted + duplicates)` since start.
    pub conflict_rate: f64,
}

/// Response of `GET /v1/health/data`.
#[derive(Debug, Serialize)]
pub struct HealthReport {
    /// When (epoch ms).
    pub at_ms: i64,
    /// The window, minutes.
    pub window_minutes: i64,
    /// Per source.
    pub sources: Vec<SourceHealth>,
    /// Rejected events in the window, by code, most frequent first.
    pub rejections: Vec<CodeCount>,
    /// `rejected / (rejected + stored)` in the window.
    pub rejection_rate: f64,
    /// Interactions of the window (received at least `grace_minutes` ago) and how many have
    /// no decision with their `request_id`.
    pub orphan_interactions: Orphans,
    /// The quarantine.
    pub quarantine: QuarantineSize,
    /// Distinct users, sessions and items per hour of event time, last 24 hours
    /// (HyperLogLog estimates).
    pub cardinality: Vec<HourCardinality>,
}

/// Rejections of one code.
#[derive(Debug, Serialize)]
pub struct CodeCount {
    /// Error code.
    pub code: String,
    /// Events.
    pub count: u64,
}

/// Orphan interactions.
#[derive(Debug, Default, Serialize)]
pub struct Orphans {
    /// Grace period, minutes.
    pub grace_minutes: i64,
    /// Interactions checked.
    pub checked: u64,
    /// Of those, without a decision.
    pub orphans: u64,
    /// `orphans / checked`.
    pub rate: f64,
}

/// Size of the quarantine.
#[derive(Debug, Default, Serialize)]
pub struct QuarantineSize {
    /// Entries.
    pub total: u64,
    /// Entries not yet replayed successfully.
    pub unresolved: u64,
}

/// Distinct counts of one hour.
#[derive(Debug, Clone, Serialize)]
pub struct HourCardinality {
    /// Hour start (epoch ms).
    pub hour_ms: i64,
    /// Distinct users (user key, else anonymous key) with decisions.
    pub users: u64,
    /// Distinct sessions.
    pub sessions: u64,
    /// Distinct items shown.
    pub items: u64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// The two counts of a one-row `SELECT count(*), sum(...)` (a null sum is 0).
async fn two_counts(state: &AppState, sql: &str) -> Result<(u64, u64), ApiError> {
    let mut out = (0, 0);
    state
        .store
        .scan(sql, state.config.query_timeout, |b: &RecordBatch| {
            let (x, y) = (i64s(b, 0)?, i64s(b, 1)?);
            if b.num_rows() > 0 {
                let get = |a: &sonde_store::arrow::array::Int64Array| {
                    if a.is_null(0) {
                        0
                    } else {
                        a.value(0).max(0) as u64
                    }
                };
                out = (get(&x), get(&y));
            }
            Ok(())
        })
        .await?;
    Ok(out)
}

/// `GET /v1/health/data`.
pub async fn get_health(
    State(state): State<AppState>,
    Query(params): Query<HealthParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Scope::Read)?;
    let window = params.window_minutes.unwrap_or(60);
    let grace = params.grace_minutes.unwrap_or(10);
    if !(1..=7 * 24 * 60).contains(&window) || !(0..=24 * 60).contains(&grace) {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            "window_minutes must be 1 to 10080 and grace_minutes 0 to 1440",
        ));
    }
    Ok(axum::Json(report(&state, window, grace).await?).into_response())
}

/// When each source's last stored event was received: a scan of every table, so done once
/// per server (the ingest tally keeps it current after that). A stalled source is the point.
async fn stored_last(state: &AppState) -> Result<&BTreeMap<(String, String), i64>, ApiError> {
    state
        .tally
        .stored_last
        .get_or_try_init(|| async {
            let per_table =
                futures::future::try_join_all(SOURCES.iter().map(|(kind, table)| async move {
                    let surface = surface_of(table);
                    let sql = format!(
                        "SELECT {surface}, CAST(max(received_at) AS BIGINT) FROM {table} GROUP BY 1"
                    );
                    let mut out = Vec::new();
                    state
                        .store
                        .scan(&sql, state.config.query_timeout, |b: &RecordBatch| {
                            let s = utf8(b, 0)?;
                            let at = i64s(b, 1)?;
                            for r in 0..b.num_rows() {
                                if !at.is_null(r) {
                                    out.push((
                                        (kind.to_string(), s.value(r).to_string()),
                                        at.value(r),
                                    ));
                                }
                            }
                            Ok(())
                        })
                        .await?;
                    Ok::<_, ApiError>(out)
                }))
                .await?;
            Ok(per_table.into_iter().flatten().collect())
        })
        .await
}

/// One source's figures over the window: counts and ingest lag.
async fn source_health(
    state: &AppState,
    kind: &str,
    table: &str,
    now: i64,
    from: i64,
) -> Result<BTreeMap<(String, String), SourceHealth>, ApiError> {
    let timeout = state.config.query_timeout;
    let store = &state.store;
    let surface = surface_of(table);
    let window_sql = format!(
        "SELECT {surface}, count(*), \
           sum(CASE WHEN received_at >= {recent} THEN 1 ELSE 0 END), \
           sum(CASE WHEN is_late THEN 1 ELSE 0 END), \
           sum(CASE WHEN is_future THEN 1 ELSE 0 END), \
           sum(CASE WHEN is_backfill THEN 1 ELSE 0 END) \
         FROM {table} WHERE received_at >= {from} GROUP BY 1",
        recent = ts_lit(now - 5 * MINUTE),
        from = ts_lit(from),
    );
    // Event-time lag of live (not backfilled) events.
    let lag_sql = format!(
        "SELECT {surface}, CAST(received_at AS BIGINT) - CAST(event_time AS BIGINT) \
         FROM {table} WHERE received_at >= {from} AND NOT is_backfill",
        from = ts_lit(from),
    );
    let mut window: Vec<(String, [i64; 5])> = Vec::new();
    let mut lags: BTreeMap<String, Sketch> = BTreeMap::new();
    let (w, g) = tokio::join!(
        store.scan(&window_sql, timeout, |b: &RecordBatch| {
            let s = utf8(b, 0)?;
            let cols: Vec<_> = (1..6).map(|i| i64s(b, i)).collect::<Result<_, _>>()?;
            for r in 0..b.num_rows() {
                let mut v = [0; 5];
                for (i, c) in cols.iter().enumerate() {
                    v[i] = c.value(r);
                }
                window.push((s.value(r).to_string(), v));
            }
            Ok(())
        }),
        store.scan(&lag_sql, timeout, |b: &RecordBatch| {
            let s = utf8(b, 0)?;
            let lag = i64s(b, 1)?;
            for r in 0..b.num_rows() {
                // Future events have negative lag; the sketch holds magnitudes ≥ 0.
                lags.entry(s.value(r).to_string())
                    .or_default()
                    .add(lag.value(r).max(0) as f64);
            }
            Ok(())
        }),
    );
    w?;
    g?;
    let mut out: BTreeMap<(String, String), SourceHealth> = BTreeMap::new();
    for (s, v) in window {
        let h = out.entry((kind.to_string(), s)).or_default();
        let n = v[0].max(0) as u64;
        h.events = n;
        h.rate_per_sec_5m = v[1] as f64 / 300.0;
        h.late_rate = ratio(v[2] as u64, n);
        h.future_rate = ratio(v[3] as u64, n);
        h.backfill_rate = ratio(v[4] as u64, n);
    }
    for (s, sketch) in lags {
        let h = out.entry((kind.to_string(), s)).or_default();
        h.lag_p50_ms = sketch.quantile(0.5);
        h.lag_p99_ms = sketch.quantile(0.99);
    }
    Ok(out)
}

/// Per-source figures from the receipts of the window and of its last five minutes.
fn from_receipts(
    window: &BTreeMap<(String, String), ReceiptCell>,
    recent: &BTreeMap<(String, String), ReceiptCell>,
) -> BTreeMap<(String, String), SourceHealth> {
    window
        .iter()
        .filter(|((kind, _), _)| kind != REJECTED)
        .map(|(key, c)| {
            let h = SourceHealth {
                events: c.events,
                rate_per_sec_5m: recent.get(key).map_or(0, |r| r.events) as f64 / 300.0,
                late_rate: ratio(c.late, c.events),
                future_rate: ratio(c.future, c.events),
                backfill_rate: ratio(c.backfill, c.events),
                lag_p50_ms: c.lag.quantile(0.5),
                lag_p99_ms: c.lag.quantile(0.99),
                ..SourceHealth::default()
            };
            (key.clone(), h)
        })
        .collect()
}

/// Rejections by code from the receipts, most frequent first.
fn rejections_of(window: &BTreeMap<(String, String), ReceiptCell>) -> Vec<CodeCount> {
    let mut out: Vec<CodeCount> = window
        .iter()
        .filter(|((kind, _), _)| kind == REJECTED)
        .map(|((_, code), c)| CodeCount {
            code: code.clone(),
            count: c.events,
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.code.cmp(&b.code)));
    out
}

/// Empty receipts, complete (once loaded) from the first hour they keep.
pub fn empty_receipts(now: i64) -> Receipts {
    Receipts::new((now - receipts::HOUR_RETENTION).div_euclid(60 * MINUTE) * 60 * MINUTE)
}

/// Load what `snapshot` holds into the receipts [`crate::load_live_sums`] started: counts
/// per minute, and the lag of every live event, over the hours they keep. Until it is done,
/// or if it fails, the health report counts by SQL.
pub async fn load_receipts(
    store: &sonde_store::Store,
    snapshot: sonde_store::Snapshot,
    timeout: std::time::Duration,
) -> Result<(), sonde_store::StoreError> {
    let Some(from) = store.with_live(|s| s.receipts.complete_from()) else {
        return Ok(());
    };
    let since = ts_lit(from);
    for (kind, table) in SOURCES {
        let surface = surface_of(table);
        let counts_sql = format!(
            "SELECT {surface}, CAST(date_trunc('minute', received_at) AS BIGINT), count(*), \
               sum(CASE WHEN is_late THEN 1 ELSE 0 END), \
               sum(CASE WHEN is_future THEN 1 ELSE 0 END), \
               sum(CASE WHEN is_backfill THEN 1 ELSE 0 END) \
             FROM {table} WHERE received_at >= {since} GROUP BY 1, 2"
        );
        sonde_store::Store::scan_snapshot(snapshot.clone(), &counts_sql, timeout, |b| {
            let key = utf8(b, 0)?;
            let cols: Vec<_> = (1..6).map(|i| i64s(b, i)).collect::<Result<_, _>>()?;
            store.with_live(|s| {
                let r = &mut s.receipts;
                for row in 0..b.num_rows() {
                    let n = |i: usize| cols[i].value(row).max(0) as u64;
                    r.add_counts(
                        kind,
                        key.value(row),
                        cols[0].value(row),
                        [n(1), n(2), n(3), n(4)],
                    );
                }
            });
            Ok(())
        })
        .await?;
        let lag_sql = format!(
            "SELECT {surface}, CAST(received_at AS BIGINT), \
               CAST(received_at AS BIGINT) - CAST(event_time AS BIGINT) \
             FROM {table} WHERE received_at >= {since} AND NOT is_backfill"
        );
        sonde_store::Store::scan_snapshot(snapshot.clone(), &lag_sql, timeout, |b| {
            let (key, at, lag) = (utf8(b, 0)?, i64s(b, 1)?, i64s(b, 2)?);
            store.with_live(|s| {
                let r = &mut s.receipts;
                for row in 0..b.num_rows() {
                    r.add_lag(kind, key.value(row), at.value(row), lag.value(row));
                }
            });
            Ok(())
        })
        .await?;
    }
    let rejected_sql = format!(
        "SELECT code, CAST(date_trunc('minute', received_at) AS BIGINT), count(*) \
         FROM quarantine WHERE received_at >= {since} GROUP BY 1, 2"
    );
    sonde_store::Store::scan_snapshot(snapshot, &rejected_sql, timeout, |b| {
        let (code, minute, n) = (utf8(b, 0)?, i64s(b, 1)?, i64s(b, 2)?);
        store.with_live(|s| {
            let r = &mut s.receipts;
            for row in 0..b.num_rows() {
                let count = n.value(row).max(0) as u64;
                r.add_counts(
                    REJECTED,
                    code.value(row),
                    minute.value(row),
                    [count, 0, 0, 0],
                );
            }
        });
        Ok(())
    })
    .await?;
    store.with_live(|s| s.receipts.set_ready());
    Ok(())
}

/// Users, sessions and items per hour since the hour a day ago. Hours before the last two
/// are kept for ten minutes between reports (late events reach them within that); the last
/// two are counted afresh each time.
async fn cardinality(state: &AppState, now: i64) -> Result<Vec<HourCardinality>, ApiError> {
    const HOUR: i64 = 60 * MINUTE;
    let first = (now - 24 * HOUR).div_euclid(HOUR) * HOUR;
    let cached = {
        let c = state.tally.cardinality.lock();
        (c.0 > now - 10 * MINUTE).then(|| c.1.clone())
    };
    let since = match cached {
        Some(_) => (now - HOUR).div_euclid(HOUR) * HOUR,
        None => first,
    };
    let counted = count_cardinality(state, since).await?;
    let refreshed = cached.is_none();
    let mut hours = cached.unwrap_or_default();
    hours.retain(|h, _| *h >= first && *h < since);
    hours.extend(counted);
    if refreshed {
        *state.tally.cardinality.lock() = (now, hours.clone());
    }
    Ok(hours.into_values().collect())
}

/// Users, sessions and items per hour of event time from `since`.
async fn count_cardinality(
    state: &AppState,
    since: i64,
) -> Result<BTreeMap<i64, HourCardinality>, ApiError> {
    let timeout = state.config.query_timeout;
    let day = ts_lit(since);
    let users_sql = format!(
        "SELECT CAST(date_trunc('hour', event_time) AS BIGINT), \
           approx_distinct(coalesce(user_key, anonymous_key)), approx_distinct(session_key) \
         FROM decisions WHERE event_time >= {day} GROUP BY 1"
    );
    let items_sql = format!(
        "SELECT CAST(date_trunc('hour', event_time) AS BIGINT), approx_distinct(item_id) \
         FROM decision_items WHERE event_time >= {day} GROUP BY 1"
    );
    let mut users: Vec<(i64, u64, u64)> = Vec::new();
    let mut items: Vec<(i64, u64)> = Vec::new();
    let (u, i) = tokio::join!(
        state.store.scan(&users_sql, timeout, |b: &RecordBatch| {
            let (h, a, c) = (i64s(b, 0)?, i64s(b, 1)?, i64s(b, 2)?);
            for r in 0..b.num_rows() {
                users.push((
                    h.value(r),
                    a.value(r).max(0) as u64,
                    c.value(r).max(0) as u64,
                ));
            }
            Ok(())
        }),
        state.store.scan(&items_sql, timeout, |b: &RecordBatch| {
            let (h, a) = (i64s(b, 0)?, i64s(b, 1)?);
            for r in 0..b.num_rows() {
                items.push((h.value(r), a.value(r).max(0) as u64));
            }
            Ok(())
        }),
    );
    u?;
    i?;
    let mut hours: BTreeMap<i64, HourCardinality> = BTreeMap::new();
    let empty = |h: i64| HourCardinality {
        hour_ms: h,
        users: 0,
        sessions: 0,
        items: 0,
    };
    for (h, u, s) in users {
        let e = hours.entry(h).or_insert_with(|| empty(h));
        e.users = u;
        e.sessions = s;
    }
    for (h, n) in items {
        hours.entry(h).or_insert_with(|| empty(h)).items = n;
    }
    Ok(hours)
}

/// Rejections in the window by code, most frequent first.
async fn rejections(state: &AppState, from: i64) -> Result<Vec<CodeCount>, ApiError> {
    let mut out = Vec::new();
    state
        .store
        .scan(
            &format!(
                "SELECT code, count(*) FROM quarantine WHERE received_at >= {} GROUP BY 1 ORDER BY 2 DESC, 1",
                ts_lit(from)
            ),
            state.config.query_timeout,
            |b: &RecordBatch| {
                let code = utf8(b, 0)?;
                let n = i64s(b, 1)?;
                for r in 0..b.num_rows() {
                    out.push(CodeCount {
                        code: code.value(r).to_string(),
                        count: n.value(r).max(0) as u64,
                    });
                }
                Ok(())
            },
        )
        .await?;
    Ok(out)
}

/// The report at the current time. Its queries run concurrently.
pub async fn report(state: &AppState, window: i64, grace: i64) -> Result<HealthReport, ApiError> {
    let now = chrono::Utc::now().timestamp_millis();
    let from = now - window * MINUTE;
    // Interactions of the window (less the grace) without a decision. Only the decisions of
    // those interactions are looked up: a semi-join, not the distinct ids of every decision.
    let orphans_sql = format!(
        // Event-time bounds let both scans skip old partitions: interactions timed more
        // than a day before the window, and decisions a day before those, are not checked.
        "WITH i AS (SELECT request_id FROM interactions \
                    WHERE received_at >= {from} AND received_at < {until} \
                      AND event_time >= {day_before}), \
              d AS (SELECT DISTINCT request_id FROM decisions \
                    WHERE event_time >= {two_days_before} \
                      AND request_id IN (SELECT request_id FROM i)) \
         SELECT count(*), sum(CASE WHEN d.request_id IS NULL THEN 1 ELSE 0 END) \
         FROM i LEFT JOIN d ON i.request_id = d.request_id",
        from = ts_lit(from),
        until = ts_lit(now - grace * MINUTE),
        day_before = ts_lit(from - 24 * 60 * MINUTE),
        two_days_before = ts_lit(from - 48 * 60 * MINUTE),
    );
    // Counts and lags from the per-minute receipts when they are loaded, else by SQL.
    let receipts = state
        .store
        .with_live(|s| {
            let r = &s.receipts;
            Some((
                r.window(from, now + 1)?,
                r.window(now - 5 * MINUTE, now + 1)?,
            ))
        })
        .flatten();
    let (stored_last, per_source, rejections, orphan_counts, quarantine_counts, cardinality) = tokio::join!(
        stored_last(state),
        async {
            match &receipts {
                Some((window, recent)) => Ok(vec![from_receipts(window, recent)]),
                None => {
                    futures::future::try_join_all(
                        SOURCES
                            .iter()
                            .map(|(kind, table)| source_health(state, kind, table, now, from)),
                    )
                    .await
                }
            }
        },
        async {
            match &receipts {
                Some((window, _)) => Ok(rejections_of(window)),
                None => rejections(state, from).await,
            }
        },
        two_counts(state, &orphans_sql),
        two_counts(
            state,
            "SELECT count(*), sum(CASE WHEN r.quarantine_id IS NULL THEN 1 ELSE 0 END) \
             FROM quarantine q LEFT JOIN (SELECT DISTINCT quarantine_id FROM quarantine_replays \
             WHERE outcome = 'accepted') r ON q.quarantine_id = r.quarantine_id",
        ),
        cardinality(state, now),
    );
    let mut sources: BTreeMap<(String, String), SourceHealth> =
        per_source?.into_iter().flatten().collect();
    for (key, at) in stored_last? {
        sources.entry(key.clone()).or_default().last_received_ms = Some(*at);
    }
    for ((kind, surface), o) in state.tally.snapshot() {
        let h = sources.entry((kind.to_string(), surface)).or_default();
        if o.last_received_ms > 0 {
            h.last_received_ms = Some(
                h.last_received_ms
                    .map_or(o.last_received_ms, |t| t.max(o.last_received_ms)),
            );
        }
        h.since_start = o;
        let seen = o.accepted + o.duplicates;
        h.duplicate_rate = ratio(o.duplicates, seen);
        h.conflict_rate = ratio(o.conflicting_duplicates, seen);
    }
    let sources: Vec<SourceHealth> = sources
        .into_iter()
        .map(|((kind, surface), mut h)| {
            h.kind = kind;
            h.surface = surface;
            h.seconds_since_last = h.last_received_ms.map(|t| (now - t) as f64 / 1000.0);
            h
        })
        .collect();
    let rejections = rejections?;
    let rejected: u64 = rejections.iter().map(|c| c.count).sum();
    let stored: u64 = sources.iter().map(|s| s.events).sum();
    let (checked, orphan_count) = orphan_counts?;
    let orphans = Orphans {
        grace_minutes: grace,
        checked,
        orphans: orphan_count,
        rate: ratio(orphan_count, checked),
    };
    let (total, unresolved) = quarantine_counts?;
    let quarantine = QuarantineSize { total, unresolved };
    let cardinality = cardinality?;
    Ok(HealthReport {
        at_ms: now,
        window_minutes: window,
        sources,
        rejection_rate: ratio(rejected, rejected + stored),
        rejections,
        orphan_interactions: orphans,
        quarantine,
        cardinality,
    })
}
