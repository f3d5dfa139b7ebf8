"""The driver interface: readings into a UpsState, commands out to the device."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

from ..config.nutconf import UpsSection
from ..hardware.backend import Hardware
from ..state import CommandResult, UpsState
from .options import Number, Option, check_options


class DriverError(Exception):
    """A driver cannot start with this configuration; the message says why and how to fix it."""


class Driver:
    """Base class of all drivers.

    A driver owns exactly one :class:`UpsState`.  ``run()`` is its whole life:
    it marks the UPS connected, delivers readings with ``state.set(...)``
    followed by ``state.data_ok()`` (or ``state.data_stale(reason)`` when the
    device cannot be read), and marks it disconnected when it ends.  Commands
    arrive through :meth:`instcmd` and :meth:`set_var`, which return a
    :class:`CommandResult` or an awaitable giving one.
    """

    name = "driver"
    # The driver takes a plug's energy meter on its supply as its load (mains_meter).
    takes_mains_meter: ClassVar[bool] = False
    # The driver runs battery tests through a plug that feeds it (nutups.battery.testing).
    takes_battery_tests: ClassVar[bool] = False
    # Cells in series behind battery.voltage, when the driver knows (the shutdown
    # policy's voltage floor is per cell); None: unknown.
    series_cells: int | None = None
    # The loaded voltage per cell under which the cells are nearly empty (the policy's floor unless
    # `shutdown.voltage_floor` sets one); None: the policy's default.
    voltage_floor: float | None = None
    # The ups.conf options this driver reads, declared (drivers/options.py): `nutups config
    # check` checks a section against them without building the driver.
    options: ClassVar[dict[str, Option]] = {}

    @classmethod
    def hardware_for(cls, section: UpsSection, confpath: Path) -> Hardware | None:
        """The hardware this section's driver runs on, chosen once by whoever builds the driver
        (the daemon, the driver host) and passed in; None: the driver needs none of it."""
        return None

    @classmethod
    def check_section(cls, section: UpsSection, confpath: Path) -> list[str]:
        """What is wrong with this section's options, each as `[ups] message` (none: it starts)."""
        return check_options(cls.options, section.name, section.options, confpath)

    def __init__(
        self,
        state: UpsState,
        section: UpsSection,
        confpath: Path,
        clock: Callable[[], float] = time.monotonic,
        statepath: Path | None = None,
        datapath: Path | None = None,
        hardware: Hardware | None = None,
    ) -> None:
        self.state = state
        self.hardware = hardware  # from hardware_for()
        self.section = section
        self.confpath = confpath
        self.clock = clock
        self.statepath = statepath  # sockets
        # what survives a restart; without a datapath (config check) nothing is kept,
        # and a driver run by NUT's upsdrvctl keeps it in NUT's STATEPATH as before
        self.datapath = datapath if datapath is not None else statepath
        self.log = logging.getLogger(f"nutups.driver.{section.name}")
        # Mains present per the driver's own line, kept up to date even while other
        # readings fail and the UPS reports DATA-STALE; None: the driver cannot tell.
        self.mains: bool | None = None
        state.instcmd_handler = self.instcmd
        state.setvar_handler = self.set_var

    async def run(self) -> None:
        raise NotImplementedError

    def instcmd(self, command: str, param: str | None) -> CommandResult | Awaitable[CommandResult]:
        return CommandResult.UNKNOWN

    def mains_meter(self, watts: float) -> None:
        """A plug's meter reading on this UPS's supply (only where takes_mains_meter)."""

    def shutdown_needs(self, seconds: float | None) -> None:
        """The runtime the Pi's shutdown policy needs (None: no policy); a driver that judges LB
        itself (x120x) shows LB when its estimate reaches it, the others have nothing to do."""

    def set_var(self, name: str, value: str) -> CommandResult | Awaitable[CommandResult]:
        return CommandResult.UNKNOWN

    @classmethod
    def section_value(cls, section: UpsSection, confpath: Path, key: str) -> Any:
        """Option `key` of a section as its declared spec reads it (its default when ups.conf
        has none); DriverError when it is wrong."""
        spec = cls.options[key]
        raw = section.options.get(key)
        if raw is None:
            return spec.default
        try:
            return spec.parse(key, raw, confpath)
        except ValueError as exc:
            raise DriverError(f"[{section.name}] {exc}") from None

    def value(self, key: str) -> Any:
        """Option `key` of this driver's section (see section_value)."""
        return self.section_value(self.section, self.confpath, key)

    def option(self, key: str, default: str | None = None) -> str | None:
        return self.section.options.get(key, default)

    def float_option(self, key: str, default: float, minimum: float | None = None,
                     maximum: float | None = None) -> float:
        """A number option not declared in ``options`` (declare it: config check then sees it)."""
        raw = self.section.options.get(key)
        if raw is None:
            return default
        try:
            return Number(default, minimum, maximum).parse(key, raw, self.confpath)
        except ValueError as exc:
            raise DriverError(f"[{self.section.name}] {exc}") from None
