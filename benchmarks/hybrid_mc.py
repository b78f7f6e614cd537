"""Exact reference-level sampling with surrogate proposals: exactness, the acceptance law, and GFN2 calls.

Three parts, each resumable (``--section``), merged into ``benchmarks/results/hybrid_mc.json``:

``analytic``  The exactness cases of tests/_hybrid_mc_cases.py at 4-8x the in-suite sample sizes: a wrong
              surrogate (double well with the barrier 2 kT too low and shifted minima; a scaled, shifted
              Mueller-Brown surface) against the exact analytic reference, with and without umbrella bias,
              1D and 2D. Walkers start from exact samples; chi^2 on effective counts (p > 0.01 required),
              PMF error where F < 4 kT (<= 0.1 kT required); a deliberately irreversible mover must fail
              the same chi^2. Acceptance law: measured acceptance against erfc(beta sigma / 2) at
              beta sigma = 0.5, 1, 2 (harmonic surrogate, shifted harmonic reference, quarter-period
              trajectories: Gaussian, independent end-point errors).
``real``      Malonaldehyde at 300 K, all 16 windows of examples/malonaldehyde_gfn1_to_gfn2.toml: the stored
              GFN1-xTB committee proposes (it never saw a GFN2 label), GFN2-xTB (tblite, in process)
              accepts. Warm start from a short surrogate-only umbrella run (no GFN2 call). The MBAR PMF is the
              GFN2 PMF directly; its barrier (fesurf.analysis.barrier, as the pipeline's analysis stage) is
              compared with the stored direct GFN2 umbrella reference (3.26 +- 0.17 kcal/mol, 400,016 GFN2
              calls, benchmarks/gfn2_direct_reference.py).
``direct``    A short direct GFN2 Langevin umbrella run with the reference's settings (0.5 fs, friction
              0.02/fs), every step recorded, to measure its CV autocorrelation: GFN2 calls per effective sample
              side by side with hybrid MC's.

Headline keys:

- ``calls_saving_vs_direct``: GFN2 calls a direct run needs for hybrid MC's barrier sigma,
  ``N_ref (sigma_ref / sigma)^2`` (the stored run scaled by the 1/sqrt(N) law, the convention of
  benchmarks/qm_budget.py), over hybrid MC's GFN2 calls (all of them: start, tuning, equilibration,
  production). Goal >= 20. ``calls_saving_vs_direct_autocorrelation`` is the same ratio from the measured
  CV autocorrelation of both chains (calls per effective sample).
- ``acceptance_median`` over the 16 windows (production), with the Gaussian prediction beside it.
- ``exactness_p_value``: the smallest chi^2 p over the four analytic exactness cases.

Against the sparse-reweighting route (benchmarks/results/qm_budget.json: 500 GFN2 labels, delta estimator,
sigma 0.27 kcal/mol): hybrid MC calls at that sigma, ``N_hmc (sigma_hmc / sigma_sparse)^2``, over 500.

Usage: nice -n 10 .venv/bin/python benchmarks/hybrid_mc.py [--section all|analytic|real|direct] [--quick]
(OMP_NUM_THREADS=1; samples are cached in benchmarks/results/hybrid_mc_*_samples.h5 and resumed)
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import pathlib
import sys
import time
import warnings

import numpy as np
import torch

from fesurf.analysis import barrier
from fesurf.config import kappa_in_ev, load_config
from fesurf.data import load_malonaldehyde_gfn1_committee
from fesurf.errors import InputError
from fesurf.estimators import compute_pmf
from fesurf.oracles import XTBOracle
from fesurf.pipeline import build_cv, build_structure
from fesurf.sampling import umbrella_sampling
from fesurf.sampling.hybrid_mc import (HybridMCDynamics, format_report, hybrid_mc_report, hybrid_mc_sampling,
                                       pooled_statistical_inefficiency, sparse_bins)
from fesurf.sampling.protocol import Schedule, Storage
from fesurf.sampling.sampleset import SampleSet
from fesurf.state import State
from fesurf.units import convert

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"
OUT = RESULTS / "hybrid_mc.json"
EXAMPLE = HERE.parent / "examples" / "malonaldehyde_gfn1_to_gfn2.toml"
REFERENCE = RESULTS / "gfn2xtb_direct_reference.json"
SPARSE = RESULTS / "qm_budget.json"
sys.path.insert(0, str(HERE.parent / "tests"))  # the shared exactness cases


def _clean(d: dict) -> dict:
    return {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in d.items()
            if k not in ("samples", "report", "centers")}


def analytic(quick: bool, done: dict | None = None, save=None) -> dict:
    """The exactness cases at benchmark size; cases already in ``done`` are kept (resumable case by case),
    ``save(out)`` is called after each case."""
    import _hybrid_mc_cases as cases

    f = 0.25 if quick else 1.0
    out = dict(done or {})
    runs = {
        "1d_unbiased": lambda: cases.case_1d_unbiased(n_walkers=int(2048 * f), n_prod=int(900 * f)),
        "1d_windows": lambda: cases.case_1d_windows(reps=int(96 * f), n_prod=int(700 * f)),
        "2d_unbiased": lambda: cases.case_2d_unbiased(n_walkers=int(768 * f), n_prod=int(900 * f)),
        "2d_windows": lambda: cases.case_2d_windows(reps=int(32 * f), n_prod=int(500 * f)),
        "asymmetric_proposal": lambda: cases.case_drifting(n_walkers=512, n_prod=300),
    }
    for name, run in runs.items():
        if name in out:
            continue
        t = time.perf_counter()
        r = run()
        r["samples"].close()
        out[name] = dict(_clean(r), wall_s=time.perf_counter() - t,
                         acceptance=r["report"]["acceptance"], beta_sigma=r["report"]["beta_sigma"])
        print(f"{name:20s} {r['n_frames']:8d} frames ({r['n_effective']:8.0f} effective)  chi2 {r['chi2']:7.1f} / "
              f"{r['dof']:3d}  p = {r['p']:.3g}  PMF max error {r['pmf_max_error_kT']:.3f} kT over {r['pmf_bins']} "
              f"bins with F < 4 kT", flush=True)
        if save is not None:
            save(out)
    if "acceptance_law" not in out:
        law = []
        for bs in (0.5, 1.0, 2.0):
            r = cases.case_acceptance_law(bs, n_walkers=int(1024 * max(f, 0.25)), n_prod=600)
            law.append(_clean(r))
            print(f"acceptance law: beta sigma {bs}: measured {r['measured']:.4f} +- {r['se']:.4f}, erfc(beta "
                  f"sigma/2) {r['expected']:.4f} (z = {r['z']:+.2f}); logged beta*sigma {r['logged_beta_sigma']:.3f}",
                  flush=True)
        out["acceptance_law"] = law
    exact = ("1d_unbiased", "1d_windows", "2d_unbiased", "2d_windows")
    out["exactness_p_value"] = min(out[k]["p"] for k in exact)
    out["pmf_max_error_kT"] = max(out[k]["pmf_max_error_kT"] for k in exact)
    out["asymmetric_proposal_p_value"] = out["asymmetric_proposal"]["p"]
    return out


def _setup():
    cfg = load_config(EXAMPLE)
    atoms = build_structure(cfg)
    u = cfg["umbrella"]
    return cfg, atoms, build_cv(cfg, len(atoms)), np.linspace(u["range"][0], u["range"][1], u["n_windows"]), \
        kappa_in_ev(cfg), float(cfg["run"]["temperature"])


def _warm_start(model, cfg, atoms, cv, centers, kappa, T) -> State:
    """Each window's configuration after 1000 surrogate Langevin steps (no reference call)."""
    warm = umbrella_sampling(model, State.from_atoms(atoms), cv, centers, kappa, temperature=T, timestep=0.5,
                             friction=0.02, seed=11, n_equilibration=1000, n_production=100, stride=100,
                             check_overlap=False)
    last = warm.positions.reshape(-1, len(atoms), 3)[-centers.size:]
    start = State.concatenate([State.from_atoms(atoms)] * centers.size)
    return start.replace(positions=torch.from_numpy(last.reshape(-1, 3).copy()))


