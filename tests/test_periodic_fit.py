"""Periodic training on energies, forces and stress (fesurf.training.periodic_fit).

Exact checks: the per-member virial equals each member's own stress (autograd through a strain,
itself checked against finite differences in tests/test_periodic_stress.py); the virial term of the
loss has its closed form (labels taken from the model itself, one stress label shifted by delta:
loss = virial_weight * mean_ab (V delta_ab / n)^2); with the virial weight at 0 the periodic trainer
is the molecular trainer (same shared loop, bit-identical history); EMT stress labels through
StressOracle equal ASE's; stress survives the Dataset's npz and Atoms round trips.
"""
from __future__ import annotations

import dataclasses
from functools import partial

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

from fesurf.errors import InputError
from fesurf.oracles import ASEOracle
from fesurf.surrogates import BehlerParrinello
from fesurf.training.data import Dataset
from fesurf.training.fit import TrainConfig, train
from fesurf.training.periodic_fit import (PeriodicTrainConfig, StressOracle, _periodic_losses,
                                          member_energies_forces_virial, periodic_metrics, train_periodic)


def emt_cells(n=16, seed=0):
    """Strained (+-4 %, sheared) and rattled 4-atom Cu cells labelled by EMT through StressOracle."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        a = bulk("Cu", "fcc", a=3.59, cubic=True)
        a.set_cell(a.cell.array @ (np.eye(3) + rng.uniform(-0.04, 0.04, (3, 3))), scale_atoms=True)
        a.rattle(0.05, seed=k)
        frames.append(a)
    # a partial, not the bare class: ASEOracle takes a class for a calculator instance
    labels = StressOracle(ASEOracle(partial(EMT), method="EMT")).label(frames)
    return Dataset.from_labels(labels), frames


@pytest.fixture(scope="module")
def data():
    return emt_cells()


def small_bp(seed=0, members=2):
    return BehlerParrinello([29], hidden=(8,), n_members=members, acsf=dict(cutoff=4.5), seed=seed)


def test_stress_labels_equal_ase_and_survive_round_trips(data, tmp_path):
    ds, frames = data
    assert ds.stress is not None and ds.cell is not None and bool(ds.pbc.all())
    for k in (0, 7):
        atoms = frames[k].copy()
        atoms.calc = EMT()
        assert np.allclose(ds.stress[k].numpy(), atoms.get_stress(voigt=False), atol=1e-12)
    ds.save_npz(tmp_path / "cu.npz")
    back = Dataset.load_npz(tmp_path / "cu.npz")
    assert torch.equal(back.stress, ds.stress) and torch.equal(back.cell, ds.cell)
    again = Dataset.from_atoms(ds.to_atoms())
    assert torch.allclose(again.stress, ds.stress, atol=1e-15) and torch.equal(again.cell, ds.cell)
    assert torch.equal(ds.subset([3, 5]).stress, ds.stress[[3, 5]])
    with pytest.raises(InputError, match="stress needs"):
        dataclasses.replace(ds, cell=None, pbc=None)


def test_member_virials_are_each_members_own_stress(data):
    ds, _ = data
    model = small_bp(members=3)
    state, _, _ = ds.batch(torch.arange(4))
    e, f, w = member_energies_forces_virial(model, state)
    vol = torch.linalg.det(state.cell).abs()
    e_ref, f_ref, _ = model.member_energies_and_forces(state)
    assert torch.allclose(e, e_ref, atol=1e-12) and torch.allclose(f, f_ref, atol=1e-12)
    for m in range(3):
        one = model.select_members([m])
        assert torch.allclose(-w[m] / vol[:, None, None], one.stress(state), atol=1e-13)


def test_virial_term_has_its_closed_form(data):
    ds, _ = data
    model = small_bp(members=2)
    state, _, _ = ds.batch(torch.arange(3))
    e, f, w = member_energies_forces_virial(model, state)
    vol = torch.linalg.det(state.cell).abs()
    # the model's own labels (committee-mean energy/forces/stress of a one-member copy)
    one = model.select_members([0])
    e0, f0, w0 = e[0], f[0], w[0]
    stress = -w0 / vol[:, None, None]
    cfg = PeriodicTrainConfig(energy_weight=1.0, force_weight=0.01, virial_weight=0.3)
    assert float(_periodic_losses(one, state, e0, f0, stress, cfg).detach().abs().max()) < 1e-20
    delta = torch.zeros_like(stress)
    delta[1, 0, 2] = delta[1, 2, 0] = 1e-3  # eV/A^3 on frame 1
    got = float(_periodic_losses(one, state, e0, f0, stress + delta, cfg)[0].detach())
    n = state.atoms_per_system.double()
    expected = 0.3 * float(((vol[:, None, None] * delta / n[:, None, None]) ** 2).mean((-1, -2)).mean())
    assert got == pytest.approx(expected, rel=1e-10)


def test_without_virial_the_periodic_trainer_is_the_shared_loop(data):
    ds, _ = data
    kw = dict(epochs=2, batch_size=4, lr=5e-3, seed=2, bootstrap=True)
    a, b = small_bp(seed=1), small_bp(seed=1)
    h1 = train(a, ds, range(12), range(12, 16), TrainConfig(**kw))
    h2 = train_periodic(b, ds, range(12), range(12, 16), PeriodicTrainConfig(virial_weight=0.0, **kw))
    assert h1["train_loss"] == h2["train_loss"] and h1["val_loss"] == h2["val_loss"]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_training_with_stress_learns_the_stress(data):
    ds, _ = data
    model = small_bp(seed=3)
    before = periodic_metrics(model, ds, range(12, 16))
    cfg = PeriodicTrainConfig(epochs=20, batch_size=6, lr=2e-2, virial_weight=1.0, seed=0, patience=100)
    hist = train_periodic(model, ds, range(12), range(12, 16), cfg)
    after = periodic_metrics(model, ds, range(12, 16))
    assert hist["val_loss"][hist["best_epoch"]] < 0.2 * hist["val_loss"][0]
    assert after["stress_rmse_eV_A3"] < 0.5 * before["stress_rmse_eV_A3"], (before, after)
    assert {"stress_mae_GPa", "energy_rmse_meV_atom", "force_rmse_eV_A"} <= set(after)


def test_bad_inputs(data):
    ds, _ = data
    with pytest.raises(InputError, match="virial_weight"):
        PeriodicTrainConfig(virial_weight=-1.0)
    with pytest.raises(InputError, match="PeriodicTrainConfig"):
        train_periodic(small_bp(), ds, [0], [1], TrainConfig())
    with pytest.raises(InputError, match="heteroscedastic"):
        train_periodic(BehlerParrinello([29], hidden=(4,), heteroscedastic=True), ds, [0], [1])
    with pytest.raises(InputError, match="StressOracle wraps"):
        StressOracle(EMT())
