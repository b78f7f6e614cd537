"""Stability tools users ask for: NVE drift, a time-step scan, a canonical check.

* :func:`nve_drift` runs NVE and reports the drift of the total energy
  (meV/atom/ps, slope of a straight-line fit) and its fluctuation (meV/atom).
  Drift measures the integrator, not the potential: forces that are exact
  gradients conserve the model's own energy, whatever the model's accuracy.
* :func:`timestep_scan` returns the largest time step whose drift stays under
  a threshold, with the whole table.
* :func:`canonical_check` compares <KE> and Var(KE) with the canonical
  (N_f/2) kT and (N_f/2) (kT)^2, with standard errors from the statistical
  inefficiency of the series (``pymbar.timeseries``).

Example
-------
>>> from fesurf.potentials import Harmonic
>>> from fesurf.state import State
>>> s = State(positions=[[0.1, 0.0, 0.0]], atomic_numbers=[1])
>>> res = nve_drift(Harmonic(k=5.0), s, timestep=0.5, n_steps=2000, temperature=300.0, seed=0)
>>> res.drift_meV_per_atom_ps < 0.1
True
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from .._pymbar import timeseries

from ..errors import InputError, SimulationError
from ..state import State
from ..units import KB
from .integrators import VelocityVerlet, maxwell_boltzmann
from .reporters import EnergyReporter

log = logging.getLogger(__name__)


@dataclass
class DriftResult:
    """NVE energy conservation of a run. Per-replica arrays plus the worst replica."""

    timestep: float
    n_steps: int
    drift_per_replica: np.ndarray  # meV/atom/ps (absolute slope)
    fluctuation_per_replica: np.ndarray  # meV/atom (std of conserved energy)
    time_fs: np.ndarray = field(repr=False)
    conserved: np.ndarray = field(repr=False)  # [n_frames, n_systems] eV

    @property
    def drift_meV_per_atom_ps(self) -> float:
        """Largest |drift| over replicas, meV/atom/ps."""
        return float(np.max(self.drift_per_replica))

    @property
    def fluctuation_meV_per_atom(self) -> float:
        """Mean over replicas of the std of the conserved energy, meV/atom."""
        return float(np.mean(self.fluctuation_per_replica))


def nve_drift(potential, state: State, timestep: float, n_steps: int | None = None, duration_fs: float | None = None,
              temperature: float | None = None, seed: int = 0, sample_every: int = 1, progress=None) -> DriftResult:
    """Run NVE velocity Verlet and measure drift and fluctuation of the total energy.

    Parameters
    ----------
    potential, state
        If ``state`` has no velocities, give ``temperature`` (K) and ``seed``
        to draw them from Maxwell–Boltzmann.
    timestep : float
        fs.
    n_steps or duration_fs
        Length of the run (one of them).
    sample_every : int
        Steps between recorded energies.
    """
    if (n_steps is None) == (duration_fs is None):
        raise InputError("give exactly one of n_steps or duration_fs")
    if n_steps is None:
        n_steps = int(round(duration_fs / timestep))
    if state.velocities is None:
        if temperature is None:
            raise InputError("the state has no velocities: pass temperature= (K) to draw them")
        state = maxwell_boltzmann(state, temperature, seed, remove_com=potential.translation_invariant)
    rep = EnergyReporter(stride=sample_every, timestep=timestep)
    VelocityVerlet(potential, timestep, check_every=max(10, sample_every)).run(state, n_steps, [rep], progress=progress)
    data = rep.arrays()
    t_ps = data["time_fs"] / 1000.0
    per_atom = data["conserved"] / state.atoms_per_system.numpy()[None, :] * 1000.0  # meV/atom
    slope = np.polyfit(t_ps, per_atom, 1)[0]
    return DriftResult(timestep=timestep, n_steps=n_steps, drift_per_replica=np.abs(np.atleast_1d(slope)),
                       fluctuation_per_replica=per_atom.std(axis=0), time_fs=data["time_fs"],
                       conserved=data["conserved"])


@dataclass
class TimestepScan:
    """Result of :func:`timestep_scan`: the chosen time step and the table."""

    best_timestep: float | None
    threshold: float
    results: list

    def table(self) -> str:
        lines = [f"{'dt (fs)':>8} {'drift (meV/atom/ps)':>20} {'fluct. (meV/atom)':>18}  ok"]
        for r in self.results:
            ok = "yes" if r.drift_meV_per_atom_ps < self.threshold else "no"
            lines.append(f"{r.timestep:8.3f} {r.drift_meV_per_atom_ps:20.4f} {r.fluctuation_meV_per_atom:18.4f}  {ok}")
        return "\n".join(lines)


def timestep_scan(potential, state: State, timesteps, duration_fs: float, threshold: float = 0.1,
                  temperature: float | None = None, seed: int = 0, progress=None) -> TimestepScan:
    """Largest time step (fs) whose NVE drift stays under ``threshold`` meV/atom/ps.

    Every candidate runs for the same physical time ``duration_fs`` from the
    same starting velocities. Candidates are tried from the smallest up; the
    largest passing step before the first failure is returned (None if none
    passes).

    >>> # scan = timestep_scan(lj, cluster, [1, 2, 4, 8], duration_fs=2000, temperature=30)
    >>> # scan.best_timestep, print(scan.table())
    """
    timesteps = sorted(float(t) for t in timesteps)
    if not timesteps or timesteps[0] <= 0:
        raise InputError("timesteps must be a non-empty list of positive fs values")
    if state.velocities is None:
        if temperature is None:
            raise InputError("the state has no velocities: pass temperature= (K) to draw them")
        state = maxwell_boltzmann(state, temperature, seed, remove_com=potential.translation_invariant)
    results, best = [], None
    for dt in timesteps:
        try:
            res = nve_drift(potential, state, dt, duration_fs=duration_fs, sample_every=1, progress=progress)
        except SimulationError as exc:  # a blown-up run is a failed time step, not a crash of the scan
            log.info("dt=%.3f fs blew up: %s", dt, exc)
            nan = np.full(state.n_systems, np.inf)
            results.append(DriftResult(dt, int(round(duration_fs / dt)), nan, nan, np.array([]), np.array([])))
            break
        results.append(res)
        log.info("dt=%.3f fs: drift %.4g meV/atom/ps", dt, res.drift_meV_per_atom_ps)
        if res.drift_meV_per_atom_ps < threshold:
            best = dt
        else:
            break
    return TimestepScan(best_timestep=best, threshold=threshold, results=results)


@dataclass
class CanonicalCheck:
    """<KE> and Var(KE) against the canonical values, with standard errors (eV, eV^2)."""

    mean: float
    expected_mean: float
    se_mean: float
    variance: float
    expected_variance: float
    se_variance: float
    n_dof: float

    @property
    def z_mean(self) -> float:
        return (self.mean - self.expected_mean) / self.se_mean

    @property
    def z_variance(self) -> float:
        return (self.variance - self.expected_variance) / self.se_variance

    def passed(self, n_sigma: float = 3.0) -> bool:
        """True when both agree within ``n_sigma`` standard errors."""
        return abs(self.z_mean) <= n_sigma and abs(self.z_variance) <= n_sigma

    def __str__(self):
        return (f"<KE>   = {self.mean:.6g} eV (canonical {self.expected_mean:.6g}, z = {self.z_mean:+.2f})\n"
                f"Var KE = {self.variance:.6g} eV^2 (canonical {self.expected_variance:.6g}, z = {self.z_variance:+.2f})")


def _mean_and_se(series):
    g = timeseries.statistical_inefficiency(series) if np.std(series) > 0 else 1.0
    return float(np.mean(series)), float(np.std(series, ddof=1) * np.sqrt(g / len(series)))


def canonical_check(kinetic_energy, temperature: float, n_dof, discard: int = 0) -> CanonicalCheck:
    """Compare kinetic-energy statistics with the canonical ensemble.

    Parameters
    ----------
    kinetic_energy : array [n_frames] or [n_frames, n_replicas], eV
        Independent replicas are pooled (their standard errors combine).
    temperature : float
        K.
    n_dof : int or [n_replicas]
        Kinetic degrees of freedom: 3N minus constraints (3 when the centre
        of mass is fixed).
    discard : int
        Frames dropped from the start (equilibration).

    The standard error of each replica's mean uses its statistical
    inefficiency g: se = std * sqrt(g / n). The variance's standard error is
    that of the mean of (KE - <KE>)^2, with its own g.
    """
    ke = np.asarray(kinetic_energy, dtype=float)
    if ke.ndim == 1:
        ke = ke[:, None]
    ke = ke[discard:]
    if ke.shape[0] < 10:
        raise InputError("canonical_check needs at least 10 frames after discard")
    if temperature is None or not temperature > 0:
        raise InputError("canonical_check needs temperature= in K")
    kt = KB * float(temperature)
    dof = np.broadcast_to(np.asarray(n_dof, dtype=float), (ke.shape[1],))
    means, se_means, vars_, se_vars = [], [], [], []
    for r in range(ke.shape[1]):
        m, se = _mean_and_se(ke[:, r])
        v, sev = _mean_and_se((ke[:, r] - m) ** 2)
        means.append(m)
        se_means.append(se)
        vars_.append(v)
        se_vars.append(sev)
    n = ke.shape[1]
    return CanonicalCheck(
        mean=float(np.mean(means)), expected_mean=float(np.mean(0.5 * dof * kt)),
        se_mean=float(np.sqrt(np.sum(np.square(se_means))) / n),
        variance=float(np.mean(vars_)), expected_variance=float(np.mean(0.5 * dof * kt * kt)),
        se_variance=float(np.sqrt(np.sum(np.square(se_vars))) / n), n_dof=float(np.mean(dof)))
