"""Spin-conditioned surrogate: one model E(R; multiplicity, charge) with learned
spin and charge embeddings.

Per atom: features (any front end ``state -> [n_atoms, F]`` with ``n_features``,
e.g. :class:`~fesurf.surrogates.diabatic.PairDistanceFeatures`) concatenated with
the embedding of its system's multiplicity and charge; an MLP gives atomic
energies that are summed (extensive). The multiplicity and charge are read from
the State (``state.multiplicity``, ``state.charge``), so one batch can hold
several spin states. :class:`SpinCommittee` averages several such models and
reports, per requested multiplicity, the mean energy and the committee spread
(:meth:`SpinCommittee.predict_states`, one batch for all states). Units: eV, A.

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

__all__ = ["SpinConditionedModel", "SpinCommittee", "SpinStatePotential", "fit_spin_model"]


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

    def energies_of_states(self, state: State, multiplicities=None, return_std: bool = False):
        """``[n_systems, n_mult]`` energies (eV) of every requested multiplicity, in one batch.

        With ``return_std`` also the committee spread (zero for a single model).
        """
        return _energies_of_states(self, [self], state, multiplicities, return_std)

    def predict_states(self, state: State, multiplicities=None, forces: bool = False) -> dict:
        """Per-state prediction of this model as a one-member committee; see :meth:`SpinCommittee.predict_states`."""
        return _predict_states([self], self.multiplicities, state, multiplicities, forces)

    def vertical_gap(self, state: State, low: int, high: int) -> torch.Tensor:
        """``E(high) - E(low)`` (eV) at the same geometry, ``[n_systems]``."""
        e = self.energies_of_states(state, [low, high])
        return e[:, 1] - e[:, 0]


def _all_states(state: State, mults) -> State:
    """The batch repeated once per multiplicity: system ``k * n_systems + s`` is system s in state ``mults[k]``."""
    return State.concatenate([state.replace(multiplicity=torch.full((state.n_systems,), m, dtype=torch.long))
                              for m in mults])


def _predict_states(members, default_mults, state: State, multiplicities, forces: bool) -> dict:
    mults = list(default_mults) if multiplicities is None else [int(m) for m in multiplicities]
    if not mults:
        raise InputError("give at least one multiplicity (2S+1)")
    k, ns, na = len(mults), state.n_systems, state.n_atoms
    big = _all_states(state, mults)
    if forces:
        outs = [m.energy_and_forces(big) for m in members]
        e = torch.stack([o[0].detach() for o in outs])  # [M, K*S]
        f = torch.stack([o[1].detach() for o in outs]).view(len(members), k, na, 3)
    else:
        with torch.no_grad():
            e = torch.stack([m.energy(big) for m in members])
    e = e.view(len(members), k, ns).transpose(1, 2)  # [M, S, K]
    out = {"multiplicities": mults, "energy": e.mean(0), "member_energies": e,
           "energy_std": e.std(0, unbiased=False) if len(members) > 1 else torch.zeros_like(e[0])}
    if forces:
        mean_f = f.mean(0)  # [K, n_atoms, 3]
        dev = ((f - mean_f) ** 2).sum(-1).mean(0).sqrt()  # [K, n_atoms]
        dev_max = torch.zeros(k, ns, dtype=dev.dtype).scatter_reduce(
            1, state.system_index.expand(k, na), dev, reduce="amax", include_self=True)
        out.update(forces=mean_f, member_forces=f, force_deviation_max=dev_max.T)
    return out


def _energies_of_states(model, members, state, multiplicities, return_std):
    p = _predict_states(members, model.multiplicities, state, multiplicities, forces=False)
    return (p["energy"], p["energy_std"]) if return_std else p["energy"]


class SpinCommittee(Potential):
    """A committee of :class:`SpinConditionedModel` members (same multiplicities and charges).

    ``energy`` is the member mean (eV). :meth:`predict_states` evaluates every requested
    multiplicity of every configuration in one batch per member and returns, per state,
    the mean energy and the committee spread. Train the members independently (different
    seeds and/or data subsets), e.g. with :func:`fit_spin_model`.

    >>> from fesurf.surrogates.diabatic import PairDistanceFeatures
    >>> members = []
    >>> for seed in range(3):
    ...     _ = torch.manual_seed(seed)
    ...     members.append(SpinConditionedModel(PairDistanceFeatures(3), multiplicities=(1, 3)))
    >>> SpinCommittee(members).n_members
    3
    """

    def __init__(self, members: Sequence[SpinConditionedModel]):
        super().__init__()
        members = list(members)
        if not members or not all(isinstance(m, SpinConditionedModel) for m in members):
            raise InputError("a SpinCommittee needs a non-empty list of SpinConditionedModel members")
        if any(m.multiplicities != members[0].multiplicities or m.charges != members[0].charges for m in members):
            raise InputError("committee members must share the same multiplicities and charges lists")
        self.members = nn.ModuleList(members)
        self.multiplicities, self.charges = members[0].multiplicities, members[0].charges
        self.translation_invariant = all(m.translation_invariant for m in members)
        self.rotation_invariant = all(m.rotation_invariant for m in members)

    @property
    def n_members(self) -> int:
        return len(self.members)

    def member_energies(self, state: State) -> torch.Tensor:
        """``[n_members, n_systems]`` energies (eV) at each system's own multiplicity."""
        return torch.stack([m.energy(state) for m in self.members])

    def energy(self, state: State) -> torch.Tensor:
        return self.member_energies(state).mean(0)

    def energies_of_states(self, state: State, multiplicities=None, return_std: bool = False):
        """``[n_systems, n_mult]`` committee-mean energies (eV); with ``return_std`` also the spread."""
        return _energies_of_states(self, list(self.members), state, multiplicities, return_std)

    def predict_states(self, state: State, multiplicities=None, forces: bool = False) -> dict:
        """Committee prediction for every requested multiplicity (default: the model's list).

        Keys: ``multiplicities`` (the K states, in column order), ``energy`` [S, K] mean (eV),
        ``energy_std`` [S, K] member spread (population std, as
        :meth:`~fesurf.surrogates.base.AtomisticModel.predict`), ``member_energies`` [M, S, K];
        with ``forces=True`` also ``forces`` [K, n_atoms, 3] mean (eV/A), ``member_forces``
        [M, K, n_atoms, 3] and ``force_deviation_max`` [S, K] (max over atoms of
        sqrt(mean_m |F_m - F|^2), per state).
        """
        return _predict_states(list(self.members), self.multiplicities, state, multiplicities, forces)

    def vertical_gap(self, state: State, low: int, high: int) -> torch.Tensor:
        """Committee-mean ``E(high) - E(low)`` (eV) at the same geometry, ``[n_systems]``."""
        e = self.energies_of_states(state, [low, high])
        return e[:, 1] - e[:, 0]


class SpinStatePotential(Potential):
    """One spin state of a spin-conditioned model (or :class:`SpinCommittee`) as a Potential (sets the multiplicity)."""

    def __init__(self, model: SpinConditionedModel | SpinCommittee, multiplicity: int):
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
