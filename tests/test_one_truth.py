"""Issue 17's defects, each driven through the daemon's own path: one client view of a UPS,
listeners that cannot take the driver down, one writer per sensor reading, one control path."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import shutil
import threading

import aiomqtt
import pytest
from conftest import MOSQUITTO, USERS
from fakeplugs import FakeShelly
from nutprocs import RawClient, free_port, make_confdir, nut_tmpdir, poll_until
from prometheus_client.parser import text_string_to_metric_families
from served import Served
from webprocs import WebDaemon

from nutups.configuration import load_configuration
from nutups.daemon import Daemon
from nutups.events.log import read_events

SIM_UPS = '[ups]\n driver = x120x\n board = x1202\n sim = yes\n pollinterval = 0.2\n'
needs_mosquitto = pytest.mark.skipif(not os.path.exists(MOSQUITTO) and os.environ.get("CI") != "true",
                                     reason="needs mosquitto (apt-get install mosquitto)")


def metric(webd, name: str, **labels) -> float | None:
    status, text = webd.get("/metrics")
    assert status == 200
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


@needs_mosquitto
async def mqtt_command_result(d, mosquitto: int) -> dict:
    """Start daemon ``d``, send outlet.1.load.on over MQTT once it publishes a live state, and return
    the result it publishes."""
    sent: list[bool] = []
    async with aiomqtt.Client("127.0.0.1", mosquitto) as client:
        await client.subscribe("nutups/ups/result")
        await client.subscribe("nutups/ups/state")  # the daemon sends it once it listens for commands
        await asyncio.to_thread(d.start)
        async with asyncio.timeout(30):
            async for message in client.messages:
                # a live state (not the broker's retained copy: that has retain set)
                if str(message.topic) == "nutups/ups/state" and not message.retain and not sent:
                    sent.append(True)
                    await client.publish("nutups/ups/command", "outlet.1.load.on")
                elif str(message.topic) == "nutups/ups/result":
                    return json.loads(message.payload)
    raise AssertionError("no result on MQTT")


def test_a_policy_fsd_shows_lb_on_the_api_mqtt_and_metrics(mosquitto):
    """The Pi's own policy sets FSD on battery before the driver has LB: NUT clients see
    FSD OB DISCHRG LB (net-protocol: FSD with OB LB is what DSM and upsmon act on), and so
    must the API, MQTT (Home Assistant's low-battery sensor) and /metrics."""

    d = WebDaemon(f"integrations:\n  mqtt:\n    host: 127.0.0.1\n    port: {mosquitto}\n    publish: true\n"
                  "shutdown:\n  grace: 0\n  hostsync: 0\n  voltage_floor: 4.0\n  debounce: 1\n"
                  "  command: 'true'\n  reboot_command: 'true'\n",
                  ups_conf=SIM_UPS)

    async def go():
        async with aiomqtt.Client("127.0.0.1", mosquitto) as client:
            await client.subscribe("nutups/ups/state")
            await client.subscribe("homeassistant/binary_sensor/nutups/ups_low_battery/config")
            await asyncio.to_thread(d.start)
            # half charged: far from the driver's LB, but under a floor of 4.0 V a cell on battery
            await asyncio.to_thread(d.sim, "soc", "50")
            await asyncio.to_thread(d.sim, "ac", "off")
            template = None
            async with asyncio.timeout(30):
                async for message in client.messages:
                    payload = json.loads(message.payload)
                    if str(message.topic).endswith("/config"):
                        template = payload["value_template"]
                    elif payload.get("ups.status", "").startswith("FSD"):
                        return template, payload["ups.status"]
        raise AssertionError("no FSD on MQTT")

    try:
        template, mqtt_status = asyncio.run(go())
        with RawClient(d.nut_port) as c:  # what NUT clients see: the reference
            nut = c.request(b"GET VAR ups ups.status\n").decode().split('"')[1]
        assert nut.split() == ["FSD", "OB", "DISCHRG", "LB"]
        assert mqtt_status == nut
        # Home Assistant's low-battery binary sensor: its template tests LB among the flags
        assert template == "{{ 'ON' if 'LB' in value_json['ups.status'].split() else 'OFF' }}"
        assert "LB" in mqtt_status.split()
        assert d.get("/api/v1/ups/ups")[1]["variables"]["ups.status"] == nut
        assert d.get("/api/v1/ups")[1][0]["status"] == nut
        assert metric(d, "network_ups_tools_ups_status", flag="LB", ups="ups") == 1.0
        assert metric(d, "network_ups_tools_ups_status", flag="FSD", ups="ups") == 1.0
    finally:
        d.stop()
        print(d.stderr()[-4000:])  # shown when the test fails
        shutil.rmtree(d.base, ignore_errors=True)


def test_a_plug_current_over_the_limit_is_overcurrent_within_one_plug_poll():
    """On a Pi the plug's meter is the overcurrent source, read every device_poll.  The host
    sensors' poll (every 5 s) must not wipe it: the over-limit current of the plug's second
    reading, debounced over 12 of the driver's readings (6 s of them), is OVERCURRENT_DETECTED
    before the plug is read a third time (15 s later)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    plug = FakeShelly(2)
    plug.currents = [0.04]  # the first reading: the detector's baseline, under the limit
    plug.current_a = 7.5  # amperes from the second on, over current_max (5 A, the X1202's rating)
    asyncio.run_coroutine_threadsafe(plug.start(), loop).result(10)
    mapping = (f"thresholds: {{debounce: 12}}\nintegrations:\n  device_poll: 15\n  ac_devices:\n"
               f"    - {{type: shelly, name: plug, host: 127.0.0.1, port: {plug.port}, gen: 2}}\n")
    reads = "/rpc/Switch.GetStatus?id=0"
    try:
        with Served("[hat]\n driver = dummy-ups\n port = hat.dev\n",
                    files={"nutups.yaml": mapping, "hat.dev": "ups.status: OL\nbattery.charge: 100\n"}) as d:
            events = d.datapath / "ups_events.log"

            def detected():
                found = events.exists() and [e for e in read_events(events, lambda t: None)
                                             if e.type == "OVERCURRENT_DETECTED"]
                return found and (found, plug.calls.count(reads))

            found, plug_reads = poll_until(detected, "OVERCURRENT_DETECTED", timeout=60)
            assert found[0].value == 7.5
            assert plug_reads == 2, plug.calls  # the reading over the limit was the plug's second
    finally:
        asyncio.run_coroutine_threadsafe(plug.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)


def test_a_raising_listener_leaves_nut_answering(caplog):
    """A listener of the readings (web, MQTT, history) that raises is logged with its
    traceback; the driver goes on, the listeners after it still hear, NUT clients get data."""
    base = nut_tmpdir()
    confdir = make_confdir(base / "conf", SIM_UPS, users=USERS)
    config = load_configuration(confdir)
    config.datapath = base / "data"
    port = free_port()
    daemon = Daemon(config, listen=[("127.0.0.1", port)], statepath=base / "state")
    calls = []
    heard = []
    enough = asyncio.Event()

    def broken(state) -> None:
        calls.append(state.version)
        if len(calls) >= 5:
            enough.set()
        raise RuntimeError("a listener's bug")

    async def go() -> list[bytes]:
        await daemon.start()
        try:
            state = daemon.states[0]
            state.on_publish(broken)
            state.on_publish(lambda s: heard.append(s.version))
            await enough.wait()  # five readings, each raising in the broken listener
            with RawClient(port) as c:
                return [await asyncio.to_thread(c.request, b"GET VAR ups ups.status\n") for _ in range(3)]
        finally:
            await daemon.stop()

    with caplog.at_level(logging.ERROR, "nutups"):
        answers = asyncio.run(go())  # (Daemon.stop() cancels every other task: no wait_for here)
    assert all(a.startswith(b'VAR ups ups.status "OL') for a in answers), answers
    assert len(heard) >= 5  # the listener after the broken one heard every reading
    failures = [r for r in caplog.records if "listener" in r.getMessage() and r.exc_info]
    assert failures and "a listener's bug" in str(failures[0].exc_info[1])
    assert not [r for r in caplog.records if "crashed" in r.getMessage()]
    shutil.rmtree(base, ignore_errors=True)


@needs_mosquitto
def test_an_mqtt_command_without_rights_is_refused_and_audited_and_the_api_tells_the_real_result(mosquitto):
    """MQTT commands go through the NUT core as the upsd.users account command_user; without
    one, as a client that gave no USERNAME: switching the relay's outlet is USERNAME-REQUIRED,
    logged as a refusal, and the relay stays off.  The API answers with the driver's result: a plug
    nobody answers for is FAILED (502), not a premature OK."""

    dead = free_port()
    d = WebDaemon(f"outputs:\n  relay: 17\nintegrations:\n  mqtt:\n    host: 127.0.0.1\n    port: {mosquitto}\n"
                  "    publish: true\n  ac_devices:\n"
                  f"    - {{type: shelly, name: plug, host: 127.0.0.1, port: {dead}}}\naction_timeout: 1\n")

    try:
        assert asyncio.run(mqtt_command_result(d, mosquitto)) == {"command": "outlet.1.load.on", "result": "USERNAME-REQUIRED"}
        assert ("WARNING nutups.mqtt: MQTT: outlet.1.load.on on ups refused: USERNAME-REQUIRED (set "
                "integrations.mqtt.command_user to a user of upsd.users)") in d.stderr()
        assert d.get("/api/v1/ups/ups")[1]["variables"]["outlet.1.status"] == "off"
        status, body, _ = d.request("POST", "/api/v1/ups/ups/command/outlet.2.load.on", None,
                                    {"Authorization": "Basic " + base64.b64encode(b"admin:adminpass").decode()})
        assert (status, body) == (502, {"error": "FAILED", "by": "driver"})
        assert "Instant command: admin@dashboard:127.0.0.1 did outlet.2.load.on on ups" in d.stderr()
        assert "INSTCMD outlet.2.load.on on ups failed: ERR FAILED" in d.stderr()
    finally:
        d.stop()
        print(d.stderr()[-4000:])
        shutil.rmtree(d.base, ignore_errors=True)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_result_after_tracking_keep_does_not_raise(caplog):
    """A driver's result that comes after TRACKING_KEEP, when the entry has been purged by
    later tracked commands, is dropped on the server's thread (where the Tracker lives
    alone): nothing raises, GET TRACKING says ERR UNKNOWN (upsd forgets it too), the server
    answers on."""
    from nutups.nut.descriptions import Descriptions
    from nutups.nut.protocol import TRACKING_KEEP, ServerCore
    from nutups.nut.server import NutServer
    from nutups.nut.users import User, UserTable
    from nutups.state import CommandResult, UpsState

    clock = FakeClock()
    ups = UpsState("ups", clock=clock)
    ups.connected = True
    ups.set("ups.status", "OL")
    ups.add_command("load.off")
    ups.data_ok()
    core = ServerCore({"ups": ups}, UserTable({"admin": User("admin", "pw", set(), {"all"})}),
                      Descriptions({}, {}), clock=clock)
    threads = []
    complete = core.tracker.complete
    core.tracker.complete = lambda tid, result: (threads.append(threading.current_thread().name),
                                                 complete(tid, result))
    port = free_port()
    server = NutServer(core, [("127.0.0.1", port)])

    async def go() -> tuple[bytes, bytes]:
        gate = asyncio.get_running_loop().create_future()
        calls = []

        def handler(cmd, param):
            calls.append(cmd)
            return gate if len(calls) == 1 else CommandResult.SUCCESS

        ups.instcmd_handler = handler
        await server.start()
        try:
            with RawClient(port) as c:
                ask = lambda line: asyncio.to_thread(c.request, line)  # noqa: E731
                for line in (b"USERNAME admin\n", b"PASSWORD pw\n", b"SET TRACKING ON\n"):
                    assert await ask(line) == b"OK\n"
                slow = (await ask(b"INSTCMD ups load.off\n")).split()[-1]
                clock.now += TRACKING_KEEP + 1
                ups.data_ok()
                for _ in range(70):  # enough tracked commands to purge the expired entry
                    assert (await ask(b"INSTCMD ups load.off\n")).startswith(b"OK TRACKING ")
                gate.set_result(CommandResult.SUCCESS)  # the slow command's result, late
                while len(threads) < 71:
                    await ask(b"GET VAR ups ups.status\n")  # until every result has reached the tracker
                return await ask(b"GET TRACKING " + slow + b"\n"), await ask(b"GET VAR ups ups.status\n")
        finally:
            await server.close()

    with caplog.at_level(logging.WARNING):
        tracking, status = asyncio.run(go())
    assert tracking == b"ERR UNKNOWN\n" and status == b'VAR ups ups.status "OL"\n'
    assert set(threads) == {"nut-server"}  # the Tracker is touched on the server's thread alone
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_nut_clients_change_the_state_on_the_loop_only():
    """LOGIN, logout and FSD from a NUT client are effects the server hands to the drivers'
    loop: the UpsState is written there (its listeners run there), never on the server's
    thread, and the client's own next request already sees FSD (as upsd answers)."""
    base = nut_tmpdir()
    users = USERS.replace("[monuser]", "[mon]\n  password = pw\n  upsmon primary\n\n[monuser]")
    config = load_configuration(make_confdir(base / "conf", SIM_UPS, users=users))
    config.datapath = base / "data"
    port = free_port()
    daemon = Daemon(config, listen=[("127.0.0.1", port)], statepath=base / "state")
    seen: list[tuple[int, str]] = []

    async def go() -> bytes:
        await daemon.start()
        try:
            state = daemon.states[0]
            changed = asyncio.Event()

            def logins(count: int) -> None:
                seen.append((count, threading.current_thread().name))
                changed.set()

            state.on_logins(logins)
            with RawClient(port) as c:
                ask = lambda line: asyncio.to_thread(c.request, line)  # noqa: E731
                for line in (b"USERNAME mon\n", b"PASSWORD pw\n", b"LOGIN ups\n"):
                    assert await ask(line) == b"OK\n"
                await changed.wait()
                assert await ask(b"FSD ups\n") == b"OK FSD-SET\n"
                status = await ask(b"GET VAR ups ups.status\n")
                changed.clear()
            await changed.wait()  # the logout, as the connection closed
            assert state.fsd and not state.fsd_by_policy
            return status
        finally:
            await daemon.stop()

    status = asyncio.run(go())
    assert status.startswith(b'VAR ups ups.status "FSD OL')
    assert seen == [(1, "MainThread"), (0, "MainThread")]
    shutil.rmtree(base, ignore_errors=True)


