"""Where the PLUMED-written sample files are (tests/data/plumed, copied from ../shared/plumed-samples).

Files written by a real PLUMED 2.10.1 (see tests/data/plumed/README.md): one particle of mass 1 amu in
U = 5 (x^2 - 1)^2 + 25 (y^2 + z^2) kJ/mol (x in nm), Langevin at 300 K; exact PMF F(x) = 5 (x^2 - 1)^2 kJ/mol.
"""
import pathlib

import numpy as np

DATA = pathlib.Path(__file__).resolve().parent / "data" / "plumed"
SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "plumed-samples"


def exact_pmf(x):
    """F(x) = 5 (x^2 - 1)^2 kJ/mol."""
    return 5.0 * (np.asarray(x) ** 2 - 1.0) ** 2


def exact_bin_pmf(edges, kT=None):
    """Exact PMF averaged over each histogram bin: -kT ln( mean over the bin of exp(-F/kT) ) (kJ/mol)."""
    from ase import units

    kT = kT if kT is not None else units.kB * 300.0 * units.mol / units.kJ
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        x = np.linspace(a, b, 401)
        out.append(-kT * np.log(np.trapezoid(np.exp(-exact_pmf(x) / kT), x) / (b - a)))
    return np.array(out)
