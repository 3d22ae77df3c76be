"""Paired statistics of one metric for two methods scored on the same images (``bench compare``, table stats).

Why paired: every image is scored by both methods, and images differ far more from each other than methods do,
so the per-image differences carry the comparison; the spread of the per-run means would hide it.

Conventions (also in :data:`CONVENTIONS`, printed under every table):

- **sign**: ``d = b - a`` per image (B minus A: the compared method minus the reference); ``mean Δ`` is its mean.
  A positive Δ means B scored higher, which is better for B only where higher is better.
- **ties**: ``|d| <= tie_tolerance`` (default 0: bit-for-bit equal per-image values; an identical output scores
  the same value, so 0 is exact, not a float accident). Tied images count as ties, are dropped by the Wilcoxon
  test (``zero_method="wilcox"``: the classical test on the non-zero differences) and stay in every other
  statistic.
- **win/tie/loss**: images where B is better / tied / worse than A, in the metric's direction
  (``higher_is_better`` of bench/metrics.py; for a lower-is-better metric a win is ``d < 0``). A metric with no
  better direction (``None``) counts B higher / tied / lower.
- **95 % CI**: percentile bootstrap of the mean difference, resampling images (so pairs stay pairs) with
  replacement from ``numpy.random.default_rng(seed)``; resample count and seed are part of the result.
- **Wilcoxon**: ``scipy.stats.wilcoxon`` two-sided on the non-tied differences, exact null distribution for
  n <= 50 without tied ``|d|`` (else the normal approximation with the tie correction, no continuity
  correction). Below :data:`WILCOXON_MIN_N` non-tied differences the smallest p the test can reach
  (``2 / 2**n``) is above 0.05, so p is ``nan`` with the reason instead; all-tied differences likewise.
- **MDD@80 %**: the smallest true mean difference a two-sided paired t-test at α 0.05 detects with 80 % power,
  given the sample std (ddof 1) of d and n: ``δ·sd`` where δ solves the non-central t power equation with
  df = n - 1, non-centrality δ·√n. It says how large a difference this split can resolve at all.
- **Holm**: step-down adjustment of a family of p-values; ``nan`` entries are not part of the family.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from .errors import BenchError

WILCOXON_MIN_N = 6       # 2/2**6 = 0.031: the first n at which a two-sided exact p can fall below 0.05
EXACT_MAX_N = 50         # scipy's own limit for the exact null distribution
DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0
_CHUNK = 4_000_000       # resample indices drawn at a time (memory bound; the draws are the same unchunked)

CONVENTIONS = (
    "Δ = B − A per image (paired by image id), mean Δ its mean; W/T/L = images where B is better/tied/worse "
    "in the metric's direction (tie: |Δ| ≤ {tol}); 95 % CI: paired percentile bootstrap of mean Δ "
    "({resamples} resamples, numpy default_rng seed {seed}); Wilcoxon signed-rank, two-sided, zero_method "
    "'wilcox' (ties dropped; n = non-tied images), exact for n ≤ 50 without tied |Δ| else normal approximation, "
    f"p = nan below {WILCOXON_MIN_N} non-tied images; MDD@80 % = smallest mean Δ a two-sided paired t-test at "
    "α 0.05 detects with 80 % power given sd(Δ) and n."
)


def conventions(tie_tolerance: float = 0.0, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> str:
    return CONVENTIONS.format(tol=f"{tie_tolerance:g}", resamples=resamples, seed=seed)


def _vector(x: Any, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise BenchError(f"{what}: paired statistics take one value per image")
    return arr


def differences(a: Any, b: Any) -> np.ndarray:
    """``b - a`` per image; both finite and of one length (an ``inf`` PSNR has no finite difference)."""
    a, b = _vector(a, "A"), _vector(b, "B")
    if a.shape != b.shape:
        raise BenchError(f"paired values differ in length ({a.size} vs {b.size})")
    for name, arr in (("A", a), ("B", b)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise BenchError(f"{name} has a non-finite value ({arr[bad[0]]}) at position {bad[0]}; paired "
                             f"statistics need finite per-image values")
    return b - a


# --- the bootstrap -----------------------------------------------------------------------------------
def bootstrap_means(d: Any, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Means of ``resamples`` resamples of ``d`` (images drawn with replacement), vectorised in chunks.

    The indices are ``rng.integers(0, n, size=(resamples, n))`` of ``default_rng(seed)``; drawing them in
    row chunks consumes the generator exactly as one draw (and as one ``size=n`` draw per resample) would."""
    d = _vector(d, "differences")
    n = d.size
    if resamples < 1:
        raise BenchError(f"--resamples must be at least 1, got {resamples}")
    if n == 0:
        return np.full(resamples, np.nan)
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK // n)
    out = np.empty(resamples)
    for start in range(0, resamples, rows):
        k = min(rows, resamples - start)
        out[start:start + k] = d[rng.integers(0, n, size=(k, n))].mean(axis=1)
    return out


