"""Analytic potentials with exact answers, for tests, tutorials and benchmarks.

Model surfaces (:class:`Harmonic`, :class:`DoubleWell1D`, :class:`DoubleWell2D`,
:class:`MullerBrown`) act on the Cartesian coordinates of every atom and sum
over atoms; they are not rotation or translation invariant. Pair potentials
(:class:`Morse`, :class:`LennardJones`) are invariant and periodic-aware.

All energies in eV, lengths in Angstrom. Model surfaces supply exact forces.

Example
-------
>>> from fesurf.potentials import DoubleWell1D
>>> from fesurf.state import State
>>> s = State(positions=[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], atomic_numbers=[1, 1], system_index=[0, 1])
>>> DoubleWell1D(barrier=0.2).energy(s).tolist()
[0.2, 0.0]
"""
from __future__ import annotations

import torch

from ..errors import InputError
from ..neighbors import neighbor_pairs
from ..state import State
from .base import Potential


def _param(value, name):
    t = torch.as_tensor(value, dtype=torch.float64)
    if not torch.isfinite(t).all():
        raise InputError(f"{name} must be finite, got {value}")
    return t


class _ModelSurface(Potential):
    """Base for per-atom Cartesian model surfaces with exact forces."""

    translation_invariant = False
    rotation_invariant = False

    def per_atom(self, positions):
        """Return (energy [n_atoms], gradient [n_atoms, 3])."""
        raise NotImplementedError

    def energy(self, state: State) -> torch.Tensor:
        e, _ = self.per_atom(state.positions)
        return state.sum_per_system(e)

    def energy_and_forces(self, state: State, create_graph: bool = False):
        if create_graph or state.positions.requires_grad:
            return super().energy_and_forces(state, create_graph)
        e, g = self.per_atom(state.positions)
        return state.sum_per_system(e), -g


class Harmonic(_ModelSurface):
    """U = 1/2 sum k (x - c)^2 over every coordinate of every atom.

    Parameters
    ----------
    k : float, [3], or [n_atoms_per_system, 3]
        Stiffness in eV/A^2 (any dimension: per axis, per atom-axis).
    center : same shapes as k, Angstrom (default 0).

    The configurational free-energy difference between two stiffnesses is
    exact: ``A_B - A_A = kT/2 * sum ln(k_B / k_A)`` (:meth:`free_energy_difference`).

    >>> Harmonic(k=[1.0, 2.0, 4.0]).free_energy_difference(Harmonic(k=[2.0, 4.0, 8.0]), kT=1.0)
    1.0397...
    """

    def __init__(self, k=1.0, center=0.0):
        super().__init__()
        k = _param(k, "k")
        if (k < 0).any():
            raise InputError("Harmonic stiffness k must be >= 0 (eV/A^2)")
        self.register_buffer("k", k)
        self.register_buffer("center", _param(center, "center"))

    def _broadcast(self, t, positions):
        if t.ndim == 2 and t.shape[0] != positions.shape[0]:
            reps = positions.shape[0] // t.shape[0]
            if reps * t.shape[0] != positions.shape[0]:
                raise InputError(f"per-atom stiffness/centre has {t.shape[0]} rows, which does not divide "
                                 f"the {positions.shape[0]} atoms of the state")
            t = t.repeat(reps, 1)
        return t.to(positions.dtype)

    def per_atom(self, positions):
        k = self._broadcast(self.k, positions)
        d = positions - self._broadcast(self.center, positions)
        kd = k * d
        return 0.5 * (kd * d).sum(dim=1), kd.expand_as(d)

    def free_energy_difference(self, other: "Harmonic", kT: float, n_atoms: int = 1) -> float:
        """Exact A(other) - A(self) in eV for ``n_atoms`` atoms (configurational part)."""
        ka = torch.broadcast_to(self.k, torch.broadcast_shapes(self.k.shape, other.k.shape, (3,)))
        kb = torch.broadcast_to(other.k, ka.shape)
        per = 0.5 * kT * torch.log(kb / ka).sum()
        return float(per * (n_atoms if ka.ndim == 1 else 1))


