//! A seeded, deterministic simulator of personalization traffic with known ground truth.
//!
//! It models a catalog with latent item quality, users with segments, stable ids and second
//! devices, an A/B test between a `control` and a `treatment` ranker (treatment ranks closer
//! to true relevance and has a slower inference tail), a Plackett–Luce logging policy that
//! records each item's choice probability, a position-based click model, add-to-cart and
//! purchases that follow minutes to days later, touches from other channels, logins that link
//! anonymous ids to user ids, and scheduled [`Incident`]s. The traffic comes from one ChaCha8
//! stream and its [`Delivery`] (send order, late, duplicate, skewed and invalid events) from
//! a second, so a seed fixes the output byte for byte.
//!
//! [`GroundTruth`] reports the parameters the traffic was drawn from: the expected CTR and
//! conversion rate per variant (accumulated from the model's probabilities, not from the
//! draws), the values of the logging and a target policy, latency quantiles per component,
//! and examination probabilities by position. See `docs/simulator.md`.

mod delivery;
mod event;
mod json;
mod scenario;
mod truth;

use compact_str::format_compact;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Exp1, StandardNormal};

pub use delivery::{Delivery, DeliveryStats, Line, MessConfig, clock_skew, write_ndjson};
pub use event::*;
pub use scenario::{Incident, IncidentKind, SCENARIOS, scenario};
pub use truth::{GroundTruth, LatencyTruth, VariantTruth};

use scenario::active;

/// The surfaces served.
pub const SURFACES: [&str; 3] = ["home_feed", "search", "product_recs"];
/// The experiment every decision belongs to.
pub const EXPERIMENT: &str = "ranker_ab";
/// Slate length.
pub const SLATE: usize = 10;
/// Candidates the ranker chooses from.
const CANDIDATES: usize = 40;
const CATEGORIES: [&str; 8] = [
    "shoes", "books", "games", "garden", "music", "toys", "tools", "food",
];
const DEVICES: [&str; 3] = ["ios", "android", "web"];
const REGIONS: [&str; 4] = ["eu-west", "eu-north", "us-east", "ap-south"];
/// Latency components, in serving order.
pub const COMPONENTS: [&str; 4] = ["feature_fetch", "retrieval", "inference", "rerank"];

/// Simulation settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of the random stream.
    pub seed: u64,
    /// Event time of the first decision (epoch ms).
    pub start_ms: i64,
    /// Mean decisions per second of simulated time.
    pub decisions_per_sec: f64,
    /// Users.
    pub users: usize,
    /// Catalog size.
    pub items: usize,
    /// Incidents to play (see [`scenario`]).
    pub incidents: Vec<Incident>,
    /// Share of decisions in a swap intervention (Joachims et al. 2017): the item ranked 1
    /// is exchanged with the one at a uniformly drawn position k in 1..=10 (k = 1: kept),
    /// and the decision carries `flags: {"swap": k}`. 0 by default.
    pub swap_share: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            start_ms: 1_767_225_600_000,
            decisions_per_sec: 200.0,
            users: 20_000,
            items: 5_000,
            incidents: Vec::new(),
            swap_share: 0.0,
        }
    }
}

/// Item providers (sellers), for exposure fairness.
const PROVIDERS: usize = 40;

struct CatalogItem {
    category: usize,
    provider: usize,
    quality: f64,
    price: f64,
}

struct User {
    /// `user-{n}`.
    id: CompactString,
    /// `anon-{n}`, and `anon-{n}-b` for the second device.
    anon_ids: [CompactString; 2],
    variant: Variant,
    device: usize,
    region: usize,
    /// Preferred category.
    taste: usize,
    /// Logs in at some point (identify) after browsing anonymously.
    logs_in: bool,
    /// Has a second device (another anonymous id).
    second_device: Option<usize>,
    /// Items in the user's history (a logged feature).
    history: u32,
}

/// Variant of the experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The current ranker.
    Control,
    /// The candidate ranker.
    Treatment,
}

impl Variant {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Control => "control",
            Variant::Treatment => "treatment",
        }
    }
}

/// Examination probability at a 1-based position (position-based click model).
pub fn examination(position: usize) -> f64 {
    0.95 / (position as f64).powf(0.75)
}

/// [`examination`] at positions 1..=SLATE, computed once.
fn examination_table() -> [f64; SLATE] {
    std::array::from_fn(|k| examination(k + 1))
}

