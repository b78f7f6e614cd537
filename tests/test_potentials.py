"""Every analytic potential and combinator passes the shared contract check.

check_potential compares forces with a 4th-order central finite difference
(step 1e-3 A: truncation error ~h^4 f^(5) ~ 1e-12, rounding ~eps*E/h ~ 1e-13),
so 1e-6 relative is a wide margin in float64; batched vs one-by-one must agree
to 1e-10 (pure round-off).
"""
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.lj import LennardJones as AseLJ

from fesurf import InputError, State
from fesurf.neighbors import neighbor_pairs
from fesurf.potentials import (ASEPotential, ContractViolation, DoubleWell1D, DoubleWell2D, FesurfCalculator,
                               Harmonic, LambdaMix, LennardJones, Morse, MullerBrown, Potential, Scale, Sum,
                               check_potential)


def particles(gen, n_systems=3, n_atoms=2, scale=0.8):
    pos = torch.randn(n_systems * n_atoms, 3, generator=gen, dtype=torch.float64) * scale
    return State(positions=pos, atomic_numbers=[1] * len(pos),
                 system_index=torch.arange(n_systems).repeat_interleave(n_atoms))


MODEL_SURFACES = [
    Harmonic(k=2.0),
    Harmonic(k=[1.0, 4.0, 9.0], center=[0.1, -0.2, 0.3]),
    Harmonic(k=[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
    DoubleWell1D(barrier=0.2, x0=1.0, tilt=0.01),
    DoubleWell2D(barrier=0.15, coupling=0.7),
    MullerBrown(scale=0.01),
]


@pytest.mark.parametrize("potential", MODEL_SURFACES, ids=lambda p: type(p).__name__)
def test_model_surfaces_pass_contract(potential, gen):
    report = check_potential(potential, particles(gen), force_rtol=1e-6)
    assert report["max_force_error"] < 1e-6 and report["batch_force_error"] < 1e-10


@pytest.mark.parametrize("potential", [Morse(D=1.0, a=1.8, r0=1.3, cutoff=6.0),
                                       LennardJones(epsilon=0.05, sigma=1.6, cutoff=5.0)],
                         ids=lambda p: type(p).__name__)
def test_pair_potentials_pass_contract_with_invariance(potential):
    s = State.from_atoms([molecule("CH3CH2OH"), molecule("C6H6"), molecule("H2O")])
    report = check_potential(potential, s, force_rtol=1e-6, max_fd_coords=None)
    assert report["invariance_energy_error"] < 1e-8


def test_periodic_lennard_jones_contract_and_stress():
    argon = bulk("Ar", "fcc", a=5.26, cubic=True) * (2, 2, 2)
    argon.rattle(0.1, seed=1)
    s = State.from_atoms([argon, argon.copy()])
    lj = LennardJones(cutoff=7.0)
    check_potential(lj, s, max_fd_coords=40)
    argon.calc = FesurfCalculator(lj)
    from ase.calculators.fd import calculate_numerical_stress

    numeric = calculate_numerical_stress(argon, eps=1e-5)
    assert np.allclose(argon.get_stress(), numeric, atol=1e-8)


def test_lennard_jones_matches_ase_inside_switching_radius():
    # ASE's LJ with smooth=False and a large cutoff is the bare potential; fesurf's switch starts at 0.85 rc,
    # so a compact cluster with all distances < 0.85 rc must give the same energy (to round-off).
    atoms = Atoms("Ar3", positions=[[0, 0, 0], [3.8, 0, 0], [1.9, 3.2, 0]])
    atoms.calc = AseLJ(epsilon=0.0104, sigma=3.4, rc=100.0, smooth=False)
    ours = LennardJones(cutoff=20.0).energy(State.from_atoms(atoms))
    shift = 4 * 0.0104 * ((3.4 / 100) ** 12 - (3.4 / 100) ** 6) * 3  # ASE shifts by U(rc) per pair
    assert float(ours[0]) == pytest.approx(atoms.get_potential_energy() + shift, abs=1e-12)


def test_combinators_pass_contract(gen):
    s = particles(gen)
    for potential in [Sum([Harmonic(1.0), DoubleWell1D(0.1)]), Scale(MullerBrown(), [1.0, 2.0, 0.5]),
                      LambdaMix(Harmonic(1.0), DoubleWell2D(), lam=[0.0, 0.4, 1.0])]:
        check_potential(potential, s)


def test_lambda_mix_derivative_is_finite_difference_in_lambda(gen):
    s = particles(gen)
    a, b = Harmonic(1.0), DoubleWell1D(0.3)
    lam, h = 0.37, 1e-6
    du = LambdaMix(a, b, lam).dU_dlambda(s)
    fd = (LambdaMix(a, b, lam + h).energy(s) - LambdaMix(a, b, lam - h).energy(s)) / (2 * h)
    assert torch.allclose(du, fd, rtol=1e-8)
    with pytest.raises(InputError, match="lambda"):
        LambdaMix(a, b, 1.5)


def test_harmonic_free_energy_difference_closed_form():
    # configurational A = -kT ln Z, Z = prod sqrt(2 pi kT / k): A_B - A_A = kT/2 ln(k_B/k_A) per dof
    assert Harmonic(1.0).free_energy_difference(Harmonic(100.0), kT=0.5) == pytest.approx(3 * 0.25 * np.log(100))


def test_contract_check_catches_wrong_forces(gen):
    class WrongForces(Harmonic):
        def energy_and_forces(self, state, create_graph=False):
            e, f = super().energy_and_forces(state)
            return e, 1.01 * f

    with pytest.raises(ContractViolation, match="finite differences"):
        check_potential(WrongForces(1.0), particles(gen))

    class Mutates(Potential):
        translation_invariant = rotation_invariant = False

        def energy(self, state):
            state.positions.data.mul_(1.0 + 1e-9)
            return state.sum_per_system((state.positions ** 2).sum(1))

    with pytest.raises(ContractViolation, match="modified"):
        check_potential(Mutates(), particles(gen))


def test_neighbour_back_ends_give_identical_pair_sets():
    s = State.from_atoms([molecule("C6H6"), molecule("CH3CH2OH"), molecule("C60")])
    for cutoff in (1.2, 2.5, 5.0):
        a = neighbor_pairs(s, cutoff, "all_pairs")
        b = neighbor_pairs(s, cutoff, "vesin")
        assert a.as_set() == b.as_set() and len(a.as_set()) > 0
    with pytest.raises(InputError, match="periodic"):
        neighbor_pairs(State.from_atoms(bulk("Cu")), 3.0, "all_pairs")


def test_periodic_neighbours_match_brute_force_images():
    cu = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    cu.rattle(0.05, seed=3)
    s = State.from_atoms(cu)
    pairs = neighbor_pairs(s, 4.0)
    d = pairs.vectors(s.positions, s.cell, s.system_index).norm(dim=1)
    from ase.neighborlist import neighbor_list

    dist = neighbor_list("d", cu, 4.0)  # ASE's full list holds every pair twice
    assert np.allclose(np.sort(np.repeat(d.numpy(), 2)), np.sort(dist), atol=1e-10)


def test_ase_bridge_both_ways():
    atoms = molecule("CH3CH2OH")
    lj = LennardJones(epsilon=0.02, sigma=1.8, cutoff=6.0)
    atoms.calc = FesurfCalculator(lj)
    e_ase = atoms.get_potential_energy()
    f_ase = atoms.get_forces()
    e, f = lj.energy_and_forces(State.from_atoms(atoms))
    assert e_ase == pytest.approx(float(e[0]), abs=1e-12) and np.allclose(f_ase, f.numpy(), atol=1e-12)

    # ASE calculator -> fesurf Potential, batched over systems, no autograd
    wrapped = ASEPotential(AseLJ(epsilon=0.02, sigma=1.8, rc=6.0, smooth=True))
    s = State.from_atoms([molecule("CH3CH2OH"), molecule("H2O")])
    energies, forces = wrapped.energy_and_forces(s)
    ref = molecule("H2O")
    ref.calc = AseLJ(epsilon=0.02, sigma=1.8, rc=6.0, smooth=True)
    assert float(energies[1]) == pytest.approx(ref.get_potential_energy(), abs=1e-12)
    assert np.allclose(forces[9:].numpy(), ref.get_forces())
    check_potential(wrapped, s, force_rtol=1e-5)
