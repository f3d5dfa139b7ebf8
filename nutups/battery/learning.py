"""Learns a pack from what it does: capacity per outage, resistance per load step, cycles; judges wear (RB).

Capacity: an outage that means something (mains lost with the pack at rest, long enough
to move the resting voltage) delivers a charge, the load over the time divided by the
pack's voltage, from the best load source there is (the Pi 5's PMIC; a smart plug marked
`feeds:` measured before the outage; else the load prior), each with its own
uncertainty. Its share of the pack comes from the resting voltage before (on mains with
the charger idle) and after (the charger held off for a rest once mains is back), through
the chemistry band of :mod:`nutups.battery.ocv`, never from the gauge. Each outage is one
estimate with an uncertainty; the capacity is their inverse-variance mean, so that a
deep outage (the resting voltage well known near empty) counts far more than a shallow
one.

Resistance: the step of the voltage when the current steps: the drop from rest the moment
mains goes (a free step), and a load change the meter sees on battery.

Replace battery (RB): the measured capacity under ``replace_below`` of nominal with
confidence (at least two outages, known to within RB_MAX_SIGMA of nominal, and the others
not saying the opposite (at 3 sigma) with the most telling outage left out, so one outage's noise
never does it), or the resistance doubled against the pack's first measurements (or the
one given).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .ocv import CHEMISTRY_CURVES, charge_at_rest, charge_on_curve, curve_sigma

EFFICIENCY = 0.9  # the HAT's boost converter, pack -> 5 V (as the estimator and the simulator)
# The standard uncertainty of the charge an outage delivered, by where its load came from.
LOAD_SOURCE_SIGMA = {"pmic": 0.03, "plug": 0.10, "prior": 0.30}
FULL_SIGMA_PCT = 0.5  # the charger ended at 4.2 V: full, within this
MIN_SPAN_PCT = 5.0  # an outage that moved the charge less than this says nothing of the capacity
MAX_SIGMA_REL = 0.5  # nor one whose estimate is this uncertain
MIN_OUTAGES_FOR_RB = 2
RB_MAX_SIGMA = 0.04  # RB on capacity needs it known to within this share of nominal (1 sigma)
REST_BEFORE_MAX_AGE_S = 300.0  # the resting voltage before an outage must be this recent
STEP_MAX_GAP_S = 30.0  # the two readings of a step at most this far apart
MIN_STEP_A = 0.2  # a load step smaller than this (pack amperes) is lost in the noise
MAX_RESISTANCE_OHM = 2.0
RESISTANCE_BASELINE_N = 3  # the first measurements of a pack: its resistance when new
RESISTANCE_RECENT_N = 5
# "Doubled" must also be a rise the gauge can see beyond the noise: a pack of a few milliohm
# (the drop at an ampere is a few millivolts, tens of the gauge's 78 uV steps) doubles by noise.
RESISTANCE_MIN_RISE_OHM = 0.015
KEEP_OUTAGES = 200
KEEP_RESISTANCES = 200


@dataclass
class OutageRecord:
    """One outage: the charge it delivered and the span of the pack it took."""

    time: float  # wall clock (Unix seconds) at its end
    seconds: float  # on battery
    ah: float  # charge delivered
    load_source: str  # pmic, plug or prior: the worst source used for a tenth of the time or more
    soc_before: float | None = None  # % at rest before, None when the pack was not at rest
    soc_before_sigma: float = 0.0
    soc_after: float | None = None  # % at rest after the hold
    soc_after_sigma: float = 0.0
    v_before: float | None = None
    v_after: float | None = None
    kind: str = "outage"  # outage, or the battery test that made it
    learned_ah: float | None = None  # the capacity learned with this outage (for the history)

    @property
    def span_pct(self) -> float | None:
        if self.soc_before is None or self.soc_after is None:
            return None
        return self.soc_before - self.soc_after

    def capacity(self, chemistry: str | None = None) -> tuple[float, float] | None:
        """(Ah, standard uncertainty in Ah), or None where this outage says nothing of the
        capacity: through the band of all chemistries, or along one chemistry's curve."""
        if self.soc_before is None or self.soc_after is None or self.ah <= 0:
            return None
        if chemistry is None:
            span, soc_sigma = self.span_pct, math.hypot(self.soc_before_sigma, self.soc_after_sigma)
        else:
            full = self.v_before is None or self.soc_before_sigma <= FULL_SIGMA_PCT
            before = self.soc_before if full else charge_on_curve(chemistry, self.v_before)
            span = before - charge_on_curve(chemistry, self.v_after)
            soc_sigma = math.hypot(FULL_SIGMA_PCT if full else curve_sigma(self.v_before), curve_sigma(self.v_after))
        if span < MIN_SPAN_PCT:
            return None
        cap = self.ah / (span / 100.0)
        rel = math.hypot(LOAD_SOURCE_SIGMA.get(self.load_source, 0.3), soc_sigma / span)
        if rel > MAX_SIGMA_REL:
            return None
        return cap, cap * rel


