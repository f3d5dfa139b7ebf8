"""The battery test through a plug that feeds the HAT, against `nutups serve` on the simulated HAT and
the fake Shelly (Gen2, toggle_after) and fake Kasa (legacy, countdown rules) on loopback: the plug's
switching is the simulated HAT's mains. NUT's own upscmd starts and lists the commands."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading

import pytest
from conftest import USERS
from fakeplugs import FakeKasaPlug, FakeShelly
from nutprocs import HAVE_REAL_NUT, RawClient, free_port, make_confdir, nut_tmpdir, poll_until, wait_port

from nutups.events.log import read_events
from nutups.events.types import EventType
from nutups.hardware.simcontrol import request

needs_nut = pytest.mark.skipif(not HAVE_REAL_NUT and os.environ.get("CI") != "true", reason="needs nut-client")
# the simulator's own pack (no sim_cell): its resistance is r_cell / 4 + r_board = 0.06 / 4 + 0.02 ohm
X1202_PACK_OHM = 0.06 / 4 + 0.02


class PlugThread:
    """A fake plug on its own loop; whenever its relay moves, the simulated HAT's mains follows
    (over the simulator's control socket, as the wall socket would)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.came_on = threading.Event()
        self.sock = None
        threading.Thread(target=self._run, daemon=True).start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        fake = FakeShelly(2) if self.kind == "shelly" else FakeKasaPlug()
        self.fake = self.loop.run_until_complete(fake.start())
        self.fake.on = True
        self.fake.on_switch = self._switched
        self.ready.set()
        self.loop.run_forever()

    def _switched(self, on: bool) -> None:
        if on:
            self.came_on.set()
        sock = self.sock

        def tell() -> None:
            try:
                request(sock, {"cmd": "set", "ac": on})
            except OSError:
                pass  # nutups (and its simulator) is gone

        if sock is not None:
            threading.Thread(target=tell, daemon=True).start()

    def yaml(self) -> str:
        opts = "gen: 2" if self.kind == "shelly" else "protocol: legacy"
        return ("integrations:\n  device_poll: 1\n  ac_devices:\n"
                f"    - {{type: {self.kind}, name: wall, host: 127.0.0.1, port: {self.fake.port}, {opts}, "
                "feeds: ups}\n")

    def switches(self) -> list:
        """What nutups asked the plug to do (switches and timers)."""
        if self.kind == "shelly":
            return [c for c in self.fake.calls if "Switch.Set" in c]
        return [r for r in self.fake.requests if "count_down" in r or "set_relay_state" in r.get("system", {})]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


class Served:
    def __init__(self, plug: PlugThread | None, options: str = "") -> None:
        self.base = nut_tmpdir("nutups-batterytest-")
        self.port = free_port()
        ups = "[ups]\n driver = x120x\n board = x1202\n sim = yes\n battery_test_quick = 4\n" \
              " battery_test_grace = 3\n" + options
        self.confdir = make_confdir(self.base / "conf", ups, "", USERS,
                                    files={"nutups.yaml": plug.yaml() if plug else ""})
        self.sock = self.base / "state" / "nutups-ups.sim"
        self.err = open(self.base / "stderr", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "nutups.cli", "serve", "--confpath", str(self.confdir),
                                      "--listen", f"127.0.0.1:{self.port}", "--statepath", str(self.base / "state"),
                                      "--datapath", str(self.base / "data")], stdout=subprocess.DEVNULL, stderr=self.err)
        wait_port(self.port, self.proc)
        poll_until(self.sock.exists, "the control socket")
        if plug is not None:
            plug.sock = self.sock
        poll_until(lambda: self.var("ups.status"), "fresh data")

    def var(self, name: str) -> str:
        with RawClient(self.port) as nut:
            reply = nut.request(f"GET VAR ups {name}\n".encode())
        return reply.split(b'"')[1].decode() if reply.startswith(b"VAR") else ""

    def upscmd(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["upscmd", *args], capture_output=True, text=True, timeout=30)

    def start_test(self, kind: str) -> subprocess.CompletedProcess:
        return self.upscmd("-u", "admin", "-p", "adminpass", "-w", f"ups@127.0.0.1:{self.port}",
                           f"test.battery.start.{kind}")

    def battery_record(self) -> list:
        """The outages (and tests) the battery record holds."""
        path = self.base / "data" / "nutups-battery-ups.json"
        return __import__("json").loads(path.read_text())["outages"] if path.exists() else []

    def events(self) -> list:
        return [e for e in read_events(self.base / "data" / "ups_events.log") if e.type == EventType.BATTERY_TEST]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.err.close()
        shutil.rmtree(self.base, ignore_errors=True)


@needs_nut
def test_without_a_feeding_plug_the_test_commands_are_not_listed():
    d = Served(None)
    try:
        listed = d.upscmd("-l", f"ups@127.0.0.1:{d.port}").stdout
        assert "test.battery" not in listed
    finally:
        d.stop()


