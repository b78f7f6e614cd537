"""Collective variables: values against ASE/numpy closed forms, gradients against
finite differences, periodicity, minimum image, specs and bad input."""
import json
import math

import numpy as np
import pytest
import torch
from ase import Atoms

from fesurf.cv import (ANGLE, COMBINE, COORDINATION, DISTANCE, POSITION, TORSION, cv_from_spec, distance_difference,
                       distance_sum, evaluate_cvs, periodic_difference)
from fesurf.errors import InputError
from fesurf.state import State


def _random_state(n_systems=3, n_atoms=5, seed=0, cell=None):
    rng = np.random.default_rng(seed)
    pos = rng.normal(scale=1.5, size=(n_systems * n_atoms, 3))
    return State(positions=pos, atomic_numbers=[1] * (n_systems * n_atoms),
                 system_index=np.repeat(np.arange(n_systems), n_atoms), cell=cell,
                 pbc=None if cell is None else [True] * 3)


ALL_CVS = [
    DISTANCE([0, 3]), ANGLE([1, 0, 2]), TORSION([0, 1, 2, 3]), POSITION(4, "z"),
    COORDINATION([0, 1], [2, 3, 4], r0=1.5), COORDINATION([0, 1, 2, 3], r0=2.0, nn=8, mm=14, d0=0.1),
    distance_difference([0, 1], [2, 1]), distance_sum([0, 1], [2, 1]),
    COMBINE([DISTANCE([0, 1]), TORSION([0, 1, 2, 3])], coefficients=[0.5, 2.0], parameters=[1.0, 0.3], powers=[2, 1]),
]


def test_values_match_ase_geometry():
    s = _random_state()
    for i, (a, b) in enumerate(s.atom_slices()):
        atoms = Atoms("H5", positions=s.positions[a:b].numpy())
        assert DISTANCE([0, 3])(s)[i] == pytest.approx(atoms.get_distance(0, 3), abs=1e-12)
        assert ANGLE([1, 0, 2])(s)[i] == pytest.approx(math.radians(atoms.get_angle(1, 0, 2)), abs=1e-10)
        # ASE returns the dihedral in [0, 360); ours is in (-pi, pi] with the same sign convention
        phi = math.radians(atoms.get_dihedral(0, 1, 2, 3))
        phi = phi - 2 * math.pi if phi > math.pi else phi
        assert TORSION([0, 1, 2, 3])(s)[i] == pytest.approx(phi, abs=1e-10)
        assert POSITION(4, "z")(s)[i] == s.positions[a + 4, 2]


def test_coordination_rational_switch():
    s = _random_state(n_atoms=5, seed=3)
    cv = COORDINATION([0, 1], [2, 3, 4], r0=1.5, nn=6, mm=12)
    for i, (a, b) in enumerate(s.atom_slices()):
        p = s.positions[a:b].numpy()
        x = np.array([np.linalg.norm(p[j] - p[k]) / 1.5 for j in (0, 1) for k in (2, 3, 4)])
        assert cv(s)[i] == pytest.approx(np.sum((1 - x**6) / (1 - x**12)), rel=1e-12)
    # at r = r0 exactly the 0/0 limit is nn/mm, and the value is continuous around it
    two = State(positions=[[0, 0, 0], [1.5, 0, 0], [0, 0, 0], [1.5 + 1e-7, 0, 0]], atomic_numbers=[1] * 4,
                system_index=[0, 0, 1, 1])
    v = COORDINATION([0], [1], r0=1.5)(two)
    assert v[0] == pytest.approx(0.5, abs=1e-12) and v[1] == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("cv", ALL_CVS, ids=lambda c: c.label())
