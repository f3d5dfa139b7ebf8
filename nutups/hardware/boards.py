"""The X120X boards: cells, default capacity, and the Li-ion cell's open-circuit voltage curve."""

from __future__ import annotations

from dataclasses import dataclass

from .chemistry import GENERIC_OCV


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

# Resting (open-circuit) voltage of one Li-ion cell against its state of charge: the generic, conservative
# curve (the simulator's own cell; the estimate's default). The chemistries' curves: hardware/chemistry.py.
OCV_CURVE: tuple[tuple[float, float], ...] = GENERIC_OCV.points


def ocv(soc: float) -> float:
    """Open-circuit cell voltage at a state of charge (percent), linear between table points."""
    return GENERIC_OCV.ocv(soc)


def soc_at_ocv(volts: float) -> float:
    """Inverse of :func:`ocv` (the curve rises monotonically)."""
    return GENERIC_OCV.soc_at(volts)
