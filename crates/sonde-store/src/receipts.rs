//! What the store received, per minute of arrival: per event type and surface the events,
//! how many were late, from the future or backfilled, and a sketch of the event-time lag of
//! live events; per error code the rejected events. The data-health report reads these sums
//! instead of scanning every row received in its window (`received_at` is not the partition
//! key, and after a bulk import the last hour holds the whole history).
//!
//! Fed as entries are applied after the WAL ack, once [`crate::Store::start_live`] has
//! turned it on with a snapshot of what came before, which the caller loads. Minutes are kept
//! for `MINUTE_RETENTION`, then merged into hours, kept for `HOUR_RETENTION`; a window reaching
//! into the hours counts whole hours at its start.

use std::collections::{BTreeMap, HashMap};

use sonde_latency::Sketch;
use sonde_model::EventBody;

use crate::codec::WalEntry;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
/// How long minutes keep minute resolution.
pub const MINUTE_RETENTION: i64 = 26 * HOUR;
/// How long hours are kept.
pub const HOUR_RETENTION: i64 = 8 * 24 * HOUR;
/// The kind under which rejections are counted (the second key is the error code).
pub const REJECTED: &str = "rejected";

/// Counts of one event type and surface (or one rejection code) over some minutes.
#[derive(Debug, Clone, Default)]
pub struct ReceiptCell {
    /// Events received.
    pub events: u64,
    /// Of those, flagged late.
    pub late: u64,
    /// Flagged as from the future.
    pub future: u64,
    /// Imported as backfill.
    pub backfill: u64,
    /// `received_at − event_time` of the events not backfilled (magnitudes, ms).
    pub lag: Sketch,
}

impl ReceiptCell {
    fn merge(&mut self, o: &ReceiptCell) {
        self.events += o.events;
        self.late += o.late;
        self.future += o.future;
        self.backfill += o.backfill;
        self.lag.merge(&o.lag);
    }
}

/// One received event, as the receipts see it.
#[derive(Debug, Clone, Copy)]
pub struct Receipt<'a> {
    /// Event type (or [`REJECTED`]).
    pub kind: &'static str,
    /// Surface of a decision, error code of a rejection, else empty.
    pub key: &'a str,
    /// When it was received (epoch ms).
    pub received_at: i64,
    /// `received_at − event_time` (ms).
    pub lag_ms: i64,
    /// Flagged late.
    pub late: bool,
    /// Flagged as from the future.
    pub future: bool,
    /// Imported as backfill.
    pub backfill: bool,
}

impl Receipt<'_> {
    /// How the receipts count a WAL entry: events and rejections; replay records and spans
    /// are not events of a source.
    pub(crate) fn of(entry: &WalEntry) -> Option<Receipt<'_>> {
        match entry {
            WalEntry::Event(e, _) => Some(Receipt {
                kind: e.data.body.event_type().as_str(),
                key: match &e.data.body {
                    EventBody::Decision(d) => &d.surface,
                    _ => "",
                },
                received_at: e.meta.received_at,
                lag_ms: e.meta.received_at - e.meta.event_time,
                late: e.meta.is_late,
                future: e.meta.is_future,
                backfill: e.meta.is_backfill,
            }),
            WalEntry::Quarantine(q) => Some(Receipt {
                kind: REJECTED,
                key: &q.code,
                received_at: q.received_at,
                lag_ms: 0,
                late: false,
                future: false,
                backfill: false,
            }),
            WalEntry::Replay(_) | WalEntry::Span(..) => None,
        }
    }
}

/// Cells of one bucket by kind, then key: looked up with borrowed strings, so counting an
/// event allocates nothing once its source has been seen in the bucket.
type Cells = HashMap<&'static str, HashMap<String, ReceiptCell>>;

/// The per-minute receipts.
#[derive(Debug, Default)]
pub struct Receipts {
    minutes: BTreeMap<i64, Cells>,
    hours: BTreeMap<i64, Cells>,
    /// Receipts before this minute are kept per hour.
    minute_floor: i64,
    /// Sums are complete from here on: loading covered nothing earlier.
    complete_from: i64,
    ready: bool,
    next_tiering: i64,
}

impl Receipts {
    /// Empty receipts, complete from `complete_from` once loaded.
    pub fn new(complete_from: i64) -> Receipts {
        Receipts {
            complete_from,
            minute_floor: i64::MIN,
            next_tiering: i64::MIN,
            ..Receipts::default()
        }
    }

    /// Count one event.
    pub fn add(&mut self, r: &Receipt<'_>, now_ms: i64) {
        self.update(r.kind, r.key, r.received_at, |cell| {
            cell.events += 1;
            cell.late += u64::from(r.late);
            cell.future += u64::from(r.future);
            cell.backfill += u64::from(r.backfill);
            if !r.backfill && r.kind != REJECTED {
                cell.lag.add(r.lag_ms.max(0) as f64);
            }
        });
        if now_ms >= self.next_tiering {
            self.next_tiering = now_ms + MINUTE;
            self.tier(now_ms);
        }
    }

    /// Add counts read back from the store (loading): `n` events of one minute.
    pub fn add_counts(&mut self, kind: &'static str, key: &str, minute: i64, counts: [u64; 4]) {
        self.update(kind, key, minute, |cell| {
            cell.events += counts[0];
            cell.late += counts[1];
            cell.future += counts[2];
            cell.backfill += counts[3];
        });
    }

