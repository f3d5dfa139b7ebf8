"""The history store's robustness (issue 16 part 5, issue 17's "history stalls the loop"):
a failed flush keeps its points, queries are bounded, the loop never waits for a flush, and
clock steps neither stop sampling nor delete history.  Injected clocks throughout."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading

import pytest

from nutups.web import history as history_module
from nutups.web.config import HistorySettings
from nutups.web.history import MAX_POINTS, HistoryStore

DAY = 86400.0


class Clocks:
    """A wall clock that can step, and a monotonic clock that cannot."""

    def __init__(self, wall: float = 1_700_000_000.0) -> None:
        self.offset = wall
        self.mono = 100.0
        self.is_synced: bool | None = True

    def wall(self) -> float:
        return self.offset + self.mono

    def monotonic(self) -> float:
        return self.mono

    def synced(self) -> bool | None:
        return self.is_synced


def store_on(path, clocks: Clocks, **settings) -> HistoryStore:
    return HistoryStore(path, HistorySettings(**settings), clocks.wall, clocks.monotonic, clocks.synced)


def rows(path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT var, span, t, v FROM points ORDER BY t").fetchall()


def test_a_failed_flush_keeps_its_points_and_says_why_once(tmp_path, caplog):
    """SQLite's own disk-full error (max_page_count): the old code's ROLLBACK raised "no
    transaction is active", hid it, and lost the batch."""
    caplog.set_level(logging.INFO, "nutups.history")
    clocks = Clocks()
    store = store_on(tmp_path / "h.sqlite3", clocks, sample=1)
    for i in range(50):
        store.record("ups", {"battery.charge": float(i)})
        clocks.mono += 1
    assert store.flush() == 50
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full from here on
    for i in range(50, 3050):
        store.record("ups", {"battery.charge": float(i)})
        clocks.mono += 1
    for _ in range(3):
        with pytest.raises(sqlite3.OperationalError, match="full"):
            store.flush()
    assert [r.message for r in caplog.records if "cannot write" in r.message][0].count("full") == 1
    assert len([r for r in caplog.records if "cannot write" in r.message]) == 1  # once, not per flush
    store._db.execute("PRAGMA max_page_count = 1073741823")  # space again
    assert store.flush() == 3000
    assert [v for _, _, _, v in rows(tmp_path / "h.sqlite3")] == [float(i) for i in range(3050)]
    assert any("works again" in r.message for r in caplog.records)
    store.close()


def test_points_kept_for_the_next_flush_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(history_module, "MAX_PENDING", 2000)
    clocks = Clocks()
    store = store_on(tmp_path / "h.sqlite3", clocks, sample=1)
    store.flush()
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    for i in range(5000):
        store.record("ups", {"battery.charge": float(i)})
        clocks.mono += 1
        if i % 1000 == 999:
            with pytest.raises(sqlite3.OperationalError):
                store.flush()
    store._db.execute("PRAGMA max_page_count = 1073741823")
    assert store.flush() == 2000 and store.dropped == 3000
    assert [v for *_, v in rows(tmp_path / "h.sqlite3")] == [float(i) for i in range(3000, 5000)]  # the newest
    store.close()


