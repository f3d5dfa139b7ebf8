"""The hardware a process runs on, chosen once (gpiozero's pin factory): the Pi's own, or the simulated HAT.

Each provides what the driver, the daemon and the driver host take from the
machine: the fuel gauge's I2C bus, gpiod (and where its chips are), the host
sensors, the load meter and the clock, and (simulated only) the control socket
that drives the simulator.  Code above takes a backend and never asks which one
it is.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .gauge import FuelGauge, open_smbus
from .gpio import import_gpiod
from .host import HostSensors
from .pmic import PmicLoadMeter
from .sim import CHIP_PATH, SimSensors, SimSMBus, SimulatedHat
from .simcontrol import SimControlServer


class Hardware:
    """The Raspberry Pi's own hardware: smbus2, gpiod (its chips found by label), the thermal
    zone and vcgencmd, the PMIC's load meter, and the monotonic clock."""

    # where the GPIO chips are: None, search /dev/gpiochip* (hardware/gpio.py find_chip)
    chip_paths: list[str] | None = None

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock

    def open_gauge(self, bus: int, address: int) -> FuelGauge:
        """The fuel gauge on I2C `bus` at `address` (GaugeError when it cannot be opened)."""
        return open_smbus(bus, address)

    def gpiod(self) -> Any:
        """The gpiod module (v2 API); GpioError when it is missing."""
        return import_gpiod()

    def sensors(self) -> Any:
        """The host sensors (``available()``, ``await read()``)."""
        return HostSensors()

    def load_meter(self) -> PmicLoadMeter:
        """The Pi 5's PMIC through vcgencmd (one that says why it cannot read where there is none)."""
        return PmicLoadMeter.on_this_machine() or PmicLoadMeter()

    def speed(self) -> float:
        """How many seconds of the clock pass in one real second."""
        return 1.0

    def control_server(self, path: Path, driver: Any, after_change: Callable[[], Awaitable[None]] | None = None,
                       outputs_state: Callable[[], dict] | None = None) -> SimControlServer | None:
        """The control socket of a simulator (`nutups sim`): real hardware has none."""
        return None


class SimulatedHardware(Hardware):
    """The simulated HAT: its gauge registers behind a simulated SMBus, its GPIO lines behind a
    simulated gpiod on /dev/gpiochip0, its host sensors and PMIC, and its own (speedable) clock."""

    chip_paths = [CHIP_PATH]

    def __init__(self, hat: SimulatedHat) -> None:
        super().__init__(hat.clock)
        self.hat = hat

    def open_gauge(self, bus: int, address: int) -> FuelGauge:
        return FuelGauge(SimSMBus(self.hat, bus), bus, address)

    def gpiod(self) -> Any:
        return self.hat.gpio

    def sensors(self) -> SimSensors:
        return SimSensors(self.hat)

    def load_meter(self) -> PmicLoadMeter:
        return PmicLoadMeter(source=self.hat.vcgencmd_pmic_read_adc)

    def speed(self) -> float:
        return self.hat.clock.speed or 1.0

    def control_server(self, path: Path, driver: Any, after_change: Callable[[], Awaitable[None]] | None = None,
                       outputs_state: Callable[[], dict] | None = None) -> SimControlServer:
        return SimControlServer(self.hat, path, driver, after_change=after_change, outputs_state=outputs_state)


__all__ = ["Hardware", "SimulatedHardware"]
