"""Makes tests/data/cells/*.csv: constant-power discharges of published cell models, scaled to the X120X packs.

Not part of nutups and not run by CI: it needs PyBaMM (pip install pybamm, in a venv
of its own). The tests replay the CSVs it writes, so that the runtime estimate is
checked against batteries nutups did not write.

    python3 -m venv /tmp/pybamm && /tmp/pybamm/bin/pip install pybamm
    /tmp/pybamm/bin/python scripts/make_cell_curves.py            # writes tests/data/cells/
    /tmp/pybamm/bin/python scripts/make_cell_curves.py --only lgm50-chen2020-aged nca-kim2011-aged

What it does, per parameter set:
- the Doyle-Fuller-Newman model (pybamm.lithium_ion.DFN), isothermal at the parameter
  set's own ambient temperature (25 C), starting at rest at 4.2 V open circuit (what the
  HAT's CC/CV charger leaves: it stops at 4.2 V);
- constant-power discharges down to 2.5 V (the X120X has no undervoltage cut-off: the
  cell is run down until the boost converter gives up; 2.5 V is the usual 18650
  discharge limit and the LG M50's own);
- scaling: every X120X board is 1S, with 1, 2 or 4 cells in parallel. Each model cell is
  rescaled to an 18650 of CELL_AH (the boards' default capacity per cell) by scaling its
  electrode area, which scales the current at a given voltage: a model cell of capacity
  C_model run at P * C_model / CELL_AH watts is the 18650 run at P watts. The curves are
  therefore stored per unit of nominal capacity: power in W per nominal Ah of the pack,
  charge in Ah per nominal Ah, time in seconds (the same for any pack at that W/Ah);
- loads: the Pi draws LOADS_W at 5 V; the pack delivers that through the HAT's boost
  converter at EFFICIENCY (an assumption: the vendor publishes no efficiency curve;
  nutups' simulator and estimator use the same 0.9, so the efficiency is not what these
  curves test). One curve per distinct W/Ah over the 1P, 2P and 4P packs;
- aged packs (AGED): the same cell with the degradation modes of a worn cell set in its
  parameters (Birkl et al. 2017, J. Power Sources 341 373, "Degradation diagnostics for
  lithium ion cells"): loss of active material in both electrodes (LAM_NE, LAM_PE: the
  active material volume fractions scaled by 1 - x), loss of lithium inventory (LLI: the
  negative electrode's initial lithium concentration scaled by 1 - x, so the electrode-SOH
  solve finds less cyclable lithium), and the resistance an aged cell's SEI film adds, as
  a lumped series resistance (PyBaMM's "contact resistance" option, R_SEI ohm per 3 Ah
  cell). The charge column stays per *nominal* Ah of the new pack, so an aged file's q
  ends where its lost capacity says;
- the solution is thinned to the points needed to redraw voltage against charge within
  VOLT_TOL (Ramer-Douglas-Peucker), so the files stay small.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pybamm

CELL_AH = 3.0  # one 18650 as the boards' default capacities count it (X1202: 4 x 3000 mAh = 12000 mAh)
PACKS = {"x1201": 1, "x1200": 2, "x1202": 4}  # board -> cells in parallel (all 1S)
LOADS_W = (3.0, 5.0, 7.5, 10.0)  # what a Pi draws at 5 V: idle Pi 5 ~2.7-3 W up to a busy one with an SSD
EFFICIENCY = 0.9  # the boost converter, pack -> 5 V (assumed; see above)
CUTOFF_V = 2.5
FULL_V = 4.2
VOLT_TOL = 0.004  # V: the thinned curve redraws the solved one within this

# file name -> (PyBaMM parameter set, what it is)
CELLS = {
    "lgm50-chen2020": ("Chen2020", "LG M50 21700, NMC811 / graphite-SiOx (Chen et al. 2020, "
                                   "J. Electrochem. Soc. 167 080534)"),
    "lgm50-oregan2022": ("ORegan2022", "LG M50 21700, NMC811 / graphite-SiOx, with temperature-dependent "
                                       "parameters (O'Regan et al. 2022, Electrochim. Acta 425 140700)"),
    "nca-kim2011": ("NCA_Kim2011", "NCA / graphite pouch cell (Kim et al. 2011, J. Electrochem. Soc. "
                                   "158 A955)"),
    "lco-ai2020": ("Ai2020", "LCO / graphite pouch cell (Ai et al. 2020, J. Electrochem. Soc. 167 013512)"),
}


# aged file name -> (fresh cell it starts from, LAM_NE, LAM_PE, LLI, R_SEI ohm per 3 Ah cell)
AGED = {
    "lgm50-chen2020-aged": ("lgm50-chen2020", 0.20, 0.20, 0.20, 0.05),
    "nca-kim2011-aged": ("nca-kim2011", 0.28, 0.28, 0.28, 0.05),
}


def aged_parameters(params: pybamm.ParameterValues, lam_ne: float, lam_pe: float, lli: float,
                    r_sei_3ah: float, c_model: float) -> str:
    """Sets the degradation modes in ``params``; returns the line that says so in the file."""
    params["Negative electrode active material volume fraction"] *= 1 - lam_ne
    params["Positive electrode active material volume fraction"] *= 1 - lam_pe
    params["Initial concentration in negative electrode [mol.m-3]"] *= 1 - lli
    # the model cell is C_model Ah: its series resistance scales inversely with its area
    params.update({"Contact resistance [Ohm]": r_sei_3ah * CELL_AH / c_model}, check_already_exists=False)
    return (f"aged: LAM_NE {lam_ne:.0%}, LAM_PE {lam_pe:.0%}, LLI {lli:.0%}, series (SEI) resistance "
            f"{r_sei_3ah * 1000:g} mOhm per {CELL_AH:g} Ah cell")


def specific_powers() -> list[tuple[float, list[str]]]:
    """Distinct pack powers per nominal Ah, with the (board, load) pairs each stands for."""
    out: dict[float, list[str]] = {}
    for board, n in PACKS.items():
        for load in LOADS_W:
            p = round(load / EFFICIENCY / (n * CELL_AH), 4)
            out.setdefault(p, []).append(f"{board} {load:g} W")
    return sorted(out.items())


def thin(q: np.ndarray, v: np.ndarray, tol: float) -> list[int]:
    """Indices of a Ramer-Douglas-Peucker subset: voltage redrawn against charge within ``tol``."""
    keep = {0, len(q) - 1}
    stack = [(0, len(q) - 1)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        seg = slice(a + 1, b)
        line = v[a] + (v[b] - v[a]) * (q[seg] - q[a]) / max(q[b] - q[a], 1e-15)
        err = np.abs(v[seg] - line)
        i = int(np.argmax(err))
        if err[i] > tol:
            m = a + 1 + i
            keep.add(m)
            stack += [(a, m), (m, b)]
    return sorted(keep)


def discharge(params: pybamm.ParameterValues, watts: float,
              aged: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time (s), terminal voltage (V) and discharged charge (Ah) of one model cell."""
    model = pybamm.lithium_ion.DFN({"contact resistance": "true"} if aged else None)
    experiment = pybamm.Experiment([f"Discharge at {watts:.6f} W until {CUTOFF_V} V"], period="5 seconds")
    sim = pybamm.Simulation(model, parameter_values=params, experiment=experiment)
    sol = sim.solve(initial_soc=f"{FULL_V} V")
    t = sol["Time [s]"].entries
    v = sol["Voltage [V]"].entries
    q = sol["Discharge capacity [A.h]"].entries
    return t - t[0], v, q - q[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "tests" / "data" / "cells")
    ap.add_argument("--only", nargs="*", help="make only these files (names without .csv)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    powers = specific_powers()
    summary = []
    jobs = [(name, name, None) for name in CELLS] + [(name, spec[0], spec[1:]) for name, spec in AGED.items()]
    for name, base, ageing in jobs:
        if args.only and name not in args.only:
            continue
        pset, what = CELLS[base]
        params = pybamm.ParameterValues(pset)
        c_model = float(params["Nominal cell capacity [A.h]"])
        aged_line = aged_parameters(params, *ageing, c_model) if ageing else None
        params.update({"Lower voltage cut-off [V]": CUTOFF_V, "Upper voltage cut-off [V]": max(
            FULL_V + 0.05, float(params["Upper voltage cut-off [V]"]))})
        lines = [
            f"# {name}: {what}",
            f"# PyBaMM {pybamm.__version__} parameter set {pset}, DFN model, isothermal, from rest at "
            f"{FULL_V} V open circuit to {CUTOFF_V} V at constant power",
            f"# model cell nominal {c_model:g} Ah, scaled by electrode area to an 18650 of {CELL_AH:g} Ah; "
            f"pack power = load at 5 V / {EFFICIENCY:g}",
            "# w_per_ah: pack power per nominal Ah of the pack; t_s: seconds since the start; v: terminal "
            "voltage of the 1S pack; q: charge delivered, Ah per nominal Ah",
            "w_per_ah,t_s,v,q",
        ]
        if aged_line:
            lines.insert(3, f"# {aged_line}; q stays per nominal Ah of the new cell")
        for p, stands_for in powers:
            t, v, q = discharge(params, p * c_model, aged=ageing is not None)
            q = q / c_model
            idx = thin(q, v, VOLT_TOL)
            for i in idx:
                lines.append(f"{p:.4f},{t[i]:.0f},{v[i]:.4f},{q[i]:.5f}")
            summary.append((name, p, stands_for, t[-1], q[-1], len(idx)))
            print(f"{name:18} {p:7.4f} W/Ah ({', '.join(stands_for)}): {t[-1] / 60:7.1f} min to "
                  f"{CUTOFF_V} V, {q[-1]:.3f} Ah/Ah, {len(idx)} points", file=sys.stderr)
        (args.out / f"{name}.csv").write_text("\n".join(lines) + "\n")
    print("| cell | W/Ah | stands for | minutes to 2.5 V | Ah per nominal Ah |")
    print("|---|---|---|---|---|")
    for name, p, stands_for, t_end, q_end, _ in summary:
        print(f"| {name} | {p:.4f} | {', '.join(stands_for)} | {t_end / 60:.1f} | {q_end:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