def test_queries_are_bounded_and_averaged(tmp_path):
    """300k points (as the red team's): since=0 with a tiny step gives at most MAX_POINTS,
    each the mean of its step (checked against a plain computation here)."""
    clocks = Clocks()
    store = store_on(tmp_path / "h.sqlite3", clocks, sample=1, keep=3650 * DAY, raw=3650 * DAY)
    t0 = 1_600_000_000.0
    values = [(t0 + i * 10, float(i % 97)) for i in range(300_000)]
    with store._write_lock:
        store._db.execute("BEGIN")
        store._db.executemany("INSERT INTO points VALUES ('ups', 'battery.charge', 0, ?, ?)", values)
        store._db.execute("COMMIT")
    points, step = store.query_with_step("ups", "battery.charge", since=0, step=0.001)
    assert len(points) <= MAX_POINTS
    assert step >= (values[-1][0] - values[0][0]) / MAX_POINTS
    buckets: dict[int, list[float]] = {}
    for t, v in values:
        buckets.setdefault(int(t // step), []).append(v)
    expected = [[k * step, round(sum(vs) / len(vs), 4)] for k, vs in sorted(buckets.items())]
    assert points == expected
    # a range that holds few points comes raw
    raw, none = store.query_with_step("ups", "battery.charge", since=t0, until=t0 + 100)
    assert none is None and raw == [[t, v] for t, v in values[:11]]
    store.close()


def test_the_loop_never_waits_for_a_slow_flush(tmp_path):
    """Issue 17: a flush holds the disk for a whole SD-card transaction (here: another
    connection holds the write lock, so the flush cannot finish until the test lets it).
    Meanwhile the loop records, lists the variables and runs a history query in a worker:
    all of it completes while the flush is provably still running, and no point is lost."""
    clocks = Clocks()
    path = tmp_path / "h.sqlite3"
    store = store_on(path, clocks, sample=1)
    for i in range(10):
        store.record("ups", {"battery.charge": float(i)})
        clocks.mono += 1
    store.flush()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the disk is busy: the flush's write waits for it
    for i in range(10, 20):
        store.record("ups", {"battery.charge": float(i)})
        clocks.mono += 1
    done = []

    async def main():
        loop = asyncio.get_running_loop()
        flush = loop.run_in_executor(None, lambda: done.append(store.flush()))
        while not store._writing:  # the flush has its batch and is waiting for the disk
            await asyncio.sleep(0.01)
        ticks = 0
        for i in range(20, 30):  # the loop goes on: recording, listing, querying
            store.record("ups", {"battery.charge": float(i), "mains": 1.0})
            clocks.mono += 1
            assert store.variables("ups") == ["battery.charge", "mains"]
            ticks += 1
        points = await asyncio.wait_for(asyncio.to_thread(store.query, "ups", "battery.charge"), 60)
        assert not flush.done() and ticks == 10
        assert [v for _, v in points] == [float(i) for i in range(30)]  # written, being written, pending
        blocker.execute("COMMIT")
        await asyncio.wait_for(flush, 60)

    asyncio.run(main())
    assert done == [10]
    assert store.flush() == 20  # the 10 charges and 10 mains recorded meanwhile: none lost
    assert [v for var, _, _, v in rows(path) if var == "battery.charge"] == [float(i) for i in range(30)]
    blocker.close()
    store.close()


# --- clock steps ------------------------------------------------------------------------


@pytest.mark.parametrize("synced", [True, False])
def test_sampling_goes_on_across_a_step_back(tmp_path, synced):
    """The old store stopped sampling for as long as the clock stepped back.  To a synchronised
    time, the points not yet written move with the clock: one steady series."""
    clocks = Clocks()
    clocks.is_synced = synced
    store = store_on(tmp_path / "h.sqlite3", clocks, sample=60)
    start = clocks.wall()
    for minute in range(10):
        if minute == 5:
            clocks.offset -= 3600  # the clock steps back an hour
        store.record("ups", {"battery.charge": float(minute)})
        clocks.mono += 60
    series = store.query("ups", "battery.charge")
    if synced:
        assert series == [[start - 3600 + 60 * m, float(m)] for m in range(10)]
    else:  # kept as stamped: the five after the step an hour earlier
        assert sorted(v for _, v in series) == [float(m) for m in range(10)]
        assert [v for _, v in series] == [5.0, 6.0, 7.0, 8.0, 9.0, 0.0, 1.0, 2.0, 3.0, 4.0]
    assert store.steps == 1
    store.close()


def test_a_jump_far_ahead_deletes_nothing(tmp_path):
    clocks = Clocks()
    clocks.is_synced = False  # a bad RTC, no NTP
    path = tmp_path / "h.sqlite3"
    store = store_on(path, clocks, sample=60, keep=7 * DAY, raw=DAY, bucket=3600, flush=900)
    for _ in range(120):
        store.record("ups", {"battery.charge": 50.0})
        clocks.mono += 60
    store.flush()
    before = len(rows(path))
    clocks.offset += 10 * 365 * DAY  # ten years ahead
    for minute in range(120):
        store.record("ups", {"battery.charge": 50.0})
        clocks.mono += 60
        if minute % 15 == 14:
            store.flush()
    assert len([r for r in rows(path) if r[2] < clocks.wall() - 365 * DAY]) >= before - 1
    store.close()
    # and a restart with the clock still far ahead and not synchronised deletes nothing either
    clocks.mono += 1
    again = store_on(path, clocks, sample=60, keep=7 * DAY, raw=DAY, bucket=3600, flush=900)
    again.flush()
    assert len([r for r in rows(path) if r[2] < clocks.wall() - 365 * DAY]) >= before - 1
    again.close()


def test_a_step_to_a_synchronised_time_moves_the_pending_points(tmp_path):
    """Boot: fake-hwclock's time, then NTP steps it forward a week and the kernel says synced."""
    clocks = Clocks()
    clocks.is_synced = False
    path = tmp_path / "h.sqlite3"
    store = store_on(path, clocks, sample=60)
    for _ in range(5):
        store.record("ups", {"battery.charge": 80.0})
        clocks.mono += 60
    true_times = [clocks.offset + 7 * DAY + 100 + 60 * i for i in range(5)]  # what they really were
    clocks.offset += 7 * DAY
    clocks.is_synced = True
    store.record("ups", {"battery.charge": 81.0})
    assert [t for t, _ in store.query("ups", "battery.charge")][:5] == true_times
    store.flush()
    assert store.unsynced() == []  # nothing written with a wrong time
    store.close()


def test_points_written_before_sync_are_marked(tmp_path):
    clocks = Clocks()
    clocks.is_synced = False
    store = store_on(tmp_path / "h.sqlite3", clocks, sample=60)
    first = clocks.wall()
    for _ in range(5):
        store.record("ups", {"battery.charge": 80.0})
        clocks.mono += 60
    store.flush()
    assert store.unsynced() == [[first, first + 240]]
    clocks.is_synced = True
    store.record("ups", {"battery.charge": 80.0})
    store.flush()
    assert store.unsynced() == [[first, first + 240]]
    store.close()


def test_variables_come_from_memory_after_a_restart(tmp_path):
    clocks = Clocks()
    store = store_on(tmp_path / "h.sqlite3", clocks, sample=60)
    store.record("ups", {"battery.charge": 80.0, "mains": 1.0})
    store.close()
    again = store_on(tmp_path / "h.sqlite3", clocks, sample=60)
    lock = again._write_lock
    with lock:  # a flush holds the disk: variables() does not need it
        result = []
        t = threading.Thread(target=lambda: result.append(again.variables("ups")))
        t.start()
        t.join(30)
        assert result == [["battery.charge", "mains"]]
    again.close()


def test_events_before_the_clock_is_synchronised_are_marked(monkeypatch):
    """An event record says when its time may be off (fake-hwclock's time before NTP); a line
    taken while synchronised stays as it was written before."""
    import json

    from nutups.events import types

    monkeypatch.setattr(types, "clock_synchronised", lambda: False)
    early = types.Event(types.EventType.AC_POWER_LOSS, "ups", "mains lost")
    assert json.loads(early.to_json())["unsynced"] is True
    assert types.Event.from_json(early.to_json()).unsynced
    monkeypatch.setattr(types, "clock_synchronised", lambda: True)
    later = types.Event(types.EventType.AC_POWER_RESTORED, "ups", "mains back")
    assert "unsynced" not in json.loads(later.to_json())
    monkeypatch.setattr(types, "clock_synchronised", lambda: None)  # cannot tell: not marked
    assert not types.Event(types.EventType.AC_POWER_LOSS, "ups", "x").unsynced