@needs_nut
@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["shelly", "kasa"])
def test_quick_test_runs_to_the_end_and_measures_the_packs_resistance(kind):
    plug = PlugThread(kind)
    d = Served(plug)
    try:
        listed = d.upscmd("-l", f"ups@127.0.0.1:{d.port}").stdout
        assert all(c in listed for c in ("test.battery.start.quick", "test.battery.start.deep",
                                         "test.battery.stop"))
        poll_until(lambda: d.var("ups.status") == "OL", "on mains, full")
        assert d.var("ups.test.result") == "No test initiated"
        assert d.start_test("quick").returncode == 0
        poll_until(lambda: d.var("ups.status").startswith("OB"), "the plug cut the mains")
        result = poll_until(lambda: (r := d.var("ups.test.result")).startswith("Done") and r, "the result", 60)
        assert plug.fake.on and d.var("ups.status").startswith("OL")
        # the resistance measured as mains went, against the simulator's own pack
        print(f"{kind}: ups.test.result = {result}")
        ohm = float(result.split("resistance ")[1].split(" mOhm")[0]) / 1000
        assert ohm == pytest.approx(X1202_PACK_OHM, rel=0.1), result
        assert result.startswith("Done and passed") and "sag" in result and d.var("ups.test.date")
        steps = [e.message for e in d.events()]
        assert steps[0].startswith("quick battery test started: wall switches the HAT's mains off")
        assert any("mains off, on battery" in m for m in steps) and any("wall on again" in m for m in steps)
        assert steps[-1].startswith("quick battery test done: Done and passed")
        # it was switched off with its own timer: 4 s of test + 3 s of grace
        first = plug.switches()[0] if kind == "shelly" else plug.switches()[1]
        if kind == "shelly":
            assert first.endswith("on=false&toggle_after=7")
        else:
            assert first["count_down"]["add_rule"]["delay"] == 7 and first["count_down"]["add_rule"]["act"] == 1
    finally:
        d.stop()
        plug.stop()


@needs_nut
def test_refused_below_90_percent_and_said_in_the_log():
    plug = PlugThread("shelly")
    d = Served(plug)
    try:
        request(d.sock, {"cmd": "set", "soc": 80})
        poll_until(lambda: d.var("battery.charge") in ("79", "80", "81"), "the charge at 80 %")
        d.start_test("quick")
        events = poll_until(lambda: d.events() or None, "the refusal in the event log")
        assert events[0].message == "quick battery test refused: the charge is 80 %, under the 90 % a test needs"
        assert plug.fake.on and not plug.switches()
    finally:
        d.stop()
        plug.stop()


@needs_nut
@pytest.mark.timeout(90)
def test_a_real_outage_aborts_the_test():
    """The wall's mains goes while the plug is off: the plug has no power, it answers no more."""
    plug = PlugThread("shelly")
    d = Served(plug, " battery_test_quick = 60\n")
    try:
        poll_until(lambda: d.var("ups.status") == "OL", "on mains")
        d.start_test("quick")
        poll_until(lambda: d.var("ups.status").startswith("OB"), "the plug cut the mains")
        plug.sock = None  # the plug's own timer must not bring the simulated mains back: it is out
        asyncio.run_coroutine_threadsafe(plug.fake.close(), plug.loop).result(10)
        poll_until(lambda: d.var("ups.test.result") == "Aborted: a real outage", "the test aborted", 30)
        assert d.var("ups.status").startswith("OB")  # an outage now, handled as one
        assert any("aborted" in e.message and "real outage" in e.message for e in d.events())
    finally:
        d.stop()
        plug.loop.call_soon_threadsafe(plug.loop.stop)


@needs_nut
@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["shelly", "kasa"])
def test_nutups_killed_mid_test_the_plug_comes_back_by_its_own_timer(kind):
    plug = PlugThread(kind)
    d = Served(plug, " battery_test_quick = 30\n")
    try:
        poll_until(lambda: d.var("ups.status") == "OL", "on mains")
        d.start_test("quick")
        poll_until(lambda: d.var("ups.status").startswith("OB"), "the plug cut the mains")
        assert not plug.fake.on
        asked = len(plug.switches())
        os.kill(d.proc.pid, signal.SIGKILL)
        d.proc.wait(10)
        plug.came_on.clear()
        assert plug.came_on.wait(45), "the plug stayed off"
        assert plug.fake.on and len(plug.switches()) == asked  # nobody asked it: its own timer did it
    finally:
        d.stop()
        plug.stop()


@needs_nut
@pytest.mark.timeout(120)
def test_deep_test_discharges_to_the_runtime_the_shutdown_needs_plus_the_margin():
    """The simulator at 500 x: the deep test runs until battery.runtime reaches battery.runtime.low
    plus the margin, switches the plug on, and the learning keeps it as a deep battery test."""
    plug = PlugThread("shelly")
    d = Served(plug, " battery_test_margin = 27000\n battery_rest = 60\n")
    try:
        poll_until(lambda: d.var("ups.status") == "OL", "on mains, full")
        request(d.sock, {"cmd": "set", "speed": 500})
        assert d.start_test("deep").returncode == 0
        poll_until(lambda: d.var("ups.status").startswith("OB"), "the plug cut the mains")
        result = poll_until(lambda: (r := d.var("ups.test.result")).startswith("Done") and r, "the result", 90)
        low = float(d.var("battery.runtime.low"))
        steps = [e.message for e in d.events()]
        ended = [m for m in steps if m.startswith("deep battery test done")]
        assert ended and "the capacity is measured once the pack has rested" in result
        assert plug.fake.on and poll_until(lambda: d.var("ups.status").startswith("OL"), "on mains again")
        # it ended where the runtime left came to what the shutdown needs plus the margin
        [why] = [m for m in steps if "s of runtime left" in m]
        runtime_then = float(why.split("deep battery test: ")[1].split(" s of")[0])
        assert low + 27000 - 600 < runtime_then <= low + 27000
        data = poll_until(lambda: (o := d.battery_record()) and o, "the test in the battery record", 60)
        assert data[-1]["kind"] == "deep battery test" and data[-1]["seconds"] > 1000  # simulated s on battery
    finally:
        d.stop()
        plug.stop()
