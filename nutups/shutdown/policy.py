"""The Pi's own shutdown policy as a sans-IO state machine: readings, logins and the clock
in, actions out (events to emit, the FSD latch to set, a command to run).

It plays upsmon's primary role for the Pi that sits on the HAT (clients/upsmon.c:
on battery and critical -> set FSD -> wait for the secondaries to log out, at most
HOSTSYNC -> SHUTDOWNCMD) with what a Pi on an X120X needs besides:

- ``grace``: an outage shorter than this does nothing, however critical it looks.
- What the shutdown needs (:meth:`ShutdownPolicy.runtime_needed`): the secondaries' time
  (``hostsync``, or longer where past shutdowns showed the logins took longer to leave),
  the Pi's ``poweroff`` time and a ``reserve``.  The runner hands it to the driver, which
  publishes it as battery.runtime.low and shows LB when the estimated runtime reaches it
  (unless a value set with upsrw wins), so every NUT client sees LB at that moment.
- Critical is LB as the driver computes it (the x120x driver debounces it), OR the
  loaded battery voltage under ``voltage_floor`` per cell (default: the driver's, which on the x120x
  follows its cells' ``chemistry``; else 3.2 V) for ``debounce`` readings
  in a row, whatever the gauge says (MAX17043-class gauges read 6 % with about 29 %
  of the energy left, and the X120X has no undervoltage cut-off), OR the gauge
  unreadable on battery: then the last trustworthy reading's runtime less the time
  on battery since decides, against battery.runtime.low, and the log says so.
- SHUTDOWN_STARTED, then one more reading to re-check mains (mains back:
  SHUTDOWN_CANCELLED), then FSD.  FSD is the point of no return, as in upsmon.
- The X120X powers a halted Pi up again only on a mains edge: if mains is back
  when the Pi's command is due, ``reboot_command`` runs instead, or the Pi would
  stay off for good.

Two clocks: ``clock`` (wall time) times grace, hostsync and the re-check, as the
clients on the network count them; a reading's ``battery_time`` is the driver's
clock (the simulator's when simulated), in which the battery drains.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from ..events.types import EventType
from .settings import DEFAULT_VOLTAGE_FLOOR, ShutdownSettings

log = logging.getLogger("nutups.shutdown")

RECHECK_S = 5.0  # the most the mains re-check before FSD waits for a reading
DEFAULT_RUNTIME_LOW = 300.0  # s, when the UPS has no battery.runtime.low (the x120x default)
COMMAND_RETRY_S = 30.0  # a failed command (systemd busy, a bus hiccup) is tried again this much later
COMMAND_ATTEMPTS = 5  # ... at most this many times in all; then the log says it gave up


@dataclass(frozen=True)
class Reading:
    """One look at the UPS, as the policy needs it."""

    mains: bool | None  # None: not known
    fresh: bool  # the driver's data is current (not DATA-STALE)
    low_battery: bool = False  # LB in ups.status
    voltage: float | None = None  # battery.voltage (under load on battery)
    runtime: float | None = None  # battery.runtime, seconds
    runtime_low: float | None = None  # battery.runtime.low, seconds
    battery_time: float = 0.0  # the driver's clock when this was read


@dataclass(frozen=True)
class Emit:
    type: EventType
    message: str
    value: float | None = None
    unit: str | None = None


@dataclass(frozen=True)
class SetFsd:
    """Set the FSD latch on the UPS (clients see FSD OB LB)."""


@dataclass(frozen=True)
class RunCommand:
    argv: list[str] = field(default_factory=list)
    reboot: bool = False


Action = Emit | SetFsd | RunCommand


class Phase(StrEnum):
    MAINS = "on mains"  # or not known to be on battery
    ON_BATTERY = "on battery"  # waiting for grace and a critical battery
    STARTED = "started"  # SHUTDOWN_STARTED sent: re-checking mains before FSD
    FSD = "fsd"  # FSD set: waiting for the other hosts to log out (no way back)
    COMMAND = "command"  # the Pi's command is running or ran


class ShutdownPolicy:
    """One UPS's policy.  Feed it with :meth:`observe` (each reading the driver
    publishes), :meth:`logins` (each LOGIN and logout), and :meth:`tick` at
    :meth:`deadline`; each returns the actions to carry out, in order."""

    def __init__(self, settings: ShutdownSettings, ups: str, cells: int | None,
                 clock: Callable[[], float] = time.monotonic, cell_floor: float | None = None) -> None:
        self.ups = ups
        self.driver_cells = cells
        self.driver_floor = cell_floor  # the driver's floor per cell (its cells' chemistry), None: it has none
        self._apply(settings)
        self.enabled = True  # off when a reload removed `shutdown:` (the outage is still tracked)
        self.clock = clock
        self.phase = Phase.MAINS
        self.mains: bool | None = None
        self.logged_in = 0
        self.last: Reading | None = None
        self.trusted: Reading | None = None  # the last fresh reading
        self.under_floor = 0  # fresh readings in a row under the floor, on battery
        self.since = 0.0  # when the outage began (clock)
        self.started_at = 0.0
        self.fsd_at = 0.0
        self.reason = ""
        self._blind_said = False
        self._back_said = False
        self.attempts = 0  # runs of the Pi's command
        self.done = False  # the Pi's command ran successfully
        self.retry_at: float | None = None  # when a failed command runs again
        self.logouts_s: list[float] = []  # from FSD to the last logout, in past shutdowns (the runner keeps them)
        self.logout_measured: float | None = None  # this shutdown's, once every client logged out
        if self.floor is None:
            log.warning("[%s]: the driver does not say how many cells are in series: the voltage floor is "
                        "off (set shutdown.cells to turn it on)", ups)

    def _apply(self, settings: ShutdownSettings) -> None:
        self.settings = settings
        self.cells = settings.cells or self.driver_cells
        self.cell_floor = (settings.voltage_floor if settings.voltage_floor is not None
                           else self.driver_floor or DEFAULT_VOLTAGE_FLOOR)
        self.floor = self.cell_floor * self.cells if self.cells else None

    def secondaries_time(self) -> float:
        """Seconds the other hosts get to log out: hostsync, or the longest past shutdowns showed."""
        return max([self.settings.hostsync, *self.logouts_s])

    def runtime_needed(self) -> float:
        """Seconds of battery the whole shutdown needs: the secondaries, the Pi's poweroff, the reserve."""
        return self.secondaries_time() + self.settings.poweroff + self.settings.reserve

    @property
    def under_way(self) -> bool:
        """SHUTDOWN_STARTED was sent and not cancelled: the sequence runs on its settings."""
        return self.phase in (Phase.STARTED, Phase.FSD, Phase.COMMAND)

    def reconfigure(self, settings: ShutdownSettings | None) -> bool:
        """New settings (None: `shutdown:` removed); refused (False) while a shutdown is under
        way, except that a command that failed and waits for its next attempt takes the new
        `command` and `reboot_command` (the likeliest fix for a command that keeps failing)."""
        if self.under_way:
            if settings is not None and self.phase == Phase.COMMAND and self.retry_at is not None:
                self.settings = replace(self.settings, command=settings.command,
                                        reboot_command=settings.reboot_command)
                return True
            return False
        self.enabled = settings is not None
        if settings is not None:
            floor = self.floor
            self._apply(settings)
            if self.floor != floor:
                self.under_floor = 0  # readings under the old floor say nothing of the new one
        return True

    # --- inputs ----------------------------------------------------------------

    def observe(self, reading: Reading) -> list[Action]:
        self.last = reading
        if reading.fresh:
            self.trusted = reading
            self._blind_said = False
            below = (reading.mains is False and self.floor is not None and reading.voltage is not None
                     and reading.voltage < self.floor)
            self.under_floor = self.under_floor + 1 if below else 0
        if reading.mains is not None:
            self.mains = reading.mains
        now = self.clock()
        if self.phase == Phase.MAINS:
            if self.mains is False:
                self.phase, self.since = Phase.ON_BATTERY, now
                log.info("[%s]: on battery; nothing happens for %g s (grace)", self.ups, self.settings.grace)
            return []
        if self.phase == Phase.ON_BATTERY:
            if self.mains:
                self.phase = Phase.MAINS
                log.info("[%s]: mains back after %.0f s on battery: no shutdown", self.ups, now - self.since)
                return []
            return self._maybe_start(now)
        if self.phase == Phase.STARTED:
            if self.mains:
                self.phase = Phase.MAINS
                log.warning("[%s]: mains back before FSD: shutdown cancelled", self.ups)
                return [Emit(EventType.SHUTDOWN_CANCELLED,
                             f"mains back {now - self.since:.0f} s into the outage, before FSD: "
                             "shutdown cancelled")]
            return self._set_fsd(now, "mains re-checked: still on battery")
        if self.phase == Phase.FSD:
            if self.mains and not self._back_said:
                self._back_said = True
                log.warning("[%s]: mains back after FSD: the shutdown goes on (point of no return), and the Pi "
                            "reboots instead of powering off", self.ups)
            return self._maybe_command(now)
        return []

    def logins(self, count: int) -> list[Action]:
        if count == 0 and self.logged_in > 0 and self.phase in (Phase.FSD, Phase.COMMAND) \
                and self.logout_measured is None:
            self.logout_measured = self.clock() - self.fsd_at
            log.info("[%s]: every client logged out %.1f s after FSD", self.ups, self.logout_measured)
        self.logged_in = count
        if self.phase == Phase.FSD:
            return self._maybe_command(self.clock())
        return []

    def tick(self) -> list[Action]:
        """The clock reached :meth:`deadline` (or passed it): act on what is due."""
        now = self.clock()
        if self.phase == Phase.ON_BATTERY:
            return self._maybe_start(now)
        if self.phase == Phase.STARTED and now >= self.started_at + RECHECK_S:
            return self._set_fsd(now, f"no reading within {RECHECK_S:g} s to re-check mains")
        if self.phase == Phase.FSD:
            return self._maybe_command(now)
        if self.phase == Phase.COMMAND and self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None
            return [self._run_command(f"attempt {self.attempts + 1} of {COMMAND_ATTEMPTS}")]
        return []

    def deadline(self) -> float | None:
        """The clock time at which :meth:`tick` must run next, if any."""
        if self.phase == Phase.ON_BATTERY and self.enabled and self.clock() < self.since + self.settings.grace:
            return self.since + self.settings.grace
        if self.phase == Phase.STARTED:
            return self.started_at + RECHECK_S
        if self.phase == Phase.FSD:
            return self.fsd_at + self.settings.hostsync
        if self.phase == Phase.COMMAND:
            return self.retry_at
        return None

    def command_finished(self, argv: list[str], reboot: bool, status: int | None, error: str) -> list[Action]:
        """The Pi's command ended with ``status`` (None: it could not run)."""
        what = " ".join(argv)
        if status == 0:
            self.done = True
            return [Emit(EventType.SHUTDOWN_COMMAND,
                         f"ran {what!r} ({'mains is back: reboot' if reboot else 'mains still off'}; "
                         f"{self.reason})")]
        why = f"exit status {status}" if status is not None else "could not run"
        if self.attempts < COMMAND_ATTEMPTS:
            self.retry_at = self.clock() + COMMAND_RETRY_S
            then = f"trying again in {COMMAND_RETRY_S:g} s (attempt {self.attempts} of {COMMAND_ATTEMPTS})"
        else:
            then = f"gave up after {COMMAND_ATTEMPTS} attempts: shut the Pi down by hand"
        log.error("[%s]: the shutdown command %r failed: %s %s; %s", self.ups, what, why, error, then)
        return [Emit(EventType.ACTION_FAILED, f"shutdown command {what!r}: {why}: {error}".rstrip(": ")
                     + f"; {then}")]

    # --- the sequence --------------------------------------------------------------

    def _maybe_start(self, now: float) -> list[Action]:
        if not self.enabled or now < self.since + self.settings.grace:
            return []
        reason = self.critical()
        if reason is None:
            return []
        self.phase, self.started_at, self.reason = Phase.STARTED, now, reason
        log.warning("[%s]: critical after %.0f s on battery: %s; shutdown sequence started",
                    self.ups, now - self.since, reason)
        volts = self.trusted.voltage if self.trusted is not None else None
        return [Emit(EventType.SHUTDOWN_STARTED,
                     f"shutdown started after {now - self.since:.0f} s on battery: {reason}", volts,
                     "V" if volts is not None else None)]

    def _set_fsd(self, now: float, why: str) -> list[Action]:
        self.phase, self.fsd_at = Phase.FSD, now
        self.logout_measured = None
        log.warning("[%s]: %s; FSD set (point of no return); waiting up to %g s for %d logged-in client(s) "
                    "to log out", self.ups, why, self.settings.hostsync, self.logged_in)
        return [SetFsd(), Emit(EventType.FSD_SET, f"forced shutdown set by the Pi's shutdown policy ({why})"),
                *self._maybe_command(now)]

    def _maybe_command(self, now: float) -> list[Action]:
        if self.phase != Phase.FSD:
            return []
        if self.logged_in > 0 and now < self.fsd_at + self.settings.hostsync:
            return []
        if self.logged_in > 0:
            waited = f"hostsync ({self.settings.hostsync:g} s) ran out with {self.logged_in} client(s) logged in"
        else:
            waited = f"every client logged out {now - self.fsd_at:.1f} s after FSD"
        self.reason = f"{self.reason}; {waited}"
        self.phase = Phase.COMMAND
        return [self._run_command(waited)]

    def _run_command(self, why: str) -> RunCommand:
        """The Pi's command, or its reboot_command when mains is back by now (decided at each attempt)."""
        self.attempts += 1
        reboot = self.mains is True
        argv = self.settings.argv(reboot)
        if reboot:
            log.warning("[%s]: mains is back, so the Pi reboots (a halted Pi powers up only on a mains edge): "
                        "running %r; %s", self.ups, " ".join(argv), why)
        else:
            log.warning("[%s]: running %r; %s", self.ups, " ".join(argv), why)
        return RunCommand(argv, reboot)

    def critical(self) -> str | None:
        """Why the battery is critical now, or None."""
        r, t = self.last, self.trusted
        if r is None:
            return None
        if r.fresh:
            return self._critical_reading(r)
        # The gauge cannot be read: judge from the last trustworthy reading and the time since.
        if t is None:
            return "no trustworthy battery reading at all (the gauge is unreadable)"
        judged = self._critical_reading(t)
        if judged is not None:
            return f"the gauge is unreadable; its last trustworthy reading said: {judged}"
        if t.runtime is None:
            return "the gauge is unreadable and its last trustworthy reading had no runtime"
        low = t.runtime_low if t.runtime_low is not None else DEFAULT_RUNTIME_LOW
        elapsed = max(r.battery_time - t.battery_time, 0.0)
        left = t.runtime - elapsed
        if left <= low:
            return (f"the gauge is unreadable: its last trustworthy reading (runtime {t.runtime:.0f} s) less "
                    f"{elapsed:.0f} s on battery since leaves about {left:.0f} s, under battery.runtime.low "
                    f"({low:.0f} s)")
        if not self._blind_said:
            self._blind_said = True
            log.warning("[%s]: the gauge is unreadable on battery: deciding on its last trustworthy reading "
                        "(runtime %.0f s, %.0f s ago) and the time on battery: going down when about %.0f s "
                        "are left", self.ups, t.runtime, elapsed, low)
        return None

    def _critical_reading(self, r: Reading) -> str | None:
        if r.mains is not False:
            return None
        if r.low_battery:
            return "LB (the driver's low battery)"
        if self.floor is not None and self.under_floor >= self.settings.debounce:
            return (f"battery voltage {r.voltage:.2f} V under the floor of {self.floor:.2f} V "
                    f"({self.cells} x {self.cell_floor:g} V) for {self.under_floor} readings")
        return None
