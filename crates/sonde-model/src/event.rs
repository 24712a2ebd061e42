use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// The six event types of model v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A ranked slate served by the personalization engine.
    Decision,
    /// What a user did with an item of a decision.
    Interaction,
    /// A downstream business outcome.
    Conversion,
    /// A touchpoint from another channel, for attribution.
    Touch,
    /// Links an anonymous id to a user id.
    Identify,
    /// A unit saw an experiment variant outside a decision.
    Exposure,
}

impl EventType {
    /// Parse the wire name of a type.
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "decision" => EventType::Decision,
            "interaction" => EventType::Interaction,
            "conversion" => EventType::Conversion,
            "touch" => EventType::Touch,
            "identify" => EventType::Identify,
            "exposure" => EventType::Exposure,
            _ => return None,
        })
    }

    /// The wire name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Decision => "decision",
            EventType::Interaction => "interaction",
            EventType::Conversion => "conversion",
            EventType::Touch => "touch",
            EventType::Identify => "identify",
            EventType::Exposure => "exposure",
        }
    }
}

/// Server-side facts about an event that are not part of its content: they may differ
/// between two deliveries of the same event (a retry carries a new `sent_at`), so they are
/// kept apart from [`Event::data`] and excluded from the content hash used for dedup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Client send time (epoch ms), if the client sent one.
    pub sent_at: Option<i64>,
    /// Server receive time (epoch ms).
    pub received_at: i64,
    /// Skew-corrected event time (epoch ms).
    pub event_time: i64,
    /// Event time more than 24 h after `received_at`.
    pub is_future: bool,
    /// Event time older than the late horizon.
    pub is_late: bool,
    /// Imported with `backfill=true` (no skew correction, no late flag).
    pub is_backfill: bool,
}

/// A validated, normalized event: identifiers are already pseudonymized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Server-side facts (times and flags).
    pub meta: Meta,
    /// Content as sent by the client (after pseudonymization).
    pub data: EventData,
}

/// Content of an event: everything the client controls. Short texts (ids, names, context
/// values) are [`CompactString`]s: up to 24 bytes they live inline, so parsing an event
/// makes, and applying it frees, a few allocations instead of dozens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    /// Client-chosen id, unique per project; the dedup key.
    pub event_id: CompactString,
    /// Raw client timestamp (epoch ms).
    pub timestamp: i64,
    /// Pseudonymized `user_id`.
    pub user_key: Option<String>,
    /// Pseudonymized `anonymous_id`.
    pub anonymous_key: Option<String>,
    /// Pseudonymized `session_id`.
    pub session_key: Option<String>,
    /// Id of the pseudonymization key (`raw` when the operator stores raw ids).
    pub key_id: CompactString,
    /// Optional client context.
    pub context: Context,
    /// Type-specific fields.
    pub body: EventBody,
}

impl Event {
    /// The type of this event.
    pub fn event_type(&self) -> EventType {
        self.data.body.event_type()
    }
}

/// Client context: known keys promoted, the rest kept as a JSON object text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    pub device: Option<CompactString>,
    pub os: Option<CompactString>,
    pub region: Option<CompactString>,
    pub locale: Option<CompactString>,
    pub app_version: Option<CompactString>,
    pub channel: Option<CompactString>,
    /// Remaining keys as a JSON object text, if any.
    pub extra: Option<String>,
}

/// Type-specific part of an event. (Externally tagged so compact binary formats such as the
/// WAL's can encode it.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventBody {
    Decision(Decision),
    Interaction(Interaction),
    Conversion(Conversion),
    Touch(Touch),
    Identify(Identify),
    Exposure(Exposure),
}

impl EventBody {
    /// The type of this body.
    pub fn event_type(&self) -> EventType {
        match self {
            EventBody::Decision(_) => EventType::Decision,
            EventBody::Interaction(_) => EventType::Interaction,
            EventBody::Conversion(_) => EventType::Conversion,
            EventBody::Touch(_) => EventType::Touch,
            EventBody::Identify(_) => EventType::Identify,
            EventBody::Exposure(_) => EventType::Exposure,
        }
    }
}

/// One response of the personalization engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub request_id: CompactString,
    pub trace_id: Option<String>,
    pub surface: CompactString,
    pub model_name: CompactString,
    pub model_version: CompactString,
    /// (experiment id, variant) pairs.
    pub experiments: Vec<(CompactString, CompactString)>,
    /// Feature flags as a JSON object text.
    pub flags: Option<String>,
    pub items: Vec<Item>,
    pub slate_propensity: Option<f64>,
    pub latency_total_ms: Option<f64>,
    /// (component, ms) pairs.
    pub latency_components: Vec<(CompactString, f64)>,
    pub fallback: bool,
    /// Feature snapshot as a JSON object text.
    pub features: Option<String>,
}

/// One item of a decision's slate. Ids and promoted attributes are [`CompactString`]s (see
/// [`EventData`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub item_id: CompactString,
    /// 1-based position.
    pub position: u32,
    pub score: Option<f64>,
    pub propensity: Option<f64>,
    /// `attributes.category`, promoted.
    pub category: Option<CompactString>,
    /// `attributes.provider`, promoted.
    pub provider: Option<CompactString>,
    /// The attributes other than a string `category` and `provider` (those are stored
    /// once, in their fields), as a JSON object text; `None` when no others are left.
    /// [`crate::merge_attributes`] gives the whole object back.
    pub attributes: Option<String>,
}

/// What the user did with an item of a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    pub request_id: CompactString,
    pub item_id: CompactString,
    pub action: CompactString,
    pub value: Option<f64>,
}

/// A downstream business outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversion {
    pub name: String,
    pub value: Option<f64>,
    pub currency: Option<String>,
    pub items: Vec<String>,
    pub request_id: Option<String>,
}

/// A non-personalization touchpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Touch {
    pub channel: String,
    pub campaign: Option<String>,
}

/// Links an anonymous id to a user id; both keys live in [`EventData`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identify {}

/// A unit saw an experiment variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exposure {
    pub experiment: String,
    pub variant: String,
}
