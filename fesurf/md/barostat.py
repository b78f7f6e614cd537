"""Constant pressure on the batched State: stochastic cell rescaling (Bernetti & Bussi 2020) with Langevin particles.

Every replica has its own cell, temperature, pressure and random stream, so a batch of replicas at
different pressures runs in one potential call per step (and a replica batched gives the trajectory it
gives alone). The potential supplies energy, forces and the virial ``W = -dE/d(strain)`` in one
autograd pass (:func:`energy_forces_virial`); it must be periodic and differentiable in the cell
(``supports_stress``).

The cell is a first-order (overdamped) stochastic variable, as in Bernetti & Bussi, *J. Chem. Phys.*
153, 114107 (2020):

* ``mode="isotropic"``: the variable is ``lambda = sqrt(V)`` with constant diffusion
  ``D = kT beta_T / (4 tau_p)``; its drift force is ``f = 2 lambda (P_int - P0) + kT / lambda``, with the
  instantaneous internal pressure ``P_int = tr(sum_i m v_i v_i + W) / (3 V)`` (kinetic part included).
  Positions and the cell are scaled by ``(V'/V)^(1/3)``, velocities by its inverse. Any cell shape.
* ``mode="anisotropic"``: each axis of an orthorhombic cell has its own variable ``eps_a = ln L_a``
  with constant diffusion ``D = kT beta_T / (tau_p V_0)`` (``V_0`` the starting volume) and drift force
  ``f_a = V (P_aa - P0) + kT``; the axes fluctuate independently under the hydrostatic pressure
  ``P0`` (LAMMPS' ``aniso``: no shear).

Both sample the isothermal-isobaric distribution exactly in the limit of small steps: with the scaled
positions and momenta the phase-space density in the cell variable ``q`` is
``exp(-beta (K + U + P0 V)) J(q)`` with ``J = lambda`` (isotropic) or ``V`` (anisotropic), and the drift is
``-(D/kT) dE_eff/dq`` of ``E_eff = K + U + P0 V - kT ln J``.

One step (OBABO with the cell move inside the drift, as i-PI's reversible scheme): O(dt/2) B(dt/2)
[draw the cell move from the pressure at the current positions] A(dt/2) S A(dt/2) [forces]
B(dt/2) O(dt/2). The effective energy

    H_eff = K + U + P0 V - kT ln J - W_thermostat - sum kT ln[q(q'->q) / q(q->q')]

(the last sum: the log ratio of the reverse and forward probabilities of every cell move, evaluated
with the forces after the move) is conserved up to integration error; it is the ``conserved`` entry of
:meth:`info` and the quantity the blow-up check watches.

Units: pressure eV/A^3 (``ase.units.GPa`` converts), compressibility A^3/eV, tau_p and timestep fs,
friction 1/fs, temperature K, volumes A^3.

Example
-------
>>> from ase.build import bulk
>>> from ase.units import GPa
>>> from fesurf.potentials import LennardJones
>>> from fesurf.state import State
>>> s = State.from_atoms(bulk("Ar", "fcc", a=5.3, cubic=True)).replicate(2)
>>> md = StochasticCellRescaling(LennardJones(), timestep=5.0, temperature=40.0, pressure=[0.0, 0.1 * GPa],
...                              compressibility=1 / (3 * GPa), tau_p=500.0, seed=1)
>>> out = md.run(maxwell_boltzmann(s, 40.0, seed=2), n_steps=20)
>>> tuple(out.cell.shape)
(2, 3, 3)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import torch

from ..errors import InputError, SimulationError
from ..state import State
from ..units import KB, MV2_TO_EV
from .integrators import _Thermostatted, maxwell_boltzmann, per_system

log = logging.getLogger(__name__)

__all__ = ["energy_forces_virial", "pressure_tensor", "StochasticCellRescaling", "CellRescalingDynamics",
           "maxwell_boltzmann"]

MODES = ("isotropic", "anisotropic")


def energy_forces_virial(potential, state: State, create_graph: bool = False):
    """``(energy [S] eV, forces [n, 3] eV/A, virial [S, 3, 3] eV)`` in one autograd pass through the
    positions and a homogeneous symmetric strain of positions and cell; ``virial = -dE/d(strain)``, so
    the ASE stress is ``-virial / V`` and the potential's part of the pressure ``tr(virial) / (3V)``.

    Works for any differentiable fesurf potential whose energy follows the cell (pair vectors with
    integer cell shifts, ``fesurf.neighbors``); surrogates return their committee mean.

    >>> from ase.build import bulk
    >>> from fesurf.potentials import LennardJones
    >>> s = State.from_atoms(bulk("Ar", "fcc", a=5.3, cubic=True))
    >>> e, f, w = energy_forces_virial(LennardJones(), s)
    >>> tuple(w.shape)
    (1, 3, 3)
    """
    if state.cell is None:
        raise InputError("the virial needs a cell; give the State a cell (and pbc) for periodic systems")
    if not getattr(potential, "differentiable", True):
        raise InputError(f"{type(potential).__name__} is not differentiable by autograd, so it gives no virial")
    with torch.enable_grad():
        pos0 = state.positions.detach().requires_grad_(True)
        strain = torch.zeros(state.n_systems, 3, 3, dtype=state.dtype, requires_grad=True)
        deform = torch.eye(3, dtype=state.dtype) + 0.5 * (strain + strain.transpose(1, 2))
        pos = torch.einsum("ni,nij->nj", pos0, deform[state.system_index])
        cell = torch.bmm(state.cell.detach(), deform)
        energy = potential.energy(state.replace(positions=pos, cell=cell))
        g_pos, g_strain = torch.autograd.grad(energy.sum(), [pos0, strain], create_graph=create_graph,
                                              allow_unused=True)
    forces = torch.zeros_like(pos0) if g_pos is None else -g_pos
    virial = torch.zeros_like(strain) if g_strain is None else -g_strain
    energy = energy.to(state.dtype)
    if not create_graph:
        energy, forces, virial = energy.detach(), forces.detach(), virial.detach()
    return energy, forces.to(state.dtype), virial.to(state.dtype)


def pressure_tensor(state: State, virial: torch.Tensor) -> torch.Tensor:
    """Instantaneous internal pressure tensor ``[S, 3, 3]`` (eV/A^3): ``(sum_i m_i v_i v_i + W) / V``."""
    v = state.velocities if state.velocities is not None else torch.zeros_like(state.positions)
    mvv = (state.masses[:, None, None] * v[:, :, None] * v[:, None, :]) * MV2_TO_EV
    kinetic = torch.zeros(state.n_systems, 3, 3, dtype=state.dtype).index_add_(0, state.system_index, mvv)
    volume = torch.linalg.det(state.cell).abs()
    return (kinetic + virial) / volume[:, None, None]


class StochasticCellRescaling(_Thermostatted):
    """NPT molecular dynamics: Langevin particles (OBABO) and a stochastic-cell-rescaling barostat.

    Parameters
    ----------
    potential : Potential with ``supports_stress`` (periodic, cell-aware)
    timestep : fs
    temperature : K, one value or one per replica
    pressure : eV/A^3, one value or one per replica (hydrostatic)
    compressibility : A^3/eV, an estimate of the isothermal compressibility beta_T (sets the coupling,
        not the result), one value or one per replica
    tau_p : fs, barostat relaxation time (one value or one per replica)
    friction : 1/fs, Langevin friction of the particles
    mode : ``"isotropic"`` (any cell, shape kept) or ``"anisotropic"`` (orthorhombic cells, independent axes)
    seed : int or one int per replica

    :meth:`info` adds ``volume`` [S] (A^3), ``pressure`` [S] (instantaneous, eV/A^3), ``cell`` [S, 3, 3] to
    the energies; ``conserved`` is the effective energy of the module docstring.
    """

    def __init__(self, potential, timestep, temperature=None, pressure=0.0, compressibility=None, tau_p=1000.0,
                 friction=0.01, mode: str = "isotropic", seed=None, **kwargs):
        super().__init__(potential, timestep, temperature, seed, **kwargs)
        if not getattr(potential, "supports_stress", False):
            raise InputError(f"{type(potential).__name__} does not declare supports_stress: constant pressure needs a "
                             "periodic, cell-aware potential (its energy must follow the cell)")
        if mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {mode!r}")
        if compressibility is None:
            raise InputError("compressibility= (A^3/eV) is needed: an estimate of the isothermal compressibility "
                             "(e.g. 1 / (bulk modulus); 1 / (100 * ase.units.GPa) for a stiff solid) sets the coupling")
        self.pressure, self.compressibility, self.tau_p = pressure, compressibility, tau_p
        self.friction, self.mode = friction, mode
        self._restore = None

    # ----------------------------------------------------------------------------------- set-up
    def _setup(self, state: State):
        if state.cell is None or not bool(state.pbc.all()):
            raise InputError("constant pressure needs periodic systems: every replica needs a cell and pbc=True "
                             "along all three axes")
        work = state.clone()
        if self._restore is not None:  # a checkpoint's cells and accumulators (see set_rng_state)
            cells = torch.as_tensor(self._restore["cells"], dtype=work.dtype)
            if cells.shape != work.cell.shape:
                raise InputError("restored barostat state has a different number of replicas than the state")
            work.cell = cells
        if work.velocities is None:
            work.velocities = torch.zeros_like(work.positions)
        from .integrators import ACCELERATION

        self._inv_mass = (ACCELERATION / work.masses)[:, None]
        self._energy, self._forces, self._virial = energy_forces_virial(self.potential, work)
        self._vol = self._volume(work)
        self._thermostat_work = torch.zeros(work.n_systems, dtype=work.dtype)
        self._barostat_energy = torch.zeros(work.n_systems, dtype=work.dtype)
        self._prepare(work)
        self._work = work
        return work

    def _prepare(self, work):
        super()._prepare(work)
        n = work.n_systems
        self._p0 = per_system(self.pressure, n, "pressure", positive=False)
        self._beta_t = per_system(self.compressibility, n, "compressibility")
        self._tau = per_system(self.tau_p, n, "tau_p")
        gamma = per_system(self.friction, n, "friction")
        self._kt = KB * self._temps
        c1 = torch.exp(-0.5 * gamma * self.dt)
        self._c1 = c1[work.system_index][:, None].to(work.dtype)
        sigma = torch.sqrt(KB * self._temps[work.system_index] / (work.masses * MV2_TO_EV))
        self._c2sigma = (torch.sqrt(1.0 - c1 * c1)[work.system_index] * sigma)[:, None].to(work.dtype)
        if self.mode == "anisotropic":
            off = work.cell - torch.diag_embed(torch.diagonal(work.cell, dim1=1, dim2=2))
            if bool((off.abs() > 1e-10).any()):
                raise InputError("mode='anisotropic' scales the three axes independently and needs orthorhombic "
                                 "cells (diagonal lattice vectors); use mode='isotropic' for other cells")
            v0 = self._restore["v0"] if self._restore is not None else self._volume(work).tolist()
            self._v0 = torch.as_tensor(v0, dtype=work.dtype)
            self._diffusion = self._kt * self._beta_t / (self._tau * self._v0)
        else:
            self._diffusion = self._kt * self._beta_t / (4.0 * self._tau)
        if self._restore is not None:
            self._thermostat_work = torch.as_tensor(self._restore["thermostat_work"], dtype=work.dtype)
            self._barostat_energy = torch.as_tensor(self._restore["barostat_energy"], dtype=work.dtype)
            self._restore = None

    @staticmethod
    def _volume(work):
        return torch.linalg.det(work.cell).abs()

    # -------------------------------------------------------------------------------- observables
    def info(self) -> dict:
        work = self._work
        kinetic = work.kinetic_energy()
        volume = self._vol
        jac = 0.5 * torch.log(volume) if self.mode == "isotropic" else torch.log(volume)
        ptens = pressure_tensor(work, self._virial)
        return {
            "potential_energy": self._energy,
            "kinetic_energy": kinetic,
            "conserved": self._energy + kinetic + self._p0 * volume - self._kt * jac - self._thermostat_work
            - self._barostat_energy,
            "volume": volume,
            "pressure": torch.diagonal(ptens, dim1=1, dim2=2).sum(-1) / 3.0,
            "cell": work.cell.clone(),
        }

    # ----------------------------------------------------------------------------------- stepping
    def _update_forces(self):
        self._energy, self._forces, self._virial = energy_forces_virial(self.potential, self._work)

    def _ou(self):
        work = self._work
        k_before = work.kinetic_energy()
        work.velocities.mul_(self._c1).add_(self._c2sigma * self._normal().to(work.dtype))
        self._thermostat_work += work.kinetic_energy() - k_before

    def _cell_force(self):
        """Drift force on the cell variable: [S] (isotropic, on lambda) or [S, 3] (anisotropic, on ln L_a)."""
        work = self._work
        v = work.velocities
        mv2 = torch.zeros(work.n_systems, 3, dtype=work.dtype).index_add_(
            0, work.system_index, work.masses[:, None] * v * v) * MV2_TO_EV
        diag = mv2 + torch.diagonal(self._virial, dim1=1, dim2=2)  # V * diagonal of the pressure tensor
        volume = self._vol
        if self.mode == "isotropic":
            lam = torch.sqrt(volume)
            return 2.0 * (diag.sum(-1) / (3.0 * lam) - lam * self._p0) + self._kt / lam
        return diag - (volume * self._p0)[:, None] + self._kt[:, None]

    def _barostat_normals(self, k):
        return torch.as_tensor(np.array([r.standard_normal(k) for r in self._rngs]), dtype=self._work.dtype)

    def _draw(self):
        """Cell move of this step: (scale matrix diagonal [S, 3], forward force, displacement)."""
        f = self._cell_force()
        d, kt, dt = self._diffusion, self._kt, self.dt
        if self.mode == "isotropic":
            xi = self._barostat_normals(1)[:, 0]
            lam = torch.sqrt(self._vol)
            dq = d * f * dt / kt + torch.sqrt(2.0 * d * dt) * xi
            new = lam + dq
            if not bool((new > 0).all()) or not bool(torch.isfinite(new).all()):
                self._blow_up("the volume became non-positive")
            mu = (new / lam) ** (2.0 / 3.0)
            return mu[:, None].expand(-1, 3), f, dq
        xi = self._barostat_normals(3)
        dq = (d * dt / kt)[:, None] * f + torch.sqrt(2.0 * d * dt)[:, None] * xi
        if not bool(torch.isfinite(dq).all()):
            self._blow_up("the cell became non-finite")
        return torch.exp(dq), f, dq

    def _blow_up(self, what):
        replica = 0
        raise SimulationError(f"constant-pressure run blew up at step {self.step_count}: {what}. Raise tau_p, check "
                              "the compressibility estimate (A^3/eV) or shorten the timestep", replica=replica,
                              step=self.step_count, last_good_state=self._work.clone())

    def _scale(self, mu):
        work = self._work
        m = mu[work.system_index]
        work.positions.mul_(m)
        work.velocities.div_(m)
        work.cell = work.cell * mu[:, None, :]  # rows are lattice vectors: column a scales with axis a
        self._vol = self._vol * mu.prod(-1)

    def _close_move(self, f_old, dq):
        """Accumulate ``kT ln[q(q'->q) / q(q->q')]`` of the move, with the drift force after it."""
        f_new = self._cell_force()
        d, kt, dt = self._diffusion, self._kt, self.dt
        if self.mode == "isotropic":
            log_ratio = -dq * (f_old + f_new) / (2.0 * kt) + d * dt * (f_old ** 2 - f_new ** 2) / (4.0 * kt ** 2)
        else:
            log_ratio = (-dq * (f_old + f_new) / (2.0 * kt[:, None])
                         + (d * dt / (4.0 * kt ** 2))[:, None] * (f_old ** 2 - f_new ** 2)).sum(-1)
        self._barostat_energy += kt * log_ratio

    def _advance(self):
        self._ou()
        self._kick(0.5)
        mu, f_old, dq = self._draw()
        self._drift(0.5)
        self._scale(mu)
        self._drift(0.5)
        self._update_forces()
        self._close_move(f_old, dq)
        self._kick(0.5)
        self._ou()

    # ---------------------------------------------------------------------------- checkpoints
    def rng_state(self):
        """JSON-able state for checkpoints: every replica's RNG, the cells and the energy accumulators
        (the shared driver stores positions and velocities; the cell travels here)."""
        base = super().rng_state()
        if self._work is None:
            return base
        out = {"rngs": base, "cells": self._work.cell.tolist(),
               "thermostat_work": self._thermostat_work.tolist(), "barostat_energy": self._barostat_energy.tolist()}
        if self.mode == "anisotropic":
            out["v0"] = self._v0.tolist()
        return out

    def set_rng_state(self, states):
        """Restore :meth:`rng_state` output (before :meth:`run`); the cells replace the next start State's."""
        if isinstance(states, dict):
            super().set_rng_state(states["rngs"])
            self._restore = states
        else:
            super().set_rng_state(states)


