"""Path-integral molecular dynamics on the batched State: ring polymers whose beads are replicas.

A quantum system at temperature T is sampled by P classical copies (beads) joined by harmonic
springs into a ring polymer, simulated at the bead temperature P T (Parrinello and Rahman 1984;
the i-PI conventions of Kapil et al., CPC 236, 214 (2019)). The bead Hamiltonian of one ring
polymer is

    H_P = sum_j [ p_j^2 / 2m + 1/2 m w_P^2 (q_j - q_{j+1})^2 + V(q_j) ],   w_P = P kT / hbar,

and its Boltzmann distribution at beta_P = beta / P is the discretised quantum canonical
distribution. Beads are systems of one :class:`~fesurf.state.State`: a
:class:`~fesurf.replicas.ReplicaMap` with a ``bead`` axis (default ``ReplicaMap(ring=R, bead=P)``,
beads innermost) says which systems form a ring polymer, and one potential call evaluates every
bead of every ring polymer.

:class:`RingPolymer` integrates in the normal modes of the free ring polymer (real orthonormal
transform, frequencies w_k = 2 w_P sin(k pi / P)):

- the free ring polymer is propagated exactly (``propagator="exact"``) or with the Cayley
  transform (``"cayley"``; Korol, Bou-Rabee, Miller, JCP 151, 124103 (2019)), which stays stable
  for any w_k dt;
- PILE-L (Ceriotti, Parrinello, Markland, Manolopoulos, JCP 133, 124104 (2010)): Langevin on the
  centroid with time constant ``tau_centroid`` and critical damping gamma_k = 2 lambda w_k on the
  internal modes;
- splittings ``"baoab"`` (default; Liu, Li, Liu, JCP 145, 024103 (2016)) or ``"obabo"`` (i-PI's
  default).

Masses are per atom (isotopes: :func:`substitute_isotopes`); the beads of one ring polymer must
share them. The conserved quantity is H_P minus the work done by the thermostat. Noise comes from
one numpy PCG64 stream per ring polymer (one draw of [P, n_atoms, 3] normals per O step), so the
same seeds give the same trajectory and a batch of ring polymers follows exactly the trajectories
they follow run one at a time. A non-finite bead energy or force, or a runaway conserved energy,
stops the run with :class:`~fesurf.errors.SimulationError` naming the ring polymer and the bead.

Units: positions Angstrom, velocities Angstrom/fs, masses amu, energies eV, timestep and
``tau_centroid`` fs, temperature K.

Example
-------
>>> from fesurf.potentials import Harmonic
>>> from fesurf.state import State
>>> from fesurf.md.ring_polymer import RingPolymer, ring_polymer_state
>>> s = State(positions=[[0.0, 0.0, 0.0]], atomic_numbers=[1])
>>> beads = ring_polymer_state(s, n_beads=8, temperature=300.0, seed=0)
>>> rp = RingPolymer(Harmonic(k=5.0), n_beads=8, timestep=0.5, temperature=300.0, seed=1)
>>> final = rp.run(beads, 20)
>>> final.n_systems, sorted(rp.observables())[:3]
(8, ['centroid', 'conserved', 'kinetic_md'])
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from ase import units as _ase_units
from tqdm import tqdm

from ..errors import InputError, SimulationError
from ..potentials.base import Potential
from ..replicas import ReplicaMap
from ..state import State
from ..units import KB, MV2_TO_EV
from .integrators import ACCELERATION, make_rngs, per_system, reporter_due

log = logging.getLogger(__name__)

#: reduced Planck constant in eV fs (from ase.units).
HBAR = _ase_units._hbar / _ase_units._e * 1e15

#: relative atomic masses (amu) of common isotopes, AME2020 (Wang et al., Chinese Phys. C 45, 030003
#: (2021)); keys are the names :func:`substitute_isotopes` accepts, values (atomic number, mass).
ISOTOPES = {
    "H": (1, 1.00782503223), "D": (1, 2.01410177812), "T": (1, 3.01604928132),
    "12C": (6, 12.0), "13C": (6, 13.00335483507), "14N": (7, 14.00307400443), "15N": (7, 15.00010889888),
    "16O": (8, 15.99491461957), "17O": (8, 16.99913175650), "18O": (8, 17.99915961286),
}

__all__ = ["RingPolymer", "PILEDynamics", "RingPolymerReporter", "CentroidPotential", "ring_polymer_state",
           "substitute_isotopes", "normal_mode_matrix", "free_ring_frequencies", "bead_map", "HBAR", "ISOTOPES"]


# ----------------------------------------------------------------------------- normal modes
def normal_mode_matrix(n_beads: int, dtype=torch.float64) -> torch.Tensor:
    """Real orthonormal normal-mode matrix C [P, P] of the free ring polymer (i-PI's convention).

    Column k is mode k: q_j = sum_k C[j, k] Q_k. Mode 0 is the centroid (C[j, 0] = 1/sqrt(P)); modes
    1..P/2 are cosines, the rest sines, and for even P mode P/2 alternates in sign.

    >>> C = normal_mode_matrix(4)
    >>> bool(torch.allclose(C.T @ C, torch.eye(4, dtype=C.dtype)))
    True
    """
    P = int(n_beads)
    if P < 1:
        raise InputError(f"n_beads must be >= 1, got {n_beads}")
    j = torch.arange(P, dtype=dtype)[:, None]
    c = torch.zeros(P, P, dtype=dtype)
    c[:, 0] = 1.0 / math.sqrt(P)
    for k in range(1, P):
        if 2 * k < P:
            c[:, k] = math.sqrt(2.0 / P) * torch.cos(2 * math.pi * j[:, 0] * k / P)
        elif 2 * k == P:
            c[:, k] = (-1.0) ** j[:, 0] / math.sqrt(P)
        else:
            c[:, k] = math.sqrt(2.0 / P) * torch.sin(2 * math.pi * j[:, 0] * k / P)
    return c


def free_ring_frequencies(n_beads: int) -> np.ndarray:
    """Dimensionless free ring-polymer frequencies w_k / w_P = 2 sin(k pi / P), k = 0..P-1 (matches
    :func:`normal_mode_matrix`'s column order)."""
    k = np.arange(int(n_beads))
    return 2.0 * np.sin(np.pi * k / int(n_beads))


def bead_map(n_systems: int, n_beads: int) -> ReplicaMap:
    """The default layout: ``ReplicaMap(ring=n_systems // P, bead=P)`` (beads of a ring polymer contiguous)."""
    P = int(n_beads)
    if P < 1 or n_systems % P:
        raise InputError(f"{n_systems} systems cannot be split into ring polymers of {n_beads} beads; "
                         "the State must hold n_rings x n_beads systems")
    return ReplicaMap(ring=n_systems // P, bead=P)


def _check_map(replica_map, n_systems, n_beads):
    if replica_map is None:
        return bead_map(n_systems, n_beads)
    if not isinstance(replica_map, ReplicaMap) or "bead" not in replica_map.names:
        raise InputError("replica_map must be a fesurf.replicas.ReplicaMap with a 'bead' axis")
    if replica_map.size("bead") != int(n_beads) or replica_map.n_systems != n_systems:
        raise InputError(f"replica_map {replica_map} does not fit {n_systems} systems of {n_beads} beads")
    return replica_map


def _atoms_per_system(state: State) -> int:
    counts = state.atoms_per_system
    if bool((counts != counts[0]).any()):
        raise InputError("ring polymers need the same number of atoms in every system (bead)")
    return int(counts[0])


# ----------------------------------------------------------------------------- state helpers
def substitute_isotopes(state: State, substitutions: dict, systems: Optional[Sequence[int]] = None) -> State:
    """A copy of ``state`` with some atoms' masses changed (isotopes).

    Parameters
    ----------
    substitutions : {atom index within a system: isotope name (see :data:`ISOTOPES`, e.g. "D", "13C",
        "18O") or a mass in amu}
    systems : which systems to change (default all); every system must hold the same molecule.

    >>> s = State(positions=[[0.0, 0, 0], [0.9, 0, 0]], atomic_numbers=[8, 1])
    >>> round(float(substitute_isotopes(s, {1: "D"}).masses[1]), 4)
    2.0141
    """
    if not isinstance(state, State):
        raise InputError(f"state must be a fesurf State, got {type(state).__name__}")
    if not isinstance(substitutions, dict) or not substitutions:
        raise InputError("substitutions must be a non-empty dict {atom index: isotope name or mass in amu}")
    n_atoms = _atoms_per_system(state)
    sys_list = list(range(state.n_systems)) if systems is None else [int(s) for s in systems]
    masses = state.masses.clone()
    z = state.atomic_numbers.view(state.n_systems, n_atoms)
    for atom, iso in substitutions.items():
        if isinstance(atom, bool) or not isinstance(atom, (int, np.integer)) or not 0 <= int(atom) < n_atoms:
            raise InputError(f"atom index {atom!r} is out of range 0..{n_atoms - 1}")
        if isinstance(iso, str):
            if iso not in ISOTOPES:
                raise InputError(f"unknown isotope {iso!r}; use one of {sorted(ISOTOPES)} or a mass in amu")
            zi, mass = ISOTOPES[iso]
            wrong = [s for s in sys_list if int(z[s, int(atom)]) != zi]
            if wrong:
                raise InputError(f"isotope {iso} is element Z={zi} but atom {atom} has Z={int(z[wrong[0], int(atom)])}")
        else:
            mass = float(iso)
            if not np.isfinite(mass) or mass <= 0:
                raise InputError(f"isotope mass for atom {atom} must be a positive number of amu, got {iso!r}")
        for s in sys_list:
            masses[s * n_atoms + int(atom)] = mass
    return state.replace(masses=masses)


def ring_polymer_state(state: State, n_beads: int, temperature, seed: int, spread: bool = True) -> State:
    """Expand a classical State (one system per ring polymer) into a bead State (ring r, bead j ->
    system r * P + j) with velocities drawn at the bead temperature P T.

    ``spread=True`` draws the internal normal modes from the free ring polymer at ``temperature`` (K)
    around the given positions (the centroid), so a run starts near equilibrium; otherwise every bead
    starts at the classical positions. ``seed`` (int): ring polymer r uses ``seed + r``.

    >>> s = State(positions=[[0.0, 0.0, 0.0]], atomic_numbers=[1])
    >>> ring_polymer_state(s, 4, 300.0, seed=0).n_systems
    4
    """
    if not isinstance(state, State):
        raise InputError(f"state must be a fesurf State, got {type(state).__name__}")
    P = int(n_beads)
    if P < 1:
        raise InputError(f"n_beads must be >= 1, got {n_beads}")
    R = state.n_systems
    n_atoms = _atoms_per_system(state)
    temps = per_system(temperature, R, "temperature")
    rngs = make_rngs(seed, R)
    beads = state.select(np.repeat(np.arange(R), P).tolist())
    C = normal_mode_matrix(P, state.dtype)
    w = torch.as_tensor(free_ring_frequencies(P), dtype=state.dtype)
    kT_P = (KB * P * temps).to(state.dtype)  # eV
    m = state.masses.view(R, 1, n_atoms, 1)
    sigma_v = torch.sqrt(kT_P.view(R, 1, 1, 1) / (m * MV2_TO_EV))  # A/fs, every mode
    noise_v = torch.stack([torch.from_numpy(r.standard_normal((P, n_atoms, 3))) for r in rngs]).to(state.dtype)
    v_nm = sigma_v * noise_v
    q_nm = torch.zeros(R, P, n_atoms, 3, dtype=state.dtype)
    q_nm[:, 0] = math.sqrt(P) * state.positions.view(R, n_atoms, 3)
    if spread and P > 1:
        wP = (P * KB * temps / HBAR).to(state.dtype).view(R, 1, 1, 1)  # 1/fs
        wk = wP * w.view(1, P, 1, 1)
        sigma_q = torch.sqrt(kT_P.view(R, 1, 1, 1) / (m * MV2_TO_EV)) / torch.where(wk > 0, wk, torch.ones_like(wk))
        noise_q = torch.stack([torch.from_numpy(r.standard_normal((P, n_atoms, 3))) for r in rngs]).to(state.dtype)
        q_nm[:, 1:] = (sigma_q * noise_q)[:, 1:]
    q = torch.einsum("jk,rkac->rjac", C, q_nm).reshape(-1, 3)
    v = torch.einsum("jk,rkac->rjac", C, v_nm).reshape(-1, 3)
    return beads.replace(positions=q.contiguous(), velocities=v.contiguous())


# ----------------------------------------------------------------------------- centroid bias
class CentroidPotential(Potential):
    """A potential of the ring-polymer centroids, seen by every bead: E_bead = U(centroid of its ring).

    ``inner`` is evaluated on a State with one system per ring polymer (the bead-averaged positions);
    each bead of ring r is given U_r, so the ring polymer's bead Hamiltonian gains P U_r and its
    Boltzmann factor at beta_P = beta / P is exp(-beta U_r): an umbrella restraint on the centroid CV.
    The force on every bead is the full -dU/dc. Forces come from autograd.

    It couples the beads of a ring polymer, so ``select_systems`` works on whole ring polymers only
    (with P = 1 it is ``inner`` and passes :func:`~fesurf.potentials.check_potential`).

    >>> from fesurf.potentials import Harmonic
    >>> s = State(positions=[[1.0, 0, 0], [3.0, 0, 0]], atomic_numbers=[1, 1], system_index=[0, 1])
    >>> CentroidPotential(Harmonic(k=1.0), n_beads=2).energy(s).tolist()    # centroid at x = 2
    [2.0, 2.0]
    """

    def __init__(self, inner: Potential, n_beads: int, replica_map: ReplicaMap | None = None):
        super().__init__()
        if not isinstance(inner, Potential):
            raise InputError("CentroidPotential needs a fesurf Potential to evaluate on the centroids")
        if int(n_beads) < 1:
            raise InputError(f"n_beads must be >= 1, got {n_beads}")
        self.inner = inner
        self.n_beads = int(n_beads)
        self.replica_map = replica_map
        self.translation_invariant = inner.translation_invariant
        self.rotation_invariant = inner.rotation_invariant
        self._template = None

    def select_systems(self, systems):
        systems = list(np.asarray(systems).reshape(-1))
        if self.n_beads == 1:
            return CentroidPotential(self.inner.select_systems(systems), 1)
        P = self.n_beads
        rings = sorted(set(s // P for s in systems))
        if systems != [r * P + j for r in rings for j in range(P)]:
            raise InputError("a CentroidPotential can only be restricted to whole ring polymers (all their beads)")
        return CentroidPotential(self.inner.select_systems(rings), P)

    def centroid_state(self, state: State) -> State:
        """The State of the centroids (one system per ring polymer), differentiable in the bead positions."""
        rmap = _check_map(self.replica_map, state.n_systems, self.n_beads)
        n_atoms = _atoms_per_system(state)
        key = (state.n_systems, n_atoms, state.dtype)
        if self._template is None or self._template[0] != key:
            first = rmap.split(np.arange(state.n_systems), "bead")[:, 0].tolist()
            self._template = (key, state.select(first))
        cen = rmap.reduce(state.positions.reshape(state.n_systems, n_atoms * 3), "bead")
        return self._template[1].replace(positions=cen.reshape(-1, 3))

    def energy(self, state: State) -> torch.Tensor:
        rmap = _check_map(self.replica_map, state.n_systems, self.n_beads)
        return rmap.expand(self.inner.energy(self.centroid_state(state)), "bead")

    def energy_and_forces(self, state: State, create_graph: bool = False):
        # every bead feels the full centroid force: -d(P U(c))/dq_j = -P dU/dc * (1/P)
        if create_graph or state.positions.requires_grad:
            return super().energy_and_forces(state, create_graph)
        rmap = _check_map(self.replica_map, state.n_systems, self.n_beads)
        e, f = self.inner.energy_and_forces(self.centroid_state(state))
        f_rings = f.reshape(state.n_systems // self.n_beads, -1)
        return rmap.expand(e, "bead"), rmap.expand(f_rings, "bead").reshape(-1, 3)


# ----------------------------------------------------------------------------- the integrator
class _Info(Mapping):
    """Lazy reporter info: computed on first access of each key."""

    def __init__(self, rp):
        self._rp, self._cache = rp, {}

    def __getitem__(self, key):
        if key not in self._cache:
            self._cache[key] = self._rp._info_value(key)
        return self._cache[key]

    def __iter__(self):
        return iter(self._rp._INFO_KEYS)

    def __len__(self):
        return len(self._rp._INFO_KEYS)


class RingPolymer:
    """Path-integral MD with PILE-L for every ring polymer of a bead State.

    Parameters
    ----------
    potential : Potential
        Evaluated on the bead State (all beads of all ring polymers in one call); may include a
        :class:`CentroidPotential` bias.
    n_beads : int
        P.
    timestep : fs
    temperature : K, one value or one per ring polymer (the physical temperature T; beads move at P T)
    seed : int (ring polymer r uses seed + r) or one int per ring polymer; needed with a thermostat
    thermostat : "pile_l" (default) or None (microcanonical ring-polymer MD)
    tau_centroid : fs, centroid Langevin time constant (gamma_0 = 1 / tau)
    pile_lambda : internal-mode damping gamma_k = 2 pile_lambda w_k (1 = i-PI's default)
    propagator : "exact" or "cayley" (free ring-polymer step)
    splitting : "baoab" or "obabo"
    replica_map : ReplicaMap with a ``bead`` axis (default ``ReplicaMap(ring=R, bead=P)``)
    check_every : steps between blow-up checks
    max_energy_change : eV per atom per bead that the conserved energy may move before the run is
        declared runaway

    The :meth:`run` signature and ``step_count`` / ``rng_state`` / ``set_rng_state`` match the
    classical integrators, so :func:`fesurf.sampling._engine.drive` runs it (see :class:`PILEDynamics`).
    """

    stochastic = True
    _INFO_KEYS = ("potential_energy", "kinetic_energy", "conserved", "ring_potential", "ring_kinetic",
                  "spring_energy", "ring_conserved")

    def __init__(self, potential, n_beads: int, timestep: float, temperature=None, seed=None, *,
                 thermostat: Optional[str] = "pile_l", tau_centroid: float = 100.0, pile_lambda: float = 1.0,
                 propagator: str = "exact", splitting: str = "baoab", replica_map: ReplicaMap | None = None,
                 check_every: int = 10, max_energy_change: float = 1.0):
        if isinstance(n_beads, bool) or not isinstance(n_beads, (int, np.integer)) or int(n_beads) < 1:
            raise InputError(f"n_beads must be a whole number >= 1, got {n_beads!r}")
        if not (isinstance(timestep, (int, float)) and np.isfinite(timestep) and timestep > 0):
            raise InputError(f"timestep must be a positive number of fs, got {timestep!r}")
        if thermostat not in ("pile_l", None):
            raise InputError(f"thermostat must be 'pile_l' or None (NVE ring polymer), got {thermostat!r}")
        if propagator not in ("exact", "cayley"):
            raise InputError(f"propagator must be 'exact' or 'cayley', got {propagator!r}")
        if splitting not in ("baoab", "obabo"):
            raise InputError(f"splitting must be 'baoab' or 'obabo', got {splitting!r}")
        if temperature is None:
            raise InputError("RingPolymer needs temperature= in K (it sets the spring constants)")
        if thermostat is not None:
            if seed is None:
                raise InputError("RingPolymer with a thermostat needs seed= (an int, or one int per ring polymer)")
            if not (np.isfinite(tau_centroid) and tau_centroid > 0):
                raise InputError(f"tau_centroid must be a positive time in fs, got {tau_centroid!r}")
            if not (np.isfinite(pile_lambda) and pile_lambda > 0):
                raise InputError(f"pile_lambda must be positive, got {pile_lambda!r}")
        if int(check_every) < 1:
            raise InputError("check_every must be >= 1")
        self.potential = potential
        self.n_beads = int(n_beads)
        self.dt = float(timestep)
        self.temperature = temperature
        self.seed = seed
        self.thermostat = thermostat
        self.tau_centroid = float(tau_centroid)
        self.pile_lambda = float(pile_lambda)
        self.propagator = propagator
        self.splitting = splitting
        self.replica_map = replica_map
        self.check_every = int(check_every)
        self.max_energy_change = float(max_energy_change)
        self.step_count = 0
        self._rngs = None
        self._work = None

    # ------------------------------------------------------------------ layout
    def _grid(self, flat):
        """[n_atoms_total, 3] -> [R, P, 3A] (a view when beads are innermost)."""
        if self._beads_last:
            return flat.view(self._R, self.n_beads, 3 * self._n_atoms)
        return self._map.split(flat.reshape(self._n_sys, self._n_atoms * 3), "bead")

    def _flat(self, grid):
        if self._beads_last:
            return grid.reshape(-1, 3)
        return self._map.merge(grid, "bead").reshape(-1, 3)

    def _apply_modes(self, M, x, out=None):
        """M [P, P] applied along the bead axis of x [R, P, 3A] (a plain mm for one ring polymer)."""
        if self._R == 1:
            if out is None:
                return torch.mm(M, x[0]).unsqueeze(0)
            torch.mm(M, x[0], out=out[0])
            return out
        R, P, n = x.shape  # one GEMM over all ring polymers beats R tiny batched ones
        y = torch.mm(M, x.permute(1, 0, 2).reshape(P, R * n)).view(P, R, n).permute(1, 0, 2)
        if out is None:
            return y.contiguous()
        out.copy_(y)
        return out

    def _to_nm(self, grid, out=None):
        return self._apply_modes(self._CT, grid, out)

    def _from_nm(self, nm, out=None):
        return self._apply_modes(self._C, nm, out)

    # ------------------------------------------------------------------ set-up
    def _setup(self, state: State):
        if not isinstance(state, State):
            raise InputError(f"state must be a fesurf State, got {type(state).__name__}")
        P = self.n_beads
        self._map = _check_map(self.replica_map, state.n_systems, P)
        self._beads_last = self._map.names[-1] == "bead"
        self._n_sys = state.n_systems
        self._n_atoms = A = _atoms_per_system(state)
        R = self._n_sys // P
        self._R = R
        work = state.clone()
        if work.velocities is None:
            work.velocities = torch.zeros_like(work.positions)
        dtype = work.dtype
        masses = self._grid(work.masses[:, None].expand(-1, 3).contiguous())  # [R, P, 3A]
        if not torch.allclose(masses, masses[:, :1].expand_as(masses), rtol=1e-12, atol=0):
            raise InputError("the beads of a ring polymer must have the same masses (set isotopes on the "
                             "classical State before ring_polymer_state, or with substitute_isotopes on all beads)")
        z = self._grid(work.atomic_numbers[:, None].expand(-1, 3).contiguous())
        if bool((z != z[:, :1]).any()):
            raise InputError("the beads of a ring polymer must hold the same atoms in the same order")
        self._m = masses[:, :1].contiguous()  # [R, 1, 3A] amu
        self._inv_m = ACCELERATION / self._m
        self._temps = per_system(self.temperature, R, "temperature").to(dtype)
        self._beta = 1.0 / (KB * self._temps)  # 1/eV, [R]
        self._C = normal_mode_matrix(P, dtype)
        self._CT = self._C.T.contiguous()
        wP = P * KB * self._temps / HBAR  # 1/fs
        self._wP = wP
        wk = wP[:, None] * torch.as_tensor(free_ring_frequencies(P), dtype=dtype)[None, :]  # [R, P]
        self._wk = wk[:, :, None]  # [R, P, 1]
        self._half_m_wk2 = 0.5 * self._m * self._wk ** 2 * MV2_TO_EV  # eV / A^2, [R, P, 3A]
        self._free_half = self._free_propagator(0.5 * self.dt)
        self._free_full = self._free_propagator(self.dt)
        if self.thermostat is not None:
            if self._rngs is None:
                self._rngs = make_rngs(self.seed, R)
            elif len(self._rngs) != R:
                raise InputError("restored RNG state has a different number of ring polymers than the state")
            gamma = torch.empty(R, P, 1, dtype=dtype)
            gamma[:, 0] = 1.0 / self.tau_centroid
            gamma[:, 1:] = 2.0 * self.pile_lambda * self._wk[:, 1:]
            dt_o = self.dt if self.splitting == "baoab" else 0.5 * self.dt
            c1 = torch.exp(-gamma * dt_o)
            sigma = torch.sqrt(KB * P * self._temps.view(R, 1, 1) / (self._m * MV2_TO_EV))  # A/fs
            self._c1 = c1.expand(R, P, 3 * A).contiguous()
            self._c2 = (torch.sqrt(1.0 - c1 * c1) * sigma).contiguous()
            self._noise = torch.empty(R, P, 3 * A, dtype=torch.float64)
            if dtype != torch.float64:
                raise InputError("RingPolymer integrates in float64; convert the State with state.to(torch.float64)")
            self._noise_np = self._noise.numpy()
        work.positions = work.positions.contiguous()
        self._work = work
        self._Q = self._to_nm(self._grid(work.positions)).contiguous()
        self._V = self._to_nm(self._grid(work.velocities)).contiguous()
        self._F = torch.empty_like(self._Q)
        self._Q_spare = torch.empty_like(self._Q)
        self._thermostat_work = torch.zeros(R, dtype=dtype)
        self._work_acc = torch.zeros_like(self._V)  # sum over O steps of V'^2 - V^2, reduced lazily
        self._update_forces()
        return work

    def _free_propagator(self, h):
        wk = self._wk  # [R, P, 1]
        if self.propagator == "exact":
            wh = wk * h
            c = torch.cos(wh)
            s = torch.where(wk > 0, torch.sin(wh) / torch.where(wk > 0, wk, torch.ones_like(wk)), torch.full_like(wk, h))
            w = wk * torch.sin(wh)
        else:  # Cayley: (1 - hA/2)^-1 (1 + hA/2)
            x2 = (0.5 * wk * h) ** 2
            d = 1.0 + x2
            c = (1.0 - x2) / d
            s = h / d + torch.zeros_like(wk)
            w = wk * wk * h / d
        return c.contiguous(), s.contiguous(), w.contiguous()

    # ---------------------------------------------------------------- moves
    def _update_forces(self):
        self._energy, forces = self.potential.energy_and_forces(self._work)
        if self._R == 1:
            torch.mm(self._CT, forces.reshape(self.n_beads, -1), out=self._F.view(self.n_beads, -1))
        else:
            self._to_nm(self._grid(forces.contiguous()), out=self._F)  # eV/A in normal modes
        self._forces = forces

    def _kick(self):
        self._V.addcmul_(self._F, self._inv_m, value=0.5 * self.dt)

    def _free(self, coeffs):
        c, s, w = coeffs
        Q, V, q_new = self._Q, self._V, self._Q_spare
        torch.mul(c, Q, out=q_new).addcmul_(s, V)
        V.mul_(c).addcmul_(w, Q, value=-1.0)
        self._Q, self._Q_spare = q_new, Q

    def _thermo(self):
        V, acc = self._V, self._work_acc
        acc.addcmul_(V, V, value=-1.0)
        if len(self._rngs) == 1:
            self._rngs[0].standard_normal(out=self._noise_np[0])
        else:
            for r, rng in enumerate(self._rngs):
                rng.standard_normal(out=self._noise_np[r])
        V.mul_(self._c1).addcmul_(self._c2, self._noise)
        acc.addcmul_(V, V)

    def _fold_thermostat_work(self):
        """Reduce the per-element work buffer into W_thermostat [R] (eV)."""
        self._thermostat_work += 0.5 * MV2_TO_EV * (self._work_acc * self._m).sum(dim=(1, 2))
        self._work_acc.zero_()

    def _positions_from_nm(self):
        if self._R == 1:
            torch.mm(self._C, self._Q.view(self.n_beads, -1), out=self._work.positions.view(self.n_beads, -1))
        elif self._beads_last:
            self._from_nm(self._Q, out=self._work.positions.view(self._R, self.n_beads, -1))
        else:
            self._work.positions = self._flat(self._from_nm(self._Q)).contiguous()

    def _advance(self):
        thermo = self.thermostat is not None
        if self.splitting == "baoab":
            self._kick()
            self._free(self._free_half)
            if thermo:
                self._thermo()
            self._free(self._free_half)
            self._positions_from_nm()
            self._update_forces()
            self._kick()
        else:
            if thermo:
                self._thermo()
            self._kick()
            self._free(self._free_full)
            self._positions_from_nm()
            self._update_forces()
            self._kick()
            if thermo:
                self._thermo()

    def _sync_velocities(self):
        if self._beads_last and self._work.velocities.is_contiguous():
            self._from_nm(self._V, out=self._work.velocities.view(self._R, self.n_beads, -1))
        else:
            self._work.velocities = self._flat(self._from_nm(self._V)).contiguous()

    # ------------------------------------------------------------ observables
    def _bead_energies(self):
        return self._map.split(self._energy, "bead")  # [R, P]

    def ring_energies(self) -> dict:
        """Per ring polymer [R] tensors (eV): ``potential`` (bead mean), ``kinetic_md`` (sum over beads),
        ``spring`` (sum_j 1/2 m w_P^2 |q_j - q_j+1|^2), ``hamiltonian`` H_P and ``conserved`` H_P - W_thermostat."""
        pot = self._bead_energies()
        self._fold_thermostat_work()
        kin = 0.5 * MV2_TO_EV * (self._V * self._V * self._m).sum(dim=(1, 2))
        spring = (self._half_m_wk2 * self._Q * self._Q).sum(dim=(1, 2))
        h = kin + spring + pot.sum(dim=1)
        return {"potential": pot.mean(dim=1), "kinetic_md": kin, "spring": spring, "hamiltonian": h,
                "conserved": h - self._thermostat_work}

    def observables(self) -> dict:
        """Instantaneous path-integral estimators of every ring polymer (numpy, float64).

        - ``potential`` [R] eV: bead-averaged potential (1/P) sum_j V(q_j)
        - ``kinetic_virial`` [R, n_atoms] eV: centroid-virial kinetic energy of each atom,
          3/2 kT - 1/(2P) sum_j (q_j - c) . F_j
        - ``kinetic_primitive`` [R, n_atoms] eV: primitive (thermodynamic) estimator,
          3P/2 kT - (1/P) sum_j 1/2 m w_P^2 |q_j - q_j+1|^2
        - ``spring`` [R] eV: sum over atoms and beads of 1/2 m w_P^2 |q_j - q_j+1|^2
        - ``radius_of_gyration`` [R, n_atoms] Angstrom: sqrt((1/P) sum_j |q_j - c|^2) of each atom's ring
        - ``kinetic_md``, ``conserved`` [R] eV; ``centroid`` [R, n_atoms, 3] Angstrom; ``temperature`` [R] K

        The estimators use the potential the integrator runs on. A :class:`CentroidPotential` bias leaves
        both kinetic estimators unchanged (its force is the same on every bead and sum_j (q_j - c) = 0)
        but is part of ``potential``.
        """
        P, A, R = self.n_beads, self._n_atoms, self._R
        kT = (KB * self._temps)[:, None]
        Q, F = self._Q[:, 1:], self._F[:, 1:]
        qf = (Q * F).sum(dim=1).view(R, A, 3).sum(dim=2)  # sum_k>=1 Q_k . F_k per atom
        k_cv = 1.5 * kT - 0.5 * qf / P
        spring_atom = (self._half_m_wk2 * self._Q * self._Q).sum(dim=1).view(R, A, 3).sum(dim=2)
        k_prim = 1.5 * P * kT - spring_atom / P
        rg2 = (Q * Q).sum(dim=1).view(R, A, 3).sum(dim=2) / P
        e = self.ring_energies()
        out = {"potential": e["potential"], "kinetic_virial": k_cv, "kinetic_primitive": k_prim,
               "spring": e["spring"], "radius_of_gyration": torch.sqrt(rg2), "kinetic_md": e["kinetic_md"],
               "conserved": e["conserved"], "centroid": (self._Q[:, 0] / math.sqrt(P)).view(R, A, 3),
               "temperature": self._temps}
        return {k: v.detach().cpu().numpy().astype(np.float64, copy=True) for k, v in out.items()}

    def scaled_coordinates_delta(self, atoms: Sequence[int], mass_ratio: float) -> np.ndarray:
        """[R] eV: (1/P) sum_j [V(q'_j) - V(q_j)] with the ``atoms``' bead positions scaled towards their
        centroid, q' = c + (q - c) / sqrt(mass_ratio) (the isotope m -> mass_ratio * m; Ceriotti and
        Markland, JCP 138, 014112 (2013)). One extra potential call on all beads."""
        atoms = [int(a) for a in atoms]
        if not atoms or any(not 0 <= a < self._n_atoms for a in atoms):
            raise InputError(f"atoms must be indices in 0..{self._n_atoms - 1}, got {atoms}")
        if not (np.isfinite(mass_ratio) and mass_ratio > 0):
            raise InputError(f"mass_ratio must be positive, got {mass_ratio!r}")
        alpha = 1.0 / math.sqrt(float(mass_ratio))
        scale = torch.ones(1, 1, self._n_atoms, 3, dtype=self._Q.dtype)
        scale[0, 0, atoms] = alpha
        Q = self._Q.view(self._R, self.n_beads, self._n_atoms, 3).clone()
        Q[:, 1:] = Q[:, 1:] * scale  # internal modes scale, the centroid stays
        pos = self._flat(self._from_nm(Q.view(self._R, self.n_beads, -1)))
        with torch.no_grad():
            e_scaled = self.potential.energy(self._work.replace(positions=pos.contiguous()))
        d = self._map.split(e_scaled.detach() - self._energy, "bead").mean(dim=1)
        return d.cpu().numpy().astype(np.float64)

    def _info_value(self, key):
        P = self.n_beads
        if key == "potential_energy":
            return self._energy
        if key == "kinetic_energy":
            v = self._work.velocities
            return self._work.sum_per_system(0.5 * self._work.masses * (v * v).sum(dim=1) * MV2_TO_EV)
        e = self.ring_energies()
        if key == "conserved":
            return self._map.expand(e["conserved"] / P, "bead")
        return {"ring_potential": e["potential"], "ring_kinetic": e["kinetic_md"], "spring_energy": e["spring"],
                "ring_conserved": e["conserved"]}[key]

    def info(self) -> Mapping:
        """Lazy mapping: per bead-system [n_systems] ``potential_energy``, ``kinetic_energy`` and
        ``conserved`` (the ring polymer's share, its conserved energy / P), and per ring polymer [R]
        ``ring_potential``, ``ring_kinetic``, ``spring_energy``, ``ring_conserved`` (eV)."""
        return _Info(self)

    # -------------------------------------------------------------- RNG state
    def rng_state(self):
        """JSON-able RNG state of every ring polymer (for checkpoints)."""
        return None if self._rngs is None else [r.bit_generator.state for r in self._rngs]

    def set_rng_state(self, states):
        """Restore :meth:`rng_state` output (call before :meth:`run`)."""
        if states is None:
            return
        self._rngs = [np.random.Generator(np.random.PCG64()) for _ in states]
        for r, s in zip(self._rngs, states):
            r.bit_generator.state = s

    # ------------------------------------------------------------------- run
    def run(self, state: State, n_steps: int, reporters: Sequence = (), progress=None) -> State:
        """Run ``n_steps`` steps from the bead State ``state`` and return the final bead State.

        ``reporters`` see ``report(step, state, info)`` at step 0 and every ``stride`` steps (``info``:
        :meth:`info`). Raises :class:`~fesurf.errors.SimulationError` (with ``ring_polymer`` and
        ``bead`` attributes) when a bead's energy or forces become non-finite or the conserved energy
        runs away.
        """
        if isinstance(n_steps, bool) or int(n_steps) < 0:
            raise InputError("n_steps must be >= 0")
        n_steps = int(n_steps)
        self._setup(state)
        start = self.step_count
        reference = self.ring_energies()["conserved"].clone()
        last_good = (self._work.positions.clone(), self._work.velocities.clone())
        self._check(reference, last_good)
        for rep in reporters:
            rep.report(self.step_count, self._work, self.info())
        bar = tqdm(total=n_steps, disable=(not progress) if progress is not None else None,
                   desc="RingPolymer", unit="step", mininterval=0.5)
        update_every = max(1, n_steps // 200)
        for i in range(1, n_steps + 1):
            self._advance()
            self.step_count += 1
            if i % self.check_every == 0 or i == n_steps:
                self._check(reference, last_good)
                self._sync_velocities()
                last_good = (self._work.positions.clone(), self._work.velocities.clone())
            due = [rep for rep in reporters if reporter_due(rep, self.step_count, start)]
            if due:
                self._sync_velocities()
                info = self.info()
                for rep in due:
                    rep.report(self.step_count, self._work, info)
            if i % update_every == 0:
                bar.update(update_every)
        bar.close()
        self._sync_velocities()
        return self._work.clone()

    def _check(self, reference, last_good):
        conserved = self.ring_energies()["conserved"]
        total = float(self._energy.sum() + self._forces.sum() + conserved.sum())  # NaN/inf propagate into it
        if math.isfinite(total) and float((conserved - reference).abs().max()) <= \
                self.max_energy_change * self._n_atoms * self.n_beads:
            return
        e = self._bead_energies()
        fmax = self._map.split(self._work.sum_per_system(self._forces.abs().sum(dim=1)), "bead")
        finite = torch.isfinite(e) & torch.isfinite(fmax) & torch.isfinite(self._map.split(
            self._work.sum_per_system(self._work.positions.abs().sum(dim=1)), "bead"))
        conserved = self.ring_energies()["conserved"]
        runaway = (conserved - reference).abs() > self.max_energy_change * self._n_atoms * self.n_beads
        bad_ring = ~finite.all(dim=1) | runaway | ~torch.isfinite(conserved)
        if not bool(bad_ring.any()):
            return
        r = int(torch.nonzero(bad_ring)[0])
        if not bool(finite[r].all()):
            j = int(torch.nonzero(~finite[r])[0])
            kind = "non-finite energy, forces or positions"
        else:
            j = int(torch.argmax(e[r]))
            kind = (f"runaway energy (conserved energy moved {float(conserved[r] - reference[r]):.3g} eV, more than "
                    f"{self.max_energy_change} eV per atom per bead; highest bead energy in bead {j})")
        system = int(self._map.split(torch.arange(self._n_sys), "bead")[r, j])
        good = self._work.replace(positions=last_good[0], velocities=last_good[1]).clone()
        err = SimulationError(
            f"ring-polymer simulation blew up at step {self.step_count} in ring polymer {r}, bead {j} "
            f"(system {system}): {kind}. Reduce the timestep, check the starting structure or the number of "
            "beads, or raise max_energy_change; the last good frame is in error.last_good_state.",
            replica=system, step=self.step_count, last_good_state=good)
        err.ring_polymer, err.bead = r, j
        raise err


# ----------------------------------------------------------------------------- reporter
class RingPolymerReporter:
    """Records :meth:`RingPolymer.observables` every ``stride`` steps (numpy, in memory).

    ``isotopes``: optional ``{name: (atoms, mass_ratio)}``; each frame then also records
    :meth:`RingPolymer.scaled_coordinates_delta` under ``"scaled:" + name`` (one extra potential call
    per entry per frame), the input of the scaled-coordinates isotope estimator. Frames at steps
    ``<= after_step`` (the start frame and any equilibration) are not recorded.

    >>> # rec = RingPolymerReporter(rp, stride=10); rp.run(beads, 1000, reporters=[rec]); rec.arrays()
    """

    def __init__(self, integrator: RingPolymer, stride: int = 10, isotopes: dict | None = None,
                 after_step: int = 0):
        if int(stride) < 1:
            raise InputError(f"reporter stride must be >= 1 step, got {stride}")
        if not isinstance(integrator, RingPolymer):
            raise InputError("RingPolymerReporter records a RingPolymer integrator's estimators")
        self.integrator, self.stride = integrator, int(stride)
        self.isotopes = dict(isotopes or {})
        for name, spec in self.isotopes.items():
            if not (isinstance(spec, (tuple, list)) and len(spec) == 2):
                raise InputError(f"isotopes[{name!r}] must be (atoms, mass_ratio)")
        self.after_step = int(after_step)
        self.steps, self._frames = [], []

    def report(self, step, state, info):
        if step <= self.after_step:  # the start frame and the equilibration are not recorded
            return
        obs = self.integrator.observables()
        for name, (atoms, ratio) in self.isotopes.items():
            obs["scaled:" + name] = self.integrator.scaled_coordinates_delta(atoms, ratio)
        self.steps.append(int(step))
        self._frames.append(obs)

    def arrays(self) -> dict:
        """``step`` [n_frames] and every observable stacked as [n_frames, R, ...]."""
        if not self._frames:
            raise InputError("the reporter has no frames yet; run the integrator with it first")
        out = {k: np.stack([f[k] for f in self._frames]) for k in self._frames[0]}
        out["step"] = np.asarray(self.steps)
        return out


# ----------------------------------------------------------------------------- protocol settings
@dataclass(frozen=True)
class PILEDynamics:
    """Ring-polymer (PILE-L) dynamics as a protocol mover, for :func:`fesurf.sampling._engine.drive`.

    The protocol's State holds ``n_rings x n_beads`` systems (beads innermost, as
    :func:`ring_polymer_state` lays them out); ring polymer r's noise stream uses the r-th ring's
    first-bead seed of the ones the driver hands out.

    Parameters
    ----------
    n_beads : P
    timestep : fs
    tau_centroid : fs
    pile_lambda, propagator, splitting : see :class:`RingPolymer`
    seed : int; seeds every ring polymer's noise stream

    >>> PILEDynamics(n_beads=16).attrs()["n_beads"]
    16
    """

    n_beads: int = 16
    timestep: float = 0.5
    tau_centroid: float = 100.0
    pile_lambda: float = 1.0
    propagator: str = "exact"
    splitting: str = "baoab"
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.n_beads, bool) or not isinstance(self.n_beads, (int, np.integer)) or self.n_beads < 1:
            raise InputError(f"n_beads must be a whole number >= 1, got {self.n_beads!r}")
        for name, unit in (("timestep", "fs"), ("tau_centroid", "fs"), ("pile_lambda", "")):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not np.isfinite(v) or v <= 0:
                raise InputError(f"{name} must be a positive number{' (' + unit + ')' if unit else ''}, got {v!r}")
        if self.propagator not in ("exact", "cayley"):
            raise InputError(f"propagator must be 'exact' or 'cayley', got {self.propagator!r}")
        if self.splitting not in ("baoab", "obabo"):
            raise InputError(f"splitting must be 'baoab' or 'obabo', got {self.splitting!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise InputError(f"seed must be an int (every stochastic protocol is seeded), got {self.seed!r}")

    def build(self, potential, temperature: float, n_systems: int, noise_seeds):
        """The integrator for ``n_systems`` bead systems (``noise_seeds``: one int per system)."""
        rmap = bead_map(n_systems, self.n_beads)
        seeds = [int(s) for s in np.asarray(noise_seeds).reshape(-1)[::self.n_beads]]
        return RingPolymer(potential, self.n_beads, float(self.timestep), temperature, seeds,
                           tau_centroid=float(self.tau_centroid), pile_lambda=float(self.pile_lambda),
                           propagator=self.propagator, splitting=self.splitting, replica_map=rmap)

    def attrs(self) -> dict:
        """What a SampleSet records about the dynamics."""
        return {"dynamics": f"pimd-pile_l-{self.splitting}", "n_beads": int(self.n_beads),
                "timestep_fs": float(self.timestep), "tau_centroid_fs": float(self.tau_centroid),
                "pile_lambda": float(self.pile_lambda), "propagator": self.propagator, "seed": int(self.seed)}
