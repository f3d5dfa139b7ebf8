"""The event log: JSON Lines, rotated by size; a line is in the kernel before the event's
actions run, and on disk (fsync) at the end of the burst it belongs to.

Durability, decided: a line goes to the kernel with write() (repeated until the whole
line is written: a short write is not ignored) before any action starts, so a `kill -9`
at any moment leaves every earlier line intact.  One fsync follows each burst (the events
of one reading, written in the same turn of the event loop), so a power cut or a shutdown
right after a burst keeps it, at the cost of one flush per burst rather than one per line.

A full, failing or read-only card (nutups/durable.py): a line that cannot be written is
cut back out of the file (never a partial line) and waits, in order, in a bounded backlog
in memory with every later line, to be written when the disk takes writes again (tried at
the next event and every RETRY_S); past BACKLOG lines the oldest are dropped and counted.
At start a damaged last line (a power cut mid-write) is cut off, and said once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from ..durable import WriteHealth
from .types import Event, EventType

log = logging.getLogger("nutups.events")

DEFAULT_MAX_BYTES = 1_000_000
DEFAULT_BACKUPS = 5
BACKLOG = 10_000  # events kept in memory while the disk refuses them
RETRY_S = 5.0  # how often a waiting backlog tries the disk again


class EventLog:
    """Appends events; numbers them; rotates ``path`` to ``path.1`` ... ``path.N``."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS,
                 syslog: bool = False, backlog: int = BACKLOG) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.syslog = logging.getLogger("nutups.event") if syslog else None
        self.health = WriteHealth("the event log", path, log)
        self.backlog: deque[bytes] = deque()  # lines not on disk yet, oldest first
        self.backlog_max = backlog
        self.dropped = 0  # lines the backlog could not hold
        repair_last_line(path)
        self.seq = last_sequence(path)
        self._fd = -1
        self._size = 0
        self._sync_pending = False
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False
        try:
            self._open()
        except OSError as exc:  # a read-only or missing datapath: kept in memory until it can be written
            self.health.failed(exc, f"events wait in memory (the last {self.backlog_max})")

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._size = os.fstat(self._fd).st_size

    def append(self, event: Event) -> Event:
        """Number the event and write it (or keep it, in order, until the disk takes it)."""
        self.seq += 1
        event.seq = self.seq
        self.backlog.append((event.to_json() + "\n").encode())
        if len(self.backlog) > self.backlog_max:
            self.backlog.popleft()
            self.dropped += 1
        self.flush_backlog(new=1)
        if self.syslog is not None:
            self.syslog.info("%s %s: %s", event.type, event.ups, event.message)
        return event

    @property
    def waiting(self) -> int:
        return len(self.backlog)

    def flush_backlog(self, new: int = 0) -> bool:
        """Write what waits, oldest first (the last ``new`` lines have not waited yet); True when
        nothing waits any more."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        waited = len(self.backlog) - new
        while self.backlog:
            try:
                self._write(self.backlog[0])
            except OSError as exc:
                self.health.failed(exc, f"events wait in memory, in order (the last {self.backlog_max})")
                self._retry_later()
                return False
            self.backlog.popleft()
        if self.health.failing:
            lost = f", {self.dropped} older ones were dropped (more than {self.backlog_max} waited)" \
                if self.dropped else ""
            self.health.ok(f"{waited} event(s) that waited are written{lost}")
            self.dropped = 0
        return True

    def _retry_later(self) -> None:
        if self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a tool, a test): the next append tries again
        self._retry = loop.call_later(RETRY_S, self.flush_backlog)

    def _write(self, line: bytes) -> None:
        """One whole line, or nothing: a failed write is cut back out of the file."""
        if self._fd < 0:
            self._open()
        if self._size and self._size + len(line) > self.max_bytes:
            self._sync()  # the burst so far, before its file is renamed
            self._rotate()
        written = 0
        try:
            while written < len(line):  # O_APPEND: a short write's remainder follows it directly
                n = os.write(self._fd, line[written:])
                if n <= 0:
                    raise OSError(f"could not write {self.path}")
                written += n
        except OSError:
            if written:
                self._cut_back(written)
            raise
        self._size += len(line)
        self._schedule_sync()

    def _cut_back(self, written: int) -> None:
        """Remove the start of a line that could not be finished."""
        try:
            os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
        except OSError:  # the next start repairs it (repair_last_line)
            os.close(self._fd)
            self._fd = -1

    def _schedule_sync(self) -> None:
        """One fsync at the end of this burst; right now when no event loop runs."""
        if self._sync_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._sync()
            return
        self._sync_pending = True
        loop.call_soon(self._sync)

    def _sync(self) -> None:
        self._sync_pending = False
        if self._fd < 0:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self.health.failed(exc, "the events stay in the kernel's cache until it works")

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        if self.backups <= 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.backups - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._open()

    def close(self) -> None:
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self.backlog:
            self.flush_backlog()
        if self.backlog:
            log.error("stopping with %d event(s) that could not be written to %s", len(self.backlog), self.path)
        if self._fd >= 0:
            self._sync()
            os.close(self._fd)
            self._fd = -1


def repair_last_line(path: Path, warn=log.warning) -> int:
    """Cut off a damaged last line (a power cut mid-write: no newline, or NUL bytes the filesystem
    left) so the log ends with a whole line; said once.  Returns the bytes removed."""
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            f.seek(max(0, size - 65536))
            tail = f.read()
            if tail.endswith(b"\n"):
                return 0
            cut = tail.rfind(b"\n")
            keep = size - len(tail) + cut + 1 if cut >= 0 else (0 if size <= 65536 else size)
            if keep == size:
                return 0  # no newline in the last 64 KiB of a big file: leave it to the readers
            f.truncate(keep)
    except OSError:
        return 0  # missing or read-only: the readers skip a torn line
    warn(f"{path}: a damaged last line ({size - keep} bytes, a power cut mid-write?) was cut off")
    return size - keep


def log_files(path: Path) -> list[Path]:
    """The log and its rotated files, oldest first."""
    rotated = []
    for p in path.parent.glob(path.name + ".*"):
        suffix = p.name[len(path.name) + 1 :]
        if suffix.isdigit():
            rotated.append((int(suffix), p))
    return [p for _, p in sorted(rotated, reverse=True)] + ([path] if path.exists() else [])


def read_events(path: Path, warn=log.warning) -> Iterator[Event]:
    """Every event in the log, rotated files included, oldest first; torn or
    damaged lines are skipped with a warning."""
    for file in log_files(path):
        try:
            data = file.read_bytes()
        except OSError as exc:
            warn(f"cannot read {file}: {exc.strerror}")
            continue
        lines = data.split(b"\n")
        for i, raw in enumerate(lines):
            if not raw:
                continue
            try:
                yield Event.from_json(raw.decode())
            except (ValueError, KeyError, UnicodeDecodeError):
                where = "torn last line" if i == len(lines) - 1 else "damaged line"
                warn(f"{file}:{i + 1}: {where} skipped")


def follow_events(path: Path, poll: float = 0.25, stop=lambda: False) -> Iterator[Event]:
    """New events as they are appended (from the end of the log now), across rotations:
    after a rotation the rotated files are read again for what came after the last seen."""
    def open_at_end():
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            return None, None
        f.seek(0, os.SEEK_END)
        return f, os.fstat(f.fileno()).st_ino

    f, inode = open_at_end()
    last = last_sequence(path)
    pending = b""
    try:
        while not stop():
            chunk = f.read() if f is not None else b""
            if chunk:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    try:
                        ev = Event.from_json(raw.decode())
                    except (ValueError, KeyError, UnicodeDecodeError):
                        log.warning("%s: damaged line skipped", path)
                        continue
                    if ev.seq > last:
                        last = ev.seq
                        yield ev
                continue
            try:
                rotated = os.stat(path).st_ino != inode
            except FileNotFoundError:
                rotated = False  # between the writer's rename and its new file
            if rotated:
                if f is not None:
                    f.close()
                f, inode = open_at_end()
                pending = b""
                for ev in _moved_away(path, last):
                    last = ev.seq
                    yield ev
                continue
            time.sleep(poll)
    finally:
        if f is not None:
            f.close()


def _moved_away(path: Path, last: int, attempts: int = 5) -> list[Event]:
    """The events after ``last`` in the log and its rotated files, in order. The writer can
    rotate again while they are read (the files shift under their names, so one of them can
    be missed or read twice): events are numbered without gaps, so a gap means "read again".
    A gap that stays is real (older files dropped by the rotation count)."""
    found: dict[int, Event] = {}
    for _ in range(attempts):
        found = {ev.seq: ev for ev in read_events(path, lambda text: None) if ev.seq > last}
        if not found or len(found) == max(found) - last:
            break
    return [found[seq] for seq in sorted(found)]


def last_sequence(path: Path) -> int:
    seq = 0
    for file in reversed(log_files(path)):
        for event in read_events_file_tail(file):
            seq = max(seq, event.seq)
        if seq:
            break
    return seq


def read_events_file_tail(file: Path, tail: int = 65536) -> Iterator[Event]:
    try:
        with open(file, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - tail))
            data = f.read()
    except OSError:
        return
    for raw in data.split(b"\n"):
        try:
            yield Event.from_json(raw.decode())
        except (ValueError, KeyError, UnicodeDecodeError):
            continue


def parse_time(text: str) -> float:
    """--since/--until: ISO 8601 (UTC unless it says), or relative: 10m, 2h, 1d, 30s."""
    text = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(text[:-1]) * units[text[-1]]
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r}: use ISO 8601 (2026-01-31T12:00) or 30s, 10m, 2h, 1d") from None
    if dt.tzinfo is None:
        from datetime import UTC

        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def event_timestamp(event: Event) -> float:
    return datetime.fromisoformat(event.time.replace("Z", "+00:00")).timestamp()


def matches(event: Event, types: set[EventType] | None, since: float | None, until: float | None) -> bool:
    if types and event.type not in types:
        return False
    if since is not None or until is not None:
        ts = event_timestamp(event)
        if since is not None and ts < since:
            return False
        if until is not None and ts > until:
            return False
    return True