@dataclass
class ResistanceRecord:
    time: float  # wall clock
    ohm: float
    how: str  # "mains drop", "load step", "battery test"


@dataclass
class BatteryRecord:
    """All that is learned of one pack: what the datapath keeps."""

    outages: list[OutageRecord] = field(default_factory=list)
    resistances: list[ResistanceRecord] = field(default_factory=list)
    discharged_ah: float = 0.0  # charge throughput on battery, for the equivalent full cycles
    resistance_new_ohm: float | None = None  # the pack's resistance when new (its first measurements)
    since: float | None = None  # wall clock of the first record: when this pack was first seen

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatteryRecord:
        outages = [OutageRecord(**{k: v for k, v in o.items() if k in OutageRecord.__dataclass_fields__})
                   for o in data.get("outages", [])]
        resistances = [ResistanceRecord(**{k: v for k, v in r.items() if k in ResistanceRecord.__dataclass_fields__})
                       for r in data.get("resistances", [])]
        new = data.get("resistance_new_ohm")
        return cls(outages, resistances, float(data.get("discharged_ah", 0.0)),
                   float(new) if isinstance(new, (int, float)) else None, data.get("since"))


@dataclass(frozen=True)
class BatteryKnowledge:
    """What nutups knows of the pack now. The runtime estimate reads ``capacity_for_runtime()``
    and ``resistance_ohm``; the NUT variables, dashboard, /metrics, MQTT and `nutups battery`
    show the rest."""

    nominal_ah: float
    capacity_ah: float | None  # measured; None before the first outage that means something
    capacity_sigma_ah: float | None
    outages: int  # the outages the measured capacity rests on
    resistance_ohm: float | None  # recent median
    resistance_new_ohm: float | None
    resistance_measurements: int
    cycles: float  # equivalent full cycles: charge throughput / nominal capacity
    replace: bool
    replace_reason: str | None
    history: tuple[tuple[float, float, float], ...] = ()  # (wall time, Ah of that outage, Ah learned after it)
    capacity_rb: tuple | None = field(default=None, repr=False, compare=False)  # judge's cache

    @property
    def capacity_pct(self) -> float | None:
        """The measured capacity in % of nominal."""
        return None if self.capacity_ah is None else 100.0 * self.capacity_ah / self.nominal_ah

    def capacity_for_runtime(self, max_sigma_rel: float = 0.1) -> float:
        """The capacity a runtime estimate should use: the measured one once it is known to
        within ``max_sigma_rel``, else the nominal one."""
        if self.capacity_ah is not None and self.capacity_sigma_ah is not None \
                and self.capacity_sigma_ah <= max_sigma_rel * self.capacity_ah:
            return self.capacity_ah
        return self.nominal_ah


