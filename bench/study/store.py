"""The vote store: one SQLite file per study (``votes.sqlite``, WAL), safe under concurrent raters.

Tables:

- ``raters``: one row per rater who joined; ``id`` is the join order (exported as ``r0001``...), the token is
  kept only as its sha256, ``grp`` the rater group, ``seed`` the seed of the rater's orders.
- ``assignments``: the rater's trials, drawn at join time and never changed: ``position`` (0-based place in the
  rater's order), ``trial``, ``shown`` (JSON list of method names, left to right as displayed) and
  ``first_shown_at`` (when the trial was first sent to the rater's browser).
- ``votes``: at most one per (rater, trial) -- the primary key enforces it -- with the display position chosen,
  the method behind it, the display order, the server time of the vote and the browser's decision time. A vote
  is accepted only for the trial the server last showed the rater (the first without a vote, once sent by
  :meth:`Store.next_trial`), never for one the rater has not seen.

Every write is one ``BEGIN IMMEDIATE`` transaction on one connection guarded by a lock, so a vote is either
stored whole or not at all, and two requests can never both store a vote on the same trial.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from ..errors import BenchError
from ..fsutil import canonical_hash

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS raters (
    id INTEGER PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    grp TEXT NOT NULL,
    seed INTEGER NOT NULL,
    joined_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS assignments (
    rater_id INTEGER NOT NULL REFERENCES raters(id),
    position INTEGER NOT NULL,
    trial TEXT NOT NULL,
    shown TEXT NOT NULL,
    first_shown_at TEXT,
    PRIMARY KEY (rater_id, position),
    UNIQUE (rater_id, trial)
);
CREATE TABLE IF NOT EXISTS votes (
    rater_id INTEGER NOT NULL,
    trial TEXT NOT NULL,
    choice INTEGER NOT NULL,
    chosen TEXT NOT NULL,
    shown TEXT NOT NULL,
    voted_at TEXT NOT NULL,
    decision_ms INTEGER,
    PRIMARY KEY (rater_id, trial),
    FOREIGN KEY (rater_id, trial) REFERENCES assignments(rater_id, trial)
);
"""


class VoteRejected(Exception):
    """A vote the store refuses; ``status`` is the HTTP status the server answers with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def rater_label(rater_id: int) -> str:
    return f"r{rater_id:04d}"


def rater_orders(study_seed: int, rater_id: int, trials: Sequence[str], methods: Sequence[str]
                 ) -> tuple[int, list[tuple[str, list[str]]]]:
    """The rater's seeded trial order and, per trial, the left-to-right order of the methods."""
    seed = int(canonical_hash(["bench-study", study_seed, rater_id])[:15], 16)  # fits SQLite INTEGER
    rng = random.Random(seed)
    order = list(trials)
    rng.shuffle(order)
    out = []
    for t in order:
        shown = list(methods)
        rng.shuffle(shown)
        out.append((t, shown))
    return seed, out


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        if not path.exists():
            raise BenchError(f"no vote database {path}; has the study been served yet?")
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, isolation_level=None)
    else:
        con = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
    con.execute("PRAGMA busy_timeout=30000")
    con.execute("PRAGMA foreign_keys=ON")
    con.row_factory = sqlite3.Row
    return con


