"""Table 3 (user study): the vote file, the paper's percentages, and statistics checked against hand computations.

The synthetic vote file has the design of DSN's study (5 experts and 15 amateurs, 50 images each, 10 per
category) and exactly the vote counts implied by Table 3 (protocol.md §6.1). Every statistic is compared
with a value computed here without SciPy (stdlib math only) or with a published worked example.
Golden files: tests/golden/table3.{csv,md,tex}; regenerate with UPDATE_GOLDEN=1 (see tests/test_report.py).
"""

from __future__ import annotations

import csv
import json
import math
import random
from fractions import Fraction
from pathlib import Path
from statistics import NormalDist

import pytest

from bench import study_stats as st
from bench.errors import BenchError
from bench.paths import results_root
from test_report import check_golden, report

METHODS = ["csrnet", "deepupe", "deeplpf", "ours"]
COUNTS = {"expert": [58, 19, 22, 151], "amateur": [181, 63, 166, 340]}
RATERS = {"expert": 5, "amateur": 15}
CATEGORIES = ["People", "Night", "Architecture", "Nature", "Drastic Weather"]


def paper_votes(path: Path, seed: int = 7) -> Path:
    """A vote file consistent with Table 3: the implied counts, spread over raters and images at random."""
    rng = random.Random(seed)
    rows = []
    for group, n_raters in RATERS.items():
        choices = [m for m, c in zip(METHODS, COUNTS[group]) for _ in range(c)]
        rng.shuffle(choices)
        it = iter(choices)
        for r in range(n_raters):
            for i in range(50):
                shown = METHODS[:]
                rng.shuffle(shown)
                rows.append({"rater": f"{group}-{r + 1:02d}", "rater_group": group, "image": f"img{i:02d}",
                             "category": CATEGORIES[i // 10], "shown": "|".join(shown), "chosen": next(it)})
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture
def votes_file(tmp_path) -> Path:
    return paper_votes(tmp_path / "votes.csv")


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    votes, _ = st.read_votes(paper_votes(tmp_path_factory.mktemp("votes") / "votes.csv"), METHODS)
    return st.analyse(votes, METHODS, ["expert", "amateur"], CATEGORIES, replicates=500)


# --- independent formulas (stdlib only) -------------------------------------------------------------
def chi2_sf_3(x: float) -> float:
    """Survival function of χ² with 3 degrees of freedom, closed form."""
    return math.erfc(math.sqrt(x / 2)) + math.sqrt(2 * x / math.pi) * math.exp(-x / 2)


def wilson_by_hand(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    z = NormalDist().inv_cdf(0.5 + conf / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def binom_two_sided_by_hand(k: int, n: int) -> float:
    """Exact two-sided binomial p at 1/2 (sum of outcomes no more likely than k), in exact arithmetic."""
    pmf = [Fraction(math.comb(n, i), 2**n) for i in range(n + 1)]
    return float(sum(p for p in pmf if p <= pmf[k]))


# --- the paper's table ------------------------------------------------------------------------------
def test_paper_percentages_are_reproduced_exactly(analysis):
    for group, want in (("expert", ["23.20", "7.60", "8.80", "60.40"]),
                        ("amateur", ["24.13", "8.40", "22.13", "45.33"])):
        block = analysis["per_group"][group]
        assert block["counts"] == COUNTS[group] and block["n"] == 50 * RATERS[group]
        assert [f"{100 * s:.2f}" for s in block["share"]] == want
    assert analysis["n_votes"] == 1000 and analysis["n_raters"] == 20 and analysis["n_images"] == 50


def test_goodness_of_fit_matches_hand_computation(analysis):
    for group, want in (("expert", 182.16), ("amateur", 209.392)):
        obs = COUNTS[group]
        e = sum(obs) / 4
        by_hand = sum((o - e) ** 2 / e for o in obs)
        got = analysis["per_group"][group]["goodness_of_fit"]
        assert by_hand == pytest.approx(want) and got["chi2"] == pytest.approx(by_hand, rel=1e-12)
        assert got["dof"] == 3 and got["p"] == pytest.approx(chi2_sf_3(by_hand), rel=1e-6)
    assert f"{analysis['per_group']['expert']['goodness_of_fit']['chi2']:.1f}" == "182.2"
    assert f"{analysis['per_group']['amateur']['goodness_of_fit']['chi2']:.1f}" == "209.4"


def test_homogeneity_and_cramers_v_match_hand_computation(analysis):
    table = [COUNTS["expert"], COUNTS["amateur"]]
    rows = [sum(r) for r in table]
    cols = [sum(c) for c in zip(*table)]
    n = sum(rows)
    chi2 = sum((table[i][j] - rows[i] * cols[j] / n) ** 2 / (rows[i] * cols[j] / n) for i in range(2) for j in range(4))
    h = analysis["homogeneity"]
    assert f"{chi2:.1f}" == "26.6" and h["chi2"] == pytest.approx(chi2, rel=1e-12) and h["dof"] == 3
    assert h["p"] == pytest.approx(chi2_sf_3(chi2), rel=1e-6) and 6e-6 < h["p"] < 8e-6
    assert h["cramers_v"] == pytest.approx(math.sqrt(chi2 / n)) and h["p_permutation"] is None


def test_wilson_intervals_match_hand_computation(analysis):
    block = analysis["per_group"]["expert"]
    lo, hi = block["wilson_low"][3], block["wilson_high"][3]
    assert (round(lo, 3), round(hi, 3)) == (0.542, 0.663)
    for group in COUNTS:
        b = analysis["per_group"][group]
        for k, lo, hi in zip(b["counts"], b["wilson_low"], b["wilson_high"]):
            want = wilson_by_hand(k, b["n"])
            assert (lo, hi) == pytest.approx(want, rel=1e-9)
    b = analysis["per_group"]["amateur"]
    assert (round(b["wilson_low"][3], 3), round(b["wilson_high"][3], 3)) == (0.418, 0.489)


def test_pairwise_binomial_tests_and_holm(analysis):
    for group, (k_ours, k_csr) in (("expert", (151, 58)), ("amateur", (340, 181))):
        pairs = {(p["a"], p["b"]): p for p in analysis["per_group"][group]["pairwise"]}
        assert len(pairs) == 6
        pr = pairs[("csrnet", "ours")]
        assert (pr["wins_a"], pr["wins_b"], pr["n"]) == (k_csr, k_ours, k_csr + k_ours)
        assert pr["p"] == pytest.approx(binom_two_sided_by_hand(k_csr, k_csr + k_ours), rel=1e-9)
        # Holm by hand over this group's six p-values
        ps = [p["p"] for p in analysis["per_group"][group]["pairwise"]]
        order = sorted(range(6), key=ps.__getitem__)
        adj, running = [0.0] * 6, 0.0
        for rank, i in enumerate(order):
            running = max(running, min(1.0, (6 - rank) * ps[i]))
            adj[i] = running
        assert [p["p_holm"] for p in analysis["per_group"][group]["pairwise"]] == pytest.approx(adj)
    expert = {(p["a"], p["b"]): p for p in analysis["per_group"]["expert"]["pairwise"]}
    assert 5e-11 < expert[("csrnet", "ours")]["p"] < 2e-10  # protocol.md: p ≈ 1e-10
    assert not expert[("deepupe", "deeplpf")]["reject"]  # 19 vs 22


def test_holm_on_a_small_example():
    assert st.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert st.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_fleiss_kappa_on_the_textbook_example():
    """Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories, κ = 0.210."""
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1], [7, 7, 0, 0, 0],
             [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    cats = list("abcde")
    votes = []
    for i, row in enumerate(table):
        raters = iter(range(14))
        for c, k in zip(cats, row):
            votes += [st.Vote(f"r{next(raters)}", "g", f"s{i}", "", tuple(cats), c) for _ in range(k)]
    fk = st.fleiss_kappa(votes, cats)
    assert round(fk["kappa"], 3) == 0.210 and round(fk["observed_agreement"], 3) == 0.378
    assert round(fk["chance_agreement"], 3) == 0.213


def test_luce_strengths_solve_the_likelihood_equations():
    """With every method shown, strengths are the shares; with varying shown sets the MLE satisfies
    W_i = Σ_t [i ∈ S_t] w_i / Σ_{j∈S_t} w_j (Hunter 2004, eq. for the Luce model)."""
    full = [st.Vote("r", "g", str(i), "", tuple(METHODS), m)
            for i, m in enumerate(["ours"] * 5 + ["csrnet"] * 3 + ["deeplpf"] * 2)]
    lu = st.luce(full, METHODS)
    assert lu["strength"] == pytest.approx([0.3, 0.0, 0.2, 0.5]) and lu["log_strength"][1] is None
    rng = random.Random(3)
    votes = []
    for i in range(400):
        shown = tuple(rng.sample(METHODS, rng.choice([2, 3, 4])))
        weights = {"csrnet": 2.0, "deepupe": 1.0, "deeplpf": 1.5, "ours": 4.0}
        chosen = rng.choices(shown, [weights[m] for m in shown])[0]
        votes.append(st.Vote(f"r{i % 7}", "g", str(i), "", shown, chosen))
    lu = st.luce(votes, METHODS)
    w = dict(zip(METHODS, lu["strength"]))
    assert lu["converged"] and sum(w.values()) == pytest.approx(1.0)
    for m in METHODS:
        wins = sum(v.chosen == m for v in votes)
        expected = sum(w[m] / sum(w[j] for j in v.shown) for v in votes if m in v.shown)
        assert expected == pytest.approx(wins, rel=1e-6)
    assert max(w, key=w.get) == "ours"
    bt = lu["bt_prob"]
    assert bt[3][0] == pytest.approx(w["ours"] / (w["ours"] + w["csrnet"]))
    # expected counts under equal preference follow the shown sets
    exp = st.expected_uniform(votes, METHODS)
    assert exp.sum() == pytest.approx(len(votes))


def test_cluster_bootstrap_is_seeded_and_sane(votes_file):
    votes, _ = st.read_votes(votes_file, METHODS)
    experts = [v for v in votes if v.group == "expert"]
    a = st.cluster_bootstrap(experts, METHODS, "rater", replicates=300, seed=1)
    b = st.cluster_bootstrap(experts, METHODS, "rater", replicates=300, seed=1)
    assert a == b and a["clusters"] == 5
    for lo, hi, s in zip(a["low"], a["high"], [c / 250 for c in COUNTS["expert"]]):
        assert lo <= s <= hi
    img = st.cluster_bootstrap(experts, METHODS, "image", replicates=300, seed=1)
    assert img["clusters"] == 50 and all(0.3 < d < 3 for d in img["design_effect"])
    # one rater who always picks the same method: rater clustering shows as a design effect > 1
    clustered = [st.Vote(f"r{r}", "g", f"i{i}", "", tuple(METHODS), METHODS[r % 2 * 3]) for r in range(10)
                 for i in range(20)]
    d = st.cluster_bootstrap(clustered, METHODS, "rater", replicates=300, seed=0)["design_effect"]
    assert d[3] > 5


def test_per_category_counts_add_up(analysis):
    for group in COUNTS:
        cats = analysis["per_category"][group]["categories"]
        assert list(cats) == CATEGORIES
        assert [sum(c["counts"][j] for c in cats.values()) for j in range(4)] == COUNTS[group]
        assert all(c["n"] == 10 * RATERS[group] for c in cats.values())
    h = analysis["per_category"]["expert"]["homogeneity"]
    assert h["dof"] == 12 and h["min_expected"] < 5 and 0 <= h["p_permutation"] <= 1


# --- the vote file ---------------------------------------------------------------------------------------
def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_vote_file_errors(tmp_path):
    head = "rater,rater_group,image,category,shown,chosen\n"
    with pytest.raises(BenchError, match="was not among those shown"):
        st.read_votes(_write(tmp_path / "a.csv", head + "r1,expert,i1,Night,csrnet|ours,deeplpf\n"), METHODS)
    with pytest.raises(BenchError, match="did you mean 'deeplpf'"):
        st.read_votes(_write(tmp_path / "b.csv", head + "r1,expert,i1,Night,csrnet|deeplfp,csrnet\n"), METHODS)
    with pytest.raises(BenchError, match="more than one group"):
        st.read_votes(_write(tmp_path / "c.csv", head + "r1,expert,i1,N,csrnet|ours,ours\nr1,amateur,i2,N,"
                                                        "csrnet|ours,ours\n"), METHODS)
    with pytest.raises(BenchError, match="missing column"):
        st.read_votes(_write(tmp_path / "d.csv", "rater,image,chosen\nr1,i1,ours\n"), METHODS)
    votes, notes = st.read_votes(_write(tmp_path / "e.csv", "rater,rater_group,image,chosen\nr1,Experts,i1,DSN\n"),
                                 METHODS, {"dsn": "ours"}, {"experts": "expert"})
    assert votes[0].chosen == "ours" and votes[0].group == "expert" and votes[0].shown == tuple(METHODS)
    assert any("no 'shown' column" in n for n in notes)


# --- bench report table3 -------------------------------------------------------------------------------------
def test_report_table3_golden_and_stats(votes_file):
    out = report("table3", "--votes", str(votes_file))
    for suffix in ("csv", "md", "tex"):
        check_golden(f"table3.{suffix}", (out / f"table3.{suffix}").read_text(encoding="utf-8"))
    md = (out / "table3.md").read_text(encoding="utf-8")
    assert "| experts          |     250 |  23.20 (58) | 7.60 (19) |   8.80 (22) | **60.40 (151)** |" in md
    assert "| amateurs (paper) |     750 |       24.13 |      8.40 |       22.13 |           45.33 |" in md
    stats_md = (out / "table3.stats.md").read_text(encoding="utf-8")
    assert "χ²(3) = 26.6" in stats_md and "[54.2, 66.3]" in stats_md
    doc = json.loads((out / "table3.stats.json").read_text(encoding="utf-8"))
    assert doc["per_group"]["expert"]["counts"] == COUNTS["expert"]
    with open(out / "table3.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] == "all" and r["rater_group"] != "all"]
    # published percentages are rounded: 181/750 = 24.1333 % against 24.13 %
    assert all(abs(float(r["delta_pp"])) < 0.005 for r in rows) and "-0" not in [r["delta_pp"] for r in rows]
    from bench.report.latex import check_balanced

    assert check_balanced((out / "table3.tex").read_text(encoding="utf-8")) == []


def test_report_table3_unknown_file():
    with pytest.raises(BenchError, match="not found"):
        report("table3", "--votes", str(results_root() / "nope.csv"))
