//! The store's live sums: the relevance join (accepted decisions, interactions and purchases
//! go into [`LiveRelevance`]) and the per-minute [`Receipts`], fed as entries are applied
//! after the WAL ack. They are off until [`crate::Store::start_live`] turns them on together
//! with a snapshot of what was stored before, which the caller loads: every event is then
//! counted once, by the snapshot or by the feed.

use sonde_model::{Event, EventBody};
use sonde_relevance::{Gains, ListKeyRef, LiveItem, LiveRelevance, Outcome, item_key};

use crate::codec::WalEntry;
use crate::receipts::{Receipt, Receipts};

/// The live sums and how outcomes are graded.
#[derive(Debug)]
pub struct LiveSums {
    /// The relevance join and its sums.
    pub relevance: LiveRelevance,
    /// The project's gains.
    pub gains: Gains,
    /// What was received, per minute.
    pub receipts: Receipts,
}

impl LiveSums {
    /// Feed one applied WAL entry.
    pub(crate) fn feed(&mut self, entry: &WalEntry, now_ms: i64) {
        if let Some(r) = Receipt::of(entry) {
            self.receipts.add(&r, now_ms);
        }
        if let WalEntry::Event(e, _) = entry {
            self.feed_relevance(e, now_ms);
        }
    }

    fn feed_relevance(&mut self, e: &Event, now_ms: i64) {
        let time_ms = e.meta.event_time;
        match &e.data.body {
            EventBody::Decision(d) => {
                let mut experiments: Vec<(&str, &str)> = d
                    .experiments
                    .iter()
                    .map(|(x, v)| (x.as_str(), v.as_str()))
                    .collect();
                experiments.sort_unstable();
                let key = ListKeyRef {
                    surface: &d.surface,
                    model_name: &d.model_name,
                    model_version: &d.model_version,
                    device: e.data.context.device.as_deref(),
                    region: e.data.context.region.as_deref(),
                    experiments,
                };
                let items = d
                    .items
                    .iter()
                    .map(|it| LiveItem {
                        item: item_key(&it.item_id),
                        position: it.position,
                        grade: 0,
                        clicked: false,
                        purchased: false,
                    })
                    .collect();
                self.relevance
                    .decision_borrowed(&d.request_id, time_ms, &key, items, now_ms);
            }
            EventBody::Interaction(i) => {
                let (grade, click) = self.gains.of_interaction(&i.action, i.value);
                self.relevance.outcome(
                    &Outcome {
                        request_id: &i.request_id,
                        item_id: &i.item_id,
                        time_ms,
                        grade,
                        click,
                        purchase: false,
                    },
                    now_ms,
                );
            }
            EventBody::Conversion(c) if c.name == "purchase" => {
                if let Some(request_id) = &c.request_id {
                    for item_id in &c.items {
                        self.relevance.outcome(
                            &Outcome {
                                request_id,
                                item_id,
                                time_ms,
                                grade: self.gains.purchase,
                                click: false,
                                purchase: true,
                            },
                            now_ms,
                        );
                    }
                }
            }
            _ => {}
        }
    }
}
