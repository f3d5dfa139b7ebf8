"""The MAX17040/43/48 fuel gauge on the X120X, read over an smbus2-style I2C bus.

Registers are 16-bit and big-endian (MSB first on the wire).  SMBus words are
little-endian, so ``read_word_data`` gives the bytes swapped; we read both
bytes in one ``read_i2c_block_data`` transaction instead.  We never write to
the chip: a quick-start (MODE) or power-on reset (COMMAND) under load makes the
gauge's charge estimate wrong for hours.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Protocol

from .errors import HardwareError

DEFAULT_ADDRESS = 0x36
REG_VCELL = 0x02
REG_SOC = 0x04
REG_MODE = 0x06
REG_VERSION = 0x08
REG_CONFIG = 0x0C
REG_CRATE = 0x16
REG_STATUS = 0x1A
REG_COMMAND = 0xFE

MIN_PLAUSIBLE_V = 2.5
MAX_PLAUSIBLE_V = 4.5
MAX_PLAUSIBLE_SOC = 110.0  # the gauge reads up to ~106 % on a full cell: clamp; beyond: reject


class I2CBus(Protocol):
    """The part of smbus2.SMBus the gauge uses."""

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int, force: bool | None = None) -> list[int]: ...

    def close(self) -> None: ...


class GaugeError(HardwareError):
    """The gauge cannot be read."""


class ImplausibleReading(GaugeError):
    """The gauge answered with values no 1S Li-ion cell can have."""


def explain_oserror(exc: OSError, bus: int, address: int) -> GaugeError:
    """Turn the errors users hit into one clear line with its fix."""
    where = f"fuel gauge at 0x{address:02x} on /dev/i2c-{bus}"
    code = exc.errno
    if code in (errno.EREMOTEIO, errno.ENXIO, errno.EIO):
        return GaugeError(f"no answer from the {where} (Errno {code})",
                          "the HAT is missing or badly seated: check the pogo pins / header and the screws",
                          kind="missing")
    if code == errno.EBUSY:
        return GaugeError(f"the {where} is busy (a kernel driver owns it)",
                          "remove the max17040 battery overlay (dtoverlay=...max17040...) from "
                          "/boot/firmware/config.txt and reboot", kind="busy")
    if code in (errno.EACCES, errno.EPERM):
        return GaugeError(f"permission denied on /dev/i2c-{bus}",
                          "add the service user to the i2c group (sudo usermod -aG i2c USER) and log in again",
                          kind="permission")
    if code == errno.ENOENT:
        return GaugeError(f"/dev/i2c-{bus} does not exist",
                          "enable I2C: dtparam=i2c_arm=on in /boot/firmware/config.txt (or raspi-config), "
                          "then reboot", kind="nobus")
    return GaugeError(f"reading the {where} failed: {exc.strerror or exc}", kind="io")


def swap16(word: int) -> int:
    """Undo SMBus's little-endian word order for a big-endian register."""
    return ((word & 0xFF) << 8) | (word >> 8)


def vcell_volts(raw: int, chip: str) -> float:
    """VCELL register to volts: 12-bit left-aligned 1.25 mV units (17040/43), 78.125 uV (17048)."""
    if chip == "MAX17048":
        return raw * 78.125e-6
    return (raw >> 4) * 1.25e-3


def soc_percent(raw: int) -> float:
    """SOC register to percent: the high byte is whole percent, the low byte 1/256 %."""
    return raw / 256.0


def crate_percent_per_hour(raw: int) -> float:
    """CRATE register (MAX17048): signed, 0.208 %/hour per bit."""
    if raw & 0x8000:
        raw -= 0x10000
    return raw * 0.208


def chip_from_version(version: int) -> str:
    return "MAX17048" if (version & 0xFFF0) == 0x0010 else "MAX17040/43"


@dataclass(frozen=True, slots=True)
class GaugeReading:
    voltage: float  # V, cell
    soc: float  # %, clamped to 0..100
    raw_soc: float  # %, as the chip said
    crate: float | None  # %/h (MAX17048 only)


class FuelGauge:
    """Reads one MAX17040-family gauge.  Never writes to it."""

    def __init__(self, bus: I2CBus, bus_number: int = 1, address: int = DEFAULT_ADDRESS) -> None:
        self.bus = bus
        self.bus_number = bus_number
        self.address = address
        self.chip: str | None = None

    def _register(self, reg: int) -> int:
        try:
            data = self.bus.read_i2c_block_data(self.address, reg, 2)
        except OSError as exc:
            raise explain_oserror(exc, self.bus_number, self.address) from None
        if len(data) != 2:
            raise GaugeError(f"short read from register 0x{reg:02x}")
        return (data[0] << 8) | data[1]

    def identify(self) -> str:
        self.chip = chip_from_version(self._register(REG_VERSION))
        return self.chip

    def read(self) -> GaugeReading:
        if self.chip is None:
            self.identify()
        chip = self.chip or "MAX17040/43"
        voltage = vcell_volts(self._register(REG_VCELL), chip)
        raw_soc = soc_percent(self._register(REG_SOC))
        crate = crate_percent_per_hour(self._register(REG_CRATE)) if chip == "MAX17048" else None
        if not MIN_PLAUSIBLE_V <= voltage <= MAX_PLAUSIBLE_V:
            raise ImplausibleReading(f"implausible cell voltage {voltage:.3f} V", kind="implausible")
        if raw_soc > MAX_PLAUSIBLE_SOC:
            raise ImplausibleReading(f"implausible state of charge {raw_soc:.1f} %", kind="implausible")
        return GaugeReading(voltage, min(max(raw_soc, 0.0), 100.0), raw_soc, crate)

    def close(self) -> None:
        try:
            self.bus.close()
        except OSError:
            pass


def open_smbus(bus_number: int, address: int = DEFAULT_ADDRESS) -> FuelGauge:
    """The real gauge over smbus2 (installed with the `hardware` extra)."""
    try:
        from smbus2 import SMBus
    except ImportError:
        raise GaugeError("smbus2 is not installed", "pip install 'nutups[hardware]'", kind="nolib") from None
    try:
        bus = SMBus(bus_number)
    except OSError as exc:
        raise explain_oserror(exc, bus_number, address) from None
    return FuelGauge(bus, bus_number, address)
