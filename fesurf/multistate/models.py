"""Analytic two-state diabatic models with exact answers.

Each is a :class:`~fesurf.surrogates.diabatic.DiabaticHamiltonian`, so the same
eigen step, Hellmann-Feynman forces, NACs and :class:`AdiabaticPotential` as
the learned :class:`DiabaticModel` apply. Coordinates are the Cartesian
components of each atom (one particle per system is the usual use); every
atom contributes its own matrix and the matrices add.

- :class:`LinearVibronicCoupling` (E x e Jahn-Teller): ``H = k rho^2/2 + g [[x, y], [y, -x]]``,
  ``E = k rho^2 / 2 -+ g rho``, ``|d01| = 1 / (2 rho)``.
- :class:`DisplacedHarmonic` (Marcus): ``H11 = k (x + a)^2 / 2``, ``H22 = k (x - a)^2 / 2 + dG``, ``H12 = V``.
- :class:`TullySimpleAvoidedCrossing`: Tully's model 1 with lengths in A and energies in eV.

Units: positions A, energies eV, k in eV/A^2, g in eV/A.

Example
-------
>>> from fesurf.state import State
>>> from fesurf.multistate.models import LinearVibronicCoupling
>>> s = State(positions=[[0.3, 0.4, 0.0]], atomic_numbers=[1])
>>> [round(v, 6) for v in LinearVibronicCoupling(k=2.0, g=0.5).adiabatic_energies(s)[0].tolist()]
[0.0, 0.5]
"""
from __future__ import annotations

import math

import torch

from ..errors import InputError
from ..state import State
from ..surrogates.diabatic import DiabaticHamiltonian

__all__ = ["LinearVibronicCoupling", "DisplacedHarmonic", "TullySimpleAvoidedCrossing"]


def _positive(name, v):
    v = float(v)
    if not math.isfinite(v) or v <= 0:
        raise InputError(f"{name} must be a positive finite number, got {v}")
    return v


class LinearVibronicCoupling(DiabaticHamiltonian):
    """E x e linear vibronic coupling model on the (x, y) of each atom.

    ``H = (k/2)(x^2 + y^2) + (kz/2) z^2 + g [[x, y], [y, -x]]`` (eV). Exact:
    ``E_-/+ = k rho^2/2 -+ g rho``, conical intersection at rho = 0 with slope
    ``g``, ``|d01| = 1/(2 rho)``.

    >>> LinearVibronicCoupling(k=2.0, g=0.5).exact_energies(torch.tensor([0.5])).tolist()
    [[0.0, 0.5]]
    """

    translation_invariant = False
    rotation_invariant = False

    def __init__(self, k: float = 2.0, g: float = 0.5, kz: float = 1.0):
        super().__init__()
        self.k, self.g, self.kz = _positive("k", k), _positive("g", g), float(kz)
        self.n_states = 2

    def diabatic_matrix(self, state: State) -> torch.Tensor:
        x, y, z = state.positions.unbind(dim=1)
        base = 0.5 * self.k * (x**2 + y**2) + 0.5 * self.kz * z**2
        m = torch.stack([torch.stack([base + self.g * x, self.g * y], -1),
                         torch.stack([self.g * y, base - self.g * x], -1)], -2)
        return state.sum_per_system(m)

    def exact_energies(self, rho: torch.Tensor) -> torch.Tensor:
        """``[n, 2]`` exact adiabatic energies (eV) at radius ``rho`` (A), z = 0."""
        rho = torch.as_tensor(rho, dtype=torch.float64)
        b = 0.5 * self.k * rho**2
        return torch.stack([b - self.g * rho, b + self.g * rho], dim=-1)


