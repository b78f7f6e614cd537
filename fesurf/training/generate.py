"""Configuration generation for a new molecule: oracle MD at several
temperatures, normal-mode sampling, and biased MD along a user CV (so that
transition regions are covered).

All routines return lists of ``ase.Atoms`` (positions only); label them with
an oracle afterwards (``oracle.label(frames, cache=...)``), so the stored
labels are the physical energies even for biased runs.

Example
-------
>>> from ase.build import molecule
>>> from fesurf.oracles import XTBOracle
>>> from fesurf.training.generate import oracle_md
>>> frames = oracle_md(XTBOracle(), molecule("H2O"), temperatures=[300.0], n_frames=2, stride=2, seed=0)
>>> len(frames)
2
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from ase import Atoms

from ..errors import InputError
from ..state import State
from ..units import KB

log = logging.getLogger(__name__)


class _FrameCollector:
    def __init__(self, stride, skip):
        self.stride, self.skip, self.frames = int(stride), int(skip), []

    def report(self, step, state, info):
        if step > self.skip:
            self.frames.append(state.to_atoms())


def _run_md(potential, start: State, temperatures, n_frames, stride, timestep, friction, seed, equilibration):
    from ..md import Langevin, maxwell_boltzmann

    collector = _FrameCollector(stride, equilibration)
    md = Langevin(potential, timestep=timestep, temperature=temperatures, friction=friction, seed=seed,
                  max_energy_change=50.0)
    state = maxwell_boltzmann(start, temperatures, seed=seed + 10_000)
    md.run(state, equilibration + n_frames * stride, reporters=[collector])
    n_sys = start.n_systems
    frames = [[] for _ in range(n_sys)]
    for snapshot in collector.frames:
        for k in range(n_sys):
            frames[k].append(snapshot[k])
    out = []
    for k, temp in enumerate(np.broadcast_to(np.asarray(temperatures, dtype=float), (n_sys,))):
        for a in frames[k][:n_frames]:
            a.info["source"] = f"md_{temp:.0f}K"
            a.info["temperature"] = float(temp)
            out.append(a)
    return out


def oracle_md(oracle, atoms: Atoms, temperatures: Sequence[float], n_frames: int, stride: int = 10,
              timestep: float = 0.5, friction: float = 0.02, seed: int = 0, equilibration: int = 100,
              replicas_per_temperature: int = 1) -> list[Atoms]:
    """Frames from Langevin MD on the oracle, one replica per temperature (K).

    Parameters
    ----------
    oracle : Oracle or Potential
        MD runs on ``oracle.as_potential()`` (exact oracle forces).
    atoms : ase.Atoms
        Starting structure.
    temperatures : K, one replica each (times ``replicas_per_temperature``).
    n_frames : frames kept per replica, every ``stride`` steps of ``timestep`` fs,
        after ``equilibration`` steps.
    seed : int
        Velocities and Langevin noise (replica i uses seed + i).

    Returns ``len(temperatures) * replicas_per_temperature * n_frames`` Atoms
    with ``info['source']`` and ``info['temperature']``.
    """
    if n_frames < 1 or stride < 1:
        raise InputError("n_frames and stride must be >= 1")
    temps = [float(t) for t in temperatures for _ in range(int(replicas_per_temperature))]
    if not temps or min(temps) <= 0:
        raise InputError("temperatures must be a non-empty list of positive K values")
    potential = oracle.as_potential() if hasattr(oracle, "as_potential") else oracle
    start = State.from_atoms(atoms).replicate(len(temps))
    return _run_md(potential, start, temps, n_frames, stride, timestep, friction, seed, equilibration)


def biased_md(oracle, atoms: Atoms, cv, centers: Sequence[float], kappa: float, temperature: float,
              n_frames: int, stride: int = 10, timestep: float = 0.5, friction: float = 0.02, seed: int = 0,
              equilibration: int = 100) -> list[Atoms]:
    """Umbrella-restrained oracle MD along ``cv``, one replica per centre.

    ``kappa`` in eV per CV unit^2 (RESTRAINT 0.5 kappa (s - centre)^2);
    ``temperature`` in K. Frames carry ``info['source'] = 'biased'`` and
    ``info['cv_center']``. Label them afterwards: the bias is not in the labels.
    """
    from ..bias import RESTRAINT
    from ..potentials import Sum

    centers = [float(c) for c in centers]
    if not centers:
        raise InputError("give at least one CV centre")
    potential = oracle.as_potential() if hasattr(oracle, "as_potential") else oracle
    bias = RESTRAINT(cv, at=centers, kappa=float(kappa))
    start = State.from_atoms(atoms).replicate(len(centers))
    frames = _run_md(Sum([potential, bias]), start, [float(temperature)] * len(centers), n_frames, stride,
                     timestep, friction, seed, equilibration)
    per = len(frames) // len(centers)
    for k, a in enumerate(frames):
        a.info["source"] = "biased"
        a.info["cv_center"] = centers[k // per]
    return frames


def normal_mode_sampling(oracle, atoms: Atoms, temperature: float, n_samples: int, seed: int = 0,
                         delta: float = 0.005, min_frequency_cm: float = 50.0) -> list[Atoms]:
    """Displace along harmonic normal modes with classical Boltzmann amplitudes.

    The Hessian comes from central differences of oracle forces (step
    ``delta`` Angstrom); each mode with wavenumber above ``min_frequency_cm``
    (1/cm; drops translations/rotations) gets a Gaussian displacement of
    variance kT / (m omega^2) at ``temperature`` (K). Start from a minimum.
    Each frame records ``info['harmonic_energy']`` (eV), the harmonic energy of
    its displacement (mean: n_modes kT / 2).
    """
    from ..errors import OracleError

    rng = np.random.default_rng(seed)
    n = len(atoms)
    hessian = np.zeros((3 * n, 3 * n))
    for c in range(3 * n):
        grads = []
        for sign in (1.0, -1.0):
            disp = atoms.copy()
            disp.positions[c // 3, c % 3] += sign * delta
            lab = oracle.compute(disp)
            if not lab.ok:
                raise OracleError(f"Hessian displacement failed: {lab.reason}")
            grads.append(-lab.forces.reshape(-1))
        hessian[c] = (grads[0] - grads[1]) / (2 * delta)
    hessian = 0.5 * (hessian + hessian.T)
    inv_sqrt_m = 1.0 / np.sqrt(np.repeat(atoms.get_masses(), 3))
    evals, evecs = np.linalg.eigh(hessian * inv_sqrt_m[:, None] * inv_sqrt_m[None, :])
    from ase.units import invcm, _hbar, _e, _amu
    # omega in 1/s: sqrt(eV/(A^2 amu)); wavenumber for the cut-off
    omega2 = evals * _e / (_amu * 1e-20)
    wavenumber = np.sign(evals) * np.sqrt(np.abs(omega2)) * _hbar / _e / invcm
    keep = wavenumber > min_frequency_cm
    kT = KB * temperature
    sigma = np.sqrt(kT / evals[keep])  # mass-weighted amplitude, sqrt(amu) * A
    out = []
    for s in range(int(n_samples)):
        q = rng.normal(size=keep.sum()) * sigma
        dx = (evecs[:, keep] @ q) * inv_sqrt_m
        frame = atoms.copy()
        frame.calc = None
        frame.positions += dx.reshape(n, 3)
        frame.info.update(source=f"normal_modes_{temperature:.0f}K", temperature=float(temperature),
                          harmonic_energy=float(0.5 * np.sum(evals[keep] * q ** 2)))
        out.append(frame)
    return out
