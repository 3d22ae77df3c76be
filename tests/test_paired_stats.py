"""bench/paired_stats.py: every statistic against an independent computation on fixed arrays."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import integrate, stats

from bench import paired_stats as ps
from bench.errors import BenchError

A = np.array([20.1, 18.4, 22.0, 19.5, 21.3, 17.9, 20.8, 19.0, 23.1, 18.7])
B = np.array([21.0, 18.1, 23.2, 20.4, 21.3, 18.6, 21.9, 19.3, 24.0, 18.2])


# --- differences -------------------------------------------------------------------------------------
def test_sign_is_b_minus_a_and_non_finite_values_are_refused():
    assert ps.differences([1.0, 2.0], [1.5, 1.0]).tolist() == [0.5, -1.0]
    with pytest.raises(BenchError, match="differ in length"):
        ps.differences([1.0], [1.0, 2.0])
    with pytest.raises(BenchError, match=r"B has a non-finite value \(inf\) at position 1"):
        ps.differences([1.0, 2.0], [1.0, math.inf])


# --- bootstrap ---------------------------------------------------------------------------------------
def _loop_percentile_ci(d, resamples, seed, level=0.95):
    """One resample at a time from the same Generator, plain sums, and numpy's 'linear' percentile by hand."""
    rng = np.random.default_rng(seed)
    n = len(d)
    means = []
    for _ in range(resamples):
        idx = rng.integers(0, n, size=n)
        means.append(math.fsum(d[i] for i in idx) / n)
    means.sort()

    def pct(q):
        h = (len(means) - 1) * q
        lo = math.floor(h)
        hi = min(lo + 1, len(means) - 1)
        return means[lo] + (h - lo) * (means[hi] - means[lo])

    return pct((1 - level) / 2), pct(1 - (1 - level) / 2)


@pytest.mark.parametrize("seed", [0, 7])
def test_bootstrap_ci_matches_a_plain_loop_with_the_same_draws(seed, monkeypatch):
    d = B - A
    want = _loop_percentile_ci(d, 2000, seed)
    got = ps.bootstrap_ci(d, 2000, seed)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12)
    monkeypatch.setattr(ps, "_CHUNK", 35)          # 3 resamples per chunk: the draws must not change
    assert ps.bootstrap_ci(d, 2000, seed) == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert ps.bootstrap_ci(d, 2000, seed + 1) != got  # the seed matters (and is recorded by compare_values)


def test_bootstrap_ci_brackets_the_mean_and_agrees_with_scipy_roughly():
    d = B - A
    lo, hi = ps.bootstrap_ci(d, 20000, 0)
    assert lo < d.mean() < hi
    ref = stats.bootstrap((d,), np.mean, n_resamples=20000, method="percentile", confidence_level=0.95,
                          rng=np.random.default_rng(1)).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.05) and hi == pytest.approx(ref.high, abs=0.05)
    assert ps.bootstrap_ci([3.0], 100, 0) == (3.0, 3.0)
    assert all(math.isnan(x) for x in ps.bootstrap_ci([], 100, 0))
    with pytest.raises(BenchError, match="at least 1"):
        ps.bootstrap_ci(d, 0, 0)


# --- Wilcoxon ------------------------------------------------------------------------------------------
def _exact_two_sided(ranks_signed):
    """W+ and the exact two-sided p from all 2^n sign assignments of the ranks."""
    ranks = [abs(r) for r in ranks_signed]
    w_plus = sum(r for r in ranks_signed if r > 0)
    dist = [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=len(ranks))]
    lower = sum(1 for w in dist if w <= w_plus) / len(dist)
    upper = sum(1 for w in dist if w >= w_plus) / len(dist)
    return w_plus, min(1.0, 2 * min(lower, upper))


