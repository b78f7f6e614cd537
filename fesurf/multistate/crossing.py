"""Crossing-point searches: the minimum-energy crossing point (MECP) between two
spin surfaces and the minimum-energy conical intersection (MECI) of a diabatic
Hamiltonian.

Both use Harvey's effective gradient (Harvey, Aschi, Schwarz, Koch, Theor.
Chem. Acc. 99, 95 (1998)) ``G = (E_a - E_b) x1 + P g``, where ``x1`` is the
normalised gradient difference and ``P`` projects out the branching space
(``x1`` for an MECP; ``x1`` and the interstate coupling vector for an MECI).
The step takes the two parts separately: a Newton step on the energy
difference along ``x1`` (``-dE x1 / |g_a - g_b|``, exact for linear surfaces)
and a Barzilai-Borwein step on the projected gradient, capped at ``max_step``.

Units: energies eV, positions A, gradients eV/A.

Example
-------
>>> from fesurf.multistate.models import LinearVibronicCoupling
>>> from fesurf.state import State
>>> import torch
>>> s = State(positions=[[0.1, -0.05, 0.0]], atomic_numbers=[1])
>>> r = find_meci(LinearVibronicCoupling(), s, coordinates_mask=torch.tensor([[True, True, False]]))
>>> r.converged, r.gap < 1e-6
(True, True)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from ..errors import InputError
from ..state import State

log = logging.getLogger(__name__)

__all__ = ["CrossingResult", "find_mecp", "find_meci"]


@dataclass
class CrossingResult:
    """Result of a crossing-point search.

    ``state``: final geometry; ``energies``: (E_a, E_b) there (eV); ``gap``: |E_a - E_b|
    (eV); ``energy``: their mean (eV); ``projected_gradient``: max |P g| (eV/A);
    ``converged``; ``n_steps``; ``history``: per step (gap, mean energy).
    """

    state: State
    energies: tuple
    gap: float
    energy: float
    projected_gradient: float
    converged: bool
    n_steps: int
    history: list = field(default_factory=list)


def _search(evaluate, state, mask, max_steps, gap_tol, grad_tol, max_step, step0):
    if state.n_systems != 1:
        raise InputError("crossing searches take a State with one system; use state.select(i)")
    if mask is None:
        mask = torch.ones(state.n_atoms, 3, dtype=torch.bool)
    mask = torch.as_tensor(mask, dtype=torch.bool)
    if mask.shape != (state.n_atoms, 3):
        raise InputError(f"coordinates_mask must have shape [{state.n_atoms}, 3] (True = free coordinate)")
    pos = state.positions.detach().clone()
    prev_x = prev_pg = None
    alpha = step0
    history = []
    converged = False
    for it in range(1, max_steps + 1):
        cur = state.replace(positions=pos)
        ea, eb, ga, gb, extra = evaluate(cur)
        ga, gb = ga[mask], gb[mask]
        diff = ga - gb
        dn = diff.norm()
        x1 = diff / dn if dn > 0 else torch.zeros_like(diff)
        basis = [x1]
        for v in extra:  # further branching-space vectors (MECI: the coupling vector)
            v = v[mask]
            for b in basis:
                v = v - (v @ b) * b
            if v.norm() > 1e-12 * max(1.0, float(dn)):
                basis.append(v / v.norm())
        gmean = 0.5 * (ga + gb)
        pg = gmean.clone()
        for b in basis:
            pg = pg - (pg @ b) * b
        de = float(ea - eb)
        pgmax = float(pg.abs().max()) if pg.numel() else 0.0
        history.append((abs(de), 0.5 * float(ea + eb)))
        if abs(de) < gap_tol and pgmax < grad_tol:
            converged = True
            break
        # Barzilai-Borwein step length on the seam (projected) gradient
        x = pos[mask]
        if prev_x is not None:
            s, y = x - prev_x, pg - prev_pg
            sy = float(s @ y)
            alpha = float(s @ s) / sy if sy > 1e-16 else step0
            alpha = min(max(alpha, 1e-4 * step0), 100 * step0)
        prev_x, prev_pg = x.clone(), pg.clone()
        step = -alpha * pg
        if dn > 0:
            step = step - de * diff / dn**2
        norm = float(step.abs().max())
        if norm > max_step:
            step = step * (max_step / norm)
        pos = pos.clone()
        pos[mask] = x + step
    final = state.replace(positions=pos)
    ea, eb, _, _, _ = evaluate(final)
    res = CrossingResult(state=final, energies=(float(ea), float(eb)), gap=abs(float(ea - eb)),
                         energy=0.5 * float(ea + eb), projected_gradient=pgmax, converged=converged,
                         n_steps=it, history=history)
    if not converged:
        log.warning("crossing search did not converge in %d steps (gap %.2e eV, |Pg| %.2e eV/A)",
                    max_steps, res.gap, pgmax)
    return res


def find_mecp(potential_a, potential_b, state: State, *, coordinates_mask=None, max_steps: int = 500,
              gap_tol: float = 1e-4, grad_tol: float = 5e-3, max_step: float = 0.05,
              step0: float = 0.01) -> CrossingResult:
    """Minimum-energy crossing point between two surfaces (e.g. two spin states).

    Parameters
    ----------
    potential_a, potential_b : fesurf Potentials (eV), each evaluated on ``state``.
    state : State with one system, the starting geometry (A).
    coordinates_mask : optional ``[n_atoms, 3]`` bool, the coordinates allowed to move.
    gap_tol : convergence on |E_a - E_b| (eV). grad_tol : on max |P g| (eV/A).
    max_step : largest coordinate change per step (A).

    Returns a :class:`CrossingResult`; check ``converged``.

    >>> # res = find_mecp(SpinStatePotential(model, 1), SpinStatePotential(model, 3), state)
    """
    def evaluate(s):
        ea, fa = potential_a.energy_and_forces(s)
        eb, fb = potential_b.energy_and_forces(s)
        return ea[0], eb[0], -fa, -fb, []

    return _search(evaluate, state, coordinates_mask, max_steps, gap_tol, grad_tol, max_step, step0)


def find_meci(hamiltonian, state: State, states=(0, 1), *, coordinates_mask=None, max_steps: int = 500,
              gap_tol: float = 1e-4, grad_tol: float = 5e-3, max_step: float = 0.05,
              step0: float = 0.01) -> CrossingResult:
    """Minimum-energy conical intersection of adiabatic ``states`` of a diabatic Hamiltonian.

    The branching space is the gradient difference and the interstate coupling
    vector ``U_i^T (dH/dR) U_j``; the mean energy is minimised in its complement.
    Arguments as in :func:`find_mecp`.

    >>> # res = find_meci(h3_model, start_state); res.state.positions
    """
    from ..surrogates.diabatic import DiabaticHamiltonian

    if not isinstance(hamiltonian, DiabaticHamiltonian):
        raise InputError("find_meci needs a DiabaticHamiltonian (e.g. a trained DiabaticModel)")
    i, j = (hamiltonian._check_index(k) for k in states)
    if i == j:
        raise InputError("find_meci needs two different adiabatic states")

    def evaluate(s):
        e, f = hamiltonian.adiabatic_energies_and_forces(s, [i, j])
        h = hamiltonian.couplings(s, i, j)["h"]
        return e[0, 1], e[0, 0], -f[..., 1], -f[..., 0], [h]

    return _search(evaluate, state, coordinates_mask, max_steps, gap_tol, grad_tol, max_step, step0)
