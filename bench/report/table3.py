"""Table 3, the user study: votes → the paper's table (shares per rater group) and its statistics."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

from .. import study_stats as st
from .latex import escape
from .render import MISSING, fmt
from .spec import TableSpec, load_reference


def _published(spec: TableSpec) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for r in load_reference(spec):
        out[(r["rater_group"], r["method"])] = {"percent": float(r["percent"]), "count": int(r["implied_count"]),
                                                "n": int(r["n_votes"]), "decimals": int(r.get("decimals") or 2)}
    return out


class Study:
    """The analysis of one vote file under a table3 spec, and its renderings."""

    def __init__(self, spec: TableSpec, votes_path: str | Path, columns: dict[str, str] | None = None,
                 allow_duplicates: bool = False):
        raw = spec.raw
        self.spec = spec
        self.methods = list(raw.get("methods") or [])
        self.votes_path = Path(votes_path)
        self.votes, self.notes = st.read_votes(votes_path, self.methods, raw.get("method_aliases"),
                                               raw.get("group_aliases"), columns=columns,
                                               allow_duplicates=allow_duplicates)
        for note in self.notes:
            if st.DUPLICATES_COUNTED in note:
                print(f"bench: note: {self.votes_path}: {note}", file=sys.stderr)
        boot = raw.get("bootstrap") or {}
        self.alpha = float(raw.get("alpha", 0.05))
        self.result = st.analyse(self.votes, self.methods, raw.get("rater_groups"), raw.get("categories"),
                                 self.alpha, int(boot.get("replicates", 2000)), int(boot.get("seed", 0)))
        self.groups = self.result["groups"]
        self.published = _published(spec)
        self.decimals = spec.decimals_for("percent")

    def mlabel(self, m: str) -> str:
        return (self.spec.raw.get("method_labels") or {}).get(m, m)

    def glabel(self, g: str) -> str:
        return (self.spec.raw.get("group_labels") or {}).get(g, "all raters" if g == "all" else g)

    # --- tidy CSV ---------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        out = []
        for g in self.groups + ["all"]:
            blk = self.result["per_group"][g]
            for i, m in enumerate(self.methods):
                pub = self.published.get((g, m), {})
                pct = 100 * blk["share"][i] if blk["n"] else math.nan
                out.append({
                    "table": self.spec.name, "rater_group": g, "group_label": self.glabel(g), "category": "all",
                    "method": m, "method_label": self.mlabel(m), "votes": blk["counts"][i], "n": blk["n"],
                    "share": blk["share"][i], "percent": pct, "wilson_low": blk["wilson_low"][i],
                    "wilson_high": blk["wilson_high"][i], "rater_boot_low": blk["bootstrap"]["rater"]["low"][i],
                    "rater_boot_high": blk["bootstrap"]["rater"]["high"][i],
                    "deff_rater": blk["bootstrap"]["rater"]["design_effect"][i],
                    "deff_image": blk["bootstrap"]["image"]["design_effect"][i],
                    "luce_strength": blk["luce"]["strength"][i],
                    "published_percent": pub.get("percent", math.nan), "published_count": pub.get("count", ""),
                    "delta_pp": round(pct - pub["percent"], 9) + 0.0 if pub else math.nan,
                })
            for c, cb in self.result["per_category"][g]["categories"].items():
                for i, m in enumerate(self.methods):
                    out.append({
                        "table": self.spec.name, "rater_group": g, "group_label": self.glabel(g), "category": c,
                        "method": m, "method_label": self.mlabel(m), "votes": cb["counts"][i], "n": cb["n"],
                        "share": cb["share"][i], "percent": 100 * cb["share"][i] if cb["n"] else math.nan,
                        "wilson_low": cb["wilson_low"][i], "wilson_high": cb["wilson_high"][i], "rater_boot_low": "",
                        "rater_boot_high": "", "deff_rater": "", "deff_image": "", "luce_strength": "",
                        "published_percent": "",
                        "published_count": "", "delta_pp": "",
                    })
        return out

    def csv(self) -> str:
        rows = self.rows()
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) and not math.isnan(v) else
                            ("" if isinstance(v, float) else v)) for k, v in r.items()})
        return buf.getvalue()

    # --- the paper's table --------------------------------------------------------------------------
    def _table_rows(self) -> list[tuple[str, str, list[str], int | None]]:
        """(label, votes, cell texts, index of the top method or None) for measured, paper and Δ rows."""
        d = self.decimals
        out = []
        for g in self.groups:
            blk = self.result["per_group"][g]
            pct = [100 * s for s in blk["share"]]
            top = max(range(len(pct)), key=pct.__getitem__)
            out.append((self.glabel(g), str(blk["n"]), [f"{fmt(p, d)} ({k})" for p, k in zip(pct, blk["counts"])],
                        top))
            pubs = [self.published.get((g, m)) for m in self.methods]
            if any(pubs):
                n_pub = next(p["n"] for p in pubs if p)
                out.append((f"{self.glabel(g)} (paper)", str(n_pub),
                            [fmt(p["percent"], p["decimals"]) if p else MISSING for p in pubs], None))
                out.append(("Δ (pp)", "", [fmt(v - p["percent"], d, True) if p else MISSING
                                           for v, p in zip(pct, pubs)], None))
        return out

    def markdown(self) -> str:
        from tabulate import tabulate

        headers = ["Raters", "votes"] + [self.mlabel(m) for m in self.methods]
        body = []
        for label, n, cells, top in self._table_rows():
            cells = [f"**{c}**" if i == top else c for i, c in enumerate(cells)]
            body.append([label, n] + cells)
        lines = [f"## {self.spec.title or self.spec.name}", "", self.spec.caption, "",
                 tabulate(body, headers=headers, tablefmt="github", disable_numparse=True,
                          colalign=("left", "right") + ("right",) * len(self.methods)), "",
                 "Cells: percentage of the group's choices (count). Bold: the most chosen method of the group. "
                 "Δ: measured − published, in percentage points.",
                 f"Votes from `{self.votes_path.name}`: {self.result['n_votes']} votes, {self.result['n_raters']} "
                 f"raters, {self.result['n_images']} images. Statistics: `{self.spec.name}.stats.md`."]
        lines += [f"Note: {n}." for n in self.notes]
        return "\n".join(lines) + "\n"

    def tex(self) -> str:
        k = len(self.methods)
        lines = [f"% {self.spec.name}: generated by `bench report {self.spec.name}`; needs \\usepackage{{booktabs}}",
                 r"\begin{table}[t]", r"\centering", r"\small",
                 rf"\caption{{{escape(self.spec.caption)}}}", rf"\label{{{self.spec.label}}}",
                 r"\begin{tabular}{lr" + "r" * k + "}", r"\toprule",
                 " & ".join(["Raters", "votes"] + [escape(self.mlabel(m)) for m in self.methods]) + r" \\",
                 r"\midrule"]
        rows = self._table_rows()
        for j, (label, n, cells, top) in enumerate(rows):
            texts = [escape(c) for c in cells]
            texts = [rf"\textbf{{{t}}}" if i == top else t for i, t in enumerate(texts)]
            if label.endswith("(paper)") or label.startswith("Δ"):
                label_tex = rf"\textit{{{escape(label)}}}"
            else:
                label_tex = escape(label)
                if j:
                    lines.append(r"\midrule")
            lines.append(" & ".join([label_tex, n] + texts) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip", r"{\footnotesize",
                  escape("Cells: percentage of the group's choices (count); bold: the group's most chosen method; "
                         "Δ: measured − published, percentage points.") + r"\par", "}", r"\end{table}"]
        return "\n".join(lines) + "\n"

    # --- statistics -----------------------------------------------------------------------------------
    def stats_json(self) -> str:
        doc = {"votes_file": self.votes_path.name, "notes": self.notes, **self.result}
        return json.dumps(_jsonable(doc), indent=2, sort_keys=False) + "\n"

    def stats_markdown(self) -> str:
        from tabulate import tabulate

        r, M = self.result, self.methods
        pct_ci = lambda lo, hi: f"[{100 * lo:.1f}, {100 * hi:.1f}]"  # noqa: E731
        conf = f"{100 * (1 - self.alpha):g} %"
        out = [f"# {self.spec.name}: user-study statistics", "",
               f"Votes: {r['n_votes']} from {r['n_raters']} raters on {r['n_images']} images "
               f"(file `{self.votes_path.name}`); methods {', '.join(self.mlabel(m) for m in M)}.", ""]
        out += [f"- note: {n}" for n in self.notes]
        out += ["", "**Caveat.** The tests below treat every vote as independent. Each rater gave many votes and "
                "each image got many, so the naive p-values and Wilson intervals can overstate certainty; the "
                "cluster bootstraps (whole raters, whole images) and their design effects show by how much. With "
                "few raters in a group (the paper had 5 experts) the rater bootstrap is itself rough.", ""]
        out += [f"## Shares with {conf} intervals", ""]
        body = []
        for g in self.groups + ["all"]:
            b = r["per_group"][g]
            for i, m in enumerate(M):
                pub = self.published.get((g, m))
                body.append([self.glabel(g), self.mlabel(m), f"{b['counts'][i]}/{b['n']}",
                             f"{100 * b['share'][i]:.2f}", pct_ci(b["wilson_low"][i], b["wilson_high"][i]),
                             pct_ci(b["bootstrap"]["rater"]["low"][i], b["bootstrap"]["rater"]["high"][i]),
                             _f(b["bootstrap"]["rater"]["design_effect"][i], 2),
                             _f(b["bootstrap"]["image"]["design_effect"][i], 2),
                             f"{pub['percent']:.2f}" if pub else MISSING])
        out.append(tabulate(body, headers=["raters", "method", "votes", "%", "Wilson CI (%)", "rater-bootstrap CI (%)",
                                           "deff raters", "deff images", "paper %"], tablefmt="github",
                            disable_numparse=True))
        b0 = r["per_group"][self.groups[0]]["bootstrap"]["rater"]
        out += ["", f"Cluster bootstraps: {b0['replicates']} replicates, seed {b0['seed']}; whole raters resampled "
                "(percentile interval), and separately whole images; design effect (deff) = bootstrap variance / "
                "binomial variance, about 1 when votes are independent. Raters and images are not resampled "
                "together: that overstates the variance (McCullagh 2000).", ""]
        out += ["## Goodness of fit against equal preference", ""]
        body = [[self.glabel(g), f"{b['goodness_of_fit']['chi2']:.1f}", b["goodness_of_fit"]["dof"],
                 _p(b["goodness_of_fit"]["p"]), " / ".join(f"{e:.1f}" for e in b["goodness_of_fit"]["expected"])]
                for g, b in ((g, r["per_group"][g]) for g in self.groups + ["all"])]
        out.append(tabulate(body, headers=["raters", "χ²", "dof", "p", "expected counts"], tablefmt="github",
                            disable_numparse=True))
        h = r.get("homogeneity")
        out += ["", "## Homogeneity between rater groups", ""]
        if h:
            line = (f"χ²({h['dof']}) = {h['chi2']:.1f}, p = {_p(h['p'])}, Cramér's V = {h['cramers_v']:.3f} "
                    f"(n = {h['n']}, smallest expected count {h['min_expected']:.1f})")
            if h.get("p_permutation") is not None:
                line += f"; permutation p = {_p(h['p_permutation'])} ({h['permutation_resamples']} resamples)"
            out.append(line + ".")
        else:
            out.append("Only one rater group.")
        out += ["", f"## Pairwise preference (conditional binomial tests, Holm-corrected, α = {self.alpha:g})", ""]
        body = []
        for g in self.groups + ["all"]:
            for pr in r["per_group"][g]["pairwise"]:
                body.append([self.glabel(g), f"{self.mlabel(pr['a'])} vs {self.mlabel(pr['b'])}",
                             f"{pr['wins_a']}:{pr['wins_b']}", _f(pr["share_a"], 3), _p(pr["p"]), _p(pr["p_holm"]),
                             "yes" if pr["reject"] else "no"])
        out.append(tabulate(body, headers=["raters", "pair", "wins", "share of first", "p", "p (Holm)",
                                           "significant"], tablefmt="github", disable_numparse=True))
        out += ["", "## Luce (top-1 choice) strengths and implied Bradley–Terry probabilities", "",
                "Maximum likelihood by Hunter's MM iteration; strengths sum to 1 (with every method shown in every "
                "trial they equal the shares). P(row ≻ column) = w_row / (w_row + w_column).", ""]
        for g in self.groups + ["all"]:
            lu = r["per_group"][g]["luce"]
            out.append(f"**{self.glabel(g)}**: " + ", ".join(f"{self.mlabel(m)} {w:.3f}" for m, w in
                                                              zip(M, lu["strength"]))
                       + f" ({lu['iterations']} iteration(s){'' if lu['converged'] else ', NOT converged'})")
            out.append("")
            body = [[self.mlabel(m)] + [MISSING if i == j or p is None else f"{p:.2f}" for j, p in enumerate(row)]
                    for i, (m, row) in enumerate(zip(M, lu["bt_prob"]))]
            out += [tabulate(body, headers=["P(row ≻ col)"] + [self.mlabel(m) for m in M], tablefmt="github",
                             disable_numparse=True), ""]
        out += ["## Agreement between raters (Fleiss' κ)", ""]
        for g in self.groups:
            fk = r["per_group"][g]["fleiss"]
            out.append(f"- {self.glabel(g)}: " + (f"κ = {fk['kappa']:.3f} (observed {fk['observed_agreement']:.3f}, "
                                                   f"chance {fk['chance_agreement']:.3f}; {fk['raters_per_image']} "
                                                   f"votes on each of {fk['images']} images)"
                                                   if fk["kappa"] is not None else f"not computed: {fk['reason']}"))
        out += ["", "## Per category", ""]
        for g in self.groups + ["all"]:
            pc = r["per_category"][g]
            body = [[c] + [f"{100 * s:.1f} ({k})" if cb["n"] else MISSING for s, k in zip(cb["share"], cb["counts"])]
                    + [cb["n"]] for c, cb in pc["categories"].items()]
            out += [f"**{self.glabel(g)}**", "", tabulate(body, headers=["category"] + [self.mlabel(m) for m in M]
                                                          + ["votes"], tablefmt="github", disable_numparse=True)]
            ch = pc["homogeneity"]
            if ch and not math.isnan(ch["chi2"]):
                line = (f"Categories alike? χ²({ch['dof']}) = {ch['chi2']:.1f}, p = {_p(ch['p'])}, "
                        f"Cramér's V = {ch['cramers_v']:.3f}")
                if ch.get("p_permutation") is not None:
                    line += (f"; smallest expected count {ch['min_expected']:.1f} < 5, permutation p = "
                             f"{_p(ch['p_permutation'])}")
                out += ["", line + "."]
            out.append("")
        return "\n".join(out).rstrip("\n") + "\n"


def _p(p: Any) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return MISSING
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def _f(x: Any, digits: int) -> str:
    return MISSING if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float):
        return None if math.isnan(x) or math.isinf(x) else x
    if hasattr(x, "item"):
        return _jsonable(x.item())
    return x
