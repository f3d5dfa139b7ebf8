"""Judgement over noisy gauge readings: runtime estimate, charge window."""

from __future__ import annotations

import statistics
from collections import deque

from ..hardware.chemistry import EMPTY_V, GENERIC_OCV, OcvCurve


def theil_sen_slope(points: list[tuple[float, float]], max_points: int = 40) -> float | None:
    """Median of pairwise slopes: robust to the gauge's steps and outliers."""
    if len(points) < 3:
        return None
    if len(points) > max_points:
        step = len(points) / max_points
        points = [points[int(i * step)] for i in range(max_points)] + [points[-1]]
    slopes = []
    for i in range(len(points)):
        t0, y0 = points[i]
        for t1, y1 in points[i + 1 :]:
            if t1 - t0 > 1e-9:
                slopes.append((y1 - y0) / (t1 - t0))
    return statistics.median(slopes) if slopes else None


def remaining_energy_j(capacity_ah: float, soc: float, sag_v: float = 0.0, curve: OcvCurve = GENERIC_OCV,
                       empty_v: float = EMPTY_V) -> float:
    """Energy left above empty, joules: the capacity times the open-circuit voltage curve less the
    present voltage sag under load, integrated from where that reaches ``empty_v`` up to ``soc``."""
    soc = min(max(soc, 0.0), 100.0)
    total = 0.0
    lo = 0.0
    for top, h in ((min(soc, 10.0), 0.2), (soc, 1.0)):  # fine steps near empty, where the curves bend
        span = top - lo
        if span <= 0:
            continue
        steps = max(round(span / h), 1)
        h = span / steps
        for i in range(steps):
            v = curve.ocv(lo + (i + 0.5) * h) - sag_v
            if v >= empty_v:
                total += v * h
        lo = top
    return capacity_ah * 3600.0 * total / 100.0


# The resistance between the cells' open-circuit voltage and battery.voltage: a fresh 18650 has some tens of
# milliohms, the board's holders and traces add some. Until a measured one is given, the estimate takes the
# low end: a resistance taken too high puts the open-circuit voltage, and so the energy left, too high (on
# the flat middle of the curve 0.1 V is 20 % of the charge), one taken too low errs on the safe side.
NOMINAL_CELL_RESISTANCE_OHM = 0.03
BOARD_RESISTANCE_OHM = 0.01
# Where the gauge's percentage stops being worth anything: MAX17043-class gauges on these boards read 6 %
# with about 29 % of the energy left and 0 % with about 23 % (issue 7). Under NEAR_EMPTY_SOC (by the gauge
# or by the voltage) the estimate comes from the voltage alone; between it and TRUST_GAUGE_SOC the two blend.
NEAR_EMPTY_SOC = 10.0
TRUST_GAUGE_SOC = 20.0


def pack_resistance(cells_parallel: int, cell_ohm: float = NOMINAL_CELL_RESISTANCE_OHM,
                    board_ohm: float = BOARD_RESISTANCE_OHM) -> float:
    """The nominal resistance between the cells' open-circuit voltage and battery.voltage, ohm."""
    return cell_ohm / max(cells_parallel, 1) + board_ohm


def energy_from_voltage_j(capacity_ah: float, resistance_ohm: float, volts: float, power_w: float,
                          curve: OcvCurve = GENERIC_OCV, empty_v: float = EMPTY_V) -> float:
    """Energy left above empty, joules, from the loaded voltage alone: the current the pack delivers at
    this power and voltage, through the resistance, gives the open-circuit voltage; the open-circuit
    curve gives the charge left at it, and the energy above empty at this sag."""
    if volts <= 0 or power_w <= 0:
        return remaining_energy_j(capacity_ah, curve.soc_at(volts), curve=curve, empty_v=empty_v)
    sag = power_w / volts * resistance_ohm
    return remaining_energy_j(capacity_ah, curve.soc_at(volts + sag), sag, curve, empty_v)


