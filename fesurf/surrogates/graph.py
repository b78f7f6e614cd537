"""Pair and triplet index lists for the atomistic models.

Full (both-direction) pair lists ``i -> j`` with Cartesian image shifts, and
angular triplets ``(centre, pair p1, pair p2)`` with ``p1 < p2`` sharing the
centre. For batches of equal-size, non-periodic molecules (replicas in MD,
dataset batches) the lists are templates cached per (atoms, systems) and hold
every pair (the smooth cutoff zeroes the far ones), so an MD step does no
Python work per atom. Periodic or large systems use ``vesin`` through
:func:`fesurf.neighbors.neighbor_pairs`.

Example
-------
>>> from ase.build import molecule
>>> from fesurf.state import State
>>> g = build_graph(State.from_atoms(molecule("H2O")), cutoff=5.0, triplets=True)
>>> g.i.numel(), g.t_p1.numel()
(6, 3)
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import torch

from ..neighbors import ALL_PAIRS_MAX_ATOMS, neighbor_pairs
from ..state import State


@dataclass
class Graph:
    """``i``, ``j``: [P] atom indices (pair vector r_j - r_i + shift); ``shifts``: [P, 3] or None;
    ``t_p1``, ``t_p2``: [T] pair indices of angular triplets (same centre ``i``)."""

    i: torch.Tensor
    j: torch.Tensor
    shifts: Optional[torch.Tensor]
    t_p1: Optional[torch.Tensor] = None
    t_p2: Optional[torch.Tensor] = None
    template: bool = False


@lru_cache(maxsize=32)
def _template(n: int, n_systems: int, triplets: bool):
    ar = torch.arange(n)
    i = ar.repeat_interleave(n - 1)
    j = torch.cat([torch.cat([ar[:c], ar[c + 1:]]) for c in range(n)]) if n > 1 else ar[:0]
    npair = n * (n - 1)
    if triplets and n > 2:
        a, b = torch.triu_indices(n - 1, n - 1, offset=1)
        base = (ar * (n - 1)).repeat_interleave(a.numel())
        p1, p2 = base + a.repeat(n), base + b.repeat(n)
    else:
        p1 = p2 = torch.zeros(0, dtype=torch.long)
    sys_off = torch.arange(n_systems)
    I = (i[None, :] + (sys_off * n)[:, None]).reshape(-1)
    J = (j[None, :] + (sys_off * n)[:, None]).reshape(-1)
    P1 = (p1[None, :] + (sys_off * npair)[:, None]).reshape(-1)
    P2 = (p2[None, :] + (sys_off * npair)[:, None]).reshape(-1)
    return I, J, P1, P2


def triplets_from_pairs(i: torch.Tensor, n_atoms: int):
    """Triplet pair indices (p1 < p2, same centre) for a pair list sorted by ``i``."""
    P = i.numel()
    counts = torch.bincount(i, minlength=n_atoms)
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(P) - start[i]
    n_partners = counts[i] - 1 - local
    p1 = torch.repeat_interleave(torch.arange(P), n_partners)
    excl = torch.cumsum(n_partners, 0) - n_partners
    p2 = p1 + 1 + torch.arange(p1.numel()) - torch.repeat_interleave(excl, n_partners)
    return p1, p2


def build_graph(state: State, cutoff: float, triplets: bool = False, triplet_cutoff: float | None = None) -> Graph:
    """Pairs within ``cutoff`` (Angstrom) and optionally triplets within ``triplet_cutoff``."""
    counts = state.atoms_per_system
    n0 = int(counts[0])
    if not state.is_periodic and n0 <= ALL_PAIRS_MAX_ATOMS and bool((counts == n0).all()):
        i, j, p1, p2 = _template(n0, state.n_systems, bool(triplets))
        return Graph(i, j, None, p1 if triplets else None, p2 if triplets else None, template=True)
    pairs = neighbor_pairs(state, cutoff)
    i = torch.cat([pairs.i, pairs.j])
    j = torch.cat([pairs.j, pairs.i])
    shifts = None
    if state.is_periodic and state.cell is not None:
        # not detached: the shifts follow a strained cell, so stress (and the virial) come from autograd
        cart = torch.einsum("pk,pkl->pl", pairs.cell_shifts.to(state.dtype), state.cell[state.system_index[pairs.i]])
        shifts = torch.cat([cart, -cart])
    order = torch.argsort(i, stable=True)
    i, j = i[order], j[order]
    shifts = None if shifts is None else shifts[order]
    g = Graph(i, j, shifts)
    if triplets:
        if triplet_cutoff is not None and triplet_cutoff < cutoff:
            vec = state.positions.detach()[j] - state.positions.detach()[i]
            if shifts is not None:
                vec = vec + shifts.detach()
            keep = (vec * vec).sum(1) < triplet_cutoff ** 2
            sub = torch.nonzero(keep).flatten()
            p1, p2 = triplets_from_pairs(i[sub], state.n_atoms)
            g.t_p1, g.t_p2 = sub[p1], sub[p2]
        else:
            g.t_p1, g.t_p2 = triplets_from_pairs(i, state.n_atoms)
    return g
