"""One contract check that every potential in the project passes.

:func:`check_potential` verifies, on a given State:

1. shapes and dtypes: energy ``[n_systems]``, forces ``[n_atoms, 3]``;
2. no mutation of the input State;
3. batched evaluation equals one-by-one evaluation;
4. forces equal 4th-order central finite differences of the energy;
5. invariance under a rigid rotation and translation, where the potential
   claims it (``rotation_invariant`` / ``translation_invariant``);
6. for periodic states and potentials with ``supports_stress``: the stress equals 4th-order central
   finite differences of the energy under a homogeneous symmetric strain (:func:`finite_difference_stress`).

Example
-------
>>> from ase.build import molecule
>>> from fesurf.potentials import LennardJones, check_potential
>>> from fesurf.state import State
>>> report = check_potential(LennardJones(), State.from_atoms(molecule("CH4")).replicate(2))
>>> report["max_force_error"] < 1e-6
True
"""
from __future__ import annotations

import torch

from ..state import State


class ContractViolation(AssertionError):
    """A potential broke the Potential contract; the message says which part."""


def _random_rotation(generator, dtype):
    q = torch.randn(4, generator=generator, dtype=dtype)
    q = q / q.norm()
    a, b, c, d = q
    return torch.stack([
        torch.stack([a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)]),
        torch.stack([2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)]),
        torch.stack([2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d]),
    ])


def _snapshot(state):
    return {k: v.clone() for k, v in vars(state).items() if torch.is_tensor(v)}


