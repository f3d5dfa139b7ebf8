"""Discharge curves of real cells (tests/data/cells/*.csv), read and interpolated for the simulator to replay.

A file holds constant-power discharges of one published cell model, scaled to the
X120X packs (see tests/data/cells/README.md and scripts/make_cell_curves.py): rows of
``w_per_ah`` (the pack's power per nominal Ah), ``t_s``, ``v`` (terminal voltage under
that load) and ``q`` (charge delivered, Ah per nominal Ah), from 4.2 V at rest down to
the cut-off.  Between two loads the curves are blended at the same depth of discharge
(the fraction of the charge deliverable at that load), so the end of a curve meets the
end of its neighbour instead of a vertical interpolation across the knee.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

COLUMNS = ("w_per_ah", "t_s", "v", "q")


class CellDataError(ValueError):
    """A cell file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class DischargeCurve:
    """One constant-power discharge, per nominal Ah: charge (Ah/Ah), voltage, cumulative energy (Wh/Ah), time."""

    w_per_ah: float
    q: tuple[float, ...]
    v: tuple[float, ...]
    energy: tuple[float, ...]  # Wh per nominal Ah delivered up to each point
    t: tuple[float, ...]

    @property
    def q_end(self) -> float:
        return self.q[-1]

    @property
    def energy_end(self) -> float:
        return self.energy[-1]

    def _at(self, q: float, ys: tuple[float, ...]) -> float:
        q = min(max(q, 0.0), self.q_end)
        i = min(max(bisect.bisect_right(self.q, q), 1), len(self.q) - 1)
        q0, q1 = self.q[i - 1], self.q[i]
        w = (q - q0) / (q1 - q0) if q1 > q0 else 1.0
        return ys[i - 1] + (ys[i] - ys[i - 1]) * w

    def voltage(self, q: float) -> float:
        return self._at(q, self.v)

    def energy_at(self, q: float) -> float:
        """Energy delivered up to charge ``q`` (the integral of the piecewise-linear voltage)."""
        q = min(max(q, 0.0), self.q_end)
        i = min(max(bisect.bisect_right(self.q, q), 1), len(self.q) - 1)
        v_q = self.voltage(q)
        return self.energy[i - 1] + (self.v[i - 1] + v_q) / 2 * (q - self.q[i - 1])


class CellCurves:
    """All the loads of one cell; answers for any load within them by blending the two nearest."""

    def __init__(self, name: str, curves: list[DischargeCurve], source: str = "") -> None:
        if not curves:
            raise CellDataError(f"{name}: no curves")
        self.name = name
        self.source = source
        self.curves = sorted(curves, key=lambda c: c.w_per_ah)
        self._powers = [c.w_per_ah for c in self.curves]

    @property
    def min_w_per_ah(self) -> float:
        return self._powers[0]

    @property
    def max_w_per_ah(self) -> float:
        return self._powers[-1]

    @property
    def cutoff_v(self) -> float:
        return min(c.v[-1] for c in self.curves)

    @classmethod
    def load(cls, path: str | Path) -> CellCurves:
        """Read a CSV written by scripts/make_cell_curves.py ('#' lines are comments)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise CellDataError(f"{path}: cannot read: {exc.strerror or exc}") from None
        rows: dict[float, list[tuple[float, float, float]]] = {}
        header_seen = False
        source = []
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                source.append(line.lstrip("# "))
                continue
            fields = [f.strip() for f in line.split(",")]
            if not header_seen:
                if tuple(fields) != COLUMNS:
                    raise CellDataError(f"{path}:{n}: expected the header {','.join(COLUMNS)}, got {line!r}")
                header_seen = True
                continue
            if len(fields) != len(COLUMNS):
                raise CellDataError(f"{path}:{n}: {len(fields)} fields, expected {len(COLUMNS)}")
            try:
                p, t, v, q = (float(f) for f in fields)
            except ValueError:
                raise CellDataError(f"{path}:{n}: not a number in {line!r}") from None
            if not (p > 0 and t >= 0 and 0 < v < 5 and q >= 0):
                raise CellDataError(f"{path}:{n}: out of range (w_per_ah > 0, t_s >= 0, 0 < v < 5, q >= 0)")
            pts = rows.setdefault(p, [])
            if pts and (q <= pts[-1][2] or t <= pts[-1][0]):
                raise CellDataError(f"{path}:{n}: time and charge must rise within a curve")
            pts.append((t, v, q))
        if not header_seen:
            raise CellDataError(f"{path}: no header line {','.join(COLUMNS)}")
        curves = []
        for p, pts in rows.items():
            if len(pts) < 2:
                raise CellDataError(f"{path}: the curve at {p} W/Ah has fewer than two points")
            energy = [0.0]
            for (_, v0, q0), (_, v1, q1) in zip(pts, pts[1:], strict=False):
                energy.append(energy[-1] + (v0 + v1) / 2 * (q1 - q0))
            curves.append(DischargeCurve(p, tuple(x[2] for x in pts), tuple(x[1] for x in pts),
                                         tuple(energy), tuple(x[0] for x in pts)))
        return cls(path.stem, curves, " ".join(source[:1]))

    def _pair(self, w_per_ah: float) -> tuple[DischargeCurve, DischargeCurve, float]:
        """The two curves around a load, and the weight of the upper one (loads outside are clamped)."""
        p = min(max(w_per_ah, self._powers[0]), self._powers[-1])
        i = min(max(bisect.bisect_left(self._powers, p), 1), len(self._powers) - 1) if len(self._powers) > 1 else 0
        lo, hi = self.curves[max(i - 1, 0)], self.curves[i]
        w = (p - lo.w_per_ah) / (hi.w_per_ah - lo.w_per_ah) if hi.w_per_ah > lo.w_per_ah else 1.0
        return lo, hi, w

    def q_end(self, w_per_ah: float) -> float:
        """Charge deliverable at this load before the cut-off, Ah per nominal Ah."""
        lo, hi, w = self._pair(w_per_ah)
        return lo.q_end + (hi.q_end - lo.q_end) * w

    def energy_total(self, w_per_ah: float) -> float:
        """Energy deliverable from full at this load, Wh per nominal Ah."""
        lo, hi, w = self._pair(w_per_ah)
        return lo.energy_end + (hi.energy_end - lo.energy_end) * w

    def depth(self, q: float, w_per_ah: float) -> float:
        """Depth of discharge at this load: 0 full, 1 at the cut-off."""
        return q / self.q_end(w_per_ah)

    def voltage(self, q: float, w_per_ah: float) -> float:
        """Terminal voltage under this load after delivering ``q`` Ah per nominal Ah."""
        lo, hi, w = self._pair(w_per_ah)
        s = min(max(self.depth(q, w_per_ah), 0.0), 1.0)
        return lo.voltage(s * lo.q_end) * (1 - w) + hi.voltage(s * hi.q_end) * w

    def energy_left(self, q: float, w_per_ah: float) -> float:
        """Energy still deliverable at this load down to the cut-off, Wh per nominal Ah."""
        lo, hi, w = self._pair(w_per_ah)
        s = min(max(self.depth(q, w_per_ah), 0.0), 1.0)
        left_lo = lo.energy_end - lo.energy_at(s * lo.q_end)
        left_hi = hi.energy_end - hi.energy_at(s * hi.q_end)
        return left_lo * (1 - w) + left_hi * w

    def seconds_left(self, q: float, w_per_ah: float) -> float:
        """True time to the cut-off at a constant load from charge ``q``."""
        return self.energy_left(q, w_per_ah) * 3600.0 / w_per_ah
