"""Reference values for crates/sonde-relevance, from the libraries the metrics must match.
(ranx's numba compilation makes a run take a minute.)

Run from the repository root (needs the pinned packages of requirements.txt):

    python3 -m venv /tmp/refenv && /tmp/refenv/bin/pip install -r scripts/reference/requirements.txt
    /tmp/refenv/bin/python scripts/reference/relevance.py

It writes JSON fixtures to crates/sonde-relevance/tests/fixtures/, which `cargo test`
compares to 1e-9; the tests need no Python. Inputs are drawn from a seeded generator and
stored in the fixtures next to the expected values.
"""

import json
import math
import pathlib

import numpy as np
import pytrec_eval
import rbo
from ranx import Qrels as RanxQrels, Run as RanxRun, evaluate as ranx_evaluate
import scipy
import sklearn
import statsmodels
import statsmodels.api as sm
from scipy import stats
from scipy.spatial.distance import jensenshannon, pdist
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

OUT = pathlib.Path(__file__).resolve().parents[2] / "crates/sonde-relevance/tests/fixtures"
CUTOFFS = [1, 3, 5, 10, 20]
rng = np.random.default_rng(20261127)


def versions():
    return {
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "statsmodels": statsmodels.__version__,
        "pytrec_eval": "pytrec-eval-terrier 0.5.7",
        "rbo": "rbo 0.1.3",
        "ranx": "ranx 0.3.21",
    }


def ranking():
    """Lists with score ties, lists shorter than k, lists with no relevant item."""
    lists = []
    for q in range(300):
        n = int(rng.integers(1, 16))
        # Scores on a coarse grid so ties are common; every fifth list has all grades 0.
        scores = [float(s) for s in np.round(rng.integers(0, 6, n) / 5, 1)]
        if q % 5 == 0:
            grades = [0] * n
        else:
            grades = [int(g) for g in rng.choice([0, 0, 0, 1, 2, 3], n)]
        items = [f"d{int(i)}" for i in rng.choice(1000, n, replace=False)]
        lists.append({"id": f"q{q}", "items": items, "scores": scores, "grades": grades})

    run = {l["id"]: {d: s for d, s in zip(l["items"], l["scores"])} for l in lists}
    qrel = {l["id"]: {d: g for d, g in zip(l["items"], l["grades"])} for l in lists}
    # Exponential gain: trec_eval's linear nDCG over grades mapped to 2^g - 1.
    qrel_exp = {q: {d: int(2**g - 1) for d, g in r.items()} for q, r in qrel.items()}
    cut = ",".join(str(k) for k in CUTOFFS)
    measures = {f"P.{cut}", f"ndcg_cut.{cut}", f"map_cut.{cut}", f"success.{cut}", "recip_rank", "map", "ndcg"}
    lin = pytrec_eval.RelevanceEvaluator(qrel, measures).evaluate(run)
    exp = pytrec_eval.RelevanceEvaluator(qrel_exp, {f"ndcg_cut.{cut}"}).evaluate(run)
    for l in lists:
        r, e = lin[l["id"]], exp[l["id"]]
        l["expected"] = {
            "recip_rank": r["recip_rank"],
            "map": r["map"],
            "ndcg": r["ndcg"],
            **{f"P_{k}": r[f"P_{k}"] for k in CUTOFFS},
            **{f"success_{k}": r[f"success_{k}"] for k in CUTOFFS},
            **{f"map_cut_{k}": r[f"map_cut_{k}"] for k in CUTOFFS},
            **{f"ndcg_cut_{k}": r[f"ndcg_cut_{k}"] for k in CUTOFFS},
            **{f"ndcg_exp_cut_{k}": e[f"ndcg_cut_{k}"] for k in CUTOFFS},
        }
    return {"versions": versions(), "cutoffs": CUTOFFS, "lists": lists}


