"""``python -m bench.study create|serve|status|export ...``: the same as ``bench study ...``."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..errors import BenchError
from . import register


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="cmd", required=True)
    register(sub)
    args = parser.parse_args(["study", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.fn(args)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