class DoubleWell1D(_ModelSurface):
    """U = barrier ((x/x0)^2 - 1)^2 + tilt x + confine/2 (y^2 + z^2), per atom.

    Minima near x = +-x0, barrier ``barrier`` (eV) at x = 0 when tilt = 0.
    """

    def __init__(self, barrier=0.1, x0=1.0, tilt=0.0, confine=1.0):
        super().__init__()
        if not barrier > 0 or not x0 > 0:
            raise InputError("DoubleWell1D needs barrier > 0 (eV) and x0 > 0 (Angstrom)")
        self.barrier, self.x0, self.tilt, self.confine = float(barrier), float(x0), float(tilt), float(confine)

    def along_x(self, x):
        """Energy (eV) of the x part alone; handy for quadrature references."""
        u = (x / self.x0) ** 2 - 1.0
        return self.barrier * u * u + self.tilt * x

    def per_atom(self, positions):
        x, yz = positions[:, 0], positions[:, 1:]
        u = (x / self.x0) ** 2 - 1.0
        e = self.barrier * u * u + self.tilt * x + 0.5 * self.confine * (yz * yz).sum(dim=1)
        gx = 4.0 * self.barrier * u * x / self.x0**2 + self.tilt
        return e, torch.cat([gx[:, None], self.confine * yz], dim=1)


class DoubleWell2D(_ModelSurface):
    """U = barrier ((x/x0)^2 - 1)^2 + ky/2 (y - coupling x)^2 + confine/2 z^2, per atom.

    A double well in x whose valley in y bends with x (coupling, dimensionless),
    so a 1D PMF along x differs from a cut through the surface.
    """

    def __init__(self, barrier=0.1, x0=1.0, ky=1.0, coupling=0.5, confine=1.0):
        super().__init__()
        self.barrier, self.x0, self.ky = float(barrier), float(x0), float(ky)
        self.coupling, self.confine = float(coupling), float(confine)

    def surface(self, x, y):
        u = (x / self.x0) ** 2 - 1.0
        return self.barrier * u * u + 0.5 * self.ky * (y - self.coupling * x) ** 2

    def per_atom(self, positions):
        x, y, z = positions.unbind(dim=1)
        u = (x / self.x0) ** 2 - 1.0
        dy = y - self.coupling * x
        e = self.barrier * u * u + 0.5 * self.ky * dy * dy + 0.5 * self.confine * z * z
        gx = 4.0 * self.barrier * u * x / self.x0**2 - self.ky * dy * self.coupling
        return e, torch.stack([gx, self.ky * dy, self.confine * z], dim=1)


class MullerBrown(_ModelSurface):
    """The Müller–Brown surface on (x, y) of each atom, times ``scale`` (eV per MB unit).

    Standard parameters (Müller & Brown 1979); minima near (-0.558, 1.442),
    (0.623, 0.028), (-0.050, 0.467). ``confine`` (eV/A^2) holds z near 0.
    """

    A = (-200.0, -100.0, -170.0, 15.0)
    a = (-1.0, -1.0, -6.5, 0.7)
    b = (0.0, 0.0, 11.0, 0.6)
    c = (-10.0, -10.0, -6.5, 0.7)
    x0 = (1.0, 0.0, -0.5, -1.0)
    y0 = (0.0, 0.5, 1.5, 1.0)

    def __init__(self, scale=0.01, confine=1.0):
        super().__init__()
        if not scale > 0:
            raise InputError("MullerBrown scale must be > 0 (eV per Müller–Brown energy unit)")
        self.scale, self.confine = float(scale), float(confine)

    def surface(self, x, y):
        """Energy (eV) on the (x, y) plane; works on tensors or numpy arrays."""
        lib = torch if torch.is_tensor(x) else __import__("numpy")
        total = 0.0
        for A, a, b, c, x0, y0 in zip(self.A, self.a, self.b, self.c, self.x0, self.y0):
            dx, dy = x - x0, y - y0
            total = total + A * lib.exp(a * dx * dx + b * dx * dy + c * dy * dy)
        return self.scale * total

    def per_atom(self, positions):
        x, y, z = positions.unbind(dim=1)
        e = torch.zeros_like(x)
        gx = torch.zeros_like(x)
        gy = torch.zeros_like(x)
        for A, a, b, c, x0, y0 in zip(self.A, self.a, self.b, self.c, self.x0, self.y0):
            dx, dy = x - x0, y - y0
            term = A * torch.exp(a * dx * dx + b * dx * dy + c * dy * dy)
            e = e + term
            gx = gx + term * (2 * a * dx + b * dy)
            gy = gy + term * (b * dx + 2 * c * dy)
        e = self.scale * e + 0.5 * self.confine * z * z
        return e, torch.stack([self.scale * gx, self.scale * gy, self.confine * z], dim=1)


