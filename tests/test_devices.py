"""Smart AC devices against fakes on loopback: Kasa (legacy protocol over TCP, and the
SMART protocol through a fake transport), Shelly Gen1/Gen2 (aiohttp), zigbee2mqtt through
a real mosquitto broker.  Each proves the action reached the device, and that an
unreachable device times out without blocking anything else."""

from __future__ import annotations

import asyncio
import errno
import json

import pytest
from fakeplugs import FakeKasaPlug, FakeShelly, FakeSmartTransport
from nutprocs import free_port

from nutups.events.config import ActionSet, DeviceConfig, EventsConfig
from nutups.events.devices import KasaDevice, MqttSettings, ShellyDevice, ZigbeeDevice
from nutups.events.engine import EventEngine
from nutups.events.log import EventLog, read_events
from nutups.events.types import Event, EventType
from nutups.state import UpsState


async def still_responsive(coro, timeout: float, expected=(asyncio.TimeoutError, ConnectionError),
                           waits: bool = True):
    """Run ``coro``, which must give up by itself within ``timeout`` (the device's own) with one
    of ``expected``; when it ``waits`` (a device that does not answer), the loop must go on
    serving others meanwhile: a ticker must run at least once while the device is still pending
    (a blocking call would hold the loop until it is done).  The grace beyond ``timeout`` only
    keeps a hung device from hanging the test."""
    task = asyncio.ensure_future(coro)
    ran_while_pending = asyncio.Event()

    async def ticker():
        while not task.done():
            await asyncio.sleep(0.01)
            if not task.done():
                ran_while_pending.set()

    t = asyncio.create_task(ticker())
    done, _ = await asyncio.wait({task}, timeout=timeout + 10)
    t.cancel()
    assert task in done, f"the device did not give up within its {timeout} s timeout"
    with pytest.raises(expected):
        task.result()
    assert ran_while_pending.is_set() or not waits, "the loop did not turn while the device was pending"
    return task.exception()


def test_kasa_plug_found_by_discovery_on_its_port():
    """The default path: Discover.discover_single(host, port=...) finds the protocol."""

    async def go():
        plug = await FakeKasaPlug().start(discovery=True)
        dev = KasaDevice(DeviceConfig("kasa", "rack_ac", "127.0.0.1", plug.port), timeout=5)
        r = await dev.read()
        assert (r.on, r.power_w) == (True, 12.5)
        assert {"discovery": {"system": {"get_sysinfo": {}}}} in plug.requests
        await dev.do("turn_off")
        assert plug.on is False
        await dev.close()
        await plug.close()

    asyncio.run(go())


def test_kasa_legacy_plug():
    async def go():
        plug = await FakeKasaPlug().start()
        dev = KasaDevice(DeviceConfig("kasa", "rack_ac", "127.0.0.1", plug.port, options={"protocol": "legacy"}),
                         timeout=5)
        r = await dev.read()
        assert (r.on, r.power_w, r.voltage) == (True, 12.5, 230.1)
        await dev.do("turn_off")
        assert plug.on is False
        assert {"system": {"set_relay_state": {"state": 0}}} in plug.requests
        assert (await dev.do("capture_power_state")).on is False
        await dev.close()
        plug.hang = True
        hanging = KasaDevice(DeviceConfig("kasa", "rack_ac", "127.0.0.1", plug.port,
                                          options={"protocol": "legacy"}), timeout=1)
        await still_responsive(hanging.read(), 1)
        await plug.close()

    asyncio.run(go())


def test_kasa_sub_second_timeout_and_disconnect_after_an_error():
    """action_timeout 0.5 s still reaches the plug (python-kasa takes whole seconds: not 0);
    after an error the device's connection is closed, and the next request connects afresh."""

    async def go():
        plug = await FakeKasaPlug().start()
        dev = KasaDevice(DeviceConfig("kasa", "rack_ac", "127.0.0.1", plug.port, options={"protocol": "legacy"}),
                         timeout=0.5)
        assert dev._whole_seconds() == 1
        r = await asyncio.wait_for(dev.read(), 5)
        assert r.on is True and plug.connections == 1
        plug.broken = True
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(dev.read(), 5)
        await asyncio.wait_for(plug.all_closed.wait(), 5)  # the dropped device was disconnected
        plug.broken = False
        assert (await asyncio.wait_for(dev.read(), 5)).on is True
        await dev.close()
        await asyncio.wait_for(plug.all_closed.wait(), 5)
        await plug.close()

    asyncio.run(go())


