"""The X120X driver over the simulated HAT: gauge registers, GPIO adapters, the driver's
judgement (LB, runtime, charge window), faults and recovery."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import select
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nutups.config.nutconf import UpsSection
from nutups.debounce import Debounce
from nutups.drivers.estimation import ChargeWindow, RuntimeEstimator, theil_sen_slope
from nutups.drivers.x120x import X120xDriver
from nutups.hardware.backend import SimulatedHardware
from nutups.hardware.boards import ocv, soc_at_ocv
from nutups.hardware.gauge import (
    FuelGauge,
    GaugeError,
    ImplausibleReading,
    chip_from_version,
    crate_percent_per_hour,
    soc_percent,
    swap16,
    vcell_volts,
)
from nutups.hardware.gpio import ChargeControl, GpioError, PowerLossLine, find_chip
from nutups.hardware.sim import CHARGE_OFFSET, PLD_OFFSET, SimClock, SimSMBus, SimulatedHat
from nutups.nut.descriptions import Descriptions
from nutups.nut.protocol import ServerCore
from nutups.nut.users import UserTable
from nutups.state import CommandResult, UpsState


class ManualTime:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(chip="MAX17048", options=None, statepath=None, board="x1202"):
    src = ManualTime()
    clock = SimClock(1.0, source=src)
    hat = SimulatedHat(board, clock=clock, chip=chip)
    state = UpsState("ups", clock=clock)
    opts = {"sim": "yes", "board": board, **(options or {})}
    driver = X120xDriver(state, UpsSection("ups", 0, "x120x", None, None, opts), Path("."), clock=clock,
                         statepath=statepath, hardware=SimulatedHardware(hat))
    driver._init_variables()
    state.connected = True
    return src, hat, state, driver


def run_until(src, driver, seconds, step=2.0):
    end = src.t + seconds
    while src.t < end:
        src.t += step
        driver.poll()


# --- gauge registers ---------------------------------------------------------


class BytesBus:
    """An smbus2-like bus answering fixed register bytes (as the chip sends them: MSB first)."""

    def __init__(self, regs: dict[int, int]) -> None:
        self.regs = regs

    def read_i2c_block_data(self, addr, reg, length, force=None):
        v = self.regs[reg]
        return [v >> 8, v & 0xFF][:length]

    def close(self):
        pass


@pytest.mark.parametrize("version,chip,vcell", [
    (0x0002, "MAX17040/43", 0xD200), (0x0003, "MAX17040/43", 0xD200), (0x0012, "MAX17048", 0xD200),
])
def test_register_conversions_per_chip(version, chip, vcell):
    g = FuelGauge(BytesBus({0x08: version, 0x02: vcell, 0x04: 0x5780, 0x16: 0xFFE0}))
    assert g.identify() == chip
    r = g.read()
    # 0xD200: 3360 x 1.25 mV (12-bit, left-aligned) == 53760 x 78.125 uV == 4.2 V
    assert r.voltage == pytest.approx(4.2)
    assert r.soc == pytest.approx(87.5)  # 0x57 = 87 %, 0x80 = half a percent
    assert (r.crate is not None) == (chip == "MAX17048")
    if r.crate is not None:
        assert r.crate == pytest.approx(-32 * 0.208)


def test_soc_above_100_is_clamped_and_nonsense_rejected():
    g = FuelGauge(BytesBus({0x08: 0x12, 0x02: 0xD900, 0x04: 106 << 8, 0x16: 0}))
    r = g.read()
    assert r.soc == 100.0 and r.raw_soc == 106.0
    g = FuelGauge(BytesBus({0x08: 0x12, 0x02: 0xD900, 0x04: 200 << 8, 0x16: 0}))
    with pytest.raises(ImplausibleReading):
        g.read()
    g = FuelGauge(BytesBus({0x08: 0x12, 0x02: 0x1000, 0x04: 50 << 8, 0x16: 0}))
    with pytest.raises(ImplausibleReading):
        g.read()


@pytest.mark.parametrize("chip", ["MAX17040", "MAX17043", "MAX17048"])
def test_simulated_registers_byte_order(chip):
    hat = SimulatedHat("x1202", chip=chip, clock=SimClock(1.0, source=ManualTime()))
    bus = SimSMBus(hat)
    for reg in (0x02, 0x04, 0x08):
        block = bus.read_i2c_block_data(0x36, reg, 2)
        word = bus.read_word_data(0x36, reg)
        # smbus2's read_word_data hands the big-endian register back byte-swapped
        assert swap16(word) == (block[0] << 8) | block[1]
    r = FuelGauge(bus).read()
    assert r.voltage == pytest.approx(hat.model.voltage, abs=0.002)
    assert r.soc == pytest.approx(min(hat.model.gauge_soc, 100), abs=0.01)
    assert not hasattr(bus, "write_word_data")  # the simulated bus takes no writes: reading never writes


def test_errno_121_is_explained():
    hat = SimulatedHat("x1202", clock=SimClock(1.0, source=ManualTime()))
    hat.i2c_fault = True
    with pytest.raises(GaugeError) as info:
        FuelGauge(SimSMBus(hat)).read()
    assert info.value.kind == "missing"
    assert "Errno 121" in str(info.value) and "badly seated" in str(info.value)


@given(st.integers(0, 0xFFF))
def test_vcell_same_value_on_both_chip_families(raw12):
    # 1.25 mV in bits 15..4 equals 78.125 uV in bits 15..0
    assert vcell_volts(raw12 << 4, "MAX17040/43") == pytest.approx(vcell_volts(raw12 << 4, "MAX17048"))


@given(st.integers(0, 0xFFFF))
def test_conversions(word):
    assert swap16(swap16(word)) == word
    assert soc_percent(word) == pytest.approx((word >> 8) + (word & 0xFF) / 256)
    assert -0x8000 * 0.208 <= crate_percent_per_hour(word) < 0x8000 * 0.208
    assert chip_from_version(word) in ("MAX17048", "MAX17040/43")


@given(st.floats(0, 100))
def test_ocv_curve_inverts(soc):
    assert soc_at_ocv(ocv(soc)) == pytest.approx(soc, abs=1e-6)


# --- debounce, estimator, window ----------------------------------------------


@settings(max_examples=300)
@given(
    runs=st.lists(st.integers(8, 40), min_size=1, max_size=12),
    noise=st.lists(st.tuples(st.integers(0, 400), st.integers(1, 2)), max_size=20),
)
def test_debounce_gives_one_transition_per_real_crossing(runs, noise):
    """A level alternating in long runs, with glitches shorter than the debounce
    count, changes the debounced value exactly once per real crossing."""
    signal = []
    level = False
    for n in runs:
        signal.extend([level] * n)
        level = not level
    noisy = list(signal)
    last_end = -10
    for pos, length in sorted(noise):
        if pos < last_end + 5:
            continue  # glitches are separate events, each shorter than the debounce count
        last_end = pos + length
        for i in range(pos, min(pos + length, len(noisy))):
            # a glitch flips a reading, but never right at a run boundary
            if 3 <= i < len(signal) - 3 and signal[i - 3] == signal[i] == signal[i + 3]:
                noisy[i] = not signal[i]
    d = Debounce(3, initial=signal[0])
    out = [d.update(x) for x in noisy]
    transitions = sum(1 for a, b in zip(out, out[1:], strict=False) if a != b)
    real = sum(1 for a, b in zip(signal, signal[1:], strict=False) if a != b)
    assert transitions == real


def test_theil_sen_ignores_outliers():
    pts = [(t, 100 - 0.01 * t) for t in range(0, 600, 10)]
    pts[10] = (100, 0.0)
    pts[20] = (200, 300.0)
    assert theil_sen_slope(pts) == pytest.approx(-0.01)


def test_estimator_prior_then_observed_and_learning():
    est = RuntimeEstimator(capacity_ah=12.0, prior_load_w=5.0)
    est.start(0)
    assert est.power() == pytest.approx(5.0 / 0.9)
    for t in range(0, 1200, 2):
        est.add(t, 100 - t * 0.005, 3.9)  # 0.005 %/s of 12 Ah at 3.9 V = 8.4 W
    assert est.power() == pytest.approx(0.005 / 100 * 12 * 3600 * 3.9, rel=0.01)
    est.stop()
    assert est.prior_load_w == pytest.approx(0.005 / 100 * 12 * 3600 * 3.9 * 0.9, rel=0.01)


def test_charge_window():
    w = ChargeWindow(80, 75)
    assert [w.update(s) for s in (70, 79, 80, 78, 76, 75, 79)] == [True, True, False, False, False, True, True]
    assert ChargeWindow(100, 95).update(100) is True


# --- GPIO adapters against the gpiod look-alike ---------------------------------


def test_find_chip_by_label_and_line_name():
    hat = SimulatedHat("x1202", clock=SimClock(1.0, source=ManualTime()))
    assert find_chip(hat.gpio, "GPIO6", None, ["/dev/gpiochip0"]) == ("/dev/gpiochip0", 6)
    assert find_chip(hat.gpio, "16", "pinctrl-rp1", ["/dev/gpiochip0"]) == ("/dev/gpiochip0", 16)
    with pytest.raises(GpioError, match="no gpiochip"):
        find_chip(hat.gpio, "GPIO6", "pinctrl-bcm2711", ["/dev/gpiochip0"])


def test_pld_edges_on_a_readable_fd_and_polarity():
    hat = SimulatedHat("x1202", clock=SimClock(1.0, source=ManualTime()))
    line = PowerLossLine(hat.gpio, "/dev/gpiochip0", PLD_OFFSET)
    assert line.read() is True
    assert select.select([line.fd], [], [], 0)[0] == []
    hat.set(ac=False)
    assert select.select([line.fd], [], [], 0)[0] == [line.fd]
    assert line.read_events() == [False]
    assert select.select([line.fd], [], [], 0)[0] == []
    hat.set(ac=True)
    hat.set(ac=False)
    assert line.read_events() == [True, False]
    line.close()
    inverted = PowerLossLine(hat.gpio, "/dev/gpiochip0", PLD_OFFSET, active_high=False)  # X728 style
    assert inverted.read() is True  # line low = mains present on those boards
    inverted.close()


def test_charge_control_holds_the_line_while_disabled():
    hat = SimulatedHat("x1202", clock=SimClock(1.0, source=ManualTime()), soc=50)
    cc = ChargeControl(hat.gpio, "/dev/gpiochip0", CHARGE_OFFSET)
    assert hat.gpio.charge_enabled()
    cc.disable_charging()
    assert not hat.gpio.charge_enabled() and not cc.charging_enabled
    hat.set()
    assert not hat.model.charging
    cc.enable_charging()  # releasing the line re-enables the charger
    assert hat.gpio.charge_enabled()
    hat.set()
    assert hat.model.charging


def test_busy_line_is_explained():
    hat = SimulatedHat("x1202", clock=SimClock(1.0, source=ManualTime()))
    first = PowerLossLine(hat.gpio, "/dev/gpiochip0", PLD_OFFSET)
    with pytest.raises(GpioError, match="in use by another program"):
        PowerLossLine(hat.gpio, "/dev/gpiochip0", PLD_OFFSET)
    first.close()


def test_permission_denied_on_chip_is_explained():
    class DeniedGpiod:
        def is_gpiochip_device(self, path):
            return True

        def Chip(self, path):  # noqa: N802
            raise OSError(errno.EACCES, "Permission denied")

    with pytest.raises(GpioError, match="gpio group"):
        find_chip(DeniedGpiod(), "GPIO6", None, ["/dev/gpiochip0"])


# --- the driver -----------------------------------------------------------------


def test_variables_and_status():
    src, hat, state, driver = make()
    driver.poll()
    assert state.value("ups.status") == "OL"
    assert state.value("battery.charge") == "100"
    assert state.value("battery.voltage") == "4.20"
    assert state.value("experimental.gauge.chip") == "MAX17048"
    assert state.get("battery.charge.low").rw and state.get("battery.charge.low").ranges == [(0, 100)]
    assert not state.stale


def test_pld_edge_reaches_ups_status_through_the_fd():
    """The event loop watches the PLD request's fd; no poll is needed for OB."""
    src, hat, state, driver = make()

    async def go():
        driver.poll()
        driver._watch_edges()
        hat.set(ac=False)
        await asyncio.wait_for(driver.edge_seen.wait(), 5)
        assert state.value("ups.status") == "OB DISCHRG"
        driver.edge_seen.clear()
        hat.set(ac=True)
        await asyncio.wait_for(driver.edge_seen.wait(), 5)
        assert state.value("ups.status").startswith("OL")
        driver._close_hardware()

    asyncio.run(go())


