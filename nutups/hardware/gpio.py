"""The X120X's GPIO lines over libgpiod v2 (PyPI `gpiod` >= 2.1): mains detection (PLD)
with edge events, and charge control.

The gpiod module is passed in, so the same code runs on a Pi, over the
simulator's lines, and over the test fakes.  The gpiochip is found by its
label or by a line name, never by number: the Pi 5's header chip moved from
gpiochip4 to gpiochip0 in kernel 6.6.45 and again in 6.12.
"""

from __future__ import annotations

import errno
import glob
from datetime import timedelta
from typing import Any

from .errors import HardwareError

HEADER_CHIP_LABELS = ("pinctrl-rp1", "pinctrl-bcm2711", "pinctrl-bcm2835")
CONSUMER = "nutups"


class GpioError(HardwareError):
    """A GPIO chip or line cannot be used."""


def explain(exc: OSError, what: str) -> GpioError:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return GpioError(f"permission denied on {what}",
                         "add the service user to the gpio group (sudo usermod -aG gpio USER)", kind="permission")
    if exc.errno == errno.EBUSY:
        return GpioError(f"{what} is in use by another program",
                         "stop the other program (e.g. the vendor's pld.py) or remove a gpio overlay on that pin",
                         kind="busy")
    return GpioError(f"{what}: {exc.strerror or exc}")


def find_chip(gpiod: Any, line: str | int, chip: str | None = None,
              paths: list[str] | None = None) -> tuple[str, int]:
    """Return (chip path, line offset) for a header line.

    ``chip`` overrides the search: a path (/dev/gpiochip0) or a label.  Without
    it, the chip is the one labelled like a Raspberry Pi header controller or,
    failing that, the first one that knows the line's name (GPIO6).
    """
    candidates = paths if paths is not None else sorted(glob.glob("/dev/gpiochip*"))
    if chip and chip.startswith("/"):
        candidates = [chip]
    name = line if isinstance(line, str) and not str(line).isdigit() else None
    offset_hint = int(line) if name is None else None
    found: list[tuple[int, str, int]] = []
    for path in candidates:
        try:
            if hasattr(gpiod, "is_gpiochip_device") and not gpiod.is_gpiochip_device(path):
                continue
            c = gpiod.Chip(path)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise explain(exc, path) from None
            continue
        try:
            label = c.get_info().label
            if chip and not chip.startswith("/") and label != chip:
                continue
            rank = HEADER_CHIP_LABELS.index(label) if label in HEADER_CHIP_LABELS else len(HEADER_CHIP_LABELS)
            if name is not None:
                try:
                    offset = c.line_offset_from_id(name)
                except (OSError, ValueError):
                    continue
            else:
                if rank == len(HEADER_CHIP_LABELS) and not chip:
                    continue
                offset = offset_hint  # type: ignore[assignment]
            found.append((rank, path, offset))
        finally:
            c.close()
    if not found:
        raise GpioError(
            f"no gpiochip with line {line}" + (f" (chip {chip})" if chip else ""),
            "is this a Raspberry Pi? set gpiochip = /dev/gpiochipN and pld_line / charge_line in ups.conf",
            kind="nochip")
    found.sort()
    return found[0][1], found[0][2]


class PowerLossLine:
    """The PLD input: True while mains is present.  ``fd`` becomes readable on an edge."""

    def __init__(self, gpiod: Any, path: str, offset: int, active_high: bool = True,
                 debounce_ms: int = 10) -> None:
        self.gpiod = gpiod
        self.offset = offset
        self.active_high = active_high
        settings = gpiod.LineSettings(
            direction=gpiod.line.Direction.INPUT,
            edge_detection=gpiod.line.Edge.BOTH,
            bias=gpiod.line.Bias.PULL_UP,
            debounce_period=timedelta(milliseconds=debounce_ms),
        )
        try:
            self.request = gpiod.request_lines(path, consumer=CONSUMER, config={offset: settings})
        except OSError as exc:
            raise explain(exc, f"{path} line {offset}") from None

    @property
    def fd(self) -> int:
        return self.request.fd

    def _mains(self, active: bool) -> bool:
        return active if self.active_high else not active

    def read(self) -> bool:
        try:
            value = self.request.get_value(self.offset)
        except OSError as exc:
            raise explain(exc, f"line {self.offset}") from None
        return self._mains(value == self.gpiod.line.Value.ACTIVE)

    def read_events(self) -> list[bool]:
        """Drain pending edges; each is the mains state it leads to, oldest first."""
        try:
            events = self.request.read_edge_events()
        except OSError as exc:
            raise explain(exc, f"line {self.offset}") from None
        rising = self.gpiod.EdgeEvent.Type.RISING_EDGE
        return [self._mains(e.event_type == rising) for e in events]

    def close(self) -> None:
        self.request.release()


class ChargeControl:
    """GPIO16: held high, charging is off.  Released (undriven), the charger runs."""

    def __init__(self, gpiod: Any, path: str, offset: int) -> None:
        self.gpiod = gpiod
        self.path = path
        self.offset = offset
        self.request = None

    @property
    def charging_enabled(self) -> bool:
        return self.request is None

    def disable_charging(self) -> None:
        if self.request is not None:
            return
        g = self.gpiod
        settings = g.LineSettings(direction=g.line.Direction.OUTPUT, output_value=g.line.Value.ACTIVE)
        try:
            self.request = g.request_lines(self.path, consumer=CONSUMER, config={self.offset: settings})
        except OSError as exc:
            raise explain(exc, f"{self.path} line {self.offset}") from None

    def enable_charging(self) -> None:
        if self.request is not None:
            self.request.release()
            self.request = None

    def close(self) -> None:
        # Releasing the line lets the charger run again, which is the safe default.
        self.enable_charging()


def import_gpiod() -> Any:
    try:
        import gpiod
    except ImportError:
        raise GpioError("the gpiod module (libgpiod v2) is not installed",
                        "pip install 'nutups[hardware]' (gpiod >= 2.1; Debian's python3-libgpiod is the old v1 API)",
                        kind="nolib") from None
    if not hasattr(gpiod, "request_lines"):
        raise GpioError("the installed gpiod module is the v1 API",
                        "pip install 'gpiod>=2.1' in nutups's environment", kind="nolib")
    return gpiod
