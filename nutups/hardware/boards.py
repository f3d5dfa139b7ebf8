"""The X120X boards: cells, default capacity, and the Li-ion cell's open-circuit voltage curve."""

from __future__ import annotations

import bisect
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Board:
    name: str
    cells_parallel: int  # every X120X is 1S: cells only ever add capacity
    capacity_mah: int  # default pack capacity
    description: str


BOARDS: dict[str, Board] = {b.name: b for b in (
    Board("x1200", 2, 6000, "2 x 18650 for the Pi 5 (pogo pins)"),
    Board("x1201", 1, 3000, "1 x 18650"),
    Board("x1202", 4, 12000, "4 x 18650, 5.1 V / 5 A out"),
    Board("x1203", 4, 12000, "external X12-A1 pack, 4 x 18650"),
    Board("x1205", 1, 3000, "1 x 18650"),
    Board("x1206", 1, 3000, "1 x 18650"),
    Board("x1207", 1, 5000, "1 x 21700, PoE+ or USB-C in"),
    Board("x1208", 1, 5000, "1 x 21700, with NVMe"),
    Board("x1209", 1, 10000, "external 4.2 V pack, 5 V / 6 A out"),
)}

NOMINAL_CELL_VOLTAGE = 3.7
FULL_CELL_VOLTAGE = 4.2

# Resting (open-circuit) voltage of one Li-ion cell against its state of charge.
OCV_CURVE: tuple[tuple[float, float], ...] = (
    (0, 3.27), (5, 3.61), (10, 3.69), (15, 3.71), (20, 3.73), (25, 3.75), (30, 3.77),
    (35, 3.79), (40, 3.80), (45, 3.82), (50, 3.84), (55, 3.85), (60, 3.87), (65, 3.91),
    (70, 3.95), (75, 3.98), (80, 4.02), (85, 4.08), (90, 4.11), (95, 4.15), (100, 4.20),
)
_SOCS = [p[0] for p in OCV_CURVE]
_VOLTS = [p[1] for p in OCV_CURVE]


def ocv(soc: float) -> float:
    """Open-circuit cell voltage at a state of charge (percent), linear between table points."""
    soc = min(max(soc, 0.0), 100.0)
    i = min(bisect.bisect_right(_SOCS, soc), len(_SOCS) - 1)
    s0, s1 = _SOCS[i - 1], _SOCS[i]
    v0, v1 = _VOLTS[i - 1], _VOLTS[i]
    return v0 + (v1 - v0) * (soc - s0) / (s1 - s0)


def soc_at_ocv(volts: float) -> float:
    """Inverse of :func:`ocv` (the curve rises monotonically)."""
    if volts <= _VOLTS[0]:
        return 0.0
    if volts >= _VOLTS[-1]:
        return 100.0
    i = bisect.bisect_right(_VOLTS, volts)
    v0, v1 = _VOLTS[i - 1], _VOLTS[i]
    s0, s1 = _SOCS[i - 1], _SOCS[i]
    return s0 + (s1 - s0) * (volts - v0) / (v1 - v0)
