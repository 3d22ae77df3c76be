"""The votes CSV of a forced-choice user study, read into :class:`Vote` records (:func:`read_votes`).

The file comes from ``bench study export`` or from another tool's or a spreadsheet's export, so reading it is
lenient about form and strict about content: the encoding is checked (UTF-8 with or without a BOM; UTF-16,
Latin-1 and NUL bytes are refused by name, with the fix), the delimiter is sniffed from the header row, column
names are case-insensitive and can be mapped (``--columns``), the ``shown`` lists accept a few separators, and an
empty file, a missing column, an unknown method, exact duplicate rows or a rater in two groups are one-line
errors (naming the line where there is one). The statistics on the votes are in :mod:`bench.study_stats`.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import BenchError, unknown_name

REQUIRED = ("rater", "rater_group", "image", "chosen")
COLUMNS = ("rater", "rater_group", "image", "category", "shown", "chosen")
DELIMITERS = (",", ";", "\t")
SHOWN_SEPARATORS = ("|", ";", ",", "/")  # "|" is the documented one; the others are accepted too
DUPLICATES_COUNTED = "exact duplicate vote row(s) counted (--allow-duplicates)"


@dataclass(frozen=True)
class Vote:
    rater: str
    group: str
    image: str
    category: str
    shown: tuple[str, ...]
    chosen: str


def parse_columns(items: Sequence[str] | None) -> dict[str, str]:
    """``--columns rater=participant,chosen=choice`` (comma- or space-separated) → {standard name: file column}."""
    out: dict[str, str] = {}
    for item in items or []:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            std, eq, name = part.partition("=")
            std, name = std.strip().lower(), name.strip()
            if not eq or not std or not name:
                raise BenchError(f"--columns {part!r}: give STANDARD=NAME, e.g. rater=participant "
                                 f"(standard names: {', '.join(COLUMNS)})")
            if std not in COLUMNS:
                raise BenchError(f"--columns: {unknown_name('column', std, list(COLUMNS))}")
            if std in out and out[std] != name:
                raise BenchError(f"--columns: {std} is mapped twice ({out[std]!r}, {name!r})")
            out[std] = name
    return out


def _decode(raw: bytes, path: Path) -> str:
    """The vote file's text: UTF-8, with or without a BOM; anything else is a one-line error naming the problem."""
    fix = "save it as UTF-8 (\"CSV UTF-8\" in a spreadsheet program)"
    if raw.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        raise BenchError(f"vote file {path} is UTF-32 text, not UTF-8; {fix}")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise BenchError(f"vote file {path} is UTF-16 text (as \"Unicode text\" exports are), not UTF-8; {fix}, "
                         f"e.g. iconv -f UTF-16 -t UTF-8")
    if b"\x00" in raw[:4096]:
        head = raw[:4096]
        even, odd = head[0::2].count(0), head[1::2].count(0)
        if max(even, odd) > len(head) // 4:
            raise BenchError(f"vote file {path} looks like UTF-16 text without a byte-order mark (every other byte "
                             f"is zero), not UTF-8; {fix}, e.g. iconv -f UTF-16 -t UTF-8")
        raise BenchError(f"vote file {path} contains NUL bytes: it is not a text CSV file")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        byte = raw[e.start]
        try:
            raw.decode("cp1252")
            guess = ("; it looks like Latin-1/Windows-1252 (as some spreadsheet programs save CSV): "
                     f"{fix}, e.g. iconv -f cp1252 -t UTF-8")
        except UnicodeDecodeError:
            guess = f"; {fix}"
        raise BenchError(f"vote file {path} is not UTF-8: byte 0x{byte:02X} on line {line}{guess}") from None


def _sniff(header: str, wanted: set[str]) -> tuple[str, list[str]]:
    """The delimiter (``,``, ``;`` or tab) under which the header row names the most wanted columns."""
    best = None
    for d in DELIMITERS:
        fields = next(csv.reader([header], delimiter=d), [])
        score = (sum(f.strip().lower() in wanted for f in fields), len(fields))
        if best is None or score > best[0]:
            best = (score, d, fields)
    assert best is not None
    return best[1], best[2]


def _split_shown(text: str) -> list[str] | str:
    """``shown`` → its items, or the reason it does not parse."""
    used = [s for s in SHOWN_SEPARATORS if s in text]
    if len(used) > 1:
        return f"mixes the separators {' '.join(repr(u) for u in used)}"
    items = [x.strip() for x in text.split(used[0])] if used else [text.strip()]
    if any(not x for x in items):
        return "has an empty item"
    return items


