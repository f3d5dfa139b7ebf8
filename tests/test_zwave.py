"""Z-Wave plugs through the real Z-Wave JS stack, with no radio: zwave-js's MockServer with a
Zooz ZEN15 on it, and @zwave-js/server driving it (tests/zwavestack.py).  nutups talks to the
server as Home Assistant does, with zwave-js-server-python.  The readings are compared with
what the mock plug measures; a switch is proven by the mock node's own log of the Binary
Switch Set it received."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest
from conftest import USERS
from nutprocs import HAVE_REAL_NUT, RawClient, poll_until
from runtime_trials import CELLS_DIR
from served import Served
from test_load_meter import DOE_LEVEL_VI_27W
from zwavestack import Plug, ZWaveStack

from nutups.events.config import DeviceConfig
from nutups.events.devices import ZWaveDevice, make_device

pytestmark = pytest.mark.timeout(300)  # a fresh Z-Wave JS start and interview: 5-10 s, far more on a loaded machine


# the plug the HAT's supply is in: a Pi drawing 7.5 W behind a supply at the DoE Level VI floor
PI_SUPPLY = Plug(watts=round(7.5 / DOE_LEVEL_VI_27W, 1))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    zw = ZWaveStack(tmp_path_factory.mktemp("zwave"), PI_SUPPLY).start()
    yield zw
    zw.stop()


def plug_config(stack: ZWaveStack, **options) -> DeviceConfig:
    return DeviceConfig("zwave", "zen15", "127.0.0.1", stack.ws_port,
                        options={"node_id": stack.plug.node_id, **options})


async def reading_until(dev: ZWaveDevice, predicate, what: str, timeout: float = 20.0):
    """Read until the server has pushed the plug's report that makes ``predicate`` true."""
    deadline = time.monotonic() + timeout
    while True:
        reading = await dev.read()
        if predicate(reading):
            return reading
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last reading {reading}")
        await asyncio.sleep(0.05)


def test_reads_switches_and_sees_the_meter_follow(stack):
    plug = stack.plug

    async def go():
        dev = make_device(plug_config(stack), timeout=10)
        assert isinstance(dev, ZWaveDevice)
        try:
            await dev.do("turn_on")
            await asyncio.to_thread(stack.wait_mock, f"node {plug.node_id}: switched on")
            r = await dev.do("capture_power_state")  # asks the plug afresh
            assert (r.on, r.power_w, r.voltage, r.current, r.energy_kwh) == (
                True, plug.watts, plug.volts, plug.amps, plug.kwh)
            await dev.do("turn_off")
            await asyncio.to_thread(stack.wait_mock, f"node {plug.node_id}: switched off")
            # the plug's own Meter report after the switch, pushed by the server: no poll
            r = await reading_until(dev, lambda r: r.on is False and r.power_w == 0, "off and 0 W")
            assert r.voltage == plug.volts
            await dev.do("toggle")
            await asyncio.to_thread(stack.wait_mock, f"node {plug.node_id}: switched on", count=2)
            await reading_until(dev, lambda r: r.on is True and r.power_w == plug.watts, f"on and {plug.watts} W")
        finally:
            await dev.close()

    asyncio.run(go())


def test_one_outlet_of_a_strip_is_its_endpoint(stack):
    """`endpoint: 2` switches and reads the strip's second outlet, and only that one."""
    plug = stack.plug

    async def go():
        second = ZWaveDevice(DeviceConfig("zwave", "strip_2", "127.0.0.1", stack.ws_port,
                                          options={"node_id": plug.strip_id, "endpoint": 2}), timeout=10)
        first = ZWaveDevice(DeviceConfig("zwave", "strip_1", "127.0.0.1", stack.ws_port,
                                         options={"node_id": plug.strip_id, "endpoint": 1}), timeout=10)
        root = ZWaveDevice(DeviceConfig("zwave", "strip", "127.0.0.1", stack.ws_port,
                                        options={"node_id": plug.strip_id}), timeout=10)
        try:
            r = await second.do("capture_power_state")
            assert (r.on, r.power_w) == (True, plug.strip_watts[1])
            await second.do("turn_off")
            await asyncio.to_thread(stack.wait_mock, f"node {plug.strip_id} endpoint 2: switched off")
            await reading_until(second, lambda r: r.on is False and r.power_w == 0, "outlet 2 off and 0 W")
            r = await first.do("capture_power_state")
            assert (r.on, r.power_w) == (True, plug.strip_watts[0])  # the other outlet is untouched
            assert f"node {plug.strip_id} endpoint 1: switched" not in stack.mock_log()
            with pytest.raises(ConnectionError, match=f"node {plug.strip_id} has no Binary Switch targetValue"):
                await root.switch(False)  # the strip's root has no switch of its own
            await second.do("turn_on")
            await asyncio.to_thread(stack.wait_mock, f"node {plug.strip_id} endpoint 2: switched on")
        finally:
            for dev in (first, second, root):
                await dev.close()

    asyncio.run(go())