def finite_difference_forces(potential, state: State, step: float = 1e-3, max_coords: int | None = None,
                             generator: torch.Generator | None = None):
    """Forces by the 4th-order central stencil, all displaced copies in one batch.

    Returns ``(fd_forces [n_atoms, 3], mask [n_atoms, 3])``; ``mask`` marks the
    coordinates that were differenced (all, or a random ``max_coords`` subset).
    """
    n = state.n_atoms
    coords = torch.arange(3 * n)
    if max_coords is not None and 3 * n > max_coords:
        coords = torch.randperm(3 * n, generator=generator)[:max_coords]
    fd = torch.zeros(3 * n, dtype=state.dtype)
    mask = torch.zeros(3 * n, dtype=torch.bool)
    shifts = (-2.0, -1.0, 1.0, 2.0)
    weights = (1.0, -8.0, 8.0, -1.0)
    for i in range(state.n_systems):
        one = state.select(i)
        a, b = state.atom_slices()[i]
        local = [int(c) - 3 * a for c in coords if 3 * a <= c < 3 * b]
        if not local:
            continue
        batch = one.replicate(len(local) * len(shifts))
        pos = batch.positions.clone().view(len(local), len(shifts), b - a, 3)
        for j, c in enumerate(local):
            for k, s in enumerate(shifts):
                pos[j, k, c // 3, c % 3] += s * step
        energy = potential.select_systems([i] * batch.n_systems).energy(batch.replace(positions=pos.view(-1, 3))).detach().view(len(local), len(shifts))
        w = torch.as_tensor(weights, dtype=energy.dtype)
        deriv = (energy * w).sum(dim=1) / (12.0 * step)
        for j, c in enumerate(local):
            fd[3 * a + c] = -deriv[j]
            mask[3 * a + c] = True
    return fd.view(n, 3), mask.view(n, 3)


def finite_difference_stress(potential, state: State, step: float = 1e-4) -> torch.Tensor:
    """Stress ``[n_systems, 3, 3]`` (eV/A^3, ASE sign) by the 4th-order central stencil in a homogeneous
    symmetric strain of positions and cell, ``(1/V) dE/d(strain)``; all strained copies of a system in one batch."""
    shifts, weights = (-2.0, -1.0, 1.0, 2.0), (1.0, -8.0, 8.0, -1.0)
    comps = [(a, b) for a in range(3) for b in range(a, 3)]
    out = torch.zeros(state.n_systems, 3, 3, dtype=state.dtype)
    eye = torch.eye(3, dtype=state.dtype)
    for i in range(state.n_systems):
        one = state.select(i)
        deform = []
        for a, b in comps:
            for s in shifts:
                eps = torch.zeros(3, 3, dtype=state.dtype)
                eps[a, b] += 0.5 * s * step
                eps[b, a] += 0.5 * s * step
                deform.append(eye + eps)
        deform = torch.stack(deform)  # [6*4, 3, 3]
        batch = one.replicate(deform.shape[0])
        pos = torch.einsum("ni,nij->nj", batch.positions, deform[batch.system_index])
        cell = torch.bmm(batch.cell, deform)
        energy = potential.select_systems([i] * batch.n_systems).energy(
            batch.replace(positions=pos, cell=cell)).detach().view(len(comps), len(shifts))
        deriv = (energy * torch.as_tensor(weights, dtype=energy.dtype)).sum(dim=1) / (12.0 * step)
        volume = torch.linalg.det(one.cell[0]).abs()
        for (a, b), d in zip(comps, deriv):
            out[i, a, b] = out[i, b, a] = d / volume
    return out


def check_potential(potential, state: State, *, force_rtol: float = 1e-6, batch_rtol: float = 1e-10,
                    invariance_atol: float = 1e-8, fd_step: float = 1e-3, max_fd_coords: int | None = 120,
                    seed: int = 0, stress_atol: float = 1e-5, stress_step: float = 1e-4) -> dict:
    """Check the Potential contract; raise :class:`ContractViolation` on failure.

    Parameters
    ----------
    potential : Potential
    state : State
        Use at least two systems so batching is exercised.
    force_rtol : float
        Allowed ``max|F - F_fd| / max(max|F|, 1 eV/A)``.
    batch_rtol : float
        Allowed relative difference between batched and one-by-one results.
    invariance_atol : float
        Allowed energy change (eV) under rotation/translation (float64).
    fd_step : float
        Finite-difference step in Angstrom.
    max_fd_coords : int or None
        Difference at most this many randomly chosen coordinates (None: all).
    stress_atol : float
        Allowed ``max|sigma - sigma_fd|`` (eV/A^3) for periodic states of potentials with ``supports_stress``.
    stress_step : float
        Finite-difference strain step (dimensionless).

    Returns a dict of the measured errors.
    """
    gen = torch.Generator().manual_seed(seed)
    report = {}
    before = _snapshot(state)
    energy, forces = potential.energy_and_forces(state)
    for key, value in _snapshot(state).items():
        if not torch.equal(value, before[key]):
            raise ContractViolation(f"the potential modified the input state's {key}")
    energy_only = potential.energy(state).detach()

    # 1. shapes
    if tuple(energy.shape) != (state.n_systems,):
        raise ContractViolation(f"energy has shape {tuple(energy.shape)}, expected ({state.n_systems},)")
    if tuple(forces.shape) != (state.n_atoms, 3):
        raise ContractViolation(f"forces have shape {tuple(forces.shape)}, expected ({state.n_atoms}, 3)")
    if not (torch.isfinite(energy).all() and torch.isfinite(forces).all()):
        raise ContractViolation("energy or forces are not finite on the test state")
    scale_e = max(float(energy.abs().max()), 1.0)
    if float((energy - energy_only).abs().max()) > batch_rtol * scale_e:
        raise ContractViolation("energy() and energy_and_forces() disagree")

    # 2. no mutation (also checked right after the first call above)
    for key, value in _snapshot(state).items():
        if not torch.equal(value, before[key]):
            raise ContractViolation(f"the potential modified the input state's {key}")

    # 3. batched == one-by-one
    scale_f = max(float(forces.abs().max()), 1.0)
    worst_e = worst_f = 0.0
    for i, (a, b) in enumerate(state.atom_slices()):
        e_i, f_i = potential.select_systems([i]).energy_and_forces(state.select(i))
        worst_e = max(worst_e, float((e_i[0] - energy[i]).abs()) / scale_e)
        worst_f = max(worst_f, float((f_i - forces[a:b]).abs().max()) / scale_f)
    report["batch_energy_error"], report["batch_force_error"] = worst_e, worst_f
    if worst_e > batch_rtol or worst_f > batch_rtol:
        raise ContractViolation(f"batched and one-by-one evaluations differ (energy {worst_e:.2e}, "
                                f"forces {worst_f:.2e} relative; allowed {batch_rtol:.0e})")

    # 4. finite differences
    fd, mask = finite_difference_forces(potential, state, fd_step, max_fd_coords, gen)
    err = float((fd - forces)[mask].abs().max()) / scale_f
    report["max_force_error"] = err
    if not err <= force_rtol:
        raise ContractViolation(f"forces differ from finite differences by {err:.2e} (relative to "
                                f"max|F| = {scale_f:.3g} eV/A); allowed {force_rtol:.0e}")

    # 5. invariance
    if getattr(potential, "translation_invariant", False) or getattr(potential, "rotation_invariant", False):
        pos = state.positions.clone()
        cell = None if state.cell is None else state.cell.clone()
        rot = torch.eye(3, dtype=state.dtype)
        if getattr(potential, "rotation_invariant", False):
            rot = _random_rotation(gen, state.dtype)
            pos = pos @ rot.T
            cell = None if cell is None else cell @ rot.T
        if getattr(potential, "translation_invariant", False):
            pos = pos + torch.randn(3, generator=gen, dtype=state.dtype) * 3.0
        e2, f2 = potential.energy_and_forces(state.replace(positions=pos, cell=cell))
        de = float((e2 - energy).abs().max())
        df = float((f2 - forces @ rot.T).abs().max())
        report["invariance_energy_error"], report["invariance_force_error"] = de, df
        if de > invariance_atol or df > invariance_atol * 100:
            raise ContractViolation(f"rotation/translation changed the energy by {de:.2e} eV and the "
                                    f"forces by {df:.2e} eV/A; the potential claims invariance")

    # 6. stress of periodic states
    if getattr(potential, "supports_stress", False) and state.cell is not None and state.is_periodic:
        stress = potential.stress(state).detach()
        if tuple(stress.shape) != (state.n_systems, 3, 3) or not bool(torch.isfinite(stress).all()):
            raise ContractViolation(f"stress has shape {tuple(stress.shape)} (expected ({state.n_systems}, 3, 3)) "
                                    "or is not finite")
        err = float((stress - finite_difference_stress(potential, state, stress_step)).abs().max())
        report["max_stress_error"] = err
        if not err <= stress_atol:
            raise ContractViolation(f"stress differs from finite differences of the strain by {err:.2e} eV/A^3; "
                                    f"allowed {stress_atol:.0e}")
    return report


__all__ = ["check_potential", "finite_difference_forces", "finite_difference_stress", "ContractViolation"]
