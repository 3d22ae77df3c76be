"""Statistics of a forced-choice user study (DSN Table 3 and beyond), with NumPy and SciPy only.

A vote is one trial: a rater of some group saw a set of methods' results for one image and chose one.
Everything here works from the list of votes (read from a CSV by :func:`bench.study.votes.read_votes`):

* shares per group and method, with Wilson 95 % intervals (``scipy.stats.binomtest(...).proportion_ci``);
* a chi-square goodness-of-fit test of each group against equal preference; the expected count of a method
  is the sum over trials of 1/|shown| for the trials that showed it (= n/N when all N are always shown);
* a chi-square homogeneity test between groups, with Cramér's V; when an expected count is below 5 a
  permutation p-value (margins fixed, Monte Carlo) is given beside the asymptotic one;
* pairwise conditional binomial tests: for methods A and B, the trials that showed both and were won by one
  of them, tested against p = 1/2 (valid under Luce's choice axiom), Holm-corrected over the pairs;
* Luce (multinomial-logit top-1 choice) strengths by Hunter's (2004) MM iteration, which reduces to the
  vote shares when every trial shows every method, and the Bradley–Terry pairwise probabilities they imply;
* cluster bootstraps of the shares (whole raters resampled; separately, whole images) and the design
  effects they imply: the naive intervals treat 50 votes of one rater as independent, which they are not;
* Fleiss' kappa per group (agreement among raters on the same images);
* the same shares and a homogeneity test per image category.

``statsmodels`` and ``choix`` would provide some of these; they are not dependencies, so the few formulas
are written out here and tested against hand-computed values.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import stats

# reading the vote file lives in bench.study.votes; its names stay importable from here
from .study.votes import COLUMNS, DUPLICATES_COUNTED, REQUIRED, Vote, parse_columns, read_votes  # noqa: F401


# --- elementary pieces -----------------------------------------------------------------------------
def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def counts(votes: Iterable[Vote], methods: Sequence[str]) -> np.ndarray:
    c = Counter(v.chosen for v in votes)
    return np.array([c.get(m, 0) for m in methods], dtype=np.int64)


def expected_uniform(votes: Iterable[Vote], methods: Sequence[str]) -> np.ndarray:
    """Expected counts under equal preference: each trial gives 1/|shown| to each method it showed."""
    exp = dict.fromkeys(methods, 0.0)
    for v in votes:
        for m in v.shown:
            exp[m] += 1.0 / len(v.shown)
    return np.array([exp[m] for m in methods])


def goodness_of_fit(votes: Sequence[Vote], methods: Sequence[str]) -> dict[str, Any]:
    obs = counts(votes, methods)
    exp = expected_uniform(votes, methods)
    keep = exp > 0
    res = stats.chisquare(obs[keep], exp[keep])
    return {"chi2": float(res.statistic), "dof": int(keep.sum() - 1), "p": float(res.pvalue),
            "observed": obs.tolist(), "expected": exp.tolist()}


def homogeneity(table: np.ndarray, seed: int = 0, resamples: int = 9999) -> dict[str, Any]:
    """Chi-square test of homogeneity of the rows of a count table, Cramér's V, and a permutation p when sparse."""
    table = np.asarray(table)
    table = table[:, table.sum(axis=0) > 0]
    table = table[table.sum(axis=1) > 0]
    if table.shape[0] < 2 or table.shape[1] < 2:
        return {"chi2": math.nan, "dof": 0, "p": math.nan, "cramers_v": math.nan, "min_expected": math.nan,
                "p_permutation": None, "n": int(table.sum())}
    res = stats.chi2_contingency(table, correction=False)
    n = table.sum()
    v = math.sqrt(res.statistic / (n * (min(table.shape) - 1)))
    out = {"chi2": float(res.statistic), "dof": int(res.dof), "p": float(res.pvalue), "cramers_v": v,
           "min_expected": float(res.expected_freq.min()), "p_permutation": None, "n": int(n)}
    if out["min_expected"] < 5:
        perm = stats.chi2_contingency(table, correction=False, method=stats.PermutationMethod(
            n_resamples=resamples, rng=np.random.default_rng(seed)))
        out["p_permutation"] = float(perm.pvalue)
        out["permutation_resamples"] = resamples
    return out