def test_i2c_fault_gives_data_stale_then_recovers(caplog):
    caplog.set_level(logging.INFO)
    src, hat, state, driver = make()
    core = ServerCore({"ups": state}, UserTable(), Descriptions({}, {}), clock=state.clock)
    s = core.session("x")
    driver.poll()
    assert s.receive(b"GET VAR ups ups.status\n") == b'VAR ups ups.status "OL"\n'
    hat.set(i2c_fault=True)
    src.t += 2
    driver.poll()
    assert s.receive(b"GET VAR ups ups.status\n") == b"ERR DATA-STALE\n"
    src.t += 2
    driver.poll()  # the same problem is logged once, not every poll
    assert sum("Errno 121" in r.message for r in caplog.records) == 1
    hat.set(i2c_fault=False)
    src.t += 2
    driver.poll()
    assert s.receive(b"GET VAR ups ups.status\n") == b'VAR ups ups.status "OL"\n'
    assert any("works again" in r.message for r in caplog.records)


def test_full_outage_ol_ob_lb_and_back():
    src, hat, state, driver = make(options={"load_w": "7"})
    hat.set(load_w=7.0)
    driver.poll()
    assert state.value("ups.status") == "OL"
    hat.set(ac=False)
    driver.on_edge()
    assert state.value("ups.status") == "OB DISCHRG"
    seen = []
    while "LB" not in state.value("ups.status"):
        run_until(src, driver, 60, step=5)
        seen.append(state.value("ups.status"))
        assert src.t < 12 * 3600, "never reached LB"
    # LB only once the charge or runtime is below its limit
    charge = float(state.value("battery.charge"))
    runtime = float(state.value("battery.runtime"))
    assert charge < 20 + 2 or runtime < 300 + 60
    assert state.value("ups.status") == "OB DISCHRG LB"
    hat.set(ac=True)
    driver.on_edge()
    assert state.value("ups.status") == "OL CHRG"
    run_until(src, driver, 600, step=10)
    assert float(state.value("battery.charge")) > charge


