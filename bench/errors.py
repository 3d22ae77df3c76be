"""One error type for everything a user can get wrong.

The CLI prints ``BenchError`` as a single line on stderr and exits non-zero; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import difflib


class BenchError(Exception):
    """A user-facing failure: bad input, a missing file, an unknown name."""

    exit_code = 2


def unknown_name(kind: str, name: str, known: list[str]) -> BenchError:
    """``unknown method 'zerodce'; did you mean 'zero-dce'?`` (or the full list when nothing is close)."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    if close:
        hint = "did you mean " + " or ".join(repr(c) for c in close) + "?"
    else:
        hint = "known: " + ", ".join(sorted(known))
    return BenchError(f"unknown {kind} {name!r}; {hint}")
