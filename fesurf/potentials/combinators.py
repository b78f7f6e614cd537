"""Combinators: sums, scaling and the lambda-mix of potentials.

Example
-------
>>> from fesurf.potentials import Harmonic, LambdaMix, Sum
>>> from fesurf.state import State
>>> s = State(positions=[[1.0, 0.0, 0.0]] * 2, atomic_numbers=[1, 1], system_index=[0, 1])
>>> mix = LambdaMix(Harmonic(k=1.0), Harmonic(k=3.0), lam=[0.0, 1.0])
>>> mix.energy(s).tolist(), mix.dU_dlambda(s).tolist()
([0.5, 1.5], [1.0, 1.0])
"""
from __future__ import annotations

import torch

from ..errors import InputError
from ..state import State
from .base import Potential


def _all(terms, attr):
    return all(getattr(t, attr, False) for t in terms)


class Sum(Potential):
    """U = sum of the terms' energies; forces add. Biases join a physical potential this way."""

    def __init__(self, terms):
        super().__init__()
        terms = list(terms)
        if not terms or not all(isinstance(t, Potential) for t in terms):
            raise InputError("Sum needs a non-empty list of fesurf Potentials")
        self.terms = torch.nn.ModuleList(terms)
        self.translation_invariant = _all(terms, "translation_invariant")
        self.rotation_invariant = _all(terms, "rotation_invariant")
        self.supports_stress = _all(terms, "supports_stress")

    def select_systems(self, systems):
        return Sum([t.select_systems(systems) for t in self.terms])

    def energy(self, state: State) -> torch.Tensor:
        return sum(t.energy(state) for t in self.terms)

    def energy_and_forces(self, state: State, create_graph: bool = False):
        terms = iter(self.terms)  # (slicing a ModuleList builds a new ModuleList every call)
        energy, forces = next(terms).energy_and_forces(state, create_graph)
        for term in terms:
            e, f = term.energy_and_forces(state, create_graph)
            energy, forces = energy + e, forces + f
        return energy, forces


class Scale(Potential):
    """U = factor * U_inner (factor a float or a per-system [n_systems] tensor)."""

    def __init__(self, inner: Potential, factor):
        super().__init__()
        self.inner = inner
        self.register_buffer("factor", torch.as_tensor(factor, dtype=torch.float64))
        self.translation_invariant = inner.translation_invariant
        self.rotation_invariant = inner.rotation_invariant
        self.supports_stress = inner.supports_stress and self.factor.ndim == 0

    def select_systems(self, systems):
        factor = self.factor if self.factor.ndim == 0 else self.factor[torch.as_tensor(systems)]
        return Scale(self.inner.select_systems(systems), factor)

    def _factor_per_atom(self, state):
        return self.factor if self.factor.ndim == 0 else self.factor[state.system_index][:, None]

    def energy(self, state: State) -> torch.Tensor:
        return self.factor * self.inner.energy(state)

    def energy_and_forces(self, state: State, create_graph: bool = False):
        e, f = self.inner.energy_and_forces(state, create_graph)
        return self.factor * e, self._factor_per_atom(state) * f


class LambdaMix(Potential):
    """U(lambda) = (1 - lambda) U_A + lambda U_B, with dU/dlambda = U_B - U_A.

    ``lam`` is a float or a per-system tensor [n_systems] (one lambda window per
    replica). Set it later with :meth:`set_lambda`.
    """

    def __init__(self, potential_a: Potential, potential_b: Potential, lam=0.0):
        super().__init__()
        self.a, self.b = potential_a, potential_b
        self.set_lambda(lam)
        self.translation_invariant = potential_a.translation_invariant and potential_b.translation_invariant
        self.rotation_invariant = potential_a.rotation_invariant and potential_b.rotation_invariant

    def set_lambda(self, lam):
        lam = torch.as_tensor(lam, dtype=torch.float64)
        if not torch.isfinite(lam).all() or (lam < 0).any() or (lam > 1).any():
            raise InputError(f"lambda must lie in [0, 1], got {lam.tolist()}")
        self.lam = lam

    def select_systems(self, systems):
        lam = self.lam if self.lam.ndim == 0 else self.lam[torch.as_tensor(systems)]
        return LambdaMix(self.a.select_systems(systems), self.b.select_systems(systems), lam)

    def _lam(self, state):
        if self.lam.ndim and self.lam.numel() != state.n_systems:
            raise InputError(f"LambdaMix has {self.lam.numel()} lambda values but the state has "
                             f"{state.n_systems} systems; give one lambda per system or a scalar")
        return self.lam

    def energy(self, state: State) -> torch.Tensor:
        lam = self._lam(state)
        return (1.0 - lam) * self.a.energy(state) + lam * self.b.energy(state)

    def energy_and_forces(self, state: State, create_graph: bool = False):
        lam = self._lam(state)
        ea, fa = self.a.energy_and_forces(state, create_graph)
        eb, fb = self.b.energy_and_forces(state, create_graph)
        lam_atom = lam if lam.ndim == 0 else lam[state.system_index][:, None]
        return (1.0 - lam) * ea + lam * eb, (1.0 - lam_atom) * fa + lam_atom * fb

    def dU_dlambda(self, state: State) -> torch.Tensor:
        """[n_systems] U_B - U_A in eV."""
        return (self.b.energy(state) - self.a.energy(state)).detach()

    def energies_of_states(self, state: State, lambdas) -> torch.Tensor:
        """[n_lambdas, n_systems] U(lambda_k) of every configuration, for MBAR/FEP."""
        ea, eb = self.a.energy(state).detach(), self.b.energy(state).detach()
        lam = torch.as_tensor(lambdas, dtype=ea.dtype)[:, None]
        return (1.0 - lam) * ea + lam * eb
