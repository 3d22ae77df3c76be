"""What a measured-vs-published cell means: ``reproduced``, ``within noise``, ``not reproduced`` or ``not
comparable``, by one documented rule, so a 3 dB gap on images the paper never used cannot read as a method gap.

The rule, in order (the first that applies decides):

1. no measured value -> no verdict ("not measured");
2. ``not comparable`` when there is nothing to compare with or the comparison would be unfair:
   no published value for the column; the test images are not the paper's (the dataset's ``paper_columns``
   entry says ``comparable: false``, e.g. ``lol``: the paper never published its 100 LOL test pairs, so our
   400/100 split is our own pinned list); or the protocol differs (a quick/smoke profile or ``--limit`` †,
   a substitute component ‡, a partial dataset §);
3. ``reproduced`` when |Δ| <= the metric's tolerance (defaults: 0.3 dB PSNR, 0.01 SSIM; the spec's
   ``verdict.tolerance`` or ``bench report --tolerance`` changes them; Δ uses the published value as printed);
4. ``within noise`` when |Δ| is above the tolerance but within ``noise_sigmas`` (default 2) sample standard
   deviations of the cell's seeds (cells with at least 2 seeds): our own seed-to-seed spread is as large;
5. ``not reproduced`` otherwise (the reason says in which direction and by how much).

For a delta table (table2) the same rule is applied to the difference of differences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import BenchError

VERDICTS = ("reproduced", "within noise", "not reproduced", "not comparable")
DEFAULT_TOLERANCE = {"psnr": 0.3, "psnr_y": 0.3, "ssim": 0.01, "ssim_y": 0.01}
_PROTOCOL_FLAGS = {"profile": "a quick or smoke profile or --limit (†)", "substitute": "a substitute component (‡)",
                   "partial": "a partial dataset (§)"}


@dataclass
class VerdictRule:
    tolerance: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TOLERANCE))
    noise_sigmas: float = 2.0

    def tol(self, metric: str) -> float:
        return float(self.tolerance.get(metric, 0.0))

    def caption(self, metrics: list[str], unit: dict[str, str] | None = None) -> str:
        unit = unit or {}
        tols = ", ".join(f"{m.upper()} {self.tol(m):g}{unit.get(m, '')}" for m in metrics if m in self.tolerance)
        if any(m not in self.tolerance for m in metrics):
            tols += (", " if tols else "") + "others 0"
        return (f"Verdicts: `reproduced` |Δ| ≤ tolerance ({tols}); `within noise` |Δ| above it but ≤ "
                f"{self.noise_sigmas:g}σ of the cell's seeds (≥ 2 seeds); `not reproduced` otherwise; "
                f"`not comparable` with no published value, other test images than the paper's, or another "
                f"protocol (†, ‡, §). Rule: bench/report/verdict.py.")

    @classmethod
    def from_spec(cls, raw: dict[str, Any] | None, override: dict[str, float] | None = None) -> "VerdictRule":
        raw = raw or {}
        tol = dict(DEFAULT_TOLERANCE)
        try:
            tol.update({str(k): float(v) for k, v in (raw.get("tolerance") or {}).items()})
            sigmas = float(raw.get("noise_sigmas", 2.0))
        except (TypeError, ValueError, AttributeError):
            raise BenchError("table spec: verdict.tolerance must map metrics to numbers and noise_sigmas must be a "
                             "number") from None
        tol.update(override or {})
        if any(not math.isfinite(v) or v < 0 for v in tol.values()) or not (math.isfinite(sigmas) and sigmas >= 0):
            raise BenchError("verdict tolerances and noise_sigmas must be finite and not negative")
        return cls(tol, sigmas)


def parse_tolerance(values: list[str] | None) -> dict[str, float]:
    """``--tolerance psnr=0.5,ssim=0.02`` -> {"psnr": 0.5, "ssim": 0.02}."""
    out: dict[str, float] = {}
    for item in [v for text in values or [] for v in text.split(",") if v.strip()]:
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise BenchError(f"--tolerance takes METRIC=VALUE items such as psnr=0.3,ssim=0.01, got {item!r}") from None
    return out


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not math.isnan(x)


def decide(metric: str, mean: float, std: float, n_seeds: int, published: float | None, flags: list[str],
           comparable: bool, caveat: str | None, rule: VerdictRule) -> tuple[str, str]:
    """(verdict, reason) of one cell; ("", "not measured") when nothing was measured."""
    if not _num(mean):
        return "", "not measured"
    if published is None or not _num(published):
        return "not comparable", "no published value for this column"
    if not comparable:
        return "not comparable", f"other test images than the paper's: {caveat or 'see the dataset caveat'}"
    protocol = [_PROTOCOL_FLAGS[f] for f in flags if f in _PROTOCOL_FLAGS]
    if protocol:
        return "not comparable", "protocol differs: " + ", ".join(protocol)
    delta = mean - published
    gap, tol = abs(delta), rule.tol(metric)
    if gap <= tol + 1e-9:            # 0.550 vs 0.540 is a gap of 0.0100000000000000009 in binary
        return "reproduced", f"|Δ| {gap:.4g} ≤ tolerance {tol:g}"
    spread = rule.noise_sigmas * std if n_seeds >= 2 and _num(std) else math.nan
    if _num(spread) and gap <= spread:
        return "within noise", (f"|Δ| {gap:.4g} > tolerance {tol:g} but ≤ {rule.noise_sigmas:g}σ of {n_seeds} "
                                f"seeds ({spread:.4g})")
    side = "below" if delta < 0 else "above"
    noise = f", {rule.noise_sigmas:g}σ of {n_seeds} seeds {spread:.4g}" if _num(spread) else \
        ("; a single run, no seed spread to weigh it against" if n_seeds < 2 else "")
    return "not reproduced", f"{gap:.4g} {side} the published value (tolerance {tol:g}{noise})"
