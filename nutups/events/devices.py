"""Smart AC devices behind one small async interface: state, on/off, power readings.

One adapter per kind (after python-kasa's split of capability and transport):
TP-Link Kasa through python-kasa, Shelly through its HTTP API (Gen1 and Gen2+, aiohttp),
Zigbee plugs through zigbee2mqtt over MQTT, Z-Wave plugs through a Z-Wave JS server
(zwave-js-server-python).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import __version__
from .config import DeviceConfig

log = logging.getLogger("nutups.devices")


@dataclass
class PowerReading:
    on: bool | None = None
    power_w: float | None = None
    voltage: float | None = None
    current: float | None = None
    energy_kwh: float | None = None  # the meter's total, where the plug counts it (Z-Wave Meter CC)


class AcDevice:
    """A switchable AC outlet, maybe with an energy meter."""

    kind = "device"

    def __init__(self, cfg: DeviceConfig, timeout: float = 10.0) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.timeout = timeout
        self.last: PowerReading | None = None

    async def read(self) -> PowerReading:
        raise NotImplementedError

    async def switch(self, on: bool) -> None:
        raise NotImplementedError

    # Whether the device can switch back by a timer of its own (switch_for): what a battery test
    # through it needs, so that the plug comes back on even when nutups dies mid-test.
    has_timer = False

    async def switch_for(self, on: bool, seconds: int) -> None:
        """Switch to ``on`` now, and back by the device's own countdown after ``seconds``."""
        raise NotImplementedError(f"{self.name}: a {self.kind} device has no countdown timer")

    async def do(self, action: str) -> PowerReading | None:
        if action == "turn_on":
            await self.switch(True)
        elif action == "turn_off":
            await self.switch(False)
        elif action == "toggle":
            reading = await self.read()
            await self.switch(not reading.on)
        elif action == "capture_power_state":
            self.last = await self.read()
            log.info("%s: %s, %s W, %s V", self.name, {True: "on", False: "off"}.get(self.last.on, "?"),
                     self.last.power_w, self.last.voltage)
            return self.last
        else:
            raise ValueError(f"unknown action {action!r}")
        return None

    async def close(self) -> None:
        pass


# --- Shelly -------------------------------------------------------------------------


MAX_ANSWER = 64 * 1024  # a Shelly status is about 2 KiB; anything far larger is not a Shelly


