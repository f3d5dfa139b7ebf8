"""Real cells in the simulator: the replayed curves against PyBaMM's own times and voltages, the
gauge's published under-reading near empty, and bad cell data explained."""

from __future__ import annotations

import pytest
from runtime_trials import AGED_CELL_NAMES, ALL_CELL_NAMES, CELL_NAMES, CELLS_DIR, ManualTime, load_cell

from nutups.config.nutconf import UpsSection
from nutups.drivers.base import DriverError
from nutups.drivers.x120x import X120xDriver
from nutups.hardware.cells import CellCurves, CellDataError
from nutups.hardware.gauge import REG_SOC
from nutups.hardware.sim import SimClock, SimSMBus, SimulatedHat
from nutups.state import UpsState

# The loads of the X1202 (4 x 3 Ah) in the data: 10 W at the Pi through a 0.9 converter is 0.9259 W/Ah.
X1202_10W = 0.9259


def pybamm_curve(name: str, w_per_ah: float) -> list[tuple[float, float, float]]:
    """(t_s, v, q) rows of one curve, read straight from the CSV PyBaMM's run wrote."""
    rows = []
    for line in (CELLS_DIR / f"{name}.csv").read_text().splitlines():
        if line and line[0].isdigit():
            p, t, v, q = (float(x) for x in line.split(","))
            if abs(p - w_per_ah) < 1e-4:
                rows.append((t, v, q))
    return rows


def discharge_hat(name: str, load_w: float = 10.0, board: str = "x1202"):
    time = ManualTime()
    hat = SimulatedHat(board, clock=SimClock(1.0, source=time), load_w=load_w, cell=load_cell(name))
    hat.set(ac=False)
    return time, hat


def test_there_are_at_least_three_chemistries():
    kinds = {name.split("-")[0] for name in CELL_NAMES}
    assert {"lgm50", "nca", "lco"} <= kinds, CELL_NAMES


