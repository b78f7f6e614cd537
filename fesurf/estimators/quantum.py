"""Quantum (path-integral) estimators: energies, heat capacity, ring-polymer size, isotope free
energies and kinetic isotope effects, each with a standard error.

Inputs are the per-frame records of :class:`fesurf.md.ring_polymer.RingPolymerReporter`
(``arrays()``: ``[n_frames, n_rings, ...]`` numpy arrays) or PMFs from centroid umbrella sampling.
Standard errors come from the statistical inefficiency g of each ring polymer's time series
(``pymbar.timeseries.statistical_inefficiency``): SE^2 = sum_w var_w g_w / n_w / W^2 over the W
independent ring polymers pooled into one estimate.

Estimators (all at the discretisation P of the run; see ``docs/notes/pimd.md``):

- kinetic energy: primitive K_T = 3P/2 kT - (1/P) sum_j 1/2 m w_P^2 |q_j - q_j+1|^2 and centroid
  virial K_V = 3/2 kT - 1/(2P) sum_j (q_j - c) . F_j, per atom and total;
- potential (1/P) sum_j V(q_j) and total energy K + V by either kinetic estimator;
- heat capacity (k_B units): thermodynamic C_TT = beta^2 Var(e_T) + 3NP/2 - 2 beta <S>/P (Herman,
  Bruskin, Berne, JCP 76, 5150 (1982)) and thermodynamic-virial C_TV = beta^2 Cov(e_T, e_V) + 3N/2
  (Glaesemann and Fried, JCP 116, 5951 (2002)), e_T / e_V the primitive / virial energies and S the
  spring energy;
- radius of gyration of each atom's ring polymer;
- isotope free energies: mass thermodynamic integration, dA/dm = -<K>/m, by Gauss-Legendre in a
  mass parameter (:func:`mass_ti_nodes`, :func:`mass_ti_free_energy`), and the scaled-coordinates
  free-energy perturbation from a single simulation (Ceriotti and Markland, JCP 138, 014112 (2013);
  :func:`scaled_coordinates_free_energy`);
- kinetic isotope effects by centroid quantum transition-state theory from two centroid PMFs
  (Gillan 1987; Voth, Chandler, Miller, JCP 91, 7749 (1989); :func:`kinetic_isotope_effect`).

Units: energies eV unless a FreeEnergy says otherwise; temperature K; masses amu.

Example
-------
>>> import numpy as np
>>> nodes = mass_ti_nodes(1.008, 2.014, n_nodes=3)
>>> nodes.masses.round(3).tolist()
[1.078, 1.383, 1.839]
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np

from .._pymbar import timeseries
from ..errors import InputError
from ..units import KB
from .diagnostics import EstimatorWarning, kish_ess
from .free_energy import FreeEnergy

log = logging.getLogger(__name__)

__all__ = ["Estimate", "QuantumEstimates", "pooled_mean", "quantum_estimates", "MassNodes", "mass_ti_nodes",
           "mass_ti_free_energy", "scaled_coordinates_free_energy", "IsotopeEffect", "kinetic_isotope_effect",
           "harmonic_ring_polymer"]


class IsotopeReweightingWarning(EstimatorWarning):
    """The scaled-coordinates weights are dominated by few frames: the isotope estimate is unreliable."""


# ----------------------------------------------------------------------------- statistics
@dataclass
class Estimate:
    """A mean with its 1σ standard error, the mean statistical inefficiency (frames) and the frames used."""

    value: float
    error: float
    statistical_inefficiency: float
    n_frames: int
    unit: str = "eV"

    def __str__(self):
        return f"{self.value:.6g} ± {self.error:.2g} {self.unit}"

    def to_dict(self) -> dict:
        return {"value": self.value, "error": self.error, "g": self.statistical_inefficiency,
                "n_frames": self.n_frames, "unit": self.unit}


def _g(x):
    x = np.asarray(x, dtype=np.float64)
    if x.size < 3 or np.ptp(x) == 0:
        return 1.0
    try:
        return float(max(1.0, timeseries.statistical_inefficiency(x, fast=False)))
    except Exception:  # noqa: BLE001 - pymbar raises on degenerate series; treat as uncorrelated
        return 1.0


def pooled_mean(x, unit: str = "eV") -> Estimate:
    """Mean and standard error of ``x`` [n_frames] or [n_frames, n_walkers] (independent walkers).

    Each walker's variance is inflated by its statistical inefficiency; the walkers are averaged.

    >>> rng = np.random.default_rng(0)
    >>> est = pooled_mean(rng.normal(size=(4000, 4)))
    >>> abs(est.value) < 3 * est.error, 0.005 < est.error < 0.01
    (True, True)
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 2:
        raise InputError(f"need a time series [n_frames >= 2] or [n_frames, n_walkers], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InputError("the time series contains NaN or inf")
    n, w = x.shape
    gs = np.array([_g(x[:, i]) for i in range(w)])
    var = x.var(axis=0, ddof=1)
    se = float(np.sqrt(np.sum(var * gs / n)) / w)
    return Estimate(float(x.mean()), se, float(gs.mean()), int(n * w), unit)


def _rings(record, rings):
    n_rings = record["potential"].shape[1]
    idx = np.arange(n_rings) if rings is None else np.asarray(rings, dtype=np.int64).reshape(-1)
    if idx.size == 0 or (idx < 0).any() or (idx >= n_rings).any():
        raise InputError(f"rings must be indices in 0..{n_rings - 1}")
    return idx


# ----------------------------------------------------------------------------- energies
@dataclass
class QuantumEstimates:
    """Path-integral estimates (eV, k_B for heat capacities, Angstrom) of one thermodynamic state."""

    kinetic_virial: Estimate
    kinetic_primitive: Estimate
    potential: Estimate
    energy_virial: Estimate
    energy_primitive: Estimate
    heat_capacity_tv: Estimate
    heat_capacity_tt: Estimate
    kinetic_virial_per_atom: list
    kinetic_primitive_per_atom: list
    radius_of_gyration_per_atom: list
    temperature: float
    n_beads: int
    n_atoms: int
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {k: getattr(self, k).to_dict() for k in ("kinetic_virial", "kinetic_primitive", "potential",
                                                       "energy_virial", "energy_primitive", "heat_capacity_tv",
                                                       "heat_capacity_tt")}
        for k in ("kinetic_virial_per_atom", "kinetic_primitive_per_atom", "radius_of_gyration_per_atom"):
            out[k] = [e.to_dict() for e in getattr(self, k)]
        out.update(temperature_K=self.temperature, n_beads=self.n_beads, n_atoms=self.n_atoms)
        return out

    def summary(self) -> str:
        return "\n".join([
            f"T = {self.temperature:g} K, P = {self.n_beads}, {self.n_atoms} atoms",
            f"kinetic (centroid virial) {self.kinetic_virial}",
            f"kinetic (primitive)       {self.kinetic_primitive}",
            f"potential                 {self.potential}",
            f"energy (virial)           {self.energy_virial}",
            f"heat capacity (TV)        {self.heat_capacity_tv}",
        ])


def quantum_estimates(record: dict, n_beads: int, rings=None, atoms=None) -> QuantumEstimates:
    """Energies, heat capacities and ring-polymer sizes of the ring polymers ``rings`` (default all;
    they must share one temperature and be independent samples of the same state).

    Parameters
    ----------
    record : dict from :meth:`fesurf.md.ring_polymer.RingPolymerReporter.arrays`
    n_beads : P of the run
    atoms : atom indices summed into the total kinetic energies (default all); the heat capacities
        and total energies always use every atom

    >>> # est = quantum_estimates(rec.arrays(), n_beads=32); est.kinetic_virial.value
    """
    for key in ("potential", "kinetic_virial", "kinetic_primitive", "spring", "radius_of_gyration", "temperature"):
        if key not in record:
            raise InputError(f"the record has no {key!r}; pass RingPolymerReporter.arrays()")
    P = int(n_beads)
    if P < 1:
        raise InputError(f"n_beads must be >= 1, got {n_beads}")
    idx = _rings(record, rings)
    temps = np.asarray(record["temperature"])[:, idx]
    if not np.allclose(temps, temps.flat[0], rtol=1e-12, atol=0):
        raise InputError("the selected ring polymers have different temperatures; estimate each state separately")
    T = float(temps.flat[0])
    beta = 1.0 / (KB * T)
    kv_atom = record["kinetic_virial"][:, idx]  # [n, W, A]
    kp_atom = record["kinetic_primitive"][:, idx]
    n_atoms = kv_atom.shape[2]
    sel = np.arange(n_atoms) if atoms is None else np.asarray(atoms, dtype=np.int64).reshape(-1)
    if sel.size == 0 or (sel < 0).any() or (sel >= n_atoms).any():
        raise InputError(f"atoms must be indices in 0..{n_atoms - 1}")
    pot = record["potential"][:, idx]
    spring = record["spring"][:, idx]
    e_v = kv_atom.sum(axis=2) + pot
    e_t = kp_atom.sum(axis=2) + pot
    # heat capacities as means of derived series (fluctuations about the pooled means)
    dt_, dv_ = e_t - e_t.mean(), e_v - e_v.mean()
    c_tv = pooled_mean(beta**2 * dt_ * dv_ + 1.5 * n_atoms, unit="k_B")
    c_tt = pooled_mean(beta**2 * dt_ * dt_ + 1.5 * n_atoms * P - 2.0 * beta * spring / P, unit="k_B")
    rg = record["radius_of_gyration"][:, idx]
    return QuantumEstimates(
        kinetic_virial=pooled_mean(kv_atom[:, :, sel].sum(axis=2)),
        kinetic_primitive=pooled_mean(kp_atom[:, :, sel].sum(axis=2)),
        potential=pooled_mean(pot),
        energy_virial=pooled_mean(e_v),
        energy_primitive=pooled_mean(e_t),
        heat_capacity_tv=c_tv,
        heat_capacity_tt=c_tt,
        kinetic_virial_per_atom=[pooled_mean(kv_atom[:, :, a]) for a in range(n_atoms)],
        kinetic_primitive_per_atom=[pooled_mean(kp_atom[:, :, a]) for a in range(n_atoms)],
        radius_of_gyration_per_atom=[pooled_mean(rg[:, :, a], unit="Angstrom") for a in range(n_atoms)],
        temperature=T, n_beads=P, n_atoms=n_atoms)


# ----------------------------------------------------------------------------- closed forms
def harmonic_ring_polymer(beta_hbar_omega, n_beads=None) -> dict:
    """Exact results for one 1D harmonic oscillator, in units of hbar w (energies) and k_B (C):
    ``energy``, ``heat_capacity`` and ``free_energy`` (A / hbar w) of the P-bead discretised ring polymer
    (``n_beads=None``: the quantum limit P -> infinity).

    Z_P = prod_k [ (beta hbar w / P)^2 + 4 sin^2(k pi / P) ]^(-1/2) = 1 / (2 sinh(P asinh(beta hbar w / 2P))).

    >>> r = harmonic_ring_polymer(4.0)
    >>> round(r["energy"], 5)       # coth(2) / 2
    0.51866
    """
    u = np.asarray(beta_hbar_omega, dtype=np.float64)
    if np.any(u <= 0):
        raise InputError("beta hbar omega must be positive")
    if n_beads is None:
        e = 0.5 / np.tanh(0.5 * u)
        c = (0.5 * u / np.sinh(0.5 * u)) ** 2
        a = np.log(2.0 * np.sinh(0.5 * u)) / u
        return _floats({"energy": e, "heat_capacity": c, "free_energy": a})
    P = int(n_beads)
    y = u / (2.0 * P)
    a = np.arcsinh(y)
    e = 0.5 / np.tanh(P * a) / np.sqrt(1.0 + y * y)
    # C / k = -beta^2 dE/dbeta, with dE/dbeta = (hbar w)^2 / (2P) * dE'/dy, E' = E / (hbar w)
    de_dy = 0.5 * (-P / np.sinh(P * a) ** 2 / (1.0 + y * y) - y / np.tanh(P * a) * (1.0 + y * y) ** -1.5)
    c = -(u**2) / (2.0 * P) * de_dy
    return _floats({"energy": e, "heat_capacity": c, "free_energy": np.log(2.0 * np.sinh(P * a)) / u})


def _floats(d):
    return {k: (float(v) if np.ndim(v) == 0 else v) for k, v in d.items()}


# ----------------------------------------------------------------------------- mass TI
@dataclass
class MassNodes:
    """Gauss-Legendre nodes of a mass path m(lambda), lambda in [0, 1]: ``lam``, ``weights`` (sum 1),
    ``masses`` (amu) and ``dm_dlam`` (amu) at the nodes."""

    lam: np.ndarray
    weights: np.ndarray
    masses: np.ndarray
    dm_dlam: np.ndarray
    mass_from: float
    mass_to: float
    parametrization: str


def mass_ti_nodes(mass_from: float, mass_to: float, n_nodes: int = 5, parametrization: str = "inverse_sqrt") -> MassNodes:
    """Gauss-Legendre nodes for mass thermodynamic integration from ``mass_from`` to ``mass_to`` (amu).

    ``parametrization``: ``"inverse_sqrt"`` (default) interpolates 1/sqrt(m) linearly, which makes the
    integrand -<K>/m dm/dlambda nearly flat for a quantum oscillator (<K> ~ hbar w / 4 ~ m^-1/2);
    ``"linear"`` interpolates m.

    >>> n = mass_ti_nodes(1.0, 4.0, 1)
    >>> float(n.masses[0]), float(n.weights[0])    # 1/sqrt(m) halfway between 1 and 1/2
    (1.7777777777777777, 1.0)
    """
    for name, m in (("mass_from", mass_from), ("mass_to", mass_to)):
        if not (np.isfinite(m) and m > 0):
            raise InputError(f"{name} must be a positive mass in amu, got {m!r}")
    if isinstance(n_nodes, bool) or int(n_nodes) < 1:
        raise InputError(f"n_nodes must be >= 1, got {n_nodes}")
    x, w = np.polynomial.legendre.leggauss(int(n_nodes))
    lam, weights = 0.5 * (x + 1.0), 0.5 * w
    if parametrization == "inverse_sqrt":
        mu0, mu1 = mass_from ** -0.5, mass_to ** -0.5
        mu = (1.0 - lam) * mu0 + lam * mu1
        masses = mu ** -2.0
        dm = -2.0 * mu ** -3.0 * (mu1 - mu0)
    elif parametrization == "linear":
        masses = (1.0 - lam) * mass_from + lam * mass_to
        dm = np.full_like(lam, mass_to - mass_from)
    else:
        raise InputError(f"parametrization must be 'inverse_sqrt' or 'linear', got {parametrization!r}")
    return MassNodes(lam, weights, masses, dm, float(mass_from), float(mass_to), parametrization)


def mass_ti_free_energy(nodes: MassNodes, kinetic, kinetic_error=None, temperature: float | None = None) -> FreeEnergy:
    """A(mass_to) - A(mass_from) (eV) by Gauss-Legendre: sum_i w_i (-<K>_i / m_i) dm/dlambda_i.

    ``kinetic`` [n_nodes]: mean quantum kinetic energy (eV; centroid virial) of the substituted
    atom(s) at each node (all substituted atoms follow the same mass path); ``kinetic_error`` their
    1σ (independent nodes). The integrand values are in ``diagnostics``.

    >>> n = mass_ti_nodes(1.0, 2.0, 4, "linear")
    >>> round(mass_ti_free_energy(n, 0.0387 * np.ones(4)).value, 4)    # -K ln 2 for a constant K
    -0.0268
    """
    k = np.asarray(kinetic, dtype=np.float64).reshape(-1)
    if k.shape != nodes.lam.shape:
        raise InputError(f"kinetic needs one value per node ({nodes.lam.size}), got {k.size}")
    integrand = -k / nodes.masses * nodes.dm_dlam
    value = float(np.sum(nodes.weights * integrand))
    err = None
    if kinetic_error is not None:
        ke = np.asarray(kinetic_error, dtype=np.float64).reshape(-1)
        if ke.shape != k.shape:
            raise InputError("kinetic_error needs one value per node")
        err = float(np.sqrt(np.sum((nodes.weights * ke / nodes.masses * nodes.dm_dlam) ** 2)))
    return FreeEnergy(value, err, unit="eV", temperature=temperature, method=f"mass TI ({nodes.lam.size}-point "
                      f"Gauss-Legendre, {nodes.parametrization})",
                      diagnostics={"lambda": nodes.lam.tolist(), "masses_amu": nodes.masses.tolist(),
                                   "integrand_eV": integrand.tolist(), "weights": nodes.weights.tolist()})


# ----------------------------------------------------------------------------- scaled coordinates
def scaled_coordinates_free_energy(delta_v, temperature: float, mass_ratio: float, n_atoms: int = 1,
                                   min_ess: float = 20.0, warn: bool = True) -> FreeEnergy:
    """A(m') - A(m) (eV) from one simulation at mass m, by scaled-coordinates free-energy perturbation.

    With each substituted atom's beads scaled to q' = c + (q - c) sqrt(m/m') the springs of mass m'
    equal those of m, so (Ceriotti and Markland, JCP 138, 014112 (2013); i-PI ``isotope_zetasc``)

        A(m') - A(m) = -(3 n / 2) kT ln(m'/m) - kT ln < exp(-beta dV) >_m,

    dV = (1/P) sum_j [V(q'_j) - V(q_j)] (``delta_v`` [n_frames] or [n_frames, n_walkers], eV, from
    ``RingPolymerReporter(isotopes=...)``), n the number of substituted atoms, ``mass_ratio`` m'/m.
    The first term is the classical (momentum) part. The 1σ comes from the statistical inefficiency
    of exp(-beta dV); a Kish ESS of the weights below ``min_ess`` warns.

    >>> round(scaled_coordinates_free_energy(np.zeros((10, 2)), 300.0, 2.0).value, 5)   # classical limit
    -0.02688
    """
    x = np.asarray(delta_v, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 2 or not np.isfinite(x).all():
        raise InputError("delta_v must be a finite time series [n_frames >= 2] or [n_frames, n_walkers] in eV")
    if not (np.isfinite(mass_ratio) and mass_ratio > 0):
        raise InputError(f"mass_ratio must be positive, got {mass_ratio!r}")
    if isinstance(n_atoms, bool) or int(n_atoms) < 1:
        raise InputError(f"n_atoms must be >= 1, got {n_atoms}")
    kT = KB * float(temperature)
    bx = x / kT
    shift = float(np.min(bx))
    w = np.exp(-(bx - shift))
    est = pooled_mean(w, unit="")
    ln_mean = np.log(est.value) - shift
    err = kT * est.error / est.value
    ess = kish_ess(w.reshape(-1))
    if warn and ess < min_ess:
        warnings.warn(IsotopeReweightingWarning(
            f"scaled-coordinates weights have a Kish ESS of {ess:.1f} (< {min_ess:g}) out of {w.size} frames; "
            "the isotope free energy is unreliable. Use intermediate masses (mass TI) or more sampling."),
            stacklevel=2)
    value = -1.5 * int(n_atoms) * kT * np.log(float(mass_ratio)) - kT * ln_mean
    return FreeEnergy(float(value), float(err), unit="eV", temperature=float(temperature),
                      method="scaled-coordinates FEP",
                      diagnostics={"kish_ess": float(ess), "n_frames": int(w.size),
                                   "statistical_inefficiency": est.statistical_inefficiency,
                                   "classical_part_eV": float(-1.5 * int(n_atoms) * kT * np.log(float(mass_ratio))),
                                   "mean_beta_dV": float(bx.mean()), "std_beta_dV": float(bx.std())})


# ----------------------------------------------------------------------------- KIE
@dataclass
class IsotopeEffect:
    """k_light / k_heavy by centroid QTST with its 1σ (from the two barriers' σ, independent runs)."""

    kie: float
    error: float
    ln_kie: float
    ln_kie_error: float
    rate_light: float  # 1/s
    rate_heavy: float
    barrier_light: FreeEnergy  # F(s_TS) - A_R, kcal/mol
    barrier_heavy: FreeEnergy
    prefactor_ratio: float  # sqrt(m_heavy / m_light), the centroid-velocity factor
    effective_mass_light: float
    effective_mass_heavy: float
    temperature: float

    def to_dict(self) -> dict:
        return {"kie": self.kie, "kie_sigma": self.error, "ln_kie": self.ln_kie, "ln_kie_sigma": self.ln_kie_error,
                "rate_light_per_s": self.rate_light, "rate_heavy_per_s": self.rate_heavy,
                "barrier_light_kcal_mol": self.barrier_light.value, "barrier_light_sigma": self.barrier_light.error,
                "barrier_heavy_kcal_mol": self.barrier_heavy.value, "barrier_heavy_sigma": self.barrier_heavy.error,
                "prefactor_ratio": self.prefactor_ratio, "effective_mass_light_amu": self.effective_mass_light,
                "effective_mass_heavy_amu": self.effective_mass_heavy, "temperature_K": self.temperature}

    def __str__(self):
        return (f"KIE = {self.kie:.2f} ± {self.error:.2f} (ln KIE {self.ln_kie:.3f} ± {self.ln_kie_error:.3f}); "
                f"barriers {self.barrier_light.value:.2f} / {self.barrier_heavy.value:.2f} kcal/mol")


def kinetic_isotope_effect(pmf_light: FreeEnergy, pmf_heavy: FreeEnergy, effective_mass_light: float,
                           effective_mass_heavy: float, reactant=None, product=None) -> IsotopeEffect:
    """Kinetic isotope effect k_light / k_heavy from two centroid PMFs by quantum TST.

    Centroid-density QTST gives k = sqrt(kT / (2 pi m_s)) exp(-(F(s_TS) - A_R)/kT) per unit CV length
    (:func:`fesurf.analysis.tst_rate_from_pmf`), with F the centroid PMF and m_s the CV's effective
    mass (:func:`fesurf.analysis.cv_effective_mass`, at the TS). Hence

        ln KIE = 1/2 ln(m_s,heavy / m_s,light) - (dF_light - dF_heavy) / kT,

    whose 1σ combines the two barriers' σ in quadrature (independent runs). Both PMFs need the same
    temperature; ``reactant``/``product`` CV ranges as in :func:`fesurf.analysis.barrier`.

    >>> # kie = kinetic_isotope_effect(pmf_H, pmf_D, m_s_H, m_s_D); kie.kie, kie.error
    """
    from ..analysis.barriers import barrier
    from ..analysis.rates import tst_rate_from_pmf

    for name, m in (("effective_mass_light", effective_mass_light), ("effective_mass_heavy", effective_mass_heavy)):
        if not (np.isfinite(m) and m > 0):
            raise InputError(f"{name} must be a positive mass in amu, got {m!r}")
    if not isinstance(pmf_light, FreeEnergy) or not isinstance(pmf_heavy, FreeEnergy):
        raise InputError("pmf_light and pmf_heavy must be FreeEnergy profiles (compute_pmf or reweight results)")
    T = pmf_light.temperature
    if T is None or pmf_heavy.temperature is None or abs(T - pmf_heavy.temperature) > 1e-9 * T:
        raise InputError("both PMFs need the same temperature (K) for an isotope effect")
    b_l = barrier(pmf_light, reactant, product).to("kT")
    b_h = barrier(pmf_heavy, reactant, product).to("kT")
    d_l, d_h = b_l.activation.value, b_h.activation.value
    s_l, s_h = b_l.activation.error or 0.0, b_h.activation.error or 0.0
    prefactor = float(np.sqrt(effective_mass_heavy / effective_mass_light))
    ln_kie = float(np.log(prefactor) - (d_l - d_h))
    ln_err = float(np.hypot(s_l, s_h))
    kie = float(np.exp(ln_kie))
    k_l = tst_rate_from_pmf(pmf_light, effective_mass_light, reactant, product)
    k_h = tst_rate_from_pmf(pmf_heavy, effective_mass_heavy, reactant, product)
    return IsotopeEffect(kie=kie, error=kie * ln_err, ln_kie=ln_kie, ln_kie_error=ln_err, rate_light=k_l, rate_heavy=k_h,
                         barrier_light=b_l.activation.to("kcal/mol"), barrier_heavy=b_h.activation.to("kcal/mol"),
                         prefactor_ratio=prefactor, effective_mass_light=float(effective_mass_light),
                         effective_mass_heavy=float(effective_mass_heavy), temperature=float(T))
