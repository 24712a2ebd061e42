//! Delivery as real clients do it: events leave when their time comes, a little later
//! over the network, some much later (offline devices), some twice (retries), some with a
//! wrong clock, and a few malformed. Output is [`Line`]s in send order.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::event::SimEvent;

/// How messy delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MessConfig {
    /// Share of users whose device clock is off (by 30 s to 10 min, either way).
    pub skewed_users: f64,
    /// Share of events delivered 5 min to 3 h late.
    pub late: f64,
    /// Share of events delivered twice (a retry after a lost acknowledgement).
    pub duplicate: f64,
    /// Invalid events added, per valid event.
    pub invalid: f64,
}

impl Default for MessConfig {
    fn default() -> Self {
        MessConfig {
            skewed_users: 0.05,
            late: 0.01,
            duplicate: 0.005,
            invalid: 0.003,
        }
    }
}

impl MessConfig {
    /// Clean delivery: in time, once, valid, correct clocks.
    pub fn none() -> Self {
        MessConfig {
            skewed_users: 0.0,
            late: 0.0,
            duplicate: 0.0,
            invalid: 0.0,
        }
    }
}

/// What delivery did, for reports and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryStats {
    /// Valid events scheduled (each once).
    pub events: u64,
    /// Extra copies scheduled as retries.
    pub duplicates: u64,
    /// Invalid events scheduled.
    pub invalid: u64,
    /// Events delivered late.
    pub late: u64,
}

/// Clock offset of a user's device (ms): zero for most, stable per id.
pub fn clock_skew(id: &str, share: f64) -> i64 {
    let h = xxhash_rust::xxh3::xxh3_64(id.as_bytes());
    if ((h % 10_000) as f64) >= share * 10_000.0 {
        return 0;
    }
    let magnitude = 30_000 + ((h >> 16) % 570_000) as i64;
    if (h >> 40) & 1 == 0 {
        magnitude
    } else {
        -magnitude
    }
}

/// One line as delivered: an event (a retry shares it with the first send) or a malformed
/// text. Lines are serialized when they are written, so that can happen on another thread.
#[derive(Debug, Clone)]
pub enum Line {
    /// A valid event.
    Event(Arc<SimEvent>),
    /// A malformed event, as its raw text.
    Malformed(Box<str>),
}

impl Line {
    /// Append the line's JSON text, without a newline.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Line::Event(e) => e.write_json(out),
            Line::Malformed(text) => out.extend_from_slice(text.as_bytes()),
        }
    }
}

/// Append `lines` to `out` as NDJSON.
pub fn write_ndjson(lines: &[Line], out: &mut Vec<u8>) {
    for l in lines {
        l.write_json(out);
        out.push(b'\n');
    }
}

/// A line waiting for its send time.
#[derive(Debug)]
struct Pending {
    at: i64,
    seq: u64,
    line: Line,
}

/// Width of a scheduling bucket (ms of send time).
const BUCKET_MS: i64 = 1000;

/// Schedules events for delivery.
pub struct Delivery {
    rng: ChaCha8Rng,
    mess: MessConfig,
    seed: u64,
    /// Waiting lines by send-time bucket: most are due within a second of being scheduled,
    /// so sorting a bucket once it comes due is cheaper than a heap over all of them.
    buckets: BTreeMap<i64, Vec<Pending>>,
    pending: usize,
    seq: u64,
    stats: DeliveryStats,
}

