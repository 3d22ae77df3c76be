"""Adding a sub-command to ``bench``'s parser from the module that owns it."""

from __future__ import annotations

import argparse
from typing import Any, Sequence


def add_subcommand(subparsers: Any, name: str, parents: Sequence[argparse.ArgumentParser] = (),
                   **kw: Any) -> argparse.ArgumentParser:
    """``subparsers.add_parser(name, parents=parents, **kw)``. bench/cli.py wraps ``add_parser`` so that it
    passes its own parents (-q) already, and that wrapper refuses a second ``parents`` (TypeError): the
    parser is then made without them."""
    if parents:
        try:
            return subparsers.add_parser(name, parents=list(parents), **kw)
        except TypeError:
            pass
    return subparsers.add_parser(name, **kw)