def pairwise(votes: Sequence[Vote], methods: Sequence[str], alpha: float = 0.05) -> list[dict[str, Any]]:
    """Conditional binomial test per pair over the trials that showed both and were won by one of them."""
    rows = []
    for a, b in itertools.combinations(methods, 2):
        wa = sum(1 for v in votes if v.chosen == a and b in v.shown)
        wb = sum(1 for v in votes if v.chosen == b and a in v.shown)
        n = wa + wb
        p = float(stats.binomtest(wa, n, 0.5).pvalue) if n else math.nan
        rows.append({"a": a, "b": b, "wins_a": wa, "wins_b": wb, "n": n,
                     "share_a": wa / n if n else math.nan, "p": p})
    valid = [i for i, r in enumerate(rows) if not math.isnan(r["p"])]
    adj = holm([rows[i]["p"] for i in valid])
    for i, r in enumerate(rows):
        r["p_holm"] = math.nan
        r["reject"] = False
    for i, p in zip(valid, adj):
        rows[i]["p_holm"] = p
        rows[i]["reject"] = p < alpha
    return rows


def luce(votes: Sequence[Vote], methods: Sequence[str], tol: float = 1e-12, max_iter: int = 10000) -> dict[str, Any]:
    """Maximum-likelihood Luce strengths for top-1 choices from shown sets (Hunter 2004, MM algorithm).

    w_i ← W_i / Σ_t [i ∈ S_t] / Σ_{j ∈ S_t} w_j, normalised to sum 1; W_i = wins of i. With every method shown
    in every trial the fixed point is the vote share. A method that never wins has strength 0 (the MLE is on
    the boundary). Also returns the Bradley–Terry probabilities w_i / (w_i + w_j) the strengths imply.
    """
    idx = {m: i for i, m in enumerate(methods)}
    wins = counts(votes, methods).astype(float)
    sets = Counter(tuple(sorted(idx[m] for m in v.shown)) for v in votes)
    w = np.full(len(methods), 1.0 / len(methods))
    converged, it = False, 0
    for it in range(1, max_iter + 1):
        denom = np.zeros(len(methods))
        for s, c in sets.items():
            total = w[list(s)].sum()
            if total > 0:
                denom[list(s)] += c / total
        new = np.divide(wins, denom, out=np.zeros_like(wins), where=denom > 0)
        new /= new.sum()
        if np.max(np.abs(new - w)) < tol:
            w, converged = new, True
            break
        w = new
    with np.errstate(divide="ignore", invalid="ignore"):
        bt = w[:, None] / (w[:, None] + w[None, :])
    return {"strength": w.tolist(), "log_strength": [math.log(x) if x > 0 else None for x in w],
            "bt_prob": [[None if math.isnan(x) else float(x) for x in row] for row in bt],
            "iterations": it, "converged": converged}


def _index(values: Iterable[str]) -> dict[str, int]:
    return {v: i for i, v in enumerate(sorted(set(values)))}


