"""The notifications waiting to go out: one ordered queue per target, kept in a file in the
datapath so that a restart loses none, with the bursts of one kind folded into one message.

An outage often takes the router with it, so a message that cannot be sent stays here and
goes when the network is back, in order, with the time of its events.  Folding: an event
joins the newest message of its target about the same UPS and the same kind of condition
(mains lost and back, the Pi's supply, charging, ...) while that message is still
settling: until ``coalesce`` seconds have passed without another such event, and at most
``MAX_HOLD`` times that since its first.  A flapping mains so gives one message with a
count.  A message about the shutdown settles for nothing, and closes every message before
it (they go first: the order holds).

The file is rewritten whole (small: a few messages) and replaced atomically, once per
burst of changes; messages read back at start have settled already.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..durable import WriteHealth, write_atomically
from .types import Event, EventType

log = logging.getLogger("nutups.notifications")

MAX_HOLD = 6  # a message settles at most this many coalesce periods after its first event
MAX_QUEUED = 200  # per target: older ones are dropped (the event log keeps them all)
FILE_VERSION = 1

# conditions whose events alternate: one family each
FAMILIES: dict[EventType, str] = {
    EventType.AC_POWER_LOSS: "mains", EventType.AC_POWER_RESTORED: "mains",
    EventType.DC_OUT_LOSS: "dc_out", EventType.DC_OUT_RESTORED: "dc_out",
    EventType.BATTERY_VOLTAGE_LOW: "battery_voltage", EventType.BATTERY_VOLTAGE_CRITICAL: "battery_voltage",
    EventType.BATTERY_VOLTAGE_RECOVERED: "battery_voltage",
    EventType.CHARGING_STARTED: "charging", EventType.CHARGING_STOPPED: "charging",
    EventType.BATTERY_FULL: "charging",
    EventType.TEMPERATURE_HIGH: "temperature", EventType.TEMPERATURE_NORMAL: "temperature",
    EventType.OVERCURRENT_DETECTED: "overcurrent", EventType.OVERCURRENT_CLEARED: "overcurrent",
    EventType.COMMUNICATION_LOST: "communication", EventType.COMMUNICATION_RESTORED: "communication",
}
# the shutdown's messages go at once: they may be the last the Pi sends
URGENT = frozenset({EventType.SHUTDOWN_STARTED, EventType.SHUTDOWN_CANCELLED, EventType.SHUTDOWN_COMMAND,
                    EventType.FSD_SET})


def family_of(kind: EventType) -> str:
    return FAMILIES.get(kind, str(kind))


@dataclass
class Message:
    """One message to one target: the first and the last of the events folded into it."""

    id: int
    target: str
    ups: str
    family: str
    first: dict[str, Any]  # the event record (type, message, time, ...)
    last: dict[str, Any]
    count: int = 1
    counts: dict[str, int] = field(default_factory=dict)  # event type -> how many
    facts: dict[str, Any] = field(default_factory=dict)  # the UPS at the last event: charge, runtime...
    attempts: int = 0
    # monotonic seconds; not kept in the file (a message read back has settled)
    settle_until: float = 0.0
    hold_until: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["settle_until"], data["hold_until"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Message:
        return cls(id=int(data["id"]), target=str(data["target"]), ups=str(data["ups"]),
                   family=str(data["family"]), first=dict(data["first"]), last=dict(data["last"]),
                   count=int(data.get("count", 1)), counts=dict(data.get("counts", {})),
                   facts=dict(data.get("facts", {})), attempts=int(data.get("attempts", 0)))

    def ready_at(self) -> float:
        """The monotonic time from which it may be sent."""
        return min(self.settle_until, self.hold_until)


def _record(event: Event) -> dict[str, Any]:
    return json.loads(event.to_json())


class Outbox:
    """Every target's queue; ``path`` None keeps them in memory only."""

    def __init__(self, path: Path | None, coalesce: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.coalesce = coalesce
        self.clock = clock
        self.queues: dict[str, list[Message]] = {}
        self.next_id = 1
        self._save_pending = False
        self._health = WriteHealth("the notification queue", path or Path("."), log)
        self.dropped = 0  # messages dropped because more than MAX_QUEUED waited (said once per burst)
        if path is not None:
            self._load(path)

    # --- what goes in -------------------------------------------------------------------

    def add(self, target: str, event: Event, facts: dict[str, Any]) -> Message:
        """Queue ``event`` for ``target``: folded into a settling message of its kind, or new."""
        now = self.clock()
        queue = self.queues.setdefault(target, [])
        family = family_of(event.type)
        if event.type in URGENT:
            for message in queue:  # what came before goes first, now
                message.settle_until = message.hold_until = min(message.ready_at(), now)
        else:
            for message in reversed(queue):
                if message.ups == event.ups and message.family == family:
                    if message.attempts == 0 and now < message.ready_at():
                        message.last = _record(event)
                        message.count += 1
                        message.counts[str(event.type)] = message.counts.get(str(event.type), 0) + 1
                        message.facts = facts
                        message.settle_until = now + self.coalesce
                        self._changed()
                        return message
                    break
        settle = 0.0 if event.type in URGENT else self.coalesce
        message = Message(self.next_id, target, event.ups, family, _record(event), _record(event),
                          counts={str(event.type): 1}, facts=facts, settle_until=now + settle,
                          hold_until=now + settle * MAX_HOLD)
        self.next_id += 1
        queue.append(message)
        if len(queue) > MAX_QUEUED:
            dropped = queue.pop(0)
            self.dropped += 1
            if self.dropped == 1:  # said once per burst; the count comes when the queue drains
                log.warning("notify %s: more than %d messages wait; the oldest (%s of %s) are dropped (the event "
                            "log has them)", target, MAX_QUEUED, dropped.first.get("type"), dropped.first.get("time"))
        self._changed()
        return message

    # --- what goes out ------------------------------------------------------------------

    def head(self, target: str) -> Message | None:
        """The next message for ``target`` (the oldest), settled or not."""
        queue = self.queues.get(target)
        return queue[0] if queue else None

    def pending(self, target: str | None = None) -> list[Message]:
        if target is not None:
            return list(self.queues.get(target, []))
        return [m for queue in self.queues.values() for m in queue]

    def settle_all(self) -> None:
        """The last try before the Pi goes down: everything may go now."""
        now = self.clock()
        for message in self.pending():
            message.settle_until = message.hold_until = min(message.ready_at(), now)

    def sent(self, message: Message) -> None:
        queue = self.queues.get(message.target, [])
        if message in queue:
            queue.remove(message)
            self._changed()
        if self.dropped and not queue:
            log.warning("notify %s: the queue drained; %d older message(s) had been dropped (the event log has "
                        "them)", message.target, self.dropped)
            self.dropped = 0

    def failed(self, message: Message) -> None:
        message.attempts += 1
        self._changed()

    def drop_target(self, target: str) -> int:
        """A target that is no longer configured: its messages go nowhere."""
        gone = len(self.queues.pop(target, []))
        if gone:
            self._changed()
        return gone

    # --- the file -------------------------------------------------------------------------

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
            messages = [Message.from_json(m) for m in data["messages"]]
            self.next_id = max(int(data.get("next_id", 1)), *(m.id + 1 for m in messages), 1)
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            bad = path.with_name(path.name + ".bad")
            log.error("notify: cannot read the queue %s (%s); kept as %s, starting empty", path, exc, bad)
            try:
                os.replace(path, bad)
            except OSError:
                pass
            return
        for message in sorted(messages, key=lambda m: m.id):
            self.queues.setdefault(message.target, []).append(message)
        if messages:
            log.info("notify: %d message(s) from before the restart wait to be sent", len(messages))

    def _changed(self) -> None:
        """Save at the end of this burst (once per turn of the event loop); at once without a loop."""
        if self.path is None or self._save_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.save()
            return
        self._save_pending = True
        loop.call_soon(self.save)

    def save(self) -> None:
        self._save_pending = False
        if self.path is None:
            return
        data = {"version": FILE_VERSION, "next_id": self.next_id,
                "messages": [m.to_json() for m in sorted(self.pending(), key=lambda m: m.id)]}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, json.dumps(data, separators=(",", ":")).encode())
        except OSError as exc:
            self._health.failed(exc, "waiting messages are kept in memory (lost if nutups stops)")
        else:
            self._health.ok("the waiting messages are kept")
