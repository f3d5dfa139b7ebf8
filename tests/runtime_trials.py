"""Outages on the simulated HAT with a replayed real cell: the driver's battery.runtime beside the cell's true time to empty."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from nutups.config.nutconf import UpsSection
from nutups.drivers.x120x import X120xDriver
from nutups.hardware.backend import SimulatedHardware
from nutups.hardware.cells import CellCurves
from nutups.hardware.sim import SimClock, SimulatedHat
from nutups.state import UpsState

CELLS_DIR = Path(__file__).resolve().parent / "data" / "cells"
ALL_CELL_NAMES = sorted(p.stem for p in CELLS_DIR.glob("*.csv"))
# Aged packs (name ends in -aged) deliver about 65 % of their nominal capacity: an estimate that
# knows only the nominal capacity cannot be within bounds on them until it has learned the pack.
AGED_CELL_NAMES = [n for n in ALL_CELL_NAMES if n.endswith("-aged")]
CELL_NAMES = [n for n in ALL_CELL_NAMES if n not in AGED_CELL_NAMES]  # the fresh cells


def load_cell(name: str) -> CellCurves:
    return CellCurves.load(CELLS_DIR / f"{name}.csv")


class ManualTime:
    """The simulator's time source, moved by hand."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Sample:
    t_s: float  # since mains was lost
    estimate_s: float  # battery.runtime as NUT clients see it
    true_s: float  # the cell's time to the cut-off at this load
    gauge_pct: float  # battery.charge
    voltage: float
    status: str

    @property
    def error_pct(self) -> float:
        return (self.estimate_s - self.true_s) / self.true_s * 100.0


@dataclass
class Outage:
    cell: str
    board: str
    load_w: float
    samples: list[Sample] = field(default_factory=list)

    def at_minute(self, minute: float) -> Sample:
        return min(self.samples, key=lambda s: abs(s.t_s - minute * 60))

    def at_true_left(self, seconds: float) -> Sample:
        """The last sample with at least ``seconds`` truly left."""
        return [s for s in self.samples if s.true_s >= seconds][-1]


def run_outage(cell: str, board: str = "x1202", load_w: float = 5.0, prior_load_w: float = 5.0,
               load_meter: str = "auto", options: dict[str, str] | None = None, until_s: float | None = None,
               poll_s: float = 2.0) -> Outage:
    """Mains lost at full charge; poll the driver every ``poll_s`` simulated seconds until the
    cell is empty (or ``until_s``), sampling battery.runtime against the true time to empty.
    ``load_meter``: auto (the simulated Pi 5's PMIC) or none (the estimate starts from the prior)."""
    time = ManualTime()
    clock = SimClock(1.0, source=time)
    hat = SimulatedHat(board, clock=clock, load_w=load_w, cell=load_cell(cell))
    opts = {"sim": "yes", "board": board, "load_w": str(prior_load_w), "load_meter": load_meter}
    opts.update(options or {})
    state = UpsState("ups", clock=clock)
    driver = X120xDriver(state, UpsSection("ups", 0, "x120x", None, None, opts), Path("."), clock=clock,
                         hardware=SimulatedHardware(hat))
    driver._init_variables()
    state.connected = True
    loop = asyncio.new_event_loop()

    def poll() -> None:  # as the driver's run loop does: the load meter, then the gauge
        loop.run_until_complete(driver.measure_load())
        driver.poll()

    poll()
    hat.set(ac=False)
    driver.on_edge()
    out = Outage(cell, board, load_w)
    t0 = time.t
    while True:
        time.t += poll_s
        poll()
        true = hat.state()["time_to_empty_s"]
        if not true or (until_s is not None and time.t - t0 > until_s):
            break
        out.samples.append(Sample(time.t - t0, float(state.value("battery.runtime")), true,
                                  float(state.value("battery.charge")), float(state.value("battery.voltage")),
                                  state.value("ups.status") or ""))
    loop.close()
    return out