/// Deterministic assignment of a user to a variant: hash of user id and experiment.
pub fn assign(user_id: &str) -> Variant {
    let h = xxhash_rust::xxh3::xxh3_64(format!("{EXPERIMENT}:{user_id}").as_bytes());
    if h.is_multiple_of(2) {
        Variant::Control
    } else {
        Variant::Treatment
    }
}

/// Latency model of one component: log-normal with parameters per variant.
#[derive(Debug, Clone, Copy)]
pub struct LogNormal {
    /// Mean of the log.
    pub mu: f64,
    /// Standard deviation of the log.
    pub sigma: f64,
}

impl LogNormal {
    fn sample(self, rng: &mut impl Rng) -> f64 {
        (self.mu + self.sigma * std_normal(rng)).exp()
    }

    /// The q-quantile.
    pub fn quantile(self, q: f64) -> f64 {
        (self.mu + self.sigma * normal_quantile(q)).exp()
    }
}

/// Latency of `component` under `variant`.
pub fn latency_model(component: &str, variant: Variant) -> LogNormal {
    match (component, variant) {
        ("feature_fetch", _) => LogNormal {
            mu: 2.0,
            sigma: 0.35,
        },
        ("retrieval", _) => LogNormal {
            mu: 2.5,
            sigma: 0.3,
        },
        ("inference", Variant::Control) => LogNormal {
            mu: 2.7,
            sigma: 0.3,
        },
        ("inference", Variant::Treatment) => LogNormal {
            mu: 2.9,
            sigma: 0.55,
        },
        _ => LogNormal {
            mu: 1.2,
            sigma: 0.25,
        },
    }
}

fn std_normal(rng: &mut impl Rng) -> f64 {
    // Ziggurat: no logarithm or cosine for almost every draw.
    rng.sample(StandardNormal)
}

/// Inverse of the standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let plow = 0.02425;
    if p < plow {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - plow {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -normal_quantile(1.0 - p)
    }
}

/// The traffic generator.
pub struct Simulator {
    config: SimConfig,
    rng: ChaCha8Rng,
    catalog: Vec<CatalogItem>,
    /// `item-{n}`, built once: ids are cloned, not formatted, per decision.
    item_ids: Vec<CompactString>,
    /// `p{n}`.
    providers: Vec<CompactString>,
    /// `sim{seed}-`: every event id starts with it.
    id_prefix: CompactString,
    users: Vec<User>,
    examination: [f64; SLATE],
    clock_ms: f64,
    seq: u64,
    truth: truth::Accumulator,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

fn round_to(x: f64, scale: f64) -> f64 {
    (x * scale).round() / scale
}

/// Inference latency multiplier during a latency spike: a saturated model server queues
/// requests, and its latency grows by an order of magnitude, not by a few percent.
const SPIKE_FACTOR: f64 = 10.0;
/// Share of feature lookups that fail during an outage.
const OUTAGE_FAILURE: f64 = 0.4;
/// Feature-store timeout (ms): a failed lookup costs this much.
const FEATURE_TIMEOUT_MS: f64 = 250.0;
/// Plackett–Luce temperature of the logging policy.
const TEMPERATURE: f64 = 0.15;

impl Simulator {
    /// A simulator for `config`.
    pub fn new(config: SimConfig) -> Simulator {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let catalog = (0..config.items)
            .map(|_| CatalogItem {
                category: rng.random_range(0..CATEGORIES.len()),
                provider: rng.random_range(0..PROVIDERS),
                quality: rng.random::<f64>(),
                price: (5.0 + rng.random::<f64>() * 95.0 * 100.0).round() / 100.0,
            })
            .collect();
        let users = (0..config.users)
            .map(|n| {
                let device = rng.random_range(0..DEVICES.len());
                let id = format_compact!("user-{n}");
                User {
                    variant: assign(&id),
                    id,
                    anon_ids: [format_compact!("anon-{n}"), format_compact!("anon-{n}-b")],
                    device,
                    region: rng.random_range(0..REGIONS.len()),
                    taste: rng.random_range(0..CATEGORIES.len()),
                    logs_in: rng.random_bool(0.3),
                    second_device: rng
                        .random_bool(0.2)
                        .then(|| (device + 1 + rng.random_range(0..2)) % DEVICES.len()),
                    history: rng.random_range(0..400),
                }
            })
            .collect();
        let clock_ms = config.start_ms as f64;
        Simulator {
            item_ids: (0..config.items)
                .map(|i| format_compact!("item-{i}"))
                .collect(),
            providers: (0..PROVIDERS).map(|p| format_compact!("p{p}")).collect(),
            id_prefix: format_compact!("sim{}-", config.seed),
            config,
            rng,
            catalog,
            users,
            examination: examination_table(),
            clock_ms,
            seq: 0,
            truth: truth::Accumulator::default(),
        }
    }

