"""Reaction and activation free energies from a 1D PMF.

A basin's free energy is integrated over the basin, not read at its minimum:

    A_X = -kT ln( sum_{s in X} exp(-F(s)/kT) ds / l )

with ``l`` a length scale in CV units (default 1; it cancels in the reaction
free energy A_P - A_R, and in a rate it is paired with the CV's velocity, see
:mod:`fesurf.analysis.rates`). The transition state is the CV maximum of F
between the two basins; the activation free energy is F(s_TS) - A_R.

Uncertainties come from the PMF's per-point 1σ: the basin free energy's
sensitivity to F(s) is its Boltzmann weight p(s) within the basin, so
σ(A_X)^2 = sum p(s)^2 σ(s)^2 (bins taken as independent), and the barrier's σ
adds σ(F(s_TS)) in quadrature. With bootstrap realisations of the PMF
(``pmf_samples``) the spread of the per-realisation barriers is used instead.

Example
-------
>>> import numpy as np
>>> from fesurf.estimators import FreeEnergy
>>> s = np.linspace(-2, 2, 401)
>>> pmf = FreeEnergy(6 * (s**2 - 1) ** 2, np.full(s.size, 0.05), unit="kT", temperature=300.0, grid=[s])
>>> b = barrier(pmf)
>>> round(b.ts_location, 2), b.activation.unit
(0.0, 'kT')
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import argrelextrema

from ..errors import InputError
from ..estimators.free_energy import FreeEnergy
from ..units import convert


@dataclass
class Barrier:
    """Result of :func:`barrier`: free energies with 1σ, in the PMF's unit."""

    reaction: FreeEnergy  # A_P - A_R
    activation: FreeEnergy  # F(TS) - A_R
    reverse_activation: FreeEnergy  # F(TS) - A_P
    ts_location: float
    reactant_range: tuple
    product_range: tuple
    unit: str
    temperature: float

    def to(self, unit: str) -> "Barrier":
        return Barrier(self.reaction.to(unit), self.activation.to(unit), self.reverse_activation.to(unit),
                       self.ts_location, self.reactant_range, self.product_range, unit, self.temperature)

    def to_dict(self) -> dict:
        return {
            "unit": self.unit, "temperature_K": self.temperature, "ts_location": self.ts_location,
            "reactant_range": list(self.reactant_range), "product_range": list(self.product_range),
            "reaction": self.reaction.value, "reaction_sigma": self.reaction.error,
            "activation": self.activation.value, "activation_sigma": self.activation.error,
            "reverse_activation": self.reverse_activation.value,
            "reverse_activation_sigma": self.reverse_activation.error,
        }

    def __str__(self):
        def f(fe):
            return f"{fe.value:.3f} ± {fe.error:.3f}" if fe.error is not None else f"{fe.value:.3f}"

        return (f"activation {f(self.activation)} {self.unit}, reverse {f(self.reverse_activation)} {self.unit}, "
                f"reaction {f(self.reaction)} {self.unit} (TS at {self.ts_location:.3f})")


def _profile_kT(pmf: FreeEnergy):
    if not isinstance(pmf, FreeEnergy) or not pmf.is_profile or pmf.values.ndim != 1 or pmf.grid is None:
        raise InputError("barrier analysis needs a 1D FreeEnergy profile with a grid (a PMF along one CV)")
    if pmf.temperature is None:
        raise InputError("the PMF has no temperature; set FreeEnergy(temperature=...) in K")
    fe = pmf.to("kT")
    return fe.grid[0], fe.values, fe.uncertainties


def find_basins(grid, values):
    """Two deepest minima and the highest point between them: (i_R, i_TS, i_P) indices, R left of P."""
    ok = np.isfinite(values)
    if ok.sum() < 5:
        raise InputError("the PMF has fewer than 5 points with data; sample more or use fewer bins")
    v = np.where(ok, values, np.nanmax(values) + 1e3)
    padded = np.concatenate([[np.inf], v, [np.inf]])
    minima = [i - 1 for i in argrelextrema(padded, np.less_equal)[0] if 1 <= i <= len(v)]
    minima = sorted(set(minima), key=lambda i: v[i])
    if len(minima) < 2:
        raise InputError("the PMF has a single minimum: give reactant= and product= ranges explicitly")
    best = None
    for a in minima:  # the pair of minima separated by the largest barrier, deepest first
        for b in minima:
            if b <= a:
                continue
            ts = a + int(np.argmax(v[a:b + 1]))
            height = v[ts] - max(v[a], v[b])
            if best is None or height > best[0] + 1e-12:
                best = (height, a, ts, b)
    if best is None or best[0] <= 0:
        raise InputError("no barrier separates the PMF's minima; give reactant= and product= ranges explicitly")
    return best[1], best[2], best[3]


