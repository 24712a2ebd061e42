//! Relevance measurement of served rankings: ranking quality with trec_eval's conventions,
//! calibration of predicted scores, distribution drift, position bias, stability between
//! consecutive slates, diversity, coverage and exposure fairness.
//!
//! Pure functions over slices, no I/O: the server feeds them rows it read with SQL. Every
//! metric is checked against a reference implementation (pytrec_eval, scikit-learn,
//! statsmodels, scipy) by fixtures that `scripts/reference/relevance.py` generates; the
//! formulas and conventions are in `docs/relevance.md`.

mod audit;
mod calibration;
mod diversity;
mod drift;
mod error;
mod gains;
mod live;
mod position;
mod ranking;
mod stability;

pub use audit::{auc, quantile, quantiles};
pub use calibration::{Binning, CalibrationBin, CalibrationReport, calibration, logistic_fit};
pub use diversity::{
    GroupExposure, exposure_fairness, exposure_weight, gini, intra_list_diversity, novelty,
};
pub use drift::{
    DriftTest, NumericDrift, jensen_shannon, jensen_shannon_of_shares, kolmogorov_sf, ks_2samp,
    numeric_drift, psi, psi_of_shares, wasserstein, wasserstein_normed,
};
pub use error::MetricError;
pub use gains::Gains;
pub use live::{
    ListFilter, ListKey, ListKeyRef, ListSums, LiveConfig, LiveItem, LiveRelevance, Outcome,
    Resolution, item_key,
};
pub use position::{ClickCell, PositionBias, position_bias_em};
pub use ranking::{Gain, ListMetrics, RankedItem, RankingSummary, list_metrics, trec_order};
pub use stability::{jaccard_at_k, rbo_ext};
