"""The resting voltage of a 1S Li-ion pack against its state of charge, as a band over chemistries.

A resting (open-circuit) voltage says how full a cell is only as well as one knows its
chemistry: at 3.4 V an LCO cell is nearly empty while an NCA cell still holds a fifth of
its charge. nutups does not know which 18650s are in the HAT, so it keeps, for each
voltage, the lowest and the highest state of charge of four published Li-ion cell
models (the Doyle-Fuller-Newman models of PyBaMM 26.10: LG M50 NMC811 per Chen 2020 and
O'Regan 2022, NCA per Kim 2011, LCO per Ai 2020; resting voltage taken as the voltage at
their lightest discharge, 0.28 W per Ah; empty at 2.5 V, the usual cut-off; the
generator is scripts/make_cell_curves.py). The middle of the band is the estimate and
its width the uncertainty: steep near full and near empty, so the charge is well known
there, and wide on the flat middle, where a resting voltage says little.
"""

from __future__ import annotations

import bisect
import math

# (volts, lowest %, highest %) over the four cell models
RESTING_BAND: tuple[tuple[float, float, float], ...] = (
    (2.50, 0.0, 0.0), (2.55, 0.0, 0.2), (2.60, 0.0, 0.4), (2.65, 0.0, 0.7), (2.70, 0.1, 1.0),
    (2.75, 0.1, 1.3), (2.80, 0.2, 1.6), (2.85, 0.3, 2.0), (2.90, 0.3, 2.4), (2.95, 0.5, 2.9),
    (3.00, 0.6, 3.5), (3.05, 0.8, 4.4), (3.10, 1.0, 5.5), (3.15, 1.2, 6.8), (3.20, 1.5, 8.1),
    (3.25, 1.9, 10.6), (3.30, 2.3, 14.6), (3.35, 2.8, 18.6), (3.40, 3.4, 22.6), (3.45, 4.2, 26.8),
    (3.50, 5.0, 31.2), (3.55, 6.1, 35.6), (3.60, 7.9, 40.7), (3.65, 14.9, 47.4), (3.70, 24.2, 53.2),
    (3.75, 40.0, 57.9), (3.80, 54.2, 63.7), (3.85, 63.0, 68.1), (3.90, 67.4, 72.5), (3.95, 72.4, 77.3),
    (4.00, 77.8, 82.2), (4.05, 83.4, 87.3), (4.10, 92.1, 94.8), (4.15, 96.4, 98.9), (4.20, 100.0, 100.0),
)
_VOLTS = [row[0] for row in RESTING_BAND]
FLOOR_PCT = 0.5  # the least uncertainty granted anywhere (the gauge's 78 uV and the table's own steps)


def charge_at_rest(volts: float) -> tuple[float, float]:
    """State of charge (%) at a resting voltage, and its standard uncertainty (%): the middle
    of the band, and its width as a uniform spread (width / sqrt 12)."""
    if volts <= _VOLTS[0]:
        return 0.0, FLOOR_PCT
    if volts >= _VOLTS[-1]:
        return 100.0, FLOOR_PCT
    i = bisect.bisect_right(_VOLTS, volts)
    (v0, lo0, hi0), (v1, lo1, hi1) = RESTING_BAND[i - 1], RESTING_BAND[i]
    w = (volts - v0) / (v1 - v0)
    lo, hi = lo0 + (lo1 - lo0) * w, hi0 + (hi1 - hi0) * w
    return (lo + hi) / 2, max((hi - lo) / math.sqrt(12), FLOOR_PCT)


