"""The Pi 5 PMIC as a load meter: `vcgencmd pmic_read_adc` in its published format, through a fake
vcgencmd on PATH and through the simulator, and what the estimator makes of it."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import USERS
from nutprocs import RawClient, free_port, make_confdir, nut_tmpdir, poll_until, wait_port
from runtime_trials import CELLS_DIR, ManualTime, load_cell

from nutups.config.nutconf import UpsSection
from nutups.drivers.base import DriverError
from nutups.drivers.x120x import X120xDriver
from nutups.hardware.backend import Hardware, SimulatedHardware
from nutups.hardware.pmic import PmicError, PmicLoadMeter, parse_pmic_adc
from nutups.hardware.sim import SimClock, SimulatedHat
from nutups.hardware.simcontrol import request
from nutups.state import UpsState

# `vcgencmd pmic_read_adc` on a Raspberry Pi 5, as published (a Pi 5 monitoring project's
# recorded output, "verified on physical hardware"): current channels first, then voltages,
# names right-aligned, EXT5V (the 5 V input) with a voltage channel only.
PI5_OUTPUT = """\
 3V7_WL_SW_A current(0)=0.10247270A
   3V3_SYS_A current(1)=0.10832820A
   1V8_SYS_A current(2)=0.15712470A
  DDR_VDD2_A current(3)=0.00585558A
  DDR_VDDQ_A current(4)=0.00000000A
   1V1_SYS_A current(5)=0.24105470A
    0V8_SW_A current(6)=0.31424950A
  VDD_CORE_A current(7)=1.42880000A
   3V3_DAC_A current(17)=0.00000000A
   3V3_ADC_A current(18)=0.00006105A
   0V8_AON_A current(16)=0.00354090A
      HDMI_A current(22)=0.02002440A
 3V7_WL_SW_V volt(8)=3.71091200V
   3V3_SYS_V volt(9)=3.30910500V
   1V8_SYS_V volt(10)=1.80073100V
  DDR_VDD2_V volt(11)=1.10439400V
  DDR_VDDQ_V volt(12)=0.60439500V
   1V1_SYS_V volt(13)=1.10805800V
    0V8_SW_V volt(14)=0.80402850V
  VDD_CORE_V volt(15)=0.90659250V
   3V3_DAC_V volt(20)=3.31135200V
   3V3_ADC_V volt(21)=3.31867800V
   0V8_AON_V volt(19)=0.79882700V
      HDMI_V volt(23)=5.07860000V
     EXT5V_V volt(24)=5.05716000V
      BATT_V volt(25)=0.00000000V
