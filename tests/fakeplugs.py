"""Fake smart plugs on loopback, written for the tests: a Kasa plug speaking the legacy
protocol (length-prefixed, XOR-obfuscated JSON), and Shelly Gen1/Gen2 HTTP APIs (aiohttp)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import struct

from aiohttp import web

SYSINFO = {
    "sw_ver": "1.0.10 Build 221019 Rel.194527", "hw_ver": "1.0", "model": "EP25(US)", "deviceId": "8006" + "0" * 36,
    "oemId": "A" * 32, "hwId": "B" * 32, "rssi": -50, "latitude_i": 0, "longitude_i": 0, "alias": "rack_ac",
    "status": "new", "mic_type": "IOT.SMARTPLUGSWITCH", "feature": "TIM:ENE", "mac": "00:11:22:33:44:55",
    "updating": 0, "led_off": 0, "relay_state": 1, "on_time": 100, "icon_hash": "", "dev_name": "Smart Wi-Fi Plug",
    "active_mode": "none", "next_action": {"type": -1}, "err_code": 0, "obd_src": "tplink",
}


def xor_encrypt(data: bytes) -> bytes:
    key = 171
    out = bytearray()
    for b in data:
        key ^= b
        out.append(key)
    return bytes(out)


def xor_decrypt(data: bytes) -> bytes:
    key = 171
    out = bytearray()
    for b in data:
        out.append(key ^ b)
        key = b
    return bytes(out)


class FakeKasaPlug:
    """A legacy-protocol Kasa plug with an energy meter.  ``requests`` records every
    command it got; ``hang`` makes it accept connections and never answer."""

    def __init__(self) -> None:
        self.on = True
        self.voltage_mv = 230_100
        self.power_mw = 12_500
        self.requests: list[dict] = []
        self.hang = False
        self.broken = False  # answer every command with an error, as a plug in trouble does
        self.rules: list[dict] = []  # count_down rules: the plug runs them itself
        self._countdown: asyncio.TimerHandle | None = None
        self.on_switch = None  # called with the new state whenever the relay moves
        self.connections = 0  # open client connections
        self.all_closed = asyncio.Event()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self._clients: set[asyncio.Task] = set()

    async def start(self, discovery: bool = False) -> FakeKasaPlug:
        """Listen on TCP; with ``discovery``, answer python-kasa's legacy UDP discovery on the
        same port number (discover_single(host, port=P) sends there and connects there)."""
        loop = asyncio.get_running_loop()
        self.udp = None
        for _ in range(20):
            self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            if not discovery:
                return self
            try:
                self.udp, _ = await loop.create_datagram_endpoint(lambda: _Discovery(self),
                                                                  local_addr=("127.0.0.1", self.port))
                return self
            except OSError:
                self.server.close()
        raise OSError("no port free for TCP and UDP")

    async def close(self) -> None:
        if getattr(self, "udp", None) is not None:
            self.udp.close()
        if self.server is not None:
            self.server.close()
            # since 3.12 wait_closed() waits for open connections: end them first
            clients = list(self._clients)
            for task in clients:
                task.cancel()
            await asyncio.gather(*clients, return_exceptions=True)
            await self.server.wait_closed()

    def _answer(self, req: dict) -> dict:
        out: dict = {}
        for module, methods in req.items():
            out[module] = {}
            for method, params in (methods or {}).items():
                if self.broken:
                    out[module][method] = {"err_code": -2, "err_msg": "internal error"}
                elif module == "system" and method == "get_sysinfo":
                    out[module][method] = dict(SYSINFO, relay_state=int(self.on))
                elif module == "system" and method == "set_relay_state":
                    self.set_relay(bool(params["state"]))
                    out[module][method] = {"err_code": 0}
                elif module == "count_down" and method == "delete_all_rules":
                    self.rules.clear()
                    if self._countdown is not None:
                        self._countdown.cancel()
                    out[module][method] = {"err_code": 0}
                elif module == "count_down" and method == "add_rule":
                    self.rules.append(dict(params))
                    if params.get("enable"):  # as the plug does: its own clock runs the rule
                        self._countdown = asyncio.get_running_loop().call_later(
                            params["delay"], self._run_rule, bool(params["act"]))
                    out[module][method] = {"id": f"rule{len(self.rules)}", "err_code": 0}
                elif module == "emeter" and method == "get_realtime":
                    out[module][method] = {"voltage_mv": self.voltage_mv, "current_ma": 55,
                                           "power_mw": self.power_mw if self.on else 0, "total_wh": 1000,
                                           "err_code": 0}
                elif module == "time" and method == "get_time":
                    out[module][method] = {"year": 2026, "month": 1, "mday": 1, "hour": 0, "min": 0, "sec": 0,
                                           "err_code": 0}
                elif module == "time" and method == "get_timezone":
                    out[module][method] = {"index": 12, "err_code": 0}
                else:
                    out[module][method] = {"err_code": -1, "err_msg": "module not support"}
        return out

    def set_relay(self, on: bool) -> None:
        changed = on != self.on
        self.on = on
        if changed and self.on_switch is not None:
            self.on_switch(on)

    def _run_rule(self, act: bool) -> None:
        self._countdown = None
        self.rules.clear()
        self.set_relay(act)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._clients.add(task)
        self.connections += 1
        self.all_closed.clear()
        try:
            while True:
                head = await reader.readexactly(4)
                (size,) = struct.unpack(">I", head)
                req = json.loads(xor_decrypt(await reader.readexactly(size)))
                self.requests.append(req)
                if self.hang:
                    await asyncio.sleep(3600)
                data = xor_encrypt(json.dumps(self._answer(req)).encode())
                writer.write(struct.pack(">I", len(data)) + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._clients.discard(task)
            self.connections -= 1
            if not self.connections:
                self.all_closed.set()


class _Discovery(asyncio.DatagramProtocol):
    """Legacy discovery: an XOR-obfuscated get_sysinfo without the length prefix."""

    def __init__(self, plug: FakeKasaPlug) -> None:
        self.plug = plug

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            req = json.loads(xor_decrypt(data))
        except ValueError:
            return
        self.plug.requests.append({"discovery": req})
        self.transport.sendto(xor_encrypt(json.dumps(self.plug._answer(req)).encode()), addr)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class FakeShelly:
    """Shelly Gen1 (`/relay/0`, `/status`) or Gen2+ (`/rpc/Switch.*`) over aiohttp.

    With a ``password`` it authenticates as the real devices do: Gen1 with HTTP Basic, Gen2+
    with HTTP Digest (RFC 7616, SHA-256, user ``admin``, qop=auth, a fresh nonce per challenge),
    everything but `/shelly`.  The digest is checked here from the RFC, not with the client's code."""

    REALM = "shellyplusplugs-b0b21c10aabb"

    def __init__(self, gen: int, password: str | None = None) -> None:
        self.gen = gen
        self.password = password
        self.nonces: set[str] = set()
        self.refused = 0  # requests answered 401
        self.on = False
        self.power_w = 8.5 if gen >= 2 else 7.0  # what the meter reads while on
        self.current_a = 0.04  # what the meter's ammeter reads (Gen2+)
        self.currents: list[float] = []  # readings served first, one per status request, before current_a
        self._released = asyncio.Event()
        self.calls: list[str] = []
        self.hang = False
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.on_switch = None  # called with the new state whenever the relay moves
        self._flip_back: asyncio.TimerHandle | None = None  # toggle_after (Gen2+) / timer (Gen1)

    def set_relay(self, on: bool, flip_after: str | None = None) -> None:
        """Move the relay; with ``flip_after`` (seconds) the device itself moves it back then."""
        if self._flip_back is not None:
            self._flip_back.cancel()
            self._flip_back = None
        changed = on != self.on
        self.on = on
        if flip_after:
            self._flip_back = asyncio.get_running_loop().call_later(float(flip_after), self.set_relay, not on)
        if changed and self.on_switch is not None:
            self.on_switch(on)

    async def start(self, port: int = 0) -> FakeShelly:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        self._released.set()
        if self.runner is not None:
            await self.runner.cleanup()

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if self.gen == 1:
            expected = base64.b64encode(f"admin:{self.password}".encode()).decode()
            return header == f"Basic {expected}"
        if not header.startswith("Digest "):
            return False
        p = {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', header[7:])}
        if p.get("username") != "admin" or p.get("realm") != self.REALM or p.get("nonce") not in self.nonces:
            return False
        if p.get("uri") != request.path_qs or p.get("qop") != "auth" or p.get("algorithm", "").upper() != "SHA-256":
            return False
        ha1 = _sha256(f"admin:{self.REALM}:{self.password}")
        ha2 = _sha256(f"{request.method}:{p['uri']}")
        return p.get("response") == _sha256(f"{ha1}:{p['nonce']}:{p.get('nc')}:{p.get('cnonce')}:auth:{ha2}")

    def _challenge(self) -> web.Response:
        self.refused += 1
        if self.gen == 1:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="shelly"'})
        nonce = secrets.token_hex(8)
        self.nonces.add(nonce)
        return web.Response(status=401, headers={"WWW-Authenticate": (
            f'Digest qop="auth", realm="{self.REALM}", nonce="{nonce}", algorithm=SHA-256')})

    async def _handle(self, request: web.Request) -> web.Response:
        self.calls.append(request.path_qs)
        if self.password and request.path != "/shelly" and not self._authorized(request):
            return self._challenge()
        if self.hang:
            await self._released.wait()  # until close(): the client must give up first
        path, q = request.path, request.query
        if path == "/shelly":
            return web.json_response({"gen": 2, "id": "shellyplusplugs"} if self.gen >= 2 else {"type": "SHPLG-S"})
        if self.gen >= 2 and path == "/rpc/Switch.Set":
            was = self.on
            self.set_relay(q.get("on") == "true", q.get("toggle_after"))
            return web.json_response({"was_on": was})
        if self.gen >= 2 and path == "/rpc/Switch.GetStatus":
            return web.json_response({"id": 0, "output": self.on, "apower": self.power_w if self.on else 0,
                                      "voltage": 229.5,
                                      "current": self.currents.pop(0) if self.currents else self.current_a})
        if self.gen == 1 and path == "/relay/0":
            self.set_relay(q.get("turn") == "on", q.get("timer"))
            return web.json_response({"ison": self.on})
        if self.gen == 1 and path == "/status":
            return web.json_response({"relays": [{"ison": self.on}], "meters": [{"power": self.power_w if self.on else 0}]})
        return web.json_response({"error": "not found"}, status=404)


class FakeSmartTransport:
    """The newer SMART protocol (EP25 hardware 2.6, KLAP-encrypted on the wire) at the
    level above encryption: python-kasa's SmartProtocol sends JSON requests through it.
    Builds on kasa.transports.BaseTransport when python-kasa is there."""

    def __init__(self) -> None:
        import base64

        self.on = False
        self.requests: list[str] = []
        self.info = {
            "device_id": "80" + "1" * 38, "fw_ver": "1.0.2 Build 240110", "hw_ver": "2.6", "type": "SMART.KASAPLUG",
            "model": "EP25", "mac": "AA-BB-CC-DD-EE-FF", "hw_id": "H" * 32, "fw_id": "F" * 32, "oem_id": "O" * 32,
            "nickname": base64.b64encode(b"rack_ac").decode(), "ssid": base64.b64encode(b"lab").decode(),
            "rssi": -40, "signal_level": 3, "specs": "", "lang": "en_US", "region": "Europe/London",
            "time_diff": 0, "latitude": 0, "longitude": 0, "has_set_location_info": False, "ip": "127.0.0.1",
            "overheated": False, "on_time": 10, "default_states": {"type": "last_states", "state": {}},
            "auto_off_status": "off", "auto_off_remain_time": 0,
        }

    def transport_class(self):
        from kasa.transports import BaseTransport

        fake = self

        class Transport(BaseTransport):
            @property
            def default_port(self) -> int:
                return 80

            @property
            def credentials_hash(self) -> str | None:
                return None

            async def send(self, request: str) -> dict:
                return fake.answer(json.loads(request))

            async def close(self) -> None:
                pass

            async def reset(self) -> None:
                pass

        return Transport

    def _one(self, method: str, params) -> tuple[int, object]:
        if method == "component_nego":
            return 0, {"component_list": [{"id": "device", "ver_code": 2},
                                          {"id": "energy_monitoring", "ver_code": 2}]}
        if method == "get_device_info":
            return 0, dict(self.info, device_on=self.on)
        if method == "set_device_info":
            if "device_on" in (params or {}):
                self.on = bool(params["device_on"])
            return 0, {}
        if method == "get_energy_usage":
            return 0, {"today_runtime": 1, "month_runtime": 1, "today_energy": 1, "month_energy": 1,
                       "current_power": 9000 if self.on else 0}
        if method == "get_emeter_vgain_igain":
            return 0, {"vgain": 100, "igain": 100}
        if method == "get_connect_cloud_state":
            return 0, {"status": 0}
        if method == "get_device_usage":
            return 0, {"time_usage": {"today": 1, "past7": 1, "past30": 1},
                       "power_usage": {"today": 1, "past7": 1, "past30": 1}}
        if method == "get_current_power":
            return 0, {"current_power": 9 if self.on else 0}
        if method == "get_emeter_data":
            return 0, {"power_mw": 9000 if self.on else 0, "voltage_mv": 231_000, "current_ma": 40,
                       "energy_wh": 10}
        return -1, {}

    def answer(self, req: dict) -> dict:
        self.requests.append(req["method"])
        if req["method"] == "multipleRequest":
            responses = []
            for r in req["params"]["requests"]:
                self.requests.append(r["method"])
                code, result = self._one(r["method"], r.get("params"))
                responses.append({"method": r["method"], "error_code": code, "result": result})
            return {"error_code": 0, "result": {"responses": responses}}
        code, result = self._one(req["method"], req.get("params"))
        return {"error_code": code, "result": result}
