//! A latency sketch: DDSketch with 1% relative accuracy, exact count, sum, min and max, and a
//! compact binary form for persistence and for minutes that no longer change.

use sketches_ddsketch::{Config, DDSketch};

use crate::LatencyError;

/// Relative accuracy of every quantile: the reported value is within 1% of the exact one
/// (the exact one being the sample of rank ⌊q·(n−1)⌋, numpy's `lower` method).
pub const RELATIVE_ACCURACY: f64 = 0.01;

/// Bins a sketch may grow to before collapsing its lowest ones: 2048 bins of 2% cover
/// 1 µs to 10⁹ ms, so latencies never collapse.
const MAX_BINS: u32 = 2048;
/// Values below this count as zero.
const MIN_VALUE: f64 = 1e-9;

fn config() -> Config {
    Config::new(RELATIVE_ACCURACY, MAX_BINS, MIN_VALUE)
}

/// A mergeable summary of a latency distribution (milliseconds).
#[derive(Clone)]
pub struct Sketch {
    inner: DDSketch,
}

impl std::fmt::Debug for Sketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sketch")
            .field("count", &self.count())
            .field("min", &self.min())
            .field("max", &self.max())
            .finish()
    }
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch::new()
    }
}

impl Sketch {
    /// An empty sketch.
    pub fn new() -> Sketch {
        Sketch {
            inner: DDSketch::new(config()),
        }
    }

    /// Record one value. Negative and non-finite values are ignored (validation rejects
    /// them before they get here).
    pub fn add(&mut self, ms: f64) {
        if ms.is_finite() && ms >= 0.0 {
            self.inner.add(ms);
        }
    }

    /// Add another sketch's values.
    pub fn merge(&mut self, other: &Sketch) {
        // Both sketches come from `config()`, so the configurations always match.
        let _ = self.inner.merge(&other.inner);
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.inner.count() as u64
    }

    /// Sum of the values (exact).
    pub fn sum(&self) -> f64 {
        self.inner.sum().unwrap_or(0.0)
    }

    /// Smallest value (exact).
    pub fn min(&self) -> Option<f64> {
        self.inner.min()
    }

    /// Largest value (exact).
    pub fn max(&self) -> Option<f64> {
        self.inner.max()
    }

    /// Bins allocated (a dense sketch's memory is 8 bytes a bin).
    pub fn bins(&self) -> usize {
        self.inner.length()
    }

    /// Mean (exact).
    pub fn mean(&self) -> Option<f64> {
        let n = self.count();
        (n > 0).then(|| self.sum() / n as f64)
    }

    /// The `q`-quantile within [`RELATIVE_ACCURACY`]; `None` when empty or `q` outside [0, 1].
    /// `q = 0` and `q = 1` give the exact min and max.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.inner.quantile(q).ok().flatten()
    }

    /// How many values are at most `threshold`, as the sketch sees them (values within 1%
    /// of the threshold may land on either side). Exact counters are kept where thresholds
    /// are known in advance; this serves thresholds declared later.
    pub fn count_le(&self, threshold: f64) -> u64 {
        let n = self.count();
        if n == 0 || self.min().is_some_and(|m| m > threshold) {
            return 0;
        }
        if self.max().is_some_and(|m| m <= threshold) {
            return n;
        }
        // The value at rank r is monotone in r: find the first rank above the threshold.
        let at = |r: u64| -> f64 {
            if r + 1 >= n {
                return self.max().unwrap_or(f64::INFINITY);
            }
            self.quantile((r as f64 + 0.5) / (n - 1) as f64)
                .unwrap_or(f64::INFINITY)
        };
        let (mut lo, mut hi) = (0u64, n - 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if at(mid) > threshold {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }

    /// The compact binary form (DataDog's DDSketch encoding, readable by sketches-java and
    /// sketches-go): about one byte per occupied bin.
    pub fn encode(&self) -> Vec<u8> {
        sketches_ddsketch::encoding::encode_to_java_bytes(&self.inner)
    }

    /// Read [`Sketch::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Result<Sketch, LatencyError> {
        let decoded = sketches_ddsketch::encoding::decode_from_java_bytes(bytes)
            .map_err(|e| LatencyError::Sketch(e.to_string()))?;
        // Re-base onto our configuration so merges with fresh sketches always match.
        let mut s = Sketch::new();
        s.inner
            .merge(&decoded)
            .map_err(|_| LatencyError::Sketch("sketch has a different index mapping".into()))?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_counts_and_extremes() {
        let mut s = Sketch::new();
        for v in [0.0, 0.5, 3.0, 3.0, 17.25, 250.0, 1e4] {
            s.add(v);
        }
        let back = Sketch::decode(&s.encode()).expect("decodes");
        assert_eq!(back.count(), 7);
        assert_eq!(back.min(), Some(0.0));
        assert_eq!(back.max(), Some(1e4));
        assert!((back.sum() - s.sum()).abs() < 1e-9);
        for q in [0.1, 0.5, 0.9] {
            assert_eq!(back.quantile(q), s.quantile(q));
        }
        let mut merged = back.clone();
        merged.merge(&s);
        assert_eq!(merged.count(), 14);
        assert!(Sketch::decode(b"not a sketch").is_err());
    }

    #[test]
    fn count_le_counts_values_at_or_below_the_threshold() {
        let mut s = Sketch::new();
        for v in 1..=1000 {
            s.add(v as f64);
        }
        assert_eq!(s.count_le(0.5), 0);
        assert_eq!(s.count_le(5000.0), 1000);
        // Within the sketch's 1% resolution of the exact 500.
        let c = s.count_le(500.0) as f64;
        assert!((c - 500.0).abs() <= 10.0, "{c}");
        assert_eq!(Sketch::new().count_le(1.0), 0);
    }
}
