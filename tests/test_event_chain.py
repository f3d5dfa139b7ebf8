"""The whole chain in a running daemon on the simulated HAT: readings -> events -> log
lines -> GPIO lines (LEDs, relay, buzzer) -> a smart plug -> a `run:` hook; and the relay
and the plug as NUT outlets that upscmd switches and aionut sees."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading

import pytest
from aionut import AIONUTClient
from conftest import USERS
from fakeplugs import FakeShelly
from nutprocs import (
    HAVE_REAL_NUT,
    RawClient,
    free_port,
    make_confdir,
    nut_tmpdir,
    poll_until,
    unix_socket_answers,
    wait_port,
)

from nutups.events.log import read_events
from nutups.events.types import EventType
from nutups.hardware.simcontrol import request


class ShellyThread:
    """A fake Shelly on its own loop, so the daemon (another process) can reach it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.fake = self.loop.run_until_complete(FakeShelly(2).start())
        self.ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def chain():
    shelly = ShellyThread()
    base = nut_tmpdir()
    hook_out = base / "hook.json"
    hook = (f"{sys.executable} -c \"import json,os; json.dump({{k: v for k, v in os.environ.items() "
            f"if k.startswith('NUTUPS_')}}, open('{hook_out}', 'w'))\"")
    yaml_text = f"""
event_log: logs/events.log
outputs:
  leds: {{red: 17, green: 27, blue: 23}}
  relay: 24
  buzzer: 25
integrations:
  ac_devices:
    - {{type: shelly, name: backup_outlet, host: 127.0.0.1, port: {shelly.fake.port}, gen: 2}}
  device_poll: 1
events:
  AC_POWER_LOSS:
    leds: [red, blink]
    relay: off
    dashboard_notify: true
    integrations:
      backup_outlet: {{action: turn_on}}
    run: {json.dumps(hook)}
  AC_POWER_RESTORED:
    leds: [[red, off], [green, solid]]
    relay: on
  TEMPERATURE_HIGH:
    buzzer: alarm
"""
    confdir = make_confdir(base / "conf", "[ups]\n driver = x120x\n sim = yes\n", "", USERS,
                           files={"nutups.yaml": yaml_text})
    port = free_port()
    err = open(base / "stderr", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "nutups.cli", "serve", "--confpath", str(confdir),
                             "--listen", f"127.0.0.1:{port}", "--statepath", str(base / "state"), "--datapath", str(base / "state") + "-data"],
                            stdout=subprocess.DEVNULL, stderr=err)
    wait_port(port, proc)
    sock = base / "state" / "nutups-ups.sim"
    poll_until(lambda: unix_socket_answers(sock), "control socket")
    yield {"port": port, "sock": sock, "log": confdir / "logs" / "events.log", "hook": hook_out,
           "shelly": shelly.fake, "base": base}
    proc.terminate()
    proc.wait(10)
    err.close()
    shelly.stop()


def test_mains_loss_runs_every_action(chain):
    reply = request(chain["sock"], {"cmd": "set", "ac": False})
    # by the time the control socket answers, the event is logged and the lines moved
    outputs = reply["state"]["outputs"]
    assert outputs["red"] == {"level": 1, "pattern": "blink"}
    assert outputs["relay"] == {"level": 0, "pattern": "off"}
    events = list(read_events(chain["log"]))
    loss = [e for e in events if e.type == EventType.AC_POWER_LOSS]
    assert len(loss) == 1 and loss[0].dashboard_notify
    poll_until(lambda: chain["shelly"].on, "the plug to be switched on")
    def hook_env():
        try:
            return json.loads(chain["hook"].read_text())  # written by another process: wait for all of it
        except (OSError, ValueError):
            return None

    env = poll_until(hook_env, "the run: hook")
    assert env["NUTUPS_EVENT"] == "AC_POWER_LOSS" and env["NUTUPS_UPS"] == "ups"
    reply = request(chain["sock"], {"cmd": "set", "ac": True})
    outputs = reply["state"]["outputs"]
    assert outputs["red"]["pattern"] == "off" and outputs["green"] == {"level": 1, "pattern": "solid"}
    assert outputs["relay"]["level"] == 1
    types = [e.type for e in read_events(chain["log"])]
    assert types.index(EventType.AC_POWER_LOSS) < types.index(EventType.AC_POWER_RESTORED)


def test_simulator_produces_host_events(chain):
    request(chain["sock"], {"cmd": "set", "temperature": 95})
    poll_until(lambda: any(e.type == EventType.TEMPERATURE_HIGH for e in read_events(chain["log"])),
               "TEMPERATURE_HIGH")
    state = request(chain["sock"], {"cmd": "get"})["state"]
    assert state["outputs"]["buzzer"]["pattern"] == "alarm"
    request(chain["sock"], {"cmd": "set", "dc_out": False})
    poll_until(lambda: any(e.type == EventType.DC_OUT_LOSS for e in read_events(chain["log"])), "DC_OUT_LOSS")
    request(chain["sock"], {"cmd": "set", "dc_out": True, "load_w": 30})  # 5.9 A out of a 5 A board
    poll_until(lambda: any(e.type == EventType.OVERCURRENT_DETECTED for e in read_events(chain["log"])),
               "OVERCURRENT_DETECTED")
    request(chain["sock"], {"cmd": "set", "temperature": 45, "dc_out": True, "load_w": 5})
    for kind in (EventType.TEMPERATURE_NORMAL, EventType.DC_OUT_RESTORED, EventType.OVERCURRENT_CLEARED):
        poll_until(lambda kind=kind: any(e.type == kind for e in read_events(chain["log"])), str(kind))


