"""Behler–Parrinello atom-centred symmetry functions (ACSF), element-resolved.

Radial G2: ``sum_j exp(-eta (r_ij - r_s)^2) fc(r_ij)`` per neighbour element.
Angular G5 (shifted): ``2^(1-zeta) sum_{j<k} (1 + lambda cos theta_ijk)^zeta
exp(-eta ((r_ij - r_s)^2 + (r_ik - r_s)^2)) fc(r_ij) fc(r_ik)`` per unordered
neighbour-element pair. Cosine cutoff ``fc(r) = 0.5 (cos(pi r / rc) + 1)`` for
``r < rc``, else 0 (continuous with its first derivative at rc).

Descriptors are invariant to rotation, translation and permutation of like
atoms by construction, and local (atoms beyond the cutoffs do not enter).

Example
-------
>>> from ase.build import molecule
>>> from fesurf.state import State
>>> acsf = ACSF(elements=[1, 8])
>>> s = State.from_atoms(molecule("H2O"))
>>> from fesurf.surrogates.graph import build_graph
>>> acsf(s.positions, acsf.species(s.atomic_numbers), build_graph(s, acsf.cutoff, True)).shape
torch.Size([3, 52])
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import InputError
from .graph import Graph


def cosine_cutoff(r: torch.Tensor, rc) -> torch.Tensor:
    """``0.5 (cos(pi r / rc) + 1)`` inside ``rc``, exactly 0 (with zero gradient) outside.
    ``rc`` (Angstrom) may be a tensor broadcasting against ``r``."""
    return torch.where(r < rc, 0.5 * torch.cos(r * (math.pi / rc)) + 0.5, torch.zeros_like(r))


def _int_power(x: torch.Tensor, n: int) -> torch.Tensor:
    out = None
    while n:
        if n & 1:
            out = x if out is None else out * x
        n >>= 1
        if n:
            x = x * x
    return out


def check_elements(elements) -> list:
    """Sorted distinct atomic numbers (1..118) of a model; InputError naming the bad entry otherwise."""
    try:
        zs = [int(z) for z in elements]
    except (TypeError, ValueError):
        raise InputError(f"elements must be atomic numbers (integers 1..118), got {elements!r}") from None
    if not zs:
        raise InputError("elements must be a non-empty list of atomic numbers")
    bad = [z for z in zs if not 1 <= z <= 118]
    if bad:
        raise InputError(f"unknown element(s) {bad}: atomic numbers must be 1..118")
    if len(set(zs)) != len(zs):
        raise InputError(f"elements must be distinct, got {zs}")
    return sorted(zs)


class ACSF(torch.nn.Module):
    """Element-resolved G2 + G5 symmetry functions.

    Parameters
    ----------
    elements : atomic numbers the model knows (sorted internally).
    cutoff : radial cutoff, Angstrom.
    n_radial : number of G2 shells, evenly spaced in ``[r_min, cutoff - 0.5]``.
    angular_cutoff : Angstrom (<= cutoff).
    angular_shifts : Angstrom, shells r_s of the angular terms.
    angular_eta : 1/A^2.
    zetas, lambdas : angular resolution.
    """

    def __init__(self, elements: Sequence[int], cutoff: float = 5.0, n_radial: int = 16, r_min: float = 0.8,
                 angular_cutoff: float = 4.0, angular_shifts: Sequence[float] = (1.2, 2.2, 3.2),
                 angular_eta: float = 1.0, zetas: Sequence[float] = (1.0, 4.0), lambdas: Sequence[float] = (1.0, -1.0)):
        super().__init__()
        elements = check_elements(elements)
        if not 0 < angular_cutoff <= cutoff:
            raise InputError("need 0 < angular_cutoff <= cutoff (Angstrom)")
        self.elements = elements
        self.cutoff, self.angular_cutoff = float(cutoff), float(angular_cutoff)
        self.config = dict(elements=elements, cutoff=cutoff, n_radial=n_radial, r_min=r_min,
                           angular_cutoff=angular_cutoff, angular_shifts=list(angular_shifts),
                           angular_eta=angular_eta, zetas=list(zetas), lambdas=list(lambdas))
        ne = len(elements)
        lookup = torch.full((119,), -1, dtype=torch.long)
        lookup[torch.as_tensor(elements)] = torch.arange(ne)
        self.register_buffer("lookup", lookup, persistent=False)
        shifts = torch.linspace(r_min, cutoff - 0.5, n_radial, dtype=torch.float64)
        spacing = float(shifts[1] - shifts[0]) if n_radial > 1 else 1.0
        self.register_buffer("rad_shift", shifts, persistent=False)
        self.rad_eta = 0.5 / spacing ** 2
        # angular parameter grid: shells x (zeta, lambda); zetas are positive integers
        if any(int(z) != z or z < 1 for z in zetas) or any(abs(l) != 1 for l in lambdas):
            raise InputError("zetas must be positive integers and lambdas +1 or -1")
        self._zl = [(int(z), int(l)) for z in zetas for l in lambdas]
        grid = [(s, z, l) for s in angular_shifts for (z, l) in self._zl]
        self._zetas = [int(z) for z in zetas]
        self.register_buffer("lambdas", torch.tensor([float(l) for l in lambdas], dtype=torch.float64),
                             persistent=False)
        # radial and angular Gaussian shells share one basis: columns [0, R) radial, [R, R+S) angular
        self.register_buffer("basis_shift", torch.cat([shifts, torch.tensor(list(angular_shifts), dtype=torch.float64)]),
                             persistent=False)
        self.register_buffer("basis_eta", torch.cat([torch.full((n_radial,), 0.5 / spacing ** 2, dtype=torch.float64),
                                                     torch.full((len(angular_shifts),), float(angular_eta),
                                                                dtype=torch.float64)]), persistent=False)
        self.register_buffer("cutoffs", torch.tensor([float(cutoff), float(angular_cutoff)], dtype=torch.float64),
                             persistent=False)
        self.register_buffer("basis_cutoff", torch.cat([torch.zeros(n_radial, dtype=torch.long),
                                                        torch.ones(len(angular_shifts), dtype=torch.long)]),
                             persistent=False)
        self.ang_eta = float(angular_eta)
        # unordered element pair -> channel
        pair_channel = torch.zeros(ne, ne, dtype=torch.long)
        c = 0
        for a in range(ne):
            for b in range(a, ne):
                pair_channel[a, b] = pair_channel[b, a] = c
                c += 1
        self.register_buffer("pair_channel", pair_channel.reshape(-1), persistent=False)
        self.n_elements, self.n_pair_channels = ne, c
        self.n_radial, self.n_angular = n_radial, len(grid)
        self.n_features = ne * n_radial + c * len(grid)

    def species(self, numbers: torch.Tensor) -> torch.Tensor:
        """Element index (0..n_elements-1) of each atom; InputError for unknown elements."""
        sp = self.lookup[numbers]
        if bool((sp < 0).any()):
            bad = sorted(set(numbers[sp < 0].tolist()))
            raise InputError(f"the model was trained for elements {self.elements}, got atomic number(s) {bad}")
        return sp

    def scatter_index(self, species: torch.Tensor, graph: Graph):
        """Destination rows of the radial (per pair) and angular (per triplet) sums."""
        rad = graph.i * self.n_elements + species[graph.j]
        if graph.t_p1 is None or graph.t_p1.numel() == 0:
            return rad, None
        p1, p2 = graph.t_p1, graph.t_p2
        channel = self.pair_channel[species[graph.j[p1]] * self.n_elements + species[graph.j[p2]]]
        return rad, graph.i[p1] * self.n_pair_channels + channel

    def forward(self, positions: torch.Tensor, species: torch.Tensor, graph: Graph, index=None) -> torch.Tensor:
        """Descriptors ``[..., n_atoms, n_features]``; ``positions`` is ``[n_atoms, 3]`` or
        ``[B, n_atoms, 3]`` (one copy per committee member, for per-member forces).
        ``index``: :meth:`scatter_index` output, if cached by the caller."""
        n = positions.shape[-2]
        rad_index, ang_index = self.scatter_index(species, graph) if index is None else index
        vec = positions[..., graph.j, :] - positions[..., graph.i, :]
        if graph.shifts is not None:
            vec = vec + graph.shifts.to(vec.dtype)
        r = torch.sqrt((vec * vec).sum(-1))  # pairs never coincide: the oracle and State refuse r = 0
        dt = positions.dtype
        lead = positions.shape[:-2]
        # all Gaussian shells (radial G2 and angular) in one pass, each with its own cutoff function
        fcs = cosine_cutoff(r[..., None], self.cutoffs.to(dt))  # [..,P,2]
        basis = torch.exp(-self.basis_eta.to(dt) * (r[..., None] - self.basis_shift.to(dt)) ** 2) \
            * fcs[..., self.basis_cutoff]  # [..,P,R+S]
        g2 = basis[..., :self.n_radial]
        rad = torch.zeros(lead + (n * self.n_elements, self.n_radial), dtype=dt, device=positions.device)
        rad = rad.index_add(-2, rad_index, g2).reshape(lead + (n, self.n_elements * self.n_radial))
        if ang_index is None:
            ang = torch.zeros(lead + (n, self.n_pair_channels * self.n_angular), dtype=dt, device=positions.device)
            return torch.cat([rad, ang], -1)
        p1, p2 = graph.t_p1, graph.t_p2
        shell = basis[..., self.n_radial:]
        radial = shell[..., p1, :] * shell[..., p2, :]  # [..,T,S]
        cos = (vec[..., p1, :] * vec[..., p2, :]).sum(-1) / (r[..., p1] * r[..., p2])
        base = 1.0 + cos[..., None] * self.lambdas.to(dt)  # [..,T,L]
        terms = []
        for zeta in self._zetas:  # integer zetas: repeated products instead of pow
            t = _int_power(base, zeta)
            terms.append(t if zeta == 1 else t * (2.0 ** (1 - zeta)))
        angular = torch.cat(terms, -1) if len(terms) > 1 else terms[0]  # [..,T,Z*L]
        g5 = (radial[..., :, None] * angular[..., None, :]).flatten(-2)  # [..,T,S*Z*L]
        ang = torch.zeros(lead + (n * self.n_pair_channels, self.n_angular), dtype=dt, device=positions.device)
        ang = ang.index_add(-2, ang_index, g5).reshape(lead + (n, self.n_pair_channels * self.n_angular))
        return torch.cat([rad, ang], -1)
