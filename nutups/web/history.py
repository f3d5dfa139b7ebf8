"""The history of a few readings per UPS in SQLite: sampled, written in batches, downsampled, expired.

An SD card wears with every write, so points wait in memory and reach the disk in one
transaction every ``flush`` seconds (96 a day by default); the same transaction averages
raw points older than ``raw`` into ``bucket``-long points and drops what is older than
``keep``.  A crash loses at most the points of one flush interval; a flush that fails (a
full disk) keeps its points for the next one, up to ``MAX_PENDING``.

Threads: points are recorded on the drivers' loop, flushes and queries run in worker
threads.  The loop never touches SQLite and never waits for a flush: the variables known
are kept in memory, queries read through their own connection (WAL: a reader never waits
for the writer), and the pending points are swapped under a lock held for no I/O.

Time: ``clock`` is the wall clock the points are stamped with, ``monotonic`` spaces the
samples.  A Pi has no RTC, so the wall clock may step (NTP's first sync, a bad RTC):
- sampling goes on across a step either way (spacing is monotonic);
- expiry runs on a timeline that follows the wall clock only while it runs steadily or is
  synchronised (``synced``): a jump alone never deletes anything;
- points still in memory when the clock steps to a synchronised time are moved by the step;
  points already written while the clock was not synchronised are marked (``unsynced``).
Queries are bounded: at most ``MAX_POINTS`` points, averaged in SQL over a step of at least
``MIN_STEP`` seconds, so one answer costs little memory and no Python loop over the rows.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..clocksync import clock_synchronised
from ..state import UpsState
from .config import HistorySettings

log = logging.getLogger("nutups.history")

# The readings the charts show; "mains" is 1 on line power, 0 on battery (from ups.status).
TRACKED = ("battery.charge", "battery.voltage", "battery.runtime", "input.voltage", "ups.load",
           "ups.temperature", "battery.temperature")
MAINS = "mains"
MAX_POINTS = 2000  # points one answer carries at most (a chart is never wider)
MIN_STEP = 1.0  # seconds: the finest averaging step a query may ask for
MAX_PENDING = 100_000  # points kept in memory while flushes fail (about 3 MB); the oldest go first
STEP_S = 5.0  # a wall-clock change this much beyond the monotonic clock's is a step

SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    ups TEXT NOT NULL, var TEXT NOT NULL,
    span REAL NOT NULL,            -- 0: a raw sample; else the length of the averaged bucket
    t REAL NOT NULL, v REAL NOT NULL,
    PRIMARY KEY (ups, var, span, t)
) WITHOUT ROWID;
-- stretches of points written while the system clock was not synchronised (their times may be off)
CREATE TABLE IF NOT EXISTS unsynced (lo REAL NOT NULL, hi REAL NOT NULL);
-- expiry_time: the time the last flush expired by (a restart on a clock not synchronised resumes from it)
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
"""

Point = tuple[str, str, float, float, float]  # (ups, var, span, t, v)


def readings(state: UpsState) -> dict[str, float]:
    """The tracked numeric readings of a state, and mains."""
    out: dict[str, float] = {}
    for name in TRACKED:
        value = state.value(name)
        if value is None:
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        if math.isfinite(number):
            out[name] = number
    status = state.status_flags()
    if "OL" in status:
        out[MAINS] = 1.0
    elif "OB" in status:
        out[MAINS] = 0.0
    return out


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)


