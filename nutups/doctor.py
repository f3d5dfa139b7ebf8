"""`nutups doctor`: checks this machine for what an X120X HAT needs, each failure with its fix."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
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
    path: str | None = None  # where to look for rpi-eeprom-config (default: $PATH)


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
        checks.append(_pld_pull_up(config, lines))
        overlay = [ln for ln in lines if ln.startswith("dtoverlay=") and "max1704" in ln]
        checks.append(Check("no kernel gauge overlay", not overlay, overlay[0] if overlay else "none",
                            f"remove '{overlay[0]}' from {config}: the kernel driver owns the gauge" if overlay else ""))
    checks.append(_power_off_on_halt(machine))
    bound = machine.sys / "bus" / "i2c" / "drivers" / "max17040"
    if bound.exists():
        checks.append(Check("gauge not bound to a kernel driver", False,
                            f"{bound} exists", "remove the max17040 overlay and reboot"))
    return checks


GPIO_PULLS = {"pu": "pull-up", "pd": "pull-down", "pn": "no pull", "np": "no pull"}


def _pld_pull_up(config: Path, lines: list[str]) -> Check:
    """The PLD line (GPIO6) needs a pull-up from boot: floating, it reads mains lost or
    present at random, and the Pi shuts down or boots in a loop.  config.txt's
    `gpio=PINS=OPTIONS` (pins: 6, 4-7 or 2,6; options: ip, op, pu, pd, pn/np, ...):
    the last line that names GPIO6 and a pull decides."""
    name = f"{config}: pull-up on GPIO6 (PLD)"
    fix = f"add gpio=6=ip,pu to {config} (PLD pulled up from boot), reboot"
    pull = None
    for ln in lines:
        key, _, rest = ln.partition("=")
        pins, _, options = rest.partition("=")
        if key != "gpio" or not options:
            continue
        if 6 not in _pins(pins):
            continue
        for option in options.split(","):
            if option in GPIO_PULLS:
                pull = option
    if pull == "pu":
        return Check(name, True, "present")
    if pull is None:
        return Check(name, False, "no gpio= line pulls GPIO6 up", fix)
    return Check(name, False, f"GPIO6 has {GPIO_PULLS[pull]}", fix)


def _pins(text: str) -> set[int]:
    pins: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        try:
            pins.update(range(int(low), int(high or low) + 1))
        except ValueError:
            continue
    return pins


def _power_off_on_halt(machine: Machine) -> Check:
    """A Pi 4/5 that halts with POWER_OFF_ON_HALT=0 keeps drawing power (its PMIC stays on),
    so the X120X never cuts its output, drains the battery, and misses the mains edge that
    would have powered the Pi up again.  Read with `rpi-eeprom-config` (no arguments: the
    bootloader's configuration)."""
    name = "EEPROM POWER_OFF_ON_HALT=1"
    fix = "sudo rpi-eeprom-config --edit, set POWER_OFF_ON_HALT=1, reboot"
    exe = shutil.which("rpi-eeprom-config", path=machine.path)
    if exe is None:
        return Check(name, None, "not checkable: no rpi-eeprom-config here (Raspberry Pi OS on a Pi 4 or 5 has it)")
    try:
        proc = subprocess.run([exe], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check(name, None, f"not checkable: rpi-eeprom-config: {getattr(exc, 'strerror', None) or exc}")
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return Check(name, None, f"not checkable: rpi-eeprom-config: {why}")
    value = None
    for ln in proc.stdout.splitlines():
        key, sep, v = ln.split("#", 1)[0].strip().partition("=")
        if sep and key.strip() == "POWER_OFF_ON_HALT":
            value = v.strip()
    if value == "1":
        return Check(name, True, "set")
    return Check(name, False, "not set (the default is 0)" if value is None else f"POWER_OFF_ON_HALT={value}", fix)


LOW_SPACE = 1 << 20  # under this much free space the event log and history soon stop being kept


def datapath_check(datapath: Path) -> Check:
    """Can nutups keep what must survive a restart (settings, learned load, events, history)?"""
    name = f"datapath {datapath}"
    fix = ("make it writable, or name a writable directory: datapath: in nutups.yaml "
           "(or --datapath; systemd's StateDirectory= sets it for the service)")
    existing = datapath
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK):
        why = "read-only file system" if _read_only_mount(existing) else "no write permission"
        return Check(name, False, f"cannot be written ({why}): settings set with upsrw, the learned load, "
                                  "the event log and the history are not kept over a restart", fix)
    try:
        st = os.statvfs(existing)
    except OSError as exc:
        return Check(name, False, f"cannot be checked: {exc.strerror}", fix)
    free = st.f_bavail * st.f_frsize
    if free < LOW_SPACE:
        return Check(name, False, f"writable, but only {free // 1024} KiB free: events wait in memory and the "
                                  "history stops being kept when it is full", "free space on that file system")
    detail = "writable" if existing == datapath else f"not there yet; {existing} is writable"
    return Check(name, True, f"{detail}, {free // (1 << 20)} MiB free")


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


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


__all__ = ["Check", "Machine", "datapath_check", "format_table", "hat_absent", "run_checks"]
