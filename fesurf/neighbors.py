"""Neighbour pairs within a cutoff, for every system of a batched State.

Two back ends give identical pair sets:

* ``"all_pairs"``: every i < j pair of a non-periodic system, filtered by
  distance. Cheapest below ~100 atoms per system (index templates are cached
  per system size, so an MD loop does no Python work per atom).
* ``"vesin"``: the `vesin` cell-list library, for periodic or large systems.

``method="auto"`` picks vesin for periodic systems or systems over
``ALL_PAIRS_MAX_ATOMS`` atoms.

Example
-------
>>> from ase.build import molecule
>>> from fesurf.state import State
>>> from fesurf.neighbors import neighbor_pairs
>>> pairs = neighbor_pairs(State.from_atoms(molecule("H2O")), cutoff=5.0)
>>> pairs.i.tolist(), pairs.j.tolist()
([0, 0, 1], [1, 2, 2])
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .errors import InputError
from .state import State

ALL_PAIRS_MAX_ATOMS = 100


@dataclass
class Pairs:
    """A half neighbour list (each pair once).

    ``i``, ``j``: [n_pairs] global atom indices; ``cell_shifts``: [n_pairs, 3]
    integer lattice translations of atom j's image (zeros without pbc). The
    pair vector ``r_j - r_i + S @ cell`` is :meth:`vectors`; it is
    differentiable in both positions and cell (so stress works by autograd).
    """

    i: torch.Tensor
    j: torch.Tensor
    cell_shifts: torch.Tensor

    def vectors(self, positions: torch.Tensor, cell: torch.Tensor | None = None,
                system_index: torch.Tensor | None = None) -> torch.Tensor:
        """Pair vectors [n_pairs, 3] in Angstrom; pass the State's ``cell`` and
        ``system_index`` for periodic systems."""
        d = positions[self.j] - positions[self.i]
        if cell is not None and self.cell_shifts.numel() and bool(self.cell_shifts.any()):
            d = d + torch.einsum("pk,pkl->pl", self.cell_shifts.to(d.dtype), cell[system_index[self.i]])
        return d

    def as_set(self):
        """Set of (i, j, shift) tuples, for comparing back ends."""
        s = self.cell_shifts.detach().cpu().numpy().astype(int)
        return {(int(a), int(b), tuple(v)) for a, b, v in zip(self.i.tolist(), self.j.tolist(), s)}


@lru_cache(maxsize=64)
def _triu_template(n: int):
    i, j = torch.triu_indices(n, n, offset=1)
    return i, j


def _all_pairs(state: State, cutoff: float) -> Pairs:
    counts = state.atoms_per_system.tolist()
    if len(set(counts)) == 1:  # all systems the same size: one vectorised template
        n = counts[0]
        ti, tj = _triu_template(n)
        offsets = (torch.arange(len(counts)) * n).repeat_interleave(ti.numel())
        i = ti.repeat(len(counts)) + offsets
        j = tj.repeat(len(counts)) + offsets
    else:
        parts_i, parts_j = [], []
        for a, b in state.atom_slices():
            ti, tj = _triu_template(b - a)
            parts_i.append(ti + a)
            parts_j.append(tj + a)
        i, j = torch.cat(parts_i), torch.cat(parts_j)
    pos = state.positions.detach()
    keep = ((pos[j] - pos[i]) ** 2).sum(dim=1) < cutoff * cutoff
    i, j = i[keep], j[keep]
    return Pairs(i, j, torch.zeros(i.numel(), 3, dtype=torch.long))


def _vesin_pairs(state: State, cutoff: float) -> Pairs:
    from vesin import NeighborList

    nl = NeighborList(cutoff=cutoff, full_list=False)
    out_i, out_j, out_s = [], [], []
    pos_all = state.positions.detach().cpu().double().numpy()
    for k, (a, b) in enumerate(state.atom_slices()):
        periodic = state.pbc[k].cpu().numpy()
        box = state.cell[k].detach().cpu().double().numpy() if state.cell is not None else np.zeros((3, 3))
        if periodic.any() and not periodic.all():
            raise InputError("vesin neighbour lists need pbc all True or all False per system")
        i, j, S = nl.compute(points=pos_all[a:b], box=box, periodic=bool(periodic.all()), quantities="ijS")
        # orient every pair i <= j (negating the image shift) so back ends agree
        flip = i > j
        i, j = np.where(flip, j, i), np.where(flip, i, j)
        S = np.where(flip[:, None], -S, S)
        out_i.append(torch.as_tensor(i.astype(np.int64)) + a)
        out_j.append(torch.as_tensor(j.astype(np.int64)) + a)
        out_s.append(torch.as_tensor(S.astype(np.int64) if periodic.all() else np.zeros((len(i), 3), np.int64)))
    return Pairs(torch.cat(out_i), torch.cat(out_j), torch.cat(out_s))


def neighbor_pairs(state: State, cutoff: float, method: str = "auto") -> Pairs:
    """All pairs closer than ``cutoff`` (Angstrom) within each system of ``state``.

    Parameters
    ----------
    state : State
    cutoff : float
        Angstrom; pairs with distance < cutoff are returned.
    method : {"auto", "all_pairs", "vesin"}
    """
    if not cutoff > 0:
        raise InputError(f"cutoff must be a positive distance in Angstrom, got {cutoff}")
    if method == "auto":
        big = int(state.atoms_per_system.max()) > ALL_PAIRS_MAX_ATOMS
        method = "vesin" if (state.is_periodic or big) else "all_pairs"
    if method == "all_pairs":
        if state.is_periodic:
            raise InputError("all_pairs does not handle periodic images; use method='vesin' or 'auto'")
        return _all_pairs(state, cutoff)
    if method == "vesin":
        return _vesin_pairs(state, cutoff)
    raise InputError(f"unknown neighbour method {method!r}; use 'auto', 'all_pairs' or 'vesin'")
