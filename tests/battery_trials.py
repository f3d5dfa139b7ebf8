"""Outages of random lengths and noisy loads on the simulated HAT with a replayed cell, driven through
the x120x driver's own poll loop, for the battery learning to learn from."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from pathlib import Path

from runtime_trials import ManualTime, load_cell

from nutups.config.nutconf import UpsSection
from nutups.drivers.x120x import X120xDriver
from nutups.hardware.backend import SimulatedHardware
from nutups.hardware.sim import SimClock, SimulatedHat
from nutups.state import UpsState

SHUTDOWN_LEFT_S = 300  # an outage ends at the latest where the Pi's shutdown would take it: 5 min truly left


@dataclass
class Life:
    """A pack living through outages on a driver."""

    cell: str
    board: str
    datapath: Path
    options: dict[str, str] = field(default_factory=dict)
    load_meter: str = "auto"

    def __post_init__(self) -> None:
        self.time = ManualTime()
        self.clock = SimClock(1.0, source=self.time)
        self.hat = SimulatedHat(self.board, clock=self.clock, load_w=3.0,
                                cell=load_cell(self.cell) if self.cell else None)
        self.state = UpsState("ups", clock=self.clock)
        self.loop = asyncio.new_event_loop()
        self.driver = self.new_driver()

    def new_driver(self) -> X120xDriver:
        opts = {"sim": "yes", "board": self.board, "load_meter": self.load_meter, "load_w": "5"}
        opts.update(self.options)
        driver = X120xDriver(self.state, UpsSection("ups", 0, "x120x", None, None, opts), Path("."),
                             clock=self.clock, hardware=SimulatedHardware(self.hat), datapath=self.datapath)
        driver._init_variables()
        self.state.connected = True
        return driver

    @property
    def true_capacity_ah(self) -> float:
        m = self.hat.model
        return m.q_full * m.capacity_ah if self.cell else m.capacity_ah

    def poll(self) -> None:  # as the driver's run loop does: the load meter, then the gauge
        self.loop.run_until_complete(self.driver.measure_load())
        self.driver.poll()

    def run(self, seconds: float, step: float) -> None:
        end = self.time.t + seconds
        while self.time.t < end:
            self.time.t = min(self.time.t + step, end)
            self.poll()

    def charge_full(self, step: float = 60.0) -> None:
        """Mains on: the learner's rest, then the charge (taken as done: the charger is not
        what these trials test, and hours of it would make them slow), then a rest at full."""
        self.run(self.driver.battery.rest_s + step, step)
        self.hat.set(soc=100)
        self.run(5 * step, step)

    def outage(self, rng: random.Random, base_w: float, fraction: float, noise: float = 0.3,
               poll_s: float = 30.0) -> float:
        """Mains lost for ``fraction`` of the pack's runtime at ``base_w`` (at most until the shutdown
        would come), the load wandering +-``noise`` around it; returns the seconds on battery."""
        hat = self.hat
        top = hat.model.max_load_w() if self.cell else 20.0
        hat.set(load_w=min(base_w, top))
        self.poll()
        hat.set(ac=False)
        self.poll()
        length = fraction * hat.state()["time_to_empty_s"]
        start = self.time.t
        next_change = self.time.t + rng.uniform(30, 300)
        while self.time.t - start < length:
            self.time.t += poll_s
            if self.time.t >= next_change:
                hat.set(load_w=min(max(base_w * rng.uniform(1 - noise, 1 + noise), 0.5), top))
                next_change = self.time.t + rng.uniform(30, 300)
            self.poll()
            tte = hat.state()["time_to_empty_s"]
            if tte is not None and tte < SHUTDOWN_LEFT_S:
                break
        hat.set(ac=True)
        self.poll()
        return self.time.t - start

    def close(self) -> None:
        self.loop.close()


def random_outages(life: Life, rng: random.Random, n: int, loads: tuple[float, float]) -> list[float]:
    """``n`` outages from full, each at a random load and of a random length: from 5 % of what the
    pack would run at that load to 1.3 times it, so that about a quarter outlast the pack and end
    where the Pi's shutdown would end them (SHUTDOWN_LEFT_S truly left)."""
    lengths = []
    life.charge_full()
    for _ in range(n):
        lengths.append(life.outage(rng, rng.uniform(*loads), rng.uniform(0.05, 1.3)))
        life.charge_full()
    return lengths
