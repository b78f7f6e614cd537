"""External-model cost benchmark: MACE (mace-torch) against fesurf's stored BP committee on malonaldehyde.

Energy + forces of all umbrella windows in one batched call (16 and 64 replicas of the 9-atom molecule),
timed interleaved in one loop so load drifts hit every model alike:

- ``bp_committee``: the stored Behler–Parrinello committee (4 members), its default MD path;
- ``bp_committee_predict``: the same with ``predict()`` (mean, energy spread, force deviation);
- ``mace_small``: the small MACE the tests train (16x0e+16x1o, l_max 1, one interaction, r_max 4 A) through
  :class:`~fesurf.surrogates.external.MACEPotential` (fesurf builds the graph, autograd forces);
- ``mace_small_torchsim``: the same model through TorchSim's ``MaceModel`` and :class:`TorchSimPotential`;
- ``mace_medium``: a MACE closer to published small models (64x0e+64x1o, two interactions, r_max 5 A);
- ``mace_committee_4``: four small MACEs as an :class:`ExternalCommittee`, ``predict()``.

MACE weights are random (seeded): the cost does not depend on them. Prints ms per call, microseconds per
replica-step and the ratios to the BP committee; writes ``benchmarks/results/external_models.json`` with the
load average at the start and end. Run with ``nice -n 10 .venv/bin/python benchmarks/external_models.py``
(one torch thread). Ratios are what matter on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from fesurf.data import load_malonaldehyde_committee, malonaldehyde
from fesurf.state import State
from fesurf.surrogates.external import ExternalCommittee, MACEPotential, TorchSimPotential, small_mace

RESULTS = Path(__file__).resolve().parent / "results" / "external_models.json"


def _models():
    small = MACEPotential(small_mace([1, 6, 8], channels=16, max_ell=1, num_interactions=1, r_max=4.0, seed=0))
    return {
        "bp_committee": (load_malonaldehyde_committee(), "energy_and_forces"),
        "bp_committee_predict": (load_malonaldehyde_committee(), "predict"),
        "mace_small": (small, "energy_and_forces"),
        "mace_small_torchsim": (TorchSimPotential.from_mace(small), "energy_and_forces"),
        "mace_medium": (MACEPotential(small_mace([1, 6, 8], channels=64, max_ell=1, num_interactions=2, r_max=5.0,
                                                 seed=1)), "energy_and_forces"),
        "mace_committee_4": (ExternalCommittee([MACEPotential(small_mace([1, 6, 8], seed=s)) for s in range(4)]),
                             "predict"),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10, help="calls per timing round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (best is kept)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_start = os.getloadavg()
    models = _models()
    out = {"load_average_start": load_start, "replicas": {}, "threads": 1, "reps": args.reps, "rounds": args.rounds}
    rng = torch.Generator().manual_seed(0)
    for n in (16, 64):
        base = State.from_atoms(malonaldehyde()).replicate(n)
        state = base.replace(positions=base.positions + 0.03 * torch.randn(base.positions.shape, generator=rng,
                                                                          dtype=torch.float64))
        calls = {name: (lambda m=m, how=how: getattr(m, how)(state)) for name, (m, how) in models.items()}
        for fn in calls.values():  # warm up (graph templates, autograd)
            fn()
        best = {name: float("inf") for name in calls}
        for _ in range(args.rounds):
            for name, fn in calls.items():
                t = time.perf_counter()
                for _ in range(args.reps):
                    fn()
                best[name] = min(best[name], (time.perf_counter() - t) / args.reps)
        ref = best["bp_committee"]
        res = {name: {"ms_per_call": 1e3 * s, "us_per_replica_step": 1e6 * s / n, "ratio_vs_bp_committee": s / ref}
               for name, s in best.items()}
        out["replicas"][str(n)] = res
        print(f"\n{n} replicas of malonaldehyde (9 atoms), energy+forces in one batched call:")
        print(f"{'model':<24}{'ms/call':>10}{'us/replica-step':>18}{'x BP committee':>16}")
        for name, r in res.items():
            print(f"{name:<24}{r['ms_per_call']:>10.2f}{r['us_per_replica_step']:>18.1f}"
                  f"{r['ratio_vs_bp_committee']:>16.2f}")
    out["load_average_end"] = os.getloadavg()
    out["note"] = ("random (seeded) MACE weights; measured under shared load on the 2-core machine, one torch "
                   "thread; ratios are the result")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return out


if __name__ == "__main__":
    main()