class Store:
    """The server's handle on ``votes.sqlite``: joins, the next trial, votes."""

    def __init__(self, path: Path, study_seed: int, trials: Sequence[str], methods: Sequence[str]):
        self.path = Path(path)
        self.seed = int(study_seed)
        self.trials = list(trials)
        self.methods = list(methods)
        self._lock = threading.Lock()
        self.con = connect(self.path)
        with self._lock:
            self.con.executescript(SCHEMA)
            self.con.execute("INSERT OR IGNORE INTO meta VALUES ('schema', '1')")

    def close(self) -> None:
        with self._lock:
            self.con.close()

    # --- raters ---------------------------------------------------------------------------------------------
    def n_raters(self) -> int:
        with self._lock:
            return int(self.con.execute("SELECT COUNT(*) FROM raters").fetchone()[0])

    def join(self, token: str, group: str, max_raters: int | None = None) -> int:
        """Register a rater with a fresh token and draw the rater's orders; returns the rater id.

        ``max_raters`` is checked inside the same ``BEGIN IMMEDIATE`` transaction as the insert, so concurrent
        joins -- from one server or from several on the same study -- never admit more (VoteRejected 403).
        """
        with self._lock:
            con = self.con
            con.execute("BEGIN IMMEDIATE")
            try:
                if max_raters is not None:
                    n = int(con.execute("SELECT COUNT(*) FROM raters").fetchone()[0])
                    if n >= max_raters:
                        raise VoteRejected(403, "this study has all the raters it needs")
                cur = con.execute("INSERT INTO raters (token_sha256, grp, seed, joined_at) VALUES (?, ?, 0, ?)",
                                  (token_hash(token), group, now_iso()))
                rid = int(cur.lastrowid)
                seed, orders = rater_orders(self.seed, rid, self.trials, self.methods)
                con.execute("UPDATE raters SET seed = ? WHERE id = ?", (seed, rid))
                con.executemany("INSERT INTO assignments (rater_id, position, trial, shown) VALUES (?, ?, ?, ?)",
                                [(rid, i, t, json.dumps(shown)) for i, (t, shown) in enumerate(orders)])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return rid

    def rater(self, token: str) -> sqlite3.Row | None:
        with self._lock:
            return self.con.execute("SELECT id, grp FROM raters WHERE token_sha256 = ?",
                                    (token_hash(token),)).fetchone()

    # --- trials ---------------------------------------------------------------------------------------------
    def next_trial(self, rater_id: int) -> dict[str, Any]:
        """The rater's first trial without a vote (marking when it was first shown), with progress."""
        with self._lock:
            con = self.con
            total = con.execute("SELECT COUNT(*) FROM assignments WHERE rater_id = ?", (rater_id,)).fetchone()[0]
            done = con.execute("SELECT COUNT(*) FROM votes WHERE rater_id = ?", (rater_id,)).fetchone()[0]
            row = con.execute(
                "SELECT a.position, a.trial, a.shown, a.first_shown_at FROM assignments a "
                "LEFT JOIN votes v ON v.rater_id = a.rater_id AND v.trial = a.trial "
                "WHERE a.rater_id = ? AND v.trial IS NULL ORDER BY a.position LIMIT 1", (rater_id,)).fetchone()
            if row is not None and row["first_shown_at"] is None:
                con.execute("UPDATE assignments SET first_shown_at = ? WHERE rater_id = ? AND position = ?",
                            (now_iso(), rater_id, row["position"]))
        out: dict[str, Any] = {"done": int(done), "total": int(total), "trial": None}
        if row is not None:
            out.update(trial=row["trial"], position=int(row["position"]), shown=json.loads(row["shown"]))
        return out

    def vote(self, rater_id: int, trial: str, choice: int, decision_ms: int | None) -> str:
        """Store one vote, all checks inside one transaction; returns the chosen method. Raises VoteRejected."""
        with self._lock:
            con = self.con
            con.execute("BEGIN IMMEDIATE")
            try:
                row = con.execute("SELECT shown FROM assignments WHERE rater_id = ? AND trial = ?",
                                  (rater_id, trial)).fetchone()
                if row is None:
                    raise VoteRejected(404, "this trial is not assigned to you")
                if con.execute("SELECT 1 FROM votes WHERE rater_id = ? AND trial = ?", (rater_id, trial)).fetchone():
                    raise VoteRejected(409, "you already voted on this trial")
                # only the trial the server last showed this rater: the first one without a vote, once sent
                current = con.execute(
                    "SELECT a.trial, a.first_shown_at FROM assignments a LEFT JOIN votes v ON v.rater_id = "
                    "a.rater_id AND v.trial = a.trial WHERE a.rater_id = ? AND v.trial IS NULL ORDER BY a.position "
                    "LIMIT 1", (rater_id,)).fetchone()
                if current is None or current["trial"] != trial or current["first_shown_at"] is None:
                    raise VoteRejected(409, "this is not the photo you were shown; reload the page")
                shown = json.loads(row["shown"])
                if not 0 <= choice < len(shown):
                    raise VoteRejected(422, f"no candidate at position {choice}; this trial has {len(shown)}")
                try:
                    con.execute("INSERT INTO votes (rater_id, trial, choice, chosen, shown, voted_at, decision_ms) "
                                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                                (rater_id, trial, choice, shown[choice], row["shown"], now_iso(), decision_ms))
                except sqlite3.IntegrityError:
                    raise VoteRejected(409, "you already voted on this trial") from None
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return shown[choice]


# --- reading a study's votes (status, export) -----------------------------------------------------------------
def read_all(path: Path) -> tuple[list[sqlite3.Row], list[sqlite3.Row], list[sqlite3.Row]]:
    """(raters, assignments, votes) from a study's database, read-only (works while the server runs)."""
    con = connect(path, readonly=True)
    try:
        con.execute("BEGIN")
        raters = con.execute("SELECT id, grp, joined_at FROM raters ORDER BY id").fetchall()
        assignments = con.execute("SELECT rater_id, position, trial, shown, first_shown_at FROM assignments "
                                  "ORDER BY rater_id, position").fetchall()
        votes = con.execute("SELECT rater_id, trial, choice, chosen, shown, voted_at, decision_ms FROM votes "
                            "ORDER BY rater_id").fetchall()
        con.execute("COMMIT")
    except sqlite3.DatabaseError as e:
        raise BenchError(f"cannot read {path}: {e}") from None
    finally:
        con.close()
    return raters, assignments, votes