def _barrier(samples, cfg):
    pmf = compute_pmf(samples, bins=cfg["pmf"]["bins"], range=cfg["pmf"]["range"], warn=False)
    b = barrier(pmf).to("kcal/mol")
    return pmf, b


def real(quick: bool, n_production: int, correction: str = "linear") -> dict:
    cfg, atoms, cv, centers, kappa, T = _setup()
    model = load_malonaldehyde_gfn1_committee()
    path = RESULTS / f"hybrid_mc_gfn1_gfn2_{correction}{'_quick' if quick else ''}_samples.h5"
    n_eq = 60 if quick else 240
    n_prod = 150 if quick else n_production
    t0 = time.perf_counter()
    start = _warm_start(model, cfg, atoms, cv, centers, kappa, T)
    dyn = HybridMCDynamics(timestep=0.5, n_steps=20, target_acceptance=0.6, correction=correction, seed=0)
    samples = hybrid_mc_sampling(model, XTBOracle(), start, cv, centers, kappa, temperature=T, dynamics=dyn,
                                 schedule=Schedule(n_equilibration=n_eq, n_production=n_prod, stride=1,
                                                   checkpoint_every=50),
                                 storage=Storage(path=str(path), resume=path.exists(), store_positions=True),
                                 check_overlap=False, progress=True)
    wall = time.perf_counter() - t0
    rep = samples.attrs["hybrid_mc"]
    pmf, b = _barrier(samples, cfg)
    ref = json.loads(REFERENCE.read_text())
    b_ref, s_ref, n_ref = ref["barrier"]["activation"], ref["barrier"]["activation_sigma"], ref["n_reference_calls"]
    act, sig = float(b.activation.value), float(b.activation.error)
    z = (act - b_ref) / math.hypot(sig, s_ref)
    calls = float(rep["reference_calls_total"])
    n_direct = n_ref * (s_ref / sig) ** 2
    flagged = sparse_bins(pmf)
    acc = np.asarray(rep["acceptance"])
    out = {"barrier": b.to_dict(), "activation": act, "activation_sigma": sig, "z_vs_direct_reference": z,
           "within_2_combined_sigma": bool(abs(z) <= 2), "flagged_bins": int(flagged.sum()),
           "pmf_bins": int(flagged.size), "gfn2_calls": calls, "direct_calls_at_equal_sigma": n_direct,
           "calls_saving_vs_direct": n_direct / calls,
           "acceptance_median": float(np.median(acc)), "acceptance_per_window": acc.tolist(),
           "acceptance_se_per_window": rep["acceptance_se"],
           "predicted_acceptance_per_window": rep["predicted_acceptance"],
           "predicted_acceptance_median": float(np.median(rep["predicted_acceptance"])),
           "beta_sigma_per_window": rep["beta_sigma"], "sd_beta_endpoint_difference": rep["sd_beta_endpoint_difference"],
           "sd_beta_integration_error": rep["sd_beta_integration_error"],
           "statistical_inefficiency_moves_cv": rep["statistical_inefficiency_moves_cv"],
           "gfn2_calls_per_effective_sample_cv": rep["reference_calls_per_effective_sample_cv"],
           "gfn2_calls_per_effective_sample_cv_median": float(np.median(rep["reference_calls_per_effective_sample_cv"])),
           "gfn2_calls_per_effective_sample_energy_median":
               float(np.median(rep["reference_calls_per_effective_sample_energy"])),
           "tuned_timestep_fs": rep["tuned"]["timestep_fs"], "tuned_n_steps": rep["tuned"]["n_steps"],
           "correction": rep.get("correction"),
           "n_equilibration_moves": n_eq, "n_production_moves": n_prod, "wall_time_s_this_invocation": wall,
           "settings": dyn.attrs(), "pmf_kcal_per_mol": pmf.to("kcal/mol").values.tolist(),
           "pmf_sigma_kcal_per_mol": pmf.to("kcal/mol").uncertainties.tolist(),
           "pmf_grid": pmf.grid[0].tolist()}
    if SPARSE.exists():
        sp = json.loads(SPARSE.read_text())
        row = next(r for r in sp["cross_level"] if r["n_labels"] == 500 and r["estimator"] == "delta"
                   and r["flags"] == "on")
        hmc_at_sparse = calls * (sig / row["mean_sigma"]) ** 2
        out["sparse_reweighting"] = {
            "gfn2_calls": row["mean_gfn2_calls"], "sigma": row["mean_sigma"], "mean_activation": row["mean_activation"],
            "hybrid_mc_calls_at_equal_sigma": hmc_at_sparse,
            "ratio_hybrid_mc_over_sparse_calls": hmc_at_sparse / row["mean_gfn2_calls"],
            "source": "benchmarks/results/qm_budget.json (delta estimator, 500 labels, flags on, mean over repeats)"}
    print(format_report(rep, temperature=T, n_atoms=len(atoms)))
    print(f"barrier {act:.2f} +- {sig:.2f} kcal/mol (direct GFN2 {b_ref:.2f} +- {s_ref:.2f}; z = {z:+.2f}); "
          f"{int(flagged.sum())} flagged bins; {calls:.0f} GFN2 calls; direct at equal sigma {n_direct:.0f}: "
          f"saving {n_direct / calls:.1f}x", flush=True)
    samples.close()
    return out


