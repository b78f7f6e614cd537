"""Umbrella sampling throughput: fesurf's batched windows vs ASE Langevin window by window.

A 12-atom Morse cluster (analytic potential), a DISTANCE CV between atoms 0 and 1,
32 windows. fesurf runs all 32 windows as replicas of one State in one Langevin
call; the baseline is what users do today: ``ase.md.langevin.Langevin`` on each
window in turn, with ``FesurfCalculator(Sum([potential, RESTRAINT]))``.
Prints replica-steps per second for both and writes
``benchmarks/results/umbrella_throughput.json`` (key ``ratio``; goal >= 30).

Run: ``python benchmarks/umbrella_throughput.py`` (about 1-2 minutes).
"""
import json
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.md.langevin import Langevin as AseLangevin

from fesurf.bias import RESTRAINT
from fesurf.cv import DISTANCE
from fesurf.potentials import FesurfCalculator, Morse, Sum
from fesurf.sampling import umbrella_sampling
from fesurf.state import State

torch.set_num_threads(1)
N_WINDOWS, T, DT, FRICTION = 32, 300.0, 0.5, 0.01
CENTRES = np.linspace(1.0, 2.5, N_WINDOWS)
KAPPA = 5.0


def molecule():
    rng = np.random.default_rng(0)
    grid = np.array([[i, j, k] for i in range(3) for j in range(2) for k in range(2)], dtype=float) * 1.1
    return Atoms("C12", positions=grid + rng.normal(scale=0.05, size=grid.shape))


def main(n_fesurf=2000, n_ase=100):
    pot = Morse(D=0.3, a=1.8, r0=1.1)
    atoms = molecule()
    start = State.from_atoms(atoms)
    umbrella_sampling(pot, start, DISTANCE([0, 1]), CENTRES, KAPPA, temperature=T, timestep=DT, friction=FRICTION,
                      n_equilibration=0, n_production=20, stride=10, seed=0, check_overlap=False)  # warm-up
    t0 = time.perf_counter()
    umbrella_sampling(pot, start, DISTANCE([0, 1]), CENTRES, KAPPA, temperature=T, timestep=DT, friction=FRICTION,
                      n_equilibration=0, n_production=n_fesurf, stride=50, seed=0, check_overlap=False,
                      store_positions=False)
    fesurf_rate = N_WINDOWS * n_fesurf / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    for w in range(N_WINDOWS):
        a = atoms.copy()
        a.calc = FesurfCalculator(Sum([pot, RESTRAINT(DISTANCE([0, 1]), at=CENTRES[w], kappa=KAPPA)]))
        dyn = AseLangevin(a, DT * units.fs, temperature_K=T, friction=FRICTION / units.fs, fixcm=False,
                           rng=np.random.default_rng(w))
        dyn.run(n_ase)
    ase_rate = N_WINDOWS * n_ase / (time.perf_counter() - t0)
    result = {"n_atoms": len(atoms), "n_windows": N_WINDOWS, "fesurf_replica_steps_per_s": fesurf_rate,
              "ase_replica_steps_per_s": ase_rate, "ratio": fesurf_rate / ase_rate, "goal": 30.0,
              "potential": "Morse(D=0.3, a=1.8, r0=1.1)", "cv": "DISTANCE(0,1)", "torch_threads": 1}
    print(f"fesurf batched: {fesurf_rate:10.1f} replica-steps/s")
    print(f"ASE per window: {ase_rate:10.1f} replica-steps/s")
    print(f"ratio: {result['ratio']:.1f} (goal >= 30)")
    out = Path(__file__).resolve().parent / "results" / "umbrella_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