class ShellyDevice(AcDevice):
    """Shelly plugs and relays over HTTP (aiohttp): Gen1 `/relay/N` with Basic authentication,
    Gen2+ `/rpc/Switch.*` with Digest authentication (SHA-256, user ``admin``), as the devices
    require.  The generation comes from `/shelly`, which answers without authentication."""

    kind = "shelly"

    def __init__(self, cfg: DeviceConfig, timeout: float = 10.0) -> None:
        super().__init__(cfg, timeout)
        self.port = cfg.port or 80
        self.channel = int(cfg.options.get("channel", 0))  # validated by the config schema
        gen = cfg.options.get("gen")
        self.gen: int | None = int(gen) if gen is not None else None
        self._session = None  # aiohttp.ClientSession, made on the event loop that uses it

    def _new_session(self, gen: int):
        import aiohttp

        cfg = self.cfg
        if not cfg.password:
            return aiohttp.ClientSession()
        if gen >= 2:
            return aiohttp.ClientSession(middlewares=(aiohttp.DigestAuthMiddleware(cfg.username or "admin",
                                                                                    cfg.password),))
        basic = base64.b64encode(f"{cfg.username or 'admin'}:{cfg.password}".encode()).decode()
        return aiohttp.ClientSession(headers={"Authorization": f"Basic {basic}"})

    async def _get(self, session, path: str) -> Any:
        import aiohttp

        url = f"http://{self.cfg.host}:{self.port}{path}"
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=self.timeout),
                                         headers={"Accept": "application/json"}) as resp:
                if resp.status == 401:
                    raise ConnectionError(f"{self.name}: HTTP 401: the device wants a "
                                          + ("different password" if self.cfg.password else "password (password:)"))
                if resp.status != 200:
                    raise ConnectionError(f"{self.name}: HTTP {resp.status} for {path}")
                body = b""
                while len(body) <= MAX_ANSWER:
                    chunk = await resp.content.read(MAX_ANSWER + 1 - len(body))
                    if not chunk:
                        break
                    body += chunk
        except aiohttp.ClientError as exc:
            raise ConnectionError(f"{self.name}: {exc}") from None
        if len(body) > MAX_ANSWER:
            raise ConnectionError(f"{self.name}: an answer over {MAX_ANSWER} bytes is not a Shelly's")
        try:
            return json.loads(body)
        except ValueError:
            raise ConnectionError(f"{self.name}: the answer to {path} is not JSON") from None

    async def _generation(self) -> int:
        if self.gen is None:
            import aiohttp

            async with aiohttp.ClientSession() as session:
                info = await self._get(session, "/shelly")
            gen = info.get("gen", 1) if isinstance(info, dict) else 1
            self.gen = gen if isinstance(gen, int) and gen >= 1 else 1
        return self.gen

    async def _call(self, path: str) -> dict:
        gen = await self._generation()
        if self._session is None:  # one session, authenticating as this generation wants
            self._session = self._new_session(gen)
        answer = await self._get(self._session, path)
        if not isinstance(answer, dict):
            raise ConnectionError(f"{self.name}: unexpected answer to {path}")
        return answer

    async def read(self) -> PowerReading:
        if await self._generation() >= 2:
            st = await self._call(f"/rpc/Switch.GetStatus?id={self.channel}")
            return PowerReading(st.get("output"), st.get("apower"), st.get("voltage"), st.get("current"))
        st = await self._call("/status")
        relays, meters = st.get("relays") or [], st.get("meters") or []
        relay = relays[self.channel] if self.channel < len(relays) else {}
        meter = meters[self.channel] if self.channel < len(meters) else {}
        return PowerReading(relay.get("ison"), meter.get("power"), st.get("voltage"), None)

    async def switch(self, on: bool) -> None:
        if await self._generation() >= 2:
            await self._call(f"/rpc/Switch.Set?id={self.channel}&on={'true' if on else 'false'}")
        else:
            await self._call(f"/relay/{self.channel}?turn={'on' if on else 'off'}")

    has_timer = True

    async def switch_for(self, on: bool, seconds: int) -> None:
        """Gen2+: Switch.Set's toggle_after; Gen1: /relay's timer (both flip back after that long)."""
        seconds = max(int(seconds), 1)
        if await self._generation() >= 2:
            await self._call(f"/rpc/Switch.Set?id={self.channel}&on={'true' if on else 'false'}"
                             f"&toggle_after={seconds}")
        else:
            await self._call(f"/relay/{self.channel}?turn={'on' if on else 'off'}&timer={seconds}")

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


# --- zigbee2mqtt ------------------------------------------------------------------------


@dataclass
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    base_topic: str = "zigbee2mqtt"
    username: str | None = None
    password: str | None = None