def _smooth_switch(r, r_on, r_off):
    """C2 switching function: 1 below r_on, 0 above r_off (quintic in between)."""
    t = ((r - r_on) / (r_off - r_on)).clamp(0.0, 1.0)
    return 1.0 - t**3 * (10.0 - 15.0 * t + 6.0 * t * t)


class _PairPotential(Potential):
    supports_stress = True

    def __init__(self, cutoff, neighbor_method="auto"):
        super().__init__()
        if not cutoff > 0:
            raise InputError(f"cutoff must be > 0 Angstrom, got {cutoff}")
        self.cutoff, self.neighbor_method = float(cutoff), neighbor_method

    def pair_energy(self, r):
        raise NotImplementedError

    def energy(self, state: State) -> torch.Tensor:
        pairs = neighbor_pairs(state, self.cutoff, self.neighbor_method)
        r = pairs.vectors(state.positions, state.cell, state.system_index).norm(dim=1)
        per_pair = self.pair_energy(r)
        out = torch.zeros(state.n_systems, dtype=per_pair.dtype, device=per_pair.device)
        return out.index_add_(0, state.system_index[pairs.i], per_pair)


class Morse(_PairPotential):
    """Morse pair potential U = D (1 - exp(-a (r - r0)))^2 - D over all pairs.

    D in eV, a in 1/Angstrom, r0 in Angstrom. Zero at dissociation, -D at r0.
    Smoothly switched off between ``0.9 * cutoff`` and ``cutoff``.
    """

    def __init__(self, D=1.0, a=1.5, r0=1.2, cutoff=8.0, neighbor_method="auto"):
        super().__init__(cutoff, neighbor_method)
        if not (D > 0 and a > 0 and r0 > 0):
            raise InputError("Morse needs D > 0 (eV), a > 0 (1/A), r0 > 0 (A)")
        self.D, self.a, self.r0 = float(D), float(a), float(r0)

    def pair_energy(self, r):
        x = 1.0 - torch.exp(-self.a * (r - self.r0))
        return (self.D * x * x - self.D) * _smooth_switch(r, 0.9 * self.cutoff, self.cutoff)


class LennardJones(_PairPotential):
    """Lennard-Jones 4 eps ((s/r)^12 - (s/r)^6) with a smooth (C2) cutoff.

    epsilon in eV, sigma in Angstrom (defaults: argon, 0.0104 eV, 3.40 A);
    switched smoothly to zero between ``switch_on * cutoff`` and ``cutoff``
    (default cutoff 2.5 sigma), so energy is conserved in MD. Periodic cells
    go through the vesin neighbour list.
    """

    def __init__(self, epsilon=0.0104, sigma=3.40, cutoff=None, switch_on=0.85, neighbor_method="auto"):
        cutoff = 2.5 * sigma if cutoff is None else cutoff
        super().__init__(cutoff, neighbor_method)
        if not (epsilon > 0 and sigma > 0 and 0 < switch_on < 1):
            raise InputError("LennardJones needs epsilon > 0 (eV), sigma > 0 (A), 0 < switch_on < 1")
        self.epsilon, self.sigma, self.switch_on = float(epsilon), float(sigma), float(switch_on)

    def pair_energy(self, r):
        sr6 = (self.sigma / r) ** 6
        return 4.0 * self.epsilon * (sr6 * sr6 - sr6) * _smooth_switch(r, self.switch_on * self.cutoff, self.cutoff)


__all__ = ["Harmonic", "DoubleWell1D", "DoubleWell2D", "MullerBrown", "Morse", "LennardJones"]