def test_wilcoxon_exact_against_a_hand_computation():
    d = np.array([1.5, -0.3, 2.0, 0.7, 1.1, -0.2, 0.9, 0.0])
    # the zero is dropped (zero_method wilcox); |d| ranks: 0.2→1 0.3→2 0.7→3 0.9→4 1.1→5 1.5→6 2.0→7
    signed = [6, -2, 7, 3, 5, -1, 4]
    w_plus, p = _exact_two_sided(signed)
    assert w_plus == 25 and 28 - w_plus == 3
    assert p == 10 / 128        # W+ >= 25  <=>  W- <= 3: {}, {1}, {2}, {3}, {1,2} → 5 of 128, both sides
    res = ps.wilcoxon(d)
    assert (res.statistic, res.n, res.method, res.note) == (3.0, 7, "exact", "")
    assert res.p == pytest.approx(p, abs=1e-15)


def test_wilcoxon_normal_approximation_with_tied_ranks_by_hand():
    d = np.array([1, 1, 2, -1, 3, 4, 2], dtype=float)
    # |d| = 1,1,1 → rank 2 each; 2,2 → 4.5; 3 → 6; 4 → 7. W- = 2 (the -1), W+ = 26
    n = 7
    mean = n * (n + 1) / 4
    var = n * (n + 1) * (2 * n + 1) / 24 - ((3 ** 3 - 3) + (2 ** 3 - 2)) / 48
    z = (2 - mean) / math.sqrt(var)
    p = 2 * 0.5 * math.erfc(abs(z) / math.sqrt(2))
    res = ps.wilcoxon(d)
    assert (res.statistic, res.n, res.method) == (2.0, 7, "approx")
    assert res.p == pytest.approx(p, rel=1e-12)


def test_wilcoxon_degenerate_inputs_give_nan_with_a_reason():
    res = ps.wilcoxon(np.zeros(12))
    assert math.isnan(res.p) and res.n == 0 and res.note == "all differences are ties"
    res = ps.wilcoxon(np.array([0.3, -0.1, 0.2, 0.5, 0.0, 0.0, 0.4]))
    assert math.isnan(res.p) and res.n == 5 and "5 non-tied image(s) < 6" in res.note and "0.0625" in res.note
    assert math.isnan(ps.wilcoxon(np.array([])).p)
    # a tolerance turns small differences into ties (dropped like zeros)
    d = np.array([1.5, -0.3, 2.0, 0.7, 1.1, -0.2, 0.9, 0.0, 0.004, -0.004])
    assert ps.wilcoxon(d, tie_tolerance=0.005).n == 7
    assert ps.wilcoxon(d, tie_tolerance=0.005).p == pytest.approx(10 / 128)


# --- win / tie / loss ----------------------------------------------------------------------------------
def test_win_tie_loss_respects_the_metric_direction_and_tolerance():
    d = np.array([0.5, -0.2, 0.0, 0.001, -0.3])
    assert ps.win_tie_loss(d, True) == (2, 1, 2)
    assert ps.win_tie_loss(d, False) == (2, 1, 2)[::-1]
    assert ps.win_tie_loss(d, True, tie_tolerance=0.01) == (1, 2, 2)
    assert ps.win_tie_loss(d, False, tie_tolerance=0.01) == (2, 2, 1)   # lower is better: d < 0 wins
    assert ps.win_tie_loss(d, None) == (2, 1, 2)                         # no direction: higher/tied/lower


# --- minimum detectable difference ------------------------------------------------------------------------
def _power_by_integration(effect, n, alpha=0.05):
    """Two-sided one-sample t-test power, integrating over S²: T = (Z + δ√n) / sqrt(V/df), V ~ χ²(df)."""
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = effect * math.sqrt(n)

    k = df / 2
    log_norm = -k * math.log(2) - math.lgamma(k)
    phi = lambda x: 0.5 * math.erfc(-x / math.sqrt(2))  # noqa: E731  (standard normal cdf)

    def f(v):
        if v <= 0:
            return 0.0
        s = crit * math.sqrt(v / df)
        chi2_pdf = math.exp(log_norm + (k - 1) * math.log(v) - v / 2)
        return (phi(nc - s) + phi(-s - nc)) * chi2_pdf

    return integrate.quad(f, 0, np.inf, limit=200, epsabs=1e-13)[0]


