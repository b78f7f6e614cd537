"""Periodic surrogate cost: MD per atom-step on fcc Cu at 1k, 8k and 32k atoms against EMT through
ASE, and batched NEB (all images in one surrogate call) against image-by-image ASE NEB.

Writes ``benchmarks/results/periodic_md.json`` and prints it. Run with one thread::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/periodic_md.py [--sizes 1000 8000 32000]

The surrogate is the architecture of ``scripts/cu_transferability.py`` (a 4-member Behler-Parrinello
committee, radial ACSF to 5 A; its MD runs on the committee mean), with freshly initialised weights
(the cost does not depend on the weights). Its MD is fesurf's batched Langevin (BAOAB) on a periodic
State, one energy-and-forces call per step (vesin neighbour list rebuilt every step); EMT's is ASE's
Langevin with ASE's EMT calculator on the same Atoms. Timings: mean seconds per step after one warm-up
step, wall and process CPU (``time.process_time``, which a loaded machine inflates less); ratios are
EMT / surrogate per atom-step (> 1: the surrogate is cheaper).

``batched_neb_ratio``: the same climbing-image band (Cu(100) adatom hop, 3x3x4 slab + adatom, end
points relaxed with EMT) with ``n_images`` images, run for a fixed number of FIRE steps through ASE's
NEB machinery twice with the same surrogate: :func:`fesurf.sampling.neb.neb` (every moving image in one
batched call per band step) and :func:`~fesurf.sampling.neb.image_by_image_neb` (ASE's ordinary NEB,
one FesurfCalculator call per image). Both follow the same optimiser trajectory (tests/test_neb.py),
so the ratio of their times is the ratio per band step. The band with EMT image by image is timed too
(``neb_emt_*``). ``model_only_batching_ratio_cpu``: the model's own cost of the moving images one by
one over their cost in one batched call (the image-by-image band also pays, per call, the
FesurfCalculator's State construction and validation). The machine's load average is recorded at
the start and the end.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "periodic_md.json"
ACSF = dict(cutoff=5.0, r_min=1.8, n_radial=10, angular_cutoff=1.0, angular_shifts=(0.5,), zetas=(1,), lambdas=(1,))
HIDDEN, MEMBERS = (32, 32), 4
TIMESTEP, TEMPERATURE = 2.0, 300.0  # fs, K


def model(members=MEMBERS):
    from fesurf.surrogates import BehlerParrinello

    return BehlerParrinello([29], hidden=HIDDEN, n_members=members, acsf=ACSF, seed=0).double()


def cu_cell(n_atoms, a):
    from ase.build import bulk

    reps = {1000: (5, 5, 10), 8000: (10, 10, 20), 32000: (20, 20, 20)}
    if n_atoms not in reps:
        raise SystemExit(f"sizes are 1000, 8000 or 32000 atoms, got {n_atoms}")
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat(reps[n_atoms])
    atoms.rattle(0.02, seed=1)
    return atoms


def timed(fn, n):
    """Mean (wall, cpu) seconds per call of ``fn`` over ``n`` calls."""
    w, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return (time.perf_counter() - w) / n, (time.process_time() - c) / n


def surrogate_md(atoms, steps, members=MEMBERS):
    from fesurf.md import Langevin, maxwell_boltzmann
    from fesurf.state import State

    md = Langevin(model(members), timestep=TIMESTEP, temperature=TEMPERATURE, friction=0.01, seed=1)
    md.start(maxwell_boltzmann(State.from_atoms(atoms), TEMPERATURE, seed=2))
    md.advance(1)  # warm-up: caches, first neighbour list
    return timed(lambda: md.advance(1), steps)


def emt_md(atoms, steps):
    from ase import units
    from ase.calculators.emt import EMT
    from ase.md.langevin import Langevin as AseLangevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    work = atoms.copy()
    work.calc = EMT()
    rng = np.random.default_rng(3)
    MaxwellBoltzmannDistribution(work, temperature_K=TEMPERATURE, rng=rng)
    dyn = AseLangevin(work, TIMESTEP * units.fs, temperature_K=TEMPERATURE, friction=0.01 / units.fs, rng=rng)
    dyn.run(1)
    return timed(lambda: dyn.run(1), steps)


def neb_timing(a0, n_images, steps):
    from ase.calculators.emt import EMT

    from fesurf.data.materials import adatom_hop_end_points
    from fesurf.potentials.ase_bridge import FesurfCalculator
    from fesurf.sampling.neb import NEBSettings, image_by_image_neb, neb

    ends = adatom_hop_end_points(a0, EMT, size=(3, 3), layers=4)
    m = model()
    # fmax below reach: every run takes exactly `steps` band steps (the comparison is per step)
    settings = NEBSettings(n_images=n_images, k=0.2, climb=True, fmax=1e-9, steps=steps, optimizer="FIRE")
    out = {}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "did not converge": intended
        for name, run in (("batched", lambda: neb(m, ends, settings)),
                          ("image_by_image", lambda: image_by_image_neb(lambda: FesurfCalculator(m), ends, settings)),
                          ("emt_image_by_image", lambda: image_by_image_neb(EMT, ends, settings))):
            run()  # warm-up (neighbour-list caches, imports)
            w, c = time.perf_counter(), time.process_time()
            res = run()
            out[name] = {"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c, "n_steps": res.n_steps,
                         "n_calls": res.n_calls}
    # the model alone, without ASE's band or the calculator's State building: one image vs all moving images
    from fesurf.state import State

    one, many = State.from_atoms(ends[0]), State.from_atoms([ends[0]] * (n_images - 2))
    m.energy_and_forces(one), m.energy_and_forces(many)
    t_one, t_many = timed(lambda: m.energy_and_forces(one), 20), timed(lambda: m.energy_and_forces(many), 10)
    same = out["batched"]["n_steps"] == out["image_by_image"]["n_steps"]
    return {"n_images": n_images, "n_atoms": len(ends[0]), "band_steps": steps, "same_step_count": bool(same),
            "runs": out,
            "batched_neb_ratio": out["image_by_image"]["wall_s"] / out["batched"]["wall_s"],
            "batched_neb_ratio_cpu": out["image_by_image"]["cpu_s"] / out["batched"]["cpu_s"],
            "neb_emt_vs_batched_surrogate_ratio": out["emt_image_by_image"]["wall_s"] / out["batched"]["wall_s"],
            "model_call_one_image_cpu_ms": 1e3 * t_one[1], "model_call_all_moving_images_cpu_ms": 1e3 * t_many[1],
            "model_only_batching_ratio_cpu": (n_images - 2) * t_one[1] / t_many[1]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 8000, 32000])
    parser.add_argument("--emt-max", type=int, default=8000, help="largest size also run with EMT (ASE is slow)")
    parser.add_argument("--neb-images", type=int, nargs="+", default=[7, 13])
    parser.add_argument("--neb-steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from ase.calculators.emt import EMT

    from fesurf.data.materials import lattice_constant

    a0 = lattice_constant(EMT)
    result = {"what": __doc__.splitlines()[0], "script": "benchmarks/periodic_md.py",
              "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "load_average_start": list(os.getloadavg()), "python": platform.python_version(),
                          "torch": torch.__version__},
              "surrogate": {"type": "BehlerParrinello", "members": MEMBERS, "hidden": list(HIDDEN), "acsf": ACSF,
                            "md": "fesurf Langevin BAOAB, committee mean, float64"},
              "lattice_constant_A": a0, "md": []}
    steps = {1000: 10, 8000: 3, 32000: 2}
    for n in args.sizes:
        atoms = cu_cell(n, a0)
        w, c = surrogate_md(atoms, steps[n])
        w1, c1 = surrogate_md(atoms, steps[n], members=1)
        row = {"n_atoms": len(atoms), "steps_timed": steps[n],
               "surrogate_us_per_atom_step": 1e6 * w / len(atoms),
               "surrogate_cpu_us_per_atom_step": 1e6 * c / len(atoms),
               "single_member_us_per_atom_step": 1e6 * w1 / len(atoms),
               "single_member_cpu_us_per_atom_step": 1e6 * c1 / len(atoms)}
        if n <= args.emt_max:
            we, ce = emt_md(atoms, max(1, steps[n] // 2 + 1))
            row.update(emt_us_per_atom_step=1e6 * we / len(atoms), emt_cpu_us_per_atom_step=1e6 * ce / len(atoms),
                       ratio_emt_vs_surrogate=we / w, ratio_emt_vs_surrogate_cpu=ce / c)
        result["md"].append(row)
        print(json.dumps(row), flush=True)
    result["neb"] = [neb_timing(a0, k, args.neb_steps) for k in args.neb_images]
    for r in result["neb"]:
        print(json.dumps({k: v for k, v in r.items() if k != "runs"}), flush=True)
    head = result["neb"][0]
    result["batched_neb_ratio"] = head["batched_neb_ratio"]
    result["batched_neb_ratio_cpu"] = head["batched_neb_ratio_cpu"]
    result["batched_neb_ratio_n_images"] = head["n_images"]
    result["machine"]["load_average_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
