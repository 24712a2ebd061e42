//! How outcomes grade the items they follow.

use serde::{Deserialize, Serialize};

/// How outcomes grade the items they follow: a project setting (`[relevance]` in the config
/// file), defaults click 1, click with 30 s dwell 2, add to cart 2, purchase 3, window 30 min.
/// An item's grade is the best outcome that followed it within the window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gains {
    /// Grade of a click.
    pub click: i64,
    /// Grade of a click whose dwell (`value`) reaches `long_dwell_secs`.
    pub long_dwell: i64,
    /// Dwell seconds of a long click.
    pub long_dwell_secs: f64,
    /// Grade of an add-to-cart.
    pub add_to_cart: i64,
    /// Grade of a purchase of the item.
    pub purchase: i64,
    /// Default minutes after a decision in which outcomes count.
    pub window_minutes: u32,
}

impl Default for Gains {
    fn default() -> Self {
        Gains {
            click: 1,
            long_dwell: 2,
            long_dwell_secs: 30.0,
            add_to_cart: 2,
            purchase: 3,
            window_minutes: 30,
        }
    }
}

impl Gains {
    /// Grade of an interaction and whether it is a click.
    pub fn of_interaction(&self, action: &str, value: Option<f64>) -> (i64, bool) {
        match action {
            "click" if value.is_some_and(|v| v >= self.long_dwell_secs) => (self.long_dwell, true),
            "click" => (self.click, true),
            "add_to_cart" => (self.add_to_cart, false),
            _ => (0, false),
        }
    }
}
