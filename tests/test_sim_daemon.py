"""`nutups serve --sim` as a user runs it: real upsc and upsrw against the simulated HAT,
the control socket and `nutups sim`, `nutups doctor`."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import USERS
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

from nutups.cli import main
from nutups.doctor import Machine, format_table, run_checks
from nutups.hardware.sim import SimClock, SimSMBus, SimulatedHat
from nutups.hardware.simcontrol import request

needs_upsc = pytest.mark.skipif(not HAVE_REAL_NUT, reason="needs nut-client")


def nutups_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nutups.cli", *args], capture_output=True, text=True,
                          timeout=30, env=env)


@pytest.fixture(scope="module")
def simd():
    """A confpath with one simulated X1202 and users, served by `nutups serve`."""
    base = nut_tmpdir()
    confdir = make_confdir(base / "conf", "[ups]\n driver = x120x\n board = x1202\n sim = yes\n"
                           ' desc = "simulated HAT"\n', "", USERS)
    statepath = base / "state"
    port = free_port()
    err = open(base / "stderr", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "nutups.cli", "serve", "--confpath", str(confdir),
                             "--listen", f"127.0.0.1:{port}", "--statepath", str(statepath), "--datapath", str(statepath) + "-data"],
                            stdout=subprocess.DEVNULL, stderr=err)
    wait_port(port, proc)
    sock = statepath / "nutups-ups.sim"
    poll_until(lambda: unix_socket_answers(sock), "the control socket")
    yield port, statepath, sock, base
    proc.terminate()
    proc.wait(10)
    err.close()


def sim(statepath: Path, *words: str) -> subprocess.CompletedProcess:
    return nutups_cli("sim", "--statepath", str(statepath), *words)


def test_control_socket_is_private(simd):
    _, _, sock, _ = simd
    mode = os.stat(sock).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_control_socket_protocol(simd):
    _, _, sock, _ = simd
    reply = request(sock, {"cmd": "get"})
    assert reply["ok"] is True
    for key in ("ac", "load_w", "soc", "gauge_soc", "voltage", "charging", "i2c_fault", "speed", "clock_s",
                "time_to_empty_s"):
        assert key in reply["state"]
    assert request(sock, {"cmd": "set", "load_w": -1}) == {"ok": False, "error": "load must be from 0 to 50 W"}
    assert request(sock, {"cmd": "set", "volts": 3})["ok"] is False
    assert request(sock, {"cmd": "set", "ac": "no"})["error"] == "ac: true or false"
    assert request(sock, {"cmd": "fly"})["ok"] is False
    with socket.socket(socket.AF_UNIX) as s:  # garbage gets an error, and the socket keeps working
        s.connect(str(sock))
        s.sendall(b"not json\n")
        assert json.loads(s.makefile().readline())["ok"] is False
    assert request(sock, {"cmd": "get"})["ok"] is True


@pytest.mark.realnut
@needs_upsc
def test_upsc_and_mains_loss_through_nutups_sim(simd):
    port, statepath, _, _ = simd
    p = subprocess.run(["upsc", f"ups@127.0.0.1:{port}"], capture_output=True, text=True, timeout=20)
    assert p.returncode == 0
    assert "ups.status: OL" in p.stdout and "battery.charge: 100" in p.stdout and "device.model: X1202" in p.stdout
    r = sim(statepath, "ac", "off")
    assert r.returncode == 0 and "ac" in r.stdout
    # the reply came after the change took effect: the very next read shows it
    p = subprocess.run(["upsc", f"ups@127.0.0.1:{port}", "ups.status"], capture_output=True, text=True, timeout=20)
    assert p.stdout == "OB DISCHRG\n"
    assert sim(statepath, "ac", "on").returncode == 0
    p = subprocess.run(["upsc", f"ups@127.0.0.1:{port}", "ups.status"], capture_output=True, text=True, timeout=20)
    assert p.stdout.startswith("OL")


def test_i2c_fault_via_cli_gives_stale_then_recovers(simd):
    port, statepath, _, base = simd
    assert sim(statepath, "fault", "i2c", "on").returncode == 0
    with RawClient(port) as c:
        assert c.request(b"GET VAR ups ups.status\n") == b"ERR DATA-STALE\n"
        assert sim(statepath, "fault", "i2c", "off").returncode == 0
        assert c.request(b"GET VAR ups ups.status\n").startswith(b'VAR ups ups.status "OL')
    assert "Errno 121" in (base / "stderr").read_text()


@pytest.mark.realnut
@needs_upsc
def test_upsrw_list_and_set(simd):
    port, _, _, _ = simd
    p = subprocess.run(["upsrw", f"ups@127.0.0.1:{port}"], capture_output=True, text=True, timeout=20)
    assert p.returncode == 0
    assert "[battery.charge.low]" in p.stdout and "[experimental.battery.charge.stop]" in p.stdout
    p = subprocess.run(["upsrw", "-s", "battery.charge.low=25", "-u", "admin", "-p", "adminpass",
                        f"ups@127.0.0.1:{port}"], capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    poll_until(lambda: subprocess.run(["upsc", f"ups@127.0.0.1:{port}", "battery.charge.low"],
                                      capture_output=True, text=True).stdout == "25\n", "the SET to take effect")
    p = subprocess.run(["upsrw", "-s", "battery.charge.low=250", "-u", "admin", "-p", "adminpass",
                        f"ups@127.0.0.1:{port}"], capture_output=True, text=True, timeout=20)
    assert p.returncode != 0 and "INVALID-VALUE" in p.stderr


def test_sim_cli_errors(simd, tmp_path):
    _, statepath, _, _ = simd
    r = sim(statepath, "load", "lots")
    assert r.returncode != 0 and "not a number" in r.stderr
    r = sim(statepath, "fly")
    assert r.returncode != 0 and "expected:" in r.stderr
    r = sim(tmp_path, "status")
    assert r.returncode != 0 and "no simulator at" in r.stderr and "Traceback" not in r.stderr
    r = sim(statepath, "speed", "0")
    assert r.returncode != 0 and "speed must be" in r.stderr


def test_outage_at_high_speed_through_nut(simd):
    """OL -> OB -> LB seen by a NUT client while the simulator runs 3000x, then OL with the charger
    resting (battery_rest, docs/battery.md: the pack's resting voltage measures what the outage took)."""
    port, statepath, _, _ = simd
    assert sim(statepath, "soc", "40").returncode == 0
    assert sim(statepath, "load", "10").returncode == 0
    assert sim(statepath, "ac", "off").returncode == 0
    with RawClient(port) as c:
        assert c.request(b"GET VAR ups ups.status\n") == b'VAR ups ups.status "OB DISCHRG"\n'
        assert sim(statepath, "speed", "3000").returncode == 0
        poll_until(lambda: c.request(b"GET VAR ups ups.status\n") == b'VAR ups ups.status "OB DISCHRG LB"\n',
                   "LB", timeout=60)
        assert sim(statepath, "speed", "1").returncode == 0
        assert sim(statepath, "ac", "on").returncode == 0
        assert c.request(b"GET VAR ups ups.status\n") == b'VAR ups ups.status "OL"\n'
        assert c.request(b"GET VAR ups battery.charger.status\n") == b'VAR ups battery.charger.status "resting"\n'
    assert sim(statepath, "soc", "100").returncode == 0


def test_embedded_default_serves_a_simulated_x1202(tmp_path):
    """`nutups serve --sim` with no configuration at all: UPS `ups` on the given address."""
    port = free_port()
    env = dict(os.environ, NUT_CONFPATH=str(tmp_path / "no-such-dir"))
    env.pop("NUT_STATEPATH", None)
    proc = subprocess.Popen([sys.executable, "-m", "nutups.cli", "serve", "--sim", "--listen",
                             f"127.0.0.1:{port}", "--statepath", str(tmp_path / "st"), "--datapath", str(tmp_path / "st") + "-data"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port, proc)
        with RawClient(port) as c:
            assert c.request(b"LIST UPS\n") == (
                b'BEGIN LIST UPS\nUPS ups "Geekworm X1202 UPS HAT (simulated)"\nEND LIST UPS\n')
            poll_until(lambda: c.request(b"GET VAR ups ups.status\n") == b'VAR ups ups.status "OL"\n', "data")
        assert (tmp_path / "st" / "nutups-ups.sim").exists()
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.machine_dependent
def test_doctor_on_this_machine_says_no_hat():
    r = CliRunner().invoke(main, ["doctor"])
    if Path("/dev/i2c-1").exists():
        pytest.skip("this machine has an I2C bus")
    assert r.exit_code == 1
    assert "FAIL  I2C bus /dev/i2c-1" in r.output
    assert "No X120X HAT was found on this machine" in r.output
    assert "dtparam=i2c_arm=on" in r.output


def test_doctor_passes_on_a_well_set_up_pi(tmp_path):
    hat = SimulatedHat("x1202", clock=SimClock())
    boot = tmp_path / "config.txt"
    boot.write_text("[all]\ndtparam=i2c_arm=on\ngpio=6=ip,pu\n")
    checks = run_checks(Machine(dev=tmp_path, sys=tmp_path, boot_configs=(str(boot),), user="root",
                                open_bus=lambda n: SimSMBus(hat, n), gpiod=hat.gpio,
                                gpiochips=["/dev/gpiochip0"]))
    table = format_table(checks)
    assert all(c.ok is not False for c in checks), table
    assert "MAX17048: 4.20 V" in table and "/dev/gpiochip0 offset 6" in table


def test_doctor_names_each_fix(tmp_path):
    hat = SimulatedHat("x1202", clock=SimClock())
    hat.i2c_fault = True
    boot = tmp_path / "config.txt"
    boot.write_text("dtoverlay=i2c-sensor,max17040\n")
    checks = run_checks(Machine(dev=tmp_path, sys=tmp_path, boot_configs=(str(boot),), user="nobody",
                                open_bus=lambda n: SimSMBus(hat, n), gpiod=hat.gpio,
                                gpiochips=["/dev/gpiochip0"]))
    failed = {c.name: c.fix for c in checks if c.ok is False}
    assert "badly seated" in failed["fuel gauge at 0x36"]
    assert "usermod -aG i2c,gpio nobody" in failed["groups i2c, gpio"]
    assert "dtparam=i2c_arm=on" in failed[f"{boot}: dtparam=i2c_arm=on"]
    assert "kernel driver owns the gauge" in failed["no kernel gauge overlay"]


def test_config_check_validates_driver_options():
    confdir = make_confdir(nut_tmpdir(), "[ups]\n driver = x120x\n board = x9999\n sim = yes\n"
                           "[b]\n driver = x120x\n pollinterval = fast\n[c]\n driver = x120x\n pld_active = up\n",
                           "", "")
    r = nutups_cli("config", "check", "--confpath", str(confdir))
    assert r.returncode == 1
    assert f"{confdir}/ups.conf:1: [ups] board = x9999: unknown" in r.stderr
    assert f"{confdir}/ups.conf:5: [b] pollinterval = 'fast': not a number" in r.stderr
    assert f"{confdir}/ups.conf:8: [c] pld_active = up: high or low" in r.stderr


def test_sighup_reloads_users():
    import signal

    base = nut_tmpdir()
    confdir = make_confdir(base / "conf", "[ups]\n driver = x120x\n sim = yes\n", "",
                           "[admin]\n password = old\n actions = SET\n")
    port = free_port()
    err = open(base / "stderr", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "nutups.cli", "serve", "--confpath", str(confdir),
                             "--listen", f"127.0.0.1:{port}", "--statepath", str(base / "state"), "--datapath", str(base / "state") + "-data"],
                            stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_port(port, proc)
        set_ok = b"USERNAME admin\nPASSWORD new\nSET VAR ups battery.charge.low 30\n"
        with RawClient(port) as c:
            poll_until(lambda: c.request(b"GET VAR ups ups.status\n").startswith(b"VAR"), "data")
        with RawClient(port) as c:
            assert c.session(set_ok).endswith(b"ERR ACCESS-DENIED\n")
        (confdir / "upsd.users").write_text("[admin]\n password = new\n actions = SET\n")
        proc.send_signal(signal.SIGHUP)
        poll_until(lambda: "reload: 1 user(s)" in (base / "stderr").read_text(), "the reload")
        with RawClient(port) as c:
            assert c.session(set_ok) == b"OK\nOK\nOK\n"
        (confdir / "upsd.users").write_text("[admin]\n password = \"unclosed # quote\n")
        proc.send_signal(signal.SIGHUP)
        poll_until(lambda: "keeping the users already loaded" in (base / "stderr").read_text(), "a refused reload")
        with RawClient(port) as c:
            assert c.session(set_ok) == b"OK\nOK\nOK\n"
    finally:
        proc.terminate()
        proc.wait(10)
        err.close()