def _solve(n, target=0.8):
    lo, hi = 0.0, 50.0
    for _ in range(45):                      # 50 / 2**45 < 1e-12
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _power_by_integration(mid, n) < target else (lo, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize("n", [2, 5, 15, 100])
def test_mdd_matches_an_independent_noncentral_t_solve(n):
    sd = 0.73
    want = _solve(n) * sd
    assert ps.minimum_detectable_difference(sd, n) == pytest.approx(want, rel=1e-6)
    assert ps.t_power(ps.detectable_effect(n), n) == pytest.approx(0.8, abs=1e-9)


def test_mdd_against_statsmodels():
    power = pytest.importorskip("statsmodels.stats.power")
    for n in (3, 15, 485):
        want = power.TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8, alternative="two-sided")
        assert ps.detectable_effect(n) == pytest.approx(want, rel=1e-5)


def test_mdd_degenerate_cases():
    assert math.isnan(ps.minimum_detectable_difference(1.0, 1))
    assert ps.minimum_detectable_difference(0.0, 10) == 0.0
    # large n: close to the normal-approximation formula (z_.975 + z_.8)/√n
    assert ps.detectable_effect(10_000) == pytest.approx((1.959964 + 0.841621) / 100, rel=1e-3)


# --- Holm ------------------------------------------------------------------------------------------------
def test_holm_hand_worked_example():
    # sorted: .005·4 = .02, .01·3 = .03, .03·2 = .06, .04·1 = .04 → running max .06; the nan is not in the family
    assert ps.holm([0.01, 0.04, 0.03, math.nan, 0.005]) == pytest.approx([0.03, 0.06, 0.06, math.nan, 0.02],
                                                                         nan_ok=True)
    assert ps.holm([0.5, 0.6]) == [1.0, 1.0]              # capped at 1, monotone
    assert ps.holm([0.2]) == [0.2]
    assert all(math.isnan(p) for p in ps.holm([math.nan, math.nan]))
    assert ps.holm([]) == []


def test_holm_against_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = [0.001, 0.02, 0.02, 0.3, 0.04, 0.011]
    assert ps.holm(p) == pytest.approx(list(multitest.multipletests(p, method="holm")[1]))


# --- all together ------------------------------------------------------------------------------------------
def test_compare_values_assembles_the_pieces():
    res = ps.compare_values(A, B, True, resamples=500, seed=3)
    d = B - A
    assert res.n == 10 and res.mean_diff == pytest.approx(d.mean()) and res.sd_diff == pytest.approx(d.std(ddof=1))
    assert (res.mean_a, res.mean_b) == (pytest.approx(A.mean()), pytest.approx(B.mean()))
    assert (res.ci_low, res.ci_high) == pytest.approx(_loop_percentile_ci(d, 500, 3))
    assert (res.wins, res.ties, res.losses) == (7, 1, 2)
    nz = d[d != 0]
    method = "exact" if np.unique(np.abs(nz)).size == nz.size else "approx"   # floats: 0.3 and 0.3 differ here
    assert res.wilcoxon_n == 9 and res.wilcoxon_method == method
    assert res.wilcoxon_p == pytest.approx(stats.wilcoxon(nz, method=method).pvalue)
    assert res.mdd == pytest.approx(_solve(10) * d.std(ddof=1), rel=1e-6)
    assert (res.resamples, res.seed, res.level) == (500, 3, 0.95)
    lower = ps.compare_values(A, B, False, resamples=10, seed=0)
    assert (lower.wins, lower.ties, lower.losses) == (2, 1, 7)
    with pytest.raises(BenchError, match="tie tolerance"):
        ps.compare_values(A, B, True, tie_tolerance=-1)
