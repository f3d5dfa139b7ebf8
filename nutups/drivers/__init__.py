"""The drivers nutups can run, by their ups.conf `driver =` name, and which names are drivers at all."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from .base import Driver, DriverError
from .dummy import DummyDriver
from .x120x import make_x120x

# name -> factory(state, section, confpath, statepath=...) -> Driver
DRIVERS: dict[str, Callable[..., Driver]] = {
    "dummy-ups": DummyDriver,
    "x120x": make_x120x,
}

# Where Debian, Fedora and NUT's own `make install` put the driver programs.
NUT_DRIVER_DIRS = ("/lib/nut", "/usr/lib/nut", "/usr/libexec/nut")
# Programs that sit beside the drivers but are not drivers.
_NOT_DRIVERS = frozenset({"upsd", "upsmon", "upsdrvctl", "upsdrvsvcctl", "upssched", "upslog"})


def nut_driver_dirs(driverpath: str | None = None, environ: Mapping[str, str] = os.environ) -> list[Path]:
    """ups.conf's global `driverpath`, then $NUT_DRIVERPATH (colon-separated), then the usual places."""
    dirs = [driverpath] if driverpath else []
    dirs += [d for d in environ.get("NUT_DRIVERPATH", "").split(":") if d]
    return [Path(d) for d in dirs] + [Path(d) for d in NUT_DRIVER_DIRS]


def known_driver(name: str, driverpath: str | None = None, environ: Mapping[str, str] = os.environ) -> bool:
    """A `driver =` nutups can serve: built in, or a NUT driver program installed on this machine."""
    if name in DRIVERS:
        return True
    if not name or "/" in name or name.startswith(".") or name in _NOT_DRIVERS:
        return False
    for directory in nut_driver_dirs(driverpath, environ):
        program = directory / name
        if program.is_file() and os.access(program, os.X_OK):
            return True
    return False


__all__ = ["DRIVERS", "Driver", "DriverError", "known_driver", "nut_driver_dirs"]
