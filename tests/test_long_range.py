"""Long-range terms: Ewald/PME electrostatics (torch-pme), learned charges, D3 dispersion (torch-dftd).

Exact references: the rock-salt Madelung constant, finite differences of energy (forces) and of a
homogeneous strain (stress), two other D3 implementations on the same input (tad-dftd3, torch-dftd's
own edisp), closed-form kernels and the stationarity of the charge-equilibration solution.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from fesurf.errors import InputError
from fesurf.potentials import check_potential
from fesurf.state import State
from fesurf.surrogates.long_range import (COULOMB, BOHR, HARTREE, ChargeSettings, D3Dispersion, DispersionSettings,
                                          ElectrostaticsSettings, LongRangeModel, PointChargeElectrostatics,
                                          electrostatic_energy, neutralize, pair_kernel, qeq_charges)

#: rock-salt Madelung constant (nearest-neighbour convention), e.g. Glasser & Zucker, to 12 digits
MADELUNG_NACL = 1.747564594633


def strain_fd_stress(potential, state, h=1e-5):
    """Stress [S, 3, 3] (eV/A^3) by central differences of the energy under a symmetric strain."""
    out = torch.zeros(state.n_systems, 3, 3, dtype=torch.float64)
    for a in range(3):
        for b in range(3):
            e = []
            for sign in (1.0, -1.0):
                eps = torch.zeros(3, 3, dtype=torch.float64)
                eps[a, b] += sign * h / 2
                eps[b, a] += sign * h / 2
                d = torch.eye(3, dtype=torch.float64) + eps
                e.append(potential.energy(state.replace(positions=state.positions @ d, cell=state.cell @ d)).detach())
            out[:, a, b] = (e[0] - e[1]) / (2 * h)
    return out / torch.linalg.det(state.cell)[:, None, None]


def rocksalt(a=5.64, rattle=0.0, seed=1):
    atoms = bulk("NaCl", "rocksalt", a=a, cubic=True)
    if rattle:
        atoms.rattle(rattle, seed=seed)
    return atoms


# ------------------------------------------------------------------------------------ electrostatics
@pytest.mark.parametrize("method,extra", [("ewald", {"smearing": 2.0, "lr_wavelength": 1.0}),
                                          ("pme", {"smearing": 2.0, "mesh_spacing": 0.5, "interpolation_nodes": 6})])
def test_madelung_constant_of_rock_salt(method, extra):
    a = 5.64
    pot = PointChargeElectrostatics({11: 1.0, 17: -1.0}, dict(periodic_method=method, real_space_cutoff=12.0, **extra))
    e = pot.energy(State.from_atoms(rocksalt(a)))
    madelung = -float(e[0]) / 4 * (a / 2) / COULOMB  # 4 ion pairs in the cubic cell, nearest neighbour a/2
    assert abs(madelung - MADELUNG_NACL) < 1e-6   # measured: 3.7e-9 for both
    assert round(madelung, 6) == 1.747565


def test_ewald_default_settings_reach_the_madelung_constant():
    pot = PointChargeElectrostatics({11: 1.0, 17: -1.0}, {"periodic_method": "ewald"})
    madelung = -float(pot.energy(State.from_atoms(rocksalt()))[0]) / 4 * 2.82 / COULOMB
    assert abs(madelung - MADELUNG_NACL) < 1e-7   # real space erfc(4.24) ~ 2e-9, k space exp(-2 pi^2)


def test_ewald_forces_and_stress_match_finite_differences():
    s = State.from_atoms([rocksalt(5.9, 0.08, 1), rocksalt(6.1, 0.08, 2)])
    pot = PointChargeElectrostatics({11: 1.0, 17: -1.0}, {"periodic_method": "ewald"})
    report = check_potential(pot, s, max_fd_coords=24)
    assert report["max_force_error"] < 1e-6
    stress, fd = pot.stress(s), strain_fd_stress(pot, s)
    # central differences with h = 1e-5: truncation ~ h^2 * E''' ~ 1e-10 eV/A^3, round-off ~ 1e-16 * 40 eV / 1e-5 / 200 A^3
    assert float((stress - fd).abs().max()) < 1e-8 * max(1.0, float(stress.abs().max())) + 1e-9


def test_pme_agrees_with_ewald_and_its_forces_with_finite_differences():
    s = State.from_atoms(rocksalt(5.9, 0.08, 3).repeat((2, 2, 2)))
    ewald = PointChargeElectrostatics({11: 1.0, 17: -1.0}, {"periodic_method": "ewald"})
    pme = PointChargeElectrostatics({11: 1.0, 17: -1.0}, {"periodic_method": "pme", "mesh_spacing": 0.5,
                                                          "interpolation_nodes": 6})
    e_ewald, f_ewald = ewald.energy_and_forces(s)
    e_pme, f_pme = pme.energy_and_forces(s)
    assert abs(float(e_pme - e_ewald)) < 1e-5 * abs(float(e_ewald))
    assert float((f_pme - f_ewald).abs().max()) < 1e-3
    from fesurf.potentials import finite_difference_forces

    fd, mask = finite_difference_forces(pme, s, max_coords=12, generator=torch.Generator().manual_seed(0))
    assert float((fd - f_pme)[mask].abs().max()) < 1e-6 * max(1.0, float(f_pme.abs().max()))


def test_direct_sum_equals_ewald_in_a_large_box():
    mol = molecule("CH3Cl")
    q = {1: 0.07, 6: -0.02, 17: -0.19}
    free = State.from_atoms(mol)
    mol.center(vacuum=20.0)
    mol.pbc = True
    boxed = State.from_atoms(mol)
    e_free = PointChargeElectrostatics(q).energy(free)
    e_box = PointChargeElectrostatics(q, {"periodic_method": "ewald", "real_space_cutoff": 12.0}).energy(boxed)
    # a neutral molecule's images interact as dipoles: mu^2 / L^3 ~ 0.2 * 14.4 / 42^3 ~ 4e-5 eV
    assert abs(float(e_free - e_box)) < 2e-4


def test_pair_kernels():
    r = torch.linspace(0.5, 9.0, 50, dtype=torch.float64)
    from torchpme import CoulombPotential

    excl = ElectrostaticsSettings(kernel="exclusion", switch_radius=5.0, exclusion_degree=2)
    ref = (1 - CoulombPotential(exclusion_radius=5.0, exclusion_degree=2).f_cutoff(r)) / r
    assert torch.allclose(pair_kernel(r, excl), ref, rtol=0, atol=1e-15)
    assert torch.equal(pair_kernel(r[r > 5.0], excl), 1 / r[r > 5.0])
    sh = ElectrostaticsSettings(kernel="shielded", switch_radius=4.0, shielding=1.0)
    assert torch.allclose(pair_kernel(r[:1] * 0 + 1e-9, sh), torch.ones(1, dtype=torch.float64), atol=1e-12)
    assert torch.equal(pair_kernel(r[r > 4.0], sh), 1 / r[r > 4.0])
    gauss = ElectrostaticsSettings(kernel="gaussian")
    gamma = torch.full_like(r, 1.3)
    assert torch.allclose(pair_kernel(r, gauss, gamma), torch.erf(r / (math.sqrt(2) * 1.3)) / r, atol=1e-15)


# ------------------------------------------------------------------------------------------- charges
def _charged_batch():
    mols = [molecule("H2O"), molecule("CH3Cl"), molecule("CH3Cl")]
    s = State.from_atoms(mols, charge=torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64))
    return s


@pytest.mark.parametrize("scheme", ["qeq", "neutralize"])
def test_total_charge_is_conserved_for_neutral_cation_and_anion(scheme):
    s = _charged_batch()
    model = LongRangeModel([1, 6, 8, 17], hidden=(8,), n_members=3, charges={"scheme": scheme, "output_scale": 1.0},
                           seed=1)
    q = model.charges(s)  # [3, n_atoms]
    totals = torch.zeros(3, s.n_systems, dtype=torch.float64).index_add(1, s.system_index, q)
    assert float((totals - s.charge).abs().max()) < 1e-10
    assert float(q.abs().max()) > 0.05  # the charges are not trivially zero


@pytest.mark.parametrize("scheme", ["qeq", "neutralize"])
def test_total_charge_is_conserved_in_periodic_cells(scheme):
    cells = [rocksalt(5.9, 0.05, 1), rocksalt(5.9, 0.05, 2)]
    s = State.from_atoms(cells, charge=torch.tensor([1.0, -1.0], dtype=torch.float64))
    model = LongRangeModel([11, 17], hidden=(8,), charges={"scheme": scheme, "output_scale": 1.0}, seed=2)
    q = model.charges(s)
    totals = torch.zeros(1, 2, dtype=torch.float64).index_add(1, s.system_index, q)
    assert float((totals - s.charge).abs().max()) < 1e-10


def test_qeq_solution_is_the_constrained_minimum():
    """At the QEq solution the gradient of E_QEq is the same (the multiplier) on every atom of a system."""
    s = State.from_atoms([molecule("CH3Cl"), molecule("H2O")], charge=torch.tensor([-1.0, 0.0], dtype=torch.float64))
    gen = torch.Generator().manual_seed(0)
    chi = torch.randn(2, s.n_atoms, generator=gen, dtype=torch.float64)
    hard = 5.0 + torch.rand(2, s.n_atoms, generator=gen, dtype=torch.float64)
    sigma = torch.full((s.n_atoms,), 0.9, dtype=torch.float64)
    q = qeq_charges(chi, hard, s.positions, s, sigma).detach().requires_grad_(True)
    gauss = ElectrostaticsSettings(kernel="gaussian")
    e_pair = electrostatic_energy(q, s.positions, s, gauss, sigma)
    e_site = (chi * q + 0.5 * (hard + COULOMB / (sigma * math.sqrt(math.pi))) * q * q)
    e = e_pair.sum() + e_site.sum()
    (grad,) = torch.autograd.grad(e, q)
    for k, (a, b) in enumerate(s.atom_slices()):
        g = grad[:, a:b]
        assert float((g - g.mean(1, keepdim=True)).abs().max()) < 1e-10


def test_qeq_in_a_periodic_cell_matches_the_molecule_limit():
    """A dimer in a 40 A box: the Ewald QEq charges equal the direct (molecular) ones to the image error."""
    pos = torch.tensor([[0.0, 0, 0], [2.4, 0, 0]], dtype=torch.float64)
    free = State(positions=pos, atomic_numbers=[11, 17])
    boxed = State(positions=pos + 20.0, atomic_numbers=[11, 17], cell=torch.eye(3, dtype=torch.float64) * 40.0, pbc=True)
    chi = torch.tensor([[-1.0, 2.0]], dtype=torch.float64)
    hard = torch.tensor([[6.0, 8.0]], dtype=torch.float64)
    sigma = torch.tensor([1.0, 1.0], dtype=torch.float64)
    q_free = qeq_charges(chi, hard, free.positions, free, sigma)
    q_box = qeq_charges(chi, hard, boxed.positions, boxed, sigma, ElectrostaticsSettings(periodic_method="ewald"))
    # image dipole field ~ mu / L^3 = 1.2 * 14.4 / 64000 eV/e -> dq ~ 3e-4 / J
    assert float((q_free - q_box).abs().max()) < 1e-4
    assert float(q_free[0, 0]) > 0.1


def test_neutralize_is_the_physnet_correction():
    s = State(positions=[[0.0, 0, 0], [1.0, 0, 0], [5.0, 0, 0]], atomic_numbers=[1, 1, 8],
              system_index=[0, 0, 1], charge=[1.0, -1.0])
    q = neutralize(torch.tensor([[0.2, 0.4, 0.3]], dtype=torch.float64), s)
    assert torch.allclose(q, torch.tensor([[0.4, 0.6, -1.0]], dtype=torch.float64), atol=1e-15)


# ---------------------------------------------------------------------------------------- dispersion
def test_d3_bj_matches_tad_dftd3():
    import tad_dftd3 as d3

    mol = molecule("CH3CH2OH")
    mol.rattle(0.05, seed=0)
    s = State.from_atoms(mol)
    ds = DispersionSettings(damping="bj", cutoff=50.0, cn_cutoff=40.0)
    e = float(D3Dispersion(ds).energy(s)[0])
    param = {k: torch.tensor(getattr(ds, k), dtype=torch.float64) for k in ("s6", "s8", "a1", "a2")}
    ref = float(d3.dftd3(torch.as_tensor(mol.numbers), torch.as_tensor(mol.positions / BOHR), param).sum()) * HARTREE
    assert abs(e - ref) < 1e-8 * abs(ref)  # two implementations of the same model; measured 1.4e-9


@pytest.mark.parametrize("damping", ["bj", "zero"])
def test_d3_matches_torch_dftd_edisp(damping):
    from torch_dftd.nn.dftd3_module import DFTD3Module

    mol = molecule("CH3CH2OH")
    mol.rattle(0.05, seed=0)
    ds = DispersionSettings(damping=damping, cutoff=50.0, cn_cutoff=40.0)
    e = float(D3Dispersion(ds).energy(State.from_atoms(mol))[0])
    if damping == "bj":
        params = dict(s6=ds.s6, s18=ds.s8, rs6=ds.a1, rs18=ds.a2, alp=ds.alpha)
    else:
        params = dict(s6=ds.s6, s18=ds.s8, rs6=ds.rs6, rs18=ds.rs8, alp=ds.alpha)
    mod = DFTD3Module(params, cutoff=50.0, cnthr=40.0, dtype=torch.float64)
    n = len(mol)
    i, j = torch.triu_indices(n, n, 1)
    ref = mod.calc_energy_batch(torch.as_tensor(mol.numbers), torch.as_tensor(mol.positions), torch.stack([i, j]),
                                damping=damping)
    ref = float(ref[0]) / 27.21138505 * HARTREE  # torch-dftd's own eV conversion, undone
    # torch-dftd converts A -> bohr with 0.52917726 (ASE: 0.52917721): 1e-7 relative in r
    assert abs(e - ref) < 1e-6 * abs(ref)


def test_d3_periodic_contract_and_stress():
    s = State.from_atoms([rocksalt(5.9, 0.08, 1), rocksalt(6.1, 0.08, 2)])
    pot = D3Dispersion({"cutoff": 12.0, "cn_cutoff": 10.0})
    assert check_potential(pot, s, max_fd_coords=18)["max_force_error"] < 1e-6
    stress = pot.stress(s)
    assert float((stress - strain_fd_stress(pot, s)).abs().max()) < 1e-8


def test_d3_switch_radius_removes_short_pairs():
    s = State(positions=[[0.0, 0, 0], [3.0, 0, 0], [0.0, 7.0, 0]], atomic_numbers=[6, 6, 6])
    full = D3Dispersion().pair_energies(s)[0][0]
    cut = D3Dispersion({"switch_radius": 5.0}).pair_energies(s)[0][0]
    r = torch.tensor([3.0, 7.0, math.hypot(3, 7)], dtype=torch.float64)
    ramp = torch.where(r < 5.0, (1 - torch.cos(math.pi * r / 5.0)) / 2, torch.ones_like(r))  # 1 - f_cut (torch-pme)
    assert torch.allclose(cut, full * ramp, rtol=1e-14, atol=0)
    assert float(ramp[0]) < 0.7 and torch.equal(cut[1:], full[1:])


# -------------------------------------------------------------------------------------------- model
@pytest.mark.parametrize("scheme,kernel", [("qeq", "coulomb"), ("qeq", "gaussian"), ("neutralize", "exclusion"),
                                           ("neutralize", "shielded")])
def test_model_passes_the_potential_contract_on_molecules(scheme, kernel):
    s = _charged_batch()
    model = LongRangeModel([1, 6, 8, 17], hidden=(8,), n_members=2, seed=0,
                           charges={"scheme": scheme, "output_scale": 1.0},
                           electrostatics={"kernel": kernel, "switch_radius": 3.0})
    check_potential(model, s)


@pytest.mark.parametrize("scheme", ["qeq", "neutralize"])
def test_model_contract_and_stress_in_periodic_cells(scheme):
    s = State.from_atoms([rocksalt(5.9, 0.08, 1), rocksalt(6.1, 0.08, 2)])
    model = LongRangeModel([11, 17], hidden=(8,), n_members=2, seed=0, charges={"scheme": scheme, "output_scale": 1.0},
                           electrostatics={"kernel": "exclusion", "switch_radius": 4.5},
                           dispersion={"cutoff": 10.0, "cn_cutoff": 10.0})
    check_potential(model, s, max_fd_coords=12)
    stress = model.stress(s)
    assert float((stress - strain_fd_stress(model, s)).abs().max()) < 1e-8 * max(1.0, float(stress.abs().max()))


def test_committee_shares_the_long_range_terms():
    s = _charged_batch()
    model = LongRangeModel([1, 6, 8, 17], hidden=(8,), n_members=3, seed=0, charges={"output_scale": 1.0})
    t = model.member_terms(s.positions, s)
    assert t["dispersion"].shape == (1, s.n_systems)  # one dispersion for every member
    disp = D3Dispersion(model.dispersion_settings).energy(s)
    assert torch.allclose(t["dispersion"][0], disp, atol=1e-12)
    # the members differ in their short-range and charge networks, hence in charges and electrostatics
    assert float(t["charges"].std(0).max()) > 1e-3
    assert float(t["electrostatic"].std(0).max()) > 1e-4
    # each member's energy is the sum of its terms; the committee energy is their mean
    total = t["short_range"] + t["electrostatic"] + t["self_energy"] + t["dispersion"]
    assert torch.allclose(model.member_energies(s), total.detach(), atol=1e-12)
    pred = model.predict(s)
    assert torch.allclose(pred["energy"], total.detach().mean(0), atol=1e-12)
    # per-member forces include the shared dispersion force once each
    f_members = pred["member_forces"]
    f_one = model.select_members([1]).energy_and_forces(s)[1]
    assert torch.allclose(f_members[1], f_one, atol=1e-10)


def test_charge_input_distinguishes_charge_states():
    s = State.from_atoms([molecule("CH3Cl")] * 2, charge=torch.tensor([1.0, -1.0], dtype=torch.float64))
    for scheme in ("qeq", "neutralize"):
        model = LongRangeModel([1, 6, 17], hidden=(8,), charges={"scheme": scheme}, seed=0,
                               dispersion={"enabled": False})
        sr = model.energy_terms(s)["short_range"]
        assert abs(float(sr[0] - sr[1])) > 1e-4
        local = LongRangeModel([1, 6, 17], hidden=(8,), charges={"scheme": scheme, "charge_input": False}, seed=0,
                               electrostatics={"enabled": False}, dispersion={"enabled": False})
        if scheme == "neutralize":  # no charge input, no electrostatics: a purely local model
            e = local.energy(s)
            assert abs(float(e[0] - e[1])) < 1e-12


def test_save_load_round_trip(tmp_path):
    from fesurf.surrogates import load_model, save_model

    s = _charged_batch()
    model = LongRangeModel([1, 6, 8, 17], hidden=(8,), n_members=2, seed=3,
                           electrostatics={"kernel": "exclusion", "switch_radius": 4.0}, dispersion={"damping": "zero"})
    save_model(model, tmp_path / "lr.pt")
    back = load_model(tmp_path / "lr.pt")
    assert isinstance(back, LongRangeModel)
    assert back.electrostatics_settings == model.electrostatics_settings
    assert torch.equal(back.member_energies(s), model.member_energies(s))
    # the D3 table is rebuilt from torch-dftd, not stored: the file stays small
    assert (tmp_path / "lr.pt").stat().st_size < 500_000


def test_bad_inputs_raise_input_error():
    with pytest.raises(InputError, match="scheme"):
        ChargeSettings(scheme="eem")
    with pytest.raises(InputError, match="kernel"):
        ElectrostaticsSettings(kernel="yukawa")
    with pytest.raises(InputError, match="damping"):
        DispersionSettings(damping="d4")
    with pytest.raises(InputError, match="unknown charges setting"):
        LongRangeModel([1, 8], charges={"sheme": "qeq"})
    with pytest.raises(InputError, match="positive"):
        ElectrostaticsSettings(real_space_cutoff=-1.0)
    with pytest.raises(InputError, match="no charge given"):
        PointChargeElectrostatics({11: 1.0}).energy(State.from_atoms(molecule("H2O")))
    with pytest.raises(InputError, match="elements"):
        LongRangeModel([1, 8]).energy(State.from_atoms(molecule("CH4")))
    big = State.from_atoms(rocksalt(5.64).repeat((6, 6, 6)))  # 1728 atoms
    with pytest.raises(InputError, match="neutralize"):
        LongRangeModel([11, 17], hidden=(4,), dispersion={"enabled": False}).charges(big)
    with pytest.raises(InputError, match="dipole"):
        LongRangeModel([11, 17]).dipoles(State.from_atoms(rocksalt()))


# ------------------------------------------------------------------- reference charges in the data
def test_xtb_moments_reach_the_dataset_and_survive_io(tmp_path):
    from ase import Atoms

    from fesurf.oracles import XTBOracle
    from fesurf.training.data import Dataset

    pos = np.array([[0.0, 0, 0], [0, 0, 1.78], [1.03, 0, -0.36], [-0.51, 0.89, -0.36], [-0.51, -0.89, -0.36],
                    [0, 0, -4.0]])
    frames = []
    for shift in (0.0, 0.3):
        a = Atoms("CClH3Cl", positions=pos + [0, 0, shift * np.arange(6)[5] / 5])
        a.info.update(charge=-1, multiplicity=1)
        frames.append(a)
    labels = XTBOracle(moments=True).label(frames)
    q, mu = labels[0].extra["charges"], labels[0].extra["dipole"]
    assert q.shape == (6,) and abs(q.sum() + 1.0) < 1e-6  # Mulliken charges sum to the total charge
    # tblite's dipole is about the coordinate origin: moving the anion by t shifts it by -t (e A)
    moved = XTBOracle(moments=True).compute(Atoms(frames[0].numbers, frames[0].positions + [0.0, 0.0, 1.0],
                                                  info={"charge": -1}))
    assert abs(float(moved.extra["dipole"][2] - mu[2]) + 1.0) < 1e-4
    ds = Dataset.from_labels(labels)
    assert ds.atom_charges.shape == (12,) and ds.dipole.shape == (2, 3)
    ds.save_npz(tmp_path / "d.npz")
    back = Dataset.load_npz(tmp_path / "d.npz")
    assert torch.equal(back.atom_charges, ds.atom_charges) and torch.equal(back.dipole, ds.dipole)
    ds.write(tmp_path / "d.extxyz")
    again = Dataset.read(tmp_path / "d.extxyz")
    assert torch.allclose(again.atom_charges, ds.atom_charges) and torch.allclose(again.dipole, ds.dipole)
    assert torch.equal(ds.subset([1]).atom_charges, ds.atom_charges[6:])
    plain = Dataset.from_labels(XTBOracle().label(frames[:1]))
    assert plain.atom_charges is None and plain.dipole is None
    with pytest.raises(InputError, match="atom_charges"):
        Dataset(ds.positions, ds.numbers, ds.offsets, ds.energy, ds.forces, ds.charge, ds.multiplicity, ds.info,
                atom_charges=ds.atom_charges[:5])


def test_training_needs_reference_charges():
    from fesurf.data import long_range as lrd
    from fesurf.training.data import Dataset
    from fesurf.training.long_range_fit import LongRangeTrainConfig, train_long_range

    ds = lrd.dataset("nacl_dissociation")
    bare = Dataset(ds.positions, ds.numbers, ds.offsets, ds.energy, ds.forces, ds.charge, ds.multiplicity, ds.info)
    model = LongRangeModel([11, 17], hidden=(4,))
    with pytest.raises(InputError, match="reference charges"):
        train_long_range(model, bare, [0, 1], [2], LongRangeTrainConfig(epochs=1))
    with pytest.raises(InputError, match="LongRangeModel"):
        from fesurf.surrogates import BehlerParrinello

        train_long_range(BehlerParrinello([11, 17]), ds, [0, 1], [2], LongRangeTrainConfig(epochs=1))
    with pytest.raises(InputError, match="charge_weight"):
        LongRangeTrainConfig(charge_weight=-1.0)


def test_dispersion_is_fitted_out_once():
    """The fit's targets are E_ref - E_disp with E_disp the model's own (parameter-free) D3 term, so the
    trained model, which adds that same term back, counts dispersion once."""
    from fesurf.data import long_range as lrd
    from fesurf.training.long_range_fit import dispersion_of_dataset, subtract_dispersion

    ds = lrd.dataset("nacl_dissociation")
    model = LongRangeModel([11, 17], hidden=(4,))
    e, f = dispersion_of_dataset(model, ds)
    st, _, _ = ds.batch(torch.arange(len(ds)))
    e_direct, f_direct = model.dispersion.energy_and_forces(st)
    assert torch.allclose(e, e_direct, atol=1e-12) and torch.allclose(f, f_direct, atol=1e-12)
    target = subtract_dispersion(model, ds)
    assert torch.allclose(target.energy + e, ds.energy, atol=1e-12)
    assert float(e.abs().min()) > 0  # D3 is on at every distance of the curve
