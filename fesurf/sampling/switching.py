"""Nonequilibrium switching between two potentials (surrogate -> reference and back).

When the surrogate and the reference overlap too poorly for exponential
reweighting (beta sigma(dU) > ~3), drive each configuration from one
Hamiltonian to the other along U(lambda) = (1 - lambda) U_A + lambda U_B in
``n_steps`` Langevin steps, and record the work

    W = sum_i [U_{lambda_{i+1}}(x_i) - U_{lambda_i}(x_i)] = sum_i dlambda (U_B - U_A)(x_i)

(eV). Forward works from A's ensemble give Jarzynski's estimate; with reverse
works from B's ensemble, BAR/Crooks (:mod:`fesurf.estimators.neq`). All
switches run as replicas of one batched State.

Example
-------
>>> # w_f = switching_work(surrogate, reference, start_states, n_steps=200, temperature=300.0, seed=0)
>>> # dA = jarzynski(w_f, temperature=300.0)
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..md.integrators import Langevin, maxwell_boltzmann
from ..potentials.combinators import LambdaMix
from ..state import State


def switching_work(potential_a, potential_b, starts: State, n_steps: int, *, temperature: float,
                   timestep: float = 1.0, friction: float = 0.01, seed: int = 0, reverse: bool = False) -> np.ndarray:
    """Work (eV) of switching every system of ``starts`` from A to B (``reverse``: B to A).

    Parameters
    ----------
    potential_a, potential_b : Potential
    starts : State
        Configurations drawn from the starting ensemble (A's, or B's when
        ``reverse``), one system per switch; velocities are drawn at ``temperature``.
    n_steps : int
        Switching length in MD steps (longer: less dissipation, tighter estimates).
    temperature : K; timestep : fs; friction : 1/fs; seed : int

    Returns an array [n_systems] of works in eV.
    """
    if int(n_steps) < 1:
        raise InputError("n_steps must be >= 1")
    lambdas = np.linspace(0.0, 1.0, int(n_steps) + 1)
    if reverse:
        lambdas = lambdas[::-1]
    mix = LambdaMix(potential_a, potential_b, float(lambdas[0]))
    md = Langevin(mix, timestep, temperature=temperature, friction=friction, seed=seed)
    md.start(maxwell_boltzmann(starts, temperature, seed=seed + 10_000_019))
    work = torch.zeros(starts.n_systems, dtype=torch.float64)
    for lam_now, lam_next in zip(lambdas[:-1], lambdas[1:]):
        work += (lam_next - lam_now) * mix.dU_dlambda(md.current)
        mix.set_lambda(float(lam_next))
        md.refresh_forces()
        md.advance(1)
    return work.numpy()
