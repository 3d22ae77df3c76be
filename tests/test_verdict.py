"""The reproduction verdict of a measured-vs-published cell (bench/report/verdict.py), on hand-made cells:
every verdict reached and every boundary."""

from __future__ import annotations

import math

import pytest

from bench.errors import BenchError
from bench.report.spec import load_spec
from bench.report.verdict import VerdictRule, decide, parse_tolerance

RULE = VerdictRule()   # PSNR 0.3 dB, SSIM 0.01, 2σ


def v(metric="psnr", mean=21.71, std=math.nan, n=1, pub=21.71, flags=(), comparable=True, rule=RULE):
    return decide(metric, mean, std, n, pub, list(flags), comparable, "a caveat", rule)


def test_reproduced_up_to_and_including_the_tolerance():
    assert v(mean=21.71)[0] == "reproduced"
    assert v(mean=21.71 + 0.3)[0] == "reproduced"            # the boundary belongs to "reproduced"
    assert v(mean=21.71 - 0.3)[0] == "reproduced"
    assert v(mean=21.71 + 0.3001)[0] == "not reproduced"
    assert v("ssim", 0.550, pub=0.540)[0] == "reproduced"     # 0.01 apart in decimal, 1e-17 more in binary
    assert v("ssim", 0.5501, pub=0.540)[0] == "not reproduced"


def test_within_noise_needs_two_seeds_and_ends_at_two_sigma():
    # |Δ| = 0.5 > 0.3; 2σ = 0.6 with three seeds -> our own spread is as large
    assert v(mean=22.21, std=0.3, n=3)[0] == "within noise"
    assert v(mean=22.31, std=0.3, n=3)[0] == "within noise"   # |Δ| = 0.6 = 2σ: the boundary is inside
    verdict, why = v(mean=22.32, std=0.3, n=3)
    assert verdict == "not reproduced" and "above" in why and "2σ of 3 seeds 0.6" in why
    assert v(mean=22.21, std=0.3, n=1)[0] == "not reproduced"   # one seed: no spread to lean on
    assert "a single run" in v(mean=22.21, std=0.3, n=1)[1]
    assert v(mean=21.21, std=math.nan, n=2)[0] == "not reproduced"
    assert "below" in v(mean=21.21)[1]
    assert v(mean=22.21, std=0.3, n=3, rule=VerdictRule(noise_sigmas=1))[0] == "not reproduced"


def test_not_comparable_without_a_published_value_other_images_or_another_protocol():
    assert v(pub=None) == ("not comparable", "no published value for this column")
    assert v(pub=math.nan)[0] == "not comparable"
    verdict, why = v(comparable=False)
    assert verdict == "not comparable" and "a caveat" in why
    for flag, sym in (("profile", "†"), ("substitute", "‡"), ("partial", "§")):
        verdict, why = v(flags=[flag])           # exactly the published value, yet not a reproduction
        assert verdict == "not comparable" and sym in why
    assert v(flags=["seeds"])[0] == "reproduced"      # fewer seeds than asked (¶) does not change the protocol
    assert v(mean=math.nan) == ("", "not measured")


def test_tolerances_from_the_spec_and_the_command_line():
    rule = VerdictRule.from_spec({"tolerance": {"psnr": 0.5}, "noise_sigmas": 3}, {"ssim": 0.02})
    assert (rule.tol("psnr"), rule.tol("ssim"), rule.tol("lpips"), rule.noise_sigmas) == (0.5, 0.02, 0.0, 3.0)
    assert v(mean=22.11, rule=rule)[0] == "reproduced"
    assert "PSNR 0.5 dB, SSIM 0.02" in rule.caption(["psnr", "ssim"], {"psnr": " dB"})
    assert parse_tolerance(["psnr=0.5,ssim=0.02"]) == {"psnr": 0.5, "ssim": 0.02}
    for bad in (["psnr"], ["psnr=x"]):
        with pytest.raises(BenchError, match="METRIC=VALUE"):
            parse_tolerance(bad)
    with pytest.raises(BenchError, match="not negative"):
        VerdictRule.from_spec({}, {"psnr": -1})


def test_the_paper_tables_mark_lol_as_other_images_than_the_papers():
    for table in ("table1", "table2"):
        spec = load_spec(table)
        assert not spec.comparable("lol") and "never published its 100 LOL test pairs" in spec.paper_column("lol")[1]
        assert not spec.comparable("lol-485-15")
    spec = load_spec("table1")
    assert spec.comparable("fivek") and not spec.comparable("fivek-distorted")
