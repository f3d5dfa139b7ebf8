"""The drivers nutups can run, by their ups.conf `driver =` name."""

from __future__ import annotations

from .base import Driver, DriverError
from .dummy import DummyDriver

DRIVERS: dict[str, type[Driver]] = {
    "dummy-ups": DummyDriver,
}

__all__ = ["DRIVERS", "Driver", "DriverError"]