    /// Add one lag read back from the store (loading).
    pub fn add_lag(&mut self, kind: &'static str, key: &str, received_at: i64, lag_ms: i64) {
        self.update(kind, key, received_at, |cell| {
            cell.lag.add(lag_ms.max(0) as f64)
        });
    }

    /// Update the cell of `kind` and `key` in the bucket of `at`.
    fn update(&mut self, kind: &'static str, key: &str, at: i64, f: impl FnOnce(&mut ReceiptCell)) {
        let minute = at.div_euclid(MINUTE) * MINUTE;
        let bucket = if minute >= self.minute_floor {
            self.minutes.entry(minute).or_default()
        } else {
            self.hours.entry(at.div_euclid(HOUR) * HOUR).or_default()
        };
        let keys = bucket.entry(kind).or_default();
        match keys.get_mut(key) {
            Some(c) => f(c),
            None => {
                let mut c = ReceiptCell::default();
                f(&mut c);
                keys.insert(key.to_string(), c);
            }
        }
    }

    fn tier(&mut self, now_ms: i64) {
        self.minute_floor = self
            .minute_floor
            .max((now_ms - MINUTE_RETENTION).div_euclid(MINUTE) * MINUTE);
        while let Some((&m, _)) = self.minutes.first_key_value() {
            if m >= self.minute_floor {
                break;
            }
            let Some((m, cells)) = self.minutes.pop_first() else {
                break;
            };
            let hour = self.hours.entry(m.div_euclid(HOUR) * HOUR).or_default();
            for (kind, keys) in cells {
                let into = hour.entry(kind).or_default();
                for (key, c) in keys {
                    into.entry(key).or_default().merge(&c);
                }
            }
        }
        let hour_floor = (now_ms - HOUR_RETENTION).div_euclid(HOUR) * HOUR;
        while let Some((&h, _)) = self.hours.first_key_value() {
            if h >= hour_floor {
                break;
            }
            self.hours.pop_first();
            self.complete_from = self.complete_from.max(h + HOUR);
        }
    }

    /// Sums are complete from here on (epoch ms): what loading must cover.
    pub fn complete_from(&self) -> i64 {
        self.complete_from
    }

    /// Mark loading done.
    pub fn set_ready(&mut self) {
        self.ready = true;
    }

    /// Sums per (kind, key) of what was received in `[from, to)`, the hours at its start
    /// counted whole; `None` before loading is done or when the window reaches before what
    /// is kept.
    pub fn window(&self, from: i64, to: i64) -> Option<BTreeMap<(String, String), ReceiptCell>> {
        if !self.ready || from < self.complete_from {
            return None;
        }
        let mut out: BTreeMap<(String, String), ReceiptCell> = BTreeMap::new();
        let split = self.minute_floor.clamp(from, to);
        // Hours hold only what came before the minutes: used when the window starts there.
        let hours = self
            .hours
            .range(from.div_euclid(HOUR) * HOUR..split)
            .filter(|_| from < split);
        let minutes = self.minutes.range(split.div_euclid(MINUTE) * MINUTE..to);
        for (_, cells) in hours.chain(minutes) {
            for (kind, keys) in cells {
                for (key, c) in keys {
                    out.entry((kind.to_string(), key.clone()))
                        .or_default()
                        .merge(c);
                }
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, key: &str, received_at: i64, lag_ms: i64, late: bool) -> Receipt<'static> {
        Receipt {
            kind: if kind == "decision" {
                "decision"
            } else {
                REJECTED
            },
            key: if key == "home" {
                "home"
            } else {
                "invalid_type"
            },
            received_at,
            lag_ms,
            late,
            future: false,
            backfill: false,
        }
    }

    #[test]
    fn windows_sum_the_minutes_and_hours_they_cover() {
        let now = 1000 * HOUR;
        let mut r = Receipts::new(now - 100 * HOUR);
        r.set_ready();
        r.add(
            &event("decision", "home", now - 30 * MINUTE, 100, false),
            now,
        );
        r.add(
            &event("decision", "home", now - 10 * MINUTE, 300, true),
            now,
        );
        r.add(&event("rejected", "x", now - 5 * MINUTE, 0, false), now);
        // Received 30 h ago: kept in its hour.
        r.add(
            &event("decision", "home", now - 30 * HOUR + 5 * MINUTE, 50, false),
            now,
        );
        let w = r.window(now - 20 * MINUTE, now).expect("ready");
        let home = &w[&("decision".to_string(), "home".to_string())];
        assert_eq!((home.events, home.late), (1, 1));
        assert_eq!(
            w[&(REJECTED.to_string(), "invalid_type".to_string())].events,
            1
        );
        let day = r.window(now - 31 * HOUR, now).expect("ready");
        let home = &day[&("decision".to_string(), "home".to_string())];
        assert_eq!(home.events, 3);
        let p99 = home.lag.quantile(1.0).expect("lags");
        assert!((p99 - 300.0).abs() / 300.0 < 0.011, "{p99}");
        assert!(r.window(now - 200 * HOUR, now).is_none(), "before loading");
    }
}