def test_kasa_unreachable_port_fails_fast():
    """A closed port fails with the refused connection itself, not by waiting for the timeout;
    a port that never answers discovery fails by the discovery timeout."""
    async def go():
        dev = KasaDevice(DeviceConfig("kasa", "gone", "127.0.0.1", free_port(), options={"protocol": "legacy"}),
                         timeout=5)
        exc = await still_responsive(dev.read(), 5, ConnectionError, waits=False)
        assert f"[Errno {errno.ECONNREFUSED}]" in str(exc), exc
        assert "timed out" not in str(exc).lower(), exc
        silent = KasaDevice(DeviceConfig("kasa", "silent", "127.0.0.1", free_port()), timeout=1)  # no discovery answer
        exc = await still_responsive(silent.read(), 1, ConnectionError)
        assert "timed out" in str(exc).lower(), exc

    asyncio.run(go())


def test_kasa_ep25_smart_protocol_with_credentials():
    import kasa
    from kasa.protocols import SmartProtocol
    from kasa.smart import SmartDevice

    fake = FakeSmartTransport()
    seen = {}

    async def factory(cfg, creds):
        seen["creds"] = creds
        config = kasa.DeviceConfig(cfg.host, credentials=creds)
        dev = SmartDevice(cfg.host, config=config,
                          protocol=SmartProtocol(transport=fake.transport_class()(config=config)))
        await dev.update()
        return dev

    async def go():
        cfg = DeviceConfig("kasa", "rack_ac", "127.0.0.1", username="me@example.com", password="pw")
        dev = KasaDevice(cfg, timeout=5, protocol_factory=factory)
        assert (await dev.read()).on is False
        await dev.do("turn_on")
        assert fake.on is True and "set_device_info" in fake.requests
        r = await dev.read()
        assert (r.on, r.power_w, r.voltage) == (True, 9.0, 231.0)

    asyncio.run(go())
    assert seen["creds"].username == "me@example.com"


@pytest.mark.parametrize("gen", [1, 2])
def test_shelly(gen):
    async def go():
        fake = await FakeShelly(gen).start()
        dev = ShellyDevice(DeviceConfig("shelly", "backup_outlet", "127.0.0.1", fake.port), timeout=5)
        await dev.do("turn_on")
        assert fake.on is True
        assert fake.calls[-1] == ("/rpc/Switch.Set?id=0&on=true" if gen == 2 else "/relay/0?turn=on")
        r = await dev.read()
        assert r.on is True and r.power_w == (8.5 if gen == 2 else 7.0)
        await dev.do("toggle")
        assert fake.on is False
        fake.hang = True
        await still_responsive(dev.read(), 5)
        await fake.close()

    asyncio.run(go())


@pytest.mark.parametrize("gen", [1, 2])
def test_shelly_authentication_as_each_generation_requires(gen):
    """Gen2+ wants HTTP Digest with SHA-256 (Gen1: Basic); a wrong password is a clear error."""
    async def go():
        fake = await FakeShelly(gen, password="s3cret").start()
        dev = ShellyDevice(DeviceConfig("shelly", "plug", "127.0.0.1", fake.port, password="s3cret"), timeout=5)
        await dev.do("turn_on")
        assert fake.on is True
        r = await dev.read()
        assert r.on is True
        # Gen2: the first request is challenged, the next reuses the nonce (nc counts up)
        assert fake.refused == (1 if gen == 2 else 0)
        await dev.close()
        wrong = ShellyDevice(DeviceConfig("shelly", "plug", "127.0.0.1", fake.port, password="guess"), timeout=5)
        with pytest.raises(ConnectionError, match="HTTP 401: the device wants a different password"):
            await wrong.switch(False)
        nobody = ShellyDevice(DeviceConfig("shelly", "plug", "127.0.0.1", fake.port), timeout=5)
        with pytest.raises(ConnectionError, match=r"HTTP 401: the device wants a password \(password:\)"):
            await nobody.read()
        assert fake.on is True
        await wrong.close()
        await nobody.close()
        await fake.close()

    asyncio.run(go())


