"""The relay and the smart plugs as NUT outlets, the buzzer as the UPS's beeper: so that
`upscmd` switches them and Home Assistant shows them as switches."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..state import CommandResult, UpsState
from .devices import AcDevice, PowerReading
from .outputs import RELAY_STATES, Outputs

log = logging.getLogger("nutups.outlets")


class Outlets:
    """outlet.N.* variables and outlet.N.load.on/off for the relay (outlet 1) and each
    smart plug; ups.beeper.status with beeper.enable/disable/mute for the buzzer.
    Other commands go on to the driver."""

    def __init__(self, state: UpsState, outputs: Outputs | None, devices: dict[str, AcDevice],
                 poll_every: float = 30.0) -> None:
        self.state = state
        self.outputs = outputs
        self.devices = devices
        self.poll_every = poll_every
        self.beeper = "enabled"
        self.unreachable: set[str] = set()  # plugs whose last read failed
        self.next_handler = state.instcmd_handler
        self.outlets: dict[int, tuple[str, AcDevice | None]] = {}
        n = 1
        if outputs is not None and "relay" in outputs.lines:
            self.outlets[n] = ("relay", None)
            n += 1
        for name, dev in devices.items():
            self.outlets[n] = (name, dev)
            n += 1
        for i, (name, dev) in self.outlets.items():
            state.set(f"outlet.{i}.id", str(i))
            state.set(f"outlet.{i}.desc", name)
            state.set(f"outlet.{i}.switchable", "yes")
            status = ("on" if outputs.lines["relay"].level else "off") if dev is None and outputs else "off"
            state.set(f"outlet.{i}.status", status)
            state.add_command(f"outlet.{i}.load.on")
            state.add_command(f"outlet.{i}.load.off")
        if outputs is not None and "buzzer" in outputs.lines:
            state.set("ups.beeper.status", self.beeper)
            for cmd in ("beeper.enable", "beeper.disable", "beeper.mute"):
                state.add_command(cmd)
        state.instcmd_handler = self.instcmd

    @property
    def buzzer_allowed(self) -> bool:
        return self.beeper == "enabled"

    def relay_changed(self) -> None:
        """An event action moved the relay: show it."""
        for i, (_, dev) in self.outlets.items():
            if dev is None and self.outputs is not None:
                self.state.set(f"outlet.{i}.status", "on" if self.outputs.lines["relay"].level else "off")

    def instcmd(self, command: str, param: str | None) -> CommandResult | Awaitable[CommandResult]:
        cmd = command.lower()
        if cmd.startswith("outlet.") and cmd.count(".") == 3:
            _, num, load, what = cmd.split(".")
            if num.isdigit() and int(num) in self.outlets and load == "load" and what in ("on", "off"):
                return self._switch(int(num), what == "on")
        if cmd in ("beeper.enable", "beeper.disable", "beeper.mute") and "ups.beeper.status" in self.state.variables:
            self.beeper = {"beeper.enable": "enabled", "beeper.disable": "disabled", "beeper.mute": "muted"}[cmd]
            self.state.set("ups.beeper.status", self.beeper)
            if self.beeper != "enabled" and self.outputs is not None:
                self.outputs.play("buzzer", [(False, None)], "off")
            return CommandResult.SUCCESS
        if self.next_handler is not None:
            return self.next_handler(command, param)
        return CommandResult.UNKNOWN

    async def _switch(self, num: int, on: bool) -> CommandResult:
        name, dev = self.outlets[num]
        if dev is None:
            assert self.outputs is not None
            self.outputs.play("relay", RELAY_STATES["on" if on else "off"], "on" if on else "off")
        else:
            try:
                await asyncio.wait_for(dev.switch(on), dev.timeout)
            except (TimeoutError, OSError, ConnectionError) as exc:
                log.warning("outlet %d (%s): %s", num, name, exc or type(exc).__name__)
                return CommandResult.FAILED
        self.state.set(f"outlet.{num}.status", "on" if on else "off")
        log.info("outlet %d (%s) switched %s", num, name, "on" if on else "off")
        return CommandResult.SUCCESS

    def _unreachable(self, num: int, name: str, exc: BaseException) -> None:
        """Said once at WARNING, then quiet (DEBUG) until the plug answers again."""
        why = str(exc) or type(exc).__name__
        if name in self.unreachable:
            log.debug("outlet %d (%s) still unreadable: %s", num, name, why)
        else:
            self.unreachable.add(name)
            log.warning("outlet %d (%s) unreadable: %s; said once, until it answers again", num, name, why)

    async def poll(self, on_reading: Callable[[PowerReading], None] | None = None,
                   on_power: Callable[[str, float], None] | None = None) -> None:
        """Refresh the plugs' states; the first plug with a meter gives its reading to ``on_reading``
        (input.voltage, and the current the overcurrent events watch); every plug's power
        reading goes to ``on_power(name, watts)``."""
        while True:
            first = True
            for i, (name, dev) in self.outlets.items():
                if dev is None:
                    continue
                try:
                    reading = await asyncio.wait_for(dev.read(), dev.timeout)
                except Exception as exc:  # an unreachable plug must not stop the others
                    self._unreachable(i, name, exc)
                    continue
                if name in self.unreachable:
                    self.unreachable.discard(name)
                    log.info("outlet %d (%s) answers again", i, name)
                dev.last = reading
                if reading.on is not None:
                    self.state.set(f"outlet.{i}.status", "on" if reading.on else "off")
                if reading.power_w is not None:
                    self.state.set(f"outlet.{i}.realpower", f"{reading.power_w:.1f}")
                    if on_power is not None:
                        try:
                            on_power(name, reading.power_w)
                        except Exception:  # a listener's bug must not stop the plugs' polling
                            log.exception("plug %s: its power reading could not be used", name)
                if first and on_reading is not None and (reading.voltage is not None or reading.current is not None):
                    on_reading(reading)
                    first = False
            await asyncio.sleep(self.poll_every)
