"""Peer agreement with i-PI: the same surrogate driven by i-PI (its Python driver interface, in process)
and by fesurf's ring-polymer MD, on malonaldehyde at 300 K with P = 16.

Both runs start from the same bead configuration and use PILE-L (pile_lambda = 1, centroid tau 100 fs),
the BAOAB splitting, a 0.5 fs step and no centre-of-mass constraint. i-PI evaluates the stored
GFN2-xTB BP committee through ``benchmarks/_ipi_fesurf_pes.py`` (a ``custom`` direct forcefield, all
16 beads in one batched call). Compared: the centroid-virial kinetic energy and the bead-averaged
potential <V>, each with its standard error from statistical inefficiency (the same
:func:`fesurf.estimators.quantum.pooled_mean` for both codes), within 2 combined sigma.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pimd_ipi_malonaldehyde.py``; writes
``benchmarks/results/pimd_ipi_malonaldehyde.json`` with both runs' settings.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "pimd_ipi_malonaldehyde.json"


def compare(n_steps: int = 20000, n_equilibration: int = 2000, stride: int = 10, n_beads: int = 16,
            temperature: float = 300.0, timestep: float = 0.5, tau: float = 100.0, seed: int = 0) -> dict:
    """Run both codes and return means, sigmas, z-scores, timings and settings."""
    from ase.io import write

    import _ipi_runs as ipi
    from fesurf.data import load_malonaldehyde_committee, malonaldehyde
    from fesurf.estimators.quantum import pooled_mean, quantum_estimates
    from fesurf.md.ring_polymer import RingPolymer, RingPolymerReporter, ring_polymer_state
    from fesurf.state import State

    torch.set_num_threads(1)
    atoms = malonaldehyde()
    start = ring_polymer_state(State.from_atoms(atoms), n_beads, temperature, seed=seed)
    P, n = n_beads, len(atoms)
    total = n_equilibration + n_steps

    # fesurf
    model = load_malonaldehyde_committee()
    rp = RingPolymer(model, P, timestep, temperature, seed=seed + 1, tau_centroid=tau, splitting="baoab")
    rec = RingPolymerReporter(rp, stride=stride, after_step=n_equilibration)
    t = time.perf_counter()
    rp.run(start, total, reporters=[rec])
    t_fesurf = time.perf_counter() - t
    est = quantum_estimates(rec.arrays(), P)

    # i-PI, same start, same settings
    beads = []
    for j in range(P):
        a = atoms.copy()
        a.positions = start.positions[j * n:(j + 1) * n].numpy()
        a.cell = [30.0, 30.0, 30.0]
        beads.append(a)
    with ipi.temporary_dir() as d:
        template = str(Path(d) / "template.extxyz")
        write(template, beads[0])
        ff = ipi.fesurf_forcefield("malonaldehyde_committee", template, batch_size=P)
        sim = ipi.build_ipi(beads, ff, d, temperature=temperature, timestep_fs=timestep, tau_fs=tau, seed=seed + 2,
                            stride=stride)
        t_ipi = ipi.run_ipi(sim, d, total)
        props = ipi.read_ipi_properties(d)
    keep = props["step"] > n_equilibration
    k_ipi = pooled_mean(props["kinetic_cv"][keep])
    v_ipi = pooled_mean(props["potential"][keep])

    def z(a, b):
        return float((a.value - b.value) / np.hypot(a.error, b.error))

    return {
        "kinetic_cv_eV": {"fesurf": est.kinetic_virial.to_dict(), "ipi": k_ipi.to_dict(),
                          "z": z(est.kinetic_virial, k_ipi)},
        "potential_eV": {"fesurf": est.potential.to_dict(), "ipi": v_ipi.to_dict(), "z": z(est.potential, v_ipi)},
        "wall_s": {"fesurf": t_fesurf, "ipi": t_ipi},
        "ms_per_step": {"fesurf": 1e3 * t_fesurf / total, "ipi": 1e3 * t_ipi / total},
        "settings": {"system": "malonaldehyde (fesurf.data.malonaldehyde)", "surrogate": "stored GFN2-xTB BP committee",
                     "temperature_K": temperature, "n_beads": P, "timestep_fs": timestep, "n_steps": n_steps,
                     "n_equilibration": n_equilibration, "stride": stride, "seed": seed,
                     "fesurf": {"integrator": "RingPolymer", "thermostat": "pile_l", "tau_centroid_fs": tau,
                                "pile_lambda": 1.0, "splitting": "baoab", "propagator": "exact",
                                "estimator": "observables()['kinetic_virial'], ['potential']"},
                     "ipi": {"version": _ipi_version(), "motion": "dynamics nvt", "thermostat": "pile_l",
                             "tau_fs": tau, "pile_lambda": 1.0, "splitting": "baoab", "fixcom": False,
                             "forcefield": "ffdirect custom (benchmarks/_ipi_fesurf_pes.py), batch_size = P",
                             "properties": "kinetic_cv{electronvolt}, potential{electronvolt}"},
                     "start": "same beads for both (ring_polymer_state, free ring polymer around the minimum)",
                     "errors": "pooled_mean: standard error from pymbar statistical inefficiency"},
    }


def _ipi_version():
    from importlib.metadata import version

    return version("ipi")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    res = compare(n_steps=args.steps)
    for key in ("kinetic_cv_eV", "potential_eV"):
        r = res[key]
        print(f"{key}: fesurf {r['fesurf']['value']:.5f} ± {r['fesurf']['error']:.5f}, "
              f"i-PI {r['ipi']['value']:.5f} ± {r['ipi']['error']:.5f}, z = {r['z']:+.2f}")
    print(f"ms/step: fesurf {res['ms_per_step']['fesurf']:.2f}, i-PI {res['ms_per_step']['ipi']:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
