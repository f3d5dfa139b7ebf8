"""The dummy-ups driver: serves a NUT .dev/.seq file the way NUT's dummy-ups does."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..parseconf import read_config_lines
from ..state import CommandResult
from .base import Driver, DriverError
from .options import Choice, Number

DUMMY_INTERNAL_VERSION = "0.15"  # what dummy-ups 2.8.0 reports; ours follows its rules

# dummy-ups' table of known variables (drivers/dummy-ups.h): their flags when a
# file sets them.  Numbers are plain (NUMBER); strings carry their maximum length.
# Any other variable becomes RW STRING:32.
_KNOWN_STRINGS = {
    "ups.mfr": 32, "ups.model": 32, "ups.status": 32, "ups.serial": 32, "ups.alarm": 32,
    "ups.time": 16, "ups.date": 16, "ups.mfr.date": 16, "ups.firmware": 16,
    "ups.firmware.aux": 16, "ups.id": 16, "ups.test.result": 16,
    "input.transfer.reason": 1, "input.sensitivity": 1, "input.quality": 6,
}
_KNOWN_NUMBERS = {
    "ups.load", "ups.temperature", "ups.delay.start", "ups.delay.reboot", "ups.delay.shutdown",
    "ups.test.interval", "input.voltage", "input.voltage.maximum", "input.voltage.minimum",
    "input.voltage.nominal", "input.transfer.low", "input.transfer.high", "input.frequency",
    "input.transfer.boost.low", "input.transfer.boost.high", "input.transfer.trim.low",
    "input.transfer.trim.high", "output.voltage", "output.frequency", "output.current",
    "battery.charge", "battery.charge.low", "battery.voltage", "battery.current",
    "battery.runtime", "battery.runtime.low", "battery.charge.restart", "battery.temperature",
    "battery.voltage.nominal", "ambient.temperature", "ambient.temperature.alarm",
    "ambient.temperature.high", "ambient.temperature.low", "ambient.humidity",
    "ambient.humidity.alarm", "ambient.humidity.high", "ambient.humidity.low",
}
MAX_VALUE = 127  # dummy-ups assembles values in a 128-byte buffer


@dataclass(slots=True)
class Step:
    """Assignments up to the next TIMER line, then how long to wait."""

    assignments: list[tuple[str, str | None]]  # None: the line had no value
    delay: float = 0.0


def parse_dev(data: bytes) -> list[Step]:
    """Read a .dev/.seq file as dummy-ups does (parse_data_file in drivers/dummy-ups.c)."""
    steps = [Step([])]
    for _lineno, line in read_config_lines(data):
        if line.error is not None or not line.words:
            continue  # dummy-ups skips a line it cannot parse
        words = line.words
        if words[0].startswith("TIMER"):
            try:
                delay = float(int(words[1])) if len(words) > 1 else 0.0
            except ValueError:
                delay = 0.0
            steps[-1].delay = max(delay, 0.0)
            steps.append(Step([]))
            continue
        name = words[0].split(":", 1)[0]  # dummy-ups cuts the name at its first ':'
        if not name or name.startswith("driver."):
            continue  # the driver.* collection belongs to the serving driver
        # Values are the remaining words joined by one space, cut to dummy-ups'
        # buffer.  Deviation: for a line with no value dummy-ups reuses the
        # previous line's value (a stale buffer); we keep the variable, empty.
        value = " ".join(words[1:])[:MAX_VALUE]
        steps[-1].assignments.append((name, value if len(words) > 1 else None))
    if len(steps) > 1 and not steps[-1].assignments:
        steps.pop()
    return steps


class DummyDriver(Driver):
    """`driver = dummy-ups`, `port = FILE.dev` (relative to the confpath)."""

    name = "dummy-ups"
    options = {
        "mode": Choice(None, ("dummy-once", "dummy-loop", "dummy"), says="dummy-once, dummy-loop or dummy",
                       fold=False),
        "pollinterval": Number(2.0, minimum=0.1),
    }

    async def run(self) -> None:
        port = self.section.port
        if not port:
            raise DriverError(f"[{self.section.name}] dummy-ups needs port = FILE.dev")
        self.path = Path(port) if os.path.isabs(port) else self.confpath / port
        mode = self.value("mode")
        if mode is None:
            mode = "dummy-loop" if port.endswith(".seq") else "dummy-once" if port.endswith(".dev") else "dummy"
        self.mode = mode
        self.pollinterval = self.value("pollinterval")
        self._init_variables()
        self._complained = False
        state = self.state
        try:
            if mode == "dummy-once":
                await self._run_once()
            else:
                await self._run_loop()
        finally:
            state.connected = False

    def _init_variables(self) -> None:
        st = self.state
        st.set("ups.mfr", "Dummy Manufacturer", rw=True, string_len=32)
        st.set("ups.model", "Dummy UPS", rw=True, string_len=32)
        st.set("ups.status", "OL", rw=True, string_len=32)
        st.set("device.type", "ups")
        st.set("driver.name", "dummy-ups")
        st.set("driver.version", __version__)
        st.set("driver.version.internal", DUMMY_INTERNAL_VERSION)
        st.set("driver.parameter.mode", self.mode)
        st.set("driver.parameter.pollinterval", self.option("pollinterval", "2"))
        st.set("driver.parameter.port", self.section.port or "")
        st.set("driver.parameter.synchronous", self.option("synchronous", "auto"))
        for key, value in self.section.options.items():
            st.set(f"driver.parameter.{key}", value)
        st.add_command("load.off")
        self._mirror_device()

    def _mirror_device(self) -> None:
        # NUT drivers publish device.mfr/model/serial from ups.mfr/model/serial.
        st = self.state
        for src in ("mfr", "model", "serial"):
            value = st.value(f"ups.{src}")
            if value is not None:
                st.set(f"device.{src}", value)

    def _read_steps(self) -> list[Step] | None:
        """Parse the file; while it cannot be read the UPS reports DRIVER-NOT-CONNECTED,
        as it would with NUT, whose dummy-ups exits then."""
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            if self.state.connected or not self._complained:
                self.log.error("cannot read %s: %s; the UPS is unavailable until it is back",
                               self.path, exc.strerror)
                self._complained = True
            self.state.connected = False
            return None
        if not self.state.connected:
            if self._complained:
                self.log.info("%s is readable again", self.path)
            self._complained = False
            self.state.connected = True
        return parse_dev(data)

    def _apply(self, step: Step) -> None:
        for name, value in step.assignments:
            self._setvar(name, value if value is not None else "", keep_empty=value is None)
        self._mirror_device()

    def _setvar(self, name: str, value: str, keep_empty: bool = False) -> None:
        """dummy-ups' setvar(): known variables get their table flags, others RW STRING:32,
        and an empty value removes the variable."""
        st = self.state
        if name.lower().startswith("ups.status"):
            st.set("ups.status", value)
            return
        if value == "" and not keep_empty:
            st.delete(name)
            return
        low = name.lower()
        if low in _KNOWN_STRINGS:
            st.set(name, value, rw=True, string_len=_KNOWN_STRINGS[low])
        elif low in _KNOWN_NUMBERS:
            st.set(name, value, rw=True, string_len=0)
        else:
            st.set(name, value, rw=True, string_len=32)

    def _signature(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    async def _run_once(self) -> None:
        """Read the file, then re-read it whenever it changes (dummy-once)."""
        seen: tuple[int, int] | None = None
        pending: list[Step] = []
        wait_until = 0.0
        while True:
            sig = self._signature()
            if sig is None:
                self._read_steps()  # logs the reason and marks the data stale
            elif sig != seen or not self.state.connected:  # changed, or back after it was gone
                steps = self._read_steps()
                if steps is not None:
                    seen = sig
                    pending = list(steps)
                    wait_until = 0.0
            now = self.clock()
            while pending and now >= wait_until:
                step = pending.pop(0)
                self._apply(step)
                wait_until = now + step.delay
            if sig is not None and seen == sig and self.state.connected:
                self.state.data_ok()
            await asyncio.sleep(min(self.pollinterval, 0.5))

    async def _run_loop(self) -> None:
        """Play the file's TIMER steps over and over (dummy-loop, .seq files)."""
        while True:
            steps = self._read_steps()
            if not steps:
                await asyncio.sleep(self.pollinterval)
                continue
            for step in steps:
                self._apply(step)
                self.state.data_ok()
                await asyncio.sleep(max(step.delay, 0.0) or self.pollinterval)

    def set_var(self, name: str, value: str) -> CommandResult:
        self._setvar(name, value)
        return CommandResult.SUCCESS

    def instcmd(self, command: str, param: str | None) -> CommandResult:
        self.log.info("instcmd: unknown command [%s] [%s]", command, param)
        return CommandResult.UNKNOWN