def test_shelly_answers_that_are_not_json_or_too_large_are_connection_errors():
    async def go():
        from aiohttp import web

        async def handle(request):
            if request.path == "/shelly":
                return web.json_response({"gen": 2})
            if "GetStatus" in request.path_qs:
                return web.Response(body=b"x" * 200_000)
            return web.Response(text="<html>captive portal</html>")

        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        dev = ShellyDevice(DeviceConfig("shelly", "plug", "127.0.0.1", port), timeout=5)
        with pytest.raises(ConnectionError, match="not JSON"):
            await dev.switch(True)
        with pytest.raises(ConnectionError, match="over 65536 bytes"):
            await dev.read()
        await dev.close()
        await runner.cleanup()

    asyncio.run(go())


async def fake_zigbee2mqtt(port: int, device: str, ready: asyncio.Event, state: dict) -> None:
    """What zigbee2mqtt does for one plug: obey /set and /get, publish the state."""
    import aiomqtt

    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(f"zigbee2mqtt/{device}/set")
        await client.subscribe(f"zigbee2mqtt/{device}/get")
        ready.set()
        async for message in client.messages:
            if str(message.topic).endswith("/set"):
                state["state"] = json.loads(message.payload)["state"]
                state["sets"] = state.get("sets", 0) + 1
            await client.publish(f"zigbee2mqtt/{device}", json.dumps(
                {"state": state.get("state", "OFF"), "power": 5.5, "voltage": 229.0}), retain=True)


def test_zigbee_plug_through_mosquitto(mosquitto):
    async def go():
        ready = asyncio.Event()
        state: dict = {}
        z2m = asyncio.create_task(fake_zigbee2mqtt(mosquitto, "lab_outlet", ready, state))
        await asyncio.wait_for(ready.wait(), 10)
        dev = ZigbeeDevice(DeviceConfig("zigbee", "lab_outlet", id="lab_outlet"),
                           MqttSettings(port=mosquitto), timeout=5)
        await dev.do("turn_on")
        r = await dev.read()
        assert r.on is True and r.power_w == 5.5 and r.voltage == 229.0
        assert state["state"] == "ON" and state["sets"] == 1
        await dev.do("turn_off")
        assert (await dev.read()).on is False
        z2m.cancel()
        nobody = ZigbeeDevice(DeviceConfig("zigbee", "x", id="x"), MqttSettings(port=free_port()), timeout=1)
        await still_responsive(nobody.switch(True), 2, waits=False)  # no broker: refused at once

    asyncio.run(go())


def test_device_actions_from_events_never_block_the_log(tmp_path):
    """A hanging plug: the log line is written at once, the other action still runs,
    and the hang ends as ACTION_FAILED after the timeout."""

    async def go():
        good = await FakeShelly(2).start()
        bad = await FakeShelly(2).start()
        bad.hang = True
        devices = {
            "good": ShellyDevice(DeviceConfig("shelly", "good", "127.0.0.1", good.port), 5),
            "bad": ShellyDevice(DeviceConfig("shelly", "bad", "127.0.0.1", bad.port), 5),
        }
        cfg = EventsConfig(actions={EventType.AC_POWER_LOSS: ActionSet(devices={"bad": "turn_off", "good": "turn_on"})},
                           action_timeout=0.5, action_retries=1)
        engine = EventEngine(cfg, [UpsState("ups")], EventLog(tmp_path / "ev.log"), devices=devices)
        engine.emit(Event(EventType.AC_POWER_LOSS, "ups", "mains lost"))
        assert [e.type for e in read_events(tmp_path / "ev.log")] == [EventType.AC_POWER_LOSS]
        while engine._tasks:
            await asyncio.gather(*list(engine._tasks))
        assert good.on is True
        failed = [e for e in read_events(tmp_path / "ev.log") if e.type == EventType.ACTION_FAILED]
        assert len(failed) == 1 and failed[0].message.startswith("bad turn_off")
        assert len(bad.calls) == 2  # the first try and one retry, each cut at the timeout
        await engine.close()
        await good.close()
        await bad.close()

    asyncio.run(go())