def test_lb_is_debounced_against_one_noisy_reading():
    src, hat, state, driver = make(options={"critical_voltage": "3.5"})
    hat.set(soc=60)
    hat.set(ac=False)
    driver.on_edge()
    driver.poll()
    real = driver.gauge.read
    from nutups.hardware.gauge import GaugeReading

    driver.gauge.read = lambda: GaugeReading(3.2, 60, 60, None)  # one dip below critical
    driver.poll()
    driver.gauge.read = real
    driver.poll()
    driver.poll()
    assert "LB" not in state.value("ups.status")


def test_charge_window_holds_between_marks(tmp_path):
    src, hat, state, driver = make(statepath=tmp_path)
    hat.set(soc=60)
    driver.poll()
    assert driver.set_var("experimental.battery.charge.stop", "70") == CommandResult.INVALID_ARGUMENT  # < start
    assert driver.set_var("experimental.battery.charge.start", "75") == CommandResult.SUCCESS
    assert driver.set_var("experimental.battery.charge.stop", "80") == CommandResult.SUCCESS
    assert driver.set_var("experimental.battery.charge.start", "90") == CommandResult.INVALID_ARGUMENT
    charges = []
    for _ in range(8 * 60):  # eight hours, a reading every minute
        run_until(src, driver, 60, step=20)
        charges.append(hat.model.gauge_soc)
        if len(charges) == 180:
            hat.set(load_w=0.0)  # nothing drains it: the window must hold by itself
    top = max(charges[60:])
    assert 79.0 <= top <= 81.5
    assert min(charges[120:]) >= 74.0
    assert state.value("battery.charger.status") in ("resting", "charging")
    # persisted
    saved = (tmp_path / "nutups-ups.json").read_text()
    assert '"experimental.battery.charge.stop": 80' in saved


