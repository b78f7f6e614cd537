"""Seed data for active learning: every frame is a reference label, every step batched.

Three sources, all labelled through one ``label(frames) -> list[Label]`` callable (the active
learning loop passes its counting labeller, so every call is recorded):

* :func:`hessian_frames` / :func:`hessian_from_labels`: the 6N central-difference displacements of
  the start structure (step ``delta``, Angstrom); their forces give the Hessian (eV/A^2) and the
  frames themselves are training data.
* :func:`normal_mode_frames`: Gaussian displacements along the Hessian's normal modes with
  classical Boltzmann amplitudes at a temperature (K): variance kT / (m omega^2) per mode;
  modes below ``min_frequency_cm`` (translations, rotations, soft or imaginary modes) are left out.
* :func:`restrained_scan`: a restrained steepest-descent relaxation of the oracle itself along the
  CV, ``U_ref + 0.5 kappa (s - s_k)^2``, target after target in two chains leaving the start in
  opposite directions (the chains advance together, one batched call per step), each step capped at
  ``max_step`` Angstrom per atom; the frame of every step is a label, so the scan costs
  ``n_targets * n_steps`` calls and traces the path along the CV.

Example
-------
>>> from ase.build import molecule
>>> frames = hessian_frames(molecule("H2O"), delta=0.01)
>>> len(frames)
18
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from ase import Atoms

from ..errors import InputError, OracleError
from ..units import KB

log = logging.getLogger(__name__)


def hessian_frames(atoms: Atoms, delta: float = 0.01) -> list[Atoms]:
    """The 6N central-difference displacements of ``atoms`` (+delta, -delta per coordinate, Angstrom),
    in the order coordinate 0 +, coordinate 0 -, coordinate 1 +, ..."""
    if not delta > 0:
        raise InputError(f"the Hessian step must be > 0 Angstrom, got {delta!r}")
    out = []
    for c in range(3 * len(atoms)):
        for sign in (1.0, -1.0):
            a = atoms.copy()
            a.calc = None
            a.positions[c // 3, c % 3] += sign * delta
            a.info["source"] = "seed_hessian"
            out.append(a)
    return out


def hessian_from_labels(labels, n_atoms: int, delta: float) -> np.ndarray:
    """Symmetrised Hessian [3N, 3N] (eV/A^2) from the labels of :func:`hessian_frames`."""
    if len(labels) != 6 * n_atoms:
        raise InputError(f"need {6 * n_atoms} displacement labels for {n_atoms} atoms, got {len(labels)}")
    bad = [k for k, lab in enumerate(labels) if not lab.ok]
    if bad:
        raise OracleError(f"the reference failed on Hessian displacement(s) {bad}: {labels[bad[0]].reason}")
    h = np.zeros((3 * n_atoms, 3 * n_atoms))
    for c in range(3 * n_atoms):
        plus, minus = labels[2 * c], labels[2 * c + 1]
        h[c] = (-plus.forces.reshape(-1) + minus.forces.reshape(-1)) / (2.0 * delta)
    return 0.5 * (h + h.T)


def normal_mode_frames(atoms: Atoms, hessian: np.ndarray, temperature: float, n_samples: int, seed: int = 0,
                       min_frequency_cm: float = 50.0) -> list[Atoms]:
    """Classical normal-mode samples around ``atoms`` at ``temperature`` (K).

    Each frame records ``info['harmonic_energy']`` (eV; its mean over many frames is n_modes kT / 2).
    Returns an empty list when no mode is above ``min_frequency_cm`` (1/cm).
    """
    from ase.units import _amu, _e, _hbar, invcm

    if not temperature > 0:
        raise InputError(f"normal-mode temperature must be > 0 K, got {temperature!r}")
    n = len(atoms)
    inv_sqrt_m = 1.0 / np.sqrt(np.repeat(atoms.get_masses(), 3))
    evals, evecs = np.linalg.eigh(hessian * inv_sqrt_m[:, None] * inv_sqrt_m[None, :])
    omega2 = evals * _e / (_amu * 1e-20)  # 1/s^2 from eV/(A^2 amu)
    wavenumber = np.sign(evals) * np.sqrt(np.abs(omega2)) * _hbar / _e / invcm
    keep = wavenumber > min_frequency_cm
    if not keep.any():
        log.warning("no normal mode above %.0f 1/cm: no normal-mode seed frames", min_frequency_cm)
        return []
    rng = np.random.default_rng(seed)
    sigma = np.sqrt(KB * temperature / evals[keep])  # mass-weighted amplitude, sqrt(amu) A
    out = []
    for _ in range(int(n_samples)):
        q = rng.normal(size=int(keep.sum())) * sigma
        frame = atoms.copy()
        frame.calc = None
        frame.positions += ((evecs[:, keep] @ q) * inv_sqrt_m).reshape(n, 3)
        frame.info.update(source="seed_normal_modes", harmonic_energy=float(0.5 * np.sum(evals[keep] * q ** 2)))
        out.append(frame)
    return out


def restrained_scan(label, atoms: Atoms, start_label, cv, targets, kappa: float, n_steps: int,
                    max_step: float = 0.1, step_size: float = 0.02):
    """A restrained relaxation of the oracle along the CV, labelling every step.

    The targets are sorted into two chains that leave the start structure's CV value in opposite
    directions; along each chain every target is approached from the end of the previous one by
    ``n_steps`` steps of steepest descent on ``U_ref + 0.5 kappa (s - s_k)^2``, each step capped at
    ``max_step`` Angstrom per atom, and the two chains advance together (one batched label call per
    step). So the scan moves a window spacing at a time and reaches both ends of the range.

    Parameters
    ----------
    label : callable(list of Atoms) -> list of Label (the counting labeller)
    atoms : start structure; ``start_label`` its (already computed) label
    cv : the CV (a fesurf CV); targets : CV values
    kappa : restraint force constant, eV per CV unit^2
    n_steps : steps per target (each one a label); max_step : Angstrom; step_size : A^2/eV
        (displacement per unit force before the cap)

    Returns ``(labels, last)``: every label made (in call order) and, per target in the given order,
    ``(Atoms, Label)`` of its last successful frame.
    """
    from ..bias import RESTRAINT
    from ..state import State

    targets = [float(t) for t in targets]
    if not targets:
        raise InputError("restrained_scan needs at least one CV target")
    if int(n_steps) < 1:
        raise InputError(f"scan steps must be >= 1, got {n_steps!r}")
    if not start_label.ok:
        raise OracleError(f"the reference failed on the start structure: {start_label.reason}")
    with torch.no_grad():
        s0 = float(cv(State.from_atoms(atoms))[0])
    order = np.argsort(targets)
    below = [int(k) for k in order[::-1] if targets[k] < s0]
    above = [int(k) for k in order if targets[k] >= s0]
    chains = [c for c in (below, above) if c]
    n = len(atoms)
    pos = [torch.as_tensor(atoms.positions, dtype=torch.float64).clone() for _ in chains]
    current = [start_label for _ in chains]
    good_pos = [p.clone() for p in pos]
    last = {}
    made = []
    for stage in range(max(len(c) for c in chains)):
        active = [i for i, c in enumerate(chains) if stage < len(c)]
        which = [chains[i][stage] for i in active]
        bias = RESTRAINT(cv, at=[targets[k] for k in which], kappa=float(kappa))
        base = State.from_atoms(atoms).replicate(len(active))
        for _ in range(int(n_steps)):
            state = base.replace(positions=torch.cat([pos[i] for i in active]))
            _, f_bias = bias.energy_and_forces(state)
            f_ref = torch.as_tensor(np.concatenate([current[i].forces for i in active]), dtype=f_bias.dtype)
            move = (step_size * (f_ref + f_bias)).view(len(active), n, 3)
            longest = move.norm(dim=-1).amax(dim=-1).clamp_min(1e-12)
            move = move * (max_step / longest).clamp(max=1.0)[:, None, None]
            frames = []
            for j, i in enumerate(active):
                pos[i] = pos[i] + move[j]
                a = atoms.copy()
                a.calc = None
                a.positions = pos[i].numpy().copy()
                a.info["source"] = "seed_scan"
                a.info["cv_target"] = targets[which[j]]
                frames.append(a)
            labels = label(frames)
            made += labels
            for j, (i, a, lab) in enumerate(zip(active, frames, labels)):
                if lab.ok:
                    current[i], good_pos[i] = lab, pos[i].clone()
                    last[which[j]] = (a, lab)
                else:  # back to the last good frame of this chain
                    pos[i] = good_pos[i].clone()
                    log.warning("restrained scan: target %.3f failed (%s)", targets[which[j]], lab.reason)
    return made, [last.get(k) for k in range(len(targets))]
