"""Harmonic restraints and flat-bottom walls on CVs (PLUMED conventions).

- :class:`RESTRAINT`: ``0.5 * kappa * (s - at)^2`` summed over CVs (PLUMED
  RESTRAINT; periodic CVs use the minimum-image difference).
- :class:`UPPER_WALLS` / :class:`LOWER_WALLS`: ``kappa * ((s - at +- offset)/eps)^exp``
  beyond ``at`` and zero inside (PLUMED UPPER_WALLS/LOWER_WALLS: no 0.5).

Units: ``at`` in the CV's unit (Angstrom or rad), ``kappa`` in eV per CV
unit^2 (RESTRAINT) or eV (walls, with eps in CV units). Every parameter is a
number, one value per CV, or one row per replica (umbrella windows).

Example
-------
>>> import torch
>>> from fesurf.state import State
>>> from fesurf.cv import POSITION
>>> s = State(positions=[[0.5, 0, 0], [0.5, 0, 0]], atomic_numbers=[1, 1], system_index=[0, 1])
>>> RESTRAINT(POSITION(0, "x"), at=[0.0, 1.0], kappa=[2.0, 4.0]).energy(s).tolist()
[0.25, 0.5]
"""
from __future__ import annotations

import torch

from ..errors import InputError
from .base import CVBias, per_window


class RESTRAINT(CVBias):
    """Harmonic restraint ``U = sum_d 0.5 kappa_d (s_d - at_d)^2`` (eV), one row of at/kappa per window.

    Parameters
    ----------
    cvs : CV, spec dict, or list of them
    at : centres, CV units; number, [n_cvs], [n_windows] (one CV) or [n_windows, n_cvs]
    kappa : force constants, eV / CV unit^2, same shapes, >= 0

    :meth:`set_parameters` changes them in place (Hamiltonian replica exchange).

    >>> from fesurf.cv import DISTANCE
    >>> RESTRAINT(DISTANCE([0, 1]), at=[1.0, 1.2], kappa=50.0).parameters_spec()["at"]
    [[1.0], [1.2]]
    """

    _param_names = ("at", "kappa")

    def __init__(self, cvs, at, kappa):
        super().__init__(cvs)
        self.register_buffer("at", per_window(at, self.n_cvs, "RESTRAINT at"))
        self.register_buffer("kappa", per_window(kappa, self.n_cvs, "RESTRAINT kappa", positive=True))
        self._check_rows()

    def _check_rows(self):
        na, nk = self.at.shape[0], self.kappa.shape[0]
        if na != nk and 1 not in (na, nk):
            raise InputError(f"RESTRAINT has {na} centres but {nk} force constants; give one per window or one shared")

    def set_parameters(self, at=None, kappa=None):
        """Replace centres and/or force constants (same conventions as the constructor)."""
        if at is not None:
            self.at = per_window(at, self.n_cvs, "RESTRAINT at")
        if kappa is not None:
            self.kappa = per_window(kappa, self.n_cvs, "RESTRAINT kappa", positive=True)
        self._check_rows()

    def energy_from_cv(self, s):
        d = self.difference(s, self.at.to(s.dtype))
        return (0.5 * self.kappa.to(s.dtype) * d * d).sum(dim=-1)

    def energy_and_cv_gradient(self, s):
        """``(V, dV/ds = kappa (s - at))`` in closed form."""
        d = self.difference(s, self.at.to(s.dtype))
        kappa = self.kappa.to(s.dtype)
        return (0.5 * kappa * d * d).sum(dim=-1), kappa * d


class _Walls(CVBias):
    _param_names = ("at", "kappa", "exp", "eps", "offset")
    _sign = 1.0

    def __init__(self, cvs, at, kappa, exp=2.0, eps=1.0, offset=0.0):
        super().__init__(cvs)
        name = type(self).__name__
        self.register_buffer("at", per_window(at, self.n_cvs, f"{name} at"))
        self.register_buffer("kappa", per_window(kappa, self.n_cvs, f"{name} kappa", positive=True))
        self.register_buffer("exp", per_window(exp, self.n_cvs, f"{name} exp", positive=True, allow_zero=False))
        self.register_buffer("eps", per_window(eps, self.n_cvs, f"{name} eps", positive=True, allow_zero=False))
        self.register_buffer("offset", per_window(offset, self.n_cvs, f"{name} offset"))
        rows = {getattr(self, n).shape[0] for n in self._param_names} - {1}
        if len(rows) > 1:
            raise InputError(f"{name} parameters have different numbers of windows {sorted(rows)}")
        if (self.exp < 1).any():
            raise InputError(f"{name} exp must be >= 1 so the wall is continuous with zero force at its edge")

    def energy_from_cv(self, s):
        d = self.difference(s, self.at.to(s.dtype))
        scaled = self._sign * (d + self._sign * self.offset) / self.eps
        outside = torch.clamp(scaled, min=0.0)
        return (self.kappa * outside**self.exp).sum(dim=-1)


class UPPER_WALLS(_Walls):
    """Wall above ``at``: ``kappa ((s - at + offset)/eps)^exp`` where positive, else 0 (eV; PLUMED UPPER_WALLS).

    >>> from fesurf.state import State
    >>> from fesurf.cv import POSITION
    >>> s = State(positions=[[2.0, 0, 0], [0.0, 0, 0]], atomic_numbers=[1, 1], system_index=[0, 1])
    >>> UPPER_WALLS(POSITION(0, "x"), at=1.0, kappa=3.0).energy(s).tolist()
    [3.0, 0.0]
    """

    _sign = 1.0


class LOWER_WALLS(_Walls):
    """Wall below ``at``: ``kappa ((at - s + offset)/eps)^exp`` where positive, else 0 (eV; PLUMED LOWER_WALLS).

    >>> from fesurf.state import State
    >>> from fesurf.cv import POSITION
    >>> s = State(positions=[[-1.0, 0, 0], [0.0, 0, 0]], atomic_numbers=[1, 1], system_index=[0, 1])
    >>> LOWER_WALLS(POSITION(0, "x"), at=0.0, kappa=3.0, exp=4).energy(s).tolist()
    [3.0, 0.0]
    """

    _sign = -1.0
