"""Tells people: each event that nutups.yaml maps to `notify:` targets becomes a message in the
outbox, and one task per target sends that target's messages in order.

A message that does not go stays first in its target's queue (and in the file): the next
try comes 5 s later, then 10, 20, ... up to ``notify_retry_max``; the other targets go on
meanwhile.  Before the Pi's own shutdown command, every waiting message gets one last try of
at most ``notify_last_try`` seconds, led by a "going down now" message for the targets of
SHUTDOWN_COMMAND (the event itself is logged only after the command ran, too late to leave
the house).  Sending never blocks the event loop (nutups/events/notify_targets.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..state import UpsState
from .config import EventsConfig
from .notify_targets import NotSent, Target
from .notify_text import duration, going_down, render
from .outbox import Message, Outbox
from .types import Event, EventType

log = logging.getLogger("nutups.notifications")

RETRY_FIRST_S = 5.0
QUEUE_FILE = "notify-queue.json"

# (when the Pi's command runs, as wall-clock seconds; True once the sequence is under way,
# False for an estimate from the runtime), or None when no shutdown is planned
ShutdownPlan = Callable[[str], "tuple[float, bool] | None"]


def _number(state: UpsState, name: str) -> float | None:
    try:
        return float(state.value(name) or "")
    except ValueError:
        return None


class Notifier:
    """Every `notify:` target of one daemon, fed by the event engine (``on_event``)."""

    def __init__(self, config: EventsConfig, states: list[UpsState], queue_path: Path | None,
                 shutdown_plan: ShutdownPlan | None = None, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.config = config
        self.states = {s.name: s for s in states}
        self.shutdown_plan = shutdown_plan
        self.clock = clock
        self.wall = wall
        self.outbox = Outbox(queue_path, config.notify_coalesce, clock)
        self.targets: dict[str, Target] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._retry_at: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._announced: set[str] = set()  # UPSes whose "going down now" went before the command
        self._use_targets(config.notify)

    def _use_targets(self, urls: dict[str, str]) -> None:
        for name in list(self.targets):
            if name not in urls:
                del self.targets[name]
                task = self._tasks.pop(name, None)
                if task is not None:
                    task.cancel()
        for name, url in urls.items():
            if name not in self.targets or self.targets[name].url != url:
                self.targets[name] = Target(name, url)
            self._wake.setdefault(name, asyncio.Event())
            self._locks.setdefault(name, asyncio.Lock())
        for name in [n for n in self.outbox.queues if n not in urls]:
            gone = self.outbox.drop_target(name)
            if gone:
                log.warning("notify: %d waiting message(s) for %s dropped: notify: no longer names it", gone, name)

    # --- in ---------------------------------------------------------------------------------

    def facts(self, ups: str) -> dict[str, Any]:
        """What a message says of the UPS now: status, charge, runtime, the planned shutdown."""
        out: dict[str, Any] = {}
        state = self.states.get(ups)
        if state is not None:
            out = {"status": state.client_status or "", "charge": _number(state, "battery.charge"),
                   "runtime": _number(state, "battery.runtime")}
        plan = self.shutdown_plan(ups) if self.shutdown_plan is not None else None
        if plan is not None:
            out["down_at"], out["down_firm"] = plan
        return out

    def on_event(self, event: Event) -> None:
        actions = self.config.actions.get(event.type)
        if actions is None or not actions.notify:
            return
        if event.type == EventType.SHUTDOWN_COMMAND and event.ups in self._announced:
            self._announced.discard(event.ups)  # a later shutdown is announced again
            return  # said before the command ran ("going down now")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._queue(event, actions.notify)
            return
        # the facts at the end of this turn: the reading that made the event has reached every
        # observer by then (the shutdown policy's plan for an AC_POWER_LOSS, above all)
        loop.call_soon(self._queue, event, list(actions.notify))

    def _queue(self, event: Event, names: list[str]) -> None:
        facts = self.facts(event.ups)
        for name in names:
            if name in self.targets:
                self.outbox.add(name, event, facts)
                self._wake[name].set()

    # --- out --------------------------------------------------------------------------------

    async def run(self) -> None:
        """One sending task per target, until cancelled."""
        self._start_tasks()
        try:
            while True:
                await asyncio.sleep(3600)
        finally:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            self.outbox.save()

    def _start_tasks(self) -> None:
        loop = asyncio.get_running_loop()
        for name in self.targets:
            if name not in self._tasks:
                self._tasks[name] = loop.create_task(self._deliver(name), name=f"notify-{name}")

    async def _deliver(self, name: str) -> None:
        wake = self._wake[name]
        while True:
            wake.clear()
            message = self.outbox.head(name)
            if message is None:
                await wake.wait()
                continue
            due = max(message.ready_at(), self._retry_at.get(name, 0.0))
            now = self.clock()
            if now < due:
                try:
                    await asyncio.wait_for(wake.wait(), due - now)
                except TimeoutError:
                    pass
                continue
            async with self._locks[name]:
                if self.outbox.head(name) is message:
                    try:
                        await self._send(name, message)
                    except Exception:  # a bug must not stop this target for good
                        log.exception("notify %s: message %d dropped", name, message.id)
                        self.outbox.sent(message)

    async def _send(self, name: str, message: Message) -> bool:
        target = self.targets.get(name)
        if target is None:
            return False
        try:
            title, body, kind = render(message, self.wall())
        except (KeyError, TypeError, ValueError) as exc:  # a damaged record in the queue file
            log.error("notify %s: message %d cannot be written (%s: %s); dropped", name, message.id,
                      type(exc).__name__, exc)
            self.outbox.sent(message)
            return True
        try:
            await target.send(title, body, kind, self.config.notify_timeout)
        except NotSent as exc:
            self.outbox.failed(message)
            failures = self._failures[name] = self._failures.get(name, 0) + 1
            delay = min(RETRY_FIRST_S * 2 ** (failures - 1), self.config.notify_retry_max)
            self._retry_at[name] = self.clock() + delay
            waiting = len(self.outbox.pending(name))
            (log.warning if failures == 1 else log.info)(
                "notify %s: %r not sent: %s; %d message(s) wait, next try in %s", name, title, exc, waiting,
                duration(delay))
            return False
        self.outbox.sent(message)
        self._retry_at.pop(name, None)
        if self._failures.pop(name, 0):
            log.info("notify %s: sending again", name)
        log.info("notify %s: sent %r", name, title)
        return True

    async def last_try(self, timeout: float | None = None) -> None:
        """Everything waiting gets one more try now, for at most ``timeout`` seconds in all."""
        limit = self.config.notify_last_try if timeout is None else timeout
        self.outbox.settle_all()
        names = [name for name in self.targets if self.outbox.pending(name)]
        if not names:
            return

        async def flush(name: str) -> None:
            async with self._locks[name]:
                while (message := self.outbox.head(name)) is not None:
                    if not await self._send(name, message):
                        return

        count = len(self.outbox.pending())
        log.info("notify: last try before the shutdown command: %d message(s), at most %g s", count, limit)
        try:
            await asyncio.wait_for(asyncio.gather(*(flush(n) for n in names)), limit)
        except TimeoutError:
            pass
        left = len(self.outbox.pending())
        if left:
            log.warning("notify: %d message(s) not sent before the shutdown; they are kept and go after the next "
                        "start", left)
        self.outbox.save()

    async def before_command(self, ups: str, argv: list[str], reboot: bool) -> None:
        """The Pi's own command is about to run: say so, and give what waits its last try."""
        if ups not in self._announced:
            self._announced.add(ups)
            actions = self.config.actions.get(EventType.SHUTDOWN_COMMAND)
            if actions is not None and actions.notify:
                self._queue(going_down(ups, argv, reboot), actions.notify)
        await self.last_try()

    def reload(self, config: EventsConfig) -> None:
        """SIGHUP: targets, their URLs and the notify settings of the new nutups.yaml."""
        for name in ("notify", "notify_coalesce", "notify_last_try", "notify_timeout", "notify_retry_max"):
            setattr(self.config, name, getattr(config, name))
        self.outbox.coalesce = config.notify_coalesce
        self._use_targets(config.notify)
        try:
            self._start_tasks()
        except RuntimeError:  # no running loop (a test)
            pass

    async def send_test(self, names: list[str]) -> dict[str, str | None]:
        """`nutups notify test`: one message to each target now, outside the queue; None: sent."""
        import socket

        results: dict[str, str | None] = {}
        for name in names:
            body = (f"A test message from nutups on {socket.gethostname()} to the target {name!r}. "
                    "If you read this, notifications work.")
            try:
                await self.targets[name].send("nutups: test message", body, "info", self.config.notify_timeout)
                results[name] = None
            except NotSent as exc:
                results[name] = str(exc)
        return results