def test_settings_survive_restart(tmp_path):
    src, hat, state, driver = make(statepath=tmp_path)
    assert driver.set_var("battery.charge.low", "33") == CommandResult.SUCCESS
    assert driver.set_var("battery.runtime.low", "1e9") == CommandResult.INVALID_ARGUMENT
    _, _, state2, _ = make(statepath=tmp_path)
    assert state2.value("battery.charge.low") == "33"


def test_runtime_estimate_converges_within_15_percent_from_5_minutes():
    src, hat, state, driver = make()  # prior: 5 W; the real load is 7.5 W
    hat.set(load_w=7.5)
    hat.set(ac=False)
    driver.on_edge()
    errors = {}
    for minute in range(1, 31):
        run_until(src, driver, 60)
        true = hat.state()["time_to_empty_s"]
        errors[minute] = abs(float(state.value("battery.runtime")) - true) / true
    assert all(errors[m] < 0.15 for m in range(5, 31)), errors


def test_pld_floating_high_while_discharging_raises_alarm():
    """PLD says mains, the battery says otherwise (HAT not seated, input dead): ALARM."""
    src, hat, state, driver = make()
    driver.poll()
    hat.model.ac = False  # the pack discharges, but the PLD line stays high
    run_until(src, driver, 900, step=10)
    assert state.value("ups.status").startswith("ALARM OL")
    assert "PLD reports mains present but the charge fell" in state.value("ups.alarm")
    hat.model.ac = True
    run_until(src, driver, 900, step=10)
    assert state.value("ups.alarm") is None and not state.value("ups.status").startswith("ALARM")


