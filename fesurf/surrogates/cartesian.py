"""A committee of MLPs on the Cartesian coordinates of one fixed system (model surfaces, tests).

For model potentials whose energy depends on absolute positions (a particle on an analytic
surface, a confined cluster with a fixed atom order), where atom-centred descriptors do not
apply: a single atom has no neighbours, and the surfaces are not translation or rotation
invariant. ``E_m(x) = offset + scale * MLP_m((x - mean) / std)`` for members ``m``, with ``x``
the flattened positions ``[3 n_atoms]`` (Angstrom) of each system and energies in eV; the
committee mean is the Potential energy, and :meth:`~fesurf.surrogates.base.AtomisticModel.predict`
gives the spreads the active-learning loop and the production guard read. The members are
stacked and evaluated in one batched pass (SiLU activations, independent initialisations).

The normalisation (``input_mean``, ``input_std``, ``energy_offset``, ``energy_scale``) is set from
training data by :meth:`CartesianCommittee.fit_normalisation` before the first fit and kept after,
so a warm-started refit does not move the function under the weights.

Example
-------
>>> import torch
>>> from fesurf.state import State
>>> model = CartesianCommittee(n_atoms=1, hidden=(8,), n_members=3, seed=0)
>>> s = State(positions=[[0.1, 0.0, 0.0]], atomic_numbers=[1]).replicate(2)
>>> out = model.predict(s)
>>> tuple(out["member_energies"].shape), tuple(out["forces"].shape)
((3, 2), (2, 3))
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import InputError
from ..state import State
from .base import AtomisticModel


class CartesianCommittee(AtomisticModel):
    """Committee MLP on flattened Cartesian positions of a system with ``n_atoms`` atoms.

    Parameters
    ----------
    n_atoms : atoms per system (every system of a State must have this many, in one order).
    hidden : hidden layer widths of each member.
    n_members : committee size (>= 1; >= 2 for a spread).
    seed : initialisation seed (members differ by their draws).
    """

    translation_invariant = False
    rotation_invariant = False

    def __init__(self, n_atoms: int, hidden: Sequence[int] = (32, 32), n_members: int = 4, seed: int = 0):
        super().__init__()
        if isinstance(n_atoms, bool) or not isinstance(n_atoms, int) or n_atoms < 1:
            raise InputError(f"n_atoms must be a whole number >= 1, got {n_atoms!r}")
        if isinstance(n_members, bool) or not isinstance(n_members, int) or n_members < 1:
            raise InputError(f"n_members must be a whole number >= 1, got {n_members!r}")
        hidden = [int(h) for h in hidden]
        if any(h < 1 for h in hidden):
            raise InputError(f"hidden layer widths must be >= 1, got {hidden}")
        self.n_atoms, self.n_members, self.hidden, self.seed = int(n_atoms), int(n_members), hidden, int(seed)
        gen = torch.Generator().manual_seed(self.seed)
        sizes = [3 * self.n_atoms, *hidden, 1]
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for a, b in zip(sizes[:-1], sizes[1:]):
            w = torch.randn(self.n_members, a, b, generator=gen, dtype=torch.float64) / math.sqrt(a)
            self.weights.append(torch.nn.Parameter(w))
            self.biases.append(torch.nn.Parameter(torch.zeros(self.n_members, 1, b, dtype=torch.float64)))
        self.register_buffer("input_mean", torch.zeros(3 * self.n_atoms, dtype=torch.float64))
        self.register_buffer("input_std", torch.ones(3 * self.n_atoms, dtype=torch.float64))
        self.register_buffer("energy_offset", torch.zeros((), dtype=torch.float64))
        self.register_buffer("energy_scale", torch.ones((), dtype=torch.float64))

    def config(self) -> dict:
        return {"type": "CartesianCommittee", "n_atoms": self.n_atoms, "hidden": list(self.hidden),
                "n_members": self.n_members, "seed": self.seed}

    @torch.no_grad()
    def fit_normalisation(self, dataset, frames) -> None:
        """Set input mean/std (Angstrom) and energy offset/scale (eV) from the given frames of a
        :class:`~fesurf.training.Dataset` (call once, before the first fit)."""
        frames = torch.as_tensor(frames, dtype=torch.long)
        if frames.numel() < 2:
            raise InputError("fit_normalisation needs at least 2 frames")
        state, energy, _ = dataset.batch(frames)
        x = self._flat(state.positions.to(torch.float64), state)
        std = x.std(0)
        self.input_mean.copy_(x.mean(0))
        self.input_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
        self.energy_offset.fill_(float(energy.mean()))
        self.energy_scale.fill_(max(float(energy.std()), 1e-3))

    def _flat(self, positions: torch.Tensor, state: State) -> torch.Tensor:
        counts = state.atoms_per_system
        if bool((counts != self.n_atoms).any()):
            raise InputError(f"this CartesianCommittee was built for systems of {self.n_atoms} atoms; the State "
                             f"holds systems of {sorted(set(counts.tolist()))} atoms")
        lead = positions.shape[:-2]
        return positions.reshape(lead + (state.n_systems, 3 * self.n_atoms))

    def _members(self, state: State, forces: bool):
        """Per-member energies [M, S] (eV) and, with ``forces``, forces [M, n_atoms, 3] (eV/A) by the
        explicit chain rule through the layers (no double backward when training on forces)."""
        dtype = self.model_dtype
        x = (self._flat(state.positions.to(dtype), state) - self.input_mean) / self.input_std  # [S, 3n]
        h = x.unsqueeze(0)
        slopes = []
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = torch.baddbmm(b, h.expand(w.shape[0], -1, -1) if h.shape[0] != w.shape[0] else h, w)
            if k < last:
                sig = torch.sigmoid(z)
                h = z * sig
                slopes.append(sig + h * (1.0 - sig))  # silu'(z)
        energy = self.energy_offset + self.energy_scale * z[..., 0]  # [M, S]
        if not forces:
            return energy, None
        grad = self.weights[last].transpose(1, 2)  # [M, 1, H]: d out / d h_last
        for k in range(last - 1, -1, -1):
            grad = torch.bmm(grad * slopes[k], self.weights[k].transpose(1, 2))  # [M, S, fan-in of layer k]
        f = -(self.energy_scale / self.input_std) * grad  # [M, S, 3n]
        return energy, f.reshape(f.shape[0], -1, 3)

    def member_energies_and_forces(self, state: State, create_graph: bool = False):
        """Per-member ``(energies [M, S] eV, forces [M, n_atoms, 3] eV/A, None)``; differentiable in the
        weights with ``create_graph=True`` (force matching)."""
        with torch.set_grad_enabled(create_graph or torch.is_grad_enabled()):
            e, f = self._members(state, forces=True)
        if not create_graph:
            e, f = e.detach(), f.detach()
        return e.to(state.dtype), f.to(state.dtype), None

    def energy_and_forces(self, state: State, create_graph: bool = False):
        if state.positions.requires_grad:  # a caller differentiating through positions: plain autograd
            return super().energy_and_forces(state, create_graph)
        e, f, _ = self.member_energies_and_forces(state, create_graph)
        return e.mean(0), f.mean(0)

    def _member_outputs(self, positions: torch.Tensor, state: State):
        x = (self._flat(positions, state) - self.input_mean.to(positions.dtype)) / self.input_std.to(positions.dtype)
        h = x if x.dim() == 3 else x.unsqueeze(0)  # [M or 1, S, 3n]
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            if h.shape[0] != w.shape[0]:
                h = h.expand(w.shape[0], -1, -1)
            h = torch.baddbmm(b, h, w)
            if k < last:
                h = torch.nn.functional.silu(h)
        energy = self.energy_offset.to(h.dtype) + self.energy_scale.to(h.dtype) * h[..., 0]  # [M, S]
        return energy, None
