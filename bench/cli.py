"""The ``bench`` command line: thin wrappers, the logic lives in the modules they call."""

from __future__ import annotations

import argparse
import csv
import io
import signal
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import BenchError, unknown_name


class _Parser(argparse.ArgumentParser):
    """argparse, but an unknown sub-command or choice gets "did you mean" and a one-line error."""

    def error(self, message: str) -> None:  # noqa: D401
        import re

        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            known = re.findall(r"'([^']*)'", m.group(2)) or [s.strip() for s in m.group(2).split(",")]
            message = str(unknown_name("command" if self.prog.count(" ") < 2 else "choice", m.group(1), known))
        self.exit(2, f"{self.prog}: error: {message}\n")


def _table(rows: list[dict[str, Any]], fmt: str = "table") -> str:
    if not rows:
        return "(none)"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue().rstrip("\n")
    from tabulate import tabulate

    return tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True)


# --- ls --------------------------------------------------------------------------------------------
def cmd_ls(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    if args.what == "methods":
        from .methods.catalog import REBUILD, listing

        found, measured = listing()
        for r in found:
            rows.append({**r, "trainable": "yes" if r["trainable"] else "no"})
        if measured:
            print(f"bench: note: {', '.join(measured)} not in bench/methods/catalog.json, counted now; "
                  f"`{REBUILD}` records them", file=sys.stderr)
    elif args.what == "datasets":
        from .data.manifest import dataset_names, load_manifest, lock_path

        for name in dataset_names():
            m = load_manifest(name)
            state = "in place" if m.kind == "indexed" else ("prepared" if _prepared(m, lock_path) else "not prepared")
            rows.append({"name": name, "kind": m.kind, "paired": "yes" if m.paired else "no",
                         "splits": " ".join(f"{s}:{len(p)}" for s, p in m.splits.items()), "state": state,
                         "description": m.description})
    else:
        from .metrics import METRICS

        for mt in METRICS.values():
            rows.append({"name": mt.name, "better": {True: "higher", False: "lower", None: "n/a"}[mt.higher_is_better],
                         "reference": "yes" if mt.needs_reference else "no", "default": "yes" if mt.default else "no",
                         "version": mt.version, "definition": mt.definition})
    print(_table(rows, args.format))
    return 0


def _prepared(m, lock_path) -> bool:
    if m.kind in ("lock", "distorted", "demo"):
        return lock_path(m).exists()
    return any(m.file_path(p.low).exists() for ps in m.splits.values() for p in ps[:1])


# --- data ------------------------------------------------------------------------------------------
def cmd_data(args: argparse.Namespace) -> int:
    from .data.manifest import damaged_hint, load_manifest, locked, verify_pairs

    if args.data_cmd == "prepare":
        from .data.prepare import prepare

        report = prepare(args.name, args.root, args.split, args.partial, args.jobs, progress=not args.quiet)
        print("\n".join(report.lines()))
        return 0
    if args.data_cmd == "index":
        from .data.index import index_folder

        report = index_folder(args.name, args.low, args.high, args.train_fraction, args.val_fraction, args.seed,
                              progress=not args.quiet)
        for line in report.skipped_lines():
            print(line, file=sys.stderr)
        print(f"indexed {args.name}: " + ", ".join(f"{s} {n}" for s, n in report.splits.items())
              + f"; manifest {report.root}")
        return 0
    m = load_manifest(args.name)
    if args.data_cmd == "verify":
        lm = locked(m)
        bad = 0
        first: list[str] = []
        for split in ([args.split] if args.split else list(lm.splits)):
            pairs = lm.split(split)
            problems = verify_pairs(lm, pairs, progress=not args.quiet)
            missing = sum("missing" in p for p in problems)
            if problems and missing == len(problems) and missing >= len(pairs) and not args.split:
                print(f"{split}: not prepared ({len(pairs)} pairs)")
                continue
            bad += len(problems)
            first += problems[: max(0, 2 - len(first))]
            status = "ok" if not problems else f"{len(problems)} problem(s): " + "; ".join(problems[:5])
            print(f"{split}: {len(pairs)} pairs, {status}, fingerprint {lm.fingerprint(split)[:16]}")
        if bad:
            more = f" and {bad - len(first)} more" if bad > len(first) else ""
            raise BenchError(f"{m.name}: {bad} file(s) missing or altered ({'; '.join(first)}{more}); "
                             f"{damaged_hint(lm)}")
        return 0
    # show
    print(f"name:        {m.name} (version {m.version}, {m.kind})")
    print(f"description: {m.description}")
    print(f"paired:      {'yes' if m.paired else 'no (no-reference metrics only)'}")
    print(f"files:       {m.root}")
    if m.split_rule:
        print(f"split rule:  {m.split_rule}")
    for key in ("how_to_get", "resolution_rule", "gt_format", "fivek_input_mode"):
        if m.source.get(key):
            print(f"{key + ':':<18}{m.source[key]}")
    for split, pairs in m.splits.items():
        ids = [p.id for p in pairs]
        shown = ", ".join(ids[:8]) + (f", ... ({len(ids)} in all)" if len(ids) > 8 else "")
        print(f"split {split}: {len(pairs)} pairs, fingerprint {m.fingerprint(split)[:16]}: {shown}")
    return 0


# --- run / eval ------------------------------------------------------------------------------------
def _parse_sets(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BenchError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _metrics_table(rows: list[dict[str, Any]]) -> str:
    def num(x: str, digits: int) -> str:
        try:
            return f"{float(x):.{digits}f}"
        except ValueError:
            return x

    return _table([{"metric": r["metric"], "mean": num(r["mean"], 4), "std": num(r["std"], 4), "n": r["n"]}
                   for r in rows])


def cmd_run(args: argparse.Namespace) -> int:
    from .run import RunSpec, execute
    from .tiling import parse_tile_option

    spec = RunSpec(method=args.method, dataset=args.dataset, split=args.split, profile=args.profile, seed=args.seed,
                   overrides=_parse_sets(args.set), weights=args.weights, limit=args.limit, device=args.device,
                   force=args.force, metrics=args.metrics, progress=not args.quiet,
                   tile=parse_tile_option(args.tile, args.tile_overlap, args.max_pixels), quantize=args.quantize)
    result = execute(spec)
    print(f"run directory: {result.run_dir}" + ("  (complete run reused; --force to redo)" if result.reused else ""))
    print(_metrics_table(result.metrics))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .distributed import init_from_env
    from .run import RunSpec, train_only

    dist = init_from_env(args.device)  # under torchrun: one process per GPU (nccl) or CPU process (gloo)
    try:
        spec = RunSpec(method=args.method, dataset=args.dataset, profile=args.profile, seed=args.seed,
                       overrides=_parse_sets(args.set), device=args.device,
                       progress=not args.quiet and dist.is_main())
        ckpt, info = train_only(spec)
        if dist.is_main():
            print(f"checkpoint: {ckpt}  (sha256 {info['sha256'][:16]}…, {info.get('state', 'trained')})")
    finally:
        dist.close()
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import rescore

    rows = rescore(args.run_dir, args.metrics, progress=not args.quiet)
    print(f"re-scored {args.run_dir}")
    print(_metrics_table(rows))
    return 0


# `bench perf WHAT` -> "module:function(args) -> int", imported only when that benchmark runs
PERF = {
    "metrics": "bench.perf:run_perf",
    "dsn": "bench.perf_dsn:run_perf_dsn",
    "dsn-memory": "bench.perf_dsn_memory:run_perf_dsn_memory",
    "gpu-bench": "bench.perf_cuda:run_gpu_bench",
    "methods": "bench.perf_methods:run_perf_methods",
}


def cmd_perf(args: argparse.Namespace) -> int:
    import importlib

    module, _, fn = PERF[args.what].partition(":")
    return getattr(importlib.import_module(module), fn)(args)


# --- parser ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = _Parser(prog="bench", description="Benchmark and reproduction harness for DSN (ICCV 2021) and its baselines.",
                formatter_class=fmt, epilog="examples:\n  bench ls methods\n  bench run --method identity --dataset demo\n"
                "  bench data prepare lol --root ~/Downloads/LOLdataset.zip")
    quiet = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a sub-command's default must not undo a -q given before it
    quiet.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    quiet.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="print the full traceback of an error (otherwise saved to a log file)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true",
                   help="print the full traceback of an error (otherwise saved to a log file)")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    _add = sub.add_parser
    sub.add_parser = lambda *a, **k: _add(*a, parents=[quiet], **k)  # every command takes -q

    ls = sub.add_parser("ls", help="list methods, datasets or metrics", formatter_class=fmt,
                        epilog="examples:\n  bench ls methods\n  bench ls datasets --format csv")
    ls.add_argument("what", choices=["methods", "datasets", "metrics"])
    ls.add_argument("--format", choices=["table", "csv"], default="table")
    ls.set_defaults(fn=cmd_ls)

    data = sub.add_parser("data", help="prepare, verify, show or index datasets", formatter_class=fmt,
                          epilog="examples:\n  bench data prepare lol-485-15 --root ~/LOLdataset --split test\n"
                          "  bench data verify lol\n  bench data index mine --low shots/low --high shots/high")
    dsub = data.add_subparsers(dest="data_cmd", required=True, parser_class=_Parser)
    _dadd = dsub.add_parser
    dsub.add_parser = lambda *a, **k: _dadd(*a, parents=[quiet], **k)
    prep = dsub.add_parser("prepare", help="check a download against a manifest and put it in place",
                           formatter_class=fmt, epilog="examples:\n  bench data prepare lol --root LOLdataset.zip\n"
                           "  bench data prepare fivek-distorted --root fivek/expertC --partial --jobs 2\n"
                           "  bench data prepare demo")
    prep.add_argument("name")
    prep.add_argument("--root", type=Path, help="the user's download: a folder or a zip")
    prep.add_argument("--split", help="prepare this split alone (e.g. test)")
    prep.add_argument("--partial", action="store_true",
                      help="FiveK only: build from the files present; runs are marked partial")
    prep.add_argument("--jobs", type=int, default=None, help="worker processes (fivek-distorted)")
    for name, helptext in (("verify", "re-hash the prepared files"), ("show", "describe a dataset and its splits")):
        sp = dsub.add_parser(name, help=helptext, formatter_class=fmt, epilog=f"example:\n  bench data {name} lol")
        sp.add_argument("name")
        if name == "verify":
            sp.add_argument("--split")
    idx = dsub.add_parser("index", help="make a dataset from your own folder of images", formatter_class=fmt,
                          epilog="examples:\n  bench data index phone --low phone/low\n"
                          "  bench data index mine --low a/low --high a/high --train-fraction 0.8 --val-fraction 0.1")
    idx.add_argument("name")
    idx.add_argument("--low", type=Path, required=True)
    idx.add_argument("--high", type=Path)
    idx.add_argument("--train-fraction", type=float, default=0.0)
    idx.add_argument("--val-fraction", type=float, default=0.0, help="fraction of train held out as val")
    idx.add_argument("--seed", type=int, default=0)
    data.set_defaults(fn=cmd_data)

    run = sub.add_parser("run", help="train if needed, enhance a split and score it", formatter_class=fmt,
                         epilog="examples:\n  bench run --method ours --dataset lol\n"
                         "  bench run --method identity --dataset lol-485-15 --split test\n"
                         "  bench run --method ours --dataset demo --profile quick --set lr=1e-4")
    run.add_argument("--method", required=True)
    run.add_argument("--dataset", required=True)
    run.add_argument("--split", default="test")
    run.add_argument("--profile", choices=["smoke", "quick", "paper"], default="paper")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a method option")
    run.add_argument("--weights", metavar="FILE|official:M",
                     help="use these weights instead of training: a file, or official:M for the official checkpoint "
                          "imported with bench weights import official --method M (official:M@ID for one import)")
    run.add_argument("--quantize", choices=["round", "truncate"], default="round",
                     help="8-bit conversion of the outputs (default round; truncate = astype(uint8), as the official "
                          "test scripts of EnlightenGAN, RetinexNet, KinD, DeepLPF and HDRNet; recorded)")
    run.add_argument("--limit", type=int, help="only the first N images (marks the run smoke)")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    run.add_argument("--force", action="store_true", help="redo a complete run")
    run.add_argument("--metrics", nargs="+", help="metric names (default: psnr ssim)")
    run.add_argument("--tile", default="auto", metavar="auto|off|N",
                     help="memory policy: whole image, tiles only if it does not fit (auto); never tile (off); "
                          "always N-pixel tiles (N)")
    run.add_argument("--tile-overlap", type=int, default=None, metavar="PX",
                     help="overlap of neighbouring tiles (default 96, or N/4 for --tile N)")
    run.add_argument("--max-pixels", type=int, default=None, metavar="P",
                     help="with --tile auto: tile (or use the CPU) for images above P pixels (default: no limit)")
    run.set_defaults(fn=cmd_run)

    tr = sub.add_parser("train", help="train a method on a dataset's train split (bench run does this when needed)",
                        formatter_class=fmt, epilog="examples:\n  bench train --method ours --dataset lol\n"
                        "  bench train --method ours --dataset demo --profile quick --seed 1")
    tr.add_argument("--method", required=True)
    tr.add_argument("--dataset", required=True)
    tr.add_argument("--profile", choices=["smoke", "quick", "paper"], default="paper")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a method option")
    tr.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    tr.set_defaults(fn=cmd_train)

    ev = sub.add_parser("eval", help="re-score a finished run, adding missing metric columns", formatter_class=fmt,
                        epilog="example:\n  bench eval results/runs/lol/identity/0123abcd4567 --metrics psnr_y ssim_y")
    ev.add_argument("run_dir", type=Path)
    ev.add_argument("--metrics", nargs="+")
    ev.set_defaults(fn=cmd_eval)

    perf = sub.add_parser("perf", help="benchmarks (not tests); results go to results/perf/", formatter_class=fmt,
                          epilog="examples:\n  bench perf metrics --pairs 100\n  bench perf dsn --device cpu --sections enhance --sizes 200x300\n"
                          "  bench perf methods                       (the cost table: results/tables/cost.*)\n"
                          "  bench perf methods --methods identity,lime,zero-dce --sizes 64x96 --runs 3")
    perf.add_argument("what", choices=list(PERF))
    perf.add_argument("--pairs", type=int, default=100)
    perf.add_argument("--jobs", type=int, default=None)
    perf.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="dsn: where to measure")
    perf.add_argument("--size", default="400x600", help="dsn: HxW of the timed enhancement")
    perf.add_argument("--crop", type=int, default=None, help="dsn: training crop side (default 180)")
    perf.add_argument("--runs", type=int, default=None, help="dsn: timed enhancement passes")
    perf.add_argument("--warmup", type=int, default=None, help="dsn: untimed passes first")
    perf.add_argument("--sections", help="dsn: comma-separated subset of enhance,train,tiling (default all)")
    perf.add_argument("--steps", type=int, default=None, help="dsn: timed training steps")
    perf.add_argument("--sizes", help="dsn, methods: comma-separated HxW sizes to time (dsn default 200x300,400x600; "
                           "methods default 400x600,256x256)")
    perf.add_argument("--mem-sizes", help="dsn: two HxW sizes for the tiled-memory section (default 400x600,1200x1800)")
    perf.add_argument("--tile", type=int, default=None, help="dsn: tile side of the memory section (default 384)")
    perf.add_argument("--overlap", type=int, default=None, help="dsn: tile overlap of the memory section (default 96)")
    perf.add_argument("--mem-blocks", type=int, default=None, help="dsn: invertible blocks of the memory-section model")
    perf.add_argument("--gap-scale", type=float, default=None, help="dsn: random conv scale of the tiling-gap model")
    perf.add_argument("--weights", help="dsn: a checkpoint of ours for the tiled-vs-whole gap (default: random)")
    perf.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto",
                      help="dsn: channels-last weights in 'ours' (auto: on CPU only, as bench run)")
    perf.add_argument("--paths", help="dsn: comma-separated subset of the enhancement paths (eager always; "
                      "e.g. eager,ours,ours_heap)")
    perf.add_argument("--methods", help="methods: comma-separated subset of the registry (default all)")
    perf.add_argument("--threads", type=int, default=None, help="methods: torch threads (default: all CPUs, at most 16)")
    perf.add_argument("--amp", choices=["off", "bf16"], default=None, help="methods: autocast for the timed passes")
    perf.add_argument("--force", action="store_true", help="methods: re-measure methods that have a result")
    perf.add_argument("--cpu-smoke", action="store_true", help="gpu-bench: toy sizes on the CPU (a smoke run, not GPU figures)")
    perf.add_argument("--budget-s", type=float, default=None, help="gpu-bench: measuring budget in seconds (default 450)")
    perf.add_argument("--accuracy-iters", type=int, default=None, help="gpu-bench: demo-set iterations per precision")
    perf.add_argument("--long-steps", type=int, default=None, help="gpu-bench: steps of the long timed run (default 1000)")
    perf.add_argument("--loss-rtol", type=float, default=None, help="gpu-bench: loss tolerance vs fp32 (default 1e-2)")
    perf.add_argument("--psnr-tol", type=float, default=None, help="gpu-bench: bf16 demo |dPSNR| tolerance (default 0.1)")
    perf.set_defaults(fn=cmd_perf)

    from .report import register as register_report

    register_report(sub, [quiet])
    from .figures import register as register_figure
    from .reproduce import register as register_reproduce

    register_reproduce(sub, [quiet])
    register_figure(sub, [quiet])
    from .weights import register as register_weights

    register_weights(sub, [quiet])
    from .study import register as register_study

    register_study(sub, [quiet])
    from .compare import register as register_compare

    register_compare(sub, [quiet])
    return p


