"""Li-ion cell chemistries: each one's open-circuit voltage curve and loaded-voltage floor, from published data.

The X120X boards take whatever 18650 (or 21700) cells their owner fitted; near empty the
cells' voltages sit far apart (at the same charge left an LCO cell rests some 0.4 V above an
NMC one), so the runtime estimate near empty, which reads the charge left off the voltage,
needs the chemistry's own curve. ``generic`` is the conservative curve nutups always had (it
reads empty at 3.27 V: never high on any of them, 30-100 minutes low on NMC and NCA).

The curves (state of charge %, volts at rest) come from scripts/make_ocv_curves.py: the
full cell's OCV from each paper's measured electrode potentials and the electrode balance,
between 2.5 V and 4.2 V at rest. Provenance in docs/runtime.md.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

EMPTY_V = 2.5  # volts under load where a cell is empty: the 18650's usual discharge limit (no cut-off on the HAT)


@dataclass(frozen=True)
class OcvCurve:
    """A cell's resting voltage against its state of charge (percent), linear between points."""

    points: tuple[tuple[float, float], ...]
    _socs: list[float] = field(init=False, repr=False, compare=False)
    _volts: list[float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        socs, volts = [p[0] for p in self.points], [p[1] for p in self.points]
        if socs[0] != 0 or socs[-1] != 100 or any(b <= a for a, b in zip(socs, socs[1:], strict=False)) \
                or any(b <= a for a, b in zip(volts, volts[1:], strict=False)):
            raise ValueError("an OCV curve runs from 0 to 100 % and rises monotonically")
        object.__setattr__(self, "_socs", socs)
        object.__setattr__(self, "_volts", volts)

    @property
    def empty_v(self) -> float:
        return self._volts[0]

    def ocv(self, soc: float) -> float:
        """Open-circuit cell voltage at a state of charge (percent)."""
        socs, volts = self._socs, self._volts
        soc = min(max(soc, 0.0), 100.0)
        i = min(bisect.bisect_right(socs, soc), len(socs) - 1)
        s0, s1, v0, v1 = socs[i - 1], socs[i], volts[i - 1], volts[i]
        return v0 + (v1 - v0) * (soc - s0) / (s1 - s0)

    def soc_at(self, volts: float) -> float:
        """The state of charge (percent) at this open-circuit voltage: the inverse of :meth:`ocv`."""
        socs, vs = self._socs, self._volts
        if volts <= vs[0]:
            return 0.0
        if volts >= vs[-1]:
            return 100.0
        i = bisect.bisect_right(vs, volts)
        v0, v1, s0, s1 = vs[i - 1], vs[i], socs[i - 1], socs[i]
        return s0 + (s1 - s0) * (volts - v0) / (v1 - v0)


@dataclass(frozen=True)
class Chemistry:
    name: str
    description: str
    curve: OcvCurve
    floor_v: float  # volts per cell under load: the default backstop (the driver's LB, the shutdown's floor)
    source: str
    empty_v: float = EMPTY_V  # volts under load the runtime estimate counts down to
    # Until a measured resistance is given (RuntimeEstimator.use_measured), the low end of a cell's and of the
    # board's: one taken too high reads the charge left, and so the runtime, too high (docs/runtime.md)
    cell_ohm: float = 0.03
    board_ohm: float = 0.01


# The conservative curve nutups had before chemistries (boards.OCV_CURVE): empty at 3.27 V.
GENERIC_OCV = OcvCurve((
    (0, 3.27), (5, 3.61), (10, 3.69), (15, 3.71), (20, 3.73), (25, 3.75), (30, 3.77),
    (35, 3.79), (40, 3.80), (45, 3.82), (50, 3.84), (55, 3.85), (60, 3.87), (65, 3.91),
    (70, 3.95), (75, 3.98), (80, 4.02), (85, 4.08), (90, 4.11), (95, 4.15), (100, 4.20),
))
# scripts/make_ocv_curves.py, PyBaMM 26.10 parameter set Chen2020 (LG M50: NMC811 / graphite-SiOx)
NMC_OCV = OcvCurve((
    (0.00, 2.500), (0.45, 2.604), (0.90, 2.693), (1.35, 2.770), (1.85, 2.843), (2.40, 2.910), (2.95, 2.967),
    (4.25, 3.067), (5.60, 3.138), (7.35, 3.206), (12.20, 3.370), (14.75, 3.430), (17.15, 3.461),
    (24.35, 3.522), (33.45, 3.616), (45.45, 3.709), (62.30, 3.861), (69.60, 3.944), (81.55, 4.056),
    (85.55, 4.084), (91.85, 4.102), (94.45, 4.118), (97.00, 4.149), (100.00, 4.200),
))
# ... parameter set NCA_Kim2011 (NCA / graphite)
NCA_OCV = OcvCurve((
    (0.00, 2.500), (0.10, 2.578), (0.25, 2.676), (0.40, 2.755), (0.55, 2.820), (0.70, 2.874), (0.90, 2.931),
    (1.30, 3.014), (1.75, 3.074), (2.35, 3.122), (3.10, 3.155), (4.05, 3.178), (35.35, 3.549),
    (43.40, 3.628), (63.65, 3.801), (74.55, 3.924), (92.35, 4.105), (100.00, 4.200),
))
# ... parameter set Marquis2019 (LiCoO2 / graphite, Dualfoil's electrode data); its electrode balance tops out
# at 4.171 V at rest (the HAT's charger stops at 4.2 V): above it the curve reads full
LCO_OCV = OcvCurve((
    (0.00, 2.500), (0.40, 2.668), (0.75, 2.801), (1.10, 2.919), (1.50, 3.039), (1.85, 3.130), (2.25, 3.221),
    (2.65, 3.298), (3.10, 3.370), (3.55, 3.429), (4.00, 3.478), (5.05, 3.559), (6.30, 3.616), (7.85, 3.653),
    (9.95, 3.676), (13.00, 3.688), (36.25, 3.707), (43.85, 3.736), (60.30, 3.775), (71.25, 3.824),
    (83.20, 3.893), (85.45, 3.911), (87.15, 3.942), (90.25, 4.035), (92.00, 4.074), (93.65, 4.097),
    (96.55, 4.120), (98.60, 4.159), (100.00, 4.171),
))

CHEMISTRIES: dict[str, Chemistry] = {c.name: c for c in (
    Chemistry("generic", "any Li-ion cell (conservative: reads empty early on NMC and NCA)", GENERIC_OCV, 3.2,
              "nutups' table before chemistries"),
    Chemistry("nmc", "NMC (LiNiMnCoO2) / graphite, e.g. LG M50, LG MJ1, Samsung 35E", NMC_OCV, 2.8,
              "Chen et al. 2020, J. Electrochem. Soc. 167 080534 (PyBaMM Chen2020)", EMPTY_V + 0.15, 0.01),
    Chemistry("nca", "NCA (LiNiCoAlO2) / graphite, e.g. Panasonic NCR18650B", NCA_OCV, 2.9,
              "Kim et al. 2011, J. Electrochem. Soc. 158 A955 (PyBaMM NCA_Kim2011)", EMPTY_V + 0.1, 0.0, 0.0),
    Chemistry("lco", "LCO (LiCoO2) / graphite, e.g. most ICR18650 cells", LCO_OCV, 3.0,
              "Marquis et al. 2019, J. Electrochem. Soc. 166 A3693 (PyBaMM Marquis2019)", 2.9, 0.03),
)}
# LiFePO4 cells rest at 3.2-3.3 V and must not be charged above 3.65 V: the X120X's charger takes
# every cell to 4.2 V, so nutups refuses the chemistry rather than estimate for a pack being overcharged.
REFUSED = {"lfp": "LiFePO4 cells must not be charged above 3.65 V, and the X120X's charger takes its cells to "
                  "4.2 V: do not fit LFP cells to this HAT"}