class ZigbeeDevice(AcDevice):
    """A Zigbee plug behind zigbee2mqtt: `<base>/<id>/set` {"state": "ON"}, state from `<base>/<id>`."""

    kind = "zigbee"

    def __init__(self, cfg: DeviceConfig, mqtt: MqttSettings, timeout: float = 10.0) -> None:
        super().__init__(cfg, timeout)
        self.mqtt = mqtt
        self.topic = f"{mqtt.base_topic}/{cfg.id}"

    def _client(self):
        try:
            import aiomqtt
        except ImportError:
            raise ConnectionError("aiomqtt is not installed (pip install aiomqtt)") from None
        m = self.mqtt
        return aiomqtt.Client(m.host, m.port, username=m.username, password=m.password, timeout=self.timeout)

    async def _mqtt(self, coro):
        """The broker's errors become ConnectionError, like every other device's."""
        import aiomqtt

        try:
            return await asyncio.wait_for(coro, self.timeout)
        except aiomqtt.MqttError as exc:
            raise ConnectionError(f"MQTT {self.mqtt.host}:{self.mqtt.port}: {exc}") from None

    async def switch(self, on: bool) -> None:
        async def go():
            async with self._client() as client:
                await client.publish(f"{self.topic}/set", json.dumps({"state": "ON" if on else "OFF"}), qos=1)

        await self._mqtt(go())

    async def read(self) -> PowerReading:
        async def go():
            async with self._client() as client:
                await client.subscribe(self.topic)
                await client.publish(f"{self.topic}/get", json.dumps({"state": ""}))
                async for message in client.messages:
                    if message.retain:
                        continue  # the broker's last copy: wait for the answer to our /get
                    data = json.loads(message.payload)
                    state = data.get("state")
                    return PowerReading({"ON": True, "OFF": False}.get(state), data.get("power"),
                                        data.get("voltage"), data.get("current"))
            return PowerReading()

        return await self._mqtt(go())


# --- TP-Link Kasa ------------------------------------------------------------------------


class KasaDevice(AcDevice):
    """Kasa plugs through python-kasa's current API (Device.connect / Discover.discover_single,
    the Energy module).  The EP25 hardware 2.6 speaks the newer SMART protocol and needs the
    TP-Link account's username and password."""

    kind = "kasa"

    def __init__(self, cfg: DeviceConfig, timeout: float = 10.0, protocol_factory=None) -> None:
        super().__init__(cfg, timeout)
        self.device = None
        self.protocol_factory = protocol_factory  # tests: build the device over a fake transport

    async def _connect(self):
        if self.device is not None:
            return self.device
        try:
            import kasa
        except ImportError:
            raise ConnectionError("python-kasa is not installed (pip install python-kasa)") from None
        cfg = self.cfg
        creds = kasa.Credentials(cfg.username, cfg.password) if cfg.username else None
        if self.protocol_factory is not None:
            self.device = await self.protocol_factory(cfg, creds)
        elif cfg.options.get("protocol") == "legacy":  # no discovery: straight to the old XOR protocol
            from kasa import DeviceConnectionParameters, DeviceEncryptionType, DeviceFamily

            params = DeviceConnectionParameters(DeviceFamily.IotSmartPlugSwitch, DeviceEncryptionType.Xor)
            config = kasa.DeviceConfig(cfg.host, timeout=self._whole_seconds(), port_override=cfg.port,
                                       credentials=creds, connection_type=params)
            self.device = await kasa.Device.connect(config=config)
        else:
            self.device = await kasa.Discover.discover_single(cfg.host, port=cfg.port, credentials=creds,
                                                              timeout=self._whole_seconds(),
                                                              discovery_timeout=self._whole_seconds())
            if self.device is None:
                raise ConnectionError(f"no Kasa device answered at {cfg.host}")
        return self.device

    def _whole_seconds(self) -> int:
        """python-kasa takes whole seconds: a limit under 1 s must not become 0 (no limit at all
        there); our own wait_for keeps the real one."""
        return max(1, math.ceil(self.timeout))

    async def read(self) -> PowerReading:
        return await self._kasa(self._read())

    async def _kasa(self, coro):
        """python-kasa's errors become ConnectionError, like every other device's; the device
        is disconnected and connected afresh next time."""
        try:
            return await coro
        except Exception as exc:  # KasaException, and python-kasa's own slips on odd answers
            await self.close()
            raise ConnectionError(f"{self.name}: {exc or type(exc).__name__}") from None

    async def _read(self) -> PowerReading:
        dev = await self._connect()
        await dev.update()
        energy = dev.modules.get("Energy") if hasattr(dev, "modules") else None
        reading = PowerReading(dev.is_on)
        if energy is not None:
            reading.power_w = energy.current_consumption
            reading.voltage = getattr(energy, "voltage", None)
            reading.current = getattr(energy, "current", None)
        return reading

    async def switch(self, on: bool) -> None:
        async def go() -> None:
            dev = await self._connect()
            await (dev.turn_on() if on else dev.turn_off())

        await self._kasa(go())

    @property
    def has_timer(self) -> bool:  # type: ignore[override]
        """Countdown rules are the legacy (IOT) protocol's: `protocol: legacy` says the plug speaks it
        (the newer SMART protocol of an EP25 hardware 2.6 has none that nutups sets)."""
        return self.cfg.options.get("protocol") == "legacy"

    async def switch_for(self, on: bool, seconds: int) -> None:
        """A countdown rule (the Kasa app's timer: count_down add_rule, act = the state to reach
        when it runs out), then the switch. The legacy (IOT) protocol only."""
        seconds = max(int(seconds), 1)

        async def go() -> None:
            dev = await self._connect()
            query = getattr(dev, "_query_helper", None)
            if query is None:
                raise ConnectionError("this Kasa device's protocol has no countdown rules")
            await query("count_down", "delete_all_rules")
            await query("count_down", "add_rule", {"enable": 1, "delay": seconds, "act": int(not on),
                                                   "name": "nutups battery test"})
            await (dev.turn_on() if on else dev.turn_off())

        await self._kasa(go())

    async def close(self) -> None:
        device, self.device = self.device, None
        if device is not None:
            try:
                await device.disconnect()
            except Exception as exc:  # python-kasa's own; the connection is dropped either way
                log.debug("%s: disconnect: %s", self.name, exc)


