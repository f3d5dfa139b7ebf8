"""The history of a few readings per UPS in SQLite: sampled, written in batches, downsampled, expired.

An SD card wears with every write, so points wait in memory and reach the disk in one
transaction every ``flush`` seconds (96 a day by default); the same transaction averages
raw points older than ``raw`` into ``bucket``-long points and drops what is older than
``keep``.  A crash loses at most the points of one flush interval.  Time is the injected
``clock`` (unix seconds), so tests run weeks of retention in a moment.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..state import UpsState
from .config import HistorySettings

log = logging.getLogger("nutups.history")

# The readings the charts show; "mains" is 1 on line power, 0 on battery (from ups.status).
TRACKED = ("battery.charge", "battery.voltage", "battery.runtime", "input.voltage", "ups.load",
           "ups.temperature", "battery.temperature")
MAINS = "mains"

SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    ups TEXT NOT NULL, var TEXT NOT NULL,
    span REAL NOT NULL,            -- 0: a raw sample; else the length of the averaged bucket
    t REAL NOT NULL, v REAL NOT NULL,
    PRIMARY KEY (ups, var, span, t)
) WITHOUT ROWID;
"""


def readings(state: UpsState) -> dict[str, float]:
    """The tracked numeric readings of a state, and mains."""
    out: dict[str, float] = {}
    for name in TRACKED:
        value = state.value(name)
        if value is None:
            continue
        try:
            out[name] = float(value)
        except ValueError:
            continue
    status = state.status_flags()
    if "OL" in status:
        out[MAINS] = 1.0
    elif "OB" in status:
        out[MAINS] = 0.0
    return out


class HistoryStore:
    """Samples readings into memory and writes them to ``path`` in batches."""

    def __init__(self, path: Path, settings: HistorySettings | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.settings = settings or HistorySettings()
        self.clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        # the flush runs in a worker thread, reads come from the loop: one lock for the connection
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.executescript(SCHEMA)
        self._pending: list[tuple[str, str, float, float, float]] = []  # (ups, var, span, t, v)
        self._last: dict[tuple[str, str], tuple[float, float]] = {}
        self.flushes = 0  # transactions written, for the wear figure

    # --- recording (on the drivers' loop) ----------------------------------------

    def observe(self, state: UpsState) -> None:
        """UpsState.on_publish listener."""
        if not state.stale:
            self.record(state.name, readings(state))

    def record(self, ups: str, values: dict[str, float], now: float | None = None) -> None:
        """Keep a point per variable at most every ``sample`` seconds; a change of mains at once."""
        now = self.clock() if now is None else now
        sample = self.settings.sample
        for var, value in values.items():
            last = self._last.get((ups, var))
            if last is None or now - last[0] >= sample or (var == MAINS and value != last[1]):
                self._last[(ups, var)] = (now, value)
                self._pending.append((ups, var, 0.0, now, value))

    # --- writing (a worker thread, every flush interval) --------------------------

    def flush(self) -> int:
        """Write the pending points, downsample and expire, in one transaction; return points written."""
        pending, self._pending = self._pending, []
        now = self.clock()
        s = self.settings
        cutoff = (now - s.raw) // s.bucket * s.bucket  # whole buckets only: each is averaged once
        with self._lock:
            db = self._db
            db.execute("BEGIN")
            try:
                db.executemany("INSERT OR REPLACE INTO points VALUES (?, ?, ?, ?, ?)", pending)
                db.execute(
                    "INSERT OR REPLACE INTO points SELECT ups, var, ?, CAST(t / ? AS INTEGER) * ?, AVG(v) "
                    "FROM points WHERE span = 0 AND t < ? GROUP BY ups, var, CAST(t / ? AS INTEGER)",
                    (s.bucket, s.bucket, s.bucket, cutoff, s.bucket))
                db.execute("DELETE FROM points WHERE span = 0 AND t < ?", (cutoff,))
                db.execute("DELETE FROM points WHERE t < ?", (now - s.keep,))
                db.execute("COMMIT")
            except sqlite3.Error:
                db.execute("ROLLBACK")
                self._pending = pending + self._pending  # try again at the next flush
                raise
        self.flushes += 1
        return len(pending)

    # --- reading (the JSON API) ----------------------------------------------------

    def query(self, ups: str, var: str, since: float | None = None, until: float | None = None,
              step: float | None = None) -> list[list[float]]:
        """[[unix_time, value], ...] oldest first, written and pending points alike;
        with ``step``, averaged per step (for long ranges on a small screen)."""
        lo = float("-inf") if since is None else since
        hi = float("inf") if until is None else until
        with self._lock:
            rows = self._db.execute("SELECT t, v FROM points WHERE ups = ? AND var = ? AND t >= ? AND t <= ? "
                                    "ORDER BY t", (ups, var, lo, hi)).fetchall()
        rows += [(t, v) for u, n, _, t, v in list(self._pending) if u == ups and n == var and lo <= t <= hi]
        if not step:
            return [[t, v] for t, v in rows]
        sums: dict[float, list[float]] = {}
        for t, v in rows:
            acc = sums.setdefault(t // step * step, [0.0, 0])
            acc[0] += v
            acc[1] += 1
        return [[t, round(total / n, 4)] for t, (total, n) in sorted(sums.items())]

    def variables(self, ups: str) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT var FROM points WHERE ups = ?", (ups,)).fetchall()
        names = {r[0] for r in rows} | {n for u, n, *_ in list(self._pending) if u == ups}
        return sorted(names)

    def close(self) -> None:
        try:
            self.flush()
        except sqlite3.Error as exc:
            log.error("history: the last points could not be written to %s: %s", self.path, exc)
        with self._lock:
            self._db.close()