def cluster_bootstrap(votes: Sequence[Vote], methods: Sequence[str], by: str = "rater", replicates: int = 2000,
                      seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Cluster bootstrap of the shares: whole raters (``by="rater"``) or whole images (``by="image"``) resampled
    with replacement. Percentile intervals, and the design effect Var_boot(share) / (p(1−p)/n) per method.

    Raters and images are resampled one way at a time: resampling both at once ("pigeonhole" bootstrap)
    counts the residual variance about three times and overstates the uncertainty (McCullagh 2000), about
    2–3× on votes with no clustering at all. With R clusters the bootstrap variance is low by about (R−1)/R.
    """
    key = {"rater": lambda v: v.rater, "image": lambda v: v.image}[by]
    clusters = _index(key(v) for v in votes)
    midx = {m: i for i, m in enumerate(methods)}
    c = np.zeros((len(clusters), len(methods)))
    for v in votes:
        c[clusters[key(v)], midx[v.chosen]] += 1
    rng = np.random.default_rng(seed)
    k = len(clusters)
    draws = rng.integers(0, k, size=(replicates, k))
    weights = np.stack([np.bincount(d, minlength=k) for d in draws]).astype(float)
    boot = weights @ c
    tot = boot.sum(axis=1, keepdims=True)
    shares = np.divide(boot, tot, out=np.full_like(boot, np.nan), where=tot > 0)
    lo_q, hi_q = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    n = len(votes)
    p = counts(votes, methods) / n
    var_naive = p * (1 - p) / n
    var_boot = np.nanvar(shares, axis=0, ddof=1)
    deff = np.divide(var_boot, var_naive, out=np.full_like(var_boot, np.nan), where=var_naive > 0)
    return {"by": by, "clusters": k, "low": np.nanpercentile(shares, lo_q, axis=0).tolist(),
            "high": np.nanpercentile(shares, hi_q, axis=0).tolist(),
            "design_effect": [None if math.isnan(x) else float(x) for x in deff],
            "replicates": replicates, "seed": seed}


def fleiss_kappa(votes: Sequence[Vote], methods: Sequence[str]) -> dict[str, Any]:
    """Fleiss' kappa over the images, for a group in which every image got the same number of votes."""
    per_image: dict[str, Counter] = defaultdict(Counter)
    for v in votes:
        per_image[v.image][v.chosen] += 1
    sizes = {sum(c.values()) for c in per_image.values()}
    if len(sizes) != 1 or sizes.pop() < 2:
        return {"kappa": None, "reason": "images have unequal numbers of votes, or fewer than two"}
    mat = np.array([[c.get(m, 0) for m in methods] for c in per_image.values()], dtype=float)
    n = mat[0].sum()
    p_i = ((mat**2).sum(axis=1) - n) / (n * (n - 1))
    p_j = mat.sum(axis=0) / mat.sum()
    pe = float((p_j**2).sum())
    po = float(p_i.mean())
    kappa = (po - pe) / (1 - pe) if pe < 1 else math.nan
    return {"kappa": kappa, "observed_agreement": po, "chance_agreement": pe, "images": len(mat),
            "raters_per_image": int(n)}


# --- the whole analysis ----------------------------------------------------------------------------
def shares_block(votes: Sequence[Vote], methods: Sequence[str], confidence: float) -> dict[str, Any]:
    c = counts(votes, methods)
    n = int(c.sum())
    cis = [wilson(k, n, confidence) for k in c]
    return {"n": n, "counts": c.tolist(), "share": [k / n if n else math.nan for k in c],
            "wilson_low": [lo for lo, _ in cis], "wilson_high": [hi for _, hi in cis]}


def analyse(votes: Sequence[Vote], methods: Sequence[str], groups: Sequence[str] | None = None,
            categories: Sequence[str] | None = None, alpha: float = 0.05, replicates: int = 2000,
            seed: int = 0) -> dict[str, Any]:
    """Every statistic above, per rater group, pooled ("all"), and per category; JSON-able."""
    confidence = 1 - alpha
    present = list(dict.fromkeys(v.group for v in votes))
    groups = [g for g in (groups or []) if g in present] + [g for g in present if g not in (groups or [])]
    cats_present = list(dict.fromkeys(v.category for v in votes))
    categories = [c for c in (categories or []) if c in cats_present] + \
                 [c for c in cats_present if c not in (categories or [])]
    by_group = {g: [v for v in votes if v.group == g] for g in groups}
    out: dict[str, Any] = {"methods": list(methods), "groups": groups, "categories": categories, "alpha": alpha,
                           "n_votes": len(votes), "n_raters": len({v.rater for v in votes}),
                           "n_images": len({v.image for v in votes}), "per_group": {}, "per_category": {}}
    for g, vs in list(by_group.items()) + [("all", list(votes))]:
        block = shares_block(vs, methods, confidence)
        block.update(raters=len({v.rater for v in vs}), images=len({v.image for v in vs}),
                     goodness_of_fit=goodness_of_fit(vs, methods), pairwise=pairwise(vs, methods, alpha),
                     luce=luce(vs, methods),
                     bootstrap={by: cluster_bootstrap(vs, methods, by, replicates, seed, confidence)
                                for by in ("rater", "image")},
                     fleiss=fleiss_kappa(vs, methods))
        out["per_group"][g] = block
    table = np.array([counts(by_group[g], methods) for g in groups])
    out["homogeneity"] = homogeneity(table, seed) if len(groups) > 1 else None
    for g, vs in list(by_group.items()) + [("all", list(votes))]:
        per_cat = {c: shares_block([v for v in vs if v.category == c], methods, confidence) for c in categories}
        cat_table = np.array([per_cat[c]["counts"] for c in categories])
        out["per_category"][g] = {"categories": per_cat,
                                  "homogeneity": homogeneity(cat_table, seed) if len(categories) > 1 else None}
    return out
