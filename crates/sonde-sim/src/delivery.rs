//! Delivery as real clients do it: events leave when their time comes, a little later
//! over the network, some much later (offline devices), some twice (retries), some with a
//! wrong clock, and a few malformed. Output is NDJSON lines in send order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

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

/// Schedules events for delivery.
pub struct Delivery {
    rng: ChaCha8Rng,
    mess: MessConfig,
    seed: u64,
    heap: BinaryHeap<Reverse<(i64, u64, Vec<u8>)>>,
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
            heap: BinaryHeap::new(),
            seq: 0,
            stats: DeliveryStats::default(),
        }
    }

    fn push(&mut self, at: i64, line: Vec<u8>) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, line)));
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
            // Serializing a struct of plain fields cannot fail.
            let line = serde_json::to_vec(&e).unwrap_or_default();
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
    fn invalid_event(&mut self, t: i64) -> Vec<u8> {
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
        text.into_bytes()
    }

    /// Move every line due by `now` (send time, epoch ms) to `out`, in send order.
    pub fn due(&mut self, now: i64, out: &mut Vec<Vec<u8>>) {
        while let Some(Reverse((at, _, _))) = self.heap.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((_, _, line))) = self.heap.pop() {
                out.push(line);
            }
        }
    }

    /// Move every remaining line to `out`, in send order.
    pub fn drain(&mut self, out: &mut Vec<Vec<u8>>) {
        self.due(i64::MAX, out);
    }

    /// Lines waiting.
    pub fn pending(&self) -> usize {
        self.heap.len()
    }

    /// What was scheduled so far.
    pub fn stats(&self) -> DeliveryStats {
        self.stats
    }
}
