"""The `shutdown:` section of nutups.yaml: its schema and the settings it gives."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.schema import Checked, Fields, Number, Section, Text

DEFAULT_VOLTAGE_FLOOR = 3.2  # per cell: any Li-ion (the driver's own floor, when it has one, comes first)


@dataclass(frozen=True)
class ShutdownSettings:
    grace: float = 30.0  # seconds on battery before anything may start
    hostsync: float = 15.0  # seconds after FSD for the other logged-in hosts to log out
    poweroff: float = 30.0  # seconds the Pi takes from its command to off
    reserve: float = 180.0  # seconds of battery kept in hand beyond what the shutdown takes
    command: str = "systemctl poweroff"  # the Pi goes down, mains still off
    reboot_command: str = "systemctl reboot"  # used instead when mains is back by then
    # volts per cell under load: under it the Pi goes down, whatever the gauge says; None: the driver's (its
    # cells' chemistry: x120x `chemistry`), else DEFAULT_VOLTAGE_FLOOR
    voltage_floor: float | None = None
    cells: int | None = None  # cells in series behind battery.voltage; None: what the driver says
    debounce: int = 3  # readings in a row under the floor before it counts
    ups: str | None = None  # the UPS (ups.conf section) that powers this Pi; None: the first

    def argv(self, reboot: bool) -> list[str]:
        """The command as `run:` hooks split it: shlex words, no shell."""
        return shlex.split(self.reboot_command if reboot else self.command)


SETTINGS = {"shutdown": Fields({
    "grace": Number(0, 86400, unit="s"),
    "hostsync": Number(0, 3600, unit="s"),
    "poweroff": Number(0, 3600, unit="s"),
    "reserve": Number(0, 86400, unit="s"),
    "command": Text("a command (split into words as a shell would, but run without one)"),
    "reboot_command": Text("a command (split into words as a shell would, but run without one)"),
    "voltage_floor": Number(2.5, 4.0, unit="V per cell"),
    "cells": Number(1, 24, integer=True),
    "debounce": Number(1, 50, integer=True),
    "ups": Text("the name of a UPS in ups.conf"),
}, what="a mapping of shutdown settings")}


def build_shutdown_settings(values: dict[str, Any], walk: Checked, confpath: Path) -> ShutdownSettings | None:
    """The policy's settings, or None when nutups.yaml has no `shutdown:` (the policy is off)."""
    if "shutdown" not in values:
        return None
    given = dict(values["shutdown"])
    for key in ("command", "reboot_command"):
        if key in given:
            try:
                if not shlex.split(given[key]):
                    raise ValueError("no words")
            except ValueError as exc:
                walk.bad(f"shutdown.{key}", f"cannot split {given[key]!r} into words ({exc})")
                del given[key]
    for key in ("grace", "hostsync", "poweroff", "reserve", "voltage_floor"):
        if key in given:
            given[key] = float(given[key])
    return ShutdownSettings(**given)


SHUTDOWN = Section("shutdown", SETTINGS, build_shutdown_settings)