# --- Z-Wave (through a Z-Wave JS server) ------------------------------------------------------------

ZWAVE_PORT = 3000  # the Z-Wave JS server's default, in Z-Wave JS UI and Home Assistant's add-on alike
BINARY_SWITCH = 37  # command class IDs (Z-Wave Alliance, SDS13781)
METER = 50
METER_ELECTRIC = 1
METER_SCALES = {0: "energy_kwh", 2: "power_w", 4: "voltage", 5: "current"}  # electric: kWh, W, V, A
METER_RATES = (0, 1)  # unspecified, consumed (2 is energy produced)


class ZWaveDevice(AcDevice):
    """A Z-Wave plug (Zooz ZEN15, Aeotec Smart Switch, ...) behind the Z-Wave JS WebSocket server
    that Z-Wave JS UI and Home Assistant's add-on run, through Home Assistant's own client,
    zwave-js-server-python: on/off from the Binary Switch command class, W, V, A and kWh from
    the Meter command class (electric), of the node's root or of one ``endpoint``.

    One connection, kept open: the server pushes the plug's reports, and a read is what it last
    reported (capture_power_state asks the plug afresh).  A lost server is connected again with
    backoff: a read waits 1 s after a failed try, then 2, 4 ... up to 60 s (the outlets' poll says
    so once at WARNING, then INFO when it answers again); a switch always tries at once."""

    kind = "zwave"
    BACKOFF_FIRST = 1.0
    BACKOFF_MAX = 60.0

    def __init__(self, cfg: DeviceConfig, timeout: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(cfg, timeout)
        host = cfg.host or "127.0.0.1"
        self.url = f"ws://{f'[{host}]' if ':' in host else host}:{cfg.port or ZWAVE_PORT}"
        self.node_id = int(cfg.options["node_id"])  # required by the config schema
        self.endpoint = int(cfg.options.get("endpoint", 0))
        self.clock = clock
        self.retry_at = 0.0  # no try before this (clock time)
        self.delay = 0.0  # the backoff after the last failed try
        self._client = None  # zwave_js_server.client.Client, with a listening task while connected
        self._session = None
        self._listening: asyncio.Task | None = None
        self._lock: asyncio.Lock | None = None

    # the connection ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        client = self._client
        return (client is not None and client.connected and client.driver is not None
                and self._listening is not None and not self._listening.done())

    async def _driver(self, now: bool = False):
        """The server's model of the network, connecting first if need be (``now``: even
        within the backoff)."""
        if self.connected:
            return self._client.driver
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.connected:
                return self._client.driver
            await self._disconnect()
            wait = self.retry_at - self.clock()
            if wait > 0 and not now:
                raise ConnectionError(f"{self.name}: the Z-Wave JS server at {self.url} did not answer; "
                                      f"next try in {wait:.0f} s")
            try:
                await asyncio.wait_for(self._connect(), self.timeout)
            except BaseException as exc:
                await self._disconnect()
                if isinstance(exc, asyncio.CancelledError) and _cancelled_from_outside():
                    raise
                self.delay = min(self.BACKOFF_MAX, max(self.BACKOFF_FIRST, self.delay * 2))
                self.retry_at = self.clock() + self.delay
                if isinstance(exc, ImportError):
                    raise ConnectionError("zwave-js-server-python is not installed "
                                          "(pip install zwave-js-server-python)") from None
                if not isinstance(exc, Exception):
                    raise
                raise ConnectionError(f"{self.name}: the Z-Wave JS server at {self.url}: {_zwave_why(exc)}") from None
            self.delay = 0.0
            self.retry_at = 0.0
            return self._client.driver

    async def _connect(self) -> None:
        import aiohttp
        from zwave_js_server.client import Client

        library = logging.getLogger("zwave_js_server")
        if library.level == logging.NOTSET:  # its DEBUG is every message, the whole network's state among them
            library.setLevel(logging.INFO)
        self._session = aiohttp.ClientSession()
        self._client = client = Client(self.url, self._session,
                                       additional_user_agent_components={"nutups": __version__})
        await client.connect()
        ready = asyncio.Event()
        self._listening = listening = asyncio.create_task(client.listen(ready), name=f"zwave-{self.name}")
        listening.add_done_callback(_quiet)
        waiting = asyncio.create_task(ready.wait())
        try:
            await asyncio.wait((waiting, listening), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
        if not ready.is_set():
            raise listening.exception() or ConnectionError("the server closed the connection")

    async def _disconnect(self) -> None:
        client, session, listening = self._client, self._session, self._listening
        self._client = self._session = self._listening = None
        if client is not None:
            try:
                await client.disconnect()
            except Exception as exc:  # the library's own; the connection is dropped either way
                log.debug("%s: disconnect: %s", self.name, exc)
        if listening is not None:
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)
        if session is not None:
            await session.close()

    async def close(self) -> None:
        await self._disconnect()

    async def _zwave(self, coro):
        """The library's errors become ConnectionError, like every other device's.  A lost
        server also cancels the commands waiting for its answer: that is no cancellation of ours."""
        from zwave_js_server.exceptions import BaseZwaveJSServerError

        try:
            return await coro
        except asyncio.CancelledError:
            if _cancelled_from_outside():
                raise
            raise ConnectionError(f"{self.name}: the Z-Wave JS server at {self.url} went away") from None
        except BaseZwaveJSServerError as exc:
            raise ConnectionError(f"{self.name}: {_zwave_why(exc)}") from None

    # the node ----------------------------------------------------------------------------

    async def _node(self, now: bool = False):
        driver = await self._driver(now)
        node = driver.controller.nodes.get(self.node_id)
        if node is None:
            ids = ", ".join(str(n) for n in sorted(driver.controller.nodes))
            raise ConnectionError(f"{self.name}: the Z-Wave network has no node {self.node_id} (it has {ids})")
        if self.endpoint and self.endpoint not in node.endpoints:
            have = ", ".join(str(e) for e in sorted(node.endpoints))
            raise ConnectionError(f"{self.name}: node {self.node_id} has no endpoint {self.endpoint} (it has {have})")
        from zwave_js_server.const import NodeStatus

        if node.status == NodeStatus.DEAD:
            raise ConnectionError(f"{self.name}: Z-Wave JS marks node {self.node_id} dead (it did not answer)")
        return node

    def _values(self, node, cc: int):
        return [v for v in node.values.values() if v.command_class == cc and (v.endpoint or 0) == self.endpoint]

    def _switch_value(self, node, prop: str):
        for value in self._values(node, BINARY_SWITCH):
            if value.property_ == prop:
                return value
        where = f"node {self.node_id}" + (f" endpoint {self.endpoint}" if self.endpoint else "")
        state = "" if node.ready else " (Z-Wave JS is still interviewing it)"
        raise ConnectionError(f"{self.name}: {where} has no Binary Switch {prop}{state}")

    def _meter_values(self, node):
        """(reading field, value) for each electric meter value that counts consumption."""
        out = []
        for value in self._values(node, METER):
            spec = value.metadata.cc_specific or {}
            field = METER_SCALES.get(spec.get("scale"))
            if value.property_ == "value" and spec.get("meterType") == METER_ELECTRIC and field \
                    and spec.get("rateType", 0) in METER_RATES:
                out.append((field, value))
        return out

    async def read(self) -> PowerReading:
        node = await self._node()
        reading = PowerReading()
        try:
            on = self._switch_value(node, "currentValue").value
        except ConnectionError:
            on = None
        reading.on = on if isinstance(on, bool) else None
        for field, value in self._meter_values(node):
            if isinstance(value.value, (int, float)) and not isinstance(value.value, bool):
                setattr(reading, field, float(value.value))
        return reading

    async def refresh(self) -> None:
        """Ask the plug for its switch state and meter readings now (one Get each)."""
        node = await self._node()
        values = [self._switch_value(node, "currentValue")] + [v for _, v in self._meter_values(node)]
        for value in values:
            await self._zwave(node.async_poll_value(value))

    async def switch(self, on: bool) -> None:
        from zwave_js_server.const import SET_VALUE_SUCCESS, SetValueStatus

        node = await self._node(now=True)
        target = self._switch_value(node, "targetValue")
        result = await self._zwave(node.async_set_value(target, on, wait_for_result=True))
        if result is not None and result.status not in (*SET_VALUE_SUCCESS, SetValueStatus.WORKING):
            raise ConnectionError(f"{self.name}: node {self.node_id} did not switch {'on' if on else 'off'}: {result}")

    async def do(self, action: str) -> PowerReading | None:
        if action == "capture_power_state":
            await self.refresh()
        return await super().do(action)


def _cancelled_from_outside() -> bool:
    """Whether the current task itself is being cancelled (not just a future it waited on)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _zwave_why(exc: BaseException) -> str:
    """What went wrong, in words: the library wraps aiohttp's errors in its own."""
    import aiohttp

    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, aiohttp.ClientConnectorError) and cause.os_error.errno:
        return os.strerror(cause.os_error.errno).lower()
    if isinstance(cause, aiohttp.WSServerHandshakeError):
        return f"HTTP {cause.status} instead of a WebSocket (is this the Z-Wave JS server's port?)"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = str(exc) or type(exc).__name__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return text


def _quiet(task: asyncio.Task) -> None:
    """The listening task ends when the server goes: the next read says so, not asyncio."""
    if not task.cancelled():
        task.exception()


def make_device(cfg: DeviceConfig, mqtt: MqttSettings | None = None, timeout: float = 10.0) -> AcDevice:
    if cfg.type == "shelly":
        return ShellyDevice(cfg, timeout)
    if cfg.type == "zigbee":
        return ZigbeeDevice(cfg, mqtt or MqttSettings(), timeout)
    if cfg.type == "kasa":
        return KasaDevice(cfg, timeout)
    if cfg.type == "zwave":
        return ZWaveDevice(cfg, timeout)
    raise ValueError(f"unknown device type {cfg.type!r}")
