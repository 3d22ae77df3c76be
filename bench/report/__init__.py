"""``bench report table1|table2|table3``: the paper's tables from run directories (and a vote file).

Modules:

- :mod:`bench.report.spec`    -- table specs (``manifests/tables``) and published numbers (``manifests/reference``);
- :mod:`bench.report.collect` -- run directories → selection per cell → one tidy frame (the selection rule);
- :mod:`bench.report.render`  -- CSV, Markdown and the measured-vs-published view;
- :mod:`bench.report.latex`   -- the booktabs writer;
- :mod:`bench.report.stats`   -- paired per-image statistics of every row against a reference row;
- :mod:`bench.report.table3`  -- the user study (statistics in :mod:`bench.study_stats`).

Outputs go to ``<results>/tables/`` (``--out`` to change): ``tableN.csv`` (tidy), ``tableN.md``, ``tableN.tex``,
``tableN.sources.csv``, ``tableN.compare.md`` and ``tableN.stats.{md,csv}`` (every row against a reference row,
image by image: :mod:`bench.report.stats`); for table3 ``table3.{csv,md,tex}``, ``table3.stats.md`` and
``table3.stats.json``. Heavy imports happen inside :func:`cmd_report`, so registering the command is cheap.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from ..errors import BenchError
from .spec import TABLES
from ..subcommand import add_subcommand

EPILOG = """\
examples:
  bench report table1
  bench report table1 --datasets demo --profile paper
  bench report table1 --datasets lol-485-15,fivek-distorted --profile quick --seeds 0
  bench report table2 --seeds 0 1 2 --out paper/tables
  bench report table3 --votes study/votes.csv
  bench report table1-official --datasets lol-485-15

Cells: complete runs (DONE) on the test split, profile >= --profile (paper > quick > smoke; smoke-marked runs
only for a quick or smoke report), seeds among --seeds (deterministic methods need one run), the latest run
per seed, mean ± std over seeds. Missing cells print "–"; marked cells get a footnote symbol:
  † quick/smoke profile or --limit   ‡ substitute (protocol.faithful: false)
  § partial dataset                  ¶ fewer seeds than asked
