"""A small replica map: named axes (windows x walkers x beads ...) over the flat system index.

The potential sees one flat batch of systems (``State.system_index``); a protocol that
has structure in its replicas (umbrella windows, independent walkers, ring-polymer
beads) names that structure with a :class:`ReplicaMap`. The flat index is C order
over the axes as given (the last axis varies fastest), so with
``ReplicaMap(window=4, bead=16)`` system ``w * 16 + b`` is bead ``b`` of window ``w``
and every ring polymer is contiguous.

The map only reshapes and reduces arrays whose first axis is the system axis
(``[n_systems, ...]``, numpy or torch); for per-atom arrays of systems with equal
atom counts, view them as ``[n_systems, n_atoms, ...]`` first.

Example
-------
>>> import numpy as np
>>> rmap = ReplicaMap(window=2, bead=3)
>>> rmap.n_systems, rmap.index(window=1, bead=2)
(6, 5)
>>> rmap.reduce(np.arange(6.0), "bead").tolist()     # bead average of each window
[1.0, 4.0]
>>> rmap.split(np.arange(6), "window").tolist()      # [rest, axis]: per bead, the two windows
[[0, 3], [1, 4], [2, 5]]
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from .errors import InputError

__all__ = ["ReplicaMap"]


def _permute(x, dims):
    return x.permute(*dims) if torch.is_tensor(x) else np.transpose(x, dims)


class ReplicaMap:
    """Named replica axes over a flat system index (C order, last axis fastest).

    Parameters
    ----------
    **sizes : int
        Axis names and sizes in order, e.g. ``ReplicaMap(window=8, walker=2, bead=16)``.

    >>> ReplicaMap(window=3, bead=4).without("bead").names
    ('window',)
    """

    __slots__ = ("names", "sizes", "n_systems")

    def __init__(self, **sizes):
        if not sizes:
            raise InputError("a ReplicaMap needs at least one named axis, e.g. ReplicaMap(bead=16)")
        for name, n in sizes.items():
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 1:
                raise InputError(f"replica axis {name!r} must have a whole size >= 1, got {n!r}")
        self.names = tuple(sizes)
        self.sizes = tuple(int(n) for n in sizes.values())
        self.n_systems = int(np.prod(self.sizes))

    @classmethod
    def from_axes(cls, axes: Iterable[tuple[str, int]]) -> "ReplicaMap":
        """Build from ``[(name, size), ...]`` (keeps the order)."""
        return cls(**dict(axes))

    # ------------------------------------------------------------ description
    @property
    def shape(self) -> tuple:
        return self.sizes

    def size(self, axis: str) -> int:
        return self.sizes[self._axis(axis)]

    def axes(self) -> list:
        """``[(name, size), ...]`` (JSON-able)."""
        return [[n, s] for n, s in zip(self.names, self.sizes)]

    def __repr__(self):
        return "ReplicaMap(" + ", ".join(f"{n}={s}" for n, s in zip(self.names, self.sizes)) + ")"

    def __eq__(self, other):
        return isinstance(other, ReplicaMap) and self.names == other.names and self.sizes == other.sizes

    def __hash__(self):
        return hash((self.names, self.sizes))

    def _axis(self, axis: str) -> int:
        if axis not in self.names:
            raise InputError(f"no replica axis {axis!r}; this map has {list(self.names)}")
        return self.names.index(axis)

    def without(self, axis: str) -> "ReplicaMap | None":
        """The map of the remaining axes (None when ``axis`` was the only one)."""
        i = self._axis(axis)
        rest = [(n, s) for j, (n, s) in enumerate(zip(self.names, self.sizes)) if j != i]
        return ReplicaMap.from_axes(rest) if rest else None

    # -------------------------------------------------------------- indices
    def index(self, **coords):
        """Flat system index of the given coordinates (ints or broadcastable int arrays; every axis)."""
        missing = set(self.names) - set(coords)
        extra = set(coords) - set(self.names)
        if missing or extra:
            raise InputError(f"index() needs exactly the axes {list(self.names)}; missing {sorted(missing)}, "
                             f"unknown {sorted(extra)}")
        c = []
        for name, n in zip(self.names, self.sizes):
            v = np.asarray(coords[name])
            if (v < 0).any() or (v >= n).any():
                raise InputError(f"{name} index out of range 0..{n - 1}: {v.tolist()}")
            c.append(v)
        flat = np.ravel_multi_index(c, self.sizes)
        return int(flat) if np.ndim(flat) == 0 else flat

    def coords(self, system) -> dict:
        """Axis coordinates of flat system index(es)."""
        s = np.asarray(system)
        if (s < 0).any() or (s >= self.n_systems).any():
            raise InputError(f"system index out of range 0..{self.n_systems - 1}")
        parts = np.unravel_index(s, self.sizes)
        return {n: (int(p) if np.ndim(p) == 0 else p) for n, p in zip(self.names, parts)}

    def systems_where(self, **coords) -> np.ndarray:
        """Flat indices of all systems with the given coordinates on some axes (sorted)."""
        grid = np.arange(self.n_systems).reshape(self.sizes)
        sel = tuple(coords.pop(n) if n in coords else slice(None) for n in self.names)
        if coords:
            raise InputError(f"unknown replica axes {sorted(coords)}; this map has {list(self.names)}")
        return np.sort(np.asarray(grid[sel]).reshape(-1))

    # ------------------------------------------------------ reshaping arrays
    def _check(self, x):
        if x.shape[0] != self.n_systems:
            raise InputError(f"array has {x.shape[0]} rows but the replica map has {self.n_systems} systems")

    def to_grid(self, x):
        """``[n_systems, ...]`` -> ``[*sizes, ...]``."""
        self._check(x)
        return x.reshape(self.sizes + tuple(x.shape[1:]))

    def from_grid(self, y):
        """``[*sizes, ...]`` -> ``[n_systems, ...]``."""
        return y.reshape((self.n_systems,) + tuple(y.shape[len(self.sizes):]))

    def split(self, x, axis: str):
        """``[n_systems, ...]`` -> ``[n_rest, n_axis, ...]``: the other axes flattened (in order), then ``axis``.

        A view when ``axis`` is the last axis (e.g. beads innermost), a copy otherwise.
        """
        i = self._axis(axis)
        g = self.to_grid(x)
        nd = len(self.sizes)
        if i != nd - 1:
            dims = [j for j in range(nd) if j != i] + [i] + list(range(nd, g.ndim))
            g = _permute(g, dims)
        n_axis = self.sizes[i]
        return g.reshape((self.n_systems // n_axis, n_axis) + tuple(x.shape[1:]))

    def merge(self, y, axis: str):
        """Inverse of :meth:`split`: ``[n_rest, n_axis, ...]`` -> ``[n_systems, ...]``."""
        i = self._axis(axis)
        nd = len(self.sizes)
        rest = [s for j, s in enumerate(self.sizes) if j != i]
        trailing = tuple(y.shape[2:])
        g = y.reshape(tuple(rest) + (self.sizes[i],) + trailing)
        if i != nd - 1:
            inv = list(range(nd - 1))
            inv.insert(i, nd - 1)
            g = _permute(g, inv + list(range(nd, g.ndim)))
        return g.reshape((self.n_systems,) + trailing)

    def reduce(self, x, axis: str, op: str = "mean"):
        """``[n_systems, ...]`` -> ``[n_rest, ...]``: mean (or ``"sum"``) over ``axis``."""
        if op not in ("mean", "sum"):
            raise InputError(f"op must be 'mean' or 'sum', got {op!r}")
        s = self.split(x, axis)
        if torch.is_tensor(s):
            return s.mean(dim=1) if op == "mean" else s.sum(dim=1)
        return s.mean(axis=1) if op == "mean" else s.sum(axis=1)

    def expand(self, x_rest, axis: str):
        """``[n_rest, ...]`` -> ``[n_systems, ...]``: every system gets its ``rest`` entry (copied along ``axis``)."""
        n_axis = self.size(axis)
        if torch.is_tensor(x_rest):
            y = x_rest.unsqueeze(1).expand((x_rest.shape[0], n_axis) + tuple(x_rest.shape[1:]))
        else:
            y = np.broadcast_to(np.asarray(x_rest)[:, None], (len(x_rest), n_axis) + np.shape(x_rest)[1:])
        return self.merge(y, axis)
