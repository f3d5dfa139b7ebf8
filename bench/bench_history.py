"""History queries against the NUT server's latency (issue 16 part 5): 300k points, the red
team's `since=0` with a tiny step, four at a time; meanwhile a thread that answers like the
NUT server (wakes every millisecond) measures how late it wakes.

Usage: bench_history.py [OLD_HISTORY_PY]  (a copy of an older nutups/web/history.py to
compare with, e.g. from `git show REV:nutups/web/history.py`).
"""

from __future__ import annotations

import importlib.util
import resource
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nutups.web.config import HistorySettings

POINTS = 300_000


def load(path: str | None):
    if path is None:
        from nutups.web import history
        return history
    spec = importlib.util.spec_from_file_location("nutups.web.history_old", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def measure(module, label: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "h.sqlite3"
        store = module.HistoryStore(db, HistorySettings(keep=3650 * 86400, raw=3650 * 86400))
        t0 = 1_600_000_000.0
        lock = getattr(store, "_write_lock", None) or store._lock
        with lock:
            store._db.execute("BEGIN")
            store._db.executemany("INSERT INTO points VALUES ('ups', 'battery.charge', 0, ?, ?)",
                                  ((t0 + i * 10, float(i % 97)) for i in range(POINTS)))
            store._db.execute("COMMIT")

        def one() -> tuple[float, int]:
            start = time.perf_counter()
            points = store.query("ups", "battery.charge", 0.0, None, 0.001)
            return time.perf_counter() - start, len(points)

        single, count = one()
        late: list[float] = []
        stop = threading.Event()

        def ticker() -> None:  # the NUT server's thread: how late does it get to run?
            while not stop.is_set():
                before = time.perf_counter()
                time.sleep(0.001)
                late.append(time.perf_counter() - before - 0.001)

        t = threading.Thread(target=ticker)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t.start()
        time.sleep(0.2)
        idle = list(late)
        late.clear()
        with ThreadPoolExecutor(4) as pool:
            start = time.perf_counter()
            list(pool.map(lambda _: one(), range(4)))
            four = time.perf_counter() - start
        stop.set()
        t.join()
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        store.close()
    print(f"{label}: one query {single * 1000:.0f} ms ({count} points); four in parallel {four * 1000:.0f} ms; "
          f"a 1 ms ticker late by median {statistics.median(late) * 1000:.2f} ms, max {max(late) * 1000:.1f} ms "
          f"(idle: median {statistics.median(idle) * 1000:.2f} ms); peak RSS +{(rss1 - rss0) / 1024:.1f} MiB")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        measure(load(sys.argv[1]), "before")
    measure(load(None), "after")
