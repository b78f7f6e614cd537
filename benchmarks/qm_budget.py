"""QM budget: corrected-barrier error and uncertainty against the number of reference labels.

Cross-level setting (the real use): the surrogate is the stored BP committee trained on GFN1-xTB
labels only (no GFN2 call went into it); umbrella sampling with it along d(O1-H) - d(O2-H) at 300 K
(the settings of examples/malonaldehyde_gfn1_to_gfn2.toml); then 25, 50, 100, 200 and 500 GFN2-xTB
single points correct its PMF to GFN2. Two estimators side by side:

- ``delta``: the example's estimator, a two-stage design (a quarter of the labels train a dU model,
  the rest are drawn by model-corrected weight; residual wTP per bin);
- ``wtp``: stratified uniform labels, plain per-bin wTP.

Each is reported with the overlap flags on (a flagged bin leaves no barrier: "certified") and off
(what ignoring the flags would give). Every repeat is an independent surrogate run (its own seed)
with its own labels, so the spread over repeats is the estimate's whole error. The reference is the
stored direct GFN2 umbrella run (benchmarks/gfn2_direct_reference.py, 400,016 GFN2 calls).

Side by side with direct reference-level sampling at equal statistical error: a direct run reaching
sigma needs ``N_direct(sigma) = N_ref * (sigma_ref / sigma)^2`` GFN2 calls (the stored run scaled by
the 1/sqrt(N) law), so

- ``qm_call_saving_factor`` = N_direct(sigma_500) / (GFN2 calls of the corrected estimate), cross
  level, 500 labels, mean sigma of the certified delta estimates;
- ``qm_call_saving_factor_same_level`` = the same with the GFN2 committee as surrogate, counting every
  GFN2 call that made it (its generation MD and training labels, fesurf/data/*_generation.json).

Writes benchmarks/results/qm_budget.json and prints a table. Samples are cached (resumable) in
benchmarks/results/qm_budget_*_samples.h5 and labels in ~/.cache/fesurf/qm_budget.

Usage: nice -n 10 .venv/bin/python benchmarks/qm_budget.py [--quick] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import pathlib
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from fesurf import data
from fesurf.analysis import barrier
from fesurf.config import kappa_in_ev, load_config
from fesurf.errors import InputError
from fesurf.estimators import compute_pmf
from fesurf.estimators.delta_learning import delta_two_stage, reweight_two_stage
from fesurf.estimators.reweight import choose_frames, reweight_pmf
from fesurf.oracles import LabelCache, XTBOracle
from fesurf.pipeline import build_cv, build_structure
from fesurf.sampling.umbrella import umbrella_sampling
from fesurf.state import State
from fesurf.units import kT

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"
EXAMPLE = HERE.parent / "examples" / "malonaldehyde_gfn1_to_gfn2.toml"
REFERENCE = RESULTS / "gfn2xtb_direct_reference.json"
BUDGETS = (25, 50, 100, 200, 500)
#: overlap flags switched off: every bin with a label is corrected, however few labels or little overlap
UNCERTIFIED = dict(min_ess=0.0, min_labels=1, max_beta_sigma=np.inf)


def _file_tag(path) -> str:
    """Short content hash of a model file: cached samples belong to the model that made them."""
    import hashlib

    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()[:8]


def sample(model, cfg, tag: str, n_production: int, seed: int):
    """Surrogate umbrella sampling with the example's windows (cached, resumable); one run per seed."""
    u = cfg["umbrella"]
    atoms = build_structure(cfg)
    path = RESULTS / f"qm_budget_{tag}_n{n_production}_seed{seed}_samples.h5"
    return umbrella_sampling(
        model, State.from_atoms(atoms), build_cv(cfg, len(atoms)),
        centers=np.linspace(u["range"][0], u["range"][1], u["n_windows"]), kappa=kappa_in_ev(cfg),
        temperature=cfg["run"]["temperature"], timestep=u["timestep"], friction=u["friction"], seed=seed,
        n_equilibration=u["n_equilibration"], n_production=n_production, stride=u["stride"],
        checkpoint_every=u["checkpoint_every"], path=path, resume=path.exists())


