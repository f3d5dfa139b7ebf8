"""Defects found in review, each driven through the running daemon (`nutups serve` as a subprocess)."""

from __future__ import annotations

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
        events = d.statepath / "ups_events.log"
        sim(d, "temperature", "80")
        (d.confdir / "nutups.yaml").write_text("thresholds: {temperature_high: 70, debounce: 1}\n")
        d.hup()
        d.wait_log("reload: event mapping and thresholds from nutups.yaml")
        sim(d, "temperature", "80.5")  # a fresh reading after the reload
        poll_until(lambda: events.exists() and "TEMPERATURE_HIGH" in events.read_text(), "TEMPERATURE_HIGH")
        assert '"value":80' in events.read_text()