impl Delivery {
    /// A scheduler with its own random stream (the traffic itself does not depend on it).
    pub fn new(seed: u64, mess: MessConfig) -> Delivery {
        Delivery {
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_de11_7e57_0001),
            mess,
            seed,
            buckets: BTreeMap::new(),
            pending: 0,
            seq: 0,
            stats: DeliveryStats::default(),
        }
    }

    fn push(&mut self, at: i64, line: Line) {
        self.seq += 1;
        self.pending += 1;
        self.buckets
            .entry(at.div_euclid(BUCKET_MS))
            .or_default()
            .push(Pending {
                at,
                seq: self.seq,
                line,
            });
    }

    /// Schedule `events` (as the simulator produced them, with true event times).
    pub fn schedule(&mut self, events: Vec<SimEvent>) {
        for mut e in events {
            let mut delay = self.rng.random_range(50..800);
            if self.rng.random_bool(self.mess.late) {
                delay += self.rng.random_range(300_000..10_800_000);
                self.stats.late += 1;
            }
            let send_at = e.timestamp + delay;
            let who = e.user_id.as_deref().or(e.anonymous_id.as_deref());
            let skew = who.map_or(0, |id| clock_skew(id, self.mess.skewed_users));
            e.timestamp += skew;
            e.sent_at = Some(send_at + skew);
            let line = Line::Event(Arc::new(e));
            if self.rng.random_bool(self.mess.duplicate) {
                let retry_at = send_at + self.rng.random_range(1_000..30_000);
                self.push(retry_at, line.clone());
                self.stats.duplicates += 1;
            }
            self.push(send_at, line);
            self.stats.events += 1;
            if self.rng.random_bool(self.mess.invalid) {
                let bad = self.invalid_event(send_at);
                self.push(send_at, bad);
                self.stats.invalid += 1;
            }
        }
    }

    /// One malformed event, of a kind real clients send.
    fn invalid_event(&mut self, t: i64) -> Line {
        let id = format!("sim{}-bad-{}", self.seed, self.stats.invalid + 1);
        let text = match self.rng.random_range(0..5) {
            0 => format!(
                r#"{{"type":"decision","event_id":"{id}","timestamp":{t},"anonymous_id":"anon-x","surface":"home_feed","model":{{"name":"ranker","version":"v7"}},"items":[{{"item_id":"item-1","position":1}}]}}"#
            ),
            1 => format!(
                r#"{{"type":"decision","event_id":"{id}","timestamp":{t},"anonymous_id":"anon-x","request_id":"r-{id}","surface":"home_feed","model":{{"name":"ranker","version":"v7"}},"items":[{{"item_id":"item-1","position":0}}]}}"#
            ),
            2 => format!(
                r#"{{"type":"interaction","event_id":"{id}","timestamp":"yesterday","anonymous_id":"anon-x","request_id":"r","item_id":"item-1","action":"click"}}"#
            ),
            3 => format!(
                r#"{{"type":"impression","event_id":"{id}","timestamp":{t},"anonymous_id":"anon-x"}}"#
            ),
            _ => format!(r#"{{"type":"interaction","event_id":"{id}","timestamp":{t},"#),
        };
        Line::Malformed(text.into_boxed_str())
    }

    /// Move every line due by `now` (send time, epoch ms) to `out`, in send order.
    pub fn due(&mut self, now: i64, out: &mut Vec<Line>) {
        while let Some(mut bucket) = self.buckets.first_entry() {
            let start = bucket.key().saturating_mul(BUCKET_MS);
            if start > now {
                break;
            }
            let lines = bucket.get_mut();
            lines.sort_unstable_by_key(|p| (p.at, p.seq));
            let due = lines.partition_point(|p| p.at <= now);
            self.pending -= due;
            if due == lines.len() {
                out.extend(bucket.remove().into_iter().map(|p| p.line));
            } else {
                out.extend(lines.drain(..due).map(|p| p.line));
                break;
            }
        }
    }

    /// Move every remaining line to `out`, in send order.
    pub fn drain(&mut self, out: &mut Vec<Line>) {
        self.due(i64::MAX, out);
    }

    /// Lines waiting.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// What was scheduled so far.
    pub fn stats(&self) -> DeliveryStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines come out in (send time, scheduling order), however `due` calls cut the buckets.
    #[test]
    fn due_releases_in_send_order() {
        let mut d = Delivery::new(1, MessConfig::none());
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut expected = Vec::new();
        for n in 0..5000u64 {
            let at = rng.random_range(-3_000..60_000);
            expected.push((at, n));
            d.push(at, Line::Malformed(format!("{at} {n}").into()));
        }
        expected.sort();
        let mut out = Vec::new();
        let mut now = -5_000;
        while d.pending() > 0 {
            now += rng.random_range(0..2_500);
            d.due(now, &mut out);
        }
        let got: Vec<(i64, u64)> = out
            .iter()
            .map(|l| match l {
                Line::Malformed(t) => {
                    let (a, n) = t.split_once(' ').unwrap_or_default();
                    (a.parse().unwrap_or(0), n.parse().unwrap_or(0))
                }
                Line::Event(_) => (0, 0),
            })
            .collect();
        assert_eq!(got, expected);
    }
}