    /// Log-odds of the true relevance of an item for a user.
    fn relevance_logit(&self, user: usize, item: usize) -> f64 {
        let it = &self.catalog[item];
        let affinity = if it.category == self.users[user].taste {
            1.0
        } else {
            0.0
        };
        2.2 * it.quality + 1.3 * affinity - 2.6
    }

    /// True relevance (click probability when examined) of an item for a user.
    fn relevance(&self, user: usize, item: usize) -> f64 {
        sigmoid(self.relevance_logit(user, item))
    }

    fn next_id(&mut self, kind: &str) -> CompactString {
        self.seq += 1;
        let mut n = itoa::Buffer::new();
        let n = n.format(self.seq);
        let mut id = self.id_prefix.clone();
        id.push_str(kind);
        id.push('-');
        id.push_str(n);
        id
    }

    fn active(&self, kind: IncidentKind, t: i64) -> bool {
        active(&self.config.incidents, kind, t)
    }

    /// Generate the next decision and everything that follows from it, appending the
    /// events to `out` (a decision, its interactions, and sometimes an identify, a touch,
    /// a conversion), with true event times; follow-ups lie after the decision.
    pub fn step(&mut self, out: &mut Vec<SimEvent>) {
        let gap: f64 = self.rng.sample(Exp1);
        self.clock_ms += gap * 1000.0 / self.config.decisions_per_sec;
        let t = self.clock_ms.round() as i64;
        let u = self.rng.random_range(0..self.users.len());
        let variant = self.users[u].variant;
        let logged_in = !self.users[u].logs_in || self.rng.random_bool(0.5);
        let (device, anon) = match self.users[u].second_device {
            Some(d) if self.rng.random_bool(0.3) => (d, 1),
            _ => (self.users[u].device, 0),
        };
        let anon_id = self.users[u].anon_ids[anon].clone();
        let surface = SURFACES[self.rng.random_range(0..SURFACES.len())];
        let spike = self.active(IncidentKind::LatencySpike, t);
        let outage = self.active(IncidentKind::FeatureStoreOutage, t);
        let drift = self.active(IncidentKind::Drift, t);
        let broken_calibration =
            variant == Variant::Treatment && self.active(IncidentKind::CalibrationBreak, t);
        let fallback = outage && self.rng.random_bool(OUTAGE_FAILURE);
        let recency =
            (std_normal(&mut self.rng) * 0.8 + 3f64.ln()).exp() * if drift { 3.0 } else { 1.0 };

        // Candidates (distinct items) and the ranker's scores: treatment sees relevance with
        // less noise; the fallback ranks by popularity alone.
        let noise = match variant {
            Variant::Control => 1.4,
            Variant::Treatment => 0.3,
        };
        let shift = if drift { 0.8 } else { 0.0 };
        let mut cands: Vec<(usize, f64)> = Vec::with_capacity(CANDIDATES);
        for _ in 0..CANDIDATES {
            let i = self.rng.random_range(0..self.catalog.len());
            let z = std_normal(&mut self.rng);
            if cands.iter().any(|c| c.0 == i) {
                continue;
            }
            let score = if fallback {
                sigmoid(2.2 * self.catalog[i].quality - 2.0 + 0.5 * z)
            } else {
                sigmoid(self.relevance_logit(u, i) + noise * z + shift)
            };
            cands.push((i, score));
        }

        // The target policy for off-policy checks: the same scores, ranked greedily.
        let mut greedy: Vec<(usize, f64)> = cands.clone();
        let top = SLATE.min(greedy.len());
        if greedy.len() > top {
            greedy.select_nth_unstable_by(top - 1, |a, b| b.1.total_cmp(&a.1));
        }
        greedy[..top].sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        let target_value: f64 = greedy[..top]
            .iter()
            .enumerate()
            .map(|(k, (i, _))| self.examination[k] * self.relevance(u, *i))
            .sum();

        // Plackett–Luce logging policy over exp(score / temperature), weights computed once.
        let mut weights: Vec<f64> = cands.iter().map(|c| (c.1 / TEMPERATURE).exp()).collect();
        let mut total: f64 = weights.iter().sum();
        let mut slate: Vec<(usize, f64, f64)> = Vec::with_capacity(SLATE);
        let mut slate_p = 1.0;
        for _ in 0..top {
            let mut x = self.rng.random::<f64>() * total;
            let mut pick = cands.len() - 1;
            for (k, w) in weights.iter().enumerate() {
                if x < *w {
                    pick = k;
                    break;
                }
                x -= w;
            }
            let p = weights[pick] / total;
            slate_p *= p;
            total -= weights.swap_remove(pick);
            let (item, score) = cands.swap_remove(pick);
            slate.push((item, score, p));
        }

        // A swap intervention exchanges ranks 1 and k after ranking; the logged propensities
        // stay those of the ranked order (the swap is known from the flag).
        let flags = (self.config.swap_share > 0.0 && self.rng.random_bool(self.config.swap_share))
            .then(|| {
                let k = self.rng.random_range(1..=slate.len().max(1));
                slate.swap(0, k - 1);
                Flags { swap: k as u32 }
            });
        let request_id = self.next_id("req");
        let ms =
            |rng: &mut ChaCha8Rng, c: &str| round_to(latency_model(c, variant).sample(rng), 100.0);
        let mut components = Components {
            feature_fetch: ms(&mut self.rng, "feature_fetch"),
            retrieval: ms(&mut self.rng, "retrieval"),
            inference: ms(&mut self.rng, "inference"),
            rerank: ms(&mut self.rng, "rerank"),
        };
        if fallback {
            components.feature_fetch =
                FEATURE_TIMEOUT_MS + round_to(self.rng.random::<f64>() * 5.0, 100.0);
            components.inference = round_to(components.inference * 0.2, 100.0);
        }
        if spike {
            components.inference = round_to(components.inference * SPIKE_FACTOR, 100.0);
        }
        let total_ms = round_to(
            components.feature_fetch
                + components.retrieval
                + components.inference
                + components.rerank,
            100.0,
        );
        let user = logged_in.then(|| self.users[u].id.clone());
        let context = SimContext {
            device: DEVICES[device],
            region: REGIONS[self.users[u].region],
        };
        let session = format_compact!("sess-{u}-{}", t / 1_800_000);
        let items: Vec<SimItem> = slate
            .iter()
            .enumerate()
            .map(|(k, (i, score, p))| {
                let it = &self.catalog[*i];
                let reported = if broken_calibration {
                    sigmoid(2.0 * logit(*score) + 1.5)
                } else {
                    *score
                };
                SimItem {
                    item_id: self.item_ids[*i].clone(),
                    position: k as u32 + 1,
                    score: round_to(reported, 1e4),
                    propensity: *p,
                    attributes: Attributes {
                        category: CATEGORIES[it.category],
                        provider: self.providers[it.provider].clone(),
                    },
                }
            })
            .collect();
        let (model_name, model_version) = match (fallback, variant) {
            (true, _) => ("popularity", "p1"),
            (false, Variant::Control) => ("ranker", "v7"),
            (false, Variant::Treatment) => ("ranker", "v8"),
        };
        out.push(SimEvent {
            kind: "decision",
            event_id: self.next_id("dec"),
            timestamp: t,
            sent_at: None,
            user_id: user.clone(),
            anonymous_id: Some(anon_id.clone()),
            session_id: Some(session.clone()),
            context: Some(context.clone()),
            body: Body::Decision(Box::new(DecisionBody {
                request_id: request_id.clone(),
                surface,
                model: Model {
                    name: model_name,
                    version: model_version,
                },
                experiments: [Assignment {
                    id: EXPERIMENT,
                    variant: variant.as_str(),
                }],
                flags,
                items,
                slate_propensity: slate_p,
                latency_ms: Latency {
                    total: total_ms,
                    components,
                },
                fallback,
                features: Features {
                    recency_days: round_to(recency, 100.0),
                    history_len: self.users[u].history,
                    fresh: !fallback,
                },
            })),
        });
        let follow =
            |kind: &'static str, event_id: CompactString, timestamp: i64, body: Body| SimEvent {
                kind,
                event_id,
                timestamp,
                sent_at: None,
                user_id: user.clone(),
                anonymous_id: Some(anon_id.clone()),
                session_id: Some(session.clone()),
                context: Some(context.clone()),
                body,
            };

