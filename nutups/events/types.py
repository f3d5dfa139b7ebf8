"""Power event types, where each comes from, and the event record."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from ..clocksync import clock_synchronised


class EventType(StrEnum):
    AC_POWER_LOSS = "AC_POWER_LOSS"
    AC_POWER_RESTORED = "AC_POWER_RESTORED"
    DC_OUT_LOSS = "DC_OUT_LOSS"
    DC_OUT_RESTORED = "DC_OUT_RESTORED"
    BATTERY_VOLTAGE_LOW = "BATTERY_VOLTAGE_LOW"
    BATTERY_VOLTAGE_CRITICAL = "BATTERY_VOLTAGE_CRITICAL"
    BATTERY_VOLTAGE_RECOVERED = "BATTERY_VOLTAGE_RECOVERED"
    CHARGING_STARTED = "CHARGING_STARTED"
    CHARGING_STOPPED = "CHARGING_STOPPED"
    BATTERY_FULL = "BATTERY_FULL"
    UPS_FAULT = "UPS_FAULT"
    TEMPERATURE_HIGH = "TEMPERATURE_HIGH"
    TEMPERATURE_NORMAL = "TEMPERATURE_NORMAL"
    OVERCURRENT_DETECTED = "OVERCURRENT_DETECTED"
    OVERCURRENT_CLEARED = "OVERCURRENT_CLEARED"
    FSD_SET = "FSD_SET"
    COMMUNICATION_LOST = "COMMUNICATION_LOST"
    COMMUNICATION_RESTORED = "COMMUNICATION_RESTORED"
    SHUTDOWN_STARTED = "SHUTDOWN_STARTED"
    SHUTDOWN_CANCELLED = "SHUTDOWN_CANCELLED"
    SHUTDOWN_COMMAND = "SHUTDOWN_COMMAND"
    ACTION_FAILED = "ACTION_FAILED"
    BATTERY_REPLACE = "BATTERY_REPLACE"
    BATTERY_TEST = "BATTERY_TEST"
    AUTH_FAILURE = "AUTH_FAILURE"


# Where each event comes from.  The X120X itself shows only voltage, charge, mains
# and charging; the rest comes from the Pi or from a smart plug's energy meter.
SOURCES: dict[EventType, tuple[str, str]] = {
    EventType.AC_POWER_LOSS: ("pld", "the HAT's PLD line (GPIO6) going low, edge-triggered"),
    EventType.AC_POWER_RESTORED: ("pld", "the PLD line going high again"),
    EventType.DC_OUT_LOSS: ("dc_out", "the Pi's 5 V input sagging: vcgencmd get_throttled under-voltage bit "
                                      "(the simulator: nutups sim dcout off)"),
    EventType.DC_OUT_RESTORED: ("dc_out", "the under-voltage condition clearing"),
    EventType.BATTERY_VOLTAGE_LOW: ("gauge", "cell voltage below thresholds.voltage_low (debounced)"),
    EventType.BATTERY_VOLTAGE_CRITICAL: ("gauge", "cell voltage below thresholds.voltage_critical (debounced)"),
    EventType.BATTERY_VOLTAGE_RECOVERED: ("gauge", "cell voltage back above voltage_low + hysteresis"),
    EventType.CHARGING_STARTED: ("gauge", "CHRG appearing in ups.status"),
    EventType.CHARGING_STOPPED: ("gauge", "CHRG leaving ups.status"),
    EventType.BATTERY_FULL: ("gauge", "charge reaching thresholds.full on mains"),
    EventType.UPS_FAULT: ("driver", "ALARM in ups.status (ups.alarm says why)"),
    EventType.TEMPERATURE_HIGH: ("temperature", "the Pi's thermal zone above thresholds.temperature_high"),
    EventType.TEMPERATURE_NORMAL: ("temperature", "the thermal zone back below high - hysteresis"),
    EventType.OVERCURRENT_DETECTED: ("current", "a smart plug's energy meter (or the simulator) above "
                                               "thresholds.current_max"),
    EventType.OVERCURRENT_CLEARED: ("current", "the current back below the limit - hysteresis"),
    EventType.FSD_SET: ("server", "a primary upsmon's FSD command, or the Pi's shutdown policy"),
    EventType.COMMUNICATION_LOST: ("driver", "the driver's data going stale (HAT unreadable)"),
    EventType.COMMUNICATION_RESTORED: ("driver", "fresh data again"),
    EventType.SHUTDOWN_STARTED: ("shutdown", "the Pi's shutdown policy (shutdown: in nutups.yaml) starting "
                                             "its sequence, or a primary upsmon's FSD on battery"),
    EventType.SHUTDOWN_CANCELLED: ("shutdown", "mains back before the Pi's shutdown policy set FSD"),
    EventType.SHUTDOWN_COMMAND: ("shutdown", "the Pi's own shutdown command (or reboot_command, mains "
                                             "being back) having run"),
    EventType.ACTION_FAILED: ("actions", "an action that failed or timed out"),
    EventType.BATTERY_TEST: ("battery_test", "each step of test.battery.start.quick/.deep and test.battery.stop "
                                             "(a plug marked feeds: cuts the HAT's mains)"),
    EventType.BATTERY_REPLACE: ("driver", "RB in ups.status: the capacity learned from outages under "
                                          "battery_replace_below, or the resistance doubled (nutups battery)"),
    EventType.AUTH_FAILURE: ("server", "wrong user names or passwords from one address, on the NUT port or "
                                       "the dashboard (at most one event per address a minute)"),
}


def utc_now_ms() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Event:
    """One event record: a line of the event log."""

    type: EventType
    ups: str
    message: str
    value: float | None = None
    unit: str | None = None
    time: str = field(default_factory=utc_now_ms)  # UTC, milliseconds, ISO 8601
    seq: int = 0
    dashboard_notify: bool = False
    # the system clock was not synchronised when it happened (a Pi before NTP: ``time`` may be off)
    unsynced: bool = field(default_factory=lambda: clock_synchronised() is False)

    def to_json(self) -> str:
        data = asdict(self)
        data["type"] = str(self.type)
        if not self.unsynced:
            del data["unsynced"]  # the common case: lines as before
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Event:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return cls(
            type=EventType(data["type"]), ups=str(data["ups"]), message=str(data.get("message", "")),
            value=data.get("value"), unit=data.get("unit"), time=str(data["time"]), seq=int(data["seq"]),
            dashboard_notify=bool(data.get("dashboard_notify", False)),
            unsynced=bool(data.get("unsynced", False)),
        )