# The resting curves themselves, % at each of CURVE_VOLTS (2.5 to 4.2 V, 25 mV apart), one per
# published model: a pack's own resting points pick the one it follows (learning.judge).
CURVE_VOLTS: tuple[float, ...] = tuple(round(2.5 + 0.025 * k, 3) for k in range(69))
CHEMISTRY_CURVES: dict[str, tuple[float, ...]] = {
    "LCO (Ai 2020)": (
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.3, 0.3, 0.3, 0.4, 0.5, 0.5,
        0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.4, 1.5, 1.7, 1.9, 2.1, 2.3, 2.6, 2.8, 3.1, 3.4, 3.8, 4.2, 4.6,
        5.0, 5.5, 6.1, 6.8, 7.9, 10.6, 14.9, 19.3, 24.2, 32.1, 40.0, 47.9, 54.2, 59.4, 64.0, 67.0, 70.1,
        73.2, 76.2, 79.2, 81.9, 84.6, 87.3, 89.8, 92.3, 94.8, 97.2, 99.2, 100.0
    ),
    "NMC811 (LG M50, Chen 2020)": (
        0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 1.0, 1.1, 1.3, 1.4, 1.6, 1.8, 2.0, 2.2, 2.4, 2.7, 2.9, 3.2,
        3.5, 3.9, 4.3, 4.7, 5.2, 5.8, 6.4, 7.1, 7.8, 8.5, 9.2, 9.9, 10.6, 11.4, 12.2, 13.1, 14.2, 15.9,
        18.2, 21.0, 23.9, 26.4, 28.8, 31.2, 33.8, 37.0, 40.3, 43.5, 46.6, 49.4, 52.1, 54.9, 57.6, 60.4,
        63.0, 65.2, 67.4, 69.8, 72.4, 75.1, 77.8, 80.4, 83.4, 88.3, 94.8, 97.0, 98.9, 99.8, 100.0
    ),
    "NMC811 (LG M50, O'Regan 2022)": (
        0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.1, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2, 2.5, 2.8, 3.1,
        3.5, 3.9, 4.4, 4.9, 5.5, 6.2, 6.8, 7.4, 8.1, 8.7, 9.4, 10.1, 10.9, 12.1, 13.7, 16.4, 19.0, 21.2,
        23.4, 25.6, 27.8, 30.0, 33.3, 36.8, 40.3, 43.9, 47.4, 50.3, 53.2, 55.5, 57.4, 59.3, 61.2, 63.1,
        65.4, 67.9, 70.5, 73.0, 75.5, 77.8, 80.1, 82.4, 84.8, 88.3, 94.5, 96.6, 98.2, 99.4, 100.0
    ),
    "NCA (Kim 2011)": (
        0.0, 0.0, 0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5, 0.6, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1,
        1.2, 1.4, 1.6, 1.8, 2.1, 2.4, 3.0, 4.0, 6.2, 8.5, 10.6, 12.6, 14.6, 16.6, 18.6, 20.6, 22.6, 24.6,
        26.8, 29.0, 31.2, 33.3, 35.6, 38.1, 40.7, 43.2, 46.2, 49.1, 52.0, 54.9, 57.9, 60.8, 63.7, 65.9,
        68.1, 70.3, 72.5, 74.8, 77.3, 79.7, 82.2, 84.7, 87.1, 89.6, 92.1, 94.2, 96.4, 98.3, 100.0
    ),
}
# A pack's own resting curve differs from the model it follows (ageing shifts the electrodes'
# windows): by this share of the chemistries' spread at that voltage, so little near empty
# and full, where all curves meet, and more on the flat middle.
CURVE_SHARE_OF_BAND = 0.5
# ... and at least this much above 3.3 V: ageing moves the electrodes' windows against each
# other (the aged packs of tests/data/cells sit 1 to 5 % off their fresh curve there), while
# near empty every curve falls to 0 % together (so the floor tapers to nothing at 2.5 V).
AGEING_SHIFT_PCT = 2.0
AGEING_SHIFT_FROM_V = 3.3


def charge_on_curve(chemistry: str, volts: float) -> float:
    """State of charge (%) at a resting voltage on one chemistry's curve."""
    curve = CHEMISTRY_CURVES[chemistry]
    if volts <= CURVE_VOLTS[0]:
        return curve[0]
    if volts >= CURVE_VOLTS[-1]:
        return curve[-1]
    i = bisect.bisect_right(CURVE_VOLTS, volts)
    w = (volts - CURVE_VOLTS[i - 1]) / (CURVE_VOLTS[i] - CURVE_VOLTS[i - 1])
    return curve[i - 1] + (curve[i] - curve[i - 1]) * w


def curve_sigma(volts: float) -> float:
    """The uncertainty (%) of a state of charge read on one chemistry's curve at this voltage."""
    shift = AGEING_SHIFT_PCT * min(max((volts - 2.5) / (AGEING_SHIFT_FROM_V - 2.5), 0.0), 1.0)
    return max(CURVE_SHARE_OF_BAND * charge_at_rest(volts)[1], shift, FLOOR_PCT)
