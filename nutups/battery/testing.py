"""The battery test: a smart plug that feeds the HAT (`feeds:`) cuts its mains, and the pack is measured.

The X120X cannot switch itself to battery; the plug its supply hangs on can. Commands:

- ``test.battery.start.quick``: the plug off for ``quick_s`` (60 s), the drop measured as mains
  goes (resistance and sag), the plug on;
- ``test.battery.start.deep``: a calibration discharge, down to what the shutdown needs
  (battery.runtime.low) plus ``deep_margin_s``, then the plug on: an outage the learning
  measures capacity from, without waiting for one;
- ``test.battery.stop``: ends either (the plug on).

Fail safe: the plug is always switched off with its own countdown (Shelly toggle_after, a
Kasa countdown rule), re-armed while a deep test runs, so that it comes back on by itself
when nutups dies; a plug that stops answering while off means the wall's mains is gone (a
real outage, which the daemon then handles as one): the test is aborted; a test is refused
below ``min_charge`` % and while on battery; every step is said (``say``: the event log).
ups.test.result and ups.test.date say how the last one went.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from ..state import CommandResult, UpsState

log = logging.getLogger("nutups.battery")

COMMANDS = ("test.battery.start.quick", "test.battery.start.deep", "test.battery.stop")
TIMER_GRACE_S = 30  # the plug's own timer runs this much longer than the test means to
REARM_S = 30.0  # a deep test re-arms the plug's timer this often (it is set to 2 x REARM_S + grace)
WATCH_S = 1.0  # how often the test looks at the driver and the plug
SWITCH_WAIT_S = 30.0  # the driver must see mains go (or come) within this after the plug moved


class BatteryTest:
    """Runs battery tests on one UPS through one plug; wraps the UPS's instcmd handler."""

    def __init__(self, state: UpsState, driver: Any, plug: Any, say: Callable[[str], None],
                 quick_s: float = 60.0, deep_margin_s: float = 600.0, min_charge: float = 90.0,
                 grace_s: float = TIMER_GRACE_S,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.state = state
        self.driver = driver  # an X120xDriver: mains, reading, battery (the learner), battery_test_kind
        self.plug = plug  # an AcDevice with has_timer
        self.say = say
        self.quick_s = quick_s
        self.deep_margin_s = deep_margin_s
        self.min_charge = min_charge
        self.grace_s = grace_s  # the plug's own timer runs this much longer than the test means to
        self.clock = clock
        self.wall = wall
        self.task: asyncio.Task | None = None
        self.next_handler = state.instcmd_handler
        state.instcmd_handler = self.instcmd
        for cmd in COMMANDS:
            state.add_command(cmd)
        state.set("ups.test.result", "No test initiated")

    # --- commands --------------------------------------------------------------------

    def instcmd(self, command: str, param: str | None) -> CommandResult | Awaitable[CommandResult]:
        cmd = command.lower()
        if cmd in ("test.battery.start.quick", "test.battery.start.deep"):
            return self._start(cmd.rsplit(".", 1)[1])
        if cmd == "test.battery.stop":
            return self._stop()
        if self.next_handler is not None:
            return self.next_handler(command, param)
        return CommandResult.UNKNOWN

    def _refusal(self) -> str | None:
        if self.task is not None and not self.task.done():
            return "a battery test is already running"
        if self.driver.mains is not True:
            return "the UPS is not on mains"
        try:
            charge = float(self.state.value("battery.charge") or "")
        except ValueError:
            return "the charge is not known"
        if charge < self.min_charge:
            return f"the charge is {charge:.0f} %, under the {self.min_charge:.0f} % a test needs"
        return None

    def _start(self, kind: str) -> CommandResult:
        why = self._refusal()
        if why is not None:
            self.say(f"{kind} battery test refused: {why}")
            return CommandResult.FAILED
        self.task = asyncio.get_running_loop().create_task(self._run(kind), name=f"battery-test-{kind}")
        return CommandResult.SUCCESS

    async def _stop(self) -> CommandResult:
        task = self.task
        if task is None or task.done():
            self.say("test.battery.stop: no battery test is running")
            return CommandResult.FAILED
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        return CommandResult.SUCCESS

    # --- the test ----------------------------------------------------------------------

    def _result(self, text: str) -> None:
        self.state.set("ups.test.result", text)
        self.state.set("ups.test.date", datetime.fromtimestamp(self.wall(), UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))

    async def _until(self, what: Callable[[], bool], limit: float) -> bool:
        end = self.clock() + limit
        while not what():
            if self.clock() >= end:
                return False
            await asyncio.sleep(WATCH_S / 4)
        return True

    async def _plug_answers(self) -> bool:
        try:
            await asyncio.wait_for(self.plug.read(), self.plug.timeout)
            return True
        except (ConnectionError, OSError, TimeoutError):
            return False

    async def _run(self, kind: str) -> None:
        name = self.plug.name
        driver = self.driver
        self.state.set("ups.test.result", "In progress")
        hold = self.quick_s if kind == "quick" else 2 * REARM_S
        v_rest = driver.reading.voltage if driver.reading is not None else None
        learned_before = len(driver.battery.record.resistances)
        self.say(f"{kind} battery test started: {name} switches the HAT's mains off "
                 f"(its own timer brings it back after {hold + self.grace_s:.0f} s)")
        driver.battery_test_kind = f"{kind} battery test"
        plug_off = False
        try:
            try:
                await self.plug.switch_for(False, int(hold + self.grace_s))
                plug_off = True
            except (ConnectionError, OSError, NotImplementedError) as exc:
                self.say(f"{kind} battery test failed: {name} could not be switched off with its timer: {exc}")
                self._result(f"Done and error: {name} could not be switched off")
                return
            if not await self._until(lambda: driver.mains is False, SWITCH_WAIT_S):
                self.say(f"{kind} battery test failed: {name} is off but the HAT still sees mains "
                         f"(is its supply really on {name}?)")
                self._result("Done and error: mains did not go when the plug switched off")
                return
            self.say(f"{kind} battery test: mains off, on battery")
            v_load = None
            started = self.clock()
            rearmed = started
            while True:
                await asyncio.sleep(WATCH_S)
                if v_load is None and driver.reading is not None and driver.mains is False:
                    v_load = driver.reading.voltage
                if driver.mains is not False:
                    self.say(f"{kind} battery test aborted: mains came back before the test ended")
                    self._result("Aborted: mains came back")
                    plug_off = False
                    return
                if not await self._plug_answers():
                    self.say(f"{kind} battery test aborted: {name} does not answer while off: the wall's "
                             "mains is gone (a real outage, handled as one)")
                    self._result("Aborted: a real outage")
                    plug_off = False  # it has no power to switch; its timer, or the mains, brings it back
                    driver.battery_test_kind = None
                    return
                now = self.clock()
                if kind == "quick":
                    if now - started >= self.quick_s:
                        break
                    continue
                if self._deep_done():
                    self.say(f"deep battery test: {self.state.value('battery.runtime')} s of runtime left, the "
                             f"shutdown needs {self.state.value('battery.runtime.low')} s + the margin "
                             f"{self.deep_margin_s:.0f} s: mains back")
                    break
                if now - rearmed >= REARM_S:  # keep the plug's own timer ahead of us
                    await self.plug.switch_for(False, int(2 * REARM_S + self.grace_s))
                    rearmed = now
            await self.plug.switch(True)
            plug_off = False
            back = await self._until(lambda: driver.mains is True, SWITCH_WAIT_S)
            self.say(f"{kind} battery test: {name} on again" + ("" if back else ", but the HAT does not see mains"))
            self._report(kind, v_rest, v_load, learned_before)
        except asyncio.CancelledError:
            self.say(f"{kind} battery test stopped (test.battery.stop)")
            self._result("Aborted: stopped by test.battery.stop")
            raise
        finally:
            if plug_off:
                try:
                    await self.plug.switch(True)
                    self.say(f"{kind} battery test: {name} on again")
                except (ConnectionError, OSError) as exc:
                    self.say(f"{kind} battery test: {name} could not be switched on ({exc}); "
                             "its own timer brings it back")
            driver.battery_test_kind = None

    def _deep_done(self) -> bool:
        """A deep test ends where the runtime left reaches what the shutdown needs, plus the margin."""
        try:
            runtime = float(self.state.value("battery.runtime") or "")
            need = float(self.state.value("battery.runtime.low") or "")
        except ValueError:
            return False
        return runtime <= need + self.deep_margin_s

    def _report(self, kind: str, v_rest: float | None, v_load: float | None, learned_before: int) -> None:
        rec = self.driver.battery.record
        new = [r for r in rec.resistances[learned_before:] if r.how == "mains drop"]
        parts = []
        if new:
            parts.append(f"resistance {new[-1].ohm * 1000:.0f} mOhm")
        if v_rest is not None and v_load is not None:
            parts.append(f"sag {1000 * (v_rest - v_load):.0f} mV")
        k = self.driver.battery.knowledge()
        verdict = "Done and warning" if k.replace else "Done and passed"
        if kind == "deep":
            parts.append("the capacity is measured once the pack has rested (nutups battery)")
        text = f"{verdict}: " + (", ".join(parts) or "nothing measured")
        self._result(text)
        self.say(f"{kind} battery test done: {text}")
