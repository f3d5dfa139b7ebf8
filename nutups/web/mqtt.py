"""MQTT publishing (aiomqtt): each UPS's state and events, and Home Assistant discovery.

Topics (``nutups`` is ``topic_prefix``):

- ``nutups/status``: ``online`` (retained) while connected; ``offline`` as the last will,
  which the broker publishes when the connection dies, even after a ``kill -9``.
- ``nutups/<ups>/state``: the variables as a JSON object (retained), within a second of
  a change; ``nutups/<ups>/event``: each event record as the event log has it.
- ``nutups/<ups>/availability``: ``online`` (retained) while that UPS has fresh data,
  ``offline`` while it has none (a driver that cannot read, a remote server gone): Home
  Assistant then shows its entities as unavailable, not the last values as current.
- ``<discovery_prefix>/<component>/<node>/<ups>_<what>/config``: Home Assistant
  discovery (retained), sent again when Home Assistant announces ``online`` on
  ``<discovery_prefix>/status`` (it forgets entities when it restarts).
- ``nutups/<ups>/command``: a command to run (an outlet switch always; any other command
  only with ``expose_commands: true``, which also makes buttons for them), as the
  upsd.users account ``command_user``, through the NUT server's core as a NUT client's
  (rights, DATA-STALE, the audit line, tracking); ``nutups/<ups>/result`` then says the
  driver's result (OK, FAILED) or why the core refused it.

Like the dashboard it observes the states (UpsState.on_publish) and the events
(EventEngine.on_event); commands go through the NUT server's core (ServerCore.control).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
from typing import Any

from ..events.types import Event
from ..nut.protocol import ServerCore
from ..state import CommandResult, UpsState
from .config import MqttPublishSettings
from .live import state_snapshot

log = logging.getLogger("nutups.mqtt")

COALESCE_S = 0.25  # changes within this are sent as one state message (well within a second)
RETRY_S = (1, 2, 5, 10, 30, 60)  # waits before reconnecting to the broker
OUTLET_COMMAND = re.compile(r"^outlet\.(\d+)\.load\.(on|off)$")
COMMAND_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# (variable, component, key, Home Assistant fields)
SENSORS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("battery.charge", "battery_charge", {"name": "Battery charge", "device_class": "battery",
                                          "unit_of_measurement": "%", "state_class": "measurement"}),
    ("battery.voltage", "battery_voltage", {"name": "Battery voltage", "device_class": "voltage",
                                            "unit_of_measurement": "V", "state_class": "measurement"}),
    ("battery.runtime", "battery_runtime", {"name": "Battery runtime", "device_class": "duration",
                                            "unit_of_measurement": "s", "state_class": "measurement"}),
    ("ups.load", "load", {"name": "Load", "unit_of_measurement": "%", "state_class": "measurement",
                          "icon": "mdi:gauge"}),
    ("ups.temperature", "temperature", {"name": "Temperature", "device_class": "temperature",
                                        "unit_of_measurement": "°C", "state_class": "measurement"}),
    ("input.voltage", "input_voltage", {"name": "Input voltage", "device_class": "voltage",
                                        "unit_of_measurement": "V", "state_class": "measurement"}),
    ("ups.status", "status", {"name": "Status", "icon": "mdi:information-outline"}),
    # the capacity measured from outages, % of nominal (nutups.battery; there once one outage measured it)
    ("experimental.battery.capacity.percent", "battery_capacity", {
        "name": "Battery capacity", "unit_of_measurement": "%", "state_class": "measurement",
        "icon": "mdi:battery-heart-variant"}),
)
# (status flag, key, Home Assistant fields): on while the flag is in ups.status
BINARY_SENSORS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("OL", "mains", {"name": "Mains power", "device_class": "power"}),
    ("CHRG", "charging", {"name": "Charging", "device_class": "battery_charging"}),
    ("LB", "low_battery", {"name": "Low battery", "device_class": "battery"}),
    ("RB", "replace_battery", {"name": "Replace battery", "device_class": "problem"}),
)


def node_id(text: str) -> str:
    """A discovery node or object id: letters, digits, _ and - only."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