class DisplacedHarmonic(DiabaticHamiltonian):
    """Marcus two-state model along x (y, z confined harmonically with ``k_perp``).

    ``H11 = k (x + a)^2/2``, ``H22 = k (x - a)^2/2 + dG``, ``H12 = V`` (eV, A).
    The reorganisation energy is ``lambda = 2 k a^2``.

    >>> DisplacedHarmonic(k=4.0, a=0.25, coupling=0.02).reorganization_energy
    0.5
    """

    translation_invariant = False
    rotation_invariant = False

    def __init__(self, k: float = 4.0, a: float = 0.25, dG: float = 0.0, coupling: float = 0.02, k_perp: float = 4.0):
        super().__init__()
        self.k, self.a = _positive("k", k), float(a)
        self.dG, self.coupling, self.k_perp = float(dG), float(coupling), float(k_perp)
        self.n_states = 2

    @property
    def reorganization_energy(self) -> float:
        return 2.0 * self.k * self.a**2

    def diabatic_1d(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, 2, 2]`` diabatic matrix at coordinates ``x`` (A) with y = z = 0."""
        x = torch.as_tensor(x, dtype=torch.float64)
        h11 = 0.5 * self.k * (x + self.a) ** 2
        h22 = 0.5 * self.k * (x - self.a) ** 2 + self.dG
        v = torch.full_like(x, self.coupling)
        return torch.stack([torch.stack([h11, v], -1), torch.stack([v, h22], -1)], -2)

    def lower_adiabat_1d(self, x) -> torch.Tensor:
        """Exact lower adiabatic energy (eV) along x with y = z = 0."""
        h = self.diabatic_1d(x)
        m = 0.5 * (h[:, 0, 0] + h[:, 1, 1])
        return m - torch.sqrt((0.5 * (h[:, 0, 0] - h[:, 1, 1])) ** 2 + h[:, 0, 1] ** 2)

    def exact_pmf(self, edges, temperature: float, n_quad: int = 64):
        """Exact PMF (kT, min 0) of the lower adiabat along x, averaged over bins with ``edges`` (A).

        The y, z confinement adds the same term to both diabats, so it separates
        and the PMF is ``-ln( (1/h) int_bin exp(-E_-(x)/kT) dx )`` by Gauss-Legendre
        quadrature (``n_quad`` nodes per bin). Comparable to a histogram PMF.
        """
        import numpy as np

        from ..units import KB

        edges = np.asarray(edges, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise InputError("edges must be an increasing 1D array of at least two bin edges (A)")
        nodes, weights = np.polynomial.legendre.leggauss(n_quad)
        lo, hi = edges[:-1, None], edges[1:, None]
        x = 0.5 * (hi - lo) * nodes[None, :] + 0.5 * (hi + lo)
        e = self.lower_adiabat_1d(torch.as_tensor(x.reshape(-1))).numpy().reshape(x.shape) / (KB * temperature)
        shift = e.min()
        f = -np.log(0.5 * (np.exp(-(e - shift)) * weights[None, :]).sum(axis=1)) + shift
        return f - f.min()

    def diabatic_matrix(self, state: State) -> torch.Tensor:
        x, y, z = state.positions.unbind(dim=1)
        perp = 0.5 * self.k_perp * (y**2 + z**2)
        h11 = 0.5 * self.k * (x + self.a) ** 2 + perp
        h22 = 0.5 * self.k * (x - self.a) ** 2 + self.dG + perp
        # the constant coupling and dG belong to each system once, not once per atom
        count = state.sum_per_system(torch.ones_like(x))
        m = torch.stack([torch.stack([h11, torch.zeros_like(x)], -1), torch.stack([torch.zeros_like(x), h22], -1)], -2)
        h = state.sum_per_system(m)
        corr = torch.zeros_like(h)
        corr[:, 1, 1] = -self.dG * (count - 1)
        corr[:, 0, 1] = corr[:, 1, 0] = self.coupling
        return h + corr


class TullySimpleAvoidedCrossing(DiabaticHamiltonian):
    """Tully's simple avoided crossing (model 1) along x, in eV and A.

    ``V11 = A (1 - exp(-B x))`` for x > 0, ``-A (1 - exp(B x))`` for x < 0;
    ``V22 = -V11``; ``V12 = C exp(-D x^2)``. Defaults are Tully's atomic-unit
    values converted (A = 0.01 Ha, B = 1.6 / bohr, C = 0.005 Ha, D = 1.0 / bohr^2).
    """

    translation_invariant = False
    rotation_invariant = False

    def __init__(self, A=None, B=None, C=None, D=None):
        super().__init__()
        from ase.units import Bohr, Hartree

        self.A = 0.01 * Hartree if A is None else float(A)
        self.B = 1.6 / Bohr if B is None else float(B)
        self.C = 0.005 * Hartree if C is None else float(C)
        self.D = 1.0 / Bohr**2 if D is None else float(D)
        self.n_states = 2

    def diabatic_matrix(self, state: State) -> torch.Tensor:
        x = state.positions[:, 0]
        v11 = torch.sign(x) * self.A * (1.0 - torch.exp(-self.B * x.abs()))
        v12 = self.C * torch.exp(-self.D * x**2)
        m = torch.stack([torch.stack([v11, v12], -1), torch.stack([v12, -v11], -1)], -2)
        return state.sum_per_system(m)