def test_gradients_match_finite_differences(cv):
    s = _random_state(n_systems=2, seed=5)
    pos = s.positions.clone().requires_grad_(True)
    # gradcheck compares autograd with central differences in float64 (errors ~ eps^2 ~ 1e-12)
    assert torch.autograd.gradcheck(lambda p: cv(s.replace(positions=p)), (pos,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("cv", ALL_CVS, ids=lambda c: c.label())
def test_batched_equals_one_by_one_and_spec_roundtrip(cv):
    s = _random_state(n_systems=3, seed=7)
    batched = cv(s)
    assert batched.shape == (3,)
    for i in range(3):
        assert cv(s.select(i))[0] == pytest.approx(float(batched[i]), abs=1e-13)
    spec = json.loads(json.dumps(cv.to_spec()))
    again = cv_from_spec(spec)
    assert torch.equal(again(s), batched)
    assert again.periodic == cv.periodic


CLOSED_FORM = [DISTANCE([0, 3]), POSITION(4, "z"), distance_difference([0, 1], [2, 1]), distance_sum([0, 1], [2, 1]),
               COMBINE([DISTANCE([0, 1]), DISTANCE([1, 3])], coefficients=[0.5, -2.0], parameters=[1.0, 0.3],
                       powers=[2, 3])]


@pytest.mark.parametrize("cell", [None, np.array([[4.0, 0, 0], [1.0, 3.5, 0], [0.5, 0.7, 4.2]])], ids=["open", "triclinic"])
@pytest.mark.parametrize("cv", CLOSED_FORM, ids=lambda c: c.label())
def test_closed_form_jacobian_equals_autograd(cv, cell):
    """value_and_jacobian (what biases use for their forces) against autograd through compute, scattered
    onto the atoms; a periodic triclinic cell exercises the minimum-image vectors."""
    s = _random_state(n_systems=3, seed=11, cell=cell)
    value, atoms, jac = cv.value_and_jacobian(s)
    pos = s.positions.clone().requires_grad_(True)
    ref = cv(s.replace(positions=pos))
    assert torch.allclose(value, ref.detach(), rtol=0, atol=1e-13)
    dense = torch.zeros_like(s.positions).index_add_(0, atoms.reshape(-1), jac.reshape(-1, 3))
    weights = torch.tensor([1.0, -0.7, 2.0], dtype=torch.float64)  # one row of the Jacobian per system
    (grad,) = torch.autograd.grad(ref, pos, grad_outputs=weights)
    scale = weights[s.system_index][:, None]
    assert torch.allclose(dense * scale, grad, rtol=1e-12, atol=1e-13)
    assert float(grad.abs().max()) > 0.1


def test_cvs_without_closed_form_fall_back_to_autograd():
    s = _random_state(n_systems=2, seed=3)
    for cv in (ANGLE([1, 0, 2]), TORSION([0, 1, 2, 3]), COORDINATION([0, 1], [2, 3, 4], r0=1.5),
               COMBINE([DISTANCE([0, 1]), TORSION([0, 1, 2, 3])])):
        assert cv.value_and_jacobian(s) is None


def test_torsion_is_periodic_and_wraps():
    cv = TORSION([0, 1, 2, 3])
    assert cv.periodic and cv.period == (-math.pi, math.pi)
    a, b = torch.tensor([math.pi - 0.1], dtype=torch.float64), torch.tensor([-math.pi + 0.1], dtype=torch.float64)
    assert float(cv.difference(a, b)) == pytest.approx(-0.2, abs=1e-12)
    assert float(periodic_difference(torch.tensor(0.3), torch.tensor(0.1), None)) == pytest.approx(0.2)
    # rotating the last atom about the j-k axis walks the angle through +-pi continuously
    angles = np.linspace(-3.1, 3.1, 13)
    pos = []
    for t in angles:
        pos += [[1, 0, 0], [0, 0, 0], [0, 0, 1], [math.cos(t), math.sin(t), 1]]
    s = State(positions=pos, atomic_numbers=[1] * len(pos), system_index=np.repeat(np.arange(13), 4))
    assert np.allclose(cv(s).numpy(), angles, atol=1e-12)


def test_minimum_image_distance_in_cells():
    cubic = torch.eye(3, dtype=torch.float64) * 10.0
    s = State(positions=[[0.5, 0, 0], [9.5, 0, 0]], atomic_numbers=[1, 1], cell=cubic, pbc=[True, True, True])
    assert float(DISTANCE([0, 1])(s)[0]) == pytest.approx(1.0, abs=1e-12)
    # triclinic cell: compare with ASE's minimum-image distance
    cell = np.array([[8.0, 0, 0], [3.0, 7.0, 0], [1.0, 2.0, 9.0]])
    rng = np.random.default_rng(1)
    frac = rng.random((6, 3))
    atoms = Atoms("H6", scaled_positions=frac, cell=cell, pbc=True)
    s = State.from_atoms(atoms)
    for i, j in [(0, 1), (2, 5), (3, 4)]:
        assert float(DISTANCE([i, j])(s)[0]) == pytest.approx(atoms.get_distance(i, j, mic=True), abs=1e-10)
    # partial pbc: no wrapping along the non-periodic axis
    s2 = State(positions=[[0.5, 0, 0], [9.5, 0, 0]], atomic_numbers=[1, 1], cell=cubic, pbc=[False, True, True])
    assert float(DISTANCE([0, 1])(s2)[0]) == pytest.approx(9.0)


def test_combine_and_invariance_flags():
    s = _random_state(n_systems=2, seed=11)
    d01, d21 = DISTANCE([0, 1])(s), DISTANCE([2, 1])(s)
    assert torch.allclose(distance_difference([0, 1], [2, 1])(s), d01 - d21)
    assert torch.allclose(distance_sum([0, 1], [2, 1])(s), d01 + d21)
    c = COMBINE([DISTANCE([0, 1]), DISTANCE([2, 1])], coefficients=[2.0, -1.0], parameters=[0.5, 0.0], powers=[2, 3])
    assert torch.allclose(c(s), 2.0 * (d01 - 0.5) ** 2 - d21**3)
    assert c.translation_invariant and c.rotation_invariant and c.length_power is None
    mixed = COMBINE([POSITION(0, "x"), DISTANCE([0, 1])])
    assert not mixed.translation_invariant and mixed.length_power == 1
    vals = evaluate_cvs([POSITION(0, "x"), {"type": "DISTANCE", "atoms": [0, 1]}], s)
    assert vals.shape == (2, 2)


def test_bad_input():
    s = _random_state(n_systems=2, n_atoms=5)
    with pytest.raises(InputError, match=r"DISTANCE\(0,7\).*atom index 7"):
        DISTANCE([0, 7])(s)
    with pytest.raises(InputError, match="TORSION.*atom index 5"):
        TORSION([0, 1, 2, 5])(s)
    with pytest.raises(InputError, match="atom index 9"):
        COMBINE([DISTANCE([0, 1]), DISTANCE([9, 1])])(s)
    with pytest.raises(InputError, match="two different atoms"):
        DISTANCE([1, 1])
    with pytest.raises(InputError, match="negative"):
        ANGLE([0, -1, 2])
    with pytest.raises(InputError, match="integers"):
        DISTANCE([0, 1.5])
    with pytest.raises(InputError, match="component"):
        POSITION(0, "w")
    with pytest.raises(InputError, match="unknown CV type"):
        cv_from_spec({"type": "RMSD"})
    with pytest.raises(InputError, match="nn != mm"):
        COORDINATION([0], [1], nn=6, mm=6)
