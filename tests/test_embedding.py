"""QM/MM electrostatic embedding (PySCF qmmm) through the oracle machinery.

References: central finite differences of the embedded energy (forces on core and MM atoms), the
gas-phase oracle (charges outside the cutoff), and first-order perturbation theory (dE/dq at q -> 0 is the
gas-phase electrostatic potential of the core's nuclei and density at the charge, computed here
independently from PySCF's gas-phase density matrix).
"""
import numpy as np
import pytest
from ase import Atoms
from ase.units import Bohr, Hartree

from fesurf.errors import InputError
from fesurf.oracles import PySCFOracle
from fesurf.oracles.embedding import EmbeddedPySCFOracle, PointChargeEmbedding, embedded_oracle, water_groups

# a water core (HF/STO-3G: no XC grid, so the analytic gradient is exact to SCF convergence) with a
# TIP3P water and a sodium charge around it
CORE = (0, 1, 2)
POS = [[0.0, 0.0, 0.0], [0.76, 0.59, 0.0], [-0.76, 0.59, 0.0],
       [0.3, -2.9, 0.5], [1.1, -3.3, 0.7], [-0.2, -3.5, 1.0], [1.0, 0.5, 3.5]]
Q = [0.0, 0.0, 0.0, -0.834, 0.417, 0.417, 1.0]
SETTINGS = dict(xc="HF", basis="sto-3g", conv_tol=1e-12)


def _system():
    return Atoms("OH2OH2Na", positions=POS)


def test_forces_on_core_and_mm_atoms_match_finite_differences():
    emb = PointChargeEmbedding(core=CORE, charges=Q, cutoff=8.0, groups=water_groups(3, 1))
    oracle = EmbeddedPySCFOracle(emb, **SETTINGS)
    atoms = _system()
    lab = oracle.compute(atoms)
    assert lab.ok and lab.extra["n_mm_charges"] == 4 and lab.forces.shape == (7, 3)
    # only the core and the charges feel forces, and they balance (no external field): sum F = 0
    assert np.abs(lab.forces.sum(0)).max() < 1e-6
    h = 1e-4  # central differences: truncation ~ h^2 F''' / 6 ~ 1e-8 eV/A; SCF noise 1e-12 Ha / h ~ 3e-7 eV/A
    for i, c in [(0, 2), (1, 0), (3, 1), (4, 0), (6, 2)]:
        e = []
        for s in (h, -h):
            a = atoms.copy()
            a.positions[i, c] += s
            e.append(oracle.compute(a).energy)
        assert abs(-(e[0] - e[1]) / (2 * h) - lab.forces[i, c]) < 2e-6, (i, c)


def test_far_charges_give_the_gas_phase_and_the_first_order_limit_is_the_core_potential():
    atoms = _system()
    gas = PySCFOracle(**SETTINGS).compute(atoms[list(CORE)])
    # every charge beyond the cutoff: the gas-phase label, zero force on the MM atoms
    far = EmbeddedPySCFOracle(PointChargeEmbedding(core=CORE, charges=Q, cutoff=1.5), **SETTINGS)
    lab = far.compute(atoms)
    assert lab.extra["n_mm_charges"] == 0 and abs(lab.energy - gas.energy) < 1e-9
    assert np.abs(lab.forces[:3] - gas.forces).max() < 1e-7 and not lab.forces[3:].any()
    assert far.gas_phase().method == PySCFOracle(**SETTINGS).method != far.method
    # a small probe charge q on the sodium site: (E(q) - E(-q)) / 2q = phi_gas(r) + O(q^2)
    q = 1e-3
    e = [EmbeddedPySCFOracle(PointChargeEmbedding(core=CORE, charges=[0, 0, 0, 0, 0, 0, s * q], cutoff=None),
                             **SETTINGS).compute(atoms).energy for s in (1, -1)]
    from pyscf import gto, scf

    mol = gto.M(atom=[(s, tuple(p)) for s, p in zip("OHH", POS[:3])], unit="Angstrom", basis="sto-3g", verbose=0)
    mf = scf.RHF(mol)
    mf.conv_tol = 1e-12
    mf.kernel()
    r = np.array(POS[6]) / Bohr
    v_nuc = sum(z / np.linalg.norm(r - c) for z, c in zip(mol.atom_charges(), mol.atom_coords()))
    v_el = -np.einsum("pq,qp->", mol.intor("int1e_grids", grids=r[None])[0], mf.make_rdm1())
    phi = (v_nuc + v_el) * Hartree  # eV per e
    assert abs(phi) > 0.01  # the water's field is there to be seen (-0.0216 V at this site)
    # hyperpolarisation terms ~ q^2: far below 1e-7 eV/e at q = 1e-3 e; SCF noise 2e-11 eV / 2e-3 e
    assert abs((e[0] - e[1]) / (2 * q) - phi) < 1e-6


