"""Direct GFN2-xTB umbrella sampling of malonaldehyde proton transfer: the reference barrier.

The same windows, CV, temperature and estimator as examples/malonaldehyde.toml, but every MD step
runs GFN2-xTB (tblite) itself. Run once (400,016 xTB calls, ~20-60 min on 2 cores); it
checkpoints into benchmarks/results/gfn2_direct_samples.h5 and resumes after a kill. Writes
benchmarks/results/gfn2_direct_reference.json (barrier ± 1 sigma, kcal/mol, number of GFN2 calls)
and gfn2_direct_pmf.csv. The cross-level and same-level acceptance tests and benchmarks/qm_budget.py
compare against this stored file.

Usage: python benchmarks/gfn2_direct_reference.py [--method GFN2-xTB] [--n-production 24000]
(the stored file was made by a run of 8000 production steps per window, then resumed to 24000)
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np
import torch

from fesurf.analysis import barrier
from fesurf.config import kappa_in_ev, load_config
from fesurf.estimators import compute_pmf
from fesurf.oracles import XTBOracle
from fesurf.pipeline import build_cv, build_structure
from fesurf.sampling.umbrella import umbrella_sampling
from fesurf.state import State

HERE = pathlib.Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "malonaldehyde.toml"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="GFN2-xTB")
    ap.add_argument("--n-production", type=int, default=24000)
    ap.add_argument("--stride", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(EXAMPLE)
    u = cfg["umbrella"]
    atoms = build_structure(cfg)
    cv = build_cv(cfg, len(atoms))
    tag = args.method.lower().replace("-", "")
    path = HERE / "results" / f"{tag}_direct_samples.h5"
    t0 = time.perf_counter()
    samples = umbrella_sampling(
        XTBOracle(method=args.method).as_potential(), State.from_atoms(atoms), cv,
        centers=np.linspace(u["range"][0], u["range"][1], u["n_windows"]), kappa=kappa_in_ev(cfg),
        temperature=cfg["run"]["temperature"], timestep=u["timestep"], friction=u["friction"], seed=123,
        n_equilibration=u["n_equilibration"], n_production=args.n_production, stride=args.stride,
        checkpoint_every=500, path=path, resume=path.exists(), store_positions=False, progress=True)
    pmf = compute_pmf(samples, bins=cfg["pmf"]["bins"], range=cfg["pmf"]["range"])
    b = barrier(pmf).to("kcal/mol")
    n_calls = u["n_windows"] * (u["n_equilibration"] + args.n_production + 1)
    result = {"method": args.method, "temperature_K": cfg["run"]["temperature"], "unit": "kcal/mol",
              "barrier": b.to_dict(), "n_reference_calls": int(n_calls), "n_frames": int(samples.n_frames),
              "n_production_per_window": args.n_production, "n_windows": u["n_windows"],
              "wall_time_s_this_invocation": time.perf_counter() - t0,
              "settings": {k: u[k] for k in ("range", "n_windows", "kappa", "kappa_unit", "timestep", "friction",
                                             "n_equilibration")} | {"stride": args.stride},
              "pmf_bins": cfg["pmf"]["bins"], "pmf_range": cfg["pmf"]["range"]}
    (HERE / "results" / f"{tag}_direct_reference.json").write_text(json.dumps(result, indent=1) + "\n")
    pmf.to("kcal/mol").to_csv(HERE / "results" / f"{tag}_direct_pmf.csv")
    print(json.dumps(result["barrier"], indent=1))


if __name__ == "__main__":
    main()
