"""The words of a notification: what happened and when, the UPS, its charge and runtime, and
when the Pi goes down once a shutdown is planned.  Times are the Pi's local time with its zone,
and they are the events' own: a message sent late says so, and says when it happened."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .outbox import Message
from .types import Event, EventType

TITLES: dict[str, str] = {
    "AC_POWER_LOSS": "mains power lost", "AC_POWER_RESTORED": "mains power back",
    "DC_OUT_LOSS": "the Pi's supply is low", "DC_OUT_RESTORED": "the Pi's supply is good again",
    "BATTERY_VOLTAGE_LOW": "battery low", "BATTERY_VOLTAGE_CRITICAL": "battery critical",
    "BATTERY_VOLTAGE_RECOVERED": "battery recovered", "CHARGING_STARTED": "charging",
    "CHARGING_STOPPED": "charging stopped", "BATTERY_FULL": "battery full", "UPS_FAULT": "UPS fault",
    "TEMPERATURE_HIGH": "temperature high", "TEMPERATURE_NORMAL": "temperature normal again",
    "OVERCURRENT_DETECTED": "overcurrent", "OVERCURRENT_CLEARED": "overcurrent cleared",
    "FSD_SET": "forced shutdown", "COMMUNICATION_LOST": "UPS not answering",
    "COMMUNICATION_RESTORED": "UPS answering again", "SHUTDOWN_STARTED": "shutting down",
    "SHUTDOWN_CANCELLED": "shutdown cancelled", "SHUTDOWN_COMMAND": "going down now",
    "ACTION_FAILED": "an action failed", "AUTH_FAILURE": "wrong passwords",
}
FAMILY_TITLES = {"mains": "mains power flapping", "dc_out": "the Pi's supply flapping",
                 "charging": "charging on and off", "battery_voltage": "battery voltage up and down",
                 "temperature": "temperature up and down", "overcurrent": "overcurrent on and off",
                 "communication": "UPS answering on and off"}
# apprise's message types
KINDS: dict[str, str] = {
    "AC_POWER_LOSS": "warning", "AC_POWER_RESTORED": "success", "DC_OUT_LOSS": "warning",
    "DC_OUT_RESTORED": "success", "BATTERY_VOLTAGE_LOW": "warning", "BATTERY_VOLTAGE_CRITICAL": "failure",
    "BATTERY_VOLTAGE_RECOVERED": "success", "BATTERY_FULL": "success", "UPS_FAULT": "failure",
    "TEMPERATURE_HIGH": "warning", "TEMPERATURE_NORMAL": "success", "OVERCURRENT_DETECTED": "warning",
    "OVERCURRENT_CLEARED": "success", "FSD_SET": "failure", "COMMUNICATION_LOST": "warning",
    "COMMUNICATION_RESTORED": "success", "SHUTDOWN_STARTED": "failure", "SHUTDOWN_CANCELLED": "success",
    "SHUTDOWN_COMMAND": "failure", "ACTION_FAILED": "warning", "AUTH_FAILURE": "warning",
}
LATE_S = 60.0  # a message sent this much after its last event says it is late


def local_time(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def clock_time(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().strftime("%H:%M:%S")


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def _when(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00")).timestamp()


def state_line(facts: dict[str, Any]) -> str:
    """The UPS now: on mains or battery, charge, runtime."""
    tokens = str(facts.get("status", "")).split()
    where = ("on battery" if "OB" in tokens else "on mains" if "OL" in tokens else "")
    if where and "CHRG" in tokens:
        where += ", charging"
    parts = [where] if where else []
    if facts.get("charge") is not None:
        parts.append(f"battery {facts['charge']:g} %")
    if facts.get("runtime") is not None:
        parts.append(f"about {duration(facts['runtime'])} left")
    return ("Now: " + ", ".join(parts) + ".") if parts else ""


def shutdown_line(facts: dict[str, Any]) -> str:
    at = facts.get("down_at")
    if at is None:
        return ""
    if facts.get("down_firm"):
        return f"The Pi goes down by {clock_time(at)}."
    return (f"If mains stays off, the Pi shuts down at about {clock_time(at)} "
            "(when the battery is critical).")


def render(message: Message, now: float) -> tuple[str, str, str]:
    """(title, body, apprise type) for ``message``, sent at wall time ``now``."""
    first, last = message.first, message.last
    t_first, t_last = _when(first), _when(last)
    kind = KINDS.get(str(last["type"]), "info")
    if message.count == 1:
        title = f"{message.ups}: {TITLES.get(str(first['type']), str(first['type']))}"
        lines = [f"{local_time(t_first)}: {first.get('message', '')}"]
    else:
        what = FAMILY_TITLES.get(message.family, TITLES.get(str(last["type"]), str(last["type"])))
        title = f"{message.ups}: {what} ({message.count} events)"
        counted = ", ".join(f"{TITLES.get(t, t)} {n}x" for t, n in message.counts.items())
        lines = [f"{message.count} events from {local_time(t_first)} to {clock_time(t_last)}: {counted}.",
                 f"Last: {TITLES.get(str(last['type']), str(last['type']))}: {last.get('message', '')}"]
    for line in (state_line(message.facts), shutdown_line(message.facts)):
        if line:
            lines.append(line)
    if now - t_last > LATE_S:
        lines.append(f"(Sent {duration(now - t_last)} late, at {clock_time(now)}: it could not go before.)")
    return title, "\n".join(lines), kind


def going_down(ups: str, argv: list[str], reboot: bool) -> Event:
    """The event a notification says just before the Pi's own command runs."""
    what = "reboots now (mains is back)" if reboot else "powers off now"
    return Event(EventType.SHUTDOWN_COMMAND, ups, f"the Pi {what}: running {' '.join(argv)!r}")