@pytest.mark.parametrize("name", ALL_CELL_NAMES)
def test_replay_runs_as_long_as_pybamm_said_and_sags_as_it_said(name):
    rows = pybamm_curve(name, X1202_10W)
    t_end = rows[-1][0]
    time, hat = discharge_hat(name)
    assert hat.state()["time_to_empty_s"] == pytest.approx(t_end, rel=0.01)
    mid_t, mid_v, _ = rows[len(rows) // 2]
    time.t = mid_t
    st = hat.state()
    assert st["voltage"] == pytest.approx(mid_v, abs=0.01)  # voltage under load at that time, per PyBaMM
    assert st["time_to_empty_s"] == pytest.approx(t_end - mid_t, rel=0.02)
    while hat.state()["time_to_empty_s"]:  # the pack really runs down: stepping the model, not the formula
        time.t += 60
    assert time.t == pytest.approx(t_end, abs=61 + t_end * 0.01)
    st = hat.state()
    assert st["voltage"] == pytest.approx(2.5, abs=0.01) and st["current_a"] == 0


@pytest.mark.parametrize("name", AGED_CELL_NAMES)
def test_an_aged_pack_holds_less_and_sags_more_than_its_fresh_cell(name):
    """What PyBaMM's worn parameters gave (the file's own rows): under 70 % of nominal at the lightest
    load (below battery_replace_below's default), and a deeper sag under the heaviest load."""
    fresh, aged = load_cell(name.removesuffix("-aged")), load_cell(name)
    light, heavy = aged.min_w_per_ah, aged.max_w_per_ah
    assert 0.6 < aged.q_end(light) < 0.7 < 0.95 < fresh.q_end(light)
    rows_fresh, rows_aged = pybamm_curve(fresh.name, heavy), pybamm_curve(name, heavy)
    assert rows_aged[0][1] < rows_fresh[0][1] - 0.05  # the first point under the load: a bigger drop


def test_there_are_two_aged_packs():
    assert len(AGED_CELL_NAMES) == 2 and all(n.removesuffix("-aged") in CELL_NAMES for n in AGED_CELL_NAMES)


def test_a_load_between_two_curves_lasts_between_them():
    cell = load_cell("lgm50-chen2020")
    lo, hi = cell.curves[3], cell.curves[4]
    mid = (lo.w_per_ah + hi.w_per_ah) / 2
    assert hi.t[-1] < cell.seconds_left(0, mid) < lo.t[-1]
    assert hi.v[5] <= cell.voltage(lo.q[5], mid) + 0.01


def gauge_percent(hat: SimulatedHat) -> float:
    """The SOC register through the smbus surface the driver reads."""
    word = SimSMBus(hat).read_i2c_block_data(0x36, REG_SOC, 2)
    return word[0] + word[1] / 256


@pytest.mark.parametrize("name", ALL_CELL_NAMES)
def test_gauge_reads_6_percent_with_29_percent_of_the_energy_left_and_0_with_23(name):
    time, hat = discharge_hat(name, load_w=3.0)  # a light load: the gauge's lag after it is small
    cell = hat.model.cell
    p = hat.model.w_per_ah
    total = cell.energy_total(p)
    readings = {}
    while hat.state()["time_to_empty_s"]:
        time.t += 30
        left = cell.energy_left(hat.model.q, p) / total * 100
        for mark in (50, 29, 23, 15):
            if mark not in readings and left <= mark:
                readings[mark] = gauge_percent(hat)
    assert readings[29] == pytest.approx(6, abs=1.0)
    assert readings[23] < 1.0 and readings[15] == 0
    assert readings[50] < 50  # it reads low all the way, more so near empty


def test_mains_charges_a_replayed_cell_back_to_full():
    time, hat = discharge_hat("nca-kim2011", load_w=7.5)
    time.t = 3600 * 4
    low = hat.state()
    assert low["soc"] < 50
    hat.set(ac=True)
    assert hat.state()["charging"]
    time.t += 3600 * 12
    st = hat.state()
    assert st["soc"] == 100 and not st["charging"] and st["voltage"] > 4.1


def test_load_beyond_the_cell_data_is_refused_in_words():
    _, hat = discharge_hat("lco-ai2020", load_w=5, board="x1201")  # one 3 Ah cell: 10 W is the most
    with pytest.raises(ValueError, match=r"load 12 W is beyond the lco-ai2020 cell data on this 3000 mAh "
                                         r"pack \(at most 10.00 W\)"):
        hat.set(load_w=12)


def test_bad_cell_files_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("# a comment\nw_per_ah,t_s,v,q\n0.5,0,4.1,0\n0.5,10,four,0.1\n")
    with pytest.raises(CellDataError, match=r"bad.csv:4: not a number"):
        CellCurves.load(bad)
    bad.write_text("w_per_ah,t_s,v,q\n0.5,0,4.1,0.2\n0.5,10,4.0,0.1\n")
    with pytest.raises(CellDataError, match=r"bad.csv:3: time and charge must rise"):
        CellCurves.load(bad)
    bad.write_text("t,v\n")
    with pytest.raises(CellDataError, match=r"bad.csv:1: expected the header w_per_ah,t_s,v,q"):
        CellCurves.load(bad)


def test_sim_cell_option_loads_relative_to_the_confpath_and_explains_a_missing_file(tmp_path):
    (tmp_path / "cell.csv").write_text((CELLS_DIR / "nca-kim2011.csv").read_text())
    section = UpsSection("ups", 3, "x120x", None, None, {"sim": "yes", "sim_cell": "cell.csv"})
    driver = X120xDriver(UpsState("ups"), section, tmp_path, hardware=X120xDriver.hardware_for(section, tmp_path))
    assert driver.hardware.hat.state()["cell"] == "cell"
    section = UpsSection("ups", 3, "x120x", None, None, {"sim": "yes", "sim_cell": "nope.csv"})
    with pytest.raises(DriverError, match=r"\[ups\] sim_cell = nope.csv: .*nope.csv: cannot read: No such file"):
        X120xDriver.hardware_for(section, tmp_path)