class RuntimeEstimator:
    """Seconds until the battery is empty, honest from the first minute of an outage.

    Works in energy: the power the pack delivers, and the energy left under the
    open-circuit voltage curve.  The gauge's state of charge lags a load change:
    for a minute or two it moves like a voltage gauge (too fast), then settles.
    So the power starts from a load-based prior (the Pi's draw measured on mains
    just before, by a plug's energy meter on the HAT's supply; else the load
    learned in earlier outages; else the configured one) and moves to what the robust (Theil-Sen)
    slope of the settled readings shows.  Where a load meter measures the Pi's
    draw (the Pi 5's PMIC), its readings are the load, from the first minute on:
    a measurement beats both the prior and the gauge's slope, which drifts with
    the gauge's own errors (it reads low, and falls faster, near empty).

    Near empty the gauge's percentage is worth nothing (it reads 0 % with a
    fifth of the energy left), so there the energy left comes from the loaded
    voltage, the power and the pack's resistance, through the open-circuit curve
    (:func:`energy_from_voltage_j`).  ``capacity_ah`` and ``resistance_ohm`` are
    the nominal pack's until something measured them (:meth:`use_measured`).
    """

    def __init__(self, capacity_ah: float, prior_load_w: float, efficiency: float = 0.9,
                 settle_s: float = 180.0, trust_s: float = 120.0, window_s: float = 900.0,
                 measure_window_s: float = 60.0, resistance_ohm: float | None = None,
                 curve: OcvCurve = GENERIC_OCV, empty_v: float = EMPTY_V) -> None:
        self.curve = curve  # the cells' open-circuit voltage (hardware/chemistry.py)
        self.empty_v = empty_v  # the loaded voltage the estimate counts down to
        self.nominal_capacity_ah = capacity_ah
        self.nominal_resistance_ohm = resistance_ohm if resistance_ohm is not None else pack_resistance(1)
        self.capacity_ah = capacity_ah
        self.resistance_ohm = self.nominal_resistance_ohm
        self.prior_load_w = prior_load_w
        self.efficiency = efficiency
        self.settle_s = settle_s
        self.trust_s = trust_s
        self.window_s = window_s
        self.measure_window_s = measure_window_s
        self.samples: deque[tuple[float, float, float]] = deque()  # t, soc %, volts
        self.measured: deque[tuple[float, float]] = deque()  # t, watts at the Pi's 5 V input (a load meter)
        self.on_mains: deque[float] = deque(maxlen=5)  # W at 5 V measured before the outage (a plug's meter)
        self.started: float | None = None

    def use_measured(self, capacity_ah: float | None = None, resistance_ohm: float | None = None) -> None:
        """A capacity (Ah) and a resistance (ohm) measured on this pack; None: back to the nominal one.
        A resistance above the chemistry's nominal one reads the charge left higher near empty: on the
        aged NCA pack a resistance from a load step on the full pack put the Pi's command at 1.7-2.8
        minutes left on an X1201 (docs/runtime.md); the drill is proven on the nominal one."""
        self.capacity_ah = capacity_ah if capacity_ah and capacity_ah > 0 else self.nominal_capacity_ah
        self.resistance_ohm = (resistance_ohm if resistance_ohm and resistance_ohm > 0
                               else self.nominal_resistance_ohm)

    def measure(self, t: float, load_w: float | None) -> None:
        """A load meter's reading of the Pi's draw at 5 V; None when the meter failed (forget it)."""
        if load_w is None:
            self.measured.clear()
            return
        self.measured.append((t, load_w))
        while self.measured and t - self.measured[0][0] > self.measure_window_s:
            self.measured.popleft()

    def measured_load(self) -> float | None:
        """The mean of the load meter's recent readings, W at 5 V (None without a meter)."""
        return statistics.fmean(w for _, w in self.measured) if self.measured else None

    def learn_on_mains(self, load_w: float) -> None:
        """A reading of the Pi's draw taken on mains with the charger idle (a plug's energy
        meter on the HAT's supply): the load the next outage starts from, as the mean of the
        last few readings (one odd reading moves it little)."""
        self.on_mains.append(load_w)
        self.prior_load_w = statistics.fmean(self.on_mains)

    def prior_power(self) -> float:
        """Watts drawn from the pack if the load is the measured one, else the prior."""
        measured = self.measured_load()
        return (measured if measured is not None else self.prior_load_w) / self.efficiency

    def start(self, t: float) -> None:
        """On battery from now on (mains lost)."""
        self.samples.clear()
        self.started = t

    def stop(self) -> None:
        """Mains is back: learn the load this outage showed, forget the samples."""
        power, weight = self._observed_power()
        measured = self.measured_load()
        if measured is not None:
            self.prior_load_w = measured
        elif power is not None and weight >= 1.0:
            self.prior_load_w = power * self.efficiency
        self.samples.clear()
        self.started = None

    def add(self, t: float, soc: float, volts: float) -> None:
        if self.started is None:
            self.start(t)
        self.samples.append((t, soc, volts))
        while self.samples and t - self.samples[0][0] > self.window_s + self.settle_s:
            self.samples.popleft()

    def _observed_power(self) -> tuple[float | None, float]:
        if self.started is None:
            return None, 0.0
        settled = [s for s in self.samples if s[0] - self.started >= self.settle_s]
        if len(settled) < 3:
            return None, 0.0
        span = settled[-1][0] - settled[0][0]
        slope = theil_sen_slope([(t, -soc) for t, soc, _ in settled])  # %/s discharged
        if slope is None or slope <= 0:
            return None, 0.0
        amps = slope / 100.0 * self.capacity_ah * 3600.0
        volts = statistics.median(v for _, _, v in settled[-10:])
        return amps * volts, min(span / self.trust_s, 1.0)

    def power(self) -> float:
        """Best estimate of the power drawn from the pack, watts."""
        prior = self.prior_power()
        if self.measured:
            return prior
        observed, weight = self._observed_power()
        if observed is None:
            return prior
        return weight * observed + (1 - weight) * prior

    def loaded_volts(self) -> float | None:
        """The median of the last few loaded voltages on battery (one odd reading moves it little)."""
        if not self.samples:
            return None
        return statistics.median(v for _, _, v in list(self.samples)[-5:])

    def runtime(self, soc: float, volts: float, on_battery: bool) -> float:
        """Seconds to empty at the estimated power (on mains: were mains lost now)."""
        power = self.power() if on_battery else self.prior_power()
        if power <= 0:
            return 0.0
        if not on_battery:
            return remaining_energy_j(self.capacity_ah, soc, 0.0, self.curve, self.empty_v) / power
        sag = max(self.curve.ocv(soc) - volts, 0.0)
        by_gauge = remaining_energy_j(self.capacity_ah, soc, sag, self.curve, self.empty_v) / power
        loaded = self.loaded_volts() or volts
        by_voltage = energy_from_voltage_j(self.capacity_ah, self.resistance_ohm, loaded, power, self.curve,
                                           self.empty_v) / power
        low = min(soc, self.curve.soc_at(loaded + power / loaded * self.resistance_ohm))
        if low >= TRUST_GAUGE_SOC:
            return by_gauge
        if low <= NEAR_EMPTY_SOC:
            return by_voltage
        w = (low - NEAR_EMPTY_SOC) / (TRUST_GAUGE_SOC - NEAR_EMPTY_SOC)
        return w * by_gauge + (1 - w) * by_voltage


class ChargeWindow:
    """Stop charging at ``stop`` %, resume at ``start`` %: spares the cells. stop=100: always charge."""

    def __init__(self, stop: float = 100.0, start: float = 95.0) -> None:
        self.stop = stop
        self.start = start
        self.charging_allowed = True

    @property
    def active(self) -> bool:
        return self.stop < 100.0

    def update(self, soc: float) -> bool:
        """Whether charging should be enabled after this reading."""
        if not self.active:
            self.charging_allowed = True
        elif soc >= self.stop:
            self.charging_allowed = False
        elif soc <= self.start:
            self.charging_allowed = True
        return self.charging_allowed
