"""Behler–Parrinello network: ACSF descriptors -> per-element MLPs.

``E = sum_i (scale * eps_{Z_i}(G_i) + e_ref[Z_i])``: per-element reference
energies ``e_ref`` (fitted by least squares before training) plus learned
atomic energies. A committee of ``n_members`` networks is stored as stacked
weights and evaluated in one batched pass (one matmul per layer for all
members and elements). With ``shared_layers = k`` the members share the first
``k`` hidden layers (a trunk with per-member heads; ``k = len(hidden)`` is a
last-layer ensemble): the committee mean then costs one network on the fast
path, and the per-member forces of the spread one extra gradient seed per
member (``docs/notes/committee.md``).

Example
-------
>>> from ase.build import molecule
>>> from fesurf.state import State
>>> model = BehlerParrinello(elements=[1, 8], hidden=(16, 16), seed=0)
>>> model.energy(State.from_atoms(molecule("H2O"))).shape
torch.Size([1])
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch

from ..errors import InputError
from ..state import State
from .base import AtomisticModel
from .bp_fast import fast_committee, fast_energy_and_forces, fast_supported
from .descriptors import ACSF
from .graph import build_graph


class StackedMLP(torch.nn.Module):
    """``n_members x n_elements`` MLPs evaluated together (SiLU activations).

    Input ``x`` ``[n_atoms, D]`` (shared) or ``[M, n_atoms, D]``; element index
    ``species`` ``[n_atoms]``; output ``[M, n_atoms, n_out]``. The first
    ``shared_layers`` hidden layers are one network per element shared by all
    members (their weights have a member dimension of 1): a shared trunk with
    per-member heads. ``shared_layers = len(hidden)`` leaves only the linear
    output layer per member (a last-layer ensemble).
    """

    def __init__(self, n_members: int, n_elements: int, n_in: int, hidden: Sequence[int], n_out: int,
                 generator: torch.Generator, shared_layers: int = 0):
        super().__init__()
        sizes = [n_in, *hidden, n_out]
        self.shared_layers = int(shared_layers)
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            m = 1 if k < self.shared_layers else n_members
            w = torch.randn(m, n_elements, a, b, generator=generator, dtype=torch.float64) / math.sqrt(a)
            self.weights.append(torch.nn.Parameter(w))
            self.biases.append(torch.nn.Parameter(torch.zeros(m, n_elements, 1, b, dtype=torch.float64)))

    def forward(self, x: torch.Tensor, order: torch.Tensor, counts: list):
        """``order`` sorts atoms by element, ``counts`` atoms per element (see
        :func:`element_groups`); output rows are in ``order``."""
        h = (x if x.dim() == 3 else x.unsqueeze(0))[:, order]
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            m = max(h.shape[0], w.shape[0])
            if h.shape[0] != m:
                h = h.expand(m, -1, -1)
            if w.shape[0] != m:  # a shared layer applied to per-member inputs
                w, b = w.expand(m, -1, -1, -1), b.expand(m, -1, -1, -1)
            parts = [torch.baddbmm(b[:, e], part, w[:, e]) for e, part in enumerate(h.split(counts, dim=1))
                     if counts[e] > 0]
            h = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
            if k < last:
                h = torch.nn.functional.silu(h)
        return h


def element_groups(acsf, numbers: torch.Tensor, graph=None):
    """(species [n], permutation sorting atoms by element, atoms per element, scatter
    indices of ``graph`` or None), cached on the ``numbers`` tensor and the graph
    template (an MD run reuses one State's atomic numbers every step)."""
    cache = acsf.__dict__.setdefault("_group_cache", {})
    template = graph is not None and graph.template
    key = (numbers.data_ptr(), numbers.numel(), graph.i.data_ptr() if template else None,
           graph.i.numel() if template else None)
    hit = cache.get(key)
    if hit is not None and torch.equal(hit[4], numbers):
        return hit[:4]
    species = acsf.species(numbers)
    order = torch.argsort(species, stable=True)
    counts = torch.bincount(species, minlength=acsf.n_elements).tolist()
    index = acsf.scatter_index(species, graph) if graph is not None else None
    if len(cache) > 64:
        cache.clear()
    entry = (species, order, counts, index, numbers.clone())
    if graph is None or template:
        cache[key] = entry
    return entry[:4]


class BehlerParrinello(AtomisticModel):
    """BP neural network potential (optionally a committee, optionally heteroscedastic).

    Parameters
    ----------
    elements : atomic numbers.
    hidden : hidden layer widths of each element network.
    n_members : committee size (independent initialisations from ``seed``).
    heteroscedastic : add a per-atom log-variance output (Gaussian NLL training).
    acsf : dict of :class:`ACSF` settings (cutoff in Angstrom, etc.).
    seed : int, initialisation.
    shared_layers : number of hidden layers shared by all members (0: independent members,
        the default; ``len(hidden)``: a last-layer ensemble, members differ only in the linear
        output layer). A shared trunk makes the committee mean cost one network
        (``docs/notes/committee.md``).

    Example
    -------
    >>> m = BehlerParrinello([1, 6, 8], hidden=(16, 16), n_members=4, shared_layers=2)
    >>> m.n_members, m.shared_layers, tuple(m.mlp.weights[0].shape)
    (4, 2, (1, 3, 120, 16))
    """

    supports_stress = True  # periodic cells: image shifts follow the cell (graph.py), stress by autograd

    def __init__(self, elements: Sequence[int], hidden: Sequence[int] = (32, 32), n_members: int = 1,
                 heteroscedastic: bool = False, acsf: dict | None = None, seed: int = 0, shared_layers: int = 0):
        super().__init__()
        if int(n_members) < 1:
            raise InputError("n_members must be >= 1")
        if any(int(h) < 1 for h in hidden):
            raise InputError(f"hidden layer widths must be >= 1, got {list(hidden)}")
        if isinstance(shared_layers, bool) or not isinstance(shared_layers, numbers.Integral) \
                or not 0 <= int(shared_layers) <= len(hidden):
            raise InputError(f"shared_layers must be an integer in 0..{len(hidden)} (the number of hidden layers "
                             f"shared by the members), got {shared_layers!r}")
        self.acsf = ACSF(elements, **(acsf or {}))
        self.n_members = int(n_members)
        self.heteroscedastic = bool(heteroscedastic)
        self.hidden = [int(h) for h in hidden]
        self.seed = int(seed)
        self.shared_layers = int(shared_layers)
        ne, d = self.acsf.n_elements, self.acsf.n_features
        gen = torch.Generator().manual_seed(self.seed)
        self.mlp = StackedMLP(self.n_members, ne, d, self.hidden, 2 if heteroscedastic else 1, gen,
                              shared_layers=self.shared_layers)
        self.register_buffer("feature_mean", torch.zeros(ne, d, dtype=torch.float64))
        self.register_buffer("feature_std", torch.ones(ne, d, dtype=torch.float64))
        self.register_buffer("element_energy", torch.zeros(ne, dtype=torch.float64))
        self.register_buffer("energy_scale", torch.ones((), dtype=torch.float64))

    def config(self) -> dict:
        cfg = dict(self.acsf.config)
        elements = cfg.pop("elements")
        out = {"type": "BehlerParrinello", "elements": elements, "hidden": self.hidden,
               "n_members": self.n_members, "heteroscedastic": self.heteroscedastic, "acsf": cfg, "seed": self.seed}
        if self.shared_layers:  # absent for independent members: configs (and files) written before stay equal
            out["shared_layers"] = self.shared_layers
        return out

    def select_members(self, members) -> "BehlerParrinello":
        """A new model holding only the given committee members (e.g. ``[0]`` for a single network)."""
        members = [int(m) for m in members]
        if not members or any(not 0 <= m < self.n_members for m in members):
            raise InputError(f"members must be indices in 0..{self.n_members - 1}")
        cfg = self.config()
        cfg.pop("type")
        cfg["n_members"] = len(members)
        new = BehlerParrinello(**cfg).to(self.model_dtype)
        shared = {f"mlp.{kind}.{k}" for kind in ("weights", "biases") for k in range(self.shared_layers)}
        sd = {k: (v[members] if k.startswith("mlp.") and k not in shared else v) for k, v in self.state_dict().items()}
        new.load_state_dict(sd)
        return new

    def shared_trunk_from(self, member: int = 0, n_members: int = 4, shared_layers: int | None = None,
                          head_noise: float = 0.0, seed: int = 0) -> "BehlerParrinello":
        """A committee of ``n_members`` that share the hidden layers of member ``member`` of this
        model (the first ``shared_layers``, default all: a last-layer ensemble), each starting
        from that member's remaining layers, plus Gaussian noise of relative size ``head_noise``
        on those per-member weights. Same descriptors, standardisation and reference energies.
        A warm start for :func:`fesurf.training.train` with ``bootstrap=True`` (which makes the
        heads differ); the cost of its spread does not depend on the weights.

        >>> m = BehlerParrinello([1, 8], hidden=(8, 8), n_members=2, seed=0)
        >>> ll = m.shared_trunk_from(1, n_members=4)
        >>> ll.n_members, ll.shared_layers
        (4, 2)
        """
        if not 0 <= int(member) < self.n_members:
            raise InputError(f"member must be an index in 0..{self.n_members - 1}, got {member}")
        k = len(self.hidden) if shared_layers is None else shared_layers
        if float(head_noise) < 0:
            raise InputError(f"head_noise must be >= 0, got {head_noise}")
        cfg = self.config()
        cfg.pop("type")
        cfg.update(n_members=int(n_members), shared_layers=k)
        new = BehlerParrinello(**cfg).to(self.model_dtype)
        one = self.select_members([int(member)])
        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for name, t in new.state_dict().items():
                src = one.state_dict()[name]
                if name.startswith("mlp.") and t.shape[0] != src.shape[0]:  # per-member layer: copies
                    src = src.expand_as(t)
                    if head_noise > 0:
                        scale = float(src.abs().mean()) * float(head_noise)
                        src = src + scale * torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)
                t.copy_(src)
        return new

    def descriptors(self, positions: torch.Tensor, state: State) -> torch.Tensor:
        """Raw ACSF ``[..., n_atoms, n_features]``."""
        graph = build_graph(state, self.acsf.cutoff, triplets=True, triplet_cutoff=self.acsf.angular_cutoff)
        return self.acsf(positions, self.acsf.species(state.atomic_numbers), graph)

    def use_compiled_path(self, enable: bool = True) -> "BehlerParrinello":
        """Opt in (or out) of ``torch.compile`` for the autograd-free MD path: about 1.5x faster for a
        single small molecule, 1.2x for 64 replicas, after a compile of a few seconds per input shape
        (so worth it for long runs, not for a few calls). Needs a C++ compiler; without one the first
        call warns and the TorchScript path is used. Returns the model.

        >>> model = BehlerParrinello(elements=[1, 8]).use_compiled_path()   # doctest: +SKIP
        """
        self._compiled_path = bool(enable)
        return self

    def energy_and_forces(self, state: State, create_graph: bool = False, fast: bool | None = None):
        """``(energy [S] eV, forces [n_atoms, 3] eV/A)``. ``fast=None`` picks the
        autograd-free path (:mod:`~fesurf.surrogates.bp_fast`) whenever it applies
        (``create_graph=False``, no heteroscedastic head); ``fast=False`` forces autograd."""
        if fast is not False and fast_supported(self, state, create_graph):
            energy, forces = fast_energy_and_forces(self, state)
            return energy[0], forces[0]
        return super().energy_and_forces(state, create_graph)

    def member_energies_and_forces(self, state: State, create_graph: bool = False, fast: bool | None = None):
        """Per-member ``(energies [M, S], forces [M, n_atoms, 3], log_var or None)``; the fast
        path is used as in :meth:`energy_and_forces`."""
        if fast is not False and fast_supported(self, state, create_graph):
            energies, forces = fast_energy_and_forces(self, state, members=True)
            return energies, forces, None
        return super().member_energies_and_forces(state, create_graph)

    def _committee_outputs(self, state: State, member_forces: bool):
        if fast_supported(self, state, False):
            energies, mean_f, forces = fast_committee(self, state, member_forces=member_forces)
            return energies, mean_f, forces, None
        return super()._committee_outputs(state, member_forces)

    def _member_outputs(self, positions, state):
        graph = build_graph(state, self.acsf.cutoff, triplets=True, triplet_cutoff=self.acsf.angular_cutoff)
        species, order, counts, index = element_groups(self.acsf, state.atomic_numbers, graph)
        g = self.acsf(positions, species, graph, index)
        x = (g - self.feature_mean[species]) / self.feature_std[species]
        out = self.mlp(x, order, counts)  # [M, N, 1 or 2], atoms in `order`
        eps = out[..., 0] * self.energy_scale + self.element_energy[species[order]]
        m = out.shape[0]
        sys = state.system_index[order]
        energy = torch.zeros(m, state.n_systems, dtype=eps.dtype, device=eps.device).index_add(1, sys, eps)
        log_var = None
        if self.heteroscedastic:
            var_atom = torch.nn.functional.softplus(out[..., 1]) * self.energy_scale ** 2 + 1e-10
            var = torch.zeros(m, state.n_systems, dtype=eps.dtype, device=eps.device).index_add(1, sys, var_atom)
            log_var = var.log()
        return energy, log_var