@dataclass(frozen=True)
class CellRescalingDynamics:
    """Settings of :class:`StochasticCellRescaling`, a mover for the shared driver
    (``fesurf.sampling._engine.drive``) and the protocols built on it (``dynamics=``).

    Parameters: ``timestep`` fs, ``friction`` 1/fs, ``pressure`` eV/A^3 (one or per replica),
    ``compressibility`` A^3/eV, ``tau_p`` fs, ``mode`` ``"isotropic"``/``"anisotropic"``, ``seed``.

    >>> from ase.units import GPa
    >>> CellRescalingDynamics(timestep=2.0, pressure=0.0, compressibility=1 / (100 * GPa)).attrs()["dynamics"]
    'langevin-obabo+stochastic-cell-rescaling'
    """

    timestep: float = 1.0
    friction: Union[float, Sequence[float]] = 0.01
    pressure: Union[float, Sequence[float]] = 0.0
    compressibility: Union[float, Sequence[float], None] = None
    tau_p: Union[float, Sequence[float]] = 1000.0
    mode: str = "isotropic"
    seed: int = 0

    def __post_init__(self):
        for name in ("timestep",):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0:
                raise InputError(f"{name} must be a positive number, got {v!r}")
        if self.compressibility is None:
            raise InputError("compressibility= (A^3/eV) is needed: an estimate of the isothermal compressibility")
        for name in ("friction", "compressibility", "tau_p"):
            a = np.asarray(getattr(self, name), dtype=np.float64)
            if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a <= 0):
                raise InputError(f"{name} must be positive, one value or one per replica; got {getattr(self, name)!r}")
        p = np.asarray(self.pressure, dtype=np.float64)
        if p.size == 0 or not np.all(np.isfinite(p)):
            raise InputError(f"pressure must be finite (eV/A^3), got {self.pressure!r}")
        if self.mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {self.mode!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise InputError(f"seed must be an int, got {self.seed!r}")

    def build(self, potential, temperature: float, n_systems: int, noise_seeds):
        """The integrator for ``n_systems`` replicas (``noise_seeds``: one int per replica)."""
        return StochasticCellRescaling(potential, timestep=float(self.timestep), temperature=temperature,
                                       pressure=self.pressure, compressibility=self.compressibility, tau_p=self.tau_p,
                                       friction=self.friction, mode=self.mode, seed=noise_seeds)

    def attrs(self) -> dict:
        """What a SampleSet records about the dynamics."""
        return {"dynamics": "langevin-obabo+stochastic-cell-rescaling", "timestep_fs": float(self.timestep),
                "friction_per_fs": float(np.asarray(self.friction).reshape(-1)[0]),
                "pressure_eV_A3": np.asarray(self.pressure, dtype=float).reshape(-1).tolist(),
                "compressibility_A3_eV": float(np.asarray(self.compressibility).reshape(-1)[0]),
                "tau_p_fs": float(np.asarray(self.tau_p).reshape(-1)[0]), "barostat_mode": self.mode,
                "seed": int(self.seed)}
