//! Every metric against the reference implementations' values, to 1e-9. The fixtures come
//! from `scripts/reference/relevance.py` (pytrec_eval, scikit-learn, statsmodels, scipy).

use serde_json::Value;
use sonde_relevance::{
    Binning, RankedItem, auc, calibration, gini, intra_list_diversity, jensen_shannon,
    kolmogorov_sf, ks_2samp, list_metrics, novelty, psi, quantile, rbo_ext, trec_order,
    wasserstein, wasserstein_normed,
};

const TOL: f64 = 1e-9;

fn fixture(name: &str) -> Value {
    // Relative to the package, where cargo runs its tests: a path fixed at compile time
    // would point into whichever clone built the binary first when CI shares a target dir.
    let path = format!("tests/fixtures/{name}.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json")
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// A fixture list's items in trec_eval's order (clicked = relevant, for CTR@k).
fn ranked(l: &Value) -> Vec<RankedItem<'_>> {
    let (scores, grades) = (f64s(&l["scores"]), f64s(&l["grades"]));
    let mut items: Vec<RankedItem<'_>> = l["items"]
        .as_array()
        .expect("items")
        .iter()
        .zip(scores)
        .zip(grades)
        .map(|((id, score), grade)| RankedItem {
            item_id: id.as_str().expect("id"),
            score,
            grade,
            clicked: grade >= 1.0,
        })
        .collect();
    trec_order(&mut items);
    items
}

fn cutoffs(f: &Value) -> Vec<usize> {
    f["cutoffs"]
        .as_array()
        .expect("cutoffs")
        .iter()
        .map(|k| k.as_u64().expect("k") as usize)
        .collect()
}

fn close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= TOL * want.abs().max(1.0),
        "{what}: got {got}, want {want}"
    );
}

#[test]
fn ranking_metrics_match_pytrec_eval() {
    let f = fixture("ranking");
    let cutoffs = cutoffs(&f);
    let lists = f["lists"].as_array().expect("lists");
    assert!(lists.len() >= 300);
    let (mut ties, mut empty, mut short) = (0, 0, 0);
    for l in lists {
        let items = ranked(l);
        let grades = f64s(&l["grades"]);
        ties += usize::from(items.windows(2).any(|w| w[0].score == w[1].score));
        empty += usize::from(grades.iter().all(|g| *g == 0.0));
        short += usize::from(items.len() < 20);
        let e = &l["expected"];
        let q = l["id"].as_str().expect("id");
        let full = list_metrics(&items, usize::MAX);
        close(
            full.rr,
            e["recip_rank"].as_f64().expect("rr"),
            &format!("{q} recip_rank"),
        );
        close(
            full.ap,
            e["map"].as_f64().expect("map"),
            &format!("{q} map"),
        );
        close(
            full.ndcg,
            e["ndcg"].as_f64().expect("ndcg"),
            &format!("{q} ndcg"),
        );
        for &k in &cutoffs {
            let m = list_metrics(&items, k);
            let want = |name: &str| e[format!("{name}_{k}")].as_f64().expect("metric");
            close(m.precision, want("P"), &format!("{q} P_{k}"));
            close(m.hit, want("success"), &format!("{q} success_{k}"));
            close(m.ap_at_k, want("map_cut"), &format!("{q} map_cut_{k}"));
            close(m.ndcg, want("ndcg_cut"), &format!("{q} ndcg_cut_{k}"));
            close(
                m.ndcg_exp,
                want("ndcg_exp_cut"),
                &format!("{q} ndcg_exp_cut_{k}"),
            );
        }
    }
    // The fixture exercises what the conventions are about.
    assert!(
        ties > 50 && empty > 20 && short > 100,
        "{ties} {empty} {short}"
    );
}

#[test]
fn ranking_metrics_match_ranx() {
    let f = fixture("ranking_ranx");
    let cutoffs = cutoffs(&f);
    for l in f["lists"].as_array().expect("lists") {
        let items = ranked(l);
        let e = &l["expected"];
        let q = l["id"].as_str().expect("id");
        let full = list_metrics(&items, usize::MAX);
        close(
            full.rr,
            e["mrr"].as_f64().expect("mrr"),
            &format!("{q} mrr"),
        );
        close(
            full.ap,
            e["map"].as_f64().expect("map"),
            &format!("{q} map"),
        );
        for &k in &cutoffs {
            let m = list_metrics(&items, k);
            let want = |name: &str| e[format!("{name}@{k}")].as_f64().expect("metric");
            close(m.ndcg, want("ndcg"), &format!("{q} ndcg@{k}"));
            close(
                m.ndcg_exp,
                want("ndcg_burges"),
                &format!("{q} ndcg_burges@{k}"),
            );
            close(
                m.precision,
                want("precision"),
                &format!("{q} precision@{k}"),
            );
            close(m.hit, want("hit_rate"), &format!("{q} hit_rate@{k}"));
        }
    }
}