def test_periodic_selection_images_whole_groups_near_the_core(tmp_path):
    cell = np.eye(3) * 12.0
    pos = np.array(POS)
    pos[3:6] += [0.0, 12.0, 0.0]  # the MM water one cell away: its image sits next to the core
    atoms = Atoms("OH2OH2Na", positions=pos, cell=cell, pbc=True)
    emb = PointChargeEmbedding(core=CORE, charges=Q, cutoff=5.0, groups=water_groups(3, 1))
    idx, mm_pos, mm_q = emb.select(atoms)
    assert list(idx) == [3, 4, 5, 6] and np.allclose(mm_pos[:3], np.array(POS)[3:6]) and np.allclose(mm_q, Q[3:])
    # the same physics as the molecule: the label through the cache machinery, the second call from the cache
    oracle = EmbeddedPySCFOracle(emb, **SETTINGS)
    labels = oracle.label([atoms], cache=tmp_path / "labels.db")
    again = oracle.label([atoms], cache=tmp_path / "labels.db")
    assert oracle.last_stats["from_cache"] == 1 and again[0].energy == labels[0].energy
    mol = EmbeddedPySCFOracle(PointChargeEmbedding(core=CORE, charges=Q, cutoff=5.0), **SETTINGS).compute(_system())
    assert abs(labels[0].energy - mol.energy) < 1e-9
    # a group counts as a whole: at 3.1 A only the MM oxygen (2.96 A) is inside, and it brings in its H
    # atoms (3.55, 3.65 A); the sodium (3.51 A from the nearest core atom) stays out
    cut = PointChargeEmbedding(core=CORE, charges=Q, cutoff=3.1, groups=water_groups(3, 1))
    assert list(cut.select(_system())[0]) == [3, 4, 5]
    assert list(PointChargeEmbedding(core=CORE, charges=Q, cutoff=3.1).select(_system())[0]) == [3]


def test_mm_coulomb_is_the_classical_term_the_label_replaces():
    from fesurf.potentials.multilevel import PointChargeCoupling, Region
    from fesurf.state import State

    emb = PointChargeEmbedding(core=CORE, charges=Q, cutoff=3.1, groups=water_groups(3, 1))  # the water only
    q_core = [-0.834, 0.417, 0.417]
    ref = PointChargeCoupling(Region(CORE), Region((3, 4, 5)), charges_b=Q[3:6], charges_a=q_core, cutoff=None)
    e_ref = float(ref.energy(State.from_atoms(_system()))[0])
    assert abs(emb.mm_coulomb(_system(), q_core) - e_ref) < 1e-10 and abs(e_ref) > 0.05
    assert PointChargeEmbedding(core=CORE, charges=Q, cutoff=1.0).mm_coulomb(_system(), q_core) == 0.0
    with pytest.raises(InputError, match="core_charges"):
        emb.mm_coulomb(_system(), [1.0])


def test_bad_inputs():
    with pytest.raises(InputError, match="tblite"):
        embedded_oracle("xtb", PointChargeEmbedding(core=CORE, charges=Q))
    with pytest.raises(InputError, match="core must be"):
        PointChargeEmbedding(core=(0, 9), charges=Q)
    with pytest.raises(InputError, match="groups"):
        PointChargeEmbedding(core=CORE, charges=Q, groups=((2, 3),))
    emb = PointChargeEmbedding(core=CORE, charges=Q, cutoff=8.0)
    with pytest.raises(InputError, match="half the cell"):
        emb.select(Atoms("OH2OH2Na", positions=POS, cell=np.eye(3) * 12.0, pbc=True))
    with pytest.raises(InputError, match="7 atoms"):
        EmbeddedPySCFOracle(emb, **SETTINGS).compute(Atoms("OH2", positions=POS[:3]))
    bad = _system()
    bad.info["charge"] = 1  # 9 electrons on the core with multiplicity 1: refused before any SCF
    lab = EmbeddedPySCFOracle(emb, **SETTINGS).compute(bad)
    assert not lab.ok and "electrons" in lab.reason