def _write_crash_log(argv: Sequence[str] | None, text: str) -> Path | None:
    """Save a traceback under ``$BENCH_RESULTS/logs/`` (or the temp folder when that cannot be written)."""
    import os
    import tempfile
    import time

    from .paths import results_root

    name = f"bench-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    head = f"bench {' '.join(sys.argv[1:] if argv is None else list(argv))}\n"
    candidates = []
    try:
        candidates.append(results_root() / "logs")
    except Exception:  # noqa: BLE001 (a broken $BENCH_RESULTS must not hide the original error)
        pass
    candidates.append(Path(tempfile.gettempdir()))
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            with open(path, "w", encoding="utf-8") as f:
                f.write(head + text)
            return path
        except OSError:
            continue
    return None


def _unexpected(e: BaseException, argv: Sequence[str] | None) -> int:
    """The last resort: one line and a pointer to the saved traceback (a bug, or an OS failure not yet named)."""
    import traceback

    from .fsutil import os_reason

    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    log = _write_crash_log(argv, text)
    if isinstance(e, OSError):
        where = f"{e.filename}: " if e.filename else ""
        what = f"{where}{os_reason(e)}"
    else:
        what = f"unexpected {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
    where = f"traceback in {log}" if log else "the traceback could not be saved"
    print(f"bench: error: {what} ({where}; re-run with --debug to see it here)", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    if args.cmd != "perf":   # before torch allocates (bench/large_pages.py); perf starts its own workers
        from .large_pages import enable_at_startup

        enable_at_startup()
    try:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `bench ... | head` ends quietly
    except (AttributeError, ValueError):
        pass
    try:
        return args.fn(args)
    except BenchError as e:
        if debug:
            import traceback

            traceback.print_exc()
        print(f"bench: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("bench: interrupted; finished work is kept, re-run the same command to resume", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 (the last-resort handler: one line, traceback saved)
        if debug:
            raise
        return _unexpected(e, argv)


if __name__ == "__main__":
    sys.exit(main())
