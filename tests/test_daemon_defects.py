"""Defects found in review, each driven through the running daemon (`nutups serve` as a subprocess)."""

from __future__ import annotations

import json

from conftest import USERS
from nutprocs import RawClient, free_port, poll_until
from served import Served

SIM_UPS = "[ups]\n driver = x120x\n sim = yes\n"


def login(c: RawClient) -> None:
    assert c.request(b"USERNAME admin\n") == b"OK\n"
    assert c.request(b"PASSWORD adminpass\n") == b"OK\n"


def test_a_failing_outlet_command_is_tracked_as_failed_and_logged():
    """upsd answers OK once the command is passed on; the driver's failure shows in GET TRACKING
    (ERR FAILED, net-protocol.txt) and in the log.  The plug is a loopback port nobody listens on."""
    dead = free_port()
    mapping = f"integrations:\n  ac_devices:\n    - {{type: shelly, name: plug, host: 127.0.0.1, port: {dead}}}\n"
    with Served(SIM_UPS, users=USERS, files={"nutups.yaml": mapping}) as d, RawClient(d.port) as c:
        poll_until(lambda: c.request(b"GET VAR ups ups.status\n").startswith(b"VAR"), "fresh data")
        login(c)
        assert c.request(b"INSTCMD ups outlet.1.load.on\n") == b"OK\n"
        d.wait_log("INSTCMD outlet.1.load.on on ups failed: ERR FAILED")
        assert c.request(b"SET TRACKING ON\n") == b"OK\n"
        reply = c.request(b"INSTCMD ups outlet.1.load.off\n")
        assert reply.startswith(b"OK TRACKING ")
        tid = reply.split()[-1]
        status = poll_until(lambda: (r := c.request(b"GET TRACKING " + tid + b"\n")) != b"PENDING\n" and r,
                            "the command's result")
        assert status == b"ERR FAILED\n"
        log = d.wait_log("INSTCMD outlet.1.load.off on ups failed")
        assert "WARNING nutups.upsd: INSTCMD outlet.1.load.off on ups failed: ERR FAILED" in log


def sim(d: Served, *words: str) -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "nutups.cli", "sim", "--statepath", str(d.statepath), *words],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_sighup_applies_new_thresholds():
    fast = SIM_UPS + " pollinterval = 0.2\n"
    with Served(fast, files={"nutups.yaml": "thresholds: {temperature_high: 90, debounce: 1}\n"}) as d:
        d.wait_log("simulator control socket")
        events = d.datapath / "ups_events.log"
        sim(d, "temperature", "80")
        (d.confdir / "nutups.yaml").write_text("thresholds: {temperature_high: 70, debounce: 1}\n")
        d.hup()
        d.wait_log("reload: event mapping and thresholds from nutups.yaml")
        sim(d, "temperature", "80.5")  # a fresh reading after the reload
        poll_until(lambda: events.exists() and "TEMPERATURE_HIGH" in events.read_text(), "TEMPERATURE_HIGH")
        assert '"value":80' in events.read_text()


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    import os

    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def test_a_timed_out_hook_leaves_no_process_of_its_group():
    """The hook starts a background sleeper (its grandchild) and sleeps: after hook_timeout the
    whole group is gone, the hook is reaped, and ACTION_FAILED says why."""
    served = Served(SIM_UPS + " pollinterval = 0.2\n")
    pids = served.path / "pids"
    hook = served.path / "hook.sh"
    hook.write_text(f"#!/bin/sh\nsleep 300 &\necho $$ $! > {pids}.tmp\nmv {pids}.tmp {pids}\nsleep 300\n")
    hook.chmod(0o755)
    (served.confdir / "nutups.yaml").write_text(f"hook_timeout: 1\nevents:\n  AC_POWER_LOSS: {{run: {hook}}}\n")
    with served as d:
        d.wait_log("simulator control socket")
        sim(d, "ac", "off")
        poll_until(pids.exists, "the hook to start its sleeper")
        hook_pid, sleeper = (int(p) for p in pids.read_text().split())
        assert sleeper in _group_members(hook_pid)
        events = d.datapath / "ups_events.log"
        poll_until(lambda: "ACTION_FAILED" in events.read_text(), "ACTION_FAILED")
        assert "timed out after 1 s" in events.read_text()
        poll_until(lambda: not _group_members(hook_pid), "the hook's group to be gone")


