"""Readings -> events -> the log -> actions.  The log line is written before any action
starts; actions run as tasks with timeouts and never hold up the server or the log."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..external import run_program
from ..state import UpsState
from .config import EventsConfig
from .detector import EventDetector, Snapshot, snapshot_from_flags
from .log import EventLog
from .outputs import BUZZER_PATTERNS, LED_PATTERNS, RELAY_STATES, Outputs
from .types import Event, EventType

log = logging.getLogger("nutups.events")


# A host sensor's name in available() -> the field of its reading in read()'s answer
SENSOR_FIELDS = {"temperature": "temperature", "dc_out": "dc_out_ok", "current": "current"}


@dataclass
class SensorReadings:
    """The latest reading of each sensor of the HAT's host, each field with one writer: the
    host sensors for what they have (available()), a smart plug's meter for the current
    when they have none.  None: nothing read (yet)."""

    temperature: float | None = None
    dc_out_ok: bool | None = None
    current: float | None = None


class EventEngine:
    """Watches every UPS; writes events; runs their actions."""

    def __init__(self, config: EventsConfig, states: list[UpsState], event_log: EventLog | None,
                 outputs: Outputs | None = None, sensors: Any = None,
                 devices: dict[str, Any] | None = None, env: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.log = event_log
        self.outputs = outputs
        self.sensors = sensors
        self.devices = devices or {}
        self.env = env
        self.clock = clock
        self.detectors = {s.name: EventDetector(s.name, self.emit, config.thresholds, self._baseline)
                          for s in states}
        self.states = states
        self.readings = SensorReadings()
        available = sensors.available() if sensors is not None else {}
        # the fields the host sensors write; the rest are a plug's (the current on a Pi)
        self._sensor_fields = tuple(SENSOR_FIELDS[k] for k, there in available.items()
                                    if there and k in SENSOR_FIELDS)
        self._tasks: set[asyncio.Task] = set()
        self.recent: list[Event] = []
        self.outlets = None  # Outlets, when the relay or plugs are NUT outlets
        self._listeners: list[Callable[[Event], None]] = []
        self._by_flags: set[str] = set()  # UPSes of other NUT servers (watch_remote)
        for s in states:
            s.on_publish(self.observe)

    def watch_remote(self, state: UpsState) -> None:
        """Also watch a UPS of another NUT server (nutups/monitor): its events come from its
        status flags (OB, LB, OFF ...), its mapping's actions run as for ours; it sets no
        baseline on the Pi's outputs."""
        self.detectors[state.name] = EventDetector(state.name, self.emit, self.config.thresholds)
        self._by_flags.add(state.name)
        state.on_publish(self.observe)

    def on_event(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener(event)`` for each event, once it is in the log (the dashboard,
        history, metrics and MQTT observe events through this, as they observe states
        through UpsState.on_publish)."""
        self._listeners.append(listener)

    def reload(self, config: EventsConfig) -> None:
        """SIGHUP: the new mapping, thresholds and time limits apply from the next reading on
        (outputs, devices and the event log stay as they were started)."""
        for name in ("actions", "thresholds", "action_timeout", "action_retries", "hook_timeout"):
            setattr(self.config, name, getattr(config, name))
        for detector in self.detectors.values():
            detector.use(config.thresholds)

    def observe(self, state: UpsState) -> None:
        if state.name in self._by_flags:
            self.detectors[state.name].observe(snapshot_from_flags(state))
            return
        snap = Snapshot.from_state(state)
        if state is self.states[0]:
            r = self.readings
            snap.temperature, snap.dc_out_ok, snap.current = r.temperature, r.dc_out_ok, r.current
        self.detectors[state.name].observe(snap)

    async def read_sensors(self) -> None:
        """Read the host sensors now; each of their fields takes its new value (a sensor
        without an answer this time keeps its last one)."""
        if self.sensors is None:
            return
        values = await self.sensors.read()
        for name in self._sensor_fields:
            if name in values:
                setattr(self.readings, name, values[name])

    def plug_current(self, amps: float) -> None:
        """A smart plug's meter read ``amps``: the current the overcurrent events watch,
        unless the host sensors measure it themselves (the simulated HAT does)."""
        if "current" not in self._sensor_fields:
            self.readings.current = amps

    def emit(self, event: Event) -> None:
        actions = self.config.actions.get(event.type)
        if actions is not None and actions.dashboard_notify:
            event.dashboard_notify = True
        if self.log is not None:
            try:
                self.log.append(event)  # on disk before any action runs
            except OSError as exc:
                log.error("cannot write the event log %s: %s", self.log.path, exc.strerror)
        log.info("event %s on %s: %s", event.type, event.ups, event.message)
        self.recent = (self.recent + [event])[-100:]
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # an observer's bug must not stop the event's actions
                log.exception("event listener failed on %s", event.type)
        if actions is not None:
            self._start_actions(event, actions)

    def _baseline(self, kind: EventType) -> None:
        """At start, the LEDs and the relay show the state the UPS is in (mains up: as after
        AC_POWER_RESTORED), not all-low until the next event.  No event is logged, no hooks, no
        plugs and no buzzer: nothing happened."""
        actions = self.config.actions.get(kind)
        if actions is None or self.outputs is None or not (actions.leds or actions.relay):
            return
        log.info("at start: LEDs and relay as %s says", kind)
        self._set_outputs(actions, with_buzzer=False)

    def _set_outputs(self, actions, with_buzzer: bool = True) -> None:
        out = self.outputs
        assert out is not None
        for led, pattern in actions.leds:
            if led in out.lines:
                out.play(led, LED_PATTERNS[pattern], pattern)
        if actions.relay and "relay" in out.lines:
            out.play("relay", RELAY_STATES[actions.relay], actions.relay)
            if self.outlets is not None:
                self.outlets.relay_changed()
        if with_buzzer and actions.buzzer and "buzzer" in out.lines:
            if self.outlets is None or self.outlets.buzzer_allowed or actions.buzzer == "off":
                out.play("buzzer", BUZZER_PATTERNS[actions.buzzer], actions.buzzer)

    def _start_actions(self, event: Event, actions) -> None:
        if self.outputs is not None:
            self._set_outputs(actions)  # GPIO first and synchronously: the line changes before emit() returns
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if actions.run:
            self._spawn(loop, self._hook(event, actions.run), event, f"run {actions.run}")
        for name, action in actions.devices.items():
            device = self.devices.get(name)
            if device is not None:
                self._spawn(loop, self._device(device, action, event), event, f"{name} {action}")

    def _spawn(self, loop, coro, event: Event, what: str) -> None:
        task = loop.create_task(self._guard(coro, event, what))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, coro, event: Event, what: str) -> None:
        try:
            await coro
        except Exception as exc:
            text = str(exc) or type(exc).__name__
            log.warning("action %s for %s failed: %s", what, event.type, text)
            if event.type != EventType.ACTION_FAILED:  # never a storm of failures about failures
                self.emit(Event(EventType.ACTION_FAILED, event.ups, f"{what}: {text}"))

    async def _hook(self, event: Event, command: str) -> None:
        env = dict(self.env if self.env is not None else os.environ)
        env.update({
            "NUTUPS_EVENT": str(event.type), "NUTUPS_UPS": event.ups,
            "NUTUPS_VALUE": "" if event.value is None else f"{event.value:g}",
            "NUTUPS_MESSAGE": event.message, "NUTUPS_TIME": event.time,
        })
        done = await run_program(shlex.split(command), self.config.hook_timeout, env)
        if done.returncode != 0:
            raise RuntimeError(f"exit status {done.returncode}: {done.stderr.decode(errors='replace').strip()[:200]}")

    async def _device(self, device, action: str, event: Event) -> None:
        attempts = 1 + self.config.action_retries
        for attempt in range(attempts):
            try:
                reading = await asyncio.wait_for(device.do(action), self.config.action_timeout)
                if reading is not None and reading.voltage is not None:
                    self._confirm(device.name, reading.voltage, event)
                return
            except (TimeoutError, OSError, ConnectionError) as exc:
                if attempt + 1 == attempts:
                    raise RuntimeError(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None

    def _confirm(self, name: str, volts: float, event: Event) -> None:
        """A plug's voltmeter on the same mains confirms (or not) what the PLD line said,
        and is the UPS's input.voltage."""
        for state in self.states:
            if state.name == event.ups:
                state.set("input.voltage", f"{volts:.1f}")
        if event.type == EventType.AC_POWER_LOSS:
            if volts < 50:
                log.info("%s reads %.1f V: mains loss confirmed", name, volts)
            else:
                log.warning("%s reads %.1f V: mains is up there, so only the HAT's input lost power", name, volts)

    async def poll_sensors(self, every: float = 5.0) -> None:
        while True:
            if self.sensors is not None:
                try:
                    await self.read_sensors()
                except Exception as exc:  # a sensor must never stop the events
                    log.warning("sensor read failed: %s", exc)
            await asyncio.sleep(every)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for device in self.devices.values():  # their connections (Kasa) and HTTP sessions (Shelly)
            try:
                await asyncio.wait_for(device.close(), 2)
            except (TimeoutError, OSError) as exc:
                log.debug("closing %s: %s", device.name, exc)
        if self.outputs is not None:
            self.outputs.close()
        if self.log is not None:
            self.log.close()
