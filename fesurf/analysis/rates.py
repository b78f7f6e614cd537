"""Rates from barriers, and what a barrier error does to a rate.

* :func:`eyring_rate`: k = kappa (kB T / h) exp(-dG/kT), 1/s.
* :func:`tst_rate_from_pmf`: 1D transition-state theory on a PMF with the
  CV's effective mass, k = sqrt(kT / (2 pi m_s)) exp(-F(s_TS)/kT) / int_R exp(-F/kT) ds.
* :func:`rate_error_factor`: a barrier error d multiplies the rate by exp(d/kT).
* :func:`barrier_precision_for_rate`: the inverse, the barrier precision a rate
  tolerance demands: d = kT ln(1 + tolerance).

Example
-------
>>> round(eyring_rate(0.0, 298.0, unit="kcal/mol") / 1e12, 2)     # kB T / h at 298 K, 1/ps
6.21
>>> round(barrier_precision_for_rate(0.20, 300.0, unit="kcal/mol"), 3)
0.109
>>> round(rate_error_factor(1.364, 298.0, unit="kcal/mol"), 1)   # 1.364 kcal/mol: one decade
10.0
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..units import H_PLANCK_EV_S, KB, MV2_TO_EV, convert
from .barriers import basin_free_energy


def _check_T(temperature):
    if temperature is None or not np.all(np.asarray(temperature) > 0):
        raise InputError("temperature must be given in K and be positive")


def eyring_rate(barrier, temperature, unit: str = "kcal/mol", transmission: float = 1.0):
    """Eyring/TST rate constant (1/s) for a free-energy barrier in ``unit`` at ``temperature`` (K).

    ``transmission`` is the coefficient kappa (0 < kappa <= 1; e.g. from
    recrossing or tunnelling corrections, > 1 allowed for tunnelling).
    Works on arrays.
    """
    _check_T(temperature)
    if not transmission > 0:
        raise InputError("transmission coefficient must be > 0")
    dg_kT = convert(np.asarray(barrier, dtype=float), unit, "kT", temperature=temperature)
    prefactor = KB * np.asarray(temperature, dtype=float) / H_PLANCK_EV_S
    return transmission * prefactor * np.exp(-dg_kT)


def rate_error_factor(barrier_error, temperature, unit: str = "kcal/mol"):
    """Factor exp(d/kT) by which a barrier error d (in ``unit``) changes the rate.

    >>> round(rate_error_factor(0.5, 298.0), 1), round(rate_error_factor(2.0, 298.0))
    (2.3, 29)
    """
    _check_T(temperature)
    return np.exp(np.abs(convert(np.asarray(barrier_error, dtype=float), unit, "kT", temperature=temperature)))


def barrier_precision_for_rate(tolerance, temperature, unit: str = "kcal/mol"):
    """Barrier precision (in ``unit``) that keeps a rate within a fractional ``tolerance``.

    A rate within 20% (tolerance 0.2) at 300 K needs the barrier to about
    0.109 kcal/mol: d = kT ln(1 + tolerance).
    """
    _check_T(temperature)
    tol = np.asarray(tolerance, dtype=float)
    if np.any(tol <= 0):
        raise InputError("tolerance is a fraction > 0 (0.2 for 20%)")
    return convert(np.log1p(tol), "kT", unit, temperature=temperature)


def cv_effective_mass(cv_gradient, masses) -> float:
    """Effective mass (amu) of a CV: 1/m_s = sum_i |ds/dx_i|^2 / m_i.

    ``cv_gradient`` [n_atoms, 3] (CV units per Angstrom), ``masses`` [n_atoms] amu.
    For s = d(O1-H) - d(O2-H) at a symmetric geometry, only H and the O atoms contribute.
    """
    g = np.asarray(cv_gradient, dtype=float)
    m = np.asarray(masses, dtype=float)
    inv = np.sum((g * g).sum(axis=1) / m)
    if not inv > 0:
        raise InputError("the CV gradient is zero: the CV does not move with the atoms")
    return float(1.0 / inv)


def tst_rate_from_pmf(pmf, effective_mass: float, reactant=None, product=None, transmission: float = 1.0) -> float:
    """1D TST rate (1/s) out of the reactant basin of a PMF.

    k = kappa * sqrt(kT / (2 pi m_s)) * exp(-F(s_TS)/kT) / int_R exp(-F(s)/kT) ds,
    with the CV in Angstrom (or its own length unit) and ``effective_mass``
    in amu (see :func:`cv_effective_mass`). Equivalent to Eyring with
    dG = F(s_TS) - A_R - kT ln( (h / kT) sqrt(kT / (2 pi m_s)) / 1 A ).
    """
    from .barriers import _profile_kT, barrier as _barrier

    b = _barrier(pmf, reactant, product)
    grid, values, _ = _profile_kT(pmf)
    mask = (grid >= b.reactant_range[0]) & (grid <= b.reactant_range[1]) & (grid != b.ts_location)
    a_r, _ = basin_free_energy(grid, values, mask)
    i_ts = int(np.argmin(np.abs(grid - b.ts_location)))
    kt = KB * pmf.temperature
    speed = np.sqrt(kt / (2 * np.pi * effective_mass * MV2_TO_EV))  # A/fs
    return float(transmission * speed * 1e15 * np.exp(-(values[i_ts] - a_r)))
