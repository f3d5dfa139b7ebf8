"""The `shutdown:` section of nutups.yaml: its schema and the settings it gives."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ..config.problems import ConfigProblem
from ..config.schema import Setting, check_section

SCHEMA = (
    Setting("grace", float, 30.0, "seconds on battery before anything may start", 0, 86400),
    Setting("hostsync", float, 15.0, "seconds after FSD to wait for the other logged-in hosts to log out",
            0, 3600),
    Setting("command", str, "systemctl poweroff", "the command that takes the Pi down, mains still off"),
    Setting("reboot_command", str, "systemctl reboot", "the command used instead when mains is back by then"),
    Setting("voltage_floor", float, 3.2, "volts per cell under load under which the Pi goes down, "
            "whatever the gauge says", 2.5, 4.0),
    Setting("cells", int, None, "cells in series behind battery.voltage (default: what the driver says; "
            "1 on every X120X)", 1, 24),
    Setting("debounce", int, 3, "readings in a row under the voltage floor before it counts", 1, 50),
    Setting("ups", str, None, "the UPS in ups.conf that powers this Pi (default: the first)"),
)


@dataclass(frozen=True)
class ShutdownSettings:
    grace: float = 30.0
    hostsync: float = 15.0
    command: str = "systemctl poweroff"
    reboot_command: str = "systemctl reboot"
    voltage_floor: float = 3.2  # per cell
    cells: int | None = None
    debounce: int = 3
    ups: str | None = None

    def argv(self, reboot: bool) -> list[str]:
        """The command as `run:` hooks split it: shlex words, no shell."""
        return shlex.split(self.reboot_command if reboot else self.command)


def parse_shutdown_config(data: dict, fn: str, key_lines: dict,
                          ups_names: list[str]) -> tuple[ShutdownSettings | None, list[ConfigProblem]]:
    """The policy's settings, or None when nutups.yaml has no `shutdown:` (the policy is off)."""
    if "shutdown" not in data:
        return None, []
    at = key_lines.get((id(data), "shutdown"))
    values, problems = check_section(data["shutdown"], "shutdown", SCHEMA, fn, key_lines, at)
    section = data["shutdown"] if isinstance(data["shutdown"], dict) else {}
    for key in ("command", "reboot_command"):
        try:
            if not shlex.split(values[key]):
                raise ValueError("no words")
        except ValueError as exc:
            problems.append(ConfigProblem(fn, key_lines.get((id(section), key), at),
                                          f"shutdown.{key}: cannot split {values[key]!r} into words ({exc})"))
            values[key] = SCHEMA[[s.key for s in SCHEMA].index(key)].default
    ups = values["ups"]
    if ups is not None and ups.lower() not in [n.lower() for n in ups_names]:
        problems.append(ConfigProblem(fn, key_lines.get((id(section), "ups"), at),
                                      f"shutdown.ups: no UPS {ups!r} in ups.conf (it has: "
                                      f"{', '.join(ups_names) or 'none'})"))
        values["ups"] = None
    return ShutdownSettings(**values), problems
