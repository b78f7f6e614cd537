"""Surrogates: contract, invariances, locality/extensivity, committees, persistence, export, ASE, MD."""
import os
import pickle

import numpy as np
import pytest
import torch
from ase.build import molecule

from fesurf.data import malonaldehyde
from fesurf.errors import InputError
from fesurf.potentials import check_potential
from fesurf.state import State
from fesurf.surrogates import BehlerParrinello, Committee, SchNet, export_torchscript, load_model, save_model


def _random_standardisation(model, seed=0):
    """Untrained models have unit feature scaling; randomise buffers so every path is exercised."""
    gen = torch.Generator().manual_seed(seed)
    if hasattr(model, "feature_std"):
        model.feature_std.copy_(0.5 + torch.rand(model.feature_std.shape, generator=gen, dtype=torch.float64))
        model.feature_mean.copy_(torch.randn(model.feature_mean.shape, generator=gen, dtype=torch.float64))
    model.element_energy.copy_(torch.randn(model.element_energy.shape, generator=gen, dtype=torch.float64))
    return model


MODELS = {
    "bp_committee": lambda: _random_standardisation(BehlerParrinello([1, 6, 8], hidden=(16, 16), n_members=3, seed=1)),
    "bp_heteroscedastic": lambda: _random_standardisation(
        BehlerParrinello([1, 6, 8], hidden=(8,), heteroscedastic=True, seed=2)),
    "schnet": lambda: _random_standardisation(SchNet([1, 6, 8], features=16, n_interactions=2, seed=3)),
    "schnet_committee": lambda: Committee([_random_standardisation(SchNet([1, 6, 8], features=8, n_interactions=1,
                                                                          seed=s)) for s in (4, 5)]),
}


@pytest.fixture
def mal_batch():
    gen = torch.Generator().manual_seed(7)
    s = State.from_atoms(malonaldehyde()).replicate(3)
    return s.replace(positions=s.positions + 0.08 * torch.randn(s.positions.shape, generator=gen, dtype=torch.float64))


@pytest.mark.parametrize("name", list(MODELS))
def test_contract_and_invariances(name, mal_batch):
    model = MODELS[name]()
    # float64 autograd forces vs 4th-order FD (step 1e-3 A, error ~1e-10 relative): 1e-6 leaves margin
    report = check_potential(model, mal_batch, force_rtol=1e-6, invariance_atol=1e-8, max_fd_coords=40)
    assert report["invariance_energy_error"] < 1e-6
    # permutation of like atoms: swap two hydrogens and two carbons of system 0
    e = model.energy(mal_batch)
    perm = torch.arange(mal_batch.n_atoms)
    perm[[5, 7]] = perm[[7, 5]]
    perm[[1, 3]] = perm[[3, 1]]
    swapped = mal_batch.replace(positions=mal_batch.positions[perm], atomic_numbers=mal_batch.atomic_numbers[perm])
    assert (model.energy(swapped) - e).abs().max() < 1e-6
    _, f = model.energy_and_forces(mal_batch)
    _, f_sw = model.energy_and_forces(swapped)
    assert (f_sw - f[perm]).abs().max() < 1e-8


@pytest.mark.parametrize("name", ["bp_committee", "schnet"])
def test_two_distant_copies_are_exactly_additive(name):
    model = MODELS[name]()
    one = State.from_atoms(malonaldehyde())
    far = one.positions + torch.tensor([20.0, 0.0, 0.0], dtype=torch.float64)
    two = State(positions=torch.cat([one.positions, far]), atomic_numbers=one.atomic_numbers.repeat(2))
    e1, f1 = model.energy_and_forces(one)
    e2, f2 = model.energy_and_forces(two)
    # cosine cutoff is exactly zero beyond 5 A: only summation order differs (rounding ~1e-13 eV)
    assert abs(float(e2[0]) - 2 * float(e1[0])) < 1e-10
    assert (f2[:9] - f1).abs().max() < 1e-12 and (f2[9:] - f1).abs().max() < 1e-12


def test_periodic_neighbour_list_path_equals_molecule_path():
    model = MODELS["bp_committee"]()
    mol = State.from_atoms(malonaldehyde())
    boxed = mol.replace(cell=torch.eye(3, dtype=torch.float64)[None] * 30.0, pbc=torch.ones(1, 3, dtype=torch.bool))
    e1, f1 = model.energy_and_forces(mol)
    e2, f2 = model.energy_and_forces(boxed)
    assert abs(float(e1[0] - e2[0])) < 1e-10 and (f1 - f2).abs().max() < 1e-10
    # a periodic crystal: atoms see their images through the vesin neighbour list
    from ase.build import bulk

    cryst = State.from_atoms(bulk("C", "diamond", a=3.57, cubic=True))
    model_c = _random_standardisation(BehlerParrinello([6], hidden=(8,), seed=0))
    check_potential(model_c, cryst, force_rtol=1e-6, max_fd_coords=12)


