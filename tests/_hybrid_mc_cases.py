"""Exactness cases for hybrid MC with a deliberately wrong surrogate, shared by tests/test_hybrid_mc.py
(small, fast samples) and benchmarks/hybrid_mc.py (large samples, the reported figures).

Reference: the exact analytic surface. Surrogate: a double well with the barrier 2 kT too low and the
minima shifted out by 0.15 A; a Mueller-Brown surface scaled by 0.8 and shifted by (0.06, -0.05) A.
Every walker starts from an exact sample of its target (inverse-CDF / grid sampling of the quadrature
density), so the histograms test what exactness means, invariance of exp(-beta (U_ref + bias)), and do
not depend on how fast barriers are crossed. They are compared with quadrature by a Pearson chi^2 test on
frames thinned by twice the statistical inefficiency g pooled over the walkers of a target
(pymbar ``statistical_inefficiency_multiple``; for an exponential autocorrelation the residual lag
correlation is exp(-4), so the chi^2 is not inflated); PMFs are compared bin by bin with exact bin free
energies after removing the free additive constant.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import quad
from scipy.stats import chi2

from fesurf.cv import POSITION
from fesurf.estimators import compute_pmf
from fesurf.potentials import DoubleWell1D, MullerBrown
from fesurf.potentials.base import Potential
from fesurf.sampling.hybrid_mc import HybridMC, HybridMCDynamics, hybrid_mc_sampling, pooled_statistical_inefficiency
from fesurf.sampling.protocol import Schedule
from fesurf.state import State
from fesurf.units import KB

from _sampling_models import exact_binned_pmf_1d, exact_binned_pmf_2d  # noqa: F401 (2D: vectorised copy below)

T = 300.0
KT = KB * T
REF_1D = dict(barrier=3.5 * KT, x0=1.0)
SUR_1D = dict(barrier=1.5 * KT, x0=1.15)  # barrier 2 kT too low, minima shifted outwards by 0.15 A
MB_SCALE = 0.001  # eV per Mueller-Brown unit: the A -> C barrier is 4.1 kT at 300 K
MB_BASINS = np.array([[-0.558, 1.442], [0.623, 0.028], [-0.050, 0.467]])
CHI2_EDGES_1D = np.linspace(-1.8, 1.8, 25)
CHI2_EDGES_2D = (np.linspace(-1.5, 1.2, 13), np.linspace(-0.4, 2.1, 13))
WIDE_2D = ((-2.2, 1.9), (-1.1, 2.8))  # quadrature box for the weight outside the chi^2 grid


class DistortedMullerBrown(MullerBrown):
    """``factor * MB(x - dx, y - dy)`` (eV, Angstrom): a wrong surrogate for the Mueller-Brown reference."""

    def __init__(self, scale=MB_SCALE, factor=0.8, shift=(0.06, -0.05)):
        super().__init__(scale=scale * factor)
        self.shift = torch.tensor([shift[0], shift[1], 0.0], dtype=torch.float64)

    def surface(self, x, y):
        return super().surface(x - float(self.shift[0]), y - float(self.shift[1]))

    def per_atom(self, positions):
        return super().per_atom(positions - self.shift.to(positions.dtype))


class DriftingMover(HybridMC):
    """Breaks reversibility on purpose: every end point is pushed +0.05 A in x, so the reverse move is never
    proposed, while the acceptance test still assumes a reversible proposal."""

    def _propose_md(self, work, e0, f0):
        x1, v0, v1, _, _, failed = super()._propose_md(work, e0, f0)
        x1 = x1 + torch.tensor([0.05, 0.0, 0.0], dtype=x1.dtype)
        e1, f1 = self.potential.energy_and_forces(work.replace(positions=x1))
        return x1, v0, v1, e1.numpy().copy(), f1, failed


class DriftingDynamics(HybridMCDynamics):
    def _mover_class(self):
        return DriftingMover


def points(xy, z=1) -> State:
    """One single-atom system per row of (x[, y]) (Angstrom); element ``z``."""
    xy = np.asarray(xy, dtype=np.float64)
    pos = np.zeros((len(xy), 3))
    pos[:, : xy.shape[1]] = xy
    return State(positions=pos, atomic_numbers=[z] * len(xy), system_index=np.arange(len(xy)))


def state_of(positions, z=1) -> State:
    """One single-atom system per row of ``positions`` [n, 3] (Angstrom); element ``z``."""
    pos = np.asarray(positions, dtype=np.float64)
    return State(positions=pos, atomic_numbers=[z] * len(pos), system_index=np.arange(len(pos)))


def sample_1d(u_of_x, n, rng, lo=-4.0, hi=4.0):
    """``n`` exact samples of exp(-beta u(x)) by inverse CDF on a 4e-4 A grid (the grid error is far below
    the sampling noise of any test here)."""
    x = np.linspace(lo, hi, 20001)
    u = np.asarray(u_of_x(x), dtype=np.float64)  # u_of_x is vectorised (numpy arithmetic)
    w = np.exp(-(u - u.min()) / KT)
    cdf = np.cumsum(w)
    return np.interp(rng.random(n) * cdf[-1], cdf, x)


def sample_2d(surface, n, rng, h=0.005):
    """``n`` exact samples of exp(-beta surface(x, y)) on WIDE_2D (a cell by weight, uniform within it)."""
    (lo_x, hi_x), (lo_y, hi_y) = WIDE_2D
    xs, ys = np.arange(lo_x, hi_x, h) + h / 2, np.arange(lo_y, hi_y, h) + h / 2
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    e = surface(X, Y)
    w = np.exp(-(e - e.min()) / KT).ravel()
    cell = rng.choice(w.size, size=n, p=w / w.sum())
    return np.c_[X.ravel()[cell], Y.ravel()[cell]] + (rng.random((n, 2)) - 0.5) * h


def _confined(n, rng, confine=1.0):
    """Exact samples of the harmonic confinement 0.5 confine q^2 (eV, A) of the spectator coordinates."""
    return rng.standard_normal(n) * math.sqrt(KT / confine)


def pooled_g(samples, n_sys, columns, systems=None):
    """Statistical inefficiency (frames) pooled over the walkers ``systems`` (the estimator of pymbar's
    ``statistical_inefficiency_multiple``), the largest over the CV ``columns``."""
    systems = np.arange(n_sys) if systems is None else np.asarray(systems)
    cv = samples.cv.reshape(samples.n_frames // n_sys, n_sys, -1)  # frames are stored record by record
    return max(pooled_statistical_inefficiency(cv[:, systems, c].T) for c in columns)


def chi2_test(counts, probs, g=1.0):
    """Pearson chi^2, dof and p of counts against probabilities on effective counts (counts / g, with g the
    statistical inefficiency of the correlated frames; cells expecting < 5 effective counts merged)."""
    counts, probs = np.asarray(counts, float).ravel() / float(g), np.asarray(probs, float).ravel()
    e = counts.sum() * probs
    big = e >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(e[big], e[~big].sum())
    if exp[-1] < 5:  # fold a small remainder into the largest cell
        j = np.argmax(exp[:-1])
        obs[j] += obs[-1]
        exp[j] += exp[-1]
        obs, exp = obs[:-1], exp[:-1]
    stat = float(((obs - exp) ** 2 / exp).sum())
    return stat, obs.size - 1, float(chi2.sf(stat, obs.size - 1))


def probs_1d(u_of_x, edges):
    """Exact probability of every bin and of the two tails (first and last cell), by quadrature."""
    u_min = min(u_of_x(x) for x in np.linspace(-4, 4, 8001))
    w = lambda x: np.exp(-(u_of_x(x) - u_min) / KT)  # noqa: E731
    inner = [quad(w, a, b, epsabs=0, epsrel=1e-11)[0] for a, b in zip(edges[:-1], edges[1:])]
    tails = [quad(w, -8, edges[0], epsabs=0, epsrel=1e-11, limit=200)[0],
             quad(w, edges[-1], 8, epsabs=0, epsrel=1e-11, limit=200)[0]]
    p = np.array([tails[0]] + inner + [tails[1]])
    return p / p.sum()


def counts_1d(x, edges):
    return np.concatenate([[np.sum(x < edges[0])], np.histogram(x, edges)[0], [np.sum(x >= edges[-1])]])


def binned_f_2d(surface, ex, ey, sub=16):
    """-ln of the Boltzmann weight of every 2D bin (kT; midpoint rule, sub x sub points per bin), vectorised
    (the same rule as _sampling_models.exact_binned_pmf_2d)."""
    fx = (np.arange(sub) + 0.5) / sub
    xs = (ex[:-1, None] + fx[None, :] * np.diff(ex)[:, None]).ravel()
    ys = (ey[:-1, None] + fx[None, :] * np.diff(ey)[:, None]).ravel()
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    e = surface(X, Y) / KT
    m = e.min()
    w = np.exp(-(e - m)).reshape(ex.size - 1, sub, ey.size - 1, sub).mean(axis=(1, 3))
    area = np.diff(ex)[:, None] * np.diff(ey)[None, :]
    with np.errstate(divide="ignore"):
        return m - np.log(w * area)


def probs_2d(surface, ex, ey):
    """Exact probabilities of the 2D bins plus one cell for everything outside (quadrature on WIDE_2D)."""
    f = binned_f_2d(surface, ex, ey)
    (lo_x, hi_x), (lo_y, hi_y) = WIDE_2D
    wx, wy = np.arange(lo_x, hi_x + 1e-9, 0.025), np.arange(lo_y, hi_y + 1e-9, 0.025)
    f_wide = binned_f_2d(surface, wx, wy, sub=4)
    m = min(f.min(), f_wide.min())
    total = np.exp(-(f_wide - m)).sum()
    p = np.exp(-(f - m))
    return np.append(p.ravel(), max(total - p.sum(), 0.0)) / total


def counts_2d(xy, ex, ey):
    c = np.histogram2d(xy[:, 0], xy[:, 1], [ex, ey])[0].ravel()
    return np.append(c, xy.shape[0] - c.sum())


def pmf_error(f_est, f_exact, sigma=None, cutoff=4.0):
    """(max |error| kT, bins compared, max |error|/sigma) over bins with exact F < cutoff, after removing
    the free additive constant (the mean difference). ``sigma`` is optional (pymbar's analytical sigma
    underestimates the error when a window's replicas are interleaved in one series)."""
    f_exact = np.asarray(f_exact) - np.nanmin(f_exact)
    sel = (f_exact < cutoff) & np.isfinite(f_est)
    d = np.asarray(f_est)[sel] - f_exact[sel]
    d = d - d.mean()
    z = np.nan
    if sigma is not None:
        s = np.asarray(sigma)[sel]
        ok = s > 0
        z = float(np.max(np.abs(d[ok]) / s[ok])) if ok.any() else np.nan
    return float(np.max(np.abs(d))), int(sel.sum()), z


def _start_1d(u_of_x, n, rng):
    return np.c_[sample_1d(u_of_x, n, rng), _confined(n, rng), _confined(n, rng)]


def _start_2d(surface, n, rng):
    return np.c_[sample_2d(surface, n, rng), _confined(n, rng)]


def _windows_chi2(samples, n_windows, reps, columns, cell_counts, window_probs):
    """Summed effective-count chi^2 over windows (g pooled over each window's replicas)."""
    total, dofs, n_eff = 0.0, 0, 0.0
    for k in range(n_windows):
        g = pooled_g(samples, n_windows * reps, columns, np.arange(k * reps, (k + 1) * reps))
        sel = samples.state_index == k
        stat, dof, _ = chi2_test(cell_counts(sel), window_probs(k), g)
        total, dofs, n_eff = total + stat, dofs + dof, n_eff + sel.sum() / g
    return total, dofs, float(chi2.sf(total, dofs)), n_eff


def case_1d_unbiased(n_walkers=1024, n_eq=60, n_prod=400, dynamics=None, seed=0):
    """Unbiased walkers on the double well, started from exact samples: effective-count chi^2 on x and
    the histogram PMF (12 bins of 0.25 A) from all frames."""
    ref = DoubleWell1D(**REF_1D)
    rng = np.random.default_rng(seed)
    dyn = dynamics or HybridMCDynamics(timestep=1.0, n_steps=10, seed=1)
    ss = hybrid_mc_sampling(DoubleWell1D(**SUR_1D), ref, state_of(_start_1d(ref.along_x, n_walkers, rng)),
                            POSITION(0, "x"), temperature=T, dynamics=dyn,
                            schedule=Schedule(n_equilibration=n_eq, n_production=n_prod, stride=1),
                            store_positions=False)
    x = ss.cv[:, 0]
    g = pooled_g(ss, n_walkers, [0])
    stat, dof, p = chi2_test(counts_1d(x, CHI2_EDGES_1D), probs_1d(ref.along_x, CHI2_EDGES_1D), g)
    pedges = np.linspace(-1.5, 1.5, 13)
    counts = np.histogram(x, pedges)[0].astype(float)
    err, nb, _ = pmf_error(-np.log(counts), exact_binned_pmf_1d(ref.along_x, pedges))
    return dict(samples=ss, n_frames=int(x.size), g=g, n_effective=float(x.size / g), chi2=stat, dof=dof, p=p,
                pmf_max_error_kT=err, pmf_bins=nb, report=ss.attrs["hybrid_mc"])


def case_1d_windows(reps=48, n_eq=60, n_prod=400, seed=1, centers=None, kappa=0.5):
    """Umbrella windows on the double well, replicas started from exact samples of their window:
    effective-count chi^2 per window (summed) and the MBAR PMF (16 bins of 0.19 A). Five broad windows
    (kappa 0.5 eV/A^2 exceeds the barrier-top curvature 0.36 eV/A^2) keep the MBAR chain short."""
    centers = np.linspace(-1.2, 1.2, 5) if centers is None else np.asarray(centers, dtype=np.float64)
    ref = DoubleWell1D(**REF_1D)
    rng = np.random.default_rng(seed)

    def windowed(c):
        return lambda s: ref.along_x(s) + 0.5 * kappa * (s - c) ** 2

    start = np.concatenate([_start_1d(windowed(c), reps, rng) for c in centers])
    ss = hybrid_mc_sampling(DoubleWell1D(**SUR_1D), ref, state_of(start), POSITION(0, "x"), centers,
                            kappa, temperature=T, dynamics=HybridMCDynamics(timestep=1.0, n_steps=10, seed=seed),
                            replicas_per_window=reps,
                            schedule=Schedule(n_equilibration=n_eq, n_production=n_prod, stride=1),
                            store_positions=False, check_overlap=False)
    x = ss.cv[:, 0]
    edges = np.linspace(-2.4, 2.4, 49)
    stat, dof, p, n_eff = _windows_chi2(ss, centers.size, reps, [0], lambda sel: counts_1d(x[sel], edges),
                                        lambda k: probs_1d(windowed(centers[k]), edges))
    pedges = np.linspace(-1.5, 1.5, 17)
    pmf = compute_pmf(ss, bins=pedges, warn=False)  # MBAR on reference-level u_kn: the reference PMF directly
    err, nb, _ = pmf_error(pmf.values, exact_binned_pmf_1d(ref.along_x, pedges))
    return dict(samples=ss, n_frames=int(x.size), n_effective=n_eff, chi2=stat, dof=dof, p=p,
                pmf_max_error_kT=err, pmf_bins=nb, report=ss.attrs["hybrid_mc"], centers=centers)


def case_2d_unbiased(n_walkers=512, n_eq=60, n_prod=300, seed=2):
    """Unbiased walkers on Mueller-Brown started from exact samples: effective-count 2D chi^2 and the
    x-marginal PMF (10 bins of 0.23 A) from all frames."""
    ref, sur = MullerBrown(scale=MB_SCALE), DistortedMullerBrown()
    rng = np.random.default_rng(seed)
    ss = hybrid_mc_sampling(sur, ref, state_of(_start_2d(ref.surface, n_walkers, rng)),
                            [POSITION(0, "x"), POSITION(0, "y")], temperature=T,
                            dynamics=HybridMCDynamics(timestep=0.5, n_steps=10, seed=seed),
                            schedule=Schedule(n_equilibration=n_eq, n_production=n_prod, stride=1),
                            store_positions=False)
    ex, ey = CHI2_EDGES_2D
    g = pooled_g(ss, n_walkers, [0, 1])
    stat, dof, p = chi2_test(counts_2d(ss.cv, ex, ey), probs_2d(ref.surface, ex, ey), g)
    px = np.linspace(-1.3, 1.0, 11)
    counts = np.histogram(ss.cv[:, 0], px)[0].astype(float)
    f_x = -np.log(np.exp(-binned_f_2d(ref.surface, px, np.linspace(-1.0, 2.7, 75))).sum(axis=1))
    err, nb, _ = pmf_error(-np.log(counts), f_x)
    return dict(samples=ss, n_frames=int(ss.n_frames), g=g, n_effective=float(ss.n_frames / g), chi2=stat, dof=dof,
                p=p, pmf_max_error_kT=err, pmf_bins=nb, report=ss.attrs["hybrid_mc"])


def case_2d_windows(reps=8, n_eq=60, n_prod=300, seed=3, pmf_bins=6, n_steps=8):
    """A 5 x 5 grid of windows restraining x and y on Mueller-Brown (replicas started from exact samples of
    their window): effective-count chi^2 per window and the 2D MBAR PMF."""
    ref, sur = MullerBrown(scale=MB_SCALE), DistortedMullerBrown()
    cx, cy = np.linspace(-1.2, 0.9, 5), np.linspace(-0.1, 1.9, 5)
    centers = np.array([[a, b] for a in cx for b in cy])
    kappa = 0.4
    rng = np.random.default_rng(seed)

    def windowed(a, b):
        return lambda X, Y: ref.surface(X, Y) + 0.5 * kappa * ((X - a) ** 2 + (Y - b) ** 2)

    start = np.concatenate([_start_2d(windowed(a, b), reps, rng) for a, b in centers])
    ss = hybrid_mc_sampling(sur, ref, state_of(start), [POSITION(0, "x"), POSITION(0, "y")],
                            centers, kappa, temperature=T,
                            dynamics=HybridMCDynamics(timestep=0.5, n_steps=n_steps, seed=seed), replicas_per_window=reps,
                            schedule=Schedule(n_equilibration=n_eq, n_production=n_prod, stride=1),
                            store_positions=False, check_overlap=False)
    ex, ey = CHI2_EDGES_2D
    stat, dof, p, n_eff = _windows_chi2(ss, centers.shape[0], reps, [0, 1],
                                        lambda sel: counts_2d(ss.cv[sel], ex, ey),
                                        lambda k: probs_2d(windowed(*centers[k]), ex, ey))
    px, py = np.linspace(-1.3, 0.9, pmf_bins + 1), np.linspace(-0.3, 1.9, pmf_bins + 1)  # every bin sampled
    pmf = compute_pmf(ss, cv=(0, 1), bins=[px, py], warn=False)
    err, nb, _ = pmf_error(pmf.values, binned_f_2d(ref.surface, px, py, sub=24))
    return dict(samples=ss, n_frames=int(ss.n_frames), n_effective=n_eff, chi2=stat, dof=dof, p=p,
                pmf_max_error_kT=err, pmf_bins=nb, report=ss.attrs["hybrid_mc"])


def case_drifting(**kw):
    """The 1D unbiased case with a mover that breaks reversibility: the same chi^2 must fail."""
    return case_1d_unbiased(dynamics=DriftingDynamics(timestep=1.0, n_steps=10, seed=1), **kw)


def case_acceptance_law(beta_sigma, n_walkers=256, n_prod=400, n_steps=16, seed=7):
    """Measured acceptance against erfc(beta sigma / 2) for Gaussian end-point errors of spread sigma.

    Surrogate: a harmonic well 0.5 k r^2 (k = 1 eV/A^2); reference: the same well shifted by c along x, so
    dU = U_ref - U_sur = -k c x + k c^2 / 2 is linear in x and Gaussian with spread sigma = c sqrt(k kT) under
    the surrogate. The velocity-Verlet timestep is chosen so that ``n_steps`` steps are exactly a quarter of
    the discrete oscillation (omega dt = 2 sin(pi / 4 n), where the q-q element of the VV matrix power,
    cos(n theta), vanishes): the end point x' is independent of the start x, as the closed form assumes,
    and the surrogate energy error stays ~1e-3 kT. Walkers start from exact samples of the reference, so
    the chains are stationary from the first move. The standard error comes from the spread of the
    independent walkers' acceptance fractions, so it includes the chains' autocorrelation.
    """
    from fesurf.potentials import Harmonic
    from fesurf.units import MV2_TO_EV

    k, mass = 1.0, 1.008  # eV/A^2; amu of H, the element of the walkers
    omega = math.sqrt(k / (mass * MV2_TO_EV))  # 1/fs
    dt = 2.0 * math.sin(math.pi / (4 * n_steps)) / omega
    c = beta_sigma * math.sqrt(KT / k)
    rng = np.random.default_rng(seed)
    start = rng.standard_normal((n_walkers, 3)) * math.sqrt(KT / k) + np.array([c, 0.0, 0.0])
    ss = hybrid_mc_sampling(Harmonic(k=k), Harmonic(k=k, center=[c, 0.0, 0.0]), state_of(start), POSITION(0, "x"),
                            temperature=T,
                            dynamics=HybridMCDynamics(timestep=dt, n_steps=n_steps, tune=False, jitter=0.0, seed=seed),
                            schedule=Schedule(n_equilibration=0, n_production=n_prod, stride=10),
                            store_positions=False)
    rep = ss.attrs["hybrid_mc"]
    per_walker = np.asarray(rep["per_system"]["accepted"]) / np.asarray(rep["per_system"]["moves"])
    measured, se = float(per_walker.mean()), float(per_walker.std(ddof=1) / math.sqrt(n_walkers))
    expected = math.erfc(beta_sigma / 2)
    return dict(beta_sigma=beta_sigma, measured=measured, se=se, expected=expected, z=(measured - expected) / se,
                logged_beta_sigma=rep["beta_sigma"][0], predicted=rep["predicted_acceptance"][0],
                sd_integration=rep["sd_beta_integration_error"][0], n_proposals=int(np.sum(rep["moves"])), report=rep)