def direct(quick: bool, n_steps: int) -> dict:
    """Direct GFN2 Langevin umbrella sampling (the reference's settings) recorded every step: CV autocorrelation."""
    cfg, atoms, cv, centers, kappa, T = _setup()
    model = load_malonaldehyde_gfn1_committee()
    u = cfg["umbrella"]
    n = 300 if quick else n_steps
    path = RESULTS / f"hybrid_mc_direct_gfn2{'_quick' if quick else ''}_samples.h5"
    start = _warm_start(model, cfg, atoms, cv, centers, kappa, T)
    potential = XTBOracle().as_potential()
    t0 = time.perf_counter()
    n_eq = 200
    ss = umbrella_sampling(potential, start, cv, centers, kappa, temperature=T, timestep=u["timestep"],
                           friction=u["friction"], seed=5, n_equilibration=n_eq, n_production=n, stride=1,
                           checkpoint_every=100, path=str(path), resume=path.exists(), store_positions=False,
                           check_overlap=False, progress=True)
    wall = time.perf_counter() - t0
    g = []
    for k in range(centers.size):
        x = ss.cv[ss.state_index == k, 0]
        g.append(pooled_statistical_inefficiency([x]))
    g = np.asarray(g)
    e = [pooled_statistical_inefficiency([ss.u_kn[k, ss.state_index == k]]) for k in range(centers.size)]
    out = {"n_steps_per_window": n, "n_equilibration": n_eq, "stride": 1,
           "statistical_inefficiency_steps_cv": g.tolist(),
           "gfn2_calls_per_effective_sample_cv": g.tolist(),  # one GFN2 call per MD step per window
           "gfn2_calls_per_effective_sample_cv_median": float(np.median(g)),
           "statistical_inefficiency_steps_energy": list(map(float, e)),
           "gfn2_calls_per_effective_sample_energy_median": float(np.median(e)),
           "wall_time_s_this_invocation": wall, "timestep_fs": u["timestep"], "friction_per_fs": u["friction"]}
    print(f"direct GFN2: CV statistical inefficiency per window (steps = GFN2 calls per effective sample): "
          f"median {np.median(g):.0f}; energy: median {np.median(e):.0f}", flush=True)
    ss.close()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--section", default="all", choices=("all", "analytic", "real", "real_uncorrected", "direct"))
    ap.add_argument("--quick", action="store_true", help="small samples (a smoke run; writes *_quick.json)")
    ap.add_argument("--n-production", type=int, default=1500, help="hybrid MC production moves per window")
    ap.add_argument("--n-direct", type=int, default=1500, help="direct GFN2 MD steps per window")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out_path = OUT.with_name("hybrid_mc_quick.json") if args.quick else OUT
    sections = ("analytic", "real", "direct") if args.section == "all" else (args.section,)

    def write(section, value, wall=None):
        # merge into the file as it is now: sections run in separate (resumed) invocations
        cur = json.loads(out_path.read_text()) if out_path.exists() else {}
        cur[section] = value
        if wall is not None:
            cur.setdefault("wall_time_s", {})[section] = wall
        _headline(cur)
        out_path.write_text(json.dumps(cur, indent=1, default=float) + "\n")
        return cur

    for sec in sections:
        t = time.perf_counter()
        if sec == "analytic":
            done = json.loads(out_path.read_text()).get("analytic") if out_path.exists() else None
            value = analytic(args.quick, done, lambda part: write("analytic", part))
        elif sec == "real":
            value = real(args.quick, args.n_production)
        elif sec == "real_uncorrected":
            value = real(args.quick, args.n_production, correction="none")
        else:
            value = direct(args.quick, args.n_direct)
        out = write(sec, value, time.perf_counter() - t)
    print(json.dumps({k: out.get(k) for k in ("calls_saving_vs_direct", "calls_saving_vs_direct_autocorrelation",
                                               "acceptance_median", "exactness_p_value")}, indent=1))