def bootstrap_ci(d: Any, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``d`` (numpy's default linear quantiles)."""
    if not 0 < level < 1:
        raise BenchError(f"confidence level must be in (0, 1), got {level}")
    means = bootstrap_means(d, resamples, seed)
    if np.isnan(means).any():
        return math.nan, math.nan
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


# --- Wilcoxon ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Wilcoxon:
    statistic: float   # scipy's two-sided statistic: min(W+, W-) over the non-tied differences
    p: float
    n: int             # non-tied differences used
    method: str        # exact | approx | "" (not run)
    note: str          # why p is nan, else ""


def wilcoxon(d: Any, tie_tolerance: float = 0.0, min_n: int = WILCOXON_MIN_N) -> Wilcoxon:
    """Two-sided Wilcoxon signed-rank test of ``d`` (module doc); never raises for degenerate input."""
    from scipy import stats

    d = _vector(d, "differences")
    nz = d[np.abs(d) > tie_tolerance]
    n = int(nz.size)
    if n == 0:
        return Wilcoxon(math.nan, math.nan, 0, "", "all differences are ties" if d.size else "no images")
    if n < min_n:
        return Wilcoxon(math.nan, math.nan, n, "",
                        f"{n} non-tied image(s) < {min_n}: the smallest reachable p (2/2^{n} = {2 / 2 ** n:.3g}) "
                        f"is above 0.05")
    absd = np.abs(nz)
    method = "exact" if n <= EXACT_MAX_N and np.unique(absd).size == n else "approx"
    res = stats.wilcoxon(nz, zero_method="wilcox", correction=False, alternative="two-sided", method=method)
    return Wilcoxon(float(res.statistic), float(res.pvalue), n, method, "")


# --- win / tie / loss --------------------------------------------------------------------------------
def win_tie_loss(d: Any, higher_is_better: bool | None, tie_tolerance: float = 0.0) -> tuple[int, int, int]:
    """Images where B is better, tied, worse than A (B higher / tied / lower when there is no direction)."""
    d = _vector(d, "differences")
    ties = int(np.count_nonzero(np.abs(d) <= tie_tolerance))
    up = int(np.count_nonzero(d > tie_tolerance))
    down = int(np.count_nonzero(d < -tie_tolerance))
    return (down, ties, up) if higher_is_better is False else (up, ties, down)


# --- minimum detectable difference -------------------------------------------------------------------
def t_power(effect: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided one-sample (paired) t-test at standardised effect ``effect`` with n pairs."""
    from scipy import stats

    df = n - 1
    crit = stats.t.isf(alpha / 2, df)
    nc = effect * math.sqrt(n)
    upper = float(stats.nct.sf(crit, df, nc))
    lower = float(stats.nct.sf(crit, df, -nc))   # = cdf(-crit, df, nc); scipy's cdf there underflows to nan
    return upper + (0.0 if math.isnan(lower) else lower)


def detectable_effect(n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The standardised effect (mean/sd) the paired t-test detects with ``power``; nan for n < 2."""
    from scipy.optimize import brentq

    if n < 2:
        return math.nan
    if not 0 < power < 1 or not 0 < alpha < 1:
        raise BenchError(f"power and alpha must be in (0, 1), got {power} and {alpha}")
    hi = 1.0
    while t_power(hi, n, alpha) < power:
        hi *= 2
        if hi > 1e6:          # pragma: no cover (n >= 2 reaches any power long before)
            return math.nan
    return float(brentq(lambda e: t_power(e, n, alpha) - power, 0.0, hi, xtol=1e-12, rtol=1e-12))


def minimum_detectable_difference(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """``detectable_effect(n) * sd`` in the metric's units (0 when every difference is the same)."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    return detectable_effect(n, alpha, power) * sd


# --- Holm ----------------------------------------------------------------------------------------------
def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order; ``nan`` stays ``nan`` and is not counted in m.

    Sorted ascending p_(1) <= ... <= p_(m): adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out.tolist()
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out.tolist()


# --- everything for one metric -----------------------------------------------------------------------
@dataclass(frozen=True)
class Paired:
    n: int
    mean_a: float
    mean_b: float
    mean_diff: float          # mean of b - a
    sd_diff: float            # ddof 1; nan for n < 2
    ci_low: float
    ci_high: float
    level: float
    resamples: int
    seed: int
    wilcoxon_statistic: float
    wilcoxon_p: float
    wilcoxon_n: int
    wilcoxon_method: str
    wilcoxon_note: str
    wins: int
    ties: int
    losses: int
    tie_tolerance: float
    higher_is_better: bool | None
    mdd: float                # minimum detectable mean difference at `power`, two-sided `alpha`
    alpha: float
    power: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_values(a: Any, b: Any, higher_is_better: bool | None, *, resamples: int = DEFAULT_RESAMPLES,
                   seed: int = DEFAULT_SEED, level: float = 0.95, tie_tolerance: float = 0.0,
                   alpha: float = 0.05, power: float = 0.8) -> Paired:
    """All paired statistics of per-image values ``a`` (reference, A) and ``b`` (compared, B), ``d = b - a``."""
    if tie_tolerance < 0 or not math.isfinite(tie_tolerance):
        raise BenchError(f"the tie tolerance must be a finite number >= 0, got {tie_tolerance}")
    d = differences(a, b)
    n = int(d.size)
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    lo, hi = bootstrap_ci(d, resamples, seed, level)
    w = wilcoxon(d, tie_tolerance)
    wins, ties, losses = win_tie_loss(d, higher_is_better, tie_tolerance)
    mean = lambda x: float(np.mean(x)) if n else math.nan  # noqa: E731
    return Paired(n=n, mean_a=mean(a), mean_b=mean(b), mean_diff=mean(d), sd_diff=sd, ci_low=lo, ci_high=hi,
                  level=level, resamples=resamples, seed=seed, wilcoxon_statistic=w.statistic, wilcoxon_p=w.p,
                  wilcoxon_n=w.n, wilcoxon_method=w.method, wilcoxon_note=w.note, wins=wins, ties=ties,
                  losses=losses, tie_tolerance=tie_tolerance, higher_is_better=higher_is_better,
                  mdd=minimum_detectable_difference(sd, n, alpha, power), alpha=alpha, power=power)


# --- formatting shared by bench compare and the table stats --------------------------------------------
def fmt_num(x: float, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "–"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"