def combine(estimates: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Inverse-variance mean of (value, sigma) pairs, and its sigma."""
    if not estimates:
        return None
    weights = [1.0 / (s * s) for _, s in estimates]
    total = sum(weights)
    return sum(w * c for w, (c, _) in zip(weights, estimates, strict=True)) / total, math.sqrt(1.0 / total)


def capacity_of(outages: list[OutageRecord]) -> tuple[float, float, list[tuple[float, float]]] | None:
    """The capacity the outages show, its uncertainty, and each outage's own estimate.

    Every chemistry's resting curve is tried: along the curve the pack really follows, the
    outages agree on one capacity; along another they disagree (a shallow and a deep one
    see the pack's middle differently). The curves are weighed by how well the outages
    agree along each (chi-square, as a likelihood) and the capacity is the weighted mean,
    its uncertainty including the spread between curves; with a single outage to go on,
    the band over all chemistries is all there is."""
    usable = [o for o in outages if o.capacity() is not None]
    if not usable:
        return None
    if len(usable) < 2:
        c = usable[0].capacity()
        return c[0], c[1], [c]
    fits = []
    for chem in CHEMISTRY_CURVES:
        est = [c for c in (o.capacity(chem) for o in usable) if c is not None]
        if len(est) < 2:
            continue
        mean, sigma = combine(est)
        chi2 = sum(((c - mean) / s) ** 2 for c, s in est) / (len(est) - 1)
        fits.append((chi2, mean, sigma, est))
    if not fits:
        est = [o.capacity() for o in usable]
        mean, sigma = combine(est)
        return mean, sigma, est
    best = min(f[0] for f in fits)
    weights = [math.exp(-(chi2 - best) * (len(f[3]) - 1) / 2) for f in fits for chi2 in (f[0],)]
    total = sum(weights)
    mean = sum(w * f[1] for w, f in zip(weights, fits, strict=True)) / total
    # the fit's own uncertainty, widened where the outages disagree more than their sigmas say
    var = sum(w * ((f[2] * math.sqrt(max(f[0], 1.0))) ** 2 + (f[1] - mean) ** 2)
              for w, f in zip(weights, fits, strict=True)) / total
    chosen = max(zip(weights, fits, strict=True), key=lambda x: x[0])[1]
    return mean, math.sqrt(var), chosen[3]


def judge(record: BatteryRecord, nominal_ah: float, replace_below: float = 0.70,
          resistance_new_ohm: float | None = None,
          capacity_rb: tuple[tuple[float, float, list] | None, str | None] | None = None) -> BatteryKnowledge:
    """The knowledge a record gives: capacity with its uncertainty, resistance, cycles, RB.
    ``capacity_rb``: the capacity and its RB reason as judged before, when only the
    resistance or the throughput changed (the capacity's fit is the costly part)."""
    usable = [o for o in record.outages if o.capacity() is not None]
    history = tuple((o.time, o.capacity()[0], o.learned_ah) for o in usable if o.learned_ah is not None)
    found, capacity_reason = capacity_rb if capacity_rb is not None else _capacity_rb(usable, nominal_ah,
                                                                                     replace_below)
    cap, sigma = (found[0], found[1]) if found else (None, None)
    ohms = [r.ohm for r in record.resistances if r.how == "mains drop"]
    resistance = statistics.median(ohms[-RESISTANCE_RECENT_N:]) if ohms else None
    new = resistance_new_ohm or record.resistance_new_ohm
    reasons = [capacity_reason] if capacity_reason else []
    if new and resistance is not None and len(ohms) >= RESISTANCE_BASELINE_N + RESISTANCE_RECENT_N // 2 \
            and resistance >= 2 * new and resistance - new >= RESISTANCE_MIN_RISE_OHM:
        reasons.append(f"resistance {resistance * 1000:.0f} mOhm is {resistance / new:.1f} x the "
                       f"{new * 1000:.0f} mOhm of the pack when new")
    return BatteryKnowledge(
        nominal_ah=nominal_ah, capacity_ah=cap, capacity_sigma_ah=sigma, outages=len(usable),
        resistance_ohm=resistance, resistance_new_ohm=new, resistance_measurements=len(ohms),
        cycles=record.discharged_ah / nominal_ah if nominal_ah > 0 else 0.0,
        replace=bool(reasons), replace_reason="; ".join(reasons) or None, history=history,
        capacity_rb=(found, capacity_reason))


def _capacity_rb(usable: list[OutageRecord], nominal_ah: float,
                 replace_below: float) -> tuple[tuple[float, float, list] | None, str | None]:
    """The capacity, and why it calls for a new battery (None if it does not)."""
    found = capacity_of(usable)
    if found is None or len(usable) < MIN_OUTAGES_FOR_RB:
        return found, None
    cap, sigma, est = found
    mark = replace_below * nominal_ah
    if cap >= mark or sigma > RB_MAX_SIGMA * nominal_ah:
        return found, None
    # one outage must not decide it against the others: without the most telling one, they
    # must not say the opposite (the capacity above the mark at 3 sigma; at 2 sigma, shallow
    # outages, which see an aged pack's shifted middle, vetoed the one that reached the knee)
    if len(est) == len(usable):
        heaviest = min(range(len(est)), key=lambda i: est[i][1])
        rest = capacity_of(usable[:heaviest] + usable[heaviest + 1:])
        if rest is None or rest[0] - 3 * rest[1] >= mark:
            return found, None
    return found, (f"capacity {cap:.2f} Ah is {100 * cap / nominal_ah:.0f} % of nominal "
                   f"(replace below {100 * replace_below:.0f} %), over {len(usable)} outages")


@dataclass
class _Outage:
    started: float
    v_before: float | None
    soc_before: tuple[float, float] | None
    ah: float = 0.0
    seconds_by_source: dict[str, float] = field(default_factory=dict)
    last: tuple[float, float, float] | None = None  # t, volts, pack amperes of the previous reading
    step_seen: bool = False  # the drop from rest has been measured (or could not be)
    back: float | None = None  # when mains came back: the rest runs from then
    resumed: float = 0.0  # when the pack last went on battery (the start, or mains lost again in the rest)
    kind: str = "outage"


class BatteryLearner:
    """Follows one pack through mains and outages, fed by the driver's readings (its own clock)."""

    def __init__(self, nominal_ah: float, record: BatteryRecord | None = None, replace_below: float = 0.70,
                 rest_s: float = 600.0, resistance_new_ohm: float | None = None, efficiency: float = EFFICIENCY,
                 wall: Callable[[], float] | None = None, on_change: Callable[[BatteryRecord], None] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        import time as _time

        self.nominal_ah = nominal_ah
        self.record = record or BatteryRecord()
        self.replace_below = replace_below
        self.rest_s = rest_s
        self.resistance_new_ohm = resistance_new_ohm
        self.efficiency = efficiency
        self.wall = wall or _time.time
        self.on_change = on_change  # after a new record: persist it
        self.log = log or (lambda text: None)
        self._rest: tuple[float, float, bool] | None = None  # t, volts, full: the last resting reading on mains
        self._outage: _Outage | None = None
        self._knowledge = self._judge()

    # --- the judgement -------------------------------------------------------------

    def _judge(self) -> BatteryKnowledge:
        return judge(self.record, self.nominal_ah, self.replace_below, self.resistance_new_ohm)

    def knowledge(self) -> BatteryKnowledge:
        return self._knowledge

    def _changed(self, capacity: bool = True) -> None:
        if self.record.since is None:
            self.record.since = self.wall()
        self._knowledge = judge(self.record, self.nominal_ah, self.replace_below, self.resistance_new_ohm,
                                None if capacity else self._knowledge.capacity_rb)
        if self.on_change is not None:
            self.on_change(self.record)

    # --- readings --------------------------------------------------------------------

    def holding_charger(self, t: float) -> bool:
        """Whether the charger must stay off: the rest after an outage, for the resting voltage."""
        o = self._outage
        return o is not None and o.back is not None and t - o.back < self.rest_s

    @property
    def discharging(self) -> bool:
        """In an outage (or a battery test) now."""
        return self._outage is not None and self._outage.back is None

    def on_mains(self, t: float, volts: float, resting: bool, full: bool) -> None:
        """A reading on mains. ``resting``: no current in or out of the pack (charger idle or
        held off); ``full``: the charger ended its charge (CC/CV at 4.2 V)."""
        o = self._outage
        if o is not None and o.back is not None:
            if t - o.back >= self.rest_s and resting:
                self._finish(t, volts)
            return
        if resting:
            self._rest = (t, volts, full)
        else:
            self._rest = None

    def mains_lost(self, t: float, kind: str = "outage") -> None:
        o = self._outage
        if o is not None:  # lost again during the rest: the same outage goes on
            o.back = None
            o.last = None
            o.resumed = t
            return
        rest = self._rest
        soc = v = None
        if rest is not None and t - rest[0] <= REST_BEFORE_MAX_AGE_S:
            v = rest[1]
            soc = (100.0, FULL_SIGMA_PCT) if rest[2] else charge_at_rest(v)
        self._outage = _Outage(t, v, soc, kind=kind, step_seen=v is None, resumed=t)
        self._rest = None

    def on_battery(self, t: float, volts: float, load_w: float, source: str, fresh: bool = True) -> None:
        """A reading on battery: the pack's voltage, and the Pi's load at 5 V from ``source``
        (pmic, plug or prior); ``fresh``: the load was measured at this moment."""
        o = self._outage
        if o is None or o.back is not None:
            self.mains_lost(t)
            o = self._outage
        if volts <= 0:
            return
        amps = load_w / self.efficiency / volts
        t0, a0 = (o.last[0], o.last[2]) if o.last is not None else (o.resumed, amps)
        dt = max(t - t0, 0.0)
        ah = (a0 + amps) / 2 * dt / 3600.0
        o.ah += ah
        self.record.discharged_ah += ah
        o.seconds_by_source[source] = o.seconds_by_source.get(source, 0.0) + dt
        if o.last is not None:
            v0 = o.last[1]
            if fresh and source == "pmic" and dt <= STEP_MAX_GAP_S and abs(amps - a0) >= MIN_STEP_A:
                self._resistance((v0 - volts) / (amps - a0), "load step")
        elif not o.step_seen and o.v_before is not None and t - o.started <= STEP_MAX_GAP_S:
            if source != "prior" and amps >= MIN_STEP_A:  # the drop from rest as mains went
                self._resistance((o.v_before - volts) / amps, "mains drop")
        o.step_seen = True
        o.last = (t, volts, amps)

    def mains_back(self, t: float) -> None:
        o = self._outage
        if o is None or o.back is not None:
            return
        o.back = t
        o.last = None

    def abandon(self) -> None:
        """Forget an outage in progress (its rest cannot be had)."""
        self._outage = None

    def _resistance(self, ohm: float, how: str) -> None:
        if not 0 < ohm < MAX_RESISTANCE_OHM:
            return
        rec = self.record
        rec.resistances.append(ResistanceRecord(self.wall(), round(ohm, 5), how))
        del rec.resistances[:-KEEP_RESISTANCES]
        if rec.resistance_new_ohm is None and len(rec.resistances) >= RESISTANCE_BASELINE_N:
            drops = [r.ohm for r in rec.resistances if r.how == "mains drop"]
            if len(drops) >= RESISTANCE_BASELINE_N:
                rec.resistance_new_ohm = statistics.median(drops[:RESISTANCE_BASELINE_N])
        self._changed(capacity=False)

    def _finish(self, t: float, volts: float) -> None:
        o = self._outage
        self._outage = None
        self._rest = (t, volts, False)
        seconds = sum(o.seconds_by_source.values())
        # the least trustworthy source that carried a tenth of the outage or more
        order = ("prior", "plug", "pmic")
        used = [s for s in order if o.seconds_by_source.get(s, 0.0) >= 0.1 * seconds] or ["prior"]
        after = charge_at_rest(volts)
        rec = OutageRecord(
            time=self.wall(), seconds=round(seconds, 1), ah=round(o.ah, 5), load_source=used[0],
            soc_before=None if o.soc_before is None else round(o.soc_before[0], 3),
            soc_before_sigma=0.0 if o.soc_before is None else round(o.soc_before[1], 3),
            soc_after=round(after[0], 3), soc_after_sigma=round(after[1], 3),
            v_before=o.v_before, v_after=round(volts, 4), kind=o.kind)
        self.record.outages.append(rec)
        del self.record.outages[:-KEEP_OUTAGES]
        c = rec.capacity()
        before = self._knowledge
        self._changed()
        k = self._knowledge
        rec.learned_ah = None if k.capacity_ah is None or c is None else round(k.capacity_ah, 4)
        if rec.learned_ah is not None:
            self._changed()  # with its place in the history
        if c is None:
            self.log(f"{o.kind}: {rec.ah:.3f} Ah in {seconds / 60:.0f} min ({rec.load_source}), resting "
                     f"{rec.v_before or 0:.3f} -> {volts:.3f} V: too little to say anything of the capacity")
        else:
            self.log(f"{o.kind}: {rec.ah:.3f} Ah in {seconds / 60:.0f} min ({rec.load_source}) over "
                     f"{rec.span_pct:.0f} % of the pack: {c[0]:.2f} +- {c[1]:.2f} Ah; capacity now "
                     f"{k.capacity_ah:.2f} +- {k.capacity_sigma_ah:.2f} Ah over {k.outages} outages"
                     f"{'' if before.capacity_ah is None else f' (was {before.capacity_ah:.2f})'}")