class GFN2Labels:
    """GFN2-xTB single points on SampleSet frames (dU = U_GFN2 - U_surrogate, eV), each frame once;
    a failed call stays recorded (None) and never enters an estimate."""

    def __init__(self, samples, atoms, workers: int):
        self.samples, self.atoms = samples, atoms
        self.oracle = XTBOracle(method="GFN2-xTB")
        self.cache = LabelCache(pathlib.Path.home() / ".cache" / "fesurf" / "qm_budget")
        self.workers = workers
        self.du = {}

    def _compute(self, frames):
        new = np.array(sorted(set(int(f) for f in frames) - set(self.du)), dtype=np.int64)
        if not new.size:
            return
        configs = []
        for p in self.samples.read_positions(new):
            a = self.atoms.copy()
            a.positions = p
            configs.append(a)
        ex = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn")) \
            if self.workers > 1 else None
        labels = self.oracle.label(configs, executor=ex, cache=self.cache)
        if ex is not None:
            ex.shutdown()
        u_sur = self.samples.u_ref[new] * kT(self.samples.temperature)
        for f, lab, us in zip(new, labels, u_sur):
            self.du[int(f)] = lab.energy - us if lab.ok else None

    def __call__(self, frames):
        """(frames that labelled, their dU in eV)."""
        self._compute(frames)
        frames = np.asarray(frames)
        ok = np.array([self.du[int(f)] is not None for f in frames], dtype=bool)
        return frames[ok], np.array([self.du[int(f)] for f in frames[ok]], dtype=float)

    def label(self, frames):
        """The ``label(frames) -> (dU eV, ok, reasons)`` form the estimators' label designs call."""
        self._compute(frames)
        du = np.array([np.nan if self.du[int(f)] is None else self.du[int(f)] for f in frames])
        ok = np.isfinite(du)
        return du, ok, ["" if g else "GFN2-xTB failed" for g in ok]


def _barrier(res):
    try:
        b = res.barrier().to("kcal/mol")
    except InputError as exc:
        return float("nan"), float("nan"), f"not reported: {exc}"[:160]
    return float(b.activation.value), float(b.activation.error), ""


