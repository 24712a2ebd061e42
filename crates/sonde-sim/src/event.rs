//! Typed events as the simulator emits them. Serialized with derived `Serialize` (no
//! intermediate `serde_json::Value`): that is what makes file generation fast.

pub use compact_str::CompactString;
use serde::Serialize;

/// One event of event model v1.
#[derive(Debug, Clone, Serialize)]
pub struct SimEvent {
    /// Event type.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Unique id (retries resend the same one).
    pub event_id: CompactString,
    /// Client clock at the event (epoch ms), skewed for users with a wrong clock.
    pub timestamp: i64,
    /// Client clock at sending; set when the event is scheduled for delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<i64>,
    /// Logged-in user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<CompactString>,
    /// Device id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<CompactString>,
    /// Session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<CompactString>,
    /// Device and region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<SimContext>,
    /// Type-specific fields.
    #[serde(flatten)]
    pub body: Body,
}

/// Device and region of the client.
#[derive(Debug, Clone, Serialize)]
pub struct SimContext {
    /// Device.
    pub device: &'static str,
    /// Region.
    pub region: &'static str,
}

/// Type-specific fields.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Body {
    /// A served slate.
    Decision(Box<DecisionBody>),
    /// A click or add-to-cart.
    Interaction(InteractionBody),
    /// A purchase.
    Conversion(ConversionBody),
    /// A message from another channel.
    Touch(TouchBody),
    /// A login linking the anonymous id to the user id.
    Identify(Empty),
}

/// No fields.
#[derive(Debug, Clone, Serialize)]
pub struct Empty {}

/// A served slate.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionBody {
    /// Request id.
    pub request_id: CompactString,
    /// Surface.
    pub surface: &'static str,
    /// Model.
    pub model: Model,
    /// Experiment assignments.
    pub experiments: [Assignment; 1],
    /// Feature flags: `{"swap": k}` when the decision is part of a swap intervention (the
    /// items ranked 1 and k were exchanged; k = 1 leaves the order as ranked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<Flags>,
    /// The slate.
    pub items: Vec<SimItem>,
    /// Probability of the whole slate under the logging policy.
    pub slate_propensity: f64,
    /// Latency.
    pub latency_ms: Latency,
    /// Served by the fallback path.
    pub fallback: bool,
    /// Context features the model used.
    pub features: Features,
}

/// Feature flags of a decision.
#[derive(Debug, Clone, Serialize)]
pub struct Flags {
    /// Position swapped with position 1.
    pub swap: u32,
}

/// Model name and version.
#[derive(Debug, Clone, Serialize)]
pub struct Model {
    /// Name.
    pub name: &'static str,
    /// Version.
    pub version: &'static str,
}

/// One experiment assignment.
#[derive(Debug, Clone, Serialize)]
pub struct Assignment {
    /// Experiment id.
    pub id: &'static str,
    /// Variant.
    pub variant: &'static str,
}

/// One item of a slate.
#[derive(Debug, Clone, Serialize)]
pub struct SimItem {
    /// Item id.
    pub item_id: CompactString,
    /// 1-based position.
    pub position: u32,
    /// Model score (a predicted click probability).
    pub score: f64,
    /// Probability the logging policy put this item at this position.
    pub propensity: f64,
    /// Item attributes.
    pub attributes: Attributes,
}

/// Item attributes.
#[derive(Debug, Clone, Serialize)]
pub struct Attributes {
    /// Category.
    pub category: &'static str,
    /// Provider.
    pub provider: CompactString,
}

/// Latency per component.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// End to end.
    pub total: f64,
    /// Per component.
    pub components: Components,
}

/// The four serving components.
#[derive(Debug, Clone, Serialize)]
pub struct Components {
    /// Feature store lookup.
    pub feature_fetch: f64,
    /// Candidate retrieval.
    pub retrieval: f64,
    /// Model inference.
    pub inference: f64,
    /// Re-ranking.
    pub rerank: f64,
}

/// Context features logged with a decision.
#[derive(Debug, Clone, Serialize)]
pub struct Features {
    /// Days since the user's last visit.
    pub recency_days: f64,
    /// Items in the user's history.
    pub history_len: u32,
    /// Whether the feature store answered (false under an outage: defaults were used).
    pub fresh: bool,
}

/// A click or add-to-cart.
#[derive(Debug, Clone, Serialize)]
pub struct InteractionBody {
    /// Decision it follows.
    pub request_id: CompactString,
    /// Item.
    pub item_id: CompactString,
    /// `click` or `add_to_cart`.
    pub action: &'static str,
    /// Dwell seconds for clicks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

/// A purchase.
#[derive(Debug, Clone, Serialize)]
pub struct ConversionBody {
    /// Conversion name.
    pub name: &'static str,
    /// Price.
    pub value: f64,
    /// Currency.
    pub currency: &'static str,
    /// Items bought.
    pub items: Vec<CompactString>,
    /// Decision that led to it.
    pub request_id: CompactString,
}

/// A message from another channel.
#[derive(Debug, Clone, Serialize)]
pub struct TouchBody {
    /// Channel.
    pub channel: &'static str,
    /// Campaign.
    pub campaign: &'static str,
}

impl SimEvent {
    /// Append the event's JSON text (no newline): the bytes of its derived `Serialize`,
    /// written several times faster.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        crate::json::write_event(self, out);
    }

    /// The decision body, for decisions.
    pub fn decision(&self) -> Option<&DecisionBody> {
        match &self.body {
            Body::Decision(d) => Some(d),
            _ => None,
        }
    }
}
