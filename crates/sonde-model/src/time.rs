use crate::event::Meta;

/// How event times are corrected and flagged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimePolicy {
    /// Events whose corrected time is more than this far after `received_at` are flagged future.
    pub future_ms: i64,
    /// Events whose corrected time is more than this far before `received_at` are flagged late.
    pub late_horizon_ms: i64,
}

impl Default for TimePolicy {
    fn default() -> Self {
        TimePolicy {
            future_ms: 24 * 3_600_000,
            late_horizon_ms: 7 * 24 * 3_600_000,
        }
    }
}

impl TimePolicy {
    /// Compute the server-side [`Meta`] of an event.
    ///
    /// With `sent_at`, the client clock's offset is `sent_at − received_at`, so the event time
    /// on the server clock is `received_at − (sent_at − timestamp)`. A backfill keeps the client
    /// time as it is and is never flagged late.
    pub fn meta(
        &self,
        timestamp: i64,
        sent_at: Option<i64>,
        received_at: i64,
        backfill: bool,
    ) -> Meta {
        let event_time = match (backfill, sent_at) {
            (false, Some(sent)) => received_at.saturating_sub(sent.saturating_sub(timestamp)),
            _ => timestamp,
        };
        Meta {
            sent_at,
            received_at,
            event_time,
            is_future: event_time > received_at.saturating_add(self.future_ms),
            is_late: !backfill && event_time < received_at.saturating_sub(self.late_horizon_ms),
            is_backfill: backfill,
        }
    }
}

/// Parse an RFC 3339 timestamp into epoch milliseconds.
pub fn parse_time_str(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_correction_uses_send_offset() {
        let p = TimePolicy::default();
        // Client clock is 5 s fast: it stamped the event at 100_000 and sent it at 105_000
        // (its clock); the server received it at 100_500.
        let m = p.meta(100_000, Some(105_000), 100_500, false);
        assert_eq!(m.event_time, 100_500 - 5_000);
        assert!(!m.is_future && !m.is_late);
        // Without sent_at the client time is kept.
        assert_eq!(p.meta(100_000, None, 100_500, false).event_time, 100_000);
        // Backfill ignores sent_at.
        assert_eq!(
            p.meta(100_000, Some(105_000), 100_500, true).event_time,
            100_000
        );
    }

    #[test]
    fn future_and_late_flags() {
        let p = TimePolicy::default();
        let now = 1_700_000_000_000;
        assert!(p.meta(now + 24 * 3_600_000 + 1, None, now, false).is_future);
        assert!(!p.meta(now + 24 * 3_600_000, None, now, false).is_future);
        assert!(
            p.meta(now - 7 * 24 * 3_600_000 - 1, None, now, false)
                .is_late
        );
        assert!(
            !p.meta(now - 7 * 24 * 3_600_000 - 1, None, now, true)
                .is_late
        );
    }

    #[test]
    fn rfc3339_parsing() {
        assert_eq!(parse_time_str("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(
            parse_time_str("2024-03-01T12:00:00.250+01:00"),
            Some(1_709_290_800_250)
        );
        assert_eq!(parse_time_str("yesterday"), None);
    }
}