def _headline(out: dict) -> None:
    if "exactness_p_value" in out.get("analytic", {}):
        out["exactness_p_value"] = out["analytic"]["exactness_p_value"]
    if "real" in out:
        r = out["real"]
        out["calls_saving_vs_direct"] = r["calls_saving_vs_direct"]
        out["acceptance_median"] = r["acceptance_median"]
        out["barrier_kcal_per_mol"] = [r["activation"], r["activation_sigma"]]
        out["barrier_z_vs_direct"] = r["z_vs_direct_reference"]
        out["flagged_bins"] = r["flagged_bins"]
    if "real" in out and "direct" in out:
        hmc = out["real"]["gfn2_calls_per_effective_sample_cv_median"]
        dmd = out["direct"]["gfn2_calls_per_effective_sample_cv_median"]
        out["calls_saving_vs_direct_autocorrelation"] = dmd / hmc
        out["gfn2_calls_per_effective_sample"] = {"hybrid_mc_cv": hmc, "direct_md_cv": dmd,
                                                  "hybrid_mc_energy": out["real"][
                                                      "gfn2_calls_per_effective_sample_energy_median"],
                                                  "direct_md_energy": out["direct"][
                                                      "gfn2_calls_per_effective_sample_energy_median"]}


if __name__ == "__main__":
    main()