@pytest.mark.parametrize("code,kind,fix", [
    (errno.EREMOTEIO, "missing", "badly seated"),
    (errno.EBUSY, "busy", "remove the max17040 battery overlay"),
    (errno.EACCES, "permission", "i2c group"),
    (errno.ENOENT, "nobus", "dtparam=i2c_arm=on"),
])
def test_gauge_faults_each_have_their_fix(code, kind, fix):
    from nutups.hardware.gauge import explain_oserror

    err = explain_oserror(OSError(code, "x"), 1, 0x36)
    assert err.kind == kind and fix in str(err)


def test_control_socket_closes_with_an_idle_client_connected(tmp_path):
    """Python 3.12+: Server.wait_closed() waits for open connections; close() ends them."""
    from nutups.hardware.simcontrol import SimControlServer

    async def go():
        server = SimControlServer(SimulatedHat(), tmp_path / "ups.sim")
        await server.start()
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "ups.sim"))
        writer.write(b'{"cmd": "get"}\n')
        assert b'"ok": true' in await asyncio.wait_for(reader.readline(), 5)  # accepted; now idle
        await asyncio.wait_for(server.close(), 5)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the server hung up on it
        writer.close()
        assert not (tmp_path / "ups.sim").exists()

    asyncio.run(go())


def test_battery_runtime_low_is_what_the_shutdown_needs_unless_set_with_upsrw(tmp_path):
    src, hat, state, driver = make(statepath=tmp_path)
    driver.poll()
    assert state.value("battery.runtime.low") == "300"  # no shutdown policy: the NUT-style default
    driver.shutdown_needs(225)
    assert state.value("battery.runtime.low") == "225"
    assert driver.set_var("battery.runtime.low", "600") == CommandResult.SUCCESS
    driver.shutdown_needs(250)
    assert state.value("battery.runtime.low") == "600"  # set with upsrw: it wins
    _, _, state2, driver2 = make(statepath=tmp_path)  # and it survives a restart
    driver2.shutdown_needs(225)
    assert state2.value("battery.runtime.low") == "600"


def test_lb_comes_from_the_runtime_not_from_the_gauges_percentage():
    """At 15 % on the gauge (under battery.charge.low = 20) with hours of runtime left, no LB; LB once
    the estimate is under what the shutdown needs. battery.charge.low set with upsrw is a trigger again."""
    src, hat, state, driver = make(options={"critical_voltage": "2.8"})
    driver.shutdown_needs(225)
    hat.set(soc=15)
    hat.set(ac=False)
    driver.on_edge()
    run_until(src, driver, 60)
    assert float(state.value("battery.charge")) < 20 and float(state.value("battery.runtime")) > 1800
    assert "LB" not in state.value("ups.status")
    assert driver.set_var("battery.charge.low", "20") == CommandResult.SUCCESS
    run_until(src, driver, 10)
    assert "LB" in state.value("ups.status")
    src2, hat2, state2, driver2 = make(options={"critical_voltage": "2.8"})
    driver2.shutdown_needs(225)
    hat2.set(soc=15)
    hat2.set(ac=False)
    driver2.on_edge()
    driver2.poll()
    while "LB" not in state2.value("ups.status"):
        run_until(src2, driver2, 10)
        assert hat2.model.soc > 0, "no LB before empty"
    assert float(state2.value("battery.runtime")) < 225
    assert hat2.model.time_to_empty() >= 225  # the estimate is not above the truth


def test_settings_from_before_set_with_upsrw_keep_a_value_the_user_changed(tmp_path):
    (tmp_path / "nutups-ups.json").write_text(json.dumps(
        {"battery.charge.low": 20, "battery.runtime.low": 900, "learned_load_w": 5.0}))
    src, hat, state, driver = make(statepath=tmp_path)
    driver.shutdown_needs(225)
    assert driver.user_set == {"battery.runtime.low"}  # 20 was the default, 900 was not
    assert state.value("battery.runtime.low") == "900"
