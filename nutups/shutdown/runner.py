"""Runs the shutdown policy in the daemon: feeds it one UPS's readings, logins and timers,
and carries out what it decides (events, the FSD latch, the Pi's command)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..drivers.base import Driver
from ..durable import write_atomically
from ..events.types import Event
from ..external import RunTimeout, run_program
from ..state import Subscription, UpsState
from .policy import (
    DEFAULT_RUNTIME_LOW,
    RECHECK_S,
    Action,
    Emit,
    Phase,
    Reading,
    RunCommand,
    SetFsd,
    ShutdownPolicy,
)
from .settings import ShutdownSettings

log = logging.getLogger("nutups.shutdown")

COMMAND_TIMEOUT_S = 120.0  # `systemctl poweroff` returns at once; a stuck command must not hang us
LOGOUTS_KEPT = 5  # past shutdowns whose logout times count


def _number(state: UpsState, name: str) -> float | None:
    try:
        return float(state.value(name) or "")
    except ValueError:
        return None


def reading_of(state: UpsState, driver: Driver | None, clock: Callable[[], float]) -> Reading:
    """What the UPS says now.  While its data is stale, mains comes from the driver's
    own line (the PLD edge still works when the gauge does not)."""
    fresh = state.connected and not state.stale
    tokens = state.status_flags() if fresh else frozenset()
    if "OL" in tokens:
        mains: bool | None = True
    elif "OB" in tokens:
        mains = False
    else:
        mains = driver.mains if driver is not None else None
    return Reading(
        mains=mains, fresh=fresh, low_battery="LB" in tokens, voltage=_number(state, "battery.voltage"),
        runtime=_number(state, "battery.runtime"), runtime_low=_number(state, "battery.runtime.low"),
        battery_time=driver.clock() if driver is not None else clock(),
    )


class LogoutHistory:
    """How long the other hosts took to log out after FSD in past shutdowns, kept in the datapath
    (``nutups-<ups>-shutdown.json``) so that the next outage's battery.runtime.low allows for it."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def load(self) -> list[float]:
        if self.path is None:
            return []
        try:
            data = json.loads(self.path.read_text())
            values = [float(v) for v in data.get("logouts_s", [])]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("ignoring %s: %s", self.path, exc)
            return []
        return [v for v in values if 0 <= v <= 86400][-LOGOUTS_KEPT:]

    def save(self, values: list[float]) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, json.dumps({"logouts_s": [round(v, 1) for v in values[-LOGOUTS_KEPT:]]})
                             .encode())
        except OSError as exc:
            log.warning("cannot save the logout times to %s: %s", self.path, exc.strerror)