def ranking_ranx():
    """ranx on lists with distinct scores (ranx and trec_eval break ties differently; Sonde
    follows trec_eval, checked above) and at least one relevant item (ranx drops queries
    without judgments)."""
    lists = []
    for q in range(200):
        n = int(rng.integers(1, 16))
        scores = [float(s) for s in rng.permutation(n) + 1.0]
        grades = [int(g) for g in rng.choice([0, 0, 0, 1, 2, 3], n)]
        if max(grades) == 0:
            grades[int(rng.integers(0, n))] = 1
        items = [f"d{int(i)}" for i in rng.choice(1000, n, replace=False)]
        lists.append({"id": f"q{q}", "items": items, "scores": scores, "grades": grades})
    run = RanxRun({l["id"]: dict(zip(l["items"], l["scores"])) for l in lists})
    qrels = RanxQrels({l["id"]: {d: g for d, g in zip(l["items"], l["grades"]) if g > 0} for l in lists})
    metrics = [f"{m}@{k}" for k in CUTOFFS for m in ("ndcg", "ndcg_burges", "precision", "hit_rate")] + ["mrr", "map"]
    ranx_evaluate(qrels, run, metrics, make_comparable=True)
    # Per-query scores, by query id (ranx keeps its own query order).
    for l in lists:
        l["expected"] = {m: float(run.scores[m][l["id"]]) for m in metrics}
    return {"versions": versions(), "cutoffs": CUTOFFS, "lists": lists}


def calibration():
    cases = []
    for case in range(6):
        n = [50, 200, 1000, 5000, 7, 2000][case]
        # Miscalibrated on purpose: outcomes drawn from a distorted probability.
        p = rng.beta(2, 5, n)
        if case == 4:
            p = np.round(p, 1)  # heavy ties in equal-mass edges
        if case == 5:
            p[:10] = 0.0  # predictions at the clip boundaries
            p[10:20] = 1.0
        true_p = 1 / (1 + np.exp(-(1.3 * np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6))) + 0.4)))
        y = (rng.random(n) < true_p).astype(int)
        y[:2] = [0, 1]  # both classes present
        entry = {"pred": p.tolist(), "outcome": y.tolist()}
        for strategy, name in [("quantile", "equal_mass"), ("uniform", "equal_width")]:
            for bins in [5, 10]:
                prob_true, prob_pred = calibration_curve(y, p, n_bins=bins, strategy=strategy)
                # Bin counts as calibration_curve forms them (its own code, repeated for ECE).
                if strategy == "quantile":
                    edges = np.percentile(p, np.linspace(0, 1, bins + 1) * 100)
                else:
                    edges = np.linspace(0.0, 1.0, bins + 1)
                ids = np.searchsorted(edges[1:-1], p)
                counts = np.bincount(ids, minlength=len(edges))
                counts = counts[counts != 0]
                gaps = np.abs(prob_true - prob_pred)
                entry[f"{name}_{bins}"] = {
                    "observed": prob_true.tolist(),
                    "predicted": prob_pred.tolist(),
                    "counts": counts.tolist(),
                    "ece": float(np.sum(counts / n * gaps)),
                    "mce": float(np.max(gaps)),
                }
        entry["brier"] = float(brier_score_loss(y, p))
        entry["log_loss"] = float(log_loss(y, p, labels=[0, 1]))
        eps = np.finfo(float).eps
        pc = np.clip(p, eps, 1 - eps)
        x = sm.add_constant(np.log(pc / (1 - pc)))
        try:
            fit = sm.Logit(y, x).fit(method="newton", tol=1e-14, maxiter=200, disp=0, warn_convergence=False)
            converged = fit.mle_retvals["converged"]
        except Exception:  # perfect separation
            converged = False
        # Separable outcomes have no finite maximum: Sonde reports no slope then.
        entry["intercept"], entry["slope"] = [float(v) for v in fit.params] if converged else [None, None]
        cases.append(entry)
    return {"versions": versions(), "cases": cases}


def evidently_bins(ref, cur, n_bins):
    """Evidently's get_binned_data for numeric columns (shares, before PSI's zero fill)."""
    bins = np.histogram_bin_edges(np.concatenate([ref, cur]), bins=n_bins)
    r = np.histogram(ref, bins)[0] / len(ref)
    c = np.histogram(cur, bins)[0] / len(cur)
    return r, c


def psi(ref, cur, n_bins):
    r, c = evidently_bins(ref, cur, n_bins)
    r = np.where(r == 0, 0.0001, r)
    c = np.where(c == 0, 0.0001, c)
    return float(np.sum((r - c) * np.log(r / c)))