def test_an_unreachable_plug_is_a_warning_once_then_quiet_until_it_answers():
    import asyncio
    import threading

    from fakeplugs import FakeShelly

    dead = free_port()
    mapping = (f"integrations:\n  device_poll: 1\n  ac_devices:\n"
               f"    - {{type: shelly, name: plug, host: 127.0.0.1, port: {dead}, gen: 2}}\naction_timeout: 1\n")
    with Served(SIM_UPS, files={"nutups.yaml": mapping}, args=("-v",)) as d:
        d.wait_log("outlet 1 (plug) still unreadable", count=2)
        log = d.log()
        assert log.count("WARNING nutups.outlets: outlet 1 (plug) unreadable") == 1
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        fake = asyncio.run_coroutine_threadsafe(FakeShelly(2).start(port=dead), loop).result(10)
        try:
            d.wait_log("INFO nutups.outlets: outlet 1 (plug) answers again")
        finally:
            asyncio.run_coroutine_threadsafe(fake.close(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


def sim_status(d: Served) -> dict:
    from nutups.hardware.simcontrol import request

    return request(d.statepath / "nutups-ups.sim", {"cmd": "get"})["state"]


def test_at_start_the_relay_and_leds_show_the_current_power_state():
    """Mains is up at start: the relay and the LED are as AC_POWER_RESTORED sets them, without
    waiting for a mains event (and without logging one)."""
    mapping = ("outputs: {relay: 24, leds: {green: 27, red: 17}}\nevents:\n"
               "  AC_POWER_RESTORED: {relay: on, leds: [green, solid]}\n"
               "  AC_POWER_LOSS: {relay: off, leds: [[green, off], [red, blink]]}\n")
    with Served(SIM_UPS, files={"nutups.yaml": mapping}) as d:
        d.wait_log("simulator control socket")
        outputs = poll_until(lambda: (o := sim_status(d)["outputs"]).get("relay", {}).get("level") and o,
                             "the relay to be on")
        assert outputs["relay"] == {"level": 1, "pattern": "on"}
        assert outputs["green"] == {"level": 1, "pattern": "solid"}
        assert outputs["red"]["level"] == 0
        events = d.datapath / "ups_events.log"
        assert not events.exists() or "AC_POWER_RESTORED" not in events.read_text()


def test_a_second_sim_server_that_cannot_bind_leaves_the_first_ones_socket():
    import subprocess
    import sys

    with Served(SIM_UPS) as d:
        d.wait_log("simulator control socket")
        sock = d.statepath / "nutups-ups.sim"
        before = sock.stat().st_ino
        second = subprocess.run([sys.executable, "-m", "nutups.cli", "serve", "--sim", "--confpath", str(d.confdir),
                                 "--listen", f"127.0.0.1:{d.port}", "--statepath", str(d.statepath),
                                 "--datapath", str(d.datapath)],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2, second.stderr
        assert "cannot start" in second.stderr and "Traceback" not in second.stderr
        assert sock.stat().st_ino == before
        assert sim_status(d)["ac"] is True  # the first server's simulator still answers


def _shutdown_yaml(grace: float, marker) -> str:
    import sys

    command = f"{sys.executable} -c \\\"open('{marker}', 'w').write('down')\\\""
    return f'shutdown:\n  grace: {grace}\n  hostsync: 0\n  command: "{command}"\n  reboot_command: "{command}"\n'


def test_sighup_applies_new_shutdown_settings(tmp_path):
    """A user shortens grace and sends SIGHUP: the running daemon's policy uses it (before, the
    shutdown: section was read once at start). On battery with LB, grace 3600 keeps the Pi up;
    after the reload with grace 0 it goes down."""
    marker = tmp_path / "down"
    fast = SIM_UPS + " pollinterval = 0.2\n"
    with Served(fast, files={"nutups.yaml": _shutdown_yaml(3600, marker)}) as d:
        d.wait_log("simulator control socket")
        d.wait_log("shutdown policy on: grace 3600 s")
        sim(d, "ac", "off")
        sim(d, "soc", "0.5")  # under what the shutdown needs (LB comes from the runtime, issue 14)
        with RawClient(d.port) as c:
            poll_until(lambda: b"LB" in c.request(b"GET VAR ups ups.status\n"), "LB on battery")
        assert not marker.exists()
        (d.confdir / "nutups.yaml").write_text(_shutdown_yaml(0, marker))
        d.hup()
        d.wait_log("reload: [ups]: shutdown policy on: grace 0 s")
        poll_until(marker.exists, "the Pi's shutdown command after the reload")
        log = d.datapath / "ups_events.log"
        poll_until(lambda: "SHUTDOWN_COMMAND" in log.read_text(), "SHUTDOWN_COMMAND once the command exited")
        types = [json.loads(line)["type"] for line in log.read_text().splitlines()]
        sequence = [t for t in types if t in ("SHUTDOWN_STARTED", "FSD_SET", "SHUTDOWN_COMMAND")]
        assert sequence == ["SHUTDOWN_STARTED", "FSD_SET", "SHUTDOWN_COMMAND"], types
        # done now (SHUTDOWN_COMMAND is logged): a reload changes nothing more
        d.hup()
        d.wait_log("reload: the Pi's shutdown command has run; shutdown: is not changed")
