"""Prints the open-circuit voltage curves of nutups/hardware/chemistry.py from published electrode data.

Not part of nutups and not run by CI: it needs PyBaMM (pip install pybamm, in a venv of its
own), as scripts/make_cell_curves.py does.

    /tmp/pybamm/bin/python scripts/make_ocv_curves.py

For each chemistry, a PyBaMM parameter set (each one the measurements of a published paper):
the electrode state-of-health solve (pybamm.lithium_ion.ElectrodeSOHSolver) finds the
stoichiometry window of the full cell between EMPTY_V and FULL_V at open circuit; the
full cell's OCV at a state of charge s is then U_p(y(s)) - U_n(x(s)), both stoichiometries
linear in s. Thinned with Ramer-Douglas-Peucker to VOLT_TOL against the charge.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pybamm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_cell_curves import thin  # noqa: E402

EMPTY_V = 2.5  # the X120X has no undervoltage cut-off; 2.5 V is the 18650's usual discharge limit
FULL_V = 4.2  # where the HAT's CC/CV charger stops
VOLT_TOL = 0.005

# chemistry -> (PyBaMM parameter set, the paper its electrode data comes from)
SOURCES = {
    "nmc": ("Chen2020", "LG M50 21700, NMC811 / graphite-SiOx: Chen et al. 2020, J. Electrochem. Soc. 167 080534"),
    "nca": ("NCA_Kim2011", "NCA / graphite: Kim et al. 2011, J. Electrochem. Soc. 158 A955"),
    "lco": ("Marquis2019", "LiCoO2 / graphite (Dualfoil electrode data): Marquis et al. 2019, "
                           "J. Electrochem. Soc. 166 A3693"),
}


def ocv_curve(name: str, n: int = 2001) -> tuple[np.ndarray, np.ndarray]:
    p = pybamm.ParameterValues(name)
    p.update({"Lower voltage cut-off [V]": EMPTY_V, "Upper voltage cut-off [V]": FULL_V,
              "Open-circuit voltage at 0% SOC [V]": EMPTY_V, "Open-circuit voltage at 100% SOC [V]": FULL_V},
             check_already_exists=False)
    param = pybamm.LithiumIonParameters()
    solver = pybamm.lithium_ion.ElectrodeSOHSolver(p, param)
    sol = solver.solve({"Q_n": p.evaluate(param.n.Q_init), "Q_p": p.evaluate(param.p.Q_init),
                        "Q_Li": p.evaluate(param.Q_Li_particles_init)})
    x0, x100, y0, y100 = (float(sol[k]) for k in ("x_0", "x_100", "y_0", "y_100"))
    u_n, u_p = p["Negative electrode OCP [V]"], p["Positive electrode OCP [V]"]

    def value(f, sto: float) -> float:
        return float(np.asarray(p.evaluate(f(pybamm.Scalar(sto)))).ravel()[0])

    s = np.linspace(0.0, 1.0, n)
    v = np.array([value(u_p, y0 + t * (y100 - y0)) - value(u_n, x0 + t * (x100 - x0)) for t in s])
    return s * 100.0, v


def main() -> int:
    for chem, (name, source) in SOURCES.items():
        soc, v = ocv_curve(name)
        if np.any(np.diff(v) <= 0):
            print(f"# {chem}: {name}'s curve does not rise monotonically", file=sys.stderr)
            return 1
        idx = thin(soc, v, VOLT_TOL)
        points = ", ".join(f"({soc[i]:.2f}, {v[i]:.3f})" for i in idx)
        print(f"# {chem}: PyBaMM {name}; {source}; {len(idx)} points")
        print(f"{chem.upper()}_OCV = ({points})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