        // Outcomes: position-based clicks, add-to-cart, purchases later.
        let mut expected_clicks = 0.0;
        let mut p_no_purchase = 1.0;
        let mut follow_t = t;
        for (k, (i, _, _)) in slate.iter().enumerate() {
            let r = self.relevance(u, *i);
            let p_click = self.examination[k] * r;
            expected_clicks += p_click;
            let p_cart_given_click = 0.25 * r;
            let p_buy_given_cart = 0.4;
            p_no_purchase *= 1.0 - p_click * p_cart_given_click * p_buy_given_cart;
            if !self.rng.random_bool(p_click) {
                continue;
            }
            follow_t += self.rng.random_range(1_000..20_000);
            let dwell = (std_normal(&mut self.rng) * 0.8 + 3.0).exp().round();
            let item_id = self.item_ids[*i].clone();
            let click_id = self.next_id("clk");
            out.push(follow(
                "interaction",
                click_id,
                follow_t,
                Body::Interaction(InteractionBody {
                    request_id: request_id.clone(),
                    item_id: item_id.clone(),
                    action: "click",
                    value: Some(dwell),
                }),
            ));
            if !self.rng.random_bool(p_cart_given_click) {
                continue;
            }
            follow_t += self.rng.random_range(5_000..60_000);
            let cart_id = self.next_id("cart");
            out.push(follow(
                "interaction",
                cart_id,
                follow_t,
                Body::Interaction(InteractionBody {
                    request_id: request_id.clone(),
                    item_id: item_id.clone(),
                    action: "add_to_cart",
                    value: None,
                }),
            ));
            if !self.rng.random_bool(p_buy_given_cart) {
                continue;
            }
            // Minutes to days later, sometimes after logging in on another device.
            let delay = (std_normal(&mut self.rng) * 1.5 + 8.0).exp() * 1000.0;
            let buy_t = follow_t + delay as i64;
            let buy_device = match self.users[u].second_device {
                Some(d) if d != device => d,
                _ => device,
            };
            let buy_anon =
                self.users[u].anon_ids[usize::from(buy_device != self.users[u].device)].clone();
            if !logged_in {
                let id = self.next_id("idf");
                out.push(SimEvent {
                    kind: "identify",
                    event_id: id,
                    timestamp: buy_t - 1000,
                    sent_at: None,
                    user_id: Some(self.users[u].id.clone()),
                    anonymous_id: Some(buy_anon.clone()),
                    session_id: None,
                    context: None,
                    body: Body::Identify(Empty {}),
                });
            }
            let id = self.next_id("buy");
            out.push(SimEvent {
                kind: "conversion",
                event_id: id,
                timestamp: buy_t,
                sent_at: None,
                user_id: Some(self.users[u].id.clone()),
                anonymous_id: Some(buy_anon),
                session_id: None,
                context: Some(SimContext {
                    device: DEVICES[buy_device],
                    region: context.region,
                }),
                body: Body::Conversion(ConversionBody {
                    name: "purchase",
                    value: self.catalog[*i].price,
                    currency: "EUR",
                    items: vec![item_id],
                    request_id: request_id.clone(),
                }),
            });
        }
        if self.rng.random_bool(0.02) {
            let (channel, campaign) = [
                ("email", "email-weekly"),
                ("push", "push-weekly"),
                ("paid_search", "paid_search-weekly"),
            ][self.rng.random_range(0..3)];
            let id = self.next_id("tch");
            out.push(SimEvent {
                kind: "touch",
                event_id: id,
                timestamp: t - 60_000,
                sent_at: None,
                user_id: Some(self.users[u].id.clone()),
                anonymous_id: None,
                session_id: None,
                context: None,
                body: Body::Touch(TouchBody { channel, campaign }),
            });
        }
        if !(spike || outage || drift || broken_calibration) {
            self.truth.record(truth::Sample {
                variant,
                ctr: expected_clicks / slate.len() as f64,
                p_purchase: 1.0 - p_no_purchase,
                logging_value: expected_clicks,
                target_value,
            });
        }
    }

    /// The parameters the traffic so far was drawn from.
    pub fn truth(&self) -> GroundTruth {
        self.truth.finish(self.config.seed, &self.config.incidents)
    }

    /// Change the mean decisions per second of simulated time from now on.
    pub fn set_rate(&mut self, decisions_per_sec: f64) {
        self.config.decisions_per_sec = decisions_per_sec;
    }

    /// Simulated time of the latest decision (epoch ms).
    pub fn clock_ms(&self) -> i64 {
        self.clock_ms.round() as i64
    }
}