Metric versions are never mixed in one column: the report refuses and names the runs.
tableN.compare.md gives every cell a verdict (bench/report/verdict.py): reproduced (|Δ| <= --tolerance,
default 0.3 dB PSNR / 0.01 SSIM), within noise (inside 2σ of the cell's seeds), not reproduced, or not
comparable (no published value, other test images than the paper's -- e.g. `lol`, whose 100 test pairs the
paper never published -- or another protocol: † ‡ §). tableN.stats.{md,csv}: every row against
--stats-reference (default ours) image by image: paired bootstrap CI, Wilcoxon, Holm-corrected p.
Runs with the authors' released weights (--weights official:M) never enter table1/table2: table1-official
lists them beside the figures published for those checkpoints, with contamination flags.
Table 3 votes: CSV (UTF-8, with or without BOM; ',' ';' or tab delimited) with columns rater, rater_group,
image, category, shown ("a|b|c|d"; ';' ',' '/' also accepted), chosen. --columns rater=participant,...
maps other column names; exact duplicate rows are refused unless --allow-duplicates."""


def _split_list(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _seeds(values: Sequence[str] | None) -> list[int] | None:
    items = _split_list(values)
    if items is None:
        return None
    try:
        return [int(v) for v in items]
    except ValueError:
        raise BenchError(f"--seeds takes integers, got {' '.join(values or [])!r}") from None


def register(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """Add the ``report`` sub-command to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    kw: dict[str, Any] = dict(help="render the paper's tables from runs (table1, table2) or votes (table3)",
                              description="Render the paper's tables: table1 and table2 from complete runs under "
                              "<results>/runs,\ntable3 from a vote file. Writes CSV (tidy), Markdown, LaTeX (booktabs), "
                              "the run behind every cell\nand a measured-vs-published view into <results>/tables.",
                              epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p = add_subcommand(subparsers, "report", parents, **kw)
    p.add_argument("table", choices=[*TABLES, "table1-official"],
                   help="which table (table1-official: runs with the authors' released checkpoints)")
    p.add_argument("--profile", choices=["smoke", "quick", "paper"],
                   help="lowest profile admitted (default: the spec's, paper); cheaper cells are marked †")
    p.add_argument("--datasets", nargs="+", metavar="NAME",
                   help="dataset columns instead of the spec's (comma- or space-separated), e.g. demo or "
                        "lol-485-15,fivek-distorted")
    p.add_argument("--seeds", nargs="+", metavar="SEED", help="seeds asked of trainable methods (default: spec's)")
    p.add_argument("--votes", type=Path, metavar="FILE", help="table3: the vote file (CSV)")
    p.add_argument("--columns", nargs="+", metavar="STD=NAME",
                   help="table3: the vote file's own column names, e.g. rater=participant,chosen=choice")
    p.add_argument("--allow-duplicates", action="store_true",
                   help="table3: count exact duplicate vote rows (refused otherwise); the count goes to stderr")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: <results>/tables)")
    p.add_argument("--spec", type=Path, metavar="YAML", help="a table spec other than manifests/tables/TABLE.yaml")
    p.add_argument("--tolerance", nargs="+", metavar="METRIC=VALUE",
                   help="table1/table2: |Δ| up to which a cell counts as reproduced in tableN.compare.md "
                        "(default psnr=0.3,ssim=0.01, or the spec's verdict.tolerance)")
    p.add_argument("--stats-reference", metavar="KEY",
                   help="table1/table2: the row every other row is tested against in tableN.stats.{md,csv} "
                        "(default: ours, the full model)")
    p.set_defaults(fn=cmd_report)
    return p


def cmd_report(args: argparse.Namespace) -> int:
    from ..fsutil import check_writable
    from ..paths import results_root
    from .spec import load_spec
    from .verdict import parse_tolerance

    out = check_writable(Path(args.out) if getattr(args, "out", None) else results_root() / "tables")
    quiet = bool(getattr(args, "quiet", False))
    if args.table == "table1-official":
        from .official import write_official_table

        files, _ = write_official_table(out, _split_list(getattr(args, "datasets", None)))
        if not quiet:
            print(files[1].read_text(encoding="utf-8"))
        print("wrote " + ", ".join(str(f) for f in files))
        return 0
    spec = load_spec(args.table, getattr(args, "spec", None))
    if spec.kind == "user_study":
        if not getattr(args, "votes", None):
            raise BenchError(f"{spec.name} needs --votes FILE: a CSV with one row per vote (columns rater, "
                             f"rater_group, image, category, shown, chosen); see {spec.path}")
        from ..study_stats import parse_columns

        files = write_study(spec, args.votes, out, parse_columns(getattr(args, "columns", None)),
                            bool(getattr(args, "allow_duplicates", False)))
        shown = files[1]
    else:
        if getattr(args, "votes", None):
            print(f"bench: note: --votes is for table3; ignored for {spec.name}", file=sys.stderr)
        files, data = write_table(spec, out, _split_list(getattr(args, "datasets", None)),
                                  getattr(args, "profile", None), _seeds(getattr(args, "seeds", None)),
                                  getattr(args, "stats_reference", None),
                                  parse_tolerance(getattr(args, "tolerance", None)))
        for note in data.notes:
            print(f"bench: note: {note}", file=sys.stderr)
        shown = files[1]
    if not quiet:
        print(shown.read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def write_table(spec, out: Path, datasets: list[str] | None = None, profile: str | None = None,
                seeds: list[int] | None = None, stats_reference: str | None = None,
                tolerance: dict[str, float] | None = None):
    """Collect and write table1/table2 files; returns ([csv, md, tex, sources, compare, stats.md, stats.csv],
    TableData). ``stats_reference``: the row the paired statistics test every other row against (default ours)."""
    from ..fsutil import write_text
    from . import latex, render
    from .collect import collect
    from .stats import check_reference, stats_tables

    check_reference(spec, stats_reference)      # a mistyped row key fails before any work
    data = collect(spec, datasets, profile, seeds, tolerance=tolerance)
    stats_md, stats_csv = stats_tables(data, stats_reference)
    outputs = {
        f"{spec.name}.csv": render.tidy_csv(data),
        f"{spec.name}.md": render.markdown(data),
        f"{spec.name}.tex": latex.table_tex(data),
        f"{spec.name}.sources.csv": render.sources_csv(data),
        f"{spec.name}.compare.md": render.compare_markdown(data),
        f"{spec.name}.stats.md": stats_md,       # paired per-image statistics against a reference row
        f"{spec.name}.stats.csv": stats_csv,
    }
    for name, text in outputs.items():
        write_text(out / name, text)
    return [out / n for n in outputs], data


def write_study(spec, votes: Path, out: Path, columns: dict[str, str] | None = None,
                allow_duplicates: bool = False) -> list[Path]:
    """Analyse a vote file and write table3 files; returns [csv, md, tex, stats.md, stats.json]."""
    from ..fsutil import write_text
    from .table3 import Study

    study = Study(spec, votes, columns, allow_duplicates)
    outputs = {
        f"{spec.name}.csv": study.csv(),
        f"{spec.name}.md": study.markdown(),
        f"{spec.name}.tex": study.tex(),
        f"{spec.name}.stats.md": study.stats_markdown(),
        f"{spec.name}.stats.json": study.stats_json(),
    }
    for name, text in outputs.items():
        write_text(out / name, text)
    return [out / n for n in outputs]
