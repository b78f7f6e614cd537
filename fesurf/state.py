"""The batched State: many replicas or different molecules in one set of tensors.

Atoms of all systems are flattened into ``positions[n_atoms_total, 3]`` with
``system_index[n_atoms_total]`` saying which system each atom belongs to (graph
batching, as in PyG and TorchSim). Umbrella windows, ring-polymer beads and
datasets of different molecules all use this one path.

Units: positions in Angstrom, velocities in Angstrom/fs, masses in amu, cell in
Angstrom, charge in e.

Example
-------
>>> from ase.build import molecule
>>> from fesurf.state import State
>>> s = State.from_atoms(molecule("H2O")).replicate(4)
>>> s.n_systems, s.n_atoms, tuple(s.positions.shape)
(4, 12, (12, 3))
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_masses, chemical_symbols

from .errors import InputError


class _SystemLayout:
    """The batch layout implied by one ``system_index`` tensor: number of systems, atoms per system and the
    flat index of each system's first atom. MD steps reuse one ``system_index`` tensor for every State they
    make, so the layout is computed once per tensor (a one-entry cache checked by identity and torch's
    in-place version counter) instead of several times per step."""

    def __init__(self, system_index: torch.Tensor):
        self.n_systems = int(system_index[-1]) + 1 if system_index.numel() else 0
        self.counts = torch.bincount(system_index, minlength=self.n_systems)
        self.offsets = torch.cumsum(self.counts, 0) - self.counts
        self._flat: dict = {}

    def flat_indices(self, per_system) -> torch.Tensor:
        """``[n_systems, len(per_system)]`` flat atom indices of the per-system indices ``per_system``
        (cached: CVs ask for the same atoms every step)."""
        key = tuple(int(i) for i in per_system)
        out = self._flat.get(key)
        if out is None:
            out = self.offsets[:, None] + torch.tensor(key, dtype=torch.long, device=self.offsets.device)[None, :]
            self._flat[key] = out
        return out


_layout_cache: dict = {"ref": None, "version": None, "layout": None}


def system_layout(system_index: torch.Tensor) -> _SystemLayout:
    """The (cached) :class:`_SystemLayout` of ``system_index``."""
    import weakref

    cached = _layout_cache["ref"]
    if cached is not None and cached() is system_index and _layout_cache["version"] == system_index._version:
        return _layout_cache["layout"]
    layout = _SystemLayout(system_index)
    _layout_cache.update(ref=weakref.ref(system_index), version=system_index._version, layout=layout)
    return layout

MAX_Z = len(chemical_symbols) - 1

#: two atoms of one system closer than this (Angstrom) make a State invalid: they are almost certainly a
#: duplicated or mistyped coordinate, and every potential is singular or meaningless there.
MIN_ATOM_DISTANCE = 0.1


def _as_tensor(value, dtype, name):
    try:
        return torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} could not be converted to a tensor ({exc}); pass a numeric array") from None


@dataclass
class State:
    """A batch of atomic systems.

    Parameters
    ----------
    positions : [n_atoms, 3] tensor, Angstrom
    atomic_numbers : [n_atoms] integer tensor
    masses : [n_atoms] tensor, amu (default: standard atomic masses)
    system_index : [n_atoms] integer tensor, sorted, values 0..n_systems-1
        (default: all atoms in one system)
    velocities : [n_atoms, 3] tensor, Angstrom/fs, optional
    cell : [n_systems, 3, 3] tensor, Angstrom (rows are lattice vectors), optional
    pbc : [n_systems, 3] bool tensor, optional (default: False everywhere)
    charge : [n_systems] tensor, e (default 0)
    multiplicity : [n_systems] integer tensor, 2S+1 (default 1)
    check_distances : refuse two atoms of one system closer than :data:`MIN_ATOM_DISTANCE` (0.1 A);
        pass False for model particles that are not atoms (analytic model potentials)

    Build one with :meth:`from_atoms` or the constructor; it validates its input
    and raises :class:`~fesurf.errors.InputError` with a fix. Use
    :meth:`replace` for cheap unvalidated copies inside hot loops.
    """

    positions: torch.Tensor
    atomic_numbers: torch.Tensor
    masses: Optional[torch.Tensor] = None
    system_index: Optional[torch.Tensor] = None
    velocities: Optional[torch.Tensor] = None
    cell: Optional[torch.Tensor] = None
    pbc: Optional[torch.Tensor] = None
    charge: Optional[torch.Tensor] = None
    multiplicity: Optional[torch.Tensor] = None
    validate: bool = True
    check_distances: bool = True

    def __post_init__(self):
        if self.validate:
            self._validate_and_fill()
        self.validate = False  # copies made with replace() skip validation

    # ------------------------------------------------------------------ checks
    def _validate_and_fill(self):
        dtype = self.positions.dtype if torch.is_tensor(self.positions) and self.positions.is_floating_point() else torch.float64
        pos = _as_tensor(self.positions, dtype, "positions")
        if pos.ndim != 2 or pos.shape[1] != 3:
            raise InputError(f"positions must have shape [n_atoms, 3], got {tuple(pos.shape)}; reshape to (-1, 3)")
        if not torch.isfinite(pos).all():
            bad = torch.nonzero(~torch.isfinite(pos).all(dim=1)).flatten().tolist()
            raise InputError(f"positions contain NaN or inf at atom(s) {bad[:10]}; fix the input coordinates")
        n = pos.shape[0]
        if n == 0:
            raise InputError("a State needs at least one atom")
        self.positions = pos

        z = _as_tensor(self.atomic_numbers, torch.long, "atomic_numbers")
        if z.shape != (n,):
            raise InputError(f"atomic_numbers must have shape [{n}] to match positions, got {tuple(z.shape)}")
        if (z < 1).any() or (z > MAX_Z).any():
            bad = sorted(set(z[(z < 1) | (z > MAX_Z)].tolist()))
            raise InputError(f"unknown element(s) with atomic number {bad}; atomic numbers must be 1..{MAX_Z}")
        self.atomic_numbers = z

        if self.masses is None:
            self.masses = torch.as_tensor(atomic_masses[z.numpy()], dtype=dtype)
        else:
            m = _as_tensor(self.masses, dtype, "masses")
            if m.shape != (n,):
                raise InputError(f"masses must have shape [{n}] to match positions, got {tuple(m.shape)}")
            if not torch.isfinite(m).all() or (m <= 0).any():
                bad = torch.nonzero(~(m > 0) | ~torch.isfinite(m)).flatten().tolist()
                raise InputError(f"masses must be positive and finite (amu); atom(s) {bad[:10]} are not")
            self.masses = m

        if self.system_index is None:
            self.system_index = torch.zeros(n, dtype=torch.long)
        else:
            idx = _as_tensor(self.system_index, torch.long, "system_index")
            if idx.shape != (n,):
                raise InputError(f"system_index must have shape [{n}] to match positions, got {tuple(idx.shape)}")
            if idx[0] != 0 or (torch.diff(idx) < 0).any() or (torch.diff(idx) > 1).any():
                raise InputError("system_index must be sorted and contiguous (0,0,..,1,1,..); group atoms by system")
            self.system_index = idx
        ns = int(self.system_index[-1]) + 1

        if self.velocities is not None:
            v = _as_tensor(self.velocities, dtype, "velocities")
            if v.shape != pos.shape:
                raise InputError(f"velocities must have shape {tuple(pos.shape)} like positions, got {tuple(v.shape)}")
            if not torch.isfinite(v).all():
                raise InputError("velocities contain NaN or inf; fix them or leave velocities=None")
            self.velocities = v

        if self.cell is not None:
            c = _as_tensor(self.cell, dtype, "cell")
            if c.shape == (3, 3):
                c = c.expand(ns, 3, 3).clone()
            if c.shape != (ns, 3, 3):
                raise InputError(f"cell must have shape [n_systems={ns}, 3, 3] or [3, 3], got {tuple(c.shape)}")
            if not torch.isfinite(c).all():
                raise InputError("cell contains NaN or inf; give finite lattice vectors (rows, Angstrom)")
            self.cell = c
        pbc = torch.zeros(ns, 3, dtype=torch.bool) if self.pbc is None else _as_tensor(self.pbc, torch.bool, "pbc")
        if pbc.ndim == 0 or pbc.shape == (3,):
            pbc = pbc.expand(ns, 3).clone()
        if pbc.shape != (ns, 3):
            raise InputError(f"pbc must be a bool, or have shape [n_systems={ns}, 3] or [3], got {tuple(pbc.shape)}")
        if pbc.any() and self.cell is None:
            raise InputError("pbc is set but no cell was given; pass cell= (Angstrom) or set pbc=False")
        self.pbc = pbc
        if pbc.any():
            self._check_cells()

        charge = self._per_system(self.charge, 0.0, torch.float64, ns, "charge")
        if not torch.isfinite(charge).all():
            raise InputError(f"charge must be finite (e), got {charge.tolist()[:10]}")
        self.charge = charge.to(dtype)
        mult = self._per_system(self.multiplicity, 1, torch.float64, ns, "multiplicity")
        if not torch.isfinite(mult).all() or (mult != torch.round(mult)).any():
            raise InputError(f"multiplicity is 2S+1, a whole number >= 1; got {mult.tolist()[:10]}")
        if (mult < 1).any():
            raise InputError("multiplicity is 2S+1 and must be >= 1")
        self.multiplicity = mult.long()
        if self.check_distances:
            self._check_distances()

    def _check_cells(self):
        """Every periodic direction needs a lattice vector, and those vectors must span a volume."""
        for k in torch.nonzero(self.pbc.any(dim=1)).flatten().tolist():
            rows = self.cell[k][self.pbc[k]].double()
            gram = torch.linalg.det(rows @ rows.T)
            scale = float((rows.norm(dim=1) ** 2).prod()) or 1.0
            if not float(gram) > 1e-10 * scale:
                raise InputError(f"the cell of system {k} is singular (zero volume or length along a periodic "
                                 f"direction: vectors {self.cell[k].tolist()}, pbc {self.pbc[k].tolist()}); give "
                                 "linearly independent lattice vectors, or set pbc=False along empty directions")

    def _check_distances(self):
        """No two atoms of one system closer than :data:`MIN_ATOM_DISTANCE` (minimum image with pbc)."""
        from .neighbors import neighbor_pairs

        counts = self.atoms_per_system
        if int(counts.max()) < 2:
            return
        mixed = bool((self.pbc.any(dim=1) & ~self.pbc.all(dim=1)).any())
        if mixed:  # slabs and wires: ASE's neighbour list handles partial periodicity
            from ase.neighborlist import neighbor_list

            hits = []
            for k, a in enumerate(self.to_atoms()):
                i, j, d = neighbor_list("ijd", a, MIN_ATOM_DISTANCE)
                if len(i):
                    hits.append((k, int(i[0]), int(j[0]), float(d[0])))
            if hits:
                k, i, j, d = hits[0]
                self._too_close(k, min(i, j), max(i, j), d)
            return
        pairs = neighbor_pairs(self, MIN_ATOM_DISTANCE)
        if pairs.i.numel():
            vec = pairs.vectors(self.positions, self.cell, self.system_index)
            d = float(vec[0].norm())
            k = int(self.system_index[pairs.i[0]])
            start = int(torch.nonzero(self.system_index == k)[0])
            self._too_close(k, int(pairs.i[0]) - start, int(pairs.j[0]) - start, d)

    @staticmethod
    def _too_close(system, i, j, distance):
        raise InputError(f"atoms {i} and {j} of system {system} are {distance:.3f} A apart (closer than "
                         f"{MIN_ATOM_DISTANCE} A): a duplicated or mistyped coordinate; fix the structure (for model particles "
                         "that are not atoms, pass check_distances=False)")

    @staticmethod
    def _per_system(value, default, dtype, ns, name):
        if value is None:
            return torch.full((ns,), default, dtype=dtype)
        t = _as_tensor(value, dtype, name)
        if t.ndim == 0:
            t = t.expand(ns).clone()
        if t.shape != (ns,):
            raise InputError(f"{name} must be a scalar or have shape [n_systems={ns}], got {tuple(t.shape)}")
        return t

    # ------------------------------------------------------------ properties
    @property
    def n_atoms(self) -> int:
        """Total number of atoms over all systems."""
        return self.positions.shape[0]

    @property
    def n_systems(self) -> int:
        """Number of systems (replicas, molecules) in the batch."""
        return system_layout(self.system_index).n_systems

    @property
    def atoms_per_system(self) -> torch.Tensor:
        """[n_systems] number of atoms of each system."""
        return system_layout(self.system_index).counts

    @property
    def first_atom_of_system(self) -> torch.Tensor:
        """[n_systems] flat index of each system's first atom."""
        return system_layout(self.system_index).offsets

    @property
    def dtype(self):
        return self.positions.dtype

    @property
    def device(self):
        return self.positions.device

    @property
    def is_periodic(self) -> bool:
        return bool(self.pbc.any())

    def sum_per_system(self, per_atom: torch.Tensor) -> torch.Tensor:
        """Sum a per-atom quantity ``[n_atoms, ...]`` into ``[n_systems, ...]``."""
        out = torch.zeros((self.n_systems,) + tuple(per_atom.shape[1:]), dtype=per_atom.dtype, device=per_atom.device)
        return out.index_add_(0, self.system_index, per_atom)

    def kinetic_energy(self) -> torch.Tensor:
        """[n_systems] kinetic energy in eV (zero if there are no velocities)."""
        from .units import MV2_TO_EV

        if self.velocities is None:
            return torch.zeros(self.n_systems, dtype=self.dtype)
        per_atom = 0.5 * self.masses * (self.velocities**2).sum(dim=1) * MV2_TO_EV
        return self.sum_per_system(per_atom)

    # ------------------------------------------------------------- copies
    def replace(self, **changes) -> "State":
        """Shallow copy with some fields replaced; no validation (hot-loop safe)."""
        return replace(self, validate=False, **changes)

    def clone(self) -> "State":
        """Deep copy of every tensor."""
        kw = {f.name: (getattr(self, f.name).clone() if torch.is_tensor(getattr(self, f.name)) else getattr(self, f.name))
              for f in fields(self)}
        kw["validate"] = False
        return State(**kw)

    def to(self, dtype=None, device=None) -> "State":
        """Copy with floating tensors cast to ``dtype`` and all tensors moved to ``device``."""
        kw = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if torch.is_tensor(v):
                v = v.to(device=device, dtype=dtype if (dtype is not None and v.is_floating_point()) else None)
            kw[f.name] = v
        kw["validate"] = False
        return State(**kw)

    def atom_slices(self):
        """List of (start, stop) atom ranges, one per system."""
        counts = self.atoms_per_system.tolist()
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
        return [(int(s), int(s + c)) for s, c in zip(starts, counts)]

    def select(self, systems: Sequence[int] | int) -> "State":
        """A new State holding only the given systems (renumbered 0..k-1)."""
        if isinstance(systems, int):
            systems = [systems]
        systems = list(systems)
        ns = self.n_systems
        for i in systems:
            if not -ns <= i < ns:
                raise InputError(f"system {i} is out of range for a State with {ns} systems")
        systems = [i % ns for i in systems]
        sl = self.atom_slices()
        atom_idx = torch.cat([torch.arange(*sl[i]) for i in systems])
        new_sys = torch.cat([torch.full((sl[i][1] - sl[i][0],), k, dtype=torch.long) for k, i in enumerate(systems)])
        sys_t = torch.as_tensor(systems, dtype=torch.long)
        return State(
            positions=self.positions[atom_idx],
            atomic_numbers=self.atomic_numbers[atom_idx],
            masses=self.masses[atom_idx],
            system_index=new_sys,
            velocities=None if self.velocities is None else self.velocities[atom_idx],
            cell=None if self.cell is None else self.cell[sys_t],
            pbc=self.pbc[sys_t],
            charge=self.charge[sys_t],
            multiplicity=self.multiplicity[sys_t],
            validate=False,
        )

    def replicate(self, n_replicas: int) -> "State":
        """Stack ``n_replicas`` copies of every system (system order: copy-major).

        >>> from ase.build import molecule
        >>> State.from_atoms(molecule("CH4")).replicate(3).n_systems
        3
        """
        if int(n_replicas) < 1:
            raise InputError(f"n_replicas must be >= 1, got {n_replicas}")
        return State.concatenate([self] * int(n_replicas))

    @staticmethod
    def concatenate(states: Sequence["State"]) -> "State":
        """Join several States into one batch (systems keep their order)."""
        states = list(states)
        if not states:
            raise InputError("concatenate needs at least one State")
        offsets = np.cumsum([0] + [s.n_systems for s in states[:-1]])
        has_cell = [s.cell is not None for s in states]
        if any(has_cell) and not all(has_cell):
            cells = [s.cell if s.cell is not None else torch.zeros(s.n_systems, 3, 3, dtype=s.dtype) for s in states]
        else:
            cells = [s.cell for s in states] if all(has_cell) else None
        has_v = [s.velocities is not None for s in states]
        vel = None
        if any(has_v):
            vel = torch.cat([s.velocities if s.velocities is not None else torch.zeros_like(s.positions) for s in states])
        return State(
            positions=torch.cat([s.positions for s in states]),
            atomic_numbers=torch.cat([s.atomic_numbers for s in states]),
            masses=torch.cat([s.masses for s in states]),
            system_index=torch.cat([s.system_index + int(o) for s, o in zip(states, offsets)]),
            velocities=vel,
            cell=None if cells is None else torch.cat(cells),
            pbc=torch.cat([s.pbc for s in states]),
            charge=torch.cat([s.charge for s in states]),
            multiplicity=torch.cat([s.multiplicity for s in states]),
            validate=False,
        )

    # ------------------------------------------------------------- ASE
    @classmethod
    def from_atoms(cls, atoms, dtype=torch.float64, charge=None, multiplicity=None) -> "State":
        """Build a State from one ``ase.Atoms`` or a list of them.

        Charge and multiplicity come from the arguments, else from
        ``atoms.info["charge"]`` / ``atoms.info["multiplicity"]`` (or
        ``atoms.info["spin"]`` as 2S), else 0 and 1. Velocities are taken from
        ASE momenta (converted to Angstrom/fs).
        """
        from .units import FS

        if isinstance(atoms, Atoms):
            atoms = [atoms]
        atoms = list(atoms)
        if not atoms or not all(isinstance(a, Atoms) for a in atoms):
            raise InputError("from_atoms needs an ase.Atoms or a non-empty list of ase.Atoms")
        pos, z, m, idx, vel, cells, pbcs, q, mult = [], [], [], [], [], [], [], [], []
        any_v = any(a.has("momenta") for a in atoms)
        for i, a in enumerate(atoms):
            pos.append(a.get_positions())
            z.append(a.get_atomic_numbers())
            m.append(a.get_masses())
            idx.append(np.full(len(a), i))
            vel.append(a.get_velocities() * FS if a.has("momenta") else np.zeros((len(a), 3)))
            cells.append(np.asarray(a.cell.array))
            pbcs.append(a.pbc)
            q.append(a.info.get("charge", 0.0))
            if "multiplicity" in a.info:
                mult.append(int(a.info["multiplicity"]))
            elif "spin" in a.info:
                mult.append(int(round(2 * a.info["spin"])) + 1)
            else:
                mult.append(1)
        has_cell = any(np.abs(c).sum() > 0 for c in cells) or any(np.any(p) for p in pbcs)
        return cls(
            positions=torch.as_tensor(np.concatenate(pos), dtype=dtype),
            atomic_numbers=torch.as_tensor(np.concatenate(z)),
            masses=torch.as_tensor(np.concatenate(m), dtype=dtype),
            system_index=torch.as_tensor(np.concatenate(idx)),
            velocities=torch.as_tensor(np.concatenate(vel), dtype=dtype) if any_v else None,
            cell=torch.as_tensor(np.stack(cells), dtype=dtype) if has_cell else None,
            pbc=torch.as_tensor(np.stack(pbcs)),
            charge=charge if charge is not None else torch.as_tensor(q, dtype=dtype),
            multiplicity=multiplicity if multiplicity is not None else torch.as_tensor(mult),
        )

    def to_atoms(self):
        """Convert to a list of ``ase.Atoms`` (one per system), with velocities,
        cell, pbc, and ``info['charge']`` / ``info['multiplicity']``."""
        from .units import FS

        out = []
        for i, (a, b) in enumerate(self.atom_slices()):
            atoms = Atoms(
                numbers=self.atomic_numbers[a:b].cpu().numpy(),
                positions=self.positions[a:b].detach().cpu().double().numpy(),
                masses=self.masses[a:b].detach().cpu().double().numpy(),
                cell=None if self.cell is None else self.cell[i].detach().cpu().double().numpy(),
                pbc=self.pbc[i].cpu().numpy(),
            )
            if self.velocities is not None:
                atoms.set_velocities(self.velocities[a:b].detach().cpu().double().numpy() / FS)
            atoms.info["charge"] = float(self.charge[i])
            atoms.info["multiplicity"] = int(self.multiplicity[i])
            out.append(atoms)
        return out