def test_committee_outputs(mal_batch):
    model = MODELS["bp_committee"]()
    out = model.predict(mal_batch)
    members = out["member_energies"]
    assert torch.allclose(out["energy"], members.mean(0), atol=1e-12)
    assert torch.allclose(out["energy_std"], members.std(0, unbiased=False), atol=1e-12)
    # each member's forces equal the gradient of that member alone
    pos = mal_batch.positions.clone().requires_grad_(True)
    e_m = model._member_outputs(pos, mal_batch)[0]
    (g1,) = torch.autograd.grad(e_m[1].sum(), pos)
    assert (out["member_forces"][1] + g1).abs().max() < 1e-10
    f = out["member_forces"]
    dev = ((f - f.mean(0)) ** 2).sum(-1).mean(0).sqrt()
    assert abs(float(out["force_deviation_max"][2]) - float(dev[18:27].max())) < 1e-12
    het = MODELS["bp_heteroscedastic"]().predict(mal_batch)
    assert (het["aleatoric_std"] > 0).all()


def test_save_load_roundtrip_and_torchscript(tmp_path, mal_batch):
    for name in ("bp_committee", "schnet_committee"):
        model = MODELS[name]()
        save_model(model, tmp_path / f"{name}.pt", metadata={"note": "test"})
        loaded, meta = load_model(tmp_path / f"{name}.pt", return_metadata=True)
        assert meta == {"note": "test"} and (tmp_path / f"{name}.json").exists()
        assert torch.equal(loaded.energy(mal_batch), model.energy(mal_batch))
    model = MODELS["bp_committee"]()
    one = State.from_atoms(malonaldehyde())
    export_torchscript(model, one.atomic_numbers, tmp_path / "bp.ts")
    scripted = torch.jit.load(str(tmp_path / "bp.ts"))
    pos = one.positions + 0.05
    assert abs(float(scripted(pos)[0]) - float(model.energy(one.replace(positions=pos))[0])) < 1e-10


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/fesurf_pwned_marker",))


def test_crafted_pickle_is_refused(tmp_path):
    if os.path.exists("/tmp/fesurf_pwned_marker"):
        os.remove("/tmp/fesurf_pwned_marker")
    path = tmp_path / "evil.pt"
    torch.save({"format": "fesurf-surrogate-v1", "config": "{}", "state_dict": {}, "payload": _Evil()}, path)
    with pytest.raises(InputError, match="refused"):
        load_model(path)
    assert not os.path.exists("/tmp/fesurf_pwned_marker")
    with open(tmp_path / "raw.pt", "wb") as fh:
        pickle.dump(_Evil(), fh)
    with pytest.raises(InputError, match="refused"):
        load_model(tmp_path / "raw.pt")
    assert not os.path.exists("/tmp/fesurf_pwned_marker")


def test_ase_calculator_and_md(mal_batch):
    from fesurf.md import Langevin, maxwell_boltzmann
    from fesurf.potentials.ase_bridge import FesurfCalculator

    model = MODELS["bp_committee"]()
    atoms = malonaldehyde()
    atoms.calc = FesurfCalculator(model)
    e = model.energy(State.from_atoms(malonaldehyde()))
    assert abs(atoms.get_potential_energy() - float(e[0])) < 1e-12
    assert atoms.get_forces().shape == (9, 3)
    md = Langevin(model, timestep=0.5, temperature=300.0, friction=0.01, seed=3)
    final = md.run(maxwell_boltzmann(mal_batch, 300.0, seed=4), 20)
    assert torch.isfinite(final.positions).all()
    # float32 evaluation of a float64-built model agrees to single precision
    e32 = model.to(torch.float32).energy(mal_batch)
    e64 = model.to(torch.float64).energy(mal_batch)
    assert (e32 - e64).abs().max() < 1e-4 * max(1.0, float(e64.abs().max()))


def test_unknown_element_is_an_input_error():
    model = BehlerParrinello([1, 8], hidden=(4,))
    with pytest.raises(InputError, match="trained for elements"):
        model.energy(State.from_atoms(molecule("CH4")))


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _fast_cases():
    """States the fast path covers: equal non-periodic molecules (same atomic numbers)."""
    gen = torch.Generator().manual_seed(11)
    one = State.from_atoms(malonaldehyde())
    batch = one.replicate(4)
    batch = batch.replace(positions=batch.positions + 0.1 * torch.randn(batch.positions.shape, generator=gen,
                                                                       dtype=torch.float64))
    no_oxygen = State.from_atoms([molecule("C2H6"), molecule("C2H6")])  # O known to the model but absent
    no_oxygen = no_oxygen.replace(positions=no_oxygen.positions + 0.05 * torch.randn(
        no_oxygen.positions.shape, generator=gen, dtype=torch.float64))
    return {"single": one, "batched": batch, "oxygen_absent": no_oxygen}


