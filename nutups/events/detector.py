"""The state machine that turns readings into events, with thresholds, hysteresis and
debounce, so that noise never produces a storm."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from ..debounce import Debounce
from ..state import UpsState
from .types import Event, EventType


@dataclass
class Thresholds:
    """`thresholds:` in nutups.yaml."""

    voltage_low: float = 3.5
    voltage_critical: float = 3.3
    voltage_hysteresis: float = 0.1
    full: float = 99.0
    full_hysteresis: float = 3.0
    temperature_high: float = 75.0
    temperature_hysteresis: float = 5.0
    current_max: float = 5.0  # amperes out of the HAT: the X1202 is rated 5.1 V / 5 A
    current_hysteresis: float = 0.5
    debounce: int = 3  # readings that must agree before a level changes

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


@dataclass
class Snapshot:
    """What one moment of readings says; None where a source has nothing."""

    mains: bool | None = None
    charging: bool | None = None
    voltage: float | None = None
    charge: float | None = None
    fault: str | None = None  # ups.alarm text while ALARM
    stale: bool = False
    fsd: bool = False
    fsd_by_policy: bool = False  # set by the Pi's own shutdown policy, which reports FSD_SET itself
    dc_out_ok: bool | None = None
    temperature: float | None = None
    current: float | None = None
    replace: str | None = None  # why, while RB is in ups.status
    low_battery: bool | None = None  # LB as another NUT server's UPS reports it (from_flags)

    @classmethod
    def from_state(cls, ups: UpsState) -> Snapshot:
        tokens = ups.status_flags()
        mains = True if "OL" in tokens else False if "OB" in tokens else None

        def num(name: str) -> float | None:
            try:
                return float(ups.value(name) or "")
            except ValueError:
                return None

        return cls(
            mains=mains, charging="CHRG" in tokens if tokens else None, voltage=num("battery.voltage"),
            charge=num("battery.charge"), fault=(ups.value("ups.alarm") or "ALARM") if "ALARM" in tokens else None,
            stale=ups.stale, fsd=ups.fsd, fsd_by_policy=ups.fsd_by_policy,
            replace=(ups.value("experimental.battery.replace.reason") or "replace the battery")
            if "RB" in tokens else None,
        )


# ups.status flags of another server's UPS that are a fault here (UPS_FAULT), in words
FAULT_FLAGS = {"OFF": "UPS output off", "OVER": "UPS overloaded", "RB": "battery needs replacing",
               "ALARM": "UPS alarm"}


def snapshot_from_flags(ups: UpsState) -> Snapshot:
    """A UPS judged by its own status flags (a UPS of another NUT server, nutups/monitor):
    OL/OB is mains, LB is a low battery, OFF/OVER/RB/ALARM a fault, FSD the remote primary's.
    Its battery.voltage is not a cell of ours: no voltage thresholds apply."""
    tokens = ups.status_flags()
    faults = [FAULT_FLAGS[t] for t in FAULT_FLAGS if t in tokens]
    if "ALARM" in tokens and ups.value("ups.alarm"):
        faults[-1] = f"UPS alarm: {ups.value('ups.alarm')}"
    try:
        charge = float(ups.value("battery.charge") or "")
    except ValueError:
        charge = None
    return Snapshot(
        mains=True if "OL" in tokens else False if "OB" in tokens else None,
        charging="CHRG" in tokens if tokens else None, charge=charge,
        fault=", ".join(faults) or None, stale=ups.stale, fsd="FSD" in tokens,
        low_battery="LB" in tokens if tokens else None,
    )


class _Level:
    """A debounced boolean condition with an entering and a leaving event."""

    def __init__(self, count: int) -> None:
        self.debounce = Debounce(count)
        self.known = False

    def update(self, raw: bool) -> bool | None:
        """The new value when it changed (or on the first reading), else None."""
        if not self.known:
            self.known = True
            self.debounce.reset(raw)
            return None
        old = self.debounce.value
        new = self.debounce.update(raw)
        return new if new != old else None


class EventDetector:
    """Per UPS.  ``observe(snapshot)`` calls ``emit(event)`` for each transition.

    The first snapshot sets the baseline silently (no AC_POWER_RESTORED at start),
    except conditions that are already bad (on battery, voltage low, fault), which
    are reported once; for a two-state condition, ``baseline(event type)`` says which
    event describes the state it starts in, so that outputs can be set to match.
    """

    def __init__(self, ups: str, emit: Callable[[Event], None], thresholds: Thresholds | None = None,
                 baseline: Callable[[EventType], None] = lambda kind: None) -> None:
        self.ups = ups
        self.emit = emit
        self.baseline = baseline  # the event that describes a condition's good state at its first reading
        self.t = thresholds or Thresholds()
        n = self.t.debounce
        self.mains = _Level(1)  # the PLD edge is debounced in hardware
        self.low_battery = _Level(1)  # another server's LB flag: that server has judged it already
        self.charging = _Level(n)
        self.dc_out = _Level(n)
        self.voltage_level = 0  # 0 normal, 1 low, 2 critical
        self._vcandidate = 0
        self._vstreak = 0
        self.full = False
        self.hot = _Level(n)
        self.over = _Level(n)
        self.fault: str | None = None
        self.replace: str | None = None
        self.stale: bool | None = None
        self.fsd = False
        self._started = False

    def use(self, thresholds: Thresholds) -> None:
        """New thresholds (SIGHUP): the levels keep what they know; limits and debounce change."""
        self.t = thresholds
        for level in (self.charging, self.dc_out, self.hot, self.over):
            level.debounce.count = max(1, thresholds.debounce)

    def _event(self, kind: EventType, message: str, value: float | None = None, unit: str | None = None) -> None:
        self.emit(Event(kind, self.ups, message, value, unit))

    def observe(self, s: Snapshot) -> None:
        first = not self._started
        self._started = True
        t = self.t
        # communication with the HAT
        if self.stale is None:
            self.stale = s.stale
            if s.stale and not first:
                self._event(EventType.COMMUNICATION_LOST, "no fresh readings from the UPS")
        elif s.stale != self.stale:
            self.stale = s.stale
            if s.stale:
                self._event(EventType.COMMUNICATION_LOST, "no fresh readings from the UPS")
            else:
                self._event(EventType.COMMUNICATION_RESTORED, "fresh readings again")
        if s.fsd and not self.fsd and not s.fsd_by_policy:  # the policy reports its own
            self._event(EventType.FSD_SET, "forced shutdown set by a primary upsmon")
            if s.mains is False:
                self._event(EventType.SHUTDOWN_STARTED, "shutdown sequence started: FSD on battery")
        self.fsd = s.fsd
        if s.stale:
            return  # no judgement on stale readings
        if s.mains is not None:
            self._edge(self.mains, s.mains, (EventType.AC_POWER_RESTORED, "mains power restored"),
                       (EventType.AC_POWER_LOSS, "mains power lost: running on battery"), bad=False)
        if s.charging is not None:
            self._edge(self.charging, s.charging, (EventType.CHARGING_STARTED, "charging started"),
                       (EventType.CHARGING_STOPPED, "charging stopped"), value=s.charge, unit="%")
        if s.voltage is not None:
            self._voltage(s.voltage, first)
        if s.low_battery is not None:
            self._edge(self.low_battery, s.low_battery, (EventType.BATTERY_VOLTAGE_LOW, "low battery (LB)"),
                       (EventType.BATTERY_VOLTAGE_RECOVERED, "battery no longer low"), bad=True, value=s.charge,
                       unit="%")
        if s.charge is not None and s.mains:
            if not self.full and s.charge >= t.full:
                self.full = True
                if not first:
                    self._event(EventType.BATTERY_FULL, "battery full", s.charge, "%")
            elif self.full and s.charge < t.full - t.full_hysteresis:
                self.full = False
        if s.fault != self.fault:
            if s.fault:
                self._event(EventType.UPS_FAULT, s.fault)
            self.fault = s.fault
        if (s.replace is None) != (self.replace is None):
            if s.replace:
                self._event(EventType.BATTERY_REPLACE, f"replace the battery: {s.replace}")
            self.replace = s.replace
        if s.dc_out_ok is not None:
            self._edge(self.dc_out, s.dc_out_ok, (EventType.DC_OUT_RESTORED, "the Pi's 5 V supply is back"),
                       (EventType.DC_OUT_LOSS, "the Pi's 5 V supply is below its limit"), bad=False)
        if s.temperature is not None:
            self._above(self.hot, s.temperature, t.temperature_high, t.temperature_hysteresis,
                        EventType.TEMPERATURE_HIGH, EventType.TEMPERATURE_NORMAL, "temperature", "C")
        if s.current is not None:
            self._above(self.over, s.current, t.current_max, t.current_hysteresis,
                        EventType.OVERCURRENT_DETECTED, EventType.OVERCURRENT_CLEARED, "current", "A")

    def _edge(self, level: _Level, now: bool, rise: tuple[EventType, str], fall: tuple[EventType, str],
              bad: bool | None = None, value: float | None = None, unit: str | None = None) -> None:
        """A debounced two-state condition.  Its first reading is the silent baseline,
        unless it is already the ``bad`` state, which is reported once."""
        first = not level.known
        changed = level.update(now)
        if first and now is bad:
            changed = now
        elif first:  # no event, but what depends on this state (a relay, a LED) is set as it says
            self.baseline(rise[0] if now else fall[0])
        if changed is True:
            self._event(rise[0], rise[1], value, unit)
        elif changed is False:
            self._event(fall[0], fall[1], value, unit)

    def _above(self, level: _Level, value: float, limit: float, hysteresis: float, high: EventType,
               normal: EventType, what: str, unit: str) -> None:
        """A debounced 'value above limit', leaving only below limit - hysteresis."""
        threshold = limit - hysteresis if level.debounce.value else limit
        changed = level.update(value > threshold)
        if changed is True:
            self._event(high, f"{what} high", value, unit)
        elif changed is False:
            self._event(normal, f"{what} back to normal", value, unit)

    def _voltage(self, volts: float, first: bool) -> None:
        """Three levels with hysteresis on the way up; a level must hold for
        ``debounce`` readings before it counts."""
        t = self.t
        level = self.voltage_level
        if volts < t.voltage_critical:
            raw = 2
        elif volts < t.voltage_low:
            raw = 1
        elif level > 0 and volts < t.voltage_low + t.voltage_hysteresis:
            raw = level if level == 1 else 1
        else:
            raw = 0
        if level == 2 and raw == 1 and volts < t.voltage_critical + t.voltage_hysteresis:
            raw = 2  # hysteresis out of critical too
        if raw == level:
            self._vstreak = 0
            return
        if raw != self._vcandidate:
            self._vcandidate = raw
            self._vstreak = 0
        self._vstreak += 1
        if self._vstreak < t.debounce and not first:
            return
        self._vstreak = 0
        self.voltage_level = raw
        if raw == 2:
            self._event(EventType.BATTERY_VOLTAGE_CRITICAL, "battery voltage critical", volts, "V")
        elif raw == 1 and level == 0:
            self._event(EventType.BATTERY_VOLTAGE_LOW, "battery voltage low", volts, "V")
        elif raw == 0:
            self._event(EventType.BATTERY_VOLTAGE_RECOVERED, "battery voltage recovered", volts, "V")