def test_a_node_or_endpoint_the_network_lacks_is_named(stack):
    async def go():
        for options, message in (({"node_id": 9}, "the Z-Wave network has no node 9 (it has 1, 2, 3)"),
                                 ({"endpoint": 3}, "node 2 has no endpoint 3 (it has 0)")):
            dev = ZWaveDevice(plug_config(stack, **options), timeout=10)
            try:
                with pytest.raises(ConnectionError, match=message.replace("(", r"\(").replace(")", r"\)")):
                    await dev.read()
                with pytest.raises(ConnectionError, match="no node 9|no endpoint 3"):
                    await dev.switch(False)
            finally:
                await dev.close()

    switched = stack.mock_log().count("switched")
    asyncio.run(go())
    assert stack.mock_log().count("switched") == switched  # nothing reached the plug


class Refuser:
    """A port that answers every request 503, as a proxy in front of a stopped server does
    (no WebSocket handshake), counting the tries."""

    def __init__(self) -> None:
        self.tries = 0

    async def start(self) -> int:
        async def refuse(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            self.tries += 1
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()

        self.server = await asyncio.start_server(refuse, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]


def test_reconnects_with_backoff_and_a_switch_tries_at_once():
    async def go():
        refuser = Refuser()
        port = await refuser.start()
        now = [100.0]
        dev = ZWaveDevice(DeviceConfig("zwave", "zen15", "127.0.0.1", port, options={"node_id": 2}), timeout=5,
                          clock=lambda: now[0])
        with pytest.raises(ConnectionError, match=f"the Z-Wave JS server at ws://127.0.0.1:{port}: "
                                                  r"HTTP 503 instead of a WebSocket \(is this the Z-Wave JS"):
            await dev.read()
        assert refuser.tries == 1
        with pytest.raises(ConnectionError, match="next try in 1 s"):
            await dev.read()  # within the backoff: no new try
        assert refuser.tries == 1
        now[0] += 1
        with pytest.raises(ConnectionError, match="the Z-Wave JS server at"):
            await dev.read()
        assert refuser.tries == 2
        with pytest.raises(ConnectionError, match="next try in 2 s"):
            await dev.read()
        with pytest.raises(ConnectionError, match="the Z-Wave JS server at"):
            await dev.switch(False)  # an action does not wait for the backoff
        assert refuser.tries == 3
        for _ in range(10):
            now[0] += dev.delay
            with pytest.raises(ConnectionError):
                await dev.read()
        assert dev.delay == ZWaveDevice.BACKOFF_MAX
        await dev.close()
        refuser.server.close()
        await refuser.server.wait_closed()
        nobody = ZWaveDevice(DeviceConfig("zwave", "zen15", "127.0.0.1", port, options={"node_id": 2}), timeout=5)
        with pytest.raises(ConnectionError, match=f"zen15: the Z-Wave JS server at ws://127.0.0.1:{port}: "
                                                  "connection refused$"):
            await nobody.switch(True)

    asyncio.run(go())


def test_a_server_that_never_answers_is_given_up_in_time():
    """A port that accepts and then says nothing (a hung server): the read fails after the
    device's timeout, and the loop turns meanwhile."""
    from test_devices import still_responsive

    async def go():
        async def silent(reader, writer):
            await reader.read()  # until the client gives up and closes

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        dev = ZWaveDevice(DeviceConfig("zwave", "zen15", "127.0.0.1", port, options={"node_id": 2}), timeout=1)
        await still_responsive(dev.read(), 1)
        with pytest.raises(ConnectionError, match="no answer in time"):
            await dev.switch(True)
        await dev.close()
        server.close()

    asyncio.run(go())


def test_a_command_cut_off_by_the_servers_loss_is_a_connection_error_not_a_cancellation():
    """zwave-js-server-python cancels the futures of commands in flight when the connection
    ends (Client.listen's cleanup): for nutups that is a lost server, a ConnectionError the
    outlets and the action retry handle; only a cancellation of nutups' own task stays one."""

    async def go():
        dev = ZWaveDevice(DeviceConfig("zwave", "zen15", "127.0.0.1", 1, options={"node_id": 2}))
        answer = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(answer.cancel)  # as the library's cleanup does
        with pytest.raises(ConnectionError, match="zen15: the Z-Wave JS server at ws://127.0.0.1:1 went away"):
            await dev._zwave(answer)
        waiting = asyncio.create_task(dev._zwave(asyncio.get_running_loop().create_future()))
        await asyncio.sleep(0)
        waiting.cancel()  # a timeout of ours (wait_for) or the daemon stopping
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(go())


# --- the daemon's own path ----------------------------------------------------------------------

SIM_UPS = "[ups]\n driver = x120x\n sim = yes\n"


def nut_var(port: int, name: str) -> str | None:
    with RawClient(port) as c:
        answer = c.request(f"GET VAR ups {name}\n".encode())
    return answer.split(b'"')[1].decode() if answer.startswith(b"VAR ") else None


def plug_yaml(stack: ZWaveStack, extra: str = "") -> str:
    return (f"integrations:\n  device_poll: 1\n  ac_devices:\n"
            f"    - {{type: zwave, name: zen15, host: 127.0.0.1, port: {stack.ws_port}, "
            f"node_id: {stack.plug.node_id}{extra}}}\n")


def test_mains_loss_turns_the_plug_off_and_upscmd_turns_it_on(stack):
    """AC_POWER_LOSS -> turn_off through nutups' Z-Wave device, in the daemon; the plug is NUT
    outlet 1, which the real upscmd switches on again."""
    from nutups.hardware.simcontrol import request

    plug = stack.plug
    yaml = plug_yaml(stack) + "events:\n  AC_POWER_LOSS:\n    integrations:\n      zen15: turn_off\n"
    offs = stack.mock_log().count(f"node {plug.node_id}: switched off")
    ons = stack.mock_log().count(f"node {plug.node_id}: switched on")
    with Served(SIM_UPS, users=USERS, files={"nutups.yaml": yaml}) as d:
        # the first test left it on (and the mock starts on); the daemon reads it within a poll
        poll_until(lambda: nut_var(d.port, "outlet.1.status") == "on", "outlet.1.status on")
        poll_until(lambda: nut_var(d.port, "outlet.1.realpower") == f"{plug.watts:.1f}", "the plug's W in NUT")
        assert nut_var(d.port, "outlet.1.desc") == "zen15"
        sock = d.statepath / "nutups-ups.sim"
        request(sock, {"cmd": "set", "ac": False})
        stack.wait_mock(f"node {plug.node_id}: switched off", count=offs + 1)
        poll_until(lambda: nut_var(d.port, "outlet.1.status") == "off", "outlet.1.status off")
        poll_until(lambda: nut_var(d.port, "outlet.1.realpower") == "0.0", "0 W once off")
        request(sock, {"cmd": "set", "ac": True})
        if HAVE_REAL_NUT:
            p = subprocess.run(["upscmd", "-u", "admin", "-p", "adminpass", f"ups@127.0.0.1:{d.port}",
                                "outlet.1.load.on"], capture_output=True, text=True, timeout=30)
            assert p.returncode == 0, p.stderr
            stack.wait_mock(f"node {plug.node_id}: switched on", count=ons + 1)
            poll_until(lambda: nut_var(d.port, "outlet.1.realpower") == f"{plug.watts:.1f}", "W again once on")
        assert "ACTION_FAILED" not in (d.datapath / "ups_events.log").read_text()
    if not HAVE_REAL_NUT:
        pytest.skip("upscmd (nut-client) is not installed: the switch-on half did not run")


def test_the_plug_that_feeds_the_hat_gives_the_load_the_outage_starts_from(stack):
    """As tests/test_load_meter.py with a Shelly: the prior says 3 W, the Pi draws 7.5 W, no
    PMIC; the ZEN15 the HAT's supply is plugged into reads the wall power (`feeds: ups`), and
    the runtime at the start of the outage comes out near the simulated cell's true time to empty."""
    from nutups.hardware.simcontrol import request

    ups_conf = ("[ups]\n driver = x120x\n board = x1202\n sim = yes\n sim_load_w = 7.5\n load_w = 3\n"
                " load_meter = none\n sim_cell = cell.csv\n")
    files = {"nutups.yaml": plug_yaml(stack, ", feeds: ups"), "cell.csv": (CELLS_DIR / "nca-kim2011.csv").read_text()}
    with Served(ups_conf, users=USERS, files=files) as d:
        poll_until(lambda: nut_var(d.port, "outlet.1.status") == "on", "outlet.1.status on")
        assert "zen15's energy meter is the load of [ups] on mains" in d.log()
        # the poll that shows the W in NUT has handed them to the driver too (one a second)
        poll_until(lambda: nut_var(d.port, "outlet.1.realpower") == f"{stack.plug.watts:.1f}", "the plug's W in NUT")
        assert nut_var(d.port, "ups.status") == "OL"  # full: the charger is idle
        sock = d.statepath / "nutups-ups.sim"
        true = request(sock, {"cmd": "set", "ac": False})["state"]["time_to_empty_s"]
        poll_until(lambda: "OB" in nut_var(d.port, "ups.status"), "on battery")
        runtime = float(nut_var(d.port, "battery.runtime"))
        # the prior (3 W) would say 2.5 times the truth; the plug's reading gives it within 15 %
        assert runtime == pytest.approx(true, rel=0.15), (runtime, true)


def test_server_killed_and_restarted_nutups_reconnects(stack):
    plug = stack.plug
    with Served(SIM_UPS, users=USERS, files={"nutups.yaml": plug_yaml(stack)}, args=("-v",)) as d:
        poll_until(lambda: nut_var(d.port, "outlet.1.realpower") is not None, "the plug's W in NUT")
        stack.kill_server()
        d.wait_log("outlet 1 (zen15) still unreadable", count=2)
        assert d.log().count("WARNING nutups.outlets: outlet 1 (zen15) unreadable") == 1
        with RawClient(d.port) as c:  # the daemon serves on meanwhile
            assert c.request(b"GET VAR ups ups.status\n").startswith(b"VAR ups ups.status")
        stack.start_server()
        poll_until(lambda: "INFO nutups.outlets: outlet 1 (zen15) answers again" in d.log(), "nutups to reconnect", 90)
        assert d.log().count("WARNING nutups.outlets: outlet 1 (zen15) unreadable") == 1
        poll_until(lambda: nut_var(d.port, "outlet.1.realpower") is not None, "the plug's W after the restart")
        assert float(nut_var(d.port, "outlet.1.realpower")) in (0.0, plug.watts)


def test_the_server_address_and_the_defaults():
    """Port 3000 unless port: says otherwise (the Z-Wave JS server's default); an IPv6 literal
    gets its brackets; endpoint 0 (the root) unless endpoint: says otherwise."""
    dev = ZWaveDevice(DeviceConfig("zwave", "p", "::1", None, options={"node_id": 5, "endpoint": 1}))
    assert (dev.url, dev.node_id, dev.endpoint) == ("ws://[::1]:3000", 5, 1)
    dev = ZWaveDevice(DeviceConfig("zwave", "p", "zwave-js.local", 3001, options={"node_id": 7}))
    assert (dev.url, dev.endpoint) == ("ws://zwave-js.local:3001", 0)


# --- nutups.yaml ----------------------------------------------------------------------------------

def test_config_check_names_each_zwave_mistake(tmp_path):
    from test_config_schema import check

    r, f = check(tmp_path, "integrations:\n  ac_devices:\n"
                           "    - {type: zwave, name: a}\n"
                           "    - {type: zwave, name: b, host: 127.0.0.1}\n"
                           "    - {type: zwave, name: c, host: 127.0.0.1, node_id: 0, endpoint: -1}\n"
                           "    - {type: zwave, name: d, host: 127.0.0.1, node_id: five}\n"
                           "    - {type: shelly, name: e, host: 127.0.0.1, node_id: 3}\n"
                           "    - {type: zwave, name: f, host: 127.0.0.1, node_id: 5, channel: 1}\n"
                           "    - {type: z-wave, name: g}\n")
    assert r.exit_code == 1
    for expected in (
        f"{f}:3: integrations.ac_devices.0: device 'a': a zwave device needs host and node_id (host: the Z-Wave "
        "JS server's address, its port 3000 unless port: says otherwise; node_id: the plug's node ID there)",
        f"{f}:4: integrations.ac_devices.1: device 'b': a zwave device needs node_id (host:",
        f"{f}:5: integrations.ac_devices.2.node_id: 0 is not a whole number from 1 to 4000",
        f"{f}:5: integrations.ac_devices.2.endpoint: -1 is not a whole number from 0 to 127",
        f"{f}:6: integrations.ac_devices.3.node_id: 'five' is not a whole number from 1 to 4000",
        f"{f}:7: integrations.ac_devices.4.node_id: device 'e': node_id is for zwave devices, not shelly",
        f"{f}:9: integrations.ac_devices.6.type: 'z-wave' is not one of kasa, shelly, zigbee, zwave; did you mean zwave?",
    ):
        assert expected in r.output, r.output
    assert "ac_devices.5" not in r.output  # channel is a Shelly's, and harmless elsewhere (as before)


def test_a_zwave_plug_in_nutups_yaml(tmp_path):
    from test_config_schema import check

    from nutups.configuration import load_configuration

    r, _ = check(tmp_path, "integrations:\n  ac_devices:\n"
                           "    - {type: zwave, name: rack, host: 127.0.0.1, node_id: 12, endpoint: 2, feeds: ups}\n"
                           "events:\n  AC_POWER_LOSS:\n    integrations: {rack: turn_off}\n")
    assert r.exit_code == 0, r.output
    dev = load_configuration(tmp_path).events.devices["rack"]
    assert (dev.type, dev.host, dev.port, dev.options) == ("zwave", "127.0.0.1", None,
                                                          {"node_id": 12, "endpoint": 2, "feeds": "ups"})
    zw = make_device(dev)
    assert (zw.url, zw.node_id, zw.endpoint) == ("ws://127.0.0.1:3000", 12, 2)
