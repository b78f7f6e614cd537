"""Displaced-harmonic (Marcus) two-state model: umbrella sampling on the lower
adiabat of a *trained* diabatic model reproduces the exact adiabatic barrier."""
import warnings

import numpy as np
import torch

from fesurf.cv import POSITION
from fesurf.estimators import compute_pmf
from fesurf.multistate.models import DisplacedHarmonic
from fesurf.potentials import check_potential
from fesurf.sampling.umbrella import umbrella_sampling
from fesurf.state import State
from fesurf.surrogates.diabatic import AdiabaticPotential, CartesianFeatures, DiabaticModel, fit_diabatic

T = 300.0


def test_exact_pmf_quadrature_matches_closed_form():
    ref = DisplacedHarmonic(k=4.0, a=0.25, coupling=0.05)
    # narrow bins: bin-averaged PMF -> point values. Closed form for dG = 0: E_-(0) = lambda/4 - V,
    # E_-(a) = k a^2 - sqrt((k a^2)^2 + V^2)
    edges = np.array([-1e-4, 1e-4, 0.25 - 1e-4, 0.25 + 1e-4])
    f = ref.exact_pmf(edges, T)
    from fesurf.units import KB
    e_well = 4.0 * 0.25**2 - np.sqrt((4.0 * 0.25**2) ** 2 + 0.05**2)
    barrier = (ref.reorganization_energy / 4 - 0.05 - e_well) / (KB * T)
    assert abs((f[0] - f[2]) - barrier) < 1e-5
    s = State(positions=[[0.1, 0.02, -0.01], [-0.2, 0.0, 0.03]], atomic_numbers=[6, 6], system_index=[0, 1])
    check_potential(AdiabaticPotential(ref, 0), s)
    check_potential(AdiabaticPotential(ref, 1), s)


def test_umbrella_on_trained_diabatic_lower_adiabat():
    torch.set_num_threads(1)
    ref = DisplacedHarmonic(k=4.0, a=0.25, dG=0.0, coupling=0.05, k_perp=30.0)
    g = torch.Generator().manual_seed(1)
    n = 600
    u = torch.rand(n, 3, generator=g, dtype=torch.float64)
    pos = torch.stack([u[:, 0] * 1.3 - 0.65, (u[:, 1] - 0.5) * 0.2, (u[:, 2] - 0.5) * 0.2], 1)
    train = State(positions=pos, atomic_numbers=[6] * n, system_index=torch.arange(n))
    energies, forces = ref.adiabatic_energies_and_forces(train)
    model = DiabaticModel(CartesianFeatures((0, 1, 2)), 2, hidden=(16, 16))
    fit_diabatic(model, train, energies, forces, epochs=500, lr=1e-2, lbfgs_steps=1500, seed=0)
    pot = AdiabaticPotential(model, 0)
    check_potential(pot, State(positions=[[0.1, 0.02, 0.0], [0.3, -0.02, 0.01]], atomic_numbers=[6, 6],
                               system_index=[0, 1]))
    # the model is symmetric in x only approximately; sample one well and the barrier top.
    # 16 replicas per window in the same batch cost little more than one (a 1-atom system: the step is
    # overhead-bound) and carry 8x the samples of one replica run twice as long.
    centers = np.linspace(-0.06, 0.42, 13)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ss = umbrella_sampling(pot, State(positions=[[0.0, 0.0, 0.0]], atomic_numbers=[6]), POSITION(0, "x"),
                               centers, 30.0, temperature=T, timestep=2.0, friction=0.1, n_equilibration=500,
                               n_production=4000, stride=10, store_positions=False, seed=0, replicas_per_window=16)
        edges = np.linspace(-0.025, 0.425, 10)  # bin 0 centred on the top (x = 0), bin 5 on the well (x = a)
        pmf = compute_pmf(ss, 0, bins=edges)
    exact = ref.exact_pmf(edges, T)  # bin-averaged by Gauss-Legendre quadrature, comparable to the histogram
    v = np.asarray(pmf.values)
    barrier, barrier_exact = v[0] - v[5], exact[0] - exact[5]
    # Error budget. The trained model's own barrier (3D quadrature of its lower adiabat) is off by
    # +0.010 / +0.025 / +0.037 kT for fit seeds 1 / 0 / 2 (+0.023 with ATEN_CPU_CAPABILITY=default).
    # Sampling: the spread over 8 seeds of this protocol with 8 replicas on the exact surface is 0.050 kT
    # (pymbar's analytical sigma, 0.029, is too small here: it takes interleaved replicas as one series),
    # so with 16 replicas sigma ~ 0.035 kT and 0.15 kT sits 3.6 sigma beyond the model's +0.025.
    # Measured at seed 0: +0.040 kT with frames every 10 steps (20 fs, about twice the windows' velocity
    # relaxation time 1/friction: +0.028 kT from the same trajectory recorded every 2 steps, at 5x the frames
    # and 4x the PMF cost). (The former single replica x 8000 steps had sigma ~0.07 kT by the same
    # measure and gave +0.10 to +0.14 kT over seeds 0-2: a pass by luck.)
    assert abs(barrier - barrier_exact) < 0.15, (barrier, barrier_exact)
