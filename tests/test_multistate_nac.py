"""PySCF nonadiabatic couplings and FCI roots on H3 (doublet).

The derivative coupling d_01 = <Psi_0 | d Psi_1/dR> from PySCF's SA-CASSCF NAC code
(as exposed in Label.extra["nac"]) is compared with central finite differences of
the wavefunction overlaps <Psi_0(R) | Psi_1(R +- h)> (AO overlaps between the two
geometries, orbitals and CI vectors of both calculations; the displaced roots'
phases aligned with the reference). H3 has three electrons and no core orbitals,
so the CAS wavefunction is a CI vector in the active orbitals only.
"""
import numpy as np
import pytest
from ase import Atoms
from ase.units import Bohr, Hartree

from fesurf.oracles.multistate import FCIOracle, SACASSCFOracle, sacasscf_couplings

pyscf = pytest.importorskip("pyscf")

P = np.array([[0, 0, 0], [1.0, 0, 0], [0.45, 0.95, 0]])  # scalene H3, gap about 1.8 eV (sto-3g)


def _overlaps(mc1, mc2):
    """<Psi_i(mc1) | Psi_j(mc2)> for all roots (no core orbitals)."""
    from pyscf import fci, gto

    assert mc1.ncore == 0 and mc2.ncore == 0
    n = mc1.ncas
    s = mc1.mo_coeff[:, :n].T @ gto.intor_cross("int1e_ovlp", mc1.mol, mc2.mol) @ mc2.mo_coeff[:, :n]
    return np.array([[fci.addons.overlap(a, b, n, mc1.nelecas, s) for b in mc2.ci] for a in mc1.ci])


def _fd_coupling(oracle, mc, h=1e-3):
    """Central-difference d_01 [n_atoms, 3] in 1/A (in-plane components; out of plane is 0 by symmetry)."""
    fd = np.zeros((3, 3))
    for a in range(3):
        for x in range(2):
            s = []
            for sign in (1, -1):
                q = P.copy()
                q[a, x] += sign * h
                o = _overlaps(mc, oracle.solve(Atoms("H3", q), multiplicity=2))
                s.append(o * np.sign(np.diag(o))[None, :])  # phase of each displaced root follows the reference
            fd[a, x] = (s[0] - s[1])[0, 1] / (2 * h)
    return fd


@pytest.mark.parametrize("oracle", [SACASSCFOracle(3, 3, basis="sto-3g", n_roots=2),
                                    FCIOracle(basis="6-31g", n_roots=2)], ids=["sacasscf-sto3g", "fci-631g"])
def test_nac_matches_finite_difference_of_wavefunction_overlaps(oracle):
    atoms = Atoms("H3", P)
    mc = oracle.solve(atoms, multiplicity=2)
    c = sacasscf_couplings(mc)
    lab = oracle.compute(atoms, multiplicity=2)
    assert lab.ok, lab.reason
    nac, e = lab.extra["nac"], lab.extra["energies"]
    assert nac.shape == (2, 2, 3, 3)
    # the label comes from an identical, deterministic calculation: same phases
    assert np.allclose(nac, c["nac"], atol=1e-6)
    assert np.all(nac[0, 0] == 0) and np.allclose(nac[1, 0], -nac[0, 1])
    # PySCF's own (1, 0) coupling is the negative of (0, 1) (antisymmetry, not assumed by the oracle)
    d10 = np.asarray(mc.nac_method().kernel(state=(1, 0))) / Bohr
    assert np.abs(d10 + nac[0, 1]).max() < 1e-6 * np.abs(nac[0, 1]).max() + 1e-8
    # energy-difference forms: (E_j - E_i) d_ij, symmetric
    assert np.allclose(lab.extra["nac_ediff"][0, 1], (e[1] - e[0]) * nac[0, 1], rtol=1e-10, atol=1e-12)
    assert np.allclose(lab.extra["nac_ediff"][1, 0], lab.extra["nac_ediff"][0, 1])
    assert np.allclose(lab.extra["nac_etf_ediff"][0, 1], (e[1] - e[0]) * lab.extra["nac_etf"][0, 1])
    # the ETF coupling differs from the full one by the CSF term: not zero here (measured 0.1-0.3 1/A)
    assert np.abs(lab.extra["nac_etf"][0, 1] - nac[0, 1]).max() > 0.05
    # full derivative coupling against finite differences of overlaps; |d01| ~ 5 1/A,
    # measured max deviation 2e-4 1/A (h^2 truncation and 1e-10 Eh convergence)
    fd = _fd_coupling(oracle, mc)
    assert np.abs(nac[0, 1] - fd).max() < 2e-3, (nac[0, 1], fd)
    assert np.abs(lab.extra["nac_etf"][0, 1] - fd).max() > 0.05  # the test tells the two apart


def test_fci_roots_gradients_against_pyscf_fci_and_finite_differences():
    from pyscf import fci, gto, scf

    oracle = FCIOracle(basis="6-31g", n_roots=3, nacs=False, target_root=1)
    lab = oracle.compute(Atoms("H3", P), multiplicity=2)
    assert lab.ok, lab.reason
    e = lab.extra["energies"]
    assert lab.energy == e[1] and np.all(np.diff(e) > 0)
    # independent route: determinant FCI on the ROHF Hamiltonian, doublet roots
    mol = gto.M(atom=[("H", tuple(x)) for x in P], basis="6-31g", spin=1, unit="Angstrom", verbose=0)
    solver = fci.addons.fix_spin_(fci.FCI(scf.ROHF(mol).run()), ss=0.75)
    solver.nroots = 3
    e_fci = np.asarray(solver.kernel()[0]) * Hartree
    assert np.abs(e - e_fci).max() < 1e-6  # eV; both converged to 1e-10 Eh
    # SA-CASSCF with a full active space (6 orbitals) is the same calculation
    e_cas = SACASSCFOracle(6, 3, basis="6-31g", n_roots=3, spin_square=0.75, nacs=False).compute(
        Atoms("H3", P), multiplicity=2).extra["energies"]
    assert np.abs(e - e_cas).max() < 1e-6
    # per-root gradients against central differences of the root energies (one in-plane component)
    d = 1e-3
    q, r = P.copy(), P.copy()
    q[2, 1] += d
    r[2, 1] -= d
    ep = oracle.compute(Atoms("H3", q), multiplicity=2).extra["energies"]
    em = oracle.compute(Atoms("H3", r), multiplicity=2).extra["energies"]
    fd = -(ep - em) / (2 * d)
    # O(d^2) truncation; measured max deviation 7e-5 eV/A on forces of 3-11 eV/A
    assert np.abs(fd - lab.extra["forces_per_state"][:, 2, 1]).max() < 2e-3


def test_fci_h2_minimal_basis_reference_value():
    # H2/STO-3G FCI at R = 0.735 A: -1.137306036 Eh (the Qiskit Nature H2 tutorial value, exact
    # diagonalisation of the qubit Hamiltonian; Szabo & Ostlund give -1.1373 at 1.4 bohr)
    lab = FCIOracle(basis="sto-3g", n_roots=2).compute(Atoms("H2", [[0, 0, 0], [0, 0, 0.735]]), multiplicity=1)
    assert lab.ok, lab.reason
    assert abs(lab.extra["energies"][0] / Hartree - (-1.137306036)) < 1e-8
    # symmetric molecule: forces along the bond only, equal and opposite, for both roots
    f = lab.extra["forces_per_state"]
    assert np.abs(f[:, :, :2]).max() < 1e-8 and np.allclose(f[:, 0], -f[:, 1], atol=1e-8)
