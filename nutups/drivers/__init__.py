"""The drivers nutups can run, by their ups.conf `driver =` name."""

from __future__ import annotations

from collections.abc import Callable

from .base import Driver, DriverError
from .dummy import DummyDriver
from .x120x import make_x120x

# name -> factory(state, section, confpath, statepath=...) -> Driver
DRIVERS: dict[str, Callable[..., Driver]] = {
    "dummy-ups": DummyDriver,
    "x120x": make_x120x,
}

__all__ = ["DRIVERS", "Driver", "DriverError"]