def read_votes(path: str | Path, methods: Sequence[str], method_aliases: dict[str, str] | None = None,
               group_aliases: dict[str, str] | None = None, columns: dict[str, str] | None = None,
               allow_duplicates: bool = False) -> tuple[list[Vote], list[str]]:
    """Votes from a CSV (rater, rater_group, image, category, shown, chosen) and notes about the file.

    The file is UTF-8 (a BOM is fine); other encodings (UTF-16, Latin-1/Windows-1252) are refused by name. The
    delimiter is sniffed from the header row: ``,``, ``;`` or tab. Column names are case-insensitive;
    ``columns`` maps a standard name to the file's own (``{"rater": "participant"}``, ``--columns``).
    ``shown`` lists the methods shown in display order, separated by "|" (``;``, ``,`` or ``/`` are accepted
    too); a file without the column is read as "all ``methods`` shown" (noted). Method and group names are
    case-insensitive and go through the alias maps; an unknown method name is an error with a "did you mean".
    Exact duplicate rows (every field equal, e.g. a pasted block) are refused unless ``allow_duplicates``,
    which counts them and says how many in a note.
    """
    path = Path(path)
    if path.is_dir():
        raise BenchError(f"vote file {path} is a folder; give the CSV file itself (e.g. {path / 'votes.csv'})")
    if not path.exists():
        raise BenchError(f"vote file {path} not found")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise BenchError(f"cannot read vote file {path}: {e.strerror or e}") from None
    text = _decode(raw, path)
    if not text.strip():
        raise BenchError(f"vote file {path} is empty: expected a header row (rater, rater_group, image, category, "
                         f"shown, chosen) and one row per vote")
    m_alias = {k.lower(): v for k, v in (method_aliases or {}).items()}
    g_alias = {k.lower(): v for k, v in (group_aliases or {}).items()}
    known = list(methods)
    columns = dict(columns or {})

    def method(name: str, lineno: int) -> str:
        key = name.strip()
        key = m_alias.get(key.lower(), key.lower())
        if key not in known:
            err = unknown_name("method", key, known)
            raise BenchError(f"{path}:{lineno}: {err}")
        return key

    lines = text.splitlines(keepends=True)
    while not lines[0].strip():  # leading blank lines: the header is the first non-empty one
        lines.pop(0)
    text = "".join(lines)
    header = lines[0]
    wanted = {c for c in COLUMNS if c not in columns} | {v.strip().lower() for v in columns.values()}
    delim, _ = _sniff(header, wanted)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delim)
    fields = [f for f in reader.fieldnames or []]
    by_lower = {f.strip().lower(): f for f in reversed(fields)}
    col: dict[str, str] = {}
    for std in COLUMNS:
        if std in columns:
            name = columns[std]
            if name.strip().lower() not in by_lower:
                raise BenchError(f"{path}: --columns {std}={name}: the file has no column {name!r} (columns: "
                                 f"{', '.join(f.strip() for f in fields)})")
            col[std] = by_lower[name.strip().lower()]
        elif std in by_lower:
            col[std] = by_lower[std]
    missing = [c for c in REQUIRED if c not in col]
    if missing:
        shown_delim = {",": "','", ";": "';'", "\t": "tab"}[delim]
        raise BenchError(f"{path}: missing column(s) {', '.join(missing)}; expected rater, rater_group, image, "
                         f"category, shown, chosen (the header row, split at {shown_delim}, has: "
                         f"{', '.join(f.strip() for f in fields)[:200]}); map other names with --columns "
                         f"{missing[0]}=NAME")
    notes: list[str] = []
    if delim != ",":
        notes.append(f"fields separated by {'tab' if delim == chr(9) else repr(delim)}")
    if "shown" not in col:
        notes.append(f"no 'shown' column: every trial is taken to show all of {', '.join(known)}")
    expected_sep = (f"list the methods shown separated by '|' (also accepted: "
                    f"{', '.join(repr(s) for s in SHOWN_SEPARATORS[1:])})")
    votes = []
    seen_rows: dict[tuple, int] = {}
    dup_rows: list[tuple[int, int]] = []
    rows = 0
    for raw_row in reader:
        lineno = reader.line_num
        r = {k.strip(): (v if isinstance(v, str) else "").strip() for k, v in raw_row.items() if k}
        if not any(r.values()):
            continue
        rows += 1
        key = tuple(sorted(r.items())) + tuple(raw_row.get(None) or ())
        if key in seen_rows:
            dup_rows.append((lineno, seen_rows[key]))
            if not allow_duplicates:
                continue
        else:
            seen_rows[key] = lineno
        get = lambda std: r.get(col[std].strip(), "") if std in col else ""  # noqa: E731
        shown_text = get("shown")
        if shown_text:
            items = _split_shown(shown_text)
            if isinstance(items, str):
                raise BenchError(f"{path}:{lineno}: shown {shown_text!r} {items}; {expected_sep}")
            shown_list = []
            for item in items:
                try:
                    shown_list.append(method(item, lineno))
                except BenchError as e:  # one unknown "name" that is really a list, or odd punctuation
                    odd = len(items) == 1 or any(not (ch.isalnum() or ch in "._-") for ch in item)
                    raise BenchError(f"{e} (in shown {shown_text!r}){'; ' + expected_sep if odd else ''}") from None
            shown = tuple(shown_list)
        else:
            shown = tuple(known)
        if len(set(shown)) != len(shown):
            raise BenchError(f"{path}:{lineno}: a method is shown twice: {shown_text}")
        chosen = method(get("chosen"), lineno)
        if chosen not in shown:
            raise BenchError(f"{path}:{lineno}: chosen {chosen!r} was not among those shown ({'|'.join(shown)})")
        grp = get("rater_group")
        group = g_alias.get(grp.lower(), grp.lower())
        votes.append(Vote(get("rater"), group, get("image"), get("category") or "(none)", shown, chosen))
    if dup_rows:
        if not allow_duplicates:
            (line, first), = dup_rows[:1]
            raise BenchError(f"{path}: {len(dup_rows)} exact duplicate vote row(s) (e.g. line {line} repeats line "
                             f"{first}); remove them, or count them with --allow-duplicates")
        notes.append(f"{len(dup_rows)} {DUPLICATES_COUNTED}")
    if not votes:
        raise BenchError(f"{path}: a header row but no votes")
    groups_of = defaultdict(set)
    for v in votes:
        groups_of[v.rater].add(v.group)
    both = sorted(r for r, g in groups_of.items() if len(g) > 1)
    if both:
        raise BenchError(f"{path}: rater(s) in more than one group: {', '.join(both[:5])}")
    dup = Counter((v.rater, v.image) for v in votes)
    repeats = sum(c - 1 for c in dup.values() if c > 1)
    if repeats:
        notes.append(f"{repeats} repeated (rater, image) trial(s); every trial counts as a vote")
    return votes, notes
