"""Reporters: what an MD run leaves behind, written every ``stride`` steps.

A reporter is any object with ``stride`` and ``report(step, state, info)``
(``info``: [n_systems] tensors ``potential_energy``, ``kinetic_energy``,
``conserved``, in eV) and optionally ``close()``.

Example
-------
>>> from fesurf.md import EnergyReporter
>>> rep = EnergyReporter(stride=10)
>>> # md.run(state, 1000, reporters=[rep]); rep.arrays()["conserved"].shape -> (101, n_systems)
"""
from __future__ import annotations

import os

import h5py
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from ..errors import InputError


def _check_stride(stride):
    if int(stride) < 1:
        raise InputError(f"reporter stride must be >= 1 step, got {stride}")
    return int(stride)


class EnergyReporter:
    """Keeps energies (eV) in memory: ``arrays()`` gives step, time and [n_frames, n_systems] arrays."""

    def __init__(self, stride: int = 1, timestep: float | None = None):
        self.stride = _check_stride(stride)
        self.timestep = timestep
        self.steps, self._data = [], {"potential_energy": [], "kinetic_energy": [], "conserved": []}

    def report(self, step, state, info):
        self.steps.append(step)
        for key in self._data:
            self._data[key].append(info[key].detach().cpu().numpy().copy())

    def arrays(self) -> dict:
        out = {k: np.array(v) for k, v in self._data.items()}
        out["step"] = np.array(self.steps)
        if self.timestep is not None:
            out["time_fs"] = out["step"] * self.timestep
        return out


class ExtXYZReporter:
    """Appends frames to an extxyz file through ``ase.io`` (one block per system per frame).

    Each frame carries ``info['step']``, ``info['system']`` and the energy and
    forces of the potential (as a SinglePointCalculator).
    """

    def __init__(self, path, stride: int = 100, append: bool = False):
        self.path = os.fspath(path)
        self.stride = _check_stride(stride)
        if not append and os.path.exists(self.path):
            os.remove(self.path)

    def report(self, step, state, info):
        frames = state.to_atoms()
        energies = info["potential_energy"].detach().cpu().numpy()
        for k, atoms in enumerate(frames):
            atoms.info["step"] = int(step)
            atoms.info["system"] = k
            atoms.calc = SinglePointCalculator(atoms, energy=float(energies[k]))
        write(self.path, frames, format="extxyz", append=True)


class HDF5Reporter:
    """Writes positions, velocities and energies to HDF5 incrementally (h5py).

    Datasets: ``step`` [n_frames], ``positions`` / ``velocities``
    [n_frames, n_atoms, 3] (A, A/fs), ``potential_energy``, ``kinetic_energy``,
    ``conserved`` [n_frames, n_systems] (eV); attributes hold atomic numbers,
    masses, system index and units. Flushed after every frame, so a killed run
    keeps what it wrote.
    """

    def __init__(self, path, stride: int = 100, velocities: bool = True):
        self.path = os.fspath(path)
        self.stride = _check_stride(stride)
        self.velocities = velocities
        self._file = None

    def _open(self, state, info):
        f = h5py.File(self.path, "w")
        n, ns = state.n_atoms, state.n_systems
        f.attrs.update(units_length="Angstrom", units_energy="eV", units_time="fs", units_velocity="Angstrom/fs")
        f.create_dataset("atomic_numbers", data=state.atomic_numbers.cpu().numpy())
        f.create_dataset("masses", data=state.masses.cpu().numpy())
        f.create_dataset("system_index", data=state.system_index.cpu().numpy())
        f.create_dataset("step", shape=(0,), maxshape=(None,), dtype="i8", chunks=True)
        names = ["positions"] + (["velocities"] if self.velocities else [])
        for name in names:
            f.create_dataset(name, shape=(0, n, 3), maxshape=(None, n, 3), dtype="f8", chunks=(1, n, 3))
        for key in info:
            f.create_dataset(key, shape=(0, ns), maxshape=(None, ns), dtype="f8", chunks=True)
        self._file = f

    def report(self, step, state, info):
        if self._file is None:
            self._open(state, info)
        f = self._file
        k = f["step"].shape[0]
        values = {"step": step, "positions": state.positions.detach().cpu().numpy()}
        if self.velocities:
            values["velocities"] = state.velocities.detach().cpu().numpy()
        values.update({key: v.detach().cpu().numpy() for key, v in info.items()})
        for key, value in values.items():
            ds = f[key]
            ds.resize(k + 1, axis=0)
            ds[k] = value
        f.flush()

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None
