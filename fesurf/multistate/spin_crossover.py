"""Spin-crossover thermodynamics: free energy between two spin states and T1/2.

The electronic surfaces of the two spin states (low spin LS, high spin HS) are
two Potentials. Their configurational free-energy difference comes from
lambda-window sampling of ``(1 - lambda) U_LS + lambda U_HS``
(:func:`fesurf.sampling.fep_sampling`) and pymbar (MBAR/BAR/EXP via
:func:`fesurf.estimators.delta_f`, or TI). Per-state electronic surfaces do not
contain the spin degeneracy, so the multiplicity term
``-kT ln((2 S_HS + 1) / (2 S_LS + 1))`` is added here by hand. ``T1/2`` is the
root of ``dA(T) = A_HS - A_LS``; with ``dA = dH - T dS`` fitted over
temperatures, ``T1/2 = dH / dS``.

Units: eV, K; free energies also reported in kT.

Example
-------
>>> from fesurf.multistate.spin_crossover import harmonic_spin_crossover_exact
>>> ex = harmonic_spin_crossover_exact(k_ls=10.0, k_hs=5.0, dE=0.1, n_dof=6, multiplicities=(1, 5))
>>> round(ex.t_half, 1)
314.6
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError
from ..potentials.base import Potential
from ..state import State
from ..units import KB

log = logging.getLogger(__name__)

__all__ = ["multiplicity_term", "ShiftedHarmonic", "spin_state_free_energy", "SpinFreeEnergy",
           "spin_crossover_curve", "SpinCrossoverCurve", "fit_t_half", "harmonic_spin_crossover_exact",
           "HarmonicSpinCrossover"]


def _mult(m, name):
    if int(m) != m or int(m) < 1:
        raise InputError(f"{name} must be a multiplicity 2S+1 >= 1 (an integer), got {m}")
    return int(m)


def multiplicity_term(temperature, multiplicities=(1, 5)):
    """``-kT ln(g_HS / g_LS)`` in eV for ``multiplicities = (2S_LS+1, 2S_HS+1)``.

    >>> round(multiplicity_term(300.0, (1, 5)) / (8.617333262e-5 * 300.0), 6)
    -1.609438
    """
    g_ls, g_hs = (_mult(m, "multiplicity") for m in multiplicities)
    t = np.asarray(temperature, dtype=np.float64)
    if np.any(~np.isfinite(t)) or np.any(t <= 0):
        raise InputError("temperature must be positive (K)")
    return -KB * t * math.log(g_hs / g_ls)


class ShiftedHarmonic(Potential):
    """``U = dE + 1/2 k sum |x - center|^2`` over all coordinates of each system (eV).

    A model spin-state surface: ``k`` eV/A^2, ``center`` A (scalar or [3]),
    ``dE`` eV (the electronic offset). Not rotation/translation invariant.

    >>> from fesurf.state import State
    >>> float(ShiftedHarmonic(2.0, 0.0, 0.5).energy(State(positions=[[1.0, 0, 0]], atomic_numbers=[1]))[0])
    1.5
    """

    translation_invariant = False
    rotation_invariant = False

    def __init__(self, k: float, center=0.0, dE: float = 0.0):
        super().__init__()
        if not k > 0:
            raise InputError("ShiftedHarmonic needs k > 0 (eV/A^2)")
        self.k, self.dE = float(k), float(dE)
        self.register_buffer("center", torch.as_tensor(center, dtype=torch.float64))

    def energy(self, state: State) -> torch.Tensor:
        d = state.positions - self.center.to(state.dtype)
        return 0.5 * self.k * state.sum_per_system((d**2).sum(dim=1)) + self.dE


@dataclass
class HarmonicSpinCrossover:
    """Exact classical answer for two harmonic spin-state surfaces (see :func:`harmonic_spin_crossover_exact`)."""

    dH: float  # eV
    dS: float  # eV/K (configurational + spin)
    t_half: float  # K

    def dA(self, temperature):
        """``A_HS - A_LS`` in eV at ``temperature`` (K)."""
        return self.dH - np.asarray(temperature, dtype=np.float64) * self.dS


def harmonic_spin_crossover_exact(k_ls: float, k_hs: float, dE: float, n_dof: int,
                                  multiplicities=(1, 5)) -> HarmonicSpinCrossover:
    """Classical exact ``dA(T) = dE + (n/2) kT ln(k_HS/k_LS) - kT ln(g_HS/g_LS)``.

    The centres (offsets) do not enter. ``n_dof``: number of harmonic coordinates.
    """
    g_ls, g_hs = (_mult(m, "multiplicity") for m in multiplicities)
    if not (k_ls > 0 and k_hs > 0) or int(n_dof) < 1:
        raise InputError("k_ls, k_hs must be > 0 (eV/A^2) and n_dof >= 1")
    dS = KB * (math.log(g_hs / g_ls) - 0.5 * n_dof * math.log(k_hs / k_ls))
    return HarmonicSpinCrossover(dH=float(dE), dS=dS, t_half=float(dE) / dS if dS != 0 else float("nan"))


@dataclass
class SpinFreeEnergy:
    """``A_HS - A_LS`` at one temperature: ``dA`` (eV) = ``dA_surface`` + ``spin_term``; sigma (eV)."""

    temperature: float
    dA: float
    sigma: float
    dA_surface: float
    spin_term: float
    method: str
    details: dict = field(default_factory=dict)

    @property
    def dA_kT(self) -> float:
        return self.dA / (KB * self.temperature)

    @property
    def sigma_kT(self) -> float:
        return self.sigma / (KB * self.temperature)


def spin_state_free_energy(potential_ls: Potential, potential_hs: Potential, state: State, temperature: float, *,
                           multiplicities=(1, 5), method: str = "MBAR", n_lambdas: int = 5, samples=None,
                           **sampling_kwargs) -> SpinFreeEnergy:
    """Free energy ``A_HS - A_LS`` (eV) at ``temperature`` (K), multiplicity term included.

    Samples lambda windows between the two surfaces with
    :func:`fesurf.sampling.fep_sampling` (keyword arguments go there: ``timestep``,
    ``friction``, ``seed``, ``n_equilibration``, ``n_production``, ``stride``...),
    or uses a SampleSet ``samples`` from such a run, and estimates with
    :func:`fesurf.estimators.delta_f` (``method`` "MBAR", "BAR", "EXP") or TI
    (``method="TI"``, trapezoid over the sampled lambdas).

    >>> # r = spin_state_free_energy(ls, hs, state, 300.0, multiplicities=(1, 5), seed=0)
    """
    from ..estimators import delta_f, ti
    from ..sampling.fep import fep_sampling

    if not temperature > 0:
        raise InputError("temperature must be positive (K)")
    method = method.upper()
    if samples is None:
        samples = fep_sampling(potential_ls, potential_hs, state, n_lambdas=n_lambdas, temperature=temperature,
                               **sampling_kwargs)
    if method == "TI":
        fe = ti(samples, method="trapezoid")
    else:
        fe = delta_f(samples, method, from_state=0, to_state=-1)
    kt = KB * temperature
    val = float(np.asarray(fe.values).reshape(-1)[0]) * kt if fe.unit == "kT" else float(fe.to("eV").values)
    unc = fe.uncertainties
    sig = float(np.asarray(unc).reshape(-1)[0]) * (kt if fe.unit == "kT" else 1.0) if unc is not None else float("nan")
    spin = float(multiplicity_term(temperature, multiplicities))
    return SpinFreeEnergy(temperature=float(temperature), dA=val + spin, sigma=sig, dA_surface=val, spin_term=spin,
                          method=method)


def fit_t_half(temperatures, dA, sigma=None):
    """Weighted fit ``dA(T) = dH - T dS`` (eV, K); returns ``(dH, dS, t_half, sigma_t_half)``.

    ``T1/2 = dH / dS`` is where the two spin states have equal free energy.

    >>> [round(v, 6) for v in fit_t_half([200.0, 400.0], [0.1, -0.1])[:3]]
    [0.3, 0.001, 300.0]
    """
    t = np.asarray(temperatures, dtype=np.float64)
    a = np.asarray(dA, dtype=np.float64)
    if t.shape != a.shape or t.size < 2:
        raise InputError("fit_t_half needs at least two temperatures with one dA each")
    w = np.ones_like(t) if sigma is None or not np.all(np.asarray(sigma) > 0) else 1.0 / np.asarray(sigma) ** 2
    X = np.stack([np.ones_like(t), -t], axis=1)
    cov = np.linalg.inv(X.T @ (w[:, None] * X))
    dH, dS = cov @ (X.T @ (w * a))
    if dS == 0:
        raise InputError("dA(T) has no temperature dependence; there is no T1/2")
    th = dH / dS
    # delta method on T1/2 = dH/dS (covariance only meaningful with sigma)
    jac = np.array([1.0 / dS, -dH / dS**2])
    sig = float(np.sqrt(jac @ cov @ jac)) if sigma is not None else float("nan")
    return float(dH), float(dS), float(th), sig


@dataclass
class SpinCrossoverCurve:
    """dA(T) (eV) at several temperatures, its linear fit and T1/2 (K)."""

    points: list
    dH: float
    dS: float
    t_half: float
    sigma_t_half: float

    def dA(self, temperature):
        """Fitted ``A_HS - A_LS`` (eV) at ``temperature`` (K)."""
        return self.dH - np.asarray(temperature, dtype=np.float64) * self.dS

    def plot(self, ax=None, exact=None):
        """Plot dA(T) in kJ/mol with error bars (and ``exact`` callable T -> eV); returns the Axes."""
        from matplotlib.figure import Figure

        from ..units import convert

        if ax is None:
            ax = Figure(figsize=(5, 3.6)).add_subplot()
        t = np.array([p.temperature for p in self.points])
        ax.errorbar(t, convert(np.array([p.dA for p in self.points]), "eV", "kJ/mol"),
                    yerr=convert(np.array([p.sigma for p in self.points]), "eV", "kJ/mol"), fmt="o", label="sampled")
        grid = np.linspace(t.min() * 0.8, t.max() * 1.2, 100)
        ax.plot(grid, convert(self.dA(grid), "eV", "kJ/mol"), "-", label="fit dH - T dS")
        if exact is not None:
            ax.plot(grid, convert(exact(grid), "eV", "kJ/mol"), "k--", label="exact")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel("T / K")
        ax.set_ylabel("A_HS - A_LS / kJ/mol")
        ax.legend()
        return ax


def spin_crossover_curve(potential_ls: Potential, potential_hs: Potential, state: State, temperatures, *,
                         multiplicities=(1, 5), seed: int = 0, **kwargs) -> SpinCrossoverCurve:
    """dA(T) at each temperature (K) by :func:`spin_state_free_energy` and ``T1/2`` from the fit.

    Keyword arguments go to :func:`spin_state_free_energy`; temperature ``i``
    uses seed ``seed + 1000 i``.

    >>> # curve = spin_crossover_curve(ls, hs, state, [260, 300, 340], n_production=20000, timestep=2.0)
    """
    temps = [float(t) for t in temperatures]
    if len(temps) < 2:
        raise InputError("give at least two temperatures (K) to locate T1/2")
    pts = [spin_state_free_energy(potential_ls, potential_hs, state, t, multiplicities=multiplicities,
                                  seed=seed + 1000 * i, **kwargs) for i, t in enumerate(temps)]
    dH, dS, th, sth = fit_t_half(temps, [p.dA for p in pts], [p.sigma for p in pts])
    log.info("spin crossover: dH = %.4f eV, dS = %.3e eV/K, T1/2 = %.1f +- %.1f K", dH, dS, th, sth)
    return SpinCrossoverCurve(points=pts, dH=dH, dS=dS, t_half=th, sigma_t_half=sth)
