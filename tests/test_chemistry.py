"""The cells' chemistry (x120x `chemistry`): the open-circuit curves against the replayed cells'
own voltages, the option's errors, and the voltage floor that follows it."""

from __future__ import annotations

from pathlib import Path

import pytest
from runtime_trials import load_cell

from nutups.config.nutconf import UpsSection
from nutups.drivers.base import DriverError
from nutups.drivers.x120x import X120xDriver
from nutups.hardware.backend import SimulatedHardware
from nutups.hardware.chemistry import CHEMISTRIES, GENERIC_OCV, OcvCurve
from nutups.hardware.sim import SimClock, SimulatedHat
from nutups.shutdown.policy import ShutdownPolicy
from nutups.shutdown.settings import ShutdownSettings
from nutups.state import UpsState

# Each replayed cell (tests/data/cells/README.md) and its chemistry. The nmc curve comes from the
# Chen2020 LG M50 measurements; the ORegan2022 set is an independent measurement of the same cell.
CELLS = {"lgm50-chen2020": "nmc", "lgm50-oregan2022": "nmc", "nca-kim2011": "nca", "lco-ai2020": "lco"}


def charge_read(cell: str, curve: OcvCurve, left: float) -> float:
    """The share of the charge a curve reads at the cell's voltage under its lightest load (nearly at
    rest) with ``left`` of its charge truly left."""
    c = load_cell(cell).curves[0]
    volts = c.voltage(c.q_end * (1 - left))
    return curve.soc_at(volts) / 100 / c.q_end


@pytest.mark.parametrize("cell", CELLS)
def test_near_empty_the_chemistry_curve_reads_the_charge_left(cell):
    """3 to 10 % of the charge left (the last 25-90 minutes at 3 W on an X1202): the cell's own
    chemistry reads at least half of it and never more than a quarter over (measured: NMC and NCA
    within 15 %, the LCO curve, from another LCO cell, 40 % low at 10 % left); on NMC and NCA the
    generic curve reads under half of it."""
    for left in (0.03, 0.05, 0.08, 0.10):
        read = charge_read(cell, CHEMISTRIES[CELLS[cell]].curve, left)
        assert left / 2 <= read <= left * 1.25, f"{cell} with {left:.0%} left: reads {read:.1%}"
        if CELLS[cell] != "lco":
            assert charge_read(cell, GENERIC_OCV, left) < left / 2


def test_the_curves_rise_from_empty_to_full():
    for chem in CHEMISTRIES.values():
        assert chem.curve.ocv(0) < chem.curve.ocv(5) < chem.curve.ocv(50) < chem.curve.ocv(100) <= 4.2
        assert chem.curve.soc_at(chem.curve.ocv(37.5)) == pytest.approx(37.5, abs=1e-6)
    with pytest.raises(ValueError):
        OcvCurve(((0, 3.0), (50, 2.9), (100, 4.2)))


def driver(**options: str) -> X120xDriver:
    clock = SimClock(1.0, source=lambda: 0.0)
    hat = SimulatedHat("x1202", clock=clock)
    opts = {"sim": "yes", "board": "x1202", **options}
    d = X120xDriver(UpsState("ups", clock=clock), UpsSection("ups", 0, "x120x", None, None, opts), Path("."),
                    clock=clock, hardware=SimulatedHardware(hat))
    d._init_variables()
    return d


def test_the_chemistry_sets_the_curve_and_the_floor():
    assert driver().chemistry.name == "generic" and driver().critical_voltage == 3.2  # as before chemistries
    nmc = driver(chemistry="NMC")
    assert nmc.estimator.curve is CHEMISTRIES["nmc"].curve
    assert nmc.critical_voltage == nmc.voltage_floor == CHEMISTRIES["nmc"].floor_v < 3.2
    assert nmc.state.value("driver.parameter.chemistry") == "nmc"
    own = driver(chemistry="nmc", critical_voltage="3.0")  # the driver's LB at 3.0 V; the policy's floor stays
    assert (own.critical_voltage, own.voltage_floor) == (3.0, CHEMISTRIES["nmc"].floor_v)


@pytest.mark.parametrize(("value", "says"), [("lfp", "4.2 V"), ("lipo4", "one of generic, nmc, nca, lco")])
def test_a_chemistry_nutups_cannot_serve_is_refused_with_a_reason(value, says):
    with pytest.raises(DriverError, match=says):
        driver(chemistry=value)


def test_the_shutdown_floor_follows_the_driver_unless_set():
    assert ShutdownPolicy(ShutdownSettings(), "ups", 1, cell_floor=2.8).floor == 2.8
    assert ShutdownPolicy(ShutdownSettings(voltage_floor=3.1), "ups", 1, cell_floor=2.8).floor == 3.1
    assert ShutdownPolicy(ShutdownSettings(), "ups", 2).floor == pytest.approx(6.4)  # 2 x the default 3.2 V


def test_config_check_says_what_is_wrong_with_the_chemistry(tmp_path):
    """`nutups config check` reads the declared option without building the driver."""
    from nutups.configuration import load_configuration

    (tmp_path / "ups.conf").write_text("[hat]\n driver = x120x\n chemistry = LFP\n\n[two]\n driver = x120x\n"
                                       " chemistry = nimh\n\n[ok]\n driver = x120x\n chemistry = NCA\n")
    messages = sorted(p.message for p in load_configuration(tmp_path).errors)
    assert len(messages) == 2, messages
    assert messages[0].startswith("[hat] chemistry = lfp: LiFePO4 cells must not be charged above 3.65 V")
    assert messages[1].startswith("[two] chemistry = nimh: unknown (one of generic, nmc, nca, lco")