@pytest.mark.parametrize("case", list(_fast_cases()))
def test_fast_path_equals_autograd(case):
    """The autograd-free path (bp_fast) gives the autograd energies and forces to float64 rounding
    (1e-10 relative; observed ~1e-15), for the mean and for every committee member."""
    from fesurf.surrogates.bp_fast import fast_supported

    state = _fast_cases()[case]
    for model in (MODELS["bp_committee"](), _random_standardisation(BehlerParrinello([1, 6, 8], hidden=(8,), seed=4))):
        assert fast_supported(model, state, create_graph=False)
        e_fast, f_fast = model.energy_and_forces(state)
        e_ref, f_ref = model.energy_and_forces(state, fast=False)
        assert _rel(e_fast, e_ref) < 1e-10 and _rel(f_fast, f_ref) < 1e-10
        em_fast, fm_fast, _ = model.member_energies_and_forces(state)
        em_ref, fm_ref, _ = model.member_energies_and_forces(state, fast=False)
        assert _rel(em_fast, em_ref) < 1e-10 and _rel(fm_fast, fm_ref) < 1e-10
    # predict (member forces through the fast path) against per-member autograd gradients
    model = MODELS["bp_committee"]()
    out = model.predict(state)
    pos = state.positions.clone().requires_grad_(True)
    e_m = model._member_outputs(pos, state)[0]
    for k in range(model.n_members):
        (g,) = torch.autograd.grad(e_m[k].sum(), pos, retain_graph=True)
        assert _rel(out["member_forces"][k], -g) < 1e-10


def test_fast_path_dispatch_falls_back_to_autograd():
    """Unequal sizes, unequal compositions, periodic cells, heteroscedastic heads: autograd."""
    from fesurf.surrogates.bp_fast import fast_energy_and_forces, fast_supported

    model = MODELS["bp_committee"]()
    one = State.from_atoms(malonaldehyde())
    others = [State.from_atoms([molecule("CH4"), molecule("H2O")]),
              State.from_atoms([molecule("CH3OH"), molecule("C2H4")]),  # 6 atoms each, different elements
              one.replace(cell=torch.eye(3, dtype=torch.float64)[None] * 7.0, pbc=torch.ones(1, 3, dtype=torch.bool))]
    for state in others:
        assert not fast_supported(model, state, create_graph=False)
        with pytest.raises(InputError, match="falls back to autograd"):
            fast_energy_and_forces(model, state)
    assert fast_supported(model, one, create_graph=False)
    assert not fast_supported(model, one, create_graph=True)
    assert not fast_supported(MODELS["bp_heteroscedastic"](), one, create_graph=False)


def test_fast_path_float32_and_dispatch():
    state = _fast_cases()["batched"]
    model = MODELS["bp_committee"]()
    e64, f64 = model.energy_and_forces(state, fast=False)
    m32, s32 = model.to(torch.float32), state.to(torch.float32)
    e32, f32 = m32.energy_and_forces(s32)
    assert e32.dtype == f32.dtype == torch.float32
    # float32 rounding: ~1e-7 relative per operation, a few hundred operations deep
    assert _rel(e32.double(), e64) < 1e-5 and _rel(f32.double(), f64) < 1e-4
    e32a, f32a = m32.energy_and_forces(s32, fast=False)
    assert _rel(e32, e32a) < 1e-5 and _rel(f32, f32a) < 1e-4
    model.to(torch.float64)
    # training keeps autograd: create_graph=True gives forces differentiable w.r.t. the weights
    _, f = model.energy_and_forces(state, create_graph=True)
    assert f.requires_grad
    (gw,) = torch.autograd.grad(f.pow(2).sum(), model.mlp.weights[0])
    assert gw.abs().sum() > 0


def test_fast_path_follows_weight_updates():
    """Folded weights are cached; an in-place update (optimiser step, load_state_dict) is seen."""
    state = _fast_cases()["batched"]
    model = MODELS["bp_committee"]()
    e0, _ = model.energy_and_forces(state)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    loss = model.energy(state).sum()
    loss.backward()
    opt.step()
    with torch.no_grad():
        model.feature_std.mul_(1.1)
        model.element_energy.add_(0.5)
    e1, f1 = model.energy_and_forces(state)
    e_ref, f_ref = model.energy_and_forces(state, fast=False)
    assert _rel(e1, e0) > 1e-6
    assert _rel(e1, e_ref) < 1e-10 and _rel(f1, f_ref) < 1e-10


def test_compiled_fast_path_equals_autograd():
    """Opt-in torch.compile of the fast path: the same energies and forces (float64, 1e-10 relative),
    or, on a machine without a C++ compiler, one warning and the TorchScript path."""
    import shutil
    import warnings

    state = _fast_cases()["single"]
    model = _random_standardisation(BehlerParrinello([1, 6, 8], hidden=(8,), seed=4)).use_compiled_path()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        e_c, f_c = model.energy_and_forces(state)
    e_ref, f_ref = model.energy_and_forces(state, fast=False)
    assert _rel(e_c, e_ref) < 1e-10 and _rel(f_c, f_ref) < 1e-10
    if shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++"):
        assert model._compiled_path and not [w for w in caught if "TorchScript fast path" in str(w.message)]
    else:
        assert not model._compiled_path and any("TorchScript fast path" in str(w.message) for w in caught)
