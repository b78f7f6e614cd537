"""Multi-state oracles: SA-CASSCF per-root gradients against finite differences,
spin-polarised xTB in several multiplicities."""
import numpy as np
from ase import Atoms

from fesurf.oracles.multistate import SACASSCFOracle, SpinPolarizedXTBOracle, label_spin_states


def test_sacasscf_roots_and_gradients_match_finite_differences():
    o = SACASSCFOracle(3, 3, basis="sto-3g", n_roots=2)
    p = np.array([[0, 0, 0], [1.0, 0, 0], [0.45, 0.95, 0]])
    lab = o.compute(Atoms("H3", p), multiplicity=2)
    assert lab.ok, lab.reason
    e = lab.extra["energies"]
    assert e.shape == (2,) and e[1] > e[0] and lab.energy == e[0]
    d = 1e-3
    q, r = p.copy(), p.copy()
    q[1, 0] += d
    r[1, 0] -= d
    ep = o.compute(Atoms("H3", q), multiplicity=2).extra["energies"]
    em = o.compute(Atoms("H3", r), multiplicity=2).extra["energies"]
    fd = -(ep - em) / (2 * d)
    # central difference error O(d^2 E''') plus CASSCF convergence noise: ~1e-3 eV/A (measured 2e-4)
    assert np.abs(fd - lab.extra["forces_per_state"][:, 1, 0]).max() < 2e-3


def test_spin_polarized_xtb_ch2_triplet_below_singlet():
    labs = label_spin_states(SpinPolarizedXTBOracle(), [Atoms("CH2", [[0, 0, 0], [1.1, 0, 0], [-0.4, 1.0, 0]])], (1, 3))
    assert labs[1][0].ok and labs[3][0].ok
    assert labs[3][0].energy < labs[1][0].energy  # spin polarisation gives the right order (REFERENCE.md)
    assert labs[3][0].multiplicity == 3
