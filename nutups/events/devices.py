"""Smart AC devices behind one small async interface: state, on/off, power readings.

One adapter per kind (after python-kasa's split of capability and transport):
TP-Link Kasa through python-kasa, Shelly through its HTTP API (Gen1 and Gen2+),
Zigbee plugs through zigbee2mqtt over MQTT.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from .config import DeviceConfig

log = logging.getLogger("nutups.devices")


@dataclass
class PowerReading:
    on: bool | None = None
    power_w: float | None = None
    voltage: float | None = None
    current: float | None = None


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


async def http_get_json(host: str, port: int, path: str, timeout: float, auth: str | None = None) -> Any:
    """A small HTTP/1.1 GET: Shelly's API needs nothing more."""

    async def go() -> Any:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            headers = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: application/json\r\n"
            if auth:
                headers += f"Authorization: Basic {auth}\r\n"
            writer.write((headers + "\r\n").encode())
            await writer.drain()
            data = await reader.read(1 << 20)
            while True:
                more = await reader.read(1 << 20)
                if not more:
                    break
                data += more
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) < 2 or not parts[1].isdigit():
            raise ConnectionError(f"not an HTTP answer from {host}:{port}")
        status = int(parts[1])
        if status != 200:
            raise ConnectionError(f"HTTP {status} from {host}:{port}{path}")
        if any(h.lower().startswith("transfer-encoding:") and "chunked" in h.lower() for h in lines[1:]):
            body = _unchunk(body)
        return json.loads(body or b"null")

    return await asyncio.wait_for(go(), timeout)


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


class ShellyDevice(AcDevice):
    """Shelly plugs and relays: Gen1 `/relay/0`, Gen2+ `/rpc/Switch.*`."""

    kind = "shelly"

    def __init__(self, cfg: DeviceConfig, timeout: float = 10.0) -> None:
        super().__init__(cfg, timeout)
        self.port = cfg.port or 80
        self.channel = int(cfg.options.get("channel", 0))
        gen = cfg.options.get("gen")
        self.gen: int | None = int(gen) if gen is not None else None
        self.auth = None
        if cfg.username and cfg.password:
            import base64

            self.auth = base64.b64encode(f"{cfg.username}:{cfg.password}".encode()).decode()

    async def _get(self, path: str) -> Any:
        assert self.cfg.host is not None
        return await http_get_json(self.cfg.host, self.port, path, self.timeout, self.auth)

    async def _generation(self) -> int:
        if self.gen is None:
            info = await self._get("/shelly")
            self.gen = int(info.get("gen", 1)) if isinstance(info, dict) else 1
        return self.gen

    async def read(self) -> PowerReading:
        if await self._generation() >= 2:
            st = await self._get(f"/rpc/Switch.GetStatus?id={self.channel}")
            return PowerReading(st.get("output"), st.get("apower"), st.get("voltage"), st.get("current"))
        st = await self._get("/status")
        relay = (st.get("relays") or [{}])[self.channel]
        meter = (st.get("meters") or [{}])[self.channel] if st.get("meters") else {}
        return PowerReading(relay.get("ison"), meter.get("power"), st.get("voltage"), None)

    async def switch(self, on: bool) -> None:
        if await self._generation() >= 2:
            await self._get(f"/rpc/Switch.Set?id={self.channel}&on={'true' if on else 'false'}")
        else:
            await self._get(f"/relay/{self.channel}?turn={'on' if on else 'off'}")


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
            config = kasa.DeviceConfig(cfg.host, timeout=int(self.timeout), port_override=cfg.port,
                                       credentials=creds, connection_type=params)
            self.device = await kasa.Device.connect(config=config)
        else:
            self.device = await kasa.Discover.discover_single(cfg.host, port=cfg.port, credentials=creds,
                                                              timeout=int(self.timeout),
                                                              discovery_timeout=int(self.timeout))
            if self.device is None:
                raise ConnectionError(f"no Kasa device answered at {cfg.host}")
        return self.device

    async def read(self) -> PowerReading:
        return await self._kasa(self._read())

    async def _kasa(self, coro):
        """python-kasa's own errors become ConnectionError, like every other device's."""
        import kasa

        try:
            return await coro
        except kasa.KasaException as exc:
            self.device = None
            raise ConnectionError(str(exc)) from None

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

    async def close(self) -> None:
        if self.device is not None:
            try:
                await self.device.disconnect()
            except Exception:
                pass
            self.device = None


def make_device(cfg: DeviceConfig, mqtt: MqttSettings | None = None, timeout: float = 10.0) -> AcDevice:
    if cfg.type == "shelly":
        return ShellyDevice(cfg, timeout)
    if cfg.type == "zigbee":
        return ZigbeeDevice(cfg, mqtt or MqttSettings(), timeout)
    if cfg.type == "kasa":
        return KasaDevice(cfg, timeout)
    raise ValueError(f"unknown device type {cfg.type!r}")