def drift():
    cases = []
    for case in range(8):
        n1, n2 = [(100, 120), (2000, 1500), (500, 500), (30, 3000), (4000, 4000), (1, 1), (50, 60), (3000, 2500)][case]
        ref = rng.normal(3.0, 1.0, n1)
        cur = rng.normal(3.0 + 0.1 * case, 1.0 + 0.05 * case, n2)
        if case == 2:
            ref, cur = np.round(ref, 1), np.round(cur, 1)  # ties
        if case == 6:
            cur = ref[:50].copy()  # identical values
            cur = np.concatenate([cur, ref[:10]])
        if case == 7:
            ref = rng.lognormal(1.0, 0.8, n1)  # the simulator's recency feature
            cur = ref[:n2] * 3.0
        m, n = sorted([float(n1), float(n2)], reverse=True)
        en = m * n / (m + n)
        ks = stats.ks_2samp(ref, cur, method="asymp")
        rb, cb = evidently_bins(ref, cur, 10)
        cases.append({
            "reference": ref.tolist(),
            "current": cur.tolist(),
            "ks": float(ks.statistic),
            "ks_p_value": float(stats.kstwobign.sf(math.sqrt(en) * ks.statistic)),
            "wasserstein": float(stats.wasserstein_distance(ref, cur)),
            "wasserstein_normed": float(stats.wasserstein_distance(ref, cur) / max(np.std(ref), 0.001)),
            "psi_10": psi(ref, cur, 10),
            "psi_20": psi(ref, cur, 20),
            "jensen_shannon_10": float(jensenshannon(rb, cb)),
        })
    ks_sf = [{"x": x, "sf": float(stats.kstwobign.sf(x))} for x in [0.05, 0.3, 0.6, 0.9, 0.99, 1.0, 1.2, 2.0, 3.5]]
    return {"versions": versions(), "cases": cases, "kolmogorov_sf": ks_sf}


def stability_diversity():
    pairs = []
    for case in range(60):
        n, m = int(rng.integers(1, 15)), int(rng.integers(1, 15))
        if case % 3 == 0:
            m = n
        pool = [f"i{j}" for j in range(25)]
        a = list(rng.choice(pool, n, replace=False))
        b = list(rng.choice(pool, m, replace=False))
        pairs.append({"a": a, "b": b, "rbo_ext_0.9": float(rbo.RankingSimilarity(a, b).rbo_ext(p=0.9))})
    lists = []
    for case in range(40):
        x = rng.integers(0, 50, int(rng.integers(1, 40))).astype(float)
        if case == 0:
            x[:] = 3.0
        cats = rng.integers(0, 4, int(rng.integers(2, 12)))
        # Gini as mean absolute difference over twice the mean (a different formula from Sonde's).
        g = float(np.abs(x[:, None] - x[None, :]).mean() / (2 * x.mean())) if x.sum() > 0 else 0.0
        pos = x[x > 0]
        lists.append({
            "values": x.tolist(),
            "gini": g,
            "novelty": float(stats.entropy(pos / pos.sum(), base=2)) if len(pos) else 0.0,
            "categories": cats.tolist(),
            "ild": float(pdist(cats.reshape(-1, 1), metric="hamming").mean()),
        })
    aucs = []
    for case in range(30):
        n = int(rng.integers(2, 300))
        x = rng.normal(0, 1, n)
        if case % 3 == 0:
            x = np.round(x, 0)  # ties
        y = (rng.random(n) < 1 / (1 + np.exp(-x * (case % 5 - 2)))).astype(int)
        y[0], y[1] = 0, 1
        q = float(rng.random())
        aucs.append({"x": x.tolist(), "y": y.tolist(), "auc": float(roc_auc_score(y, x)),
                     "q": q, "quantile": float(np.quantile(x, q))})
    return {"versions": versions(), "pairs": pairs, "lists": lists, "auc": aucs}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, f in [("ranking", ranking), ("calibration", calibration), ("drift", drift),
                    ("stability_diversity", stability_diversity), ("ranking_ranx", ranking_ranx)]:
        (OUT / f"{name}.json").write_text(json.dumps(f(), indent=1) + "\n")
        print(f"wrote {OUT / (name + '.json')}")


if __name__ == "__main__":
    main()
