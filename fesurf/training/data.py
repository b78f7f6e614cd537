"""Datasets: extxyz I/O through ``ase.io``, tensors for training, seeded splits, statistics.

A dataset file is extxyz (optionally ``.gz``) with per-frame energy (eV),
forces (eV/A), and ``info`` charge, multiplicity and method.

Example
-------
>>> from ase.build import molecule
>>> from fesurf.oracles import XTBOracle
>>> from fesurf.training.data import Dataset
>>> ds = Dataset.from_labels(XTBOracle().label([molecule("H2O"), molecule("H2O")]))
>>> len(ds), ds.split(seed=0, fractions=(0.5, 0.5, 0.0))["train"].tolist()
(2, [1])
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from ase import Atoms

from ..errors import InputError
from ..state import State

log = logging.getLogger(__name__)


def write_labels(labels, path) -> int:
    """Write successful labels (or Atoms with energies/forces) to extxyz via ``ase.io``.

    Failed labels are skipped (logged). Returns the number of frames written.
    """
    import ase.io

    frames = []
    for lab in labels:
        if isinstance(lab, Atoms):
            frames.append(lab)
        elif lab.ok:
            frames.append(lab.to_atoms())
        else:
            log.info("skipping failed label: %s", lab.reason)
    if not frames:
        raise InputError("no successful labels to write")
    ase.io.write(str(path), frames, format="extxyz")
    return len(frames)


def read_frames(path, index=":") -> list[Atoms]:
    """Read an extxyz(.gz) dataset; every frame must have energy and forces."""
    import ase.io

    from ..io_checks import read_structures

    return read_structures(path, index=index, format="extxyz", what="dataset file")


@dataclass
class Dataset:
    """Frames as flat tensors (float64): positions, numbers, energies, forces.

    ``offsets[k]:offsets[k+1]`` are the atoms of frame ``k``.
    """

    positions: torch.Tensor
    numbers: torch.Tensor
    offsets: torch.Tensor
    energy: torch.Tensor
    forces: torch.Tensor
    charge: torch.Tensor
    multiplicity: torch.Tensor
    info: list
    # --- optional reference charges and dipoles (long-range training; see _validate_moments) ---
    #: [n_atoms] reference atomic charges (e), e.g. tblite's Mulliken charges, or None
    atom_charges: torch.Tensor | None = None
    #: [n_frames, 3] reference dipole moments (e*A, about the coordinate origin), or None
    dipole: torch.Tensor | None = None
    # --- optional periodic cells and stress (periodic training; see _validate_periodic) ---
    #: [n_frames, 3, 3] lattice vectors (rows, A) and [n_frames, 3] pbc of periodic frames, or None (molecules)
    cell: torch.Tensor | None = None
    pbc: torch.Tensor | None = None
    #: [n_frames, 3, 3] reference stress (eV/A^3, ASE sign: (1/V) dE/d(strain)), or None
    stress: torch.Tensor | None = None

    #: the units every Dataset is stored in; an npz file that declares others is refused
    UNITS = {"energy": "eV", "forces": "eV/A", "positions": "A", "charge": "e"}

    def __post_init__(self):
        self.validate()
        self._validate_moments()
        self._validate_periodic()

    def _validate_periodic(self) -> None:
        """Cells [n_frames, 3, 3] with pbc [n_frames, 3], and stress [n_frames, 3, 3] (needs cells), finite."""
        n = len(self.energy)
        if (self.cell is None) != (self.pbc is None):
            raise InputError("give cell and pbc together (periodic frames), or neither")
        if self.stress is not None and self.cell is None:
            raise InputError("stress needs the frames' cells (cell=, pbc=)")
        for name, arr, shape in (("cell", self.cell, (n, 3, 3)), ("pbc", self.pbc, (n, 3)),
                                 ("stress", self.stress, (n, 3, 3))):
            if arr is None:
                continue
            if tuple(arr.shape) != shape:
                raise InputError(f"{name} must have shape {shape}, got {tuple(arr.shape)}")
            if name != "pbc" and not bool(torch.isfinite(arr).all()):
                raise InputError(f"{name} holds NaN or inf; drop the frames whose reference has none")

    def _validate_moments(self) -> None:
        """Reference charges [n_atoms] and dipoles [n_frames, 3], when present, are finite and fit."""
        for name, arr, shape in (("atom_charges", self.atom_charges, (int(self.offsets[-1]),)),
                                 ("dipole", self.dipole, (len(self.energy), 3))):
            if arr is None:
                continue
            if tuple(arr.shape) != shape:
                raise InputError(f"{name} must have shape {shape}, got {tuple(arr.shape)}")
            if not bool(torch.isfinite(arr).all()):
                raise InputError(f"{name} holds NaN or inf; drop the frames whose reference has none")

    def validate(self) -> None:
        """Shapes agree and every energy, force and position is finite; InputError naming the frame."""
        n = int(self.energy.reshape(-1).shape[0])
        if self.energy.ndim != 1:
            raise InputError(f"energy must be [n_frames], got shape {tuple(self.energy.shape)}")
        off = self.offsets
        if off.ndim != 1 or off.shape[0] != n + 1 or int(off[0]) != 0 or bool((off[1:] < off[:-1]).any()):
            raise InputError(f"offsets must be [n_frames + 1 = {n + 1}] non-decreasing from 0, got shape "
                             f"{tuple(off.shape)}; the file is damaged")
        n_atoms = int(off[-1])
        for name, arr, shape in (("positions", self.positions, (n_atoms, 3)), ("forces", self.forces, (n_atoms, 3)),
                                 ("numbers", self.numbers, (n_atoms,)), ("charge", self.charge, (n,)),
                                 ("multiplicity", self.multiplicity, (n,))):
            if tuple(arr.shape) != shape:
                raise InputError(f"{name} must have shape {shape} for {n} frames of {n_atoms} atoms in all, got "
                                 f"{tuple(arr.shape)}")
        if len(self.info) != n:
            raise InputError(f"info must hold one dict per frame ({n}), got {len(self.info)}")
        for name, arr in (("energy", self.energy), ("forces", self.forces), ("positions", self.positions),
                          ("charge", self.charge)):
            bad = ~torch.isfinite(arr)
            if bool(bad.any()):
                where = torch.nonzero(bad.reshape(arr.shape[0], -1).any(dim=1)).flatten()
                first = int(where[0])
                frame = first if name in ("energy", "charge") else int(torch.searchsorted(off, first, right=True)) - 1
                raise InputError(f"frame {frame} has a non-finite {name} (NaN or inf): drop failed labels "
                                 "before building a Dataset (Oracle labels with ok=False carry no energy)")

    def __len__(self):
        return self.energy.shape[0]

    @property
    def n_atoms(self) -> torch.Tensor:
        """[n_frames] atoms per frame."""
        return self.offsets[1:] - self.offsets[:-1]

    @classmethod
    def from_atoms(cls, frames: Sequence[Atoms]) -> "Dataset":
        """Build from Atoms carrying energy and forces (a calculator or SinglePointCalculator)."""
        frames = list(frames)
        if not frames:
            raise InputError("empty dataset")
        pos, num, e, f, q, m, info = [], [], [], [], [], [], []
        for k, a in enumerate(frames):
            if not isinstance(a, Atoms):
                raise InputError(f"frame {k} is a {type(a).__name__}, not an ase.Atoms")
            try:
                e.append(float(a.get_potential_energy()))
                fk = np.asarray(a.get_forces(), dtype=np.float64)
            except Exception as exc:  # noqa: BLE001 - any calculator failure means the frame carries no labels
                raise InputError(f"frame {k} has no energy/forces ({type(exc).__name__}: {exc}); label it with an "
                                 "oracle first") from None
            if fk.shape != (len(a), 3):
                raise InputError(f"frame {k}: forces have shape {fk.shape}, expected ({len(a)}, 3) for its {len(a)} "
                                 "atoms")
            if not np.isfinite(e[-1]):
                raise InputError(f"frame {k} has a non-finite energy ({e[-1]}: NaN or inf); drop failed labels")
            if not np.isfinite(fk).all():
                raise InputError(f"frame {k} has non-finite forces (NaN or inf); drop failed labels")
            f.append(fk)
            pos.append(a.positions)
            num.append(a.numbers)
            q.append(float(a.info.get("charge", 0.0)))
            m.append(int(a.info.get("multiplicity", 1)))
            info.append({k: v for k, v in a.info.items() if k != REF_DIPOLE})
        counts = [len(a) for a in frames]
        return cls(positions=torch.as_tensor(np.concatenate(pos)), numbers=torch.as_tensor(np.concatenate(num)),
                   offsets=torch.as_tensor(np.concatenate([[0], np.cumsum(counts)])),
                   energy=torch.as_tensor(np.array(e, dtype=float)), forces=torch.as_tensor(np.concatenate(f)),
                   charge=torch.as_tensor(q, dtype=torch.float64), multiplicity=torch.as_tensor(m), info=info,
                   **_moments_from_atoms(frames), **_periodic_from_atoms(frames))

    @classmethod
    def from_labels(cls, labels) -> "Dataset":
        """Build from oracle labels (failed ones are dropped); reference charges and dipoles in
        ``Label.extra`` (``XTBOracle(moments=True)``) become :attr:`atom_charges` and :attr:`dipole`."""
        return cls.from_atoms([_attach_stress(_attach_moments(lab.to_atoms(), lab.extra), lab.extra)
                               for lab in labels if lab.ok])

    @classmethod
    def read(cls, path) -> "Dataset":
        """Read an extxyz(.gz) file."""
        return cls.from_atoms(read_frames(path))

    def save_npz(self, path) -> None:
        """Write a compressed ``.npz`` copy (fast to load; info as JSON)."""
        import json

        np.savez_compressed(path, positions=self.positions.numpy(), numbers=self.numbers.numpy(),
                            offsets=self.offsets.numpy(), energy=self.energy.numpy(), forces=self.forces.numpy(),
                            charge=self.charge.numpy(), multiplicity=self.multiplicity.numpy(),
                            info=np.array(json.dumps(self.info, default=float)), units=np.array(json.dumps(self.UNITS)),
                            **{k: v.numpy() for k, v in (("atom_charges", self.atom_charges), ("dipole", self.dipole),
                                                         ("cell", self.cell), ("pbc", self.pbc), ("stress", self.stress))
                               if v is not None})

    @classmethod
    def load_npz(cls, path) -> "Dataset":
        """Read a file written by :meth:`save_npz` (no pickles)."""
        import json

        keys = ("positions", "numbers", "offsets", "energy", "forces", "charge", "multiplicity", "info")
        try:
            with np.load(path, allow_pickle=False) as d:
                missing = [k for k in keys if k not in d.files]
                if missing:
                    raise InputError(f"{path} is not a fesurf Dataset file: missing {', '.join(missing)}")
                arrays = {k: d[k] for k in keys}
                units = json.loads(str(d["units"])) if "units" in d.files else cls.UNITS
        except (OSError, ValueError, EOFError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"{path} is not a readable .npz Dataset ({type(exc).__name__}: {exc})") from None
        wrong = {k: v for k, v in units.items() if cls.UNITS.get(k, v) != v}
        if wrong:
            raise InputError(f"{path} declares units {wrong}; fesurf Datasets hold {cls.UNITS}: convert the data")
        info = json.loads(str(arrays.pop("info")))
        with np.load(path, allow_pickle=False) as d:  # optional reference charges and dipoles
            arrays.update({k: d[k] for k in ("atom_charges", "dipole", "cell", "pbc", "stress") if k in d.files})
        return cls(**{k: torch.as_tensor(v) for k, v in arrays.items()}, info=info)

    def atom_index(self, frames: torch.Tensor) -> torch.Tensor:
        """Flat atom indices of the given frames, in order."""
        frames = torch.as_tensor(frames, dtype=torch.long)
        counts = self.n_atoms[frames]
        starts = self.offsets[frames]
        base = torch.repeat_interleave(starts - torch.cumsum(counts, 0) + counts, counts)
        return base + torch.arange(int(counts.sum()))

    def batch(self, frames, dtype=torch.float64):
        """``(State, energy [b], forces [n, 3])`` of the given frame indices."""
        frames = torch.as_tensor(frames, dtype=torch.long)
        idx = self.atom_index(frames)
        counts = self.n_atoms[frames]
        state = State(positions=self.positions[idx].to(dtype), atomic_numbers=self.numbers[idx],
                      system_index=torch.repeat_interleave(torch.arange(len(frames)), counts),
                      charge=self.charge[frames].to(dtype), multiplicity=self.multiplicity[frames], validate=False)
        state.masses = torch.ones(len(idx), dtype=dtype)
        state.pbc = torch.zeros(len(frames), 3, dtype=torch.bool)
        if self.cell is not None:  # periodic frames
            state.cell, state.pbc = self.cell[frames].to(dtype), self.pbc[frames].clone()
        return state, self.energy[frames].to(dtype), self.forces[idx].to(dtype)

    def subset(self, frames) -> "Dataset":
        """A new Dataset with the given frames."""
        frames = torch.as_tensor(frames, dtype=torch.long)
        idx = self.atom_index(frames)
        counts = self.n_atoms[frames]
        return Dataset(self.positions[idx], self.numbers[idx], torch.cat([torch.zeros(1, dtype=torch.long),
                       torch.cumsum(counts, 0)]), self.energy[frames], self.forces[idx], self.charge[frames],
                       self.multiplicity[frames], [self.info[int(k)] for k in frames],
                       atom_charges=None if self.atom_charges is None else self.atom_charges[idx],
                       dipole=None if self.dipole is None else self.dipole[frames],
                       **{k: None if getattr(self, k) is None else getattr(self, k)[frames] for k in ("cell", "pbc", "stress")})

    def to_atoms(self) -> list[Atoms]:
        """Frames as Atoms with SinglePointCalculators."""
        from ase.calculators.singlepoint import SinglePointCalculator

        out = []
        for k in range(len(self)):
            a, b = int(self.offsets[k]), int(self.offsets[k + 1])
            atoms = Atoms(numbers=self.numbers[a:b].numpy(), positions=self.positions[a:b].numpy(),
                          cell=None if self.cell is None else self.cell[k].numpy(),
                          pbc=False if self.pbc is None else self.pbc[k].numpy())
            atoms.info.update(self.info[k])
            atoms.calc = SinglePointCalculator(atoms, energy=float(self.energy[k]), forces=self.forces[a:b].numpy())
            _attach_stress(atoms, {"stress": None if self.stress is None else self.stress[k].numpy()})
            _attach_moments(atoms, {"charges": None if self.atom_charges is None else self.atom_charges[a:b].numpy(),
                                    "dipole": None if self.dipole is None else self.dipole[k].numpy()})
            out.append(atoms)
        return out

    def write(self, path) -> int:
        """Write to extxyz(.gz)."""
        return write_labels(self.to_atoms(), path)

    def split(self, seed: int, fractions=(0.8, 0.1, 0.1)) -> dict:
        """Seeded random split into ``train``/``val``/``test`` index tensors."""
        return split_indices(len(self), seed=seed, fractions=fractions)

    def where(self, key, predicate) -> torch.Tensor:
        """Frame indices whose ``info[key]`` satisfies ``predicate``."""
        return torch.as_tensor([k for k, inf in enumerate(self.info) if predicate(inf.get(key))], dtype=torch.long)

    def statistics(self) -> dict:
        """Frames, elements, energy (eV) and force (eV/A) summaries, sources."""
        from collections import Counter

        per_atom = self.energy / self.n_atoms.to(self.energy.dtype)
        fnorm = self.forces.norm(dim=1)
        return {
            "n_frames": len(self),
            "n_atoms_total": int(self.offsets[-1]),
            "elements": sorted(set(self.numbers.tolist())),
            "energy_mean_eV": float(self.energy.mean()),
            "energy_std_eV": float(self.energy.std()) if len(self) > 1 else 0.0,
            "energy_range_eV": float(self.energy.max() - self.energy.min()),
            "energy_per_atom_std_eV": float(per_atom.std()) if len(self) > 1 else 0.0,
            "force_rms_eV_A": float(self.forces.pow(2).mean().sqrt()),
            "force_max_eV_A": float(fnorm.max()),
            "sources": dict(Counter(str(inf.get("source", "unknown")) for inf in self.info)),
            "methods": dict(Counter(str(inf.get("method", "unknown")) for inf in self.info)),
        }


# --- reference charges and dipoles on Atoms (long-range training) ---------------------------------
#: per-atom array and info key holding reference charges (e) and dipoles (e*A) on an ``ase.Atoms``
#: (not "charges"/"dipole", which extxyz would read as calculator results)
REF_CHARGES, REF_DIPOLE = "ref_charges", "ref_dipole"


def _attach_moments(atoms: Atoms, extra: dict) -> Atoms:
    """Copy ``extra["charges"]`` [n] / ``extra["dipole"]`` [3] (an oracle's Label.extra) onto ``atoms``."""
    if extra.get("charges") is not None:
        atoms.arrays[REF_CHARGES] = np.asarray(extra["charges"], dtype=np.float64).reshape(len(atoms))
    if extra.get("dipole") is not None:
        atoms.info[REF_DIPOLE] = np.asarray(extra["dipole"], dtype=np.float64).reshape(3)
    return atoms


def _moments_from_atoms(frames) -> dict:
    """``atom_charges`` / ``dipole`` tensors when every frame carries them, else None (with a log line
    when only some do)."""
    out = {}
    for key, name, get in ((REF_CHARGES, "atom_charges", lambda a: a.arrays.get(REF_CHARGES)),
                           (REF_DIPOLE, "dipole", lambda a: a.info.get(REF_DIPOLE))):
        values = [get(a) for a in frames]
        have = [v is not None for v in values]
        if all(have):
            arr = np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1) for v in values])
            out[name] = torch.as_tensor(arr.reshape(-1, 3) if name == "dipole" else arr)
        elif any(have):
            log.info("%d of %d frames carry %s; the Dataset keeps none", sum(have), len(frames), key)
    return out