def estimate(estimator, samples, labeller, n, cfg, seed, ref):
    """Label ``n`` frames with the estimator's design and correct the PMF; one row with the certified
    (overlap flags on) and uncertified (flags off) barriers in kcal/mol and their z vs the reference."""
    bins, rng = cfg["pmf"]["bins"], cfg["pmf"]["range"]
    flags = dict(min_ess=cfg["reweight"]["min_ess"], max_beta_sigma=cfg["reweight"]["max_beta_sigma"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if estimator == "delta":
            res, two = delta_two_stage(samples, labeller.label, n, bins=bins, range=rng, seed=seed, warn=False,
                                       **flags)
            calls, failed = two.n_calls, len(two.failed)
            loose = reweight_two_stage(samples, two, bins=bins, range=rng, seed=seed, warn=False, **UNCERTIFIED)
        else:
            frames, pi = choose_frames(samples, n, bins=bins, range=rng, seed=seed)
            keep = dict(zip(frames.tolist(), pi.tolist()))
            ok_frames, du = labeller(frames)
            pi_ok = np.array([keep[int(f)] for f in ok_frames])
            calls, failed = int(frames.size), int(frames.size - ok_frames.size)
            res = reweight_pmf(samples, ok_frames, du, bins=bins, range=rng, inclusion_probability=pi_ok, seed=seed,
                               warn=False, **flags)
            loose = reweight_pmf(samples, ok_frames, du, bins=bins, range=rng, inclusion_probability=pi_ok,
                                 seed=seed, warn=False, **UNCERTIFIED)
    row = {"n_labels": n, "estimator": estimator, "gfn2_calls": int(calls), "failed": int(failed),
           "flagged_bins": int(res.flagged.sum())}
    for key, r in (("", res), ("uncertified_", loose)):
        a, sig, note = _barrier(r)
        z = (a - ref["activation"]) / np.hypot(sig, ref["activation_sigma"]) if np.isfinite(a) else float("nan")
        row.update({key + "activation": a, key + "sigma": sig, key + "error": a - ref["activation"], key + "z": z,
                    key + "note": note})
    return row


def summarise(rows, n, estimator, ref, key=""):
    """Per budget and estimator: how often a barrier was reported, mean sigma, RMS error vs the reference,
    the fraction within 2 sigma, and the direct GFN2 calls that would reach the same sigma.
    ``key="uncertified_"``: flags off."""
    sel = [r for r in rows if r["n_labels"] == n and r["estimator"] == estimator]
    ok = [r for r in sel if np.isfinite(r[key + "activation"])]
    out = {"n_labels": n, "estimator": estimator, "flags": "off" if key else "on", "reported": len(ok),
           "repeats": len(sel)}
    if not ok:
        return out
    sig = float(np.mean([r[key + "sigma"] for r in ok]))
    err = np.array([r[key + "error"] for r in ok])
    calls = float(np.mean([r["gfn2_calls"] for r in ok]))
    n_direct = ref["n_calls"] * (ref["activation_sigma"] / sig) ** 2
    out.update({"mean_activation": float(np.mean([r[key + "activation"] for r in ok])), "mean_sigma": sig,
                "rms_error": float(np.sqrt(np.mean(err ** 2))),
                "spread_over_repeats": float(np.std(err, ddof=1)) if len(ok) > 1 else float("nan"),
                "within_2_sigma": float(np.mean(np.abs([r[key + "z"] for r in ok]) <= 2.0)),
                "max_abs_z": float(np.max(np.abs([r[key + "z"] for r in ok]))),
                "mean_gfn2_calls": calls, "direct_calls_at_equal_sigma": float(n_direct),
                "saving_factor": float(n_direct / calls)})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter sampling, 2 repeats (a smoke run)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "qm_budget.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")  # short-run and equilibration warnings repeat per estimate; flags are in the JSON
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = load_config(EXAMPLE)
    repeats = args.repeats or (2 if args.quick else 5)
    n_production = 4000 if args.quick else cfg["umbrella"]["n_production"]
    stored = json.loads(REFERENCE.read_text())
    ref = {"activation": stored["barrier"]["activation"], "activation_sigma": stored["barrier"]["activation_sigma"],
           "n_calls": stored["n_reference_calls"]}
    atoms = build_structure(cfg)
    seeds = [cfg["run"]["seed"] + r for r in range(repeats)]  # repeat 0 is the example's own run
    out = {"system": "malonaldehyde proton transfer, 300 K", "unit": "kcal/mol", "reference": ref,
           "n_production_per_window": n_production, "repeats": repeats, "seeds": seeds, "budgets": list(BUDGETS),
           "pmf_bins": cfg["pmf"]["bins"]}

    # ---- cross level: GFN1 surrogate -> GFN2
    gfn1 = data.load_malonaldehyde_gfn1_committee()
    rows, uncorrected = [], []
    for r, seed in enumerate(seeds):
        s1 = sample(gfn1, cfg, "gfn1_" + _file_tag(data.MALONALDEHYDE_GFN1_COMMITTEE), n_production, seed)
        b = barrier(compute_pmf(s1, bins=cfg["pmf"]["bins"], range=cfg["pmf"]["range"])).to("kcal/mol")
        uncorrected.append((b.activation.value, b.activation.error))
        print(f"repeat {r}: GFN1 surrogate barrier {b.activation.value:.2f} ± {b.activation.error:.2f} kcal/mol",
              flush=True)
        lab = GFN2Labels(s1, atoms, args.workers)
        for n in BUDGETS:
            for est in ("delta", "wtp"):
                row = dict(estimate(est, s1, lab, n, cfg, seed, ref), repeat=r)
                rows.append(row)
                print(f"  n={n:4d} {est:5s}: {row['activation']:6.2f} ± {row['sigma']:4.2f} z={row['z']:+.2f} "
                      f"flagged={row['flagged_bins']:2d} | flags off: {row['uncertified_activation']:6.2f} ± "
                      f"{row['uncertified_sigma']:4.2f} z={row['uncertified_z']:+.2f}", flush=True)
        s1.close()
    a_unc = np.array(uncorrected)
    out["gfn1_surrogate_uncorrected"] = {
        "activation_per_repeat": a_unc[:, 0].tolist(), "sigma_per_repeat": a_unc[:, 1].tolist(),
        "mean_activation": float(a_unc[:, 0].mean()),
        "error_vs_gfn2_reference": float(a_unc[:, 0].mean() - ref["activation"])}
    out["cross_level_rows"] = rows
    out["cross_level"] = [summarise(rows, n, est, ref, key) for key in ("", "uncertified_")
                          for est in ("delta", "wtp") for n in BUDGETS]
    head = summarise(rows, 500, "delta", ref)
    first = next(r for r in rows if r["n_labels"] == 500 and r["estimator"] == "delta" and r["repeat"] == 0)
    out["cross_level_acceptance"] = {"activation": first["activation"], "sigma": first["sigma"], "z": first["z"],
                                     "gfn2_calls": first["gfn2_calls"],
                                     "within_2_sigma": bool(abs(first["z"]) <= 2),
                                     "within_2_sigma_fraction_over_repeats": head.get("within_2_sigma")}
    out["qm_call_saving_factor"] = head.get("saving_factor", float("nan"))

    # ---- same level: GFN2 surrogate -> GFN2, every GFN2 call counted
    gfn2 = data.load_malonaldehyde_committee()
    rows2 = []
    for r, seed in enumerate(seeds):
        s2 = sample(gfn2, cfg, "gfn2_" + _file_tag(data.MALONALDEHYDE_COMMITTEE), n_production, seed)
        lab = GFN2Labels(s2, atoms, args.workers)
        for est in ("wtp", "delta"):
            row = dict(estimate(est, s2, lab, 500, cfg, seed, ref), repeat=r)
            rows2.append(row)
            print(f"  same level, repeat {r}, {est:5s}: {row['activation']:6.2f} ± {row['sigma']:4.2f} "
                  f"z={row['z']:+.2f}", flush=True)
        s2.close()
    training_calls = data.generation_calls("GFN2-xTB")
    same = summarise(rows2, 500, "wtp", ref)
    first2 = next(r for r in rows2 if r["estimator"] == "wtp" and r["repeat"] == 0)
    total = training_calls + same.get("mean_gfn2_calls", 500)
    out["same_level_rows"] = rows2
    out["same_level"] = {"summary_wtp": same, "summary_delta": summarise(rows2, 500, "delta", ref),
                         "training_gfn2_calls": training_calls, "total_gfn2_calls": total,
                         "activation": first2["activation"], "sigma": first2["sigma"], "z": first2["z"],
                         "within_2_sigma": bool(abs(first2["z"]) <= 2)}
    out["qm_call_saving_factor_same_level"] = same["direct_calls_at_equal_sigma"] / total \
        if "direct_calls_at_equal_sigma" in same else float("nan")
    out["temperature_K"] = cfg["run"]["temperature"]
    out["wall_time_s"] = time.perf_counter() - t0
    pathlib.Path(args.out).write_text(json.dumps(out, indent=1, default=float) + "\n")

    print(f"\n{'labels':>7} {'estimator':>9} {'flags':>5} {'reported':>8} {'barrier':>8} {'sigma':>6} "
          f"{'rms err':>8} {'in 2sig':>7} {'direct calls @ equal sigma':>27} {'saving':>8}")
    for s in out["cross_level"]:
        lead = f"{s['n_labels']:7d} {s['estimator']:>9} {s['flags']:>5} {s['reported']:>4d}/{s['repeats']:<3d}"
        if s["reported"]:
            print(f"{lead} {s['mean_activation']:8.2f} {s['mean_sigma']:6.2f} {s['rms_error']:8.2f} "
                  f"{s['within_2_sigma']:7.2f} {s['direct_calls_at_equal_sigma']:27.0f} {s['saving_factor']:8.0f}")
        else:
            print(f"{lead}   flagged bins leave no barrier")
    print(f"direct GFN2 reference: {ref['activation']:.2f} ± {ref['activation_sigma']:.2f} kcal/mol "
          f"({ref['n_calls']} GFN2 calls)")
    print(f"cross level (GFN1 surrogate -> GFN2, 500 labels, repeat 0): {first['activation']:.2f} ± "
          f"{first['sigma']:.2f} kcal/mol, z = {first['z']:+.2f}")
    print(f"uncorrected GFN1 surrogate: {out['gfn1_surrogate_uncorrected']['mean_activation']:.2f} kcal/mol, "
          f"error {out['gfn1_surrogate_uncorrected']['error_vs_gfn2_reference']:+.2f}")
    print(f"same level (GFN2 surrogate -> GFN2, repeat 0): {first2['activation']:.2f} ± {first2['sigma']:.2f}, "
          f"z = {first2['z']:+.2f}; GFN2 calls {total:.0f} ({training_calls} made the surrogate)")
    print(f"qm_call_saving_factor {out['qm_call_saving_factor']:.0f}; "
          f"same level {out['qm_call_saving_factor_same_level']:.1f}; wall {out['wall_time_s']:.0f} s")


if __name__ == "__main__":
    main()
