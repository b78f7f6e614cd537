"""Hamiltonian replica exchange (HREX) between neighbouring umbrella windows.

Every ``exchange_every`` steps, neighbouring windows (i, i+1) try to swap
configurations (positions and velocities; all windows share one temperature),
pairs (0,1), (2,3), ... on even attempts and (1,2), (3,4), ... on odd ones.
A swap is accepted with the Metropolis probability ``min(1, exp(-Delta))``,
``Delta = beta [b_i(x_j) + b_j(x_i) - b_i(x_i) - b_j(x_j)]`` (the physical
energy cancels). Acceptance statistics per pair are kept and reported.

Example
-------
>>> from fesurf.potentials import DoubleWell1D
>>> from fesurf.cv import POSITION
>>> from fesurf.state import State
>>> import numpy as np
>>> ss = hamiltonian_replica_exchange(DoubleWell1D(barrier=0.05), State(positions=[[0.0, 0, 0]], atomic_numbers=[1]),
...                                   POSITION(0, "x"), centers=np.linspace(-1, 1, 4), kappa=0.5, temperature=300.0,
...                                   n_equilibration=0, n_production=200, stride=10, exchange_every=20, seed=1,
...                                   check_overlap=False)
>>> sorted(ss.attrs["exchange"])
['acceptance', 'accepted', 'attempts', 'exchange_every']
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..units import KB
from ._engine import seeds_for

log = logging.getLogger(__name__)


class NeighbourExchange:
    """Metropolis swaps of configurations between neighbouring windows of a per-window bias.

    Parameters
    ----------
    bias : CVBias with one parameter row per window (e.g. RESTRAINT)
    temperature : K
    seed : int
    exchange_every : MD steps between attempts (recorded in the statistics)
    """

    def __init__(self, bias, temperature: float, seed: int, exchange_every: int, replicas_per_window: int = 1):
        self.bias = bias
        self.reps = int(replicas_per_window)
        self.beta = 1.0 / (KB * float(temperature))
        self.n_windows = bias.n_windows
        self.rng = np.random.Generator(np.random.PCG64(seeds_for(seed, 3, 1)[0]))
        self.attempts = np.zeros(max(self.n_windows - 1, 0), dtype=np.int64)
        self.accepted = np.zeros_like(self.attempts)
        self.n_rounds = 0
        self.exchange_every = int(exchange_every)

    def attempt(self, step, state):
        """One round of exchanges; returns the State with swapped configurations."""
        with torch.no_grad():
            w = self.bias.window_energies(self.bias.cv_values(state)).numpy()  # [window, configuration] eV
        k, reps = self.n_windows, self.reps
        perm = np.arange(k * reps)
        for r in range(reps):  # replica r of window i is system i * reps + r
            for i in range(self.n_rounds % 2, k - 1, 2):
                a, b = i * reps + r, (i + 1) * reps + r
                delta = self.beta * (w[i, b] + w[i + 1, a] - w[i, a] - w[i + 1, b])
                u = self.rng.random()
                self.attempts[i] += 1
                if delta <= 0.0 or u < np.exp(-delta):
                    self.accepted[i] += 1
                    perm[a], perm[b] = perm[b], perm[a]
        self.n_rounds += 1
        if np.array_equal(perm, np.arange(k * reps)):
            return state
        slices = state.atom_slices()
        idx = torch.cat([torch.arange(*slices[j]) for j in perm])
        return state.replace(positions=state.positions[idx].clone(), velocities=state.velocities[idx].clone())

    def statistics(self) -> dict:
        """Attempts, accepted swaps and acceptance rate per neighbour pair (i, i+1)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(self.attempts > 0, self.accepted / np.maximum(self.attempts, 1), np.nan)
        return {"attempts": self.attempts.tolist(), "accepted": self.accepted.tolist(),
                "acceptance": [None if np.isnan(r) else float(r) for r in rate],
                "exchange_every": self.exchange_every}

    # checkpoint hooks
    def get_extra(self):
        return ({"hrex_attempts": self.attempts.copy(), "hrex_accepted": self.accepted.copy()},
                {"hrex_rng": self.rng.bit_generator.state, "hrex_rounds": self.n_rounds})

    def set_extra(self, arrays, meta):
        self.attempts = arrays["hrex_attempts"].astype(np.int64)
        self.accepted = arrays["hrex_accepted"].astype(np.int64)
        self.rng.bit_generator.state = meta["hrex_rng"]
        self.n_rounds = int(meta["hrex_rounds"])


def hamiltonian_replica_exchange(potential, state, cvs, centers, kappa, *, exchange_every: int = 100, **kwargs):
    """Umbrella sampling with Hamiltonian replica exchange between neighbouring windows.

    Same arguments as :func:`fesurf.sampling.umbrella_sampling` (windows must be
    ordered along the path), plus ``exchange_every`` (MD steps between
    attempts). The returned SampleSet's ``attrs["exchange"]`` holds attempts,
    accepted swaps and acceptance rates per neighbour pair.
    """
    from .umbrella import umbrella_sampling

    return umbrella_sampling(potential, state, cvs, centers, kappa, exchange_every=exchange_every, **kwargs)