def basin_free_energy(grid, values, mask, kT_unit_sigma=None, length_scale: float = 1.0):
    """-ln( sum_{mask} exp(-F) ds / l ) in kT, and its 1σ from per-point σ (kT)."""
    f = values[mask]
    ds = np.gradient(grid)[mask]
    ok = np.isfinite(f)
    if not ok.any():
        raise InputError("a basin has no PMF points with data")
    fmin = f[ok].min()
    w = np.exp(-(f[ok] - fmin)) * ds[ok] / length_scale
    a = fmin - np.log(w.sum())
    sigma = None
    if kT_unit_sigma is not None:
        p = w / w.sum()
        sigma = float(np.sqrt(np.sum((p * np.nan_to_num(kT_unit_sigma[mask][ok])) ** 2)))
    return float(a), sigma


def barrier(pmf: FreeEnergy, reactant=None, product=None, length_scale: float = 1.0, pmf_samples=None) -> Barrier:
    """Reaction and activation free energies from a 1D PMF (in the PMF's unit).

    Parameters
    ----------
    pmf : FreeEnergy
        1D profile with grid and temperature.
    reactant, product : (lo, hi) in CV units, optional
        Basin ranges. Default: the two minima separated by the largest barrier;
        each basin extends from the transition state to the end of the data.
    length_scale : float
        ``l`` in the basin integral, CV units (cancels in reaction free energies).
    pmf_samples : array [n_realisations, n_grid], optional
        Bootstrap realisations of the PMF values (same unit); if given, the
        reported σ is their spread.
    """
    grid, values, sigma = _profile_kT(pmf)
    if (reactant is None) != (product is None):
        raise InputError("give both reactant= and product= ranges, or neither")
    if reactant is None:
        i_r, i_ts, i_p = find_basins(grid, values)
        reactant = (float(grid[0]), float(grid[i_ts]))
        product = (float(grid[i_ts]), float(grid[-1]))
        r_mask = np.arange(grid.size) < i_ts
        p_mask = np.arange(grid.size) > i_ts
    else:
        reactant, product = tuple(map(float, reactant)), tuple(map(float, product))
        if reactant[0] >= reactant[1] or product[0] >= product[1]:
            raise InputError("basin ranges must be (lo, hi) with lo < hi, in CV units")
        r_mask = (grid >= reactant[0]) & (grid <= reactant[1])
        p_mask = (grid >= product[0]) & (grid <= product[1])
        lo, hi = sorted([reactant, product])
        between = (grid > lo[1]) & (grid < hi[0])
        if not between.any():
            between = (grid >= lo[1]) & (grid <= hi[0])
        if not between.any() or not np.isfinite(values[between]).any():
            raise InputError("no PMF points with data lie between the reactant and product ranges")
        idx = np.nonzero(between)[0]
        i_ts = int(idx[np.nanargmax(values[idx])])
    if not r_mask.any() or not p_mask.any():
        raise InputError("a basin range contains no grid points of the PMF")

    def compute(vals, sig):
        a_r, s_r = basin_free_energy(grid, vals, r_mask, sig, length_scale)
        a_p, s_p = basin_free_energy(grid, vals, p_mask, sig, length_scale)
        f_ts = vals[i_ts]
        s_ts = None if sig is None else float(np.nan_to_num(sig[i_ts]))
        return a_r, a_p, f_ts, s_r, s_p, s_ts

    a_r, a_p, f_ts, s_r, s_p, s_ts = compute(values, sigma)
    T = pmf.temperature

    def err(*parts):
        return None if any(p is None for p in parts) else float(np.sqrt(sum(p * p for p in parts)))

    e_react, e_act, e_rev = err(s_r, s_p), err(s_r, s_ts), err(s_p, s_ts)
    if pmf_samples is not None:
        samples = np.asarray(pmf_samples, dtype=float)
        if samples.ndim != 2 or samples.shape[1] != grid.size:
            raise InputError(f"pmf_samples must have shape [n_realisations, {grid.size}]")
        factor = convert(1.0, pmf.unit, "kT", temperature=T)
        res = np.array([compute(row * factor, None)[:3] for row in samples])
        e_react = float(np.std(res[:, 1] - res[:, 0], ddof=1))
        e_act = float(np.std(res[:, 2] - res[:, 0], ddof=1))
        e_rev = float(np.std(res[:, 2] - res[:, 1], ddof=1))

    def fe(v, e, what):
        return FreeEnergy(v, e, unit="kT", temperature=T, method=f"{what} from {pmf.method or 'PMF'}").to(pmf.unit)

    return Barrier(fe(a_p - a_r, e_react, "reaction"), fe(f_ts - a_r, e_act, "activation"),
                   fe(f_ts - a_p, e_rev, "reverse activation"), float(grid[i_ts]), reactant, product, pmf.unit, T)