class HistoryStore:
    """Samples readings into memory and writes them to ``path`` in batches."""

    def __init__(self, path: Path, settings: HistorySettings | None = None,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] | None = None,
                 synced: Callable[[], bool | None] = clock_synchronised) -> None:
        self.path = path
        self.settings = settings or HistorySettings()
        self.clock = clock
        # an injected wall clock alone is a steady one (tests): it spaces the samples too
        self.monotonic = monotonic or (time.monotonic if clock is time.time else clock)
        self.synced = synced
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = _connect(path)  # the writer: flushes, one at a time (_write_lock)
        self._write_lock = threading.Lock()
        with self._write_lock:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode == "wal":
                self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: safe on a power cut
            self._db.executescript(SCHEMA)
            known = self._db.execute("SELECT DISTINCT ups, var FROM points").fetchall()
            newest = self._db.execute("SELECT MAX(t) FROM points WHERE span = 0").fetchone()[0]
            saved = self._db.execute("SELECT value FROM meta WHERE key = 'expiry_time'").fetchone()
        self._reader = _connect(path)  # queries (worker threads), one at a time (_read_lock)
        self._reader.execute("SELECT 1 FROM points LIMIT 1").fetchall()  # its files open now, not mid-run
        self._read_lock = threading.Lock()
        # What the loop shares with the workers, under a lock that is never held for I/O:
        self._lock = threading.Lock()
        self._pending: list[Point] = []
        self._writing: list[Point] = []  # the batch a flush is writing: still seen by queries
        self._known: dict[str, set[str]] = {}
        for ups, var in known:
            self._known.setdefault(ups, set()).add(var)
        self._last: dict[tuple[str, str], tuple[float, float]] = {}  # (ups, var) -> (monotonic, value)
        self.flushes = 0  # transactions written, for the wear figure
        self.dropped = 0  # points dropped because flushes kept failing (MAX_PENDING)
        self.failing = False  # the last flush failed (logged once until one works again)
        # the clock: wall - monotonic as last seen, and the timeline expiry trusts
        wall, mono = clock(), self.monotonic()
        self._offset = wall - mono
        start = wall
        if synced() is False:  # a clock not synchronised may be far ahead: go on from the last flush's
            last = saved[0] if saved is not None else newest
            if last is not None:
                start = min(wall, last)
        self._trusted = (start, mono)
        self.steps = 0

    # --- recording (on the drivers' loop) ----------------------------------------

    def observe(self, state: UpsState) -> None:
        """UpsState.on_publish listener."""
        if not state.stale:
            self.record(state.name, readings(state))

    def record(self, ups: str, values: dict[str, float], now: float | None = None) -> None:
        """Keep a point per variable at most every ``sample`` seconds; a change of mains at once."""
        if now is None:
            mono, wall = self.monotonic(), self.clock()
            self._check_step(wall, mono)
        else:  # a given time (back-filling): it spaces the samples too
            mono = wall = now
        sample = self.settings.sample
        new: list[Point] = []
        for var, value in values.items():
            last = self._last.get((ups, var))
            if last is None or mono - last[0] >= sample or (var == MAINS and value != last[1]):
                self._last[(ups, var)] = (mono, value)
                new.append((ups, var, 0.0, wall, value))
        if not new:
            return
        with self._lock:
            self._pending.extend(new)
            known = self._known.setdefault(ups, set())
            known.update(p[1] for p in new)

    def _check_step(self, wall: float, mono: float) -> None:
        """A step of the wall clock: move the points still in memory if the new time is
        synchronised (NTP's first sync after boot), and say so once."""
        offset = wall - mono
        delta = offset - self._offset
        if abs(delta) < STEP_S:
            self._offset = offset  # slewing: follow it
            return
        self._offset = offset
        self.steps += 1
        synced = self.synced()
        with self._lock:
            moved = 0
            if synced:
                self._pending = [(u, n, s, t + delta, v) for u, n, s, t, v in self._pending]
                moved = len(self._pending)
        log.warning("history: the system clock stepped by %+.0f s%s", delta,
                    f"; {moved} points not yet written moved with it" if synced else
                    " (not synchronised: expiry keeps to the old timeline)")

    def _expiry_now(self) -> float:
        """The time expiry and downsampling go by: the wall clock while it agrees with the
        monotonic clock's run from the last trusted reading, or is synchronised; else that run."""
        wall, mono = self.clock(), self.monotonic()
        trusted_wall, trusted_mono = self._trusted
        steady = trusted_wall + (mono - trusted_mono)
        if abs(wall - steady) < STEP_S or self.synced():
            self._trusted = (wall, mono)
            return wall
        return steady

    # --- writing (a worker thread, every flush interval) --------------------------

    def flush(self) -> int:
        """Write the pending points, downsample and expire, in one transaction; return points written.
        On an error the points stay pending (bounded) and the error is raised."""
        with self._write_lock:
            synced = self.synced()
            with self._lock:
                if synced is False and self._pending:
                    times = [p[3] for p in self._pending]
                    lo, hi = min(times), max(times)
                else:
                    lo = hi = None
                batch, self._pending, self._writing = self._pending, [], self._pending
            now = self._expiry_now()
            s = self.settings
            cutoff = (now - s.raw) // s.bucket * s.bucket  # whole buckets only: each is averaged once
            db = self._db
            try:
                db.execute("BEGIN")
                db.executemany("INSERT OR REPLACE INTO points VALUES (?, ?, ?, ?, ?)", batch)
                if lo is not None:
                    db.execute("INSERT INTO unsynced VALUES (?, ?)", (lo, hi))
                db.execute(
                    "INSERT OR REPLACE INTO points SELECT ups, var, ?, CAST(t / ? AS INTEGER) * ?, AVG(v) "
                    "FROM points WHERE span = 0 AND t < ? GROUP BY ups, var, CAST(t / ? AS INTEGER)",
                    (s.bucket, s.bucket, s.bucket, cutoff, s.bucket))
                db.execute("DELETE FROM points WHERE span = 0 AND t < ?", (cutoff,))
                db.execute("DELETE FROM points WHERE t < ?", (now - s.keep,))
                db.execute("DELETE FROM unsynced WHERE hi < ?", (now - s.keep,))
                db.execute("INSERT OR REPLACE INTO meta VALUES ('expiry_time', ?)", (now,))
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                # SQLite may have rolled back already (a full disk): ROLLBACK would then raise
                # "no transaction is active" and hide the real error.
                if db.in_transaction:
                    try:
                        db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                self._put_back(batch)
                if not self.failing:
                    self.failing = True
                    log.error("history: cannot write %s: %s; %d points wait in memory (at most %d)",
                              self.path, exc, len(self._pending), MAX_PENDING)
                raise
            finally:
                with self._lock:
                    self._writing = []
            if self.failing:
                self.failing = False
                log.info("history: writing %s works again (%d points written, %d dropped meanwhile)",
                         self.path, len(batch), self.dropped)
            self.flushes += 1
            return len(batch)

    def _put_back(self, batch: list[Point]) -> None:
        with self._lock:
            merged = batch + self._pending
            self._writing = []  # back to pending in the same step: a query sees each point once
            over = len(merged) - MAX_PENDING
            if over > 0:
                self.dropped += over
                merged = merged[over:]
            self._pending = merged

    # --- reading (the JSON API, a worker thread) --------------------------------------

    def query(self, ups: str, var: str, since: float | None = None, until: float | None = None,
              step: float | None = None) -> list[list[float]]:
        """[[unix_time, value], ...] oldest first, written and pending points alike; with
        ``step``, averaged per step.  At most MAX_POINTS: a longer range is averaged over a
        longer step (``effective_step`` says which)."""
        return self.query_with_step(ups, var, since, until, step)[0]

    def query_with_step(self, ups: str, var: str, since: float | None = None, until: float | None = None,
                        step: float | None = None) -> tuple[list[list[float]], float | None]:
        with self._lock:
            memory = [(t, v) for u, n, _, t, v in self._writing + self._pending if u == ups and n == var]
        with self._read_lock:
            db = self._reader
            lo_db, hi_db, count = db.execute(
                "SELECT MIN(t), MAX(t), COUNT(*) FROM points WHERE ups = ? AND var = ? AND t >= ? AND t <= ?",
                (ups, var, -math.inf if since is None else since, math.inf if until is None else until)).fetchone()
            times = [t for t, _ in memory if (since is None or t >= since) and (until is None or t <= until)]
            ends = [x for x in (lo_db, hi_db, min(times, default=None), max(times, default=None)) if x is not None]
            if not ends:
                return [], step
            lo = since if since is not None else min(ends)
            hi = until if until is not None else max(ends)
            lo, hi = max(lo, min(ends)), min(hi, max(ends))
            wanted = max(step or 0.0, MIN_STEP) if step else None
            if count + len(times) > MAX_POINTS:
                wanted = max(wanted or 0.0, (hi - lo) / MAX_POINTS * 1.001, MIN_STEP)
            if wanted is None:
                rows = db.execute("SELECT t, v FROM points WHERE ups = ? AND var = ? AND t >= ? AND t <= ? "
                                  "ORDER BY t", (ups, var, lo, hi)).fetchall()
                rows += [(t, v) for t, v in memory if lo <= t <= hi]
                rows.sort()
                return [[t, v] for t, v in rows], None
            # averaged in SQLite (C, the GIL released), then the few points in memory added
            rows = db.execute("SELECT CAST(t / ? AS INTEGER), SUM(v), COUNT(*) FROM points "
                              "WHERE ups = ? AND var = ? AND t >= ? AND t <= ? GROUP BY 1",
                              (wanted, ups, var, lo, hi)).fetchall()
        sums = {int(k): [total, n] for k, total, n in rows}
        for t, v in memory:
            if lo <= t <= hi:
                acc = sums.setdefault(int(t // wanted), [0.0, 0])
                acc[0] += v
                acc[1] += 1
        return [[k * wanted, round(total / n, 4)] for k, (total, n) in sorted(sums.items())], wanted

    def variables(self, ups: str) -> list[str]:
        """The variables recorded for ``ups``: from memory (never waits for SQLite)."""
        with self._lock:
            return sorted(self._known.get(ups, ()))

    def unsynced(self) -> list[list[float]]:
        """[[lo, hi], ...]: stretches written while the clock was not synchronised (times may be off)."""
        with self._read_lock:
            return [list(r) for r in self._reader.execute("SELECT lo, hi FROM unsynced ORDER BY lo")]

    def close(self) -> None:
        try:
            self.flush()
        except sqlite3.Error as exc:
            log.error("history: the last %d points could not be written to %s: %s", len(self._pending),
                      self.path, exc)
        with self._read_lock:
            self._reader.close()
        with self._write_lock:
            self._db.close()
