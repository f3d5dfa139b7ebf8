"""Whether the system clock is synchronised (NTP), as the kernel and systemd say: a Pi has no RTC,
and until its first sync it runs on fake-hwclock's saved time."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from pathlib import Path

TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")  # systemd-timesyncd touches it once synced


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def _adjtimex_state() -> int | None:
    libc = _libc()
    try:
        buf = ctypes.create_string_buffer(512)  # struct timex with modes = 0: read only
        state = libc.adjtimex(buf) if libc is not None else -1
    except (OSError, AttributeError):
        return None
    return None if state < 0 else state


def clock_synchronised() -> bool | None:
    """True once NTP (or timesyncd) synchronised the clock, False while the kernel says it is
    not, None where neither can tell (not Linux)."""
    if TIMESYNC_FLAG.exists():
        return True
    state = _adjtimex_state()
    if state is None:
        return None
    return state != TIME_ERROR
