"""Each driver declares its ups.conf options; `config check` reads the declaration, never builds the
driver, and the driver reads its options through the same specs.  The hardware is chosen once
(hardware/backend.py) and passed in."""

from __future__ import annotations

from pathlib import Path

import pytest

from nutups.config.nutconf import UpsSection
from nutups.configuration import load_configuration
from nutups.drivers import DRIVERS, DriverError
from nutups.drivers.x120x import X120xDriver
from nutups.hardware.backend import Hardware, SimulatedHardware
from nutups.hardware.gauge import DEFAULT_ADDRESS
from nutups.state import UpsState


def section(**options: str) -> UpsSection:
    return UpsSection("hat", 2, "x120x", None, None, dict(options))


def test_every_bad_option_is_reported_at_once_without_building_the_driver(tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(X120xDriver, "__init__", lambda self, *a, **kw: built.append(a))
    (tmp_path / "ups.conf").write_text("[hat]\n driver = x120x\n pollinterval = fast\n pld_active = up\n"
                                       " i2c_address = 0xZZ\n board = x9\n")
    cfg = load_configuration(tmp_path)
    board, *others = [p.message for p in cfg.errors]
    assert board.startswith("[hat] board = x9: unknown (one of x1200, x1201, x1202")
    assert others == [
        "[hat] i2c_address = 0xZZ: not a number (e.g. 0x36)",
        "[hat] pld_active = up: high or low",
        "[hat] pollinterval = 'fast': not a number",
    ]
    assert all(p.line == 1 for p in cfg.errors)  # the section's line in ups.conf
    assert built == []


def test_the_driver_reads_what_the_check_accepts():
    values = {key: X120xDriver.section_value(section(), Path("."), key) for key in X120xDriver.options}
    # the documented defaults (docs/x120x-hardware.md, hardware/gauge.py)
    assert values["board"] == "x1202" and values["i2c_bus"] == 1 and values["i2c_address"] == DEFAULT_ADDRESS
    assert values["pld_line"] == "GPIO6" and values["charge_line"] == "GPIO16" and values["sim"] is False
    s = section(i2c_address="54", lb_debounce="7.9", board="X1203", sim="")
    assert X120xDriver.section_value(s, Path("."), "i2c_address") == 54
    assert X120xDriver.section_value(s, Path("."), "lb_debounce") == 7
    assert X120xDriver.section_value(s, Path("."), "board") == "x1203"
    assert X120xDriver.section_value(s, Path("."), "sim") is True  # `sim` alone means yes
    # 2.5 V: the discharge cut-off of the Li-ion 18650 datasheets (LG M50: 2.5 V); the nmc floor is 2.8 V
    with pytest.raises(DriverError, match=r"^\[hat\] critical_voltage = 4.5: must be within 2.5..3.8$"):
        X120xDriver(UpsState("hat"), section(critical_voltage="4.5"), Path("."))


def test_the_hardware_is_chosen_once_from_the_section():
    sim = X120xDriver.hardware_for(section(sim="yes", board="x1203"), Path("."))
    real = X120xDriver.hardware_for(section(), Path("."))
    assert isinstance(sim, SimulatedHardware) and sim.hat.board.name.lower() == "x1203"
    assert type(real) is Hardware
    assert DRIVERS["dummy-ups"].hardware_for(UpsSection("d", 1, "dummy-ups", "x.dev", None, {}), Path(".")) is None
    driver = X120xDriver(UpsState("hat"), section(sim="yes"), Path("."), hardware=sim)
    assert driver.clock is sim.clock  # the simulator's clock, which `nutups sim speed` speeds up


def test_the_driver_takes_everything_from_its_backend():
    """A backend of its own (as gpiozero's MockFactory): the driver asks it for the gauge, gpiod,
    the chips and the load meter, and nothing else of the machine."""
    asked = []

    class Recording(SimulatedHardware):
        def open_gauge(self, bus, address):
            asked.append(("gauge", bus, address))
            return super().open_gauge(bus, address)

        def gpiod(self):
            asked.append(("gpiod",))
            return super().gpiod()

        def load_meter(self):
            asked.append(("load meter",))
            return super().load_meter()

    base = X120xDriver.hardware_for(section(sim="yes"), Path("."))
    state = UpsState("hat", clock=base.clock)
    driver = X120xDriver(state, section(sim="yes", i2c_bus="3"), Path("."), hardware=Recording(base.hat))
    driver.poll()
    assert asked == [("load meter",), ("gauge", 3, DEFAULT_ADDRESS), ("gpiod",)]
    assert state.value("ups.status") == "OL"  # the simulated HAT on mains, full: read through the backend
