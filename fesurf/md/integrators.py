"""Integrators on the batched State: velocity Verlet (NVE), Langevin BAOAB and
Bussi–Donadio–Parrinello stochastic velocity rescaling (NVT).

Units: timestep in fs, temperature in K, friction in 1/fs, tau in fs.

Every replica (system) has its own temperature and its own random stream
(numpy PCG64 seeded with ``seed + i``, or with the i-th of a list of seeds), so
a batch of replicas follows exactly the trajectories the replicas would
follow run one at a time with the same seeds.

The conserved quantity reported is ``U + K - W_thermostat``, where
``W_thermostat`` is the kinetic energy the thermostat has added so far; it is
constant up to integration error for every integrator here.

Example
-------
>>> from fesurf.potentials import Harmonic
>>> from fesurf.md import Langevin, maxwell_boltzmann
>>> from fesurf.state import State
>>> s = State(positions=[[0.1, 0.0, 0.0]] * 4, atomic_numbers=[1] * 4, system_index=[0, 1, 2, 3])
>>> md = Langevin(Harmonic(k=1.0), timestep=1.0, temperature=[100, 200, 300, 400], friction=0.01, seed=1)
>>> final = md.run(maxwell_boltzmann(s, 300.0, seed=2), n_steps=100)
>>> final.velocities.shape
torch.Size([4, 3])
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..errors import InputError, SimulationError
from ..state import State
from ..units import KB, MV2_TO_EV

log = logging.getLogger(__name__)

#: multiply a force/mass in eV/(A amu) by this to get an acceleration in A/fs^2.
ACCELERATION = 1.0 / MV2_TO_EV


def make_rngs(seed, n_systems: int):
    """One numpy Generator per replica: ``seed + i`` for an int, or the i-th of a list."""
    if seed is None:
        raise InputError("a stochastic integrator needs seed= (an int, or one int per replica)")
    if isinstance(seed, (int, np.integer)):
        seeds = [int(seed) + i for i in range(n_systems)]
    else:
        seeds = [int(s) for s in seed]
        if len(seeds) != n_systems:
            raise InputError(f"got {len(seeds)} seeds for {n_systems} replicas; give one per replica or one int")
    return [np.random.Generator(np.random.PCG64(s)) for s in seeds]


def per_system(value, n_systems, name, positive=True):
    """A float or [n_systems] sequence as a float64 tensor [n_systems]; checked."""
    if value is None:
        raise InputError(f"{name} is required")
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.ndim == 0:
        t = t.expand(n_systems).clone()
    if t.shape != (n_systems,):
        raise InputError(f"{name} must be a number or one value per replica ({n_systems}), got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all() or (positive and (t <= 0).any()):
        raise InputError(f"{name} must be finite{' and positive' if positive else ''}, got {t.tolist()}")
    return t


def maxwell_boltzmann(state: State, temperature, seed, remove_com: bool = False) -> State:
    """A copy of ``state`` with velocities (A/fs) drawn from Maxwell–Boltzmann at ``temperature`` (K).

    ``remove_com=True`` removes each system's centre-of-mass velocity (then
    3 degrees of freedom per system carry no kinetic energy).
    """
    temps = per_system(temperature, state.n_systems, "temperature")
    rngs = make_rngs(seed, state.n_systems)
    sl = state.atom_slices()
    noise = torch.cat([torch.from_numpy(r.standard_normal((b - a, 3))) for r, (a, b) in zip(rngs, sl)]).to(state.dtype)
    sigma = torch.sqrt(KB * temps[state.system_index] / (state.masses * MV2_TO_EV))
    v = noise * sigma[:, None]
    if remove_com:
        v = v - _com_velocity(state, v)
    return state.replace(velocities=v)


def _com_velocity(state, v):
    mv = state.sum_per_system(state.masses[:, None] * v)
    mtot = state.sum_per_system(state.masses)
    return (mv / mtot[:, None])[state.system_index]


def reporter_due(reporter, step: int, start_step: int) -> bool:
    """Whether ``reporter`` wants step ``step`` of a run that began at ``start_step``: its own
    ``due(step)`` when it has one, else every ``stride`` steps."""
    due = getattr(reporter, "due", None)
    return due(step) if due is not None else (step - start_step) % reporter.stride == 0


class Integrator:
    """Base class: the run loop, reporters, progress bar and blow-up checks.

    Parameters
    ----------
    potential : Potential
    timestep : float
        fs.
    check_every : int
        Steps between blow-up checks; the last state that passed a check is
        kept and attached to the :class:`~fesurf.errors.SimulationError`.
    max_energy_change : float
        eV per atom; a replica whose conserved energy moves further than this
        from its start value is declared runaway.
    """

    stochastic = False

    def __init__(self, potential, timestep: float, check_every: int = 10, max_energy_change: float = 1.0):
        if not (isinstance(timestep, (int, float)) and timestep > 0 and np.isfinite(timestep)):
            raise InputError(f"timestep must be a positive number of fs, got {timestep!r}")
        if int(check_every) < 1:
            raise InputError("check_every must be >= 1")
        self.potential = potential
        self.dt = float(timestep)
        self.check_every = int(check_every)
        self.max_energy_change = float(max_energy_change)
        self.step_count = 0
        self._work = None
        self._rngs = None

    # ----------------------------------------------------------- set-up
    def _setup(self, state: State):
        """Take a private copy of the state and compute initial forces."""
        work = state.clone()
        if work.velocities is None:
            work.velocities = torch.zeros_like(work.positions)
        self._inv_mass = (ACCELERATION / work.masses)[:, None]
        self._energy, self._forces = self.potential.energy_and_forces(work)
        self._thermostat_work = torch.zeros(work.n_systems, dtype=work.dtype)
        self._prepare(work)
        self._work = work
        return work

    def _prepare(self, work):
        """Subclass hook: per-replica constants."""

    # -------------------------------------------------------- observables
    def info(self) -> dict:
        """[n_systems] energies (eV) of the current state."""
        kinetic = self._work.kinetic_energy()
        return {
            "potential_energy": self._energy,
            "kinetic_energy": kinetic,
            "conserved": self._energy + kinetic - self._thermostat_work,
        }

    # ---------------------------------------------------------- stepping
    def _kick(self, fraction):
        self._work.velocities.add_(self._forces * self._inv_mass, alpha=fraction * self.dt)

    def _drift(self, fraction):
        self._work.positions.add_(self._work.velocities, alpha=fraction * self.dt)

    def _update_forces(self):
        self._energy, self._forces = self.potential.energy_and_forces(self._work)

    def _advance(self):
        raise NotImplementedError

    # ------------------------------------------- manual stepping (protocols)
    def start(self, state: State) -> None:
        """Begin stepping by hand from ``state`` (a private copy is taken).

        For protocols that change the potential between steps (switching,
        lambda ramps): call :meth:`start`, then :meth:`refresh_forces` after
        each change of the potential, and :meth:`advance` to step.
        """
        self._setup(state)

    def advance(self, n_steps: int = 1) -> None:
        """Advance ``n_steps`` steps from where :meth:`start` or the last call left off."""
        for _ in range(int(n_steps)):
            self._advance()
            self.step_count += 1

    def refresh_forces(self) -> None:
        """Recompute energies and forces after the potential's parameters changed."""
        self._update_forces()

    @property
    def current(self) -> State:
        """The working State of a hand-stepped run (not a copy: do not modify)."""
        return self._work

    def step(self, state: State) -> State:
        """Advance one step from ``state`` and return the new State (input untouched)."""
        self._setup(state)
        self._advance()
        self.step_count += 1
        return self._work.clone()

    # -------------------------------------------------------- RNG state
    def rng_state(self):
        """JSON-able RNG state of every replica (for checkpoints)."""
        return None if self._rngs is None else [r.bit_generator.state for r in self._rngs]

    def set_rng_state(self, states):
        """Restore :meth:`rng_state` output (call after construction, before :meth:`run`)."""
        if states is None:
            return
        self._rngs = [np.random.Generator(np.random.PCG64()) for _ in states]
        for r, s in zip(self._rngs, states):
            r.bit_generator.state = s

    # --------------------------------------------------------------- run
    def run(self, state: State, n_steps: int, reporters: Sequence = (), progress=None) -> State:
        """Run ``n_steps`` steps from ``state`` and return the final State.

        ``reporters``: objects with ``stride`` and ``report(step, state, info)``;
        they see step 0 (the start) and every ``stride`` steps, or, for a reporter with a
        ``due(step) -> bool`` method, the steps it says. ``progress``:
        True/False, or None for a tqdm bar only on a terminal.

        Raises :class:`~fesurf.errors.SimulationError` naming the replica and
        step when energies become non-finite or run away.
        """
        if int(n_steps) < 0:
            raise InputError("n_steps must be >= 0")
        n_steps = int(n_steps)
        work = self._setup(state)
        start_step = self.step_count
        reference = self.info()["conserved"].clone()
        n_atoms = work.atoms_per_system.to(work.dtype)
        last_good = (work.positions.clone(), work.velocities.clone())
        self._check(reference, n_atoms, last_good)
        for rep in reporters:
            rep.report(self.step_count, work, self.info())
        bar = tqdm(total=n_steps, disable=(not progress) if progress is not None else None,
                   desc=type(self).__name__, unit="step", mininterval=0.5)
        update_every = max(1, n_steps // 200)
        for i in range(1, n_steps + 1):
            self._advance()
            self.step_count += 1
            if i % self.check_every == 0 or i == n_steps:
                self._check(reference, n_atoms, last_good)
                last_good = (work.positions.clone(), work.velocities.clone())
            for rep in reporters:
                if reporter_due(rep, self.step_count, start_step):
                    rep.report(self.step_count, work, self.info())
            if i % update_every == 0:
                bar.update(update_every)
        bar.close()
        return work.clone()

    def _check(self, reference, n_atoms, last_good):
        conserved = self.info()["conserved"]
        finite = torch.isfinite(conserved) & torch.isfinite(self._work.sum_per_system(self._forces.abs().sum(dim=1)))
        runaway = (conserved - reference).abs() > self.max_energy_change * n_atoms
        bad = ~finite | runaway
        if bool(bad.any()):
            replica = int(torch.nonzero(bad)[0])
            kind = "non-finite energy or forces" if not bool(finite[replica]) else (
                f"runaway energy (conserved energy moved {float(conserved[replica] - reference[replica]):.3g} eV, "
                f"more than {self.max_energy_change} eV/atom)")
            good = self._work.replace(positions=last_good[0], velocities=last_good[1])
            raise SimulationError(
                f"simulation blew up at step {self.step_count} in replica {replica}: {kind}. "
                "Reduce the timestep, check the starting structure, or raise max_energy_change; "
                "the last good frame is in error.last_good_state.",
                replica=replica, step=self.step_count, last_good_state=good.clone())


class VelocityVerlet(Integrator):
    """NVE velocity Verlet. ``timestep`` in fs.

    >>> from fesurf.potentials import Harmonic
    >>> from fesurf.state import State
    >>> s = State(positions=[[1.0, 0.0, 0.0]], atomic_numbers=[1])
    >>> round(float(VelocityVerlet(Harmonic(k=1.0), timestep=0.5).run(s, 10).positions[0, 0]), 4)
    0.6232
    """

    def _advance(self):
        self._kick(0.5)
        self._drift(1.0)
        self._update_forces()
        self._kick(0.5)


class _Thermostatted(Integrator):
    stochastic = True

    def __init__(self, potential, timestep, temperature, seed, **kwargs):
        super().__init__(potential, timestep, **kwargs)
        if temperature is None:
            raise InputError(f"{type(self).__name__} needs temperature= in K (a number or one per replica)")
        self.temperature = temperature
        self.seed = seed
        if seed is None:
            raise InputError(f"{type(self).__name__} needs seed= (an int, or one int per replica)")

    def _prepare(self, work):
        self._temps = per_system(self.temperature, work.n_systems, "temperature")
        if self._rngs is None:
            self._rngs = make_rngs(self.seed, work.n_systems)
        elif len(self._rngs) != work.n_systems:
            raise InputError("restored RNG state has a different number of replicas than the state")
        self._slices = work.atom_slices()

    def _normal(self):
        """[n_atoms, 3] standard normals, each replica from its own stream."""
        return torch.from_numpy(np.concatenate([r.standard_normal((b - a, 3)) for r, (a, b) in zip(self._rngs, self._slices)]))


class Langevin(_Thermostatted):
    """Langevin dynamics, BAOAB splitting (Leimkuhler–Matthews), NVT.

    Parameters: ``timestep`` fs, ``temperature`` K (float or per replica),
    ``friction`` 1/fs (float or per replica), ``seed``.
    """

    def __init__(self, potential, timestep, temperature=None, friction=0.01, seed=None, **kwargs):
        super().__init__(potential, timestep, temperature, seed, **kwargs)
        self.friction = friction

    def _prepare(self, work):
        super()._prepare(work)
        gamma = per_system(self.friction, work.n_systems, "friction")
        c1 = torch.exp(-gamma * self.dt)
        self._c1 = c1[work.system_index][:, None].to(work.dtype)
        sigma = torch.sqrt(KB * self._temps[work.system_index] / (work.masses * MV2_TO_EV))
        self._c2sigma = (torch.sqrt(1.0 - c1 * c1)[work.system_index] * sigma)[:, None].to(work.dtype)
        # the O step's change of |v|^2 per atom, summed over steps; folded into the per-system
        # thermostat work (eV) only when info() is read, not every step
        self._dv2 = torch.zeros(work.n_atoms, dtype=work.dtype)

    def _fold_thermostat_work(self):
        work = self._work
        self._thermostat_work += work.sum_per_system(0.5 * MV2_TO_EV * work.masses.to(work.dtype) * self._dv2)
        self._dv2.zero_()

    def info(self) -> dict:
        self._fold_thermostat_work()
        return super().info()

    def _advance(self):
        work = self._work
        self._kick(0.5)
        self._drift(0.5)
        v = work.velocities
        v2_before = (v * v).sum(dim=1)
        v.mul_(self._c1).add_(self._c2sigma * self._normal().to(work.dtype))
        self._dv2 += (v * v).sum(dim=1) - v2_before
        self._drift(0.5)
        self._update_forces()
        self._kick(0.5)


class Bussi(_Thermostatted):
    """Stochastic velocity rescaling (Bussi, Donadio, Parrinello 2007), NVT.

    Velocity Verlet followed by a canonical rescaling of each replica's
    kinetic energy with relaxation time ``tau`` (fs). ``n_dof`` per replica
    defaults to 3N, or 3N - 3 with ``remove_com=True`` (use that for
    translation-invariant potentials started with zero total momentum).
    """

    def __init__(self, potential, timestep, temperature=None, tau=100.0, seed=None, remove_com=None, **kwargs):
        super().__init__(potential, timestep, temperature, seed, **kwargs)
        if not tau > 0:
            raise InputError("tau must be a positive relaxation time in fs")
        self.tau = float(tau)
        self.remove_com = potential.translation_invariant if remove_com is None else bool(remove_com)

    def degrees_of_freedom(self, state: State) -> torch.Tensor:
        """[n_systems] kinetic degrees of freedom."""
        return 3 * state.atoms_per_system - (3 if self.remove_com else 0)

    def _prepare(self, work):
        super()._prepare(work)
        if self.remove_com:
            work.velocities.sub_(_com_velocity(work, work.velocities))
        self._ndof = self.degrees_of_freedom(work).tolist()
        self._c = float(np.exp(-self.dt / self.tau))

    def _advance(self):
        work = self._work
        self._kick(0.5)
        self._drift(1.0)
        self._update_forces()
        self._kick(0.5)
        kinetic = work.kinetic_energy()
        alpha = torch.ones(work.n_systems, dtype=work.dtype)
        c = self._c
        for i, (rng, nf) in enumerate(zip(self._rngs, self._ndof)):
            k = float(kinetic[i])
            if k <= 0.0:
                continue
            k_target = 0.5 * nf * KB * float(self._temps[i])
            r1 = rng.standard_normal()
            s = rng.chisquare(nf - 1) if nf > 1 else 0.0
            ratio = k_target / (nf * k)
            a2 = c + (1.0 - c) * ratio * (r1 * r1 + s) + 2.0 * r1 * np.sqrt(c * (1.0 - c) * ratio)
            sign = np.sign(r1 + np.sqrt(c / ((1.0 - c) * ratio)))
            alpha[i] = sign * np.sqrt(a2)
        work.velocities.mul_(alpha[work.system_index][:, None])
        self._thermostat_work += (alpha * alpha - 1.0) * kinetic