class ShutdownRunner:
    def __init__(self, policy: ShutdownPolicy, state: UpsState, driver: Driver | None,
                 emit: Callable[[Event], None], clock: Callable[[], float] = time.monotonic,
                 history: LogoutHistory | None = None) -> None:
        self.policy = policy
        self.state = state
        self.driver = driver
        self.emit = emit
        self.clock = clock
        self.history = history or LogoutHistory(None)
        policy.logouts_s = self.history.load()
        self._recorded = False  # this shutdown's logout time is saved
        self._wake = asyncio.Event()
        self._commands: set[asyncio.Task] = set()
        self._subscriptions: list[Subscription] = []
        self._running = True
        # awaited just before the Pi's command runs (the notifications' last try; bounded by its own limit)
        self.before_command: Callable[[str, list[str], bool], Awaitable[None]] | None = None
        self.tell_driver()

    def tell_driver(self) -> None:
        """The driver publishes what the shutdown needs as battery.runtime.low (None: no policy)."""
        if self.driver is None:
            return
        if not self._running or not self.policy.enabled:
            self.driver.shutdown_needs(None)
        else:
            self.driver.shutdown_needs(self.policy.runtime_needed())

    def _record_logout(self) -> None:
        measured = self.policy.logout_measured
        if measured is None or self._recorded:
            return
        self._recorded = True
        self.policy.logouts_s = [*self.policy.logouts_s, measured][-LOGOUTS_KEPT:]
        self.history.save(self.policy.logouts_s)
        if measured > self.policy.settings.hostsync:
            log.warning("[%s]: the other hosts took %.0f s to log out, longer than hostsync (%g s): the next "
                        "outage allows for it in battery.runtime.low", self.policy.ups, measured,
                        self.policy.settings.hostsync)
        self.tell_driver()

    async def run(self) -> None:
        self._subscriptions = [  # both called on this loop, as every write of the state
            self.state.on_publish(lambda state: self._carry_out(self.policy.observe(
                reading_of(state, self.driver, self.clock)))),
            self.state.on_logins(self._on_logins),
        ]
        self._on_logins(self.state.numlogins)
        try:
            while self._running:
                self._wake.clear()
                deadline = self.policy.deadline()
                if deadline is not None and self.clock() >= deadline:
                    self._carry_out(self.policy.tick())
                    if self.policy.deadline() == deadline:  # nothing moved: wait for news instead
                        self._wake.clear()
                        await self._wake.wait()
                    continue
                timeout = None if deadline is None else deadline - self.clock()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    pass
        finally:
            self._unsubscribe()
            for task in self._commands:
                task.cancel()

    def _unsubscribe(self) -> None:
        for subscription in self._subscriptions:
            subscription.cancel()
        self._subscriptions = []

    def _on_logins(self, count: int) -> None:
        self._carry_out(self.policy.logins(count))
        self._record_logout()

    def reconfigure(self, settings: ShutdownSettings | None) -> None:
        """SIGHUP: the new `shutdown:` (None: removed), unless a shutdown is under way."""
        policy = self.policy
        if not policy.reconfigure(settings):
            if policy.done:
                log.info("reload: the Pi's shutdown command has run; shutdown: is not changed")
            else:
                log.warning("reload: a shutdown is under way (%s): it goes on with the settings it started with",
                            policy.phase)
            return
        if policy.under_way:
            log.warning("reload: the next attempt of the failed shutdown command runs %r (reboot_command %r)",
                        policy.settings.command, policy.settings.reboot_command)
            return
        if settings is None:
            log.info("reload: shutdown: removed from nutups.yaml; the shutdown policy is off")
        else:
            log.info("reload: %s", describe(policy))
        self.tell_driver()
        self._wake.set()  # grace may have moved the deadline

    def retire(self) -> None:
        """A reload replaces this runner (another UPS): it stops acting on anything."""
        self._unsubscribe()
        self._running = False
        self.tell_driver()
        self._wake.set()

    def _carry_out(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Emit):
                self.emit(Event(action.type, self.state.name, action.message, action.value, action.unit))
            elif isinstance(action, SetFsd):
                self.state.force_shutdown()
            elif isinstance(action, RunCommand):
                task = asyncio.get_running_loop().create_task(self._command(action))
                self._commands.add(task)
                task.add_done_callback(self._commands.discard)
        self._wake.set()  # the deadline may have moved

    def down_by(self, wall: Callable[[], float] = time.time) -> tuple[float, bool] | None:
        """When the Pi's command runs, in wall-clock seconds: (the latest moment, True) once the
        sequence is under way; (an estimate, False) on battery, from the runtime left above
        battery.runtime.low and not before grace ends; None when nothing is planned."""
        p = self.policy
        now, mono = wall(), p.clock()
        if p.phase == Phase.STARTED:
            return now + max(0.0, p.started_at + RECHECK_S + p.settings.hostsync - mono), True
        if p.phase == Phase.FSD:
            return now + max(0.0, p.fsd_at + p.settings.hostsync - mono), True
        if p.phase == Phase.COMMAND:
            return now, True
        if p.phase == Phase.ON_BATTERY and p.enabled and p.trusted is not None and p.trusted.runtime is not None:
            low = p.trusted.runtime_low if p.trusted.runtime_low is not None else DEFAULT_RUNTIME_LOW
            left = max(p.trusted.runtime - low, p.since + p.settings.grace - mono, 0.0)
            return now + left, False
        return None

    async def _command(self, action: RunCommand) -> None:
        status: int | None = None
        error = ""
        if self.before_command is not None:
            try:
                await self.before_command(self.state.name, action.argv, action.reboot)
            except Exception:  # the notifications must never keep the Pi from going down
                log.exception("before the shutdown command")
        try:
            done = await run_program(action.argv, COMMAND_TIMEOUT_S)
            status = done.returncode
            error = done.stderr.decode(errors="replace").strip()[:200]
        except RunTimeout:
            error = f"no exit within {COMMAND_TIMEOUT_S:g} s"
        except OSError as exc:
            error = exc.strerror or str(exc)
        self._carry_out(self.policy.command_finished(action.argv, action.reboot, status, error))


def shutdown_runner(settings: ShutdownSettings, states: list[UpsState], drivers: dict[str, Driver],
                    emit: Callable[[Event], None], datapath: Path | None = None) -> ShutdownRunner | None:
    """The runner for the UPS that powers this Pi (``shutdown.ups``, else the first)."""
    if not states:
        return None
    state = watched_state(settings, states)
    if settings.ups and state.name.lower() != settings.ups.lower():
        log.error("shutdown.ups: no UPS %r in ups.conf (it has: %s); the policy watches [%s]",
                  settings.ups, ", ".join(s.name for s in states), state.name)
    driver = drivers.get(state.name)
    policy = ShutdownPolicy(settings, state.name, driver.series_cells if driver is not None else None,
                            cell_floor=getattr(driver, "voltage_floor", None))
    history = LogoutHistory(datapath / f"nutups-{state.name}-shutdown.json" if datapath is not None else None)
    runner = ShutdownRunner(policy, state, driver, emit, history=history)
    log.info("%s", describe(policy))
    return runner


def watched_state(settings: ShutdownSettings, states: list[UpsState]) -> UpsState:
    """The UPS that powers this Pi: ``shutdown.ups``, else (or when there is none such) the first."""
    wanted = (settings.ups or states[0].name).lower()
    return next((s for s in states if s.name.lower() == wanted), states[0])


def describe(policy: ShutdownPolicy) -> str:
    s = policy.settings
    return (f"[{policy.ups}]: shutdown policy on: grace {s.grace:g} s, hostsync {s.hostsync:g} s, LB with "
            f"{policy.runtime_needed():.0f} s of runtime left ({policy.secondaries_time():g} s for the other hosts "
            f"+ {s.poweroff:g} s poweroff + {s.reserve:g} s reserve), floor "
            + (f"{policy.floor:.2f} V" if policy.floor is not None else "off")
            + f", command {s.command!r}, reboot_command {s.reboot_command!r}")
