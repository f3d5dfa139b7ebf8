"""Failed logins counted per source address, shared by the NUT port and the dashboard (no I/O).

After ``LIMIT`` failures within ``WINDOW`` seconds, every further attempt from that address
is answered only at ``answer_at``: the first waits ``FIRST_DELAY`` s, and each failure after
that doubles the wait, up to ``MAX_DELAY`` from now however many attempts come at once.  An
attempt made during a wait is refused at its end without its password being checked, so
parallel connections from one address do not guess faster than one.  Another address is
never delayed (a stock upsmon secondary always gets in), and an address quiet for a ``WINDOW``
after its last wait is forgotten.  An IPv6 source counts by its /64 (one host owns a whole /64).

The caller decides how to wait: the NUT server holds its ``ERR ACCESS-DENIED`` answer until
then, as upsd answers, and the dashboard answers 429 with Retry-After.  Failures are reported
(``report``) at most once per address per ``REPORT_EVERY`` seconds, with how many there were.
Thread-safe: the NUT server's thread and the drivers' loop both count here.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

LIMIT = 5
WINDOW = 60.0
FIRST_DELAY = 1.0
MAX_DELAY = 60.0
REPORT_EVERY = 60.0
MAX_SOURCES = 4096  # addresses remembered at most (the quietest are forgotten first)

log = logging.getLogger("nutups.auth")


def source_key(addr: str) -> str:
    """The address failures are counted under: IPv4 as is, IPv6 by its /64, anything else as given."""
    host = addr.removeprefix("dashboard:")
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return addr
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if ip.is_loopback:
            return str(ip)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def printable(text: str | None, limit: int = 64) -> str:
    """A user-supplied name as it may go into a log line: control characters (a newline would
    forge a line) escaped, and cut at ``limit`` characters."""
    if text is None:
        return "(none)"
    shown = text[:limit].encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return shown + ("..." if len(text) > limit else "")


@dataclass(frozen=True, slots=True)
class FailureReport:
    """What is logged and emitted (AUTH_FAILURE) for one address, at most once a minute."""

    source: str  # the address as counted (source_key)
    via: str  # "NUT" or "dashboard"
    users: tuple[str, ...]  # the names tried since the last report (escaped, at most 5)
    failures: int  # failures since the last report
    delay: float  # seconds the next attempt from there now waits (0: not throttled yet)

    def message(self) -> str:
        names = ", ".join(f'"{u}"' for u in self.users)
        text = (f"{self.failures} failed login{'s' if self.failures != 1 else ''} from {self.source} "
                f"({self.via}) for {names}")
        if self.delay:
            text += f"; its next attempts wait {self.delay:g} s"
        return text


@dataclass(slots=True)
class _Source:
    failures: deque = field(default_factory=deque)  # times of failures within the window
    delay: float = 0.0  # the wait the next failure doubles (0: not throttled)
    not_before: float = 0.0  # the next attempt's answer waits until then
    last: float = 0.0  # the last failure
    reported: float = float("-inf")
    unreported: int = 0
    users: list = field(default_factory=list)


def _log_report(report: FailureReport) -> None:
    log.warning("%s", report.message())


class LoginThrottle:
    """Counts failed logins per source address and says when an attempt may be answered."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 report: Callable[[FailureReport], None] = _log_report, limit: int = LIMIT,
                 window: float = WINDOW, first_delay: float = FIRST_DELAY, max_delay: float = MAX_DELAY,
                 report_every: float = REPORT_EVERY) -> None:
        self.clock = clock
        self.report = report  # called with the lock released, on the thread that counted
        self.limit, self.window = limit, window
        self.first_delay, self.max_delay = first_delay, max_delay
        self.report_every = report_every
        self._sources: dict[str, _Source] = {}
        self._lock = threading.Lock()
        self.failures_total = 0  # for /metrics and tests

    def _current(self, key: str, now: float) -> _Source | None:
        entry = self._sources.get(key)
        if entry is not None and now - max(entry.last, entry.not_before) > self.window:
            del self._sources[key]  # quiet for a window after its last wait: forgotten
            return None
        return entry

    def wait(self, addr: str) -> float:
        """Seconds until an attempt from ``addr`` is checked (0: now).  The dashboard answers
        429 meanwhile, without looking at the password."""
        now = self.clock()
        with self._lock:
            entry = self._current(source_key(addr), now)
            return max(0.0, entry.not_before - now) if entry is not None else 0.0

    def answer_at(self, addr: str) -> float:
        """When the answer to an attempt from ``addr`` made now may be given (the clock's time).
        The NUT server checks at once and holds the answer until then."""
        now = self.clock()
        with self._lock:
            entry = self._current(source_key(addr), now)
            return max(now, entry.not_before) if entry is not None else now

    def failed(self, addr: str, username: str | None, via: str, at: float | None = None) -> float:
        """Count a wrong user name or password from ``addr`` whose answer is given at ``at``
        (answer_at's time; default now).  Returns the wait it puts on the next attempt."""
        now = self.clock()
        at = now if at is None else at
        key = source_key(addr)
        due: FailureReport | None = None
        with self._lock:
            entry = self._current(key, now)
            if entry is None:
                if len(self._sources) >= MAX_SOURCES:
                    del self._sources[min(self._sources, key=lambda k: self._sources[k].last)]
                entry = self._sources[key] = _Source()
            self.failures_total += 1
            entry.last = at
            entry.failures.append(at)
            while entry.failures and at - entry.failures[0] > self.window:
                entry.failures.popleft()
            if entry.delay or len(entry.failures) >= self.limit:  # throttled until forgotten
                entry.delay = min(self.max_delay, entry.delay * 2 if entry.delay else self.first_delay)
                # never more than max_delay from now, however many attempts came at once
                entry.not_before = min(max(at, entry.not_before) + entry.delay, now + self.max_delay)
            entry.unreported += 1
            name = printable(username)
            if name not in entry.users and len(entry.users) < 5:
                entry.users.append(name)
            if now - entry.reported >= self.report_every:
                due = FailureReport(key, via, tuple(entry.users), entry.unreported, entry.delay)
                entry.reported = now
                entry.unreported = 0
                entry.users = []
            delay = entry.delay
        if due is not None:
            try:
                self.report(due)
            except Exception:  # a listener's bug must not stop the count
                log.exception("reporting failed logins")
        return delay
