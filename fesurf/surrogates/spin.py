"""Spin-conditioned surrogate: one model E(R; multiplicity, charge) with learned
spin and charge embeddings.

Per atom: features (any front end ``state -> [n_atoms, F]`` with ``n_features``,
e.g. :class:`~fesurf.surrogates.diabatic.PairDistanceFeatures`) concatenated with
the embedding of its system's multiplicity and charge; an MLP gives atomic
energies that are summed (extensive). The multiplicity and charge are read from
the State (``state.multiplicity``, ``state.charge``), so one batch can hold
several spin states. Units: eV, A.

Example
-------
>>> from fesurf.surrogates.diabatic import PairDistanceFeatures
>>> m = SpinConditionedModel(PairDistanceFeatures(3), multiplicities=(1, 3))
>>> m.multiplicities
[1, 3]
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import nn

from ..errors import InputError
from ..potentials.base import Potential
from ..state import State

log = logging.getLogger(__name__)

__all__ = ["SpinConditionedModel", "SpinStatePotential", "fit_spin_model"]


class SpinConditionedModel(Potential):
    """E(R; multiplicity, charge) in eV; a Potential (reads multiplicity/charge from the State)."""

    def __init__(self, representation: nn.Module, multiplicities: Sequence[int] = (1, 3), charges: Sequence[int] = (0,),
                 hidden: Sequence[int] = (32, 32), embedding_dim: int = 4):
        super().__init__()
        self.representation = representation
        self.multiplicities = [int(m) for m in multiplicities]
        self.charges = [int(c) for c in charges]
        if not self.multiplicities or any(m < 1 for m in self.multiplicities):
            raise InputError("multiplicities must be a non-empty list of 2S+1 >= 1")
        self.spin_embedding = nn.Embedding(len(self.multiplicities), embedding_dim, dtype=torch.float64)
        self.charge_embedding = nn.Embedding(len(self.charges), embedding_dim, dtype=torch.float64)
        n_in = representation.n_features + 2 * embedding_dim
        layers, last = [], n_in
        for h in hidden:
            layers += [nn.Linear(last, h, dtype=torch.float64), nn.SiLU()]
            last = h
        layers.append(nn.Linear(last, 1, dtype=torch.float64))
        self.net = nn.Sequential(*layers)
        self.register_buffer("shift", torch.zeros((), dtype=torch.float64))
        self.register_buffer("feature_mean", torch.zeros(representation.n_features, dtype=torch.float64))
        self.register_buffer("feature_std", torch.ones(representation.n_features, dtype=torch.float64))
        self.translation_invariant = bool(getattr(representation, "translation_invariant", False))
        self.rotation_invariant = bool(getattr(representation, "rotation_invariant", False))

    def _index(self, values, allowed, name):
        lut = {v: i for i, v in enumerate(allowed)}
        out = []
        for v in values.tolist():
            v = int(round(v))
            if v not in lut:
                raise InputError(f"{name} {v} was not in the model's {name} list {allowed}; retrain with it included")
            out.append(lut[v])
        return torch.as_tensor(out, dtype=torch.long)

    def energy(self, state: State) -> torch.Tensor:
        f = (self.representation(state) - self.feature_mean) / self.feature_std
        s = self.spin_embedding(self._index(state.multiplicity, self.multiplicities, "multiplicity"))
        c = self.charge_embedding(self._index(state.charge, self.charges, "charge"))
        x = torch.cat([f, s[state.system_index], c[state.system_index]], dim=1)
        return state.sum_per_system(self.net(x)[:, 0]) + self.shift

    def energies_of_states(self, state: State, multiplicities=None) -> torch.Tensor:
        """``[n_systems, n_mult]`` energies (eV) of every requested multiplicity, in one batch."""
        mults = self.multiplicities if multiplicities is None else [int(m) for m in multiplicities]
        k = len(mults)
        big = State.concatenate([state.replace(multiplicity=torch.full((state.n_systems,), m, dtype=torch.long))
                                 for m in mults])
        return self.energy(big).detach().view(k, state.n_systems).T

    def vertical_gap(self, state: State, low: int, high: int) -> torch.Tensor:
        """``E(high) - E(low)`` (eV) at the same geometry, ``[n_systems]``."""
        e = self.energies_of_states(state, [low, high])
        return e[:, 1] - e[:, 0]


class SpinStatePotential(Potential):
    """One spin state of a spin-conditioned model (or committee) as a Potential (sets the multiplicity)."""

    def __init__(self, model: SpinConditionedModel, multiplicity: int):
        super().__init__()
        self.model, self.multiplicity = model, int(multiplicity)
        self.translation_invariant = model.translation_invariant
        self.rotation_invariant = model.rotation_invariant

    def energy(self, state: State) -> torch.Tensor:
        m = torch.full((state.n_systems,), self.multiplicity, dtype=torch.long)
        return self.model.energy(state.replace(multiplicity=m))


def fit_spin_model(model: SpinConditionedModel, state: State, energies, forces=None, *, epochs: int = 500,
                   lr: float = 5e-3, lbfgs_steps: int = 500, force_weight: float = 1.0, seed: int = 0) -> dict:
    """Minimal energy(+force) fit (Adam then L-BFGS); ``state`` carries each configuration's multiplicity.

    ``energies`` [n_systems] eV, ``forces`` [n_atoms, 3] eV/A. Returns final RMSEs.
    """
    e = torch.as_tensor(energies, dtype=torch.float64)
    if e.shape != (state.n_systems,):
        raise InputError(f"energies must have shape [{state.n_systems}]")
    torch.manual_seed(seed)
    with torch.no_grad():
        feats = model.representation(state)
        model.feature_mean.copy_(feats.mean(0))
        std = feats.std(0)
        model.feature_std.copy_(torch.where(std > 1e-12, std, torch.ones_like(std)))
        model.shift.copy_(e.mean())
    f = None if forces is None else torch.as_tensor(forces, dtype=torch.float64)
    es, fs = e.std().clamp_min(1e-6), (f.std().clamp_min(1e-6) if f is not None else None)

    def loss_fn():
        if f is None:
            pe = model.energy(state)
            return ((pe - e) / es).pow(2).mean()
        pe, pf = model.energy_and_forces(state, create_graph=True)
        return ((pe - e) / es).pow(2).mean() + force_weight * ((pf - f) / fs).pow(2).mean()

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        opt.zero_grad(); loss = loss_fn(); loss.backward(); opt.step()
    if lbfgs_steps:
        lb = torch.optim.LBFGS(model.parameters(), max_iter=lbfgs_steps, line_search_fn="strong_wolfe")

        def closure():
            lb.zero_grad(); loss = loss_fn(); loss.backward(); return loss

        lb.step(closure)
    with torch.no_grad():
        rmse = float((model.energy(state) - e).pow(2).mean().sqrt())
    return {"energy_rmse": rmse}
