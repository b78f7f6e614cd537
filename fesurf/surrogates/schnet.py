"""SchNet-style message passing (continuous-filter convolutions), the
learned-representation alternative to ACSF.

``h_i <- h_i + Dense(ssp(Dense(sum_j h_j * W(r_ij))))`` with filters ``W``
from Gaussian distance expansions times a cosine cutoff; atomic energies from
a small readout network plus per-element reference energies.

Example
-------
>>> from ase.build import molecule
>>> from fesurf.state import State
>>> model = SchNet(elements=[1, 8], features=16, n_interactions=2, seed=0)
>>> model.energy(State.from_atoms(molecule("H2O"))).shape
torch.Size([1])
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import InputError
from .base import AtomisticModel
from .descriptors import cosine_cutoff
from .graph import build_graph


def ssp(x):
    """Shifted softplus ``ln(0.5 e^x + 0.5)``."""
    return torch.nn.functional.softplus(x) - math.log(2.0)


class _Interaction(torch.nn.Module):
    def __init__(self, features, n_rbf):
        super().__init__()
        self.filter1 = torch.nn.Linear(n_rbf, features, dtype=torch.float64)
        self.filter2 = torch.nn.Linear(features, features, dtype=torch.float64)
        self.in2f = torch.nn.Linear(features, features, bias=False, dtype=torch.float64)
        self.f2out = torch.nn.Linear(features, features, dtype=torch.float64)
        self.dense = torch.nn.Linear(features, features, dtype=torch.float64)

    def forward(self, h, rbf, fc, i, j):
        w = self.filter2(ssp(self.filter1(rbf))) * fc[..., None]
        msg = self.in2f(h)[..., j, :] * w
        agg = torch.zeros_like(h).index_add(-2, i, msg)
        return h + self.dense(ssp(self.f2out(agg)))


class SchNet(AtomisticModel):
    """SchNet-style model (one member; wrap several in :class:`Committee`).

    Parameters
    ----------
    elements : atomic numbers.
    features : width of atom features.
    n_interactions : message-passing layers.
    n_rbf : Gaussian distance functions on [0, cutoff].
    cutoff : Angstrom.
    seed : initialisation.
    """

    supports_stress = True  # periodic cells: image shifts follow the cell (graph.py), stress by autograd

    def __init__(self, elements: Sequence[int], features: int = 32, n_interactions: int = 3, n_rbf: int = 20,
                 cutoff: float = 5.0, seed: int = 0):
        super().__init__()
        from .descriptors import check_elements

        elements = check_elements(elements)
        if int(features) < 1 or int(n_interactions) < 0 or int(n_rbf) < 1 or not float(cutoff) > 0:
            raise InputError("SchNet needs features >= 1, n_interactions >= 0, n_rbf >= 1 and cutoff > 0 (Angstrom)")
        torch.manual_seed(int(seed))
        self.elements, self.features, self.n_interactions = elements, int(features), int(n_interactions)
        self.n_rbf, self.cutoff, self.seed = int(n_rbf), float(cutoff), int(seed)
        lookup = torch.full((119,), -1, dtype=torch.long)
        lookup[torch.as_tensor(elements)] = torch.arange(len(elements))
        self.register_buffer("lookup", lookup, persistent=False)
        self.embedding = torch.nn.Embedding(len(elements), features, dtype=torch.float64)
        self.register_buffer("centers", torch.linspace(0.0, cutoff, n_rbf, dtype=torch.float64), persistent=False)
        self.gamma = 0.5 / float(cutoff / (n_rbf - 1)) ** 2
        self.interactions = torch.nn.ModuleList([_Interaction(features, n_rbf) for _ in range(n_interactions)])
        self.out1 = torch.nn.Linear(features, features // 2, dtype=torch.float64)
        self.out2 = torch.nn.Linear(features // 2, 1, dtype=torch.float64)
        self.register_buffer("element_energy", torch.zeros(len(elements), dtype=torch.float64))
        self.register_buffer("energy_scale", torch.ones((), dtype=torch.float64))

    def config(self) -> dict:
        return {"type": "SchNet", "elements": self.elements, "features": self.features,
                "n_interactions": self.n_interactions, "n_rbf": self.n_rbf, "cutoff": self.cutoff, "seed": self.seed}

    def species(self, numbers):
        sp = self.lookup[numbers]
        if bool((sp < 0).any()):
            raise InputError(f"the model was trained for elements {self.elements}, got "
                             f"{sorted(set(numbers[sp < 0].tolist()))}")
        return sp

    def _member_outputs(self, positions, state):
        species = self.species(state.atomic_numbers)
        g = build_graph(state, self.cutoff)
        vec = positions[..., g.j, :] - positions[..., g.i, :]
        if g.shifts is not None:
            vec = vec + g.shifts.to(vec.dtype)
        r = torch.sqrt((vec * vec).sum(-1))
        rbf = torch.exp(-self.gamma * (r[..., None] - self.centers.to(r.dtype)) ** 2)
        fc = cosine_cutoff(r, self.cutoff)
        h = self.embedding(species)
        if positions.dim() == 3:
            h = h.expand(positions.shape[0], -1, -1)
        for layer in self.interactions:
            h = layer(h, rbf, fc, g.i, g.j)
        eps = self.out2(ssp(self.out1(h)))[..., 0] * self.energy_scale + self.element_energy[species]
        if eps.dim() == 1:
            eps = eps.unsqueeze(0)
        energy = torch.zeros(eps.shape[0], state.n_systems, dtype=eps.dtype).index_add(1, state.system_index, eps)
        return energy, None


class Committee(AtomisticModel):
    """A committee of independently trained models (any :class:`AtomisticModel`).

    Members are evaluated in turn (use ``BehlerParrinello(n_members=N)`` for a
    committee evaluated in one batched pass).

    >>> c = Committee([SchNet([1, 8], features=8, seed=s) for s in range(2)])
    >>> c.n_members
    2
    """

    def __init__(self, members):
        super().__init__()
        members = list(members)
        if not members:
            raise InputError("a committee needs at least one member")
        self.members = torch.nn.ModuleList(members)
        self.n_members = sum(m.n_members for m in members)
        self.supports_stress = all(getattr(m, "supports_stress", False) for m in members)

    def config(self) -> dict:
        return {"type": "Committee", "members": [m.config() for m in self.members]}

    def _member_outputs(self, positions, state):
        outs, k = [], 0
        for m in self.members:
            p = positions if positions.dim() == 2 else positions[k:k + m.n_members]
            outs.append(m._member_outputs(p, state)[0])
            k += m.n_members
        return torch.cat(outs, 0), None