# --- periodic cells and stress on Atoms (periodic training) -------------------------------------
def _attach_stress(atoms: Atoms, extra: dict) -> Atoms:
    """Put ``extra["stress"]`` ([3, 3] eV/A^3, e.g. :class:`~fesurf.training.periodic_fit.StressOracle`'s
    Label.extra) into the Atoms' calculator results (ASE Voigt order), where extxyz stores it."""
    s = extra.get("stress")
    if s is not None and atoms.calc is not None:
        s = np.asarray(s, dtype=np.float64).reshape(3, 3)
        atoms.calc.results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    return atoms


def _periodic_from_atoms(frames) -> dict:
    """``cell``/``pbc`` when any frame is periodic (all frames then keep theirs), ``stress`` when every
    frame's calculator holds one (else None, with a log line when only some do)."""
    if not any(np.any(a.pbc) for a in frames):
        return {}
    out = {"cell": torch.as_tensor(np.stack([np.asarray(a.cell.array, dtype=np.float64) for a in frames])),
           "pbc": torch.as_tensor(np.stack([np.asarray(a.pbc, dtype=bool) for a in frames]))}
    stresses = [None if a.calc is None else a.calc.results.get("stress") for a in frames]
    if all(s is not None for s in stresses):
        def full(v):  # ASE Voigt order xx, yy, zz, yz, xz, xy
            v = np.asarray(v, dtype=np.float64).reshape(-1)
            return v.reshape(3, 3) if v.size == 9 else np.array([[v[0], v[5], v[4]], [v[5], v[1], v[3]],
                                                                  [v[4], v[3], v[2]]])

        out["stress"] = torch.as_tensor(np.stack([full(s) for s in stresses]))
    elif any(s is not None for s in stresses):
        log.info("%d of %d frames carry stress; the Dataset keeps none", sum(s is not None for s in stresses),
                 len(frames))
    return out


def split_indices(n: int, seed: int, fractions=(0.8, 0.1, 0.1)) -> dict:
    """Seeded random split of ``range(n)`` into train/val/test (fractions sum to 1).

    >>> {k: len(v) for k, v in split_indices(10, seed=1).items()}
    {'train': 8, 'val': 1, 'test': 1}
    """
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or (fr < 0).any() or abs(fr.sum() - 1.0) > 1e-9:
        raise InputError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    n_train = int(round(fr[0] * n))
    n_val = int(round(fr[1] * n))
    return {"train": perm[:n_train].sort().values, "val": perm[n_train:n_train + n_val].sort().values,
            "test": perm[n_train + n_val:].sort().values}
