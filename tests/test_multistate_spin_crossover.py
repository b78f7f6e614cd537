"""Model two-state spin crossover: two harmonic surfaces of different stiffness
and offset; dA(T) and T1/2 against the classical closed form."""
import math
import warnings

import numpy as np
import pytest
import torch

from fesurf.errors import InputError
from fesurf.multistate.spin_crossover import (ShiftedHarmonic, fit_t_half, harmonic_spin_crossover_exact,
                                              multiplicity_term, spin_crossover_curve)
from fesurf.potentials import check_potential
from fesurf.state import State
from fesurf.units import KB

K_LS, K_HS, OFFSET = 10.0, 5.0, 0.05  # eV/A^2, eV/A^2, A
MULT = (1, 5)  # Fe(II): S_LS = 0, S_HS = 2
N_DOF = 6  # two atoms in 3D


def test_closed_forms():
    ex = harmonic_spin_crossover_exact(K_LS, K_HS, 0.1, N_DOF, MULT)
    # dS = kB [ln 5 + 3 ln 2]
    assert math.isclose(ex.dS, KB * (math.log(5) + 3 * math.log(2)), rel_tol=1e-12)
    assert math.isclose(ex.dA(ex.t_half), 0.0, abs_tol=1e-12)
    assert math.isclose(multiplicity_term(300.0, MULT), -KB * 300 * math.log(5), rel_tol=1e-12)
    dH, dS, th, _ = fit_t_half([250.0, 300.0, 350.0], [ex.dA(250.0), ex.dA(300.0), ex.dA(350.0)])
    assert math.isclose(th, ex.t_half, rel_tol=1e-10) and math.isclose(dS, ex.dS, rel_tol=1e-10)
    with pytest.raises(InputError):
        multiplicity_term(300.0, (1, 0))
    with pytest.raises(InputError):
        fit_t_half([300.0], [0.0])


def test_shifted_harmonic_contract():
    s = State(positions=[[0.1, 0.0, 0.2], [0.05, -0.1, 0.0]] * 2, atomic_numbers=[6] * 4, system_index=[0, 0, 1, 1],
              check_distances=False)
    check_potential(ShiftedHarmonic(K_HS, [OFFSET, 0.0, 0.0], 0.3), s)


def test_model_spin_crossover_dA_and_t_half():
    torch.set_num_threads(1)
    # dE chosen so the exact T1/2 is 300 K
    dS = harmonic_spin_crossover_exact(K_LS, K_HS, 0.0, N_DOF, MULT).dS
    dE = 300.0 * dS
    exact = harmonic_spin_crossover_exact(K_LS, K_HS, dE, N_DOF, MULT)
    ls = ShiftedHarmonic(K_LS, 0.0, 0.0)
    hs = ShiftedHarmonic(K_HS, [OFFSET, 0.0, 0.0], dE)
    start = State(positions=[[0.0, 0.0, 0.0], [0.05, 0.0, 0.0]], atomic_numbers=[6, 6], check_distances=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # BAOAB samples a harmonic configuration space exactly at any stable timestep (omega dt = 0.36 here)
        curve = spin_crossover_curve(ls, hs, start, [260.0, 300.0, 340.0], multiplicities=MULT, n_lambdas=9,
                                     timestep=4.0, friction=0.1, n_equilibration=500, n_production=10000,
                                     stride=2, store_positions=False, seed=0)
    for p in curve.points:
        err = (p.dA - exact.dA(p.temperature)) / (KB * p.temperature)
        # MBAR's 1-sigma is ~0.017 kT with these settings (measured); 0.05 kT is ~3 sigma
        assert p.sigma_kT < 0.025
        assert abs(err) < 0.05, (p.temperature, err, p.sigma_kT)
    # T1/2 = dH/dS from the weighted fit; its propagated sigma is ~0.8 K, 2 K is ~2.5 sigma. The propagated
    # sigma is conservative: seeds 0/1/2/3 give T1/2 - exact = +0.42/-0.22/-0.46/-0.33 K (sd 0.4 K, so 2 K
    # is ~5 measured sd) and dA errors within 0.026 kT (1.6 sigma) at every temperature.
    assert curve.sigma_t_half < 1.0
    assert abs(curve.t_half - exact.t_half) < 2.0, (curve.t_half, curve.sigma_t_half)
