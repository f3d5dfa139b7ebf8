"""The dashboard's live feed: state changes and events pushed to Server-Sent Events clients.

It observes the states (UpsState.on_publish) and the events (EventEngine.on_event) like
every other output; with no dashboard open it does nothing.  Changes are coalesced for
``COALESCE_S`` so that a fast simulation does not send a message per poll.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ..events.outputs import Outputs
from ..events.types import Event
from ..state import UpsState

COALESCE_S = 0.2
QUEUE_LIMIT = 512  # messages a slow client may fall behind before it is dropped


def state_snapshot(state: UpsState) -> dict[str, Any]:
    """The variables as a client sees them (UpsState's client view: FSD, the policy's LB)."""
    return dict(state.client_variables())


class LiveFeed:
    """Fans state diffs and events out to the connected dashboards."""

    def __init__(self, states: list[UpsState], outputs: Outputs | None = None) -> None:
        self.states = states
        # the Pi's own lines (LEDs, relay, buzzer) belong to the HAT: the first UPS, as its outlets
        self.outputs = outputs if states else None
        if self.outputs is not None:
            self.outputs.on_change(self.output_changed)
        self.clients: set[asyncio.Queue[str | None]] = set()
        self._sent: dict[str, dict[str, str]] = {}
        self._health: dict[str, tuple[bool, bool]] = {}
        self._dirty: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None
        for state in states:
            state.on_publish(self.observe)

    # --- observers ------------------------------------------------------------------

    def observe(self, state: UpsState) -> None:
        if not self.clients:
            return
        self._dirty.add(state.name)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(COALESCE_S, self._push)

    def output_changed(self, name: str, pattern: str) -> None:
        if self.clients and self.outputs is not None:
            self._send("outputs", self._outputs_message())

    def outputs_of(self, ups: str) -> dict[str, dict[str, str]] | None:
        """The lines shown with the UPS ``ups`` (None for a UPS without them)."""
        if self.outputs is None or ups != self.states[0].name:
            return None
        return self.outputs.patterns_by_kind()

    def _outputs_message(self) -> dict[str, Any]:
        return {"ups": self.states[0].name, "outputs": self.outputs_of(self.states[0].name)}

    def on_event(self, event: Event) -> None:
        if self.clients:
            self._send("event", json.loads(event.to_json()))

    # --- clients ----------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[str | None]:
        """A new client: it gets every state in full, then the changes."""
        self._dirty.update(s.name for s in self.states)
        self._push()  # the clients already here are brought up to date first
        queue: asyncio.Queue[str | None] = asyncio.Queue(QUEUE_LIMIT)
        for state in self.states:
            queue.put_nowait(_message("state", self._full(state)))
        if self.outputs is not None:
            queue.put_nowait(_message("outputs", self._outputs_message()))
        self.clients.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str | None]) -> None:
        self.clients.discard(queue)

    def close(self) -> None:
        for queue in list(self.clients):
            try:
                queue.put_nowait(None)
            except asyncio.QueueFull:
                pass
        self.clients.clear()

    # --- internals --------------------------------------------------------------------

    def _full(self, state: UpsState) -> dict[str, Any]:
        values = state_snapshot(state)
        self._sent[state.name] = values
        self._health[state.name] = (state.connected, state.stale)
        return {"ups": state.name, "full": True, "vars": values, "connected": state.connected,
                "stale": state.stale}

    def _push(self) -> None:
        self._timer = None
        dirty, self._dirty = self._dirty, set()
        for state in self.states:
            if state.name not in dirty:
                continue
            values = state_snapshot(state)
            before = self._sent.get(state.name, {})
            changed: dict[str, str | None] = {k: v for k, v in values.items() if before.get(k) != v}
            changed.update({k: None for k in before if k not in values})
            health = (state.connected, state.stale)
            self._sent[state.name] = values
            if changed or health != self._health.get(state.name):
                self._health[state.name] = health
                self._send("state", {"ups": state.name, "vars": changed, "connected": health[0],
                                     "stale": health[1]})

    def _send(self, kind: str, data: dict[str, Any]) -> None:
        text = _message(kind, data)
        for queue in list(self.clients):
            try:
                queue.put_nowait(text)
            except asyncio.QueueFull:  # a client that does not read: drop it, it reconnects
                self.clients.discard(queue)
                queue.get_nowait()
                queue.put_nowait(None)


def _message(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
