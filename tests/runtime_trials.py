"""Outages on the simulated HAT with a replayed real cell: the driver's battery.runtime beside the cell's true time to empty."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from nutups.config.nutconf import UpsSection
from nutups.drivers.x120x import X120xDriver
from nutups.hardware.backend import SimulatedHardware
from nutups.hardware.boards import BOARDS
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
               poll_s: float = 2.0, measured_capacity_ah: float | None = None, start_soc: float = 100.0,
               measured_resistance_ohm: float | None = None) -> Outage:
    """Mains lost at full charge (or ``start_soc``); poll the driver every ``poll_s`` simulated seconds until the
    cell is empty (or ``until_s``), sampling battery.runtime against the true time to empty.
    ``load_meter``: auto (the simulated Pi 5's PMIC) or none (the estimate starts from the prior)."""
    time = ManualTime()
    clock = SimClock(1.0, source=time)
    hat = SimulatedHat(board, clock=clock, load_w=load_w, cell=load_cell(cell))
    hat.set(soc=start_soc)
    opts = {"sim": "yes", "board": board, "load_w": str(prior_load_w), "load_meter": load_meter}
    opts.update(options or {})
    state = UpsState("ups", clock=clock)
    driver = X120xDriver(state, UpsSection("ups", 0, "x120x", None, None, opts), Path("."), clock=clock,
                         hardware=SimulatedHardware(hat))
    driver._init_variables()
    state.connected = True
    if measured_capacity_ah is not None or measured_resistance_ohm is not None:  # the battery learning's
        driver.estimator.use_measured(measured_capacity_ah, measured_resistance_ohm)
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


@dataclass
class Drill:
    """One outage through the Pi's shutdown policy, sans daemon: the driver's readings go to the
    policy as the daemon's runner feeds them; two secondaries log out ``logout_s`` after FSD."""

    cell: str
    board: str
    load_w: float
    start_soc: float
    start_left_s: float = 0.0  # the cell's true time to empty when mains was lost
    command_left_s: float | None = None  # the cell's true time to empty when the Pi's command ran
    lb_left_s: float | None = None  # ... when LB first showed
    reason: str = ""
    fsd: bool = False
    started_after_s: float | None = None  # SHUTDOWN_STARTED this long after mains was lost

    @property
    def minutes_left(self) -> float | None:
        return None if self.command_left_s is None else self.command_left_s / 60


def run_drill(cell: str, board: str, load_w: float, start_soc: float = 100.0, hostsync: float = 15.0,
              logout_s: float = 5.0, grace: float = 30.0, blip_s: float | None = None,
              settings: dict | None = None, options: dict[str, str] | None = None,
              measured_capacity_ah: float | None = None, measured_resistance_ohm: float | None = None) -> Drill:
    """Mains lost at ``start_soc`` (for good, or back after ``blip_s``); the policy on the simulator's
    clock. Polls every 2 s once the truth is under 20 minutes (every 10 s under 2 hours, every minute before)."""
    from nutups.shutdown.policy import RunCommand, SetFsd, ShutdownPolicy
    from nutups.shutdown.runner import reading_of
    from nutups.shutdown.settings import ShutdownSettings

    time = ManualTime()
    clock = SimClock(1.0, source=time)
    hat = SimulatedHat(board, clock=clock, load_w=load_w, cell=load_cell(cell))
    hat.set(soc=start_soc)
    opts = {"sim": "yes", "board": board, "load_w": str(load_w), "load_meter": "auto"}
    opts.update(options or {})
    state = UpsState("ups", clock=clock)
    driver = X120xDriver(state, UpsSection("ups", 0, "x120x", None, None, opts), Path("."), clock=clock,
                         hardware=SimulatedHardware(hat))
    driver._init_variables()
    state.connected = True
    if measured_capacity_ah is not None or measured_resistance_ohm is not None:  # the battery learning's
        driver.estimator.use_measured(measured_capacity_ah, measured_resistance_ohm)
    policy = ShutdownPolicy(ShutdownSettings(grace=grace, hostsync=hostsync, **(settings or {})), "ups",
                            driver.series_cells, clock=clock, cell_floor=driver.voltage_floor)
    if hasattr(driver, "shutdown_needs"):  # as the daemon's runner tells it
        driver.shutdown_needs(policy.runtime_needed())
    out = Drill(cell, board, load_w, start_soc)
    logout_at: float | None = None
    loop = asyncio.new_event_loop()

    def carry_out(actions) -> None:
        nonlocal logout_at
        for action in actions:
            if isinstance(action, SetFsd):
                state.force_shutdown()
                out.fsd = True
                logout_at = clock() + logout_s
            elif isinstance(action, RunCommand):
                out.command_left_s = hat.state()["time_to_empty_s"] or 0.0
                out.reason = policy.reason
                out.started_after_s = policy.started_at - policy.since
                carry_out(policy.command_finished(action.argv, action.reboot, 0, ""))

    state.on_publish(lambda st: carry_out(policy.observe(reading_of(st, driver, clock))))
    carry_out(policy.logins(2))
    loop.run_until_complete(driver.measure_load())
    driver.poll()
    hat.set(ac=False)
    driver.on_edge()
    out.start_left_s = hat.state()["time_to_empty_s"] or 0.0
    t0 = time.t
    while out.command_left_s is None:
        true = hat.state()["time_to_empty_s"]
        if not true:
            break
        time.t += 2.0 if true < 1200 or policy.under_way else 10.0 if true < 7200 else 60.0
        if blip_s is not None and time.t - t0 >= blip_s and not hat.model.ac:
            hat.set(ac=True)
            driver.on_edge()
        if blip_s is not None and time.t - t0 > blip_s + 120:
            break
        if logout_at is not None and clock() >= logout_at:
            logout_at = None
            carry_out(policy.logins(0))
        deadline = policy.deadline()
        if deadline is not None and clock() >= deadline:
            carry_out(policy.tick())
        loop.run_until_complete(driver.measure_load())
        driver.poll()
        if out.lb_left_s is None and "LB" in (state.value("ups.status") or "").split():
            out.lb_left_s = hat.state()["time_to_empty_s"]
    loop.close()
    return out


def soc_leaving(cell: str, board: str, load_w: float, seconds: float) -> float:
    """The simulator's charge (%) from which the cell truly lasts ``seconds`` at this load."""
    hat = SimulatedHat(board, clock=SimClock(1.0, source=ManualTime()), load_w=load_w, cell=load_cell(cell))
    hat.model.ac = False
    lo, hi = 0.0, 100.0
    for _ in range(40):
        mid = (lo + hi) / 2
        hat.model.set_soc(mid)
        lo, hi = (mid, hi) if hat.model.time_to_empty() < seconds else (lo, mid)
    return round(hi, 2)


def step_resistance(cell: str, board: str) -> float:
    """The pack's resistance as a load step shows it on a full pack (what the battery learning
    measures, issue 14 part 2): from the cell's lightest load to its heaviest, the voltage drop
    over the current, one cell's, shared by the cells in parallel."""
    curves = load_cell(cell)
    q = 0.01  # Ah per nominal Ah: just off full
    lo, hi = curves.min_w_per_ah, curves.max_w_per_ah  # W per nominal Ah: a 1 Ah cell's watts
    v_lo, v_hi = curves.voltage(q, lo), curves.voltage(q, hi)
    ohm_per_ah = (v_lo - v_hi) / (hi / v_hi - lo / v_lo)  # a 1 Ah cell's resistance
    cell_ah = BOARDS[board].capacity_mah / 1000 / BOARDS[board].cells_parallel
    return ohm_per_ah / cell_ah / BOARDS[board].cells_parallel
