"""`nutups doctor`: checks this machine for what an X120X HAT needs, each failure with its fix."""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .hardware.gauge import DEFAULT_ADDRESS, FuelGauge, GaugeError
from .hardware.gpio import GpioError, find_chip

BOOT_CONFIGS = ("/boot/firmware/config.txt", "/boot/config.txt")


@dataclass
class Check:
    name: str
    ok: bool | None  # None: skipped
    detail: str
    fix: str = ""


@dataclass
class Machine:
    """Where the doctor looks; tests point it at fakes."""

    dev: Path = Path("/dev")
    sys: Path = Path("/sys")
    boot_configs: tuple[str, ...] = BOOT_CONFIGS
    user: str = field(default_factory=lambda: pwd.getpwuid(os.geteuid()).pw_name)
    open_bus: Callable[[int], Any] | None = None  # -> an smbus2.SMBus-like object
    gpiod: Any = None
    gpiochips: list[str] | None = None


def _groups(user: str) -> set[str]:
    try:
        gid = pwd.getpwnam(user).pw_gid
    except KeyError:
        return set()
    names = {g.gr_name for g in grp.getgrall() if user in g.gr_mem}
    try:
        names.add(grp.getgrgid(gid).gr_name)
    except KeyError:
        pass
    return names


def run_checks(machine: Machine, bus: int = 1, address: int = DEFAULT_ADDRESS) -> list[Check]:
    checks: list[Check] = []
    dev = machine.dev / f"i2c-{bus}"
    has_bus = dev.exists() or machine.open_bus is not None
    checks.append(Check(f"I2C bus /dev/i2c-{bus}", has_bus,
                        "present" if has_bus else "missing",
                        "" if has_bus else "enable I2C: add dtparam=i2c_arm=on to /boot/firmware/config.txt, reboot"))

    # the fuel gauge
    if has_bus:
        try:
            if machine.open_bus is not None:
                smbus = machine.open_bus(bus)
            else:
                from smbus2 import SMBus

                smbus = SMBus(bus)
            gauge = FuelGauge(smbus, bus, address)
            chip = gauge.identify()
            r = gauge.read()
            checks.append(Check(f"fuel gauge at 0x{address:02x}", True, f"{chip}: {r.voltage:.2f} V, {r.raw_soc:.1f} %"))
            gauge.close()
        except ImportError:
            checks.append(Check(f"fuel gauge at 0x{address:02x}", False, "smbus2 is not installed",
                                "pip install 'nutups[hardware]'"))
        except GaugeError as exc:
            checks.append(Check(f"fuel gauge at 0x{address:02x}", False, str(exc).split(": ")[0], exc.fix))
        except OSError as exc:
            checks.append(Check(f"fuel gauge at 0x{address:02x}", False, str(exc)))
    else:
        checks.append(Check(f"fuel gauge at 0x{address:02x}", None, "skipped: no I2C bus"))

    # GPIO lines
    gpiod = machine.gpiod
    if gpiod is None:
        try:
            import gpiod as real_gpiod

            gpiod = real_gpiod if hasattr(real_gpiod, "request_lines") else None
            if gpiod is None:
                checks.append(Check("gpiod (libgpiod v2)", False, "the installed gpiod is the v1 API",
                                    "pip install 'gpiod>=2.1'"))
        except ImportError:
            checks.append(Check("gpiod (libgpiod v2)", False, "not installed", "pip install 'nutups[hardware]'"))
    if gpiod is not None:
        for line in ("GPIO6", "GPIO16"):
            try:
                path, offset = find_chip(gpiod, line, None, machine.gpiochips)
                checks.append(Check(f"GPIO line {line}", True, f"{path} offset {offset}"))
            except GpioError as exc:
                checks.append(Check(f"GPIO line {line}", False, str(exc).split(": ")[0], exc.fix))
    else:
        checks.append(Check("GPIO lines GPIO6/GPIO16", None, "skipped: no gpiod"))

    # permissions
    if os.geteuid() == 0 and machine.user == "root":
        checks.append(Check("groups i2c, gpio", True, "running as root"))
    else:
        groups = _groups(machine.user)
        missing = [g for g in ("i2c", "gpio") if g not in groups]
        checks.append(Check("groups i2c, gpio", not missing,
                            f"{machine.user} is in {', '.join(sorted(groups & {'i2c', 'gpio'})) or 'neither'}",
                            f"sudo usermod -aG {','.join(missing)} {machine.user}, then log in again" if missing else ""))

    # boot configuration
    config = next((Path(p) for p in machine.boot_configs if Path(p).exists()), None)
    if config is None:
        checks.append(Check("boot config", None, "no /boot/firmware/config.txt: not a Raspberry Pi OS install?"))
    else:
        lines = [ln.split("#", 1)[0].strip().replace(" ", "") for ln in config.read_text(errors="replace").splitlines()]
        i2c_on = any(ln in ("dtparam=i2c_arm=on", "dtparam=i2c=on") for ln in lines)
        checks.append(Check(f"{config}: dtparam=i2c_arm=on", i2c_on, "present" if i2c_on else "missing",
                            "" if i2c_on else f"add dtparam=i2c_arm=on to {config}, reboot"))
        pld = any(ln.startswith("gpio=6=ip") for ln in lines)
        checks.append(Check(f"{config}: gpio=6=ip,pu", pld, "present" if pld else "missing",
                            "" if pld else f"add gpio=6=ip,pu to {config} (PLD readable from boot), reboot"))
        overlay = [ln for ln in lines if ln.startswith("dtoverlay=") and "max1704" in ln]
        checks.append(Check("no kernel gauge overlay", not overlay, overlay[0] if overlay else "none",
                            f"remove '{overlay[0]}' from {config}: the kernel driver owns the gauge" if overlay else ""))
    bound = machine.sys / "bus" / "i2c" / "drivers" / "max17040"
    if bound.exists():
        checks.append(Check("gauge not bound to a kernel driver", False,
                            f"{bound} exists", "remove the max17040 overlay and reboot"))
    return checks


def hat_absent(checks: list[Check]) -> bool:
    return any(c.name.startswith(("I2C bus", "fuel gauge")) and c.ok is False for c in checks)


def format_table(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    out = []
    for c in checks:
        mark = {True: "PASS", False: "FAIL", None: "SKIP"}[c.ok]
        out.append(f"{mark}  {c.name:{width}}  {c.detail}")
        if c.ok is False and c.fix:
            out.append(f"      {'':{width}}  fix: {c.fix}")
    return "\n".join(out)


__all__ = ["Check", "Machine", "format_table", "hat_absent", "run_checks"]
