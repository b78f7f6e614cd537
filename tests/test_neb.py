"""Batched climbing-image NEB (fesurf.sampling.neb).

Exact answers: the Mueller-Brown saddle between minima A and C, found independently by a Newton
root search of the analytic gradient (scipy), and ASE's own image-by-image NEB on the same EMT band
(Cu(100) adatom hop): the batched band must follow the same optimiser trajectory (same energies,
same steps) while calling the potential once per step for all images instead of once per image.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.emt import EMT
from scipy.optimize import root

from fesurf.errors import InputError
from fesurf.potentials import ASEPotential, MullerBrown
from fesurf.sampling.neb import BatchedImages, NEBSettings, image_by_image_neb, interpolate_band, neb

MB = MullerBrown(scale=0.01)


def _mb_grad(xy):
    x = torch.tensor([[xy[0], xy[1], 0.0]], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(MB.per_atom(x)[0].sum(), x)
    return g[0, :2].numpy()


def test_climbing_image_reaches_the_exact_mueller_brown_saddle():
    a = Atoms("H", positions=[[-0.558, 1.442, 0.0]])
    c = Atoms("H", positions=[[-0.050, 0.467, 0.0]])
    exact = root(_mb_grad, [-0.82, 0.62], tol=1e-12).x  # saddle S1 (-0.822, 0.624), E = -40.665 MB units
    e_saddle = float(MB.surface(exact[0], exact[1]))
    ends = [float(MB.surface(*a.positions[0, :2])), float(MB.surface(*c.positions[0, :2]))]
    res = neb(MB, [a, c], NEBSettings(n_images=9, k=0.5, fmax=1e-3, steps=2000))
    assert res.converged
    # at |F| < 1e-3 eV/A on a saddle of curvature ~ 1 eV/A^2 the energy error is ~ F^2 / k ~ 1e-6 eV
    assert abs(res.barrier - (e_saddle - ends[0])) < 1e-4
    top = res.images[res.climbing_image].positions[0, :2]
    assert np.abs(top - exact).max() < 5e-3
    assert res.barrier == pytest.approx(1.0603, abs=2e-3)  # Mueller & Brown: -40.665 - (-146.700) units


@pytest.fixture(scope="module")
def hop_ends():
    """Relaxed end points of a Cu(100) adatom hop between neighbouring hollows (EMT, 2x2x3 slab,
    bottom layer fixed)."""
    from fesurf.data.materials import adatom_hop_end_points, lattice_constant

    a0 = lattice_constant(EMT)
    return adatom_hop_end_points(a0, EMT, size=(2, 2), layers=3)


def test_batched_band_is_ase_image_by_image_band_with_one_call_per_step(hop_ends):
    settings = NEBSettings(n_images=5, k=0.2, climb=True, fmax=0.02, steps=300, optimizer="FIRE")
    calls = []

    class Counting(ASEPotential):
        def energy_and_forces(self, state, create_graph=False):
            calls.append(state.n_systems)
            return super().energy_and_forces(state, create_graph)

    batched = neb(Counting(EMT()), hop_ends, settings)
    ase_band = image_by_image_neb(EMT, hop_ends, settings)
    assert batched.converged and ase_band.converged
    assert batched.n_steps == ase_band.n_steps
    np.testing.assert_allclose(batched.energies, ase_band.energies, atol=1e-9)
    for x, y in zip(batched.images, ase_band.images):
        np.testing.assert_allclose(x.positions, y.positions, atol=1e-9)
    assert 0.1 < batched.barrier < 1.0 and batched.barrier == pytest.approx(ase_band.barrier, abs=1e-9)
    # one call of the 3 moving images per band evaluation (plus one for the two end points)
    assert calls[0] == 2 and set(calls[1:]) == {3}
    assert batched.n_calls == len(calls)
    assert ase_band.n_calls >= 3 * (batched.n_calls - 1)


def test_batched_images_evaluate_only_when_the_band_moved():
    imgs = [Atoms("H", positions=[[x, 0.5, 0.0]]) for x in (-0.5, -0.3)]
    batch = BatchedImages(MB, imgs)
    e0, f0 = batch.results(0)
    batch.results(1)
    assert batch.n_calls == 1
    imgs[1].positions[0, 0] += 0.01
    e1, _ = batch.results(1)
    assert batch.n_calls == 2
    assert e1 == pytest.approx(float(MB.surface(-0.29, 0.5)), abs=1e-12)
    assert e0 == pytest.approx(float(MB.surface(-0.5, 0.5)), abs=1e-12)


def test_bad_inputs_are_refused():
    a = Atoms("H", positions=[[0.0, 0.0, 0.0]])
    for bad in (dict(n_images=2), dict(k=0.0), dict(optimizer="SD"), dict(method="x"), dict(interpolation="cubic")):
        with pytest.raises(InputError):
            NEBSettings(**bad)
    with pytest.raises(InputError, match="other atoms"):
        interpolate_band([a, Atoms("He", positions=[[1.0, 0, 0]])], NEBSettings())
    with pytest.raises(InputError, match="end points"):
        interpolate_band([a], NEBSettings())
    with pytest.raises(InputError, match="NEBSettings"):
        neb(MB, [a, a.copy()], settings={"n_images": 5})
