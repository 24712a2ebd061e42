//! The store's side of the live relevance join: accepted decisions, interactions and
//! purchases go into [`LiveRelevance`] as they are applied after the WAL ack. It is off until
//! [`crate::Store::start_live_relevance`] turns it on together with a snapshot of what was
//! stored before, which the caller loads: every event is then counted once, by the snapshot
//! or by the feed.

use sonde_model::{Event, EventBody};
use sonde_relevance::{Gains, ListKey, LiveItem, LiveRelevance, Outcome};

/// The join and how outcomes are graded.
#[derive(Debug)]
pub struct LiveJoin {
    /// The join and its sums.
    pub relevance: LiveRelevance,
    /// The project's gains.
    pub gains: Gains,
}

impl LiveJoin {
    /// Feed one accepted event.
    pub(crate) fn feed(&mut self, e: &Event, now_ms: i64) {
        let time_ms = e.meta.event_time;
        match &e.data.body {
            EventBody::Decision(d) => {
                let mut experiments = d.experiments.clone();
                experiments.sort();
                let key = ListKey {
                    surface: d.surface.clone(),
                    model_name: d.model_name.clone(),
                    model_version: d.model_version.clone(),
                    device: e.data.context.device.clone(),
                    region: e.data.context.region.clone(),
                    experiments,
                };
                let items = d
                    .items
                    .iter()
                    .map(|it| LiveItem {
                        item_id: it.item_id.as_str().into(),
                        position: it.position,
                        grade: 0,
                        clicked: false,
                        purchased: false,
                    })
                    .collect();
                self.relevance
                    .decision(&d.request_id, time_ms, key, items, now_ms);
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