def test_the_protocol_core_imports_no_asyncio():
    """nut/protocol.py is sans-IO: no asyncio, no threads, nothing that runs a driver."""
    import ast
    from pathlib import Path

    import nutups.nut.protocol as protocol

    tree = ast.parse(Path(protocol.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {"asyncio", "threading", "concurrent.futures", "inspect", "effects"} & imported, imported


@needs_mosquitto
def test_a_slow_plug_holds_up_no_other_mqtt_command(mosquitto):
    """MQTT commands run as tasks: while a plug that never answers holds its command (for
    action_timeout), the relay's command is carried out and answered; then the plug's is
    answered FAILED, the driver's real result."""

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    plug = FakeShelly(2)
    asyncio.run_coroutine_threadsafe(plug.start(), loop).result(10)
    d = WebDaemon(f"outputs:\n  relay: 17\nintegrations:\n  mqtt:\n    host: 127.0.0.1\n    port: {mosquitto}\n"
                  "    publish: true\n    command_user: admin\n  device_poll: 3600\n  ac_devices:\n"
                  f"    - {{type: shelly, name: plug, host: 127.0.0.1, port: {plug.port}, gen: 2}}\n"
                  "action_timeout: 5\n")

    async def go() -> list[dict]:
        results = []
        async with aiomqtt.Client("127.0.0.1", mosquitto) as client:
            await client.subscribe("nutups/ups/result")
            await client.subscribe("nutups/ups/state")  # the daemon sends it once it listens for commands
            await asyncio.to_thread(d.start)
            async with asyncio.timeout(60):
                async for message in client.messages:
                    # a live state (not the broker's retained copy: that has retain set)
                    if str(message.topic) == "nutups/ups/state" and not message.retain and not plug.hang:
                        plug.hang = True
                        await client.publish("nutups/ups/command", "outlet.2.load.on")  # the plug: hangs
                        await client.publish("nutups/ups/command", "outlet.1.load.on")  # the relay
                    elif str(message.topic) == "nutups/ups/result":
                        results.append(json.loads(message.payload))
                        if len(results) == 2:
                            return results
        raise AssertionError("no results")

    try:
        assert asyncio.run(go()) == [{"command": "outlet.1.load.on", "result": "OK"},
                                     {"command": "outlet.2.load.on", "result": "FAILED"}]
    finally:
        d.stop()
        asyncio.run_coroutine_threadsafe(plug.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        shutil.rmtree(d.base, ignore_errors=True)


@needs_mosquitto
def test_an_mqtt_command_user_without_the_right_is_refused_by_the_core_and_audited(mosquitto):
    """command_user cmduser may run load.off only (upsd.users): the core refuses the relay's
    outlet.1.load.on with ACCESS-DENIED and writes its audit line, as for upscmd."""

    d = WebDaemon(f"outputs:\n  relay: 17\nintegrations:\n  mqtt:\n    host: 127.0.0.1\n    port: {mosquitto}\n"
                  "    publish: true\n    command_user: cmduser\n")

    try:
        assert asyncio.run(mqtt_command_result(d, mosquitto)) == {"command": "outlet.1.load.on", "result": "ACCESS-DENIED"}
        assert "Instant command denied: cmduser@mqtt may not do outlet.1.load.on on ups" in d.stderr()
        assert d.get("/api/v1/ups/ups")[1]["variables"]["outlet.1.status"] == "off"
    finally:
        d.stop()
        shutil.rmtree(d.base, ignore_errors=True)
