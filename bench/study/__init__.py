"""``bench study create|serve|status|export``: a blind forced-choice user study (the paper's Table 3).

Modules:

- :mod:`bench.study.create` -- completed runs → a study folder (trials, images under opaque names);
- :mod:`bench.study.store`  -- the SQLite (WAL) vote store: raters, their drawn orders, one vote per trial;
- :mod:`bench.study.server` -- the web app (Starlette + uvicorn) and its strict JSON API;
- :mod:`bench.study.guard`  -- the app's hardening against hostile clients (hosts, origins, hang-ups, timeouts);
- :mod:`bench.study.export` -- progress, and the votes CSV that ``bench report table3 --votes`` reads;
- :mod:`bench.study.votes`  -- reading such a votes CSV (any tool's) into votes for :mod:`bench.study_stats`.

The web app needs the ``study`` extra (``pip install -e '.[study]'``: starlette, uvicorn). Heavy imports happen
inside :func:`cmd_study`, so registering the command is cheap.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from ..errors import BenchError
from ..subcommand import add_subcommand

EPILOG = """\
examples:
  bench study create pilot --runs results/runs/demo/lime/<id> results/runs/demo/eff/<id> --seed 1
  bench study create paper --runs R1 R2 R3 R4 --categories cats.csv --per-category 10 --with-input
  bench study serve pilot                      # http://127.0.0.1:8000/ ; raters join as expert or amateur
  bench study status pilot
  bench study export pilot                     # results/studies/pilot/votes.csv, votes.table3.yaml
  bench report table3 --votes results/studies/pilot/votes.csv --spec results/studies/pilot/votes.table3.yaml

A study folder is results/studies/NAME (study.json, img/ with opaque names, votes.sqlite). Raters see one
trial per page: the methods' outputs side by side in an order drawn per rater and recorded with the vote;
method names never appear in the page, its URLs or its file names."""


def register(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """Add the ``study`` sub-command to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = add_subcommand(subparsers, "study", parents, help="blind forced-choice user study (Table 3): create, serve, status, "
             "export", description="Run a user study like the paper's Table 3 on your own runs: build it from "
             "completed runs,\nserve it to raters in a browser, follow progress, export the votes.",
             epilog=EPILOG, formatter_class=fmt)
    sub = p.add_subparsers(dest="study_cmd", required=True)
    c = add_subcommand(sub, "create", parents, help="build a study from completed runs of one dataset", formatter_class=fmt,
             epilog="example:\n  bench study create pilot --runs RUN_DIR RUN_DIR RUN_DIR --images 20 --seed 1")
    c.add_argument("name", help="study name (letters, digits, '.', '_', '-')")
    c.add_argument("--runs", nargs="+", type=Path, required=True, metavar="RUN_DIR",
                   help="2 to 4 complete run directories of one dataset and split, one per method")
    c.add_argument("--images", type=int, metavar="N", help="a seeded random N of the images (default: all)")
    c.add_argument("--per-category", type=int, metavar="K", help="K images of every category (needs --categories)")
    c.add_argument("--categories", type=Path, metavar="CSV", help="id,category per image (else category 'all')")
    c.add_argument("--seed", type=int, default=0, help="seeds the image choice and every rater's orders")
    c.add_argument("--with-input", action="store_true", help="raters may view the under-exposed input")
    c.add_argument("--groups", nargs="+", default=["expert", "amateur"], metavar="GROUP",
                   help="rater groups offered at join (default: expert amateur)")
    c.add_argument("--title", help="the question shown to raters")
    s = add_subcommand(sub, "serve", parents, help="serve the study to raters (a web app; loopback by default)",
             formatter_class=fmt, epilog="examples:\n  bench study serve pilot\n  bench study serve pilot "
             "--host 0.0.0.0 --port 8080   # reachable from the network: plain HTTP\n  bench study serve pilot "
             "--host 0.0.0.0 --allow-host study.lab.example   # raters use that name\n\nOnly requests for the "
             "hosts served on are answered (a DNS-rebinding page is refused), writes\nfrom another Origin get "
             "403; stalled requests time out (--request-timeout) and at most\n--max-connections are held.")
    s.add_argument("name")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed)")
    s.add_argument("--max-raters", type=int, default=1000, help="refuse joins beyond this many raters")
    s.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also answer requests for this Host name (a DNS name or a proxy's host; repeatable); "
                        "by default only the address served on (and for loopback or 0.0.0.0 the machine's names)")
    s.add_argument("--request-timeout", type=float, default=10.0, metavar="S",
                   help="seconds a client has to send a request's headers, and again its body (default 10)")
    s.add_argument("--max-connections", type=int, default=200, metavar="N",
                   help="connections held at once; more are answered 503 (default 200)")
    st = add_subcommand(sub, "status", parents, help="raters, votes and completion of a study", formatter_class=fmt,
              epilog="example:\n  bench study status pilot")
    st.add_argument("name")
    st.add_argument("--format", choices=["table", "json"], default="table")
    e = add_subcommand(sub, "export", parents, help="write the votes CSV for `bench report table3 --votes`",
             formatter_class=fmt, epilog="example:\n  bench study export pilot --out votes.csv")
    e.add_argument("name")
    e.add_argument("--out", type=Path, metavar="FILE", help="CSV path (default: <study>/votes.csv)")
    p.set_defaults(fn=cmd_study)
    return p


def cmd_study(args: argparse.Namespace) -> int:
    cmd = args.study_cmd
    if cmd == "create":
        from .create import create_study

        if args.per_category is not None and not args.categories:
            raise BenchError("--per-category needs --categories FILE (id,category)")
        path, notes = create_study(args.name, args.runs, images=args.images, per_category=args.per_category,
                                   seed=args.seed, with_input=args.with_input, categories=args.categories,
                                   groups=args.groups, title=args.title)
        for n in notes:
            print(f"bench: note: {n}")
        doc = json.loads((path / "study.json").read_text(encoding="utf-8"))
        print(f"created study {doc['name']}: {len(doc['trials'])} trials x {len(doc['methods'])} methods "
              f"({', '.join(m['name'] for m in doc['methods'])}) on {doc['dataset']}:{doc['split']} in {path}")
        print(f"next: bench study serve {doc['name']}")
        return 0
    if cmd == "serve":
        try:
            from .server import serve
        except ImportError as e:
            raise BenchError(f"the study web app needs starlette and uvicorn ({e.name} is missing): "
                             "pip install -e '.[study]'") from None
        if not 0 <= args.port <= 65535:
            raise BenchError("--port must be 0..65535")
        serve(args.name, args.host, args.port, args.max_raters, args.allow_host, args.request_timeout,
              args.max_connections)
        return 0
    if cmd == "status":
        from .export import status, status_text

        st = status(args.name)
        print(json.dumps(st, indent=2) if args.format == "json" else status_text(st), end="\n" if
              args.format == "json" else "")
        return 0
    if cmd == "export":
        from .export import export

        csv_path, spec_path, n = export(args.name, args.out)
        print(f"wrote {n} votes to {csv_path} and the Table 3 spec {spec_path}")
        print(f"next: bench report table3 --votes {csv_path} --spec {spec_path}")
        return 0
    raise BenchError(f"unknown study command {cmd!r}")  # pragma: no cover
