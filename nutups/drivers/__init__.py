"""The drivers nutups can run, by their ups.conf `driver =` name, and which names NUT has."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from pathlib import Path

from .base import Driver, DriverError
from .dummy import DummyDriver
from .nutsocket import NutSocketDriver
from .x120x import X120xDriver

# name -> the driver built in: cls(state, section, confpath, statepath=..., datapath=...,
# hardware=cls.hardware_for(section, confpath)); `config check` reads cls.check_section.
DRIVERS: dict[str, type[Driver]] = {
    "dummy-ups": DummyDriver,
    "x120x": X120xDriver,
}
# The executables `nutups driver` installs for NUT's upsdrvctl (driverhost.py): a ups.conf
# written for stock NUT with them is served in-process by `nutups serve` too.
ALIASES = {"nutups-dummy-ups": "dummy-ups", "nutups-x120x": "x120x"}

# Where NUT's packages put their drivers (Debian /lib/nut, RPM /usr/lib/nut or /usr/libexec/nut,
# source builds /usr/local/ups/bin).
NUT_DRIVER_DIRS = ("/lib/nut", "/usr/lib/nut", "/usr/libexec/nut", "/usr/local/ups/bin",
                   "/usr/local/libexec/nut")


def nut_driver(name: str | None, dirs: Iterable[str] = NUT_DRIVER_DIRS) -> Path | None:
    """The executable of NUT's driver `name` in one of NUT's driver directories, if there is one."""
    if not name or "/" in name or name.startswith("."):
        return None
    for directory in dirs:
        path = Path(directory) / name
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def builtin_driver(name: str | None) -> type[Driver] | None:
    return DRIVERS.get(ALIASES.get(name or "", name or ""))


def known_driver(name: str | None, dirs: Iterable[str] = NUT_DRIVER_DIRS) -> bool:
    """A driver nutups can serve: built in, or a NUT driver whose socket it reads."""
    return builtin_driver(name) is not None or nut_driver(name, dirs) is not None


def in_process(name: str | None, socket_drivers: Collection[str] = ()) -> bool:
    """Runs inside nutups (not read from a NUT driver's socket): built in and not named in
    ups.conf's `nutups_socket_drivers`."""
    return builtin_driver(name) is not None and name not in socket_drivers


def driver_factory(name: str | None, socket_drivers: Collection[str] = (),
                   builtin: bool = True) -> type[Driver] | None:
    """What serves a ups.conf `driver =` name: ours in-process, else the NUT driver's socket
    (any name at all with builtin=False, as `nutups upsd`, which has no drivers of its own),
    else None (an unknown driver)."""
    if builtin and in_process(name, socket_drivers):
        return builtin_driver(name)
    if not builtin or (name and name in socket_drivers) or nut_driver(name) is not None:
        return NutSocketDriver
    return None


__all__ = ["ALIASES", "DRIVERS", "NUT_DRIVER_DIRS", "Driver", "DriverError", "NutSocketDriver",
           "builtin_driver", "driver_factory", "in_process", "known_driver", "nut_driver"]