#[test]
fn calibration_matches_scikit_learn_and_statsmodels() {
    let f = fixture("calibration");
    for (i, c) in f["cases"].as_array().expect("cases").iter().enumerate() {
        let pred = f64s(&c["pred"]);
        let outcome: Vec<bool> = f64s(&c["outcome"]).iter().map(|y| *y == 1.0).collect();
        for (binning, name) in [
            (Binning::EqualMass, "equal_mass"),
            (Binning::EqualWidth, "equal_width"),
        ] {
            for bins in [5, 10] {
                let r = calibration(&pred, &outcome, bins, binning).expect("calibration");
                let e = &c[format!("{name}_{bins}")];
                let what = format!("case {i} {name} {bins}");
                let (obs, prd, cnt) = (
                    f64s(&e["observed"]),
                    f64s(&e["predicted"]),
                    f64s(&e["counts"]),
                );
                assert_eq!(r.bins.len(), obs.len(), "{what}: bins");
                for (b, bin) in r.bins.iter().enumerate() {
                    close(bin.observed, obs[b], &format!("{what} observed[{b}]"));
                    close(bin.predicted, prd[b], &format!("{what} predicted[{b}]"));
                    assert_eq!(bin.count as f64, cnt[b], "{what} count[{b}]");
                }
                close(
                    r.ece,
                    e["ece"].as_f64().expect("ece"),
                    &format!("{what} ece"),
                );
                close(
                    r.mce,
                    e["mce"].as_f64().expect("mce"),
                    &format!("{what} mce"),
                );
                close(
                    r.brier,
                    c["brier"].as_f64().expect("brier"),
                    &format!("case {i} brier"),
                );
                close(
                    r.log_loss,
                    c["log_loss"].as_f64().expect("ll"),
                    &format!("case {i} log loss"),
                );
                if c["slope"].is_null() {
                    assert_eq!((r.slope, r.intercept), (None, None), "case {i}: separable");
                    continue;
                }
                let slope = r.slope.expect("finite fit");
                let intercept = r.intercept.expect("finite fit");
                // Newton's method on both sides: agreement is limited by the fit's own
                // conditioning, not by the formula.
                assert!(
                    (slope - c["slope"].as_f64().expect("slope")).abs() < 1e-7,
                    "case {i} slope {slope} vs {}",
                    c["slope"]
                );
                assert!(
                    (intercept - c["intercept"].as_f64().expect("intercept")).abs() < 1e-7,
                    "case {i} intercept {intercept} vs {}",
                    c["intercept"]
                );
            }
        }
    }
}

#[test]
fn drift_statistics_match_scipy_and_evidently_formulas() {
    let f = fixture("drift");
    for (i, c) in f["cases"].as_array().expect("cases").iter().enumerate() {
        let (r, cur) = (f64s(&c["reference"]), f64s(&c["current"]));
        let what = |m: &str| format!("case {i} {m}");
        let (d, p) = ks_2samp(&r, &cur).expect("ks");
        close(d, c["ks"].as_f64().expect("ks"), &what("ks"));
        close(p, c["ks_p_value"].as_f64().expect("p"), &what("ks p"));
        close(
            wasserstein(&r, &cur).expect("w"),
            c["wasserstein"].as_f64().expect("w"),
            &what("wasserstein"),
        );
        close(
            wasserstein_normed(&r, &cur).expect("w"),
            c["wasserstein_normed"].as_f64().expect("w"),
            &what("wasserstein normed"),
        );
        close(
            psi(&r, &cur, 10).expect("psi"),
            c["psi_10"].as_f64().expect("psi"),
            &what("psi 10"),
        );
        close(
            psi(&r, &cur, 20).expect("psi"),
            c["psi_20"].as_f64().expect("psi"),
            &what("psi 20"),
        );
        close(
            jensen_shannon(&r, &cur, 10).expect("js"),
            c["jensen_shannon_10"].as_f64().expect("js"),
            &what("jensen-shannon"),
        );
    }
    for s in f["kolmogorov_sf"].as_array().expect("sf") {
        let x = s["x"].as_f64().expect("x");
        close(
            kolmogorov_sf(x),
            s["sf"].as_f64().expect("sf"),
            &format!("kolmogorov sf({x})"),
        );
    }
}

#[test]
fn stability_diversity_and_audit_match_rbo_scipy_numpy_and_scikit_learn() {
    let f = fixture("stability_diversity");
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|s| s.as_str().expect("str").to_string())
            .collect()
    };
    for (i, p) in f["pairs"].as_array().expect("pairs").iter().enumerate() {
        let (a, b) = (strs(&p["a"]), strs(&p["b"]));
        close(
            rbo_ext(&a, &b, 0.9),
            p["rbo_ext_0.9"].as_f64().expect("rbo"),
            &format!("pair {i} rbo_ext"),
        );
    }
    for (i, l) in f["lists"].as_array().expect("lists").iter().enumerate() {
        let x = f64s(&l["values"]);
        close(
            gini(&x),
            l["gini"].as_f64().expect("gini"),
            &format!("list {i} gini"),
        );
        close(
            novelty(&x),
            l["novelty"].as_f64().expect("novelty"),
            &format!("list {i} novelty"),
        );
        let cats: Vec<u64> = l["categories"]
            .as_array()
            .expect("cats")
            .iter()
            .map(|c| c.as_u64().expect("cat"))
            .collect();
        close(
            intra_list_diversity(&cats),
            l["ild"].as_f64().expect("ild"),
            &format!("list {i} ild"),
        );
    }
    for (i, c) in f["auc"].as_array().expect("auc").iter().enumerate() {
        let x = f64s(&c["x"]);
        let y: Vec<bool> = f64s(&c["y"]).iter().map(|v| *v == 1.0).collect();
        close(
            auc(&x, &y).expect("both classes"),
            c["auc"].as_f64().expect("auc"),
            &format!("auc {i}"),
        );
        let q = c["q"].as_f64().expect("q");
        close(
            quantile(&x, q).expect("values"),
            c["quantile"].as_f64().expect("quantile"),
            &format!("quantile {i}"),
        );
    }
}