def test_outlets_in_nut(chain):
    port = chain["port"]
    with RawClient(port) as c:
        cmds = c.request(b"LIST CMD ups\n")
        for cmd in (b"outlet.1.load.on", b"outlet.1.load.off", b"outlet.2.load.on", b"outlet.2.load.off",
                    b"beeper.enable", b"beeper.disable", b"beeper.mute"):
            assert b"CMD ups " + cmd + b"\n" in cmds
        assert c.request(b"GET VAR ups outlet.1.desc\n") == b'VAR ups outlet.1.desc "relay"\n'
        assert c.request(b"GET VAR ups outlet.2.desc\n") == b'VAR ups outlet.2.desc "backup_outlet"\n'
        assert c.request(b"GET VAR ups outlet.2.switchable\n") == b'VAR ups outlet.2.switchable "yes"\n'


@pytest.mark.realnut
@pytest.mark.skipif(not HAVE_REAL_NUT, reason="needs nut-client")
def test_upscmd_switches_the_relay_and_the_plug(chain):
    port = chain["port"]
    for cmd, check in (
        ("outlet.1.load.off", lambda s: s["outputs"]["relay"]["level"] == 0),
        ("outlet.1.load.on", lambda s: s["outputs"]["relay"]["level"] == 1),
    ):
        p = subprocess.run(["upscmd", "-u", "admin", "-p", "adminpass", f"ups@127.0.0.1:{port}", cmd],
                           capture_output=True, text=True, timeout=20)
        assert p.returncode == 0, p.stderr
        poll_until(lambda check=check: check(request(chain["sock"], {"cmd": "get"})["state"]), cmd)
    p = subprocess.run(["upscmd", "-u", "admin", "-p", "adminpass", f"ups@127.0.0.1:{port}", "outlet.2.load.off"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0
    poll_until(lambda: chain["shelly"].on is False, "the plug to switch off")
    with RawClient(port) as c:
        poll_until(lambda: c.request(b"GET VAR ups outlet.2.status\n") == b'VAR ups outlet.2.status "off"\n',
                   "outlet.2.status")
    p = subprocess.run(["upscmd", "-u", "admin", "-p", "adminpass", f"ups@127.0.0.1:{port}", "beeper.disable"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0
    with RawClient(port) as c:
        poll_until(lambda: c.request(b"GET VAR ups ups.beeper.status\n") == b'VAR ups ups.beeper.status "disabled"\n',
                   "beeper disabled")


def test_aionut_sees_outlet_switches(chain):
    async def go():
        c = AIONUTClient("127.0.0.1", chain["port"], "admin", "adminpass")
        try:
            variables = await c.list_vars("ups")
            commands = await c.list_commands("ups")
        finally:
            c.disconnect()
        return variables, commands

    variables, commands = asyncio.run(go())
    # Home Assistant makes a switch of outlet N when it is switchable and both commands exist
    for n in ("1", "2"):
        assert variables[f"outlet.{n}.switchable"] == "yes"
        assert {f"outlet.{n}.load.on", f"outlet.{n}.load.off"} <= set(commands)
        assert variables[f"outlet.{n}.status"] in ("on", "off")


def test_simulator_produces_ups_fault_with_a_stuck_pld(chain):
    """A PLD line that stays high while the pack discharges (a badly seated HAT): ALARM, UPS_FAULT."""
    sock = chain["sock"]
    request(sock, {"cmd": "set", "pld_stuck": True, "load_w": 20})
    request(sock, {"cmd": "set", "ac": False})
    request(sock, {"cmd": "set", "speed": 600})
    poll_until(lambda: any(e.type == EventType.UPS_FAULT for e in read_events(chain["log"])), "UPS_FAULT", 60)
    fault = [e for e in read_events(chain["log"]) if e.type == EventType.UPS_FAULT][-1]
    assert "PLD reports mains present" in fault.message
    request(sock, {"cmd": "set", "speed": 1})
    request(sock, {"cmd": "set", "ac": True, "pld_stuck": False, "soc": 100, "load_w": 5})


@pytest.mark.realnut
@pytest.mark.skipif(not HAVE_REAL_NUT, reason="needs nut-client")
def test_upscmd_waits_for_the_tracked_result(chain):
    """upscmd -w: SET TRACKING ON, INSTCMD, then GET TRACKING until it is no longer PENDING."""
    port = chain["port"]
    p = subprocess.run(["upscmd", "-w", "-u", "admin", "-p", "adminpass", f"ups@127.0.0.1:{port}",
                        "outlet.2.load.on"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stderr.strip() == "SUCCESS"  # upscmd -w prints the tracked result
    assert chain["shelly"].on is True  # done by the time upscmd reports success
    p = subprocess.run(["upscmd", "-w", "-u", "admin", "-p", "adminpass", f"ups@127.0.0.1:{port}",
                        "shutdown.stayoff"], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0  # not a command of this UPS