"""
# Worked by hand from the lines above: VDD_CORE 0.9066 V x 1.4288 A = 1.2953 W, 0V8_SW 0.2527 W,
# 1V1_SYS 0.2671 W, 3V7_WL_SW 0.3803 W, 3V3_SYS 0.3585 W, 1V8_SYS 0.2829 W, HDMI 0.1017 W,
# DDR_VDD2 0.0065 W, 0V8_AON 0.0028 W, 3V3_ADC 0.0002 W: 2.948 W on the rails; with the published
# correction (1.1451 x sum + 0.5879 W) 3.964 W at the 5 V input.
PI5_RAILS_W = 2.948
PI5_INPUT_W = 3.964

# A Pi 4's firmware has no such command: vcgencmd answers on stdout and exits 0.
PI4_OUTPUT = 'error=1 error_msg="Command not registered"\n'


def fake_vcgencmd(tmp_path: Path, body: str) -> Path:
    """A `vcgencmd` on PATH: a shell script answering `pmic_read_adc` with ``body``'s commands."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "output.txt").write_text(PI5_OUTPUT)
    (bindir / "pi4.txt").write_text(PI4_OUTPUT)
    script = bindir / "vcgencmd"
    script.write_text(f'#!/bin/sh\nHERE=$(dirname "$0")\n[ "$1" = pmic_read_adc ] || exit 2\n{body}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bindir


def test_published_pi5_output_parses_to_the_hand_worked_figures():
    reading = parse_pmic_adc(PI5_OUTPUT)
    assert reading.input_volts == pytest.approx(5.05716)
    assert reading.rails_watts() == pytest.approx(PI5_RAILS_W, abs=0.001)
    assert reading.input_watts() == pytest.approx(PI5_INPUT_W, abs=0.001)


def test_an_input_current_channel_wins_over_the_rail_sum():
    reading = parse_pmic_adc(PI5_OUTPUT + "     EXT5V_A current(25)=0.90000000A\n")
    assert reading.input_watts() == pytest.approx(5.05716 * 0.9)


def test_fake_vcgencmd_on_path_is_found_and_read(tmp_path, monkeypatch):
    bindir = fake_vcgencmd(tmp_path, 'cat "$HERE/output.txt"')
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    meter = PmicLoadMeter.on_this_machine()
    assert meter is not None and meter.vcgencmd == str(bindir / "vcgencmd")
    assert asyncio.run(meter.read_watts()) == pytest.approx(PI5_INPUT_W, abs=0.001)


def test_no_vcgencmd_no_meter(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert PmicLoadMeter.on_this_machine() is None


@pytest.mark.parametrize("body, said", [
    ('cat "$HERE/pi4.txt"', r"no rail currents \(it said: error=1 .*Command not registered.*only a Raspberry Pi 5"),
    ('echo "VCHI initialization failed" >&2; exit 255', r"pmic_read_adc failed: VCHI initialization failed"),
    ("exec sleep 30", r"no answer within 0.5 s"),
])
def test_vcgencmd_failures_are_said_in_words(tmp_path, body, said):
    bindir = fake_vcgencmd(tmp_path, body)
    meter = PmicLoadMeter(vcgencmd=str(bindir / "vcgencmd"), timeout=0.5)
    with pytest.raises(PmicError, match=said):
        asyncio.run(meter.read_watts())


# --- through the simulator and the driver ---------------------------------------------------

PUBLISHED_LINE = re.compile(r"^ *[A-Z0-9_]+_(A current\(\d+\)=\d+\.\d{8}A|V volt\(\d+\)=\d+\.\d{8}V)$")


def sim_driver(options: dict[str, str], load_w: float = 6.0, hardware: bool = True):
    time = ManualTime()
    clock = SimClock(1.0, source=time)
    hat = SimulatedHat("x1202", clock=clock, load_w=load_w, cell=load_cell("nca-kim2011"))
    state = UpsState("ups", clock=clock)
    driver = X120xDriver(state, UpsSection("ups", 0, "x120x", None, None, {"sim": "yes", **options}), Path("."),
                         clock=clock, hardware=SimulatedHardware(hat) if hardware else Hardware(clock))
    driver._init_variables()
    state.connected = True
    return time, hat, state, driver


@pytest.mark.parametrize("load_w", [0.8, 2.7, 6.0, 12.5])
def test_the_simulated_pmic_prints_the_published_format_and_the_load(load_w):
    hat = SimulatedHat("x1202", load_w=load_w)
    text = hat.pmic_read_adc()
    assert all(PUBLISHED_LINE.match(line) for line in text.splitlines()), text
    assert [line.split()[0] for line in text.splitlines()] == [line.split()[0] for line in PI5_OUTPUT.splitlines()]
    assert parse_pmic_adc(text).input_watts() == pytest.approx(load_w, abs=0.001)


def test_the_driver_reads_the_simulated_pmic_into_the_estimate_and_ups_realpower():
    time, hat, state, driver = sim_driver({"load_w": "3"}, load_w=6.0)  # the prior says 3 W; the Pi draws 6
    asyncio.run(driver.measure_load())
    driver.poll()
    assert state.value("ups.realpower") == "6.0"
    assert driver.estimator.prior_power() == pytest.approx(6.0 / 0.9, rel=0.001)
    hat.set(load_w=9.0)
    time.t += 5
    asyncio.run(driver.measure_load())  # within LOAD_INTERVAL_S: vcgencmd is not run again
    driver.poll()
    assert state.value("ups.realpower") == "6.0"
    time.t += 10
    asyncio.run(driver.measure_load())
    driver.poll()
    assert state.value("ups.realpower") == "9.0"


def test_load_meter_none_leaves_the_prior():
    _, _, state, driver = sim_driver({"load_w": "3", "load_meter": "none"})
    asyncio.run(driver.measure_load())
    driver.poll()
    assert state.value("ups.realpower") is None and driver.estimator.prior_power() == pytest.approx(3 / 0.9)


def test_bad_load_meter_option_is_explained():
    with pytest.raises(DriverError, match=r"\[ups\] load_meter = ina219: one of auto, pmic, none"):
        sim_driver({"load_meter": "ina219"})


def test_the_driver_on_a_pi5_reads_vcgencmd_from_path(tmp_path, monkeypatch):
    bindir = fake_vcgencmd(tmp_path, 'cat "$HERE/output.txt"')
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    _, _, state, driver = sim_driver({"load_meter": "pmic"}, hardware=False)
    asyncio.run(driver.measure_load())
    assert driver.estimator.measured_load() == pytest.approx(PI5_INPUT_W, abs=0.001)
    assert driver.load_w == pytest.approx(PI5_INPUT_W, abs=0.001)


def test_a_pi4_with_auto_says_so_once_and_stops_asking(tmp_path, monkeypatch, caplog):
    bindir = fake_vcgencmd(tmp_path, 'echo run >> "$HERE/runs"; cat "$HERE/pi4.txt"')
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    time, _, _, driver = sim_driver({}, hardware=False)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            asyncio.run(driver.measure_load())
            time.t += 60
    said = [r.getMessage() for r in caplog.records if "load meter" in r.getMessage()]
    assert len(said) == 1 and "only a Raspberry Pi 5" in said[0] and "load prior" in said[0], said
    assert (bindir / "runs").read_text() == "run\n"
    assert driver.estimator.measured_load() is None


def test_an_explicit_pmic_that_fails_is_an_error_once_and_retried(tmp_path, monkeypatch, caplog):
    bindir = fake_vcgencmd(tmp_path, 'echo run >> "$HERE/runs"; cat "$HERE/pi4.txt"')
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    time, _, _, driver = sim_driver({"load_meter": "pmic"}, hardware=False)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            asyncio.run(driver.measure_load())
            time.t += 60
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "only a Raspberry Pi 5" in errors[0].getMessage()
    assert (bindir / "runs").read_text() == "run\n" * 3


# --- the daemon, as a user runs it ------------------------------------------------------------


def test_daemon_serves_the_pmic_load_and_a_runtime_from_it():
    base = nut_tmpdir("nutups-pmic-")
    confdir = make_confdir(base / "conf", "[ups]\n driver = x120x\n board = x1202\n sim = yes\n sim_load_w = 7.5\n"
                           " load_w = 3\n sim_cell = cell.csv\n", "", USERS,
                           files={"cell.csv": (CELLS_DIR / "nca-kim2011.csv").read_text()})
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nutups.cli", "serve", "--confpath", str(confdir), "--listen",
                             f"127.0.0.1:{port}", "--statepath", str(base / "state")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        sock = base / "state" / "nutups-ups.sim"
        poll_until(sock.exists, "the control socket")
        with RawClient(port) as nut:
            poll_until(lambda: b'"7.5"' in nut.request(b"GET VAR ups ups.realpower\n"), "ups.realpower")
            reply = request(sock, {"cmd": "set", "ac": False})
            assert reply["ok"] and reply["state"]["cell"] == "cell"
            true = reply["state"]["time_to_empty_s"]
            runtime = float(nut.request(b"GET VAR ups battery.runtime\n").split(b'"')[1])
        # the prior (3 W) would say 2.5 times the truth; the PMIC's 7.5 W gives it within 15 %
        assert runtime == pytest.approx(true, rel=0.15)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(base, ignore_errors=True)


# --- a plug's energy meter on the HAT's supply (integrations.ac_devices: feeds:) -------------------

DOE_LEVEL_VI_27W = 0.0834 * math.log(27) - 0.0014 * 27 + 0.609  # 10 CFR 430 App. Z, 15-49 W supplies


def test_a_plug_meter_on_mains_with_the_charger_idle_sets_the_load_the_outage_starts_from():
    time, hat, state, driver = sim_driver({"load_w": "3", "load_meter": "none"}, load_w=7.0)
    driver.poll()  # full, on mains: the charger is idle
    assert "CHRG" not in state.value("ups.status")
    wall = 7.0 / DOE_LEVEL_VI_27W
    for _ in range(5):
        driver.mains_meter(wall)
    assert driver.estimator.prior_power() == pytest.approx(7.0 / 0.9, rel=0.01)  # 0.9: the HAT's boost


def test_a_plug_meter_says_nothing_while_charging_or_on_battery():
    time, hat, state, driver = sim_driver({"load_w": "3", "load_meter": "none"}, load_w=7.0)
    hat.set(soc=60.0)
    driver.poll()
    assert "CHRG" in state.value("ups.status")
    driver.mains_meter(25.0)  # the charger's draw is in it
    assert driver.estimator.prior_power() == pytest.approx(3 / 0.9)
    hat.set(ac=False)
    driver.on_edge()
    driver.poll()
    driver.mains_meter(8.0)  # a plug on battery: a real one has no power either
    assert driver.estimator.prior_power() == pytest.approx(3 / 0.9)


def test_daemon_takes_the_load_from_the_plug_that_feeds_the_hat():
    """The prior says 3 W, the Pi draws 7.5 W, no PMIC: the Shelly plug the HAT's supply is
    plugged into (a fake one on loopback) reads the wall power; the runtime at the start of the
    outage comes out near the simulated battery's true time to empty."""
    from test_event_chain import ShellyThread

    shelly = ShellyThread()
    shelly.fake.on = True
    shelly.fake.power_w = round(7.5 / DOE_LEVEL_VI_27W, 1)
    base = nut_tmpdir("nutups-plugload-")
    yaml = ("integrations:\n  device_poll: 1\n  ac_devices:\n"
            f"    - {{type: shelly, name: pi_supply, host: 127.0.0.1, port: {shelly.fake.port}, gen: 2, feeds: ups}}\n")
    confdir = make_confdir(base / "conf", "[ups]\n driver = x120x\n board = x1202\n sim = yes\n sim_load_w = 7.5\n"
                           " load_w = 3\n load_meter = none\n sim_cell = cell.csv\n", "", USERS,
                           files={"cell.csv": (CELLS_DIR / "nca-kim2011.csv").read_text(), "nutups.yaml": yaml})
    port = free_port()
    err = open(base / "stderr", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "nutups.cli", "serve", "--confpath", str(confdir), "--listen",
                             f"127.0.0.1:{port}", "--statepath", str(base / "state"), "--datapath",
                             str(base / "data")], stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_port(port, proc)
        sock = base / "state" / "nutups-ups.sim"
        poll_until(sock.exists, "the control socket")
        with RawClient(port) as nut:
            # a few of the plug's readings (one a second), then mains goes
            poll_until(lambda: sum("Switch.GetStatus" in c for c in shelly.fake.calls) >= 3, "three plug readings")
            assert b'"OL"' in nut.request(b"GET VAR ups ups.status\n")  # full: the charger is idle
            reply = request(sock, {"cmd": "set", "ac": False})
            true = reply["state"]["time_to_empty_s"]
            poll_until(lambda: b"OB" in nut.request(b"GET VAR ups ups.status\n"), "on battery")
            runtime = float(nut.request(b"GET VAR ups battery.runtime\n").split(b'"')[1])
        log = (base / "stderr").read_text()
        assert "pi_supply's energy meter is the load of [ups] on mains" in log
        # the prior (3 W) would say 2.5 times the truth; the plug's reading gives it within 15 %
        assert runtime == pytest.approx(true, rel=0.15), (runtime, true)
    finally:
        proc.terminate()
        proc.wait(10)
        err.close()
        shelly.stop()
        shutil.rmtree(base, ignore_errors=True)