class MqttPublisher:
    """Keeps one connection to the broker and publishes what the states and events do."""

    def __init__(self, settings: MqttPublishSettings, broker: dict[str, Any], states: list[UpsState],
                 core: ServerCore | None = None) -> None:
        self.settings = settings
        self.core = core  # the NUT server's core: commands go through it
        self._commands: set[asyncio.Task] = set()
        self.host = str(broker.get("host", "127.0.0.1"))
        self.port = int(broker.get("port", 8883 if settings.tls else 1883))
        self.username = broker.get("username")
        self.password = broker.get("password")
        self.states = {s.name: s for s in states}
        self.prefix = settings.topic_prefix
        self.status_topic = f"{self.prefix}/status"
        self.node = node_id(self.prefix)
        # unique per machine: a broker drops a client when another connects with its id
        self.client_id = f"nutups-{node_id(socket.gethostname())}-{self.node}"[:64]
        self._outbox: asyncio.Queue[tuple[str, str, bool]] = asyncio.Queue(maxsize=1000)
        self._sent: dict[str, dict[str, str]] = {}
        self._dirty: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._discovered: dict[str, tuple] = {}  # ups -> what its discovery described
        self._available: dict[str, bool] = {}  # ups -> the availability last sent
        self.connected = asyncio.Event()
        for state in states:
            state.on_publish(self.observe)

    # --- observers (the drivers' loop) ------------------------------------------------

    def observe(self, state: UpsState) -> None:
        self._dirty.add(state.name)
        if self._timer is None and self.connected.is_set():
            self._timer = asyncio.get_running_loop().call_later(COALESCE_S, self._queue_states)

    def on_event(self, event: Event) -> None:
        if self.connected.is_set():
            self._put(f"{self.prefix}/{event.ups}/event", event.to_json(), False)

    # --- what is sent -------------------------------------------------------------------

    def _put(self, topic: str, payload: str, retain: bool) -> None:
        try:
            self._outbox.put_nowait((topic, payload, retain))
        except asyncio.QueueFull:  # the broker is not keeping up: the retained state catches up later
            log.warning("MQTT: the outgoing queue is full; dropped a message for %s", topic)

    def _queue_states(self, everything: bool = False) -> None:
        self._timer = None
        dirty, self._dirty = self._dirty, set()
        for name, state in self.states.items():
            if not (everything or name in dirty):
                continue
            available = state.connected and not state.stale
            if everything or self._available.get(name) != available:
                self._available[name] = available
                self._put(f"{self.prefix}/{name}/availability", "online" if available else "offline", True)
            if not state.connected:
                continue
            values = state_snapshot(state)
            if not everything and values == self._sent.get(name):
                continue
            self._sent[name] = values
            self._put(f"{self.prefix}/{name}/state", json.dumps(values, sort_keys=True), True)
            shape = self._shape(state, values)
            if self.settings.discovery_prefix and (everything or self._discovered.get(name) != shape):
                self._queue_discovery(state, values, shape)

    def _shape(self, state: UpsState, values: dict[str, str]) -> tuple:
        """What the discovery of a UPS depends on: the variables and commands it has."""
        return tuple(sorted(values)), tuple(state.sorted_commands()) if self.settings.expose_commands else ()

    def _queue_discovery(self, state: UpsState, values: dict[str, str], shape: tuple) -> None:
        self._discovered[state.name] = shape
        for topic, config in self.discovery(state, values):
            self._put(topic, json.dumps(config, sort_keys=True), True)

    def discovery(self, state: UpsState, values: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
        """Home Assistant's discovery messages for one UPS: one device, its entities."""
        prefix, ups = self.settings.discovery_prefix, state.name
        state_topic = f"{self.prefix}/{ups}/state"
        device = {
            "identifiers": [f"{self.node}_{node_id(ups)}"],
            "name": state.desc or ups,
            "manufacturer": values.get("device.mfr") or values.get("ups.mfr") or "unknown",
            "model": values.get("device.model") or values.get("ups.model") or "UPS",
            "sw_version": values.get("driver.version", ""),
        }
        serial = values.get("device.serial") or values.get("ups.serial")
        if serial:
            device["serial_number"] = serial
        # available while nutups runs and this UPS has fresh data
        common = {"device": device, "availability": [{"topic": self.status_topic},
                                                     {"topic": f"{self.prefix}/{ups}/availability"}],
                  "availability_mode": "all", "payload_available": "online",
                  "payload_not_available": "offline", "origin": {"name": "nutups"}}
        out = []

        def entity(component: str, key: str, fields: dict[str, Any]) -> None:
            object_id = f"{node_id(ups)}_{key}"
            config = dict(common, **fields, unique_id=f"{self.node}_{object_id}", object_id=object_id)
            out.append((f"{prefix}/{component}/{self.node}/{object_id}/config", config))

        for var, key, fields in SENSORS:
            if var in values:
                entity("sensor", key, dict(fields, state_topic=state_topic,
                                           value_template=f"{{{{ value_json['{var}'] }}}}"))
        for flag, key, fields in BINARY_SENSORS:
            entity("binary_sensor", key, dict(
                fields, state_topic=state_topic, payload_on="ON", payload_off="OFF",
                value_template=f"{{{{ 'ON' if '{flag}' in value_json['ups.status'].split() else 'OFF' }}}}"))
        command_topic = f"{self.prefix}/{ups}/command"
        # a UPS that takes no commands here (another NUT server's: its controls are the dashboard's
        # alone) shows its outlets read-only, and no buttons
        takes_commands = state.instcmd_handler is not None
        for var in values:
            m = re.match(r"^outlet\.(\d+)\.status$", var)
            if m and not takes_commands:
                n = m.group(1)
                entity("binary_sensor", f"outlet_{n}", {
                    "name": values.get(f"outlet.{n}.desc") or f"Outlet {n}", "state_topic": state_topic,
                    "value_template": f"{{{{ 'ON' if value_json['outlet.{n}.status'] == 'on' else 'OFF' }}}}",
                    "payload_on": "ON", "payload_off": "OFF", "device_class": "power"})
            elif m:
                n = m.group(1)
                entity("switch", f"outlet_{n}", {
                    "name": values.get(f"outlet.{n}.desc") or f"Outlet {n}", "state_topic": state_topic,
                    "value_template": f"{{{{ value_json['outlet.{n}.status'] }}}}", "state_on": "on",
                    "state_off": "off", "command_topic": command_topic,
                    "payload_on": f"outlet.{n}.load.on", "payload_off": f"outlet.{n}.load.off",
                    "device_class": "outlet"})
        if self.settings.expose_commands and takes_commands:
            for cmd in state.sorted_commands():
                if not OUTLET_COMMAND.match(cmd):
                    entity("button", "cmd_" + node_id(cmd), {"name": cmd, "command_topic": command_topic,
                                                             "payload_press": cmd})
        return out

    # --- commands from the broker ----------------------------------------------------------

    def _spawn_command(self, ups: str, payload: str) -> None:
        """A command from the broker runs as a task of its own: a slow plug holds up no message."""
        task = asyncio.get_running_loop().create_task(self.command(ups, payload))
        self._commands.add(task)
        task.add_done_callback(self._command_finished)

    def _command_finished(self, task: asyncio.Task) -> None:
        self._commands.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.warning("MQTT: a command failed: %s", str(exc) or type(exc).__name__)

    async def command(self, ups: str, payload: str) -> str | None:
        """Run a command from the broker through the NUT server's core; publish and return
        its result: OK, FAILED, or the core's refusal (ACCESS-DENIED, DATA-STALE, ...)."""
        state = self.states.get(ups)
        cmd = payload.strip()
        if state is None or state.instcmd_handler is None:
            log.warning("MQTT: command %r for %s ignored", cmd, "unknown UPS " + repr(ups) if state is None else
                        f"{ups}, which takes no commands here (another NUT server's UPS: its dashboard controls)")
            return None
        if not COMMAND_NAME.match(cmd):
            log.warning("MQTT: %r on %s is not a command name; ignored", cmd[:80], ups)
            return None
        if not OUTLET_COMMAND.match(cmd.lower()) and not self.settings.expose_commands:
            log.warning("MQTT: command %s refused: set integrations.mqtt.expose_commands to allow it", cmd)
            return None
        control = self.core.control if self.core is not None else None
        if control is None:
            log.warning("MQTT: command %s on %s: the NUT server is not running", cmd, ups)
            return None
        user = self.settings.command_user
        entry = self.core.users.users.get(user) if user else None
        # without command_user: as a client that gave no USERNAME (USERNAME-REQUIRED)
        last, pending = await control("mqtt", user, (entry.password if entry else None) or "",
                                      f"INSTCMD {state.name} {cmd}")
        outcome = await pending if pending is not None else None
        if outcome is None:
            result = last.removeprefix("ERR ")
            hint = "" if user else " (set integrations.mqtt.command_user to a user of upsd.users)"
            log.warning("MQTT: %s on %s refused: %s%s", cmd, ups, result, hint)
        else:
            result = "OK" if outcome == CommandResult.SUCCESS else "FAILED"
            log.log(logging.INFO if result == "OK" else logging.WARNING, "MQTT: %s on %s: %s", cmd, ups, result)
        self._put(f"{self.prefix}/{ups}/result", json.dumps({"command": cmd, "result": result}), False)
        return result

    # --- the connection ----------------------------------------------------------------------

    def _client(self):
        import aiomqtt

        tls = None
        if self.settings.tls:
            s = self.settings
            tls = aiomqtt.TLSParameters(ca_certs=str(s.ca_file) if s.ca_file else None,
                                        certfile=str(s.cert_file) if s.cert_file else None,
                                        keyfile=str(s.key_file) if s.key_file else None)
        will = aiomqtt.Will(self.status_topic, "offline", qos=1, retain=True)
        return aiomqtt.Client(self.host, self.port, username=self.username, password=self.password,
                              identifier=self.client_id, will=will, tls_params=tls, keepalive=30,
                              timeout=10)

    async def run(self) -> None:
        """Connect, publish, reconnect after a failure; until cancelled."""
        import aiomqtt

        failures = 0
        while True:
            try:
                async with self._client() as client:
                    if failures:
                        log.info("MQTT: connected to %s:%d again", self.host, self.port)
                    failures = 0
                    try:
                        async with asyncio.TaskGroup() as tasks:
                            tasks.create_task(self._send(client))
                            tasks.create_task(self._receive(client))
                    except asyncio.CancelledError:  # the daemon stops: say so, the will is for crashes
                        self.connected.clear()
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(client.publish(self.status_topic, "offline", qos=1,
                                                                  retain=True), 1.0)
                        raise
            except* aiomqtt.MqttError as group:
                exc = group.exceptions[0]
                self.connected.clear()
                wait = RETRY_S[min(failures, len(RETRY_S) - 1)]
                if failures == 0:
                    log.warning("MQTT: broker %s:%d: %s; trying again in %d s", self.host, self.port, exc, wait)
                failures += 1
                await asyncio.sleep(wait)

    async def _receive(self, client) -> None:
        await client.publish(self.status_topic, "online", qos=1, retain=True)
        await client.subscribe(f"{self.prefix}/+/command")
        if self.settings.discovery_prefix:
            await client.subscribe(f"{self.settings.discovery_prefix}/status")
        while not self._outbox.empty():  # what was queued for the last connection is stale
            self._outbox.get_nowait()
        self.connected.set()
        self._queue_states(everything=True)
        try:
            async for message in client.messages:
                topic = str(message.topic)
                payload = message.payload.decode(errors="replace") if isinstance(message.payload, bytes) else str(
                    message.payload)
                if topic == f"{self.settings.discovery_prefix}/status":
                    if payload == "online":  # Home Assistant (re)started: it needs the discovery again
                        self._queue_states(everything=True)
                elif topic.endswith("/command"):
                    self._spawn_command(topic[len(self.prefix) + 1: -len("/command")], payload)
        finally:
            self.connected.clear()

    async def _send(self, client) -> None:
        while True:
            topic, payload, retain = await self._outbox.get()
            await client.publish(topic, payload, qos=1, retain=retain)
