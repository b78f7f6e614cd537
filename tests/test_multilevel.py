"""Multi-level potentials: additive and subtractive (ONIOM) schemes, link atoms, point-charge coupling.

Exact references: the regions' energies computed separately on hand-built sub-systems, the low-level
potential alone, autograd through an explicit link-atom formula, and 4th-order finite differences.
"""
import math

import numpy as np
import pytest
import torch
from ase.build import molecule

from fesurf.errors import InputError
from fesurf.potentials import LennardJones, Morse, check_potential
from fesurf.potentials.multilevel import (COULOMB, LinkAtom, MultiLevelPotential, PointChargeCoupling, Region,
                                          dsf_kernel, minimum_image)
from fesurf.state import State

# ethanol: C0 C1 O2 H3(O) H4 H5 (on C1) H6 H7 H8 (on C0); the core is CH2OH, the C1-C0 bond is cut
CORE_ATOMS = (1, 2, 3, 4, 5)
LINK = LinkAtom(inner=1, outer=0)


def _ethanol(n=3, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        a = molecule("CH3CH2OH")
        a.positions += rng.normal(scale=0.05, size=a.positions.shape)
        frames.append(a)
    return State.from_atoms(frames)


def _sub_state(state, atoms, extra=None):
    """Independent construction of a region's sub-system (no fesurf region code)."""
    out = []
    for a in state.to_atoms():
        sub = a[list(atoms)]
        if extra is not None:
            from ase import Atom

            sub.append(Atom("H", extra(a)))
        sub.info["charge"] = 0.0
        sub.pbc = False
        out.append(sub)
    return State.from_atoms(out)


def test_additive_without_interaction_is_the_sum_of_the_regions():
    s = _ethanol()
    core_pot, env_pot = Morse(D=0.8, a=1.7, r0=1.1), LennardJones(epsilon=0.02, sigma=2.5)
    env_atoms = (0, 6, 7, 8)
    ml = MultiLevelPotential.additive(Region(CORE_ATOMS), core_pot, n_atoms=9, environment_potential=env_pot)
    total = ml.energy(s)
    separate = core_pot.energy(_sub_state(s, CORE_ATOMS)) + env_pot.energy(_sub_state(s, env_atoms))
    assert float((total - separate).abs().max()) < 1e-8
    e, f = ml.energy_and_forces(s)
    assert float((e - separate).abs().max()) < 1e-8
    # forces are the regions' forces placed on their atoms, nothing else
    _, fc = core_pot.energy_and_forces(_sub_state(s, CORE_ATOMS))
    _, fe = env_pot.energy_and_forces(_sub_state(s, env_atoms))
    ref = torch.zeros_like(f)
    for k in range(s.n_systems):
        ref[9 * k + torch.tensor(CORE_ATOMS)] = fc[5 * k:5 * k + 5]
        ref[9 * k + torch.tensor(env_atoms)] = fe[4 * k:4 * k + 4]
    assert float((f - ref).abs().max()) < 1e-10
    by_term = ml.energies_by_term(s)
    assert set(by_term) == {"core", "environment"}


def test_subtractive_with_equal_levels_is_the_low_level_alone():
    s = _ethanol()
    low = Morse(D=0.8, a=1.7, r0=1.1)
    for region in (Region(CORE_ATOMS), Region(CORE_ATOMS, links=(LINK,))):
        oniom = MultiLevelPotential.subtractive(region, high=low, low=low, n_atoms=9)
        e, f = oniom.energy_and_forces(s)
        e0, f0 = low.energy_and_forces(s)
        assert float((e - e0).abs().max()) < 1e-8
        assert float((f - f0).abs().max()) < 1e-8


def test_link_atom_position_and_force_distribution():
    s = _ethanol(2)
    g = LINK.scale(s.atomic_numbers[:9].tolist())
    # ONIOM's C-C link factor: (R_C + R_H) / (R_C + R_C) with ASE's covalent radii
    from ase.data import covalent_radii

    assert math.isclose(g, (covalent_radii[6] + covalent_radii[1]) / (2 * covalent_radii[6]), rel_tol=1e-14)
    high = Morse(D=1.1, a=1.9, r0=1.0)
    region = Region(CORE_ATOMS, links=(LINK,))
    oniom = MultiLevelPotential.subtractive(region, high=high, low=LennardJones(epsilon=0.01, sigma=2.2), n_atoms=9)
    # independent: high(core + H at r1 + g (r0 - r1)) by autograd on the full coordinates
    pos = s.positions.clone().requires_grad_(True)
    e_ref = 0.0
    for k in range(2):
        p = pos[9 * k:9 * k + 9]
        link = p[1] + g * (p[0] - p[1])
        sub = State(positions=torch.cat([p[list(CORE_ATOMS)], link[None]]), atomic_numbers=[6, 8, 1, 1, 1, 1],
                    check_distances=False)
        e_ref = e_ref + high.energy(sub).sum()
    (grad,) = torch.autograd.grad(e_ref, pos)
    only_high = MultiLevelPotential([oniom.terms[1]], n_atoms=9)
    e, f = only_high.energy_and_forces(s)
    assert abs(float(e.sum()) - float(e_ref.detach())) < 1e-10
    assert float((f + grad).abs().max()) < 1e-10
    # the link atom's force went to C1 and C0 only (no other atom outside the core feels the high level)
    assert float(f[6:9].abs().max()) == 0.0 and float(f[0].abs().max()) > 0.0


def test_oniom_with_link_atoms_passes_the_contract():
    s = _ethanol(3, seed=1)
    oniom = MultiLevelPotential.subtractive(Region(CORE_ATOMS, links=(LINK,)), high=Morse(D=1.1, a=1.9, r0=1.0),
                                            low=LennardJones(epsilon=0.01, sigma=2.2), n_atoms=9)
    report = check_potential(oniom, s, max_fd_coords=None)
    assert report["max_force_error"] < 1e-6


def test_additive_with_coupling_and_learned_like_charges_passes_the_contract():
    s = _ethanol(3, seed=2)
    core = Region(CORE_ATOMS, links=(LINK,))
    env = Region((0, 6, 7, 8))
    env_q = [-0.18, 0.06, 0.06, 0.06]

    def charges(sub):  # position-dependent charges of the core (a smooth toy charge model, total -0.1 e)
        s_ = sub.n_systems
        p = sub.positions.view(s_, -1, 3)[:, :5]
        raw = 0.1 * torch.tanh((p - p.mean(1, keepdim=True)).norm(dim=-1) - 1.0)
        return (raw - (raw.sum(1, keepdim=True) + 0.1) / 5).reshape(-1)

    coupling = PointChargeCoupling(core, env, env_q, charge_model=charges, cutoff=None)
    ml = MultiLevelPotential.additive(core, Morse(D=1.1, a=1.9, r0=1.0), n_atoms=9,
                                      environment_potential=LennardJones(epsilon=0.01, sigma=2.2),
                                      environment=env, interaction_potential=coupling)
    report = check_potential(ml, s, max_fd_coords=None)
    assert report["max_force_error"] < 1e-6
    # the coupling is q_i q_j k_e / r over the cross pairs only
    p = s.positions[:9].double()
    q = charges(State(positions=p[list(CORE_ATOMS)], atomic_numbers=s.atomic_numbers[list(CORE_ATOMS)]))
    ref = sum(float(q[a]) * env_q[b] * COULOMB / float((p[i] - p[j]).norm())
              for a, i in enumerate(CORE_ATOMS) for b, j in enumerate((0, 6, 7, 8)))
    assert abs(float(coupling.energy(s)[0]) - ref) < 1e-10


def test_coupling_with_the_long_range_models_charges():
    """Mechanical embedding with the charges the stored Cl- + CH3Cl long-range model predicts: the charges
    equal model.charges (committee mean, sum -1 e) and the forces, dq/dx included, pass finite differences."""
    from fesurf.data import long_range
    from fesurf.potentials.multilevel import learned_charges

    model = long_range.load("hybrid")
    rng = np.random.default_rng(3)
    frames = []
    for _ in range(2):  # the complex with two TIP3P-like waters around it
        a = long_range.complex_at(long_range.ch3cl_minimum(), 3.3)
        w = molecule("H2O")
        for shift in ([3.0, 0.0, 1.0], [-3.2, 0.5, -1.0]):
            a += w.copy()
            a.positions[-3:] += shift
        a.positions += rng.normal(scale=0.03, size=a.positions.shape)
        a.info["charge"] = -1
        frames.append(a)
    s = State.from_atoms(frames)
    core, env = Region(tuple(range(6)), charge=-1.0), Region(tuple(range(6, 12)))
    charges = learned_charges(model)
    coupling = PointChargeCoupling(core, env, [-0.834, 0.417, 0.417] * 2, charge_model=charges, cutoff=None)
    sub = State.from_atoms([f[:6] for f in frames])
    q = charges(sub).detach().view(2, 6)
    assert torch.allclose(q, model.charges(sub).mean(0).view(2, 6), atol=1e-12)
    assert torch.allclose(q.sum(1), torch.full((2,), -1.0, dtype=q.dtype), atol=1e-10)
    report = check_potential(coupling, s, max_fd_coords=24)
    assert report["max_force_error"] < 1e-6
    with pytest.raises(InputError, match="LongRangeModel"):
        learned_charges(Morse())


def test_periodic_coupling_uses_the_minimum_image_and_a_smooth_cutoff():
    # one cation near a face, one anion across the boundary: the image is 2 A away, not 8 A
    cell = torch.eye(3, dtype=torch.float64) * 10.0
    s = State(positions=[[0.5, 5.0, 5.0], [8.5, 5.0, 5.0]], atomic_numbers=[11, 17], cell=cell, pbc=True)
    c = PointChargeCoupling(Region((0,)), Region((1,)), charges_b=[-1.0], charges_a=[1.0], cutoff=4.5, alpha=0.2)
    assert abs(float(c.energy(s)[0]) + COULOMB * float(dsf_kernel(torch.tensor(2.0, dtype=torch.float64), 0.2, 4.5))) < 1e-12
    d = minimum_image(torch.tensor([[[8.0, 0.0, 0.0]]], dtype=torch.float64), cell[None])
    assert torch.allclose(d, torch.tensor([[[-2.0, 0.0, 0.0]]], dtype=torch.float64))
    r = torch.linspace(4.0, 4.5, 51, dtype=torch.float64, requires_grad=True)
    v = dsf_kernel(r, 0.2, 4.5)
    (dv,) = torch.autograd.grad(v.sum(), r)
    assert abs(float(v[-1].detach())) < 1e-14 and abs(float(dv[-1])) < 1e-12  # energy and force vanish at the cutoff
    check_potential(c, State.concatenate([s, s.replace(positions=s.positions + torch.tensor([[0.3, 0.1, 0.0],
                                                                                              [0.0, 0.2, 0.1]]))]),
                    max_fd_coords=None)
    with pytest.raises(InputError, match="half the cell"):
        PointChargeCoupling(Region((0,)), Region((1,)), charges_b=[-1.0], charges_a=[1.0], cutoff=6.0).energy(s)


def test_bad_inputs():
    with pytest.raises(InputError, match="distinct"):
        Region((1, 1))
    with pytest.raises(InputError, match="link atom"):
        Region((1, 2), links=(LinkAtom(inner=0, outer=1),))
    with pytest.raises(InputError, match="out of range"):
        MultiLevelPotential.subtractive(Region((1, 12)), high=Morse(), low=Morse(), n_atoms=9)
    ml = MultiLevelPotential.subtractive(Region(CORE_ATOMS), high=Morse(), low=Morse(), n_atoms=9)
    with pytest.raises(InputError, match="every system must have 9 atoms"):
        ml.energy(State.from_atoms(molecule("H2O")))
    with pytest.raises(InputError, match="exactly one"):
        PointChargeCoupling(Region((0,)), Region((1,)), charges_b=[1.0])
    with pytest.raises(InputError, match="charges_b needs 1"):
        PointChargeCoupling(Region((0,)), Region((1,)), charges_b=[1.0, 2.0], charges_a=[1.0])
    with pytest.raises(InputError, match="Term"):
        MultiLevelPotential([Morse()], n_atoms=3)
