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

    path = Path(path)
    if not path.exists():
        raise InputError(f"dataset file {path} does not exist")
    return ase.io.read(str(path), index=index, format="extxyz")


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
            try:
                e.append(a.get_potential_energy())
                f.append(a.get_forces())
            except Exception as exc:
                raise InputError(f"frame {k} has no energy/forces ({exc}); label it with an oracle first") from None
            pos.append(a.positions)
            num.append(a.numbers)
            q.append(float(a.info.get("charge", 0.0)))
            m.append(int(a.info.get("multiplicity", 1)))
            info.append(dict(a.info))
        counts = [len(a) for a in frames]
        return cls(positions=torch.as_tensor(np.concatenate(pos)), numbers=torch.as_tensor(np.concatenate(num)),
                   offsets=torch.as_tensor(np.concatenate([[0], np.cumsum(counts)])),
                   energy=torch.as_tensor(np.array(e, dtype=float)), forces=torch.as_tensor(np.concatenate(f)),
                   charge=torch.as_tensor(q, dtype=torch.float64), multiplicity=torch.as_tensor(m), info=info)

    @classmethod
    def from_labels(cls, labels) -> "Dataset":
        """Build from oracle labels (failed ones are dropped)."""
        return cls.from_atoms([lab.to_atoms() for lab in labels if lab.ok])

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
                            info=np.array(json.dumps(self.info, default=float)))

    @classmethod
    def load_npz(cls, path) -> "Dataset":
        """Read a file written by :meth:`save_npz` (no pickles)."""
        import json

        with np.load(path, allow_pickle=False) as d:
            return cls(**{k: torch.as_tensor(d[k]) for k in ("positions", "numbers", "offsets", "energy", "forces",
                                                             "charge", "multiplicity")},
                       info=json.loads(str(d["info"])))

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
        return state, self.energy[frames].to(dtype), self.forces[idx].to(dtype)

    def subset(self, frames) -> "Dataset":
        """A new Dataset with the given frames."""
        frames = torch.as_tensor(frames, dtype=torch.long)
        idx = self.atom_index(frames)
        counts = self.n_atoms[frames]
        return Dataset(self.positions[idx], self.numbers[idx], torch.cat([torch.zeros(1, dtype=torch.long),
                       torch.cumsum(counts, 0)]), self.energy[frames], self.forces[idx], self.charge[frames],
                       self.multiplicity[frames], [self.info[int(k)] for k in frames])

    def to_atoms(self) -> list[Atoms]:
        """Frames as Atoms with SinglePointCalculators."""
        from ase.calculators.singlepoint import SinglePointCalculator

        out = []
        for k in range(len(self)):
            a, b = int(self.offsets[k]), int(self.offsets[k + 1])
            atoms = Atoms(numbers=self.numbers[a:b].numpy(), positions=self.positions[a:b].numpy())
            atoms.info.update(self.info[k])
            atoms.calc = SinglePointCalculator(atoms, energy=float(self.energy[k]), forces=self.forces[a:b].numpy())
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
