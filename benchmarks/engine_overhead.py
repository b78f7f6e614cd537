"""Engine overhead: one fesurf batched velocity-Verlet step vs ase.md.VelocityVerlet.

Same 21-atom system, same trivial potential (an isotropic harmonic well,
U = sum x^2 / 2, exact forces: a plain numpy ASE calculator on ASE's side, so
ASE pays nothing for fesurf), same time step. Cases: 1 replica and 64 replicas. The ratio is ASE's time per
replica-step divided by fesurf's.

Run: ``python benchmarks/engine_overhead.py`` (writes
benchmarks/results/engine_overhead.json).
"""
from __future__ import annotations

import json
import pathlib
import time

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.md.verlet import VelocityVerlet as AseVerlet
from ase.units import fs

from fesurf.md import VelocityVerlet, maxwell_boltzmann
from fesurf.potentials import Harmonic
from fesurf.state import State

N_ATOMS = 21


def system():
    rng = np.random.default_rng(0)
    numbers = [6] * 7 + [1] * 12 + [8] * 2
    return Atoms(numbers=numbers, positions=rng.normal(scale=1.5, size=(N_ATOMS, 3)))


class NumpyHarmonic(Calculator):
    """The same harmonic well as a plain numpy ASE calculator (no fesurf in ASE's loop)."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        x = self.atoms.positions
        self.results["energy"] = 0.5 * float((x * x).sum())
        self.results["forces"] = -x


def time_ase(n_steps):
    atoms = system()
    atoms.calc = NumpyHarmonic()
    dyn = AseVerlet(atoms, timestep=0.5 * fs)
    dyn.run(20)
    t = time.perf_counter()
    dyn.run(n_steps)
    return (time.perf_counter() - t) / n_steps


def time_fesurf(n_replicas, n_steps):
    state = maxwell_boltzmann(State.from_atoms(system()).replicate(n_replicas), 300.0, seed=0)
    md = VelocityVerlet(Harmonic(k=1.0), timestep=0.5)
    md.run(state, 20, progress=False)
    best = np.inf
    for _ in range(3):
        t = time.perf_counter()
        md.run(state, n_steps, progress=False)
        best = min(best, (time.perf_counter() - t) / n_steps)
    return best / n_replicas


def main():
    torch.set_num_threads(1)
    ase_step = time_ase(2000)
    single = time_fesurf(1, 2000)
    batched = time_fesurf(64, 2000)
    result = {
        "n_atoms": N_ATOMS,
        "ase_seconds_per_replica_step": ase_step,
        "fesurf_seconds_per_replica_step_single": single,
        "fesurf_seconds_per_replica_step_batched_64": batched,
        "ratio_single": ase_step / single,
        "ratio_batched_64": ase_step / batched,
        "goal_ratio_single": 3.0,
        "goal_ratio_batched_64": 100.0,
        "torch_threads": 1,
    }
    print(f"{'case':<28}{'s / replica-step':>18}{'ASE / fesurf':>14}")
    print(f"{'ase VelocityVerlet':<28}{ase_step:>18.3e}{1.0:>14.1f}")
    print(f"{'fesurf, 1 replica':<28}{single:>18.3e}{result['ratio_single']:>14.1f}")
    print(f"{'fesurf, 64 replicas':<28}{batched:>18.3e}{result['ratio_batched_64']:>14.1f}")
    out = pathlib.Path(__file__).parent / "results" / "engine_overhead.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
