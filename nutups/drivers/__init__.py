"""The drivers nutups can run, by their ups.conf `driver =` name, and which names NUT has."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from .base import Driver, DriverError
from .dummy import DummyDriver
from .x120x import make_x120x

# name -> factory(state, section, confpath, statepath=...) -> Driver.  The nutups-* names are
# the executables `nutups driver` installs for NUT's upsdrvctl (see driverhost.py): a ups.conf
# written for stock NUT with them is served in-process by `nutups serve` too.
DRIVERS: dict[str, Callable[..., Driver]] = {
    "dummy-ups": DummyDriver,
    "x120x": make_x120x,
    "nutups-dummy-ups": DummyDriver,
    "nutups-x120x": make_x120x,
}

# Where NUT's packages put their drivers (Debian /lib/nut, RPM /usr/lib/nut or /usr/libexec/nut,
# source builds /usr/local/ups/bin), in the order upsdrvctl's builds look.
NUT_DRIVER_DIRS = ("/lib/nut", "/usr/lib/nut", "/usr/libexec/nut", "/usr/local/ups/bin",
                   "/usr/local/libexec/nut")


def nut_driver(name: str, dirs: Iterable[str] = NUT_DRIVER_DIRS) -> Path | None:
    """The executable of NUT's driver `name` in one of NUT's driver directories, if there is one."""
    if not name or "/" in name or name.startswith("."):
        return None
    for directory in dirs:
        path = Path(directory) / name
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def known_driver(name: str, dirs: Iterable[str] = NUT_DRIVER_DIRS) -> bool:
    """A driver nutups can serve: built in, or a NUT driver whose socket we read."""
    return name in DRIVERS or nut_driver(name, dirs) is not None


__all__ = ["DRIVERS", "NUT_DRIVER_DIRS", "Driver", "DriverError", "known_driver", "nut_driver"]
