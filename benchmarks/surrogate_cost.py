"""Surrogate cost benchmark: energy+forces per replica-step on malonaldehyde
(GFN2-xTB vs the BP surrogate, single, batched over 64 replicas, and the
committee), and per-atom cost scaling on a periodic argon crystal from 1k to
20k atoms (vesin neighbour lists).

Writes ``benchmarks/results/surrogate_cost.json`` and prints a table. Run with
``nice -n 10 .venv/bin/python benchmarks/surrogate_cost.py`` (one torch thread).
Ratios are what matter on a shared machine; absolute times drift with load. The headline keys
``ratio_xtb_vs_single`` / ``ratio_xtb_vs_batched_64`` are for the fastest supported MD mode (the
opt-in torch.compile path, when a C++ compiler makes it available; ``headline_mode`` says which);
``*_default_path`` keys give the path without compilation.
BP energy+forces use the autograd-free path (:mod:`fesurf.surrogates.bp_fast`);
the ``*_autograd_*`` keys time the autograd path for comparison.

Committees (issue 13, "cheap uncertainty"), all on the default (uncompiled) fast path, batched
over 64 replicas, timed interleaved with one member, xTB right after them, in 5 independent
blocks (keys: medians over the blocks, ``*_range``: min and max; ``*_cpu``: from thread CPU
times, which a loaded machine inflates less than wall times):

- the committee used in sampling: a last-layer ensemble (4 heads on one shared trunk,
  ``BehlerParrinello(..., shared_layers=len(hidden))``), ``predict()`` with everything the AL loop
  and the production guard read (mean energy and forces, energy spread, maximum atomic force
  deviation): ``ratio_xtb_vs_committee_batched_64`` (goal >= 100) and
  ``ratio_committee_vs_single_batched_64`` (goal <= 1.3); ``predict(force_deviation=False)``
  (mean and energy spread only) as ``*_energy_spread_*``. ``--sampling-committee PATH`` times a
  trained one; by default it is built from member 0 of the benchmarked committee
  (:meth:`~fesurf.surrogates.BehlerParrinello.shared_trunk_from`): the cost does not depend on
  the weights;
- the old committee (independent members, the stored file) with the same ``predict()``:
  ``*_old_committee_*``.

``--model PATH --out PATH`` benchmarks another saved committee (e.g. a trial
architecture from ``scripts/make_malonaldehyde.py --out-dir``) against xTB in
the same run, writes to ``--out`` instead of the stored results, and skips the
argon scaling (a fixed random model, not the committee's). The load average
is recorded at the start and end of every run. Example::

    nice -n 10 .venv/bin/python benchmarks/surrogate_cost.py --model /tmp/lean/malonaldehyde_bp_committee.pt \
        --out /tmp/lean/surrogate_cost.json
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from fesurf.data import MALONALDEHYDE_COMMITTEE, malonaldehyde
from fesurf.state import State
from fesurf.surrogates import BehlerParrinello, load_model

RESULTS = Path(__file__).resolve().parent / "results" / "surrogate_cost.json"


def best_time(fn, reps: int, repeats: int = 5) -> float:
    """Best-of-``repeats`` mean seconds per call over ``reps`` calls (robust to load spikes)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t) / reps)
    return best


def xtb_time(reps: int) -> float:
    from tblite.ase import TBLite

    atoms = malonaldehyde()
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    rng = np.random.default_rng(0)
    base = atoms.positions.copy()

    def call():  # a new geometry every call, as in MD (warm SCF restart)
        atoms.positions = base + rng.normal(scale=0.01, size=base.shape)
        atoms.get_forces()

    return best_time(call, reps)


def surrogate_time(model, n_replicas: int, reps: int, dtype, **kwargs) -> float:
    gen = torch.Generator().manual_seed(0)
    state = State.from_atoms(malonaldehyde()).replicate(n_replicas).to(dtype)
    base = state.positions.clone()

    def call():
        state.positions = base + 0.01 * torch.randn(base.shape, generator=gen, dtype=dtype)
        model.energy_and_forces(state, **kwargs)

    return best_time(call, reps)


def committee_time(model, n_replicas: int, reps: int, dtype) -> float:
    state = State.from_atoms(malonaldehyde()).replicate(n_replicas).to(dtype)
    return best_time(lambda: model.predict(state), reps)


def interleaved_times(calls: dict, n_replicas: int, reps: int, dtype, repeats: int = 15) -> dict:
    """Best-of-``repeats`` seconds per call of each ``calls[name](state)``, the calls taking turns
    within every repeat (so load drifts hit all alike); a new geometry every call, as in MD.
    Returns ``{name: (wall s, thread CPU s)}``: on a loaded machine the CPU time of this thread
    (``time.thread_time``) is not inflated by waiting for a core, the wall time is."""
    gen = torch.Generator().manual_seed(1)
    state = State.from_atoms(malonaldehyde()).replicate(n_replicas).to(dtype)
    base = state.positions.clone()
    states = [state.replace(positions=base + 0.01 * torch.randn(base.shape, generator=gen, dtype=dtype))
              for _ in range(reps)]
    for fn in calls.values():
        fn(states[0])
    best = {name: [float("inf"), float("inf")] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            t, c = time.perf_counter(), time.thread_time()
            for st in states:
                fn(st)
            best[name][0] = min(best[name][0], (time.perf_counter() - t) / reps)
            best[name][1] = min(best[name][1], (time.thread_time() - c) / reps)
    return {k: tuple(v) for k, v in best.items()}


def _xtb_call():
    from tblite.ase import TBLite

    atoms = malonaldehyde()
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    rng = np.random.default_rng(2)
    base = atoms.positions.copy()

    def call(_state):  # one malonaldehyde, a new geometry every call (warm SCF restart)
        atoms.positions = base + rng.normal(scale=0.01, size=base.shape)
        atoms.get_forces()

    return call


def committee_block(committee, sampling, dtype, reps: int, blocks: int = 5) -> dict:
    """Committee costs against one member and xTB, batched x64, default path, interleaved (module doc),
    in ``blocks`` independent blocks: each key is the median over blocks (``*_range``: min and max),
    ratio keys from wall times (house style) and, ``*_cpu``, from thread CPU times."""
    single = committee.select_members([0])
    calls = {"single": lambda st: single.energy_and_forces(st),
             "committee": lambda st: sampling.predict(st),
             "committee_energy_spread": lambda st: sampling.predict(st, force_deviation=False),
             "old_committee": lambda st: committee.predict(st)}
    xtb = _xtb_call()
    per_block = []
    for _ in range(blocks):
        t = interleaved_times(calls, 64, reps, dtype)
        x = interleaved_times({"xtb": xtb}, 1, 10 * reps, dtype, repeats=5)["xtb"]
        r = {"xtb_interleaved_s": x[0], "xtb_interleaved_cpu_s": x[1]}
        for k, (wall, cpu) in t.items():
            name = "single_interleaved" if k == "single" else k
            r[f"{name}_batched_64_s_per_replica"] = wall / 64
            r[f"{name}_batched_64_cpu_s_per_replica"] = cpu / 64
        for k in ("committee", "committee_energy_spread", "old_committee"):
            r[f"ratio_xtb_vs_{k}_batched_64"] = x[0] / (t[k][0] / 64)
            r[f"ratio_{k}_vs_single_batched_64"] = t[k][0] / t["single"][0]
            r[f"ratio_xtb_vs_{k}_batched_64_cpu"] = x[1] / (t[k][1] / 64)
            r[f"ratio_{k}_vs_single_batched_64_cpu"] = t[k][1] / t["single"][1]
        r["ratio_xtb_vs_single_batched_64_interleaved"] = x[0] / (t["single"][0] / 64)
        r["ratio_xtb_vs_single_batched_64_interleaved_cpu"] = x[1] / (t["single"][1] / 64)
        per_block.append(r)
    out = {"committee_blocks": blocks}
    for k in per_block[0]:
        v = sorted(b[k] for b in per_block)
        out[k] = float(np.median(v))
        if k.startswith("ratio_"):
            out[k + "_range"] = [v[0], v[-1]]
    return out


def scaling(sizes, dtype, reps: int = 2) -> dict:
    from ase.build import bulk

    model = BehlerParrinello([18], hidden=(48, 48), seed=0).to(dtype)
    out = {}
    for n_target in sizes:
        reps_cell = max(1, round((n_target / 4) ** (1 / 3)))
        atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat(reps_cell)
        atoms.rattle(0.05, seed=1)
        state = State.from_atoms(atoms).to(dtype)
        t = best_time(lambda: model.energy_and_forces(state), reps, repeats=2)
        out[len(atoms)] = t
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer repetitions, smaller scaling sizes")
    p.add_argument("--model", type=Path, default=None,
                   help="saved committee to benchmark instead of the stored one (skips the argon scaling)")
    p.add_argument("--out", type=Path, default=None, help=f"results JSON (default {RESULTS})")
    p.add_argument("--sampling-committee", type=Path, default=None,
                   help="saved shared-trunk committee to time as the committee used in sampling (default: a "
                        "last-layer ensemble of 4 heads built from member 0 of the benchmarked committee)")
    args = p.parse_args()
    out_path = args.out if args.out is not None else RESULTS
    torch.set_num_threads(1)
    reps = 20 if args.quick else 100
    dtype = torch.float32
    if args.model is not None:
        committee = load_model(args.model).to(dtype)
    else:
        committee = load_model(MALONALDEHYDE_COMMITTEE).to(dtype) if MALONALDEHYDE_COMMITTEE.exists() else \
            BehlerParrinello([1, 6, 8], hidden=(48, 48), n_members=4).to(dtype)
    if args.sampling_committee is not None:
        sampling = load_model(args.sampling_committee).to(dtype)
        sampling_source = str(args.sampling_committee)
    else:  # the cost of the spread does not depend on the weights
        sampling = committee.shared_trunk_from(0, n_members=4)
        sampling_source = "built from member 0 of the benchmarked committee (shared_trunk_from(0, 4))"
    single = committee.select_members([0])
    r = {"device": "cpu, 1 torch thread", "dtype": str(dtype).replace("torch.", ""),
         "n_members": committee.n_members, "atoms": 9, "loadavg_start": list(os.getloadavg()),
         "sampling_committee": {"source": sampling_source, "n_members": sampling.n_members,
                                "shared_layers": sampling.shared_layers, "hidden": list(sampling.hidden),
                                "n_features": sampling.acsf.n_features}}
    if args.model is not None:
        r.update(model=str(args.model), n_features=committee.acsf.n_features, hidden=list(committee.hidden),
                 acsf=committee.acsf.config)
    r["xtb_s"] = xtb_time(reps)
    r["single_s"] = surrogate_time(single, 1, reps, dtype)
    r["batched_64_s_per_replica"] = surrogate_time(single, 64, max(5, reps // 10), dtype) / 64
    # the autograd path (what the fast path replaces in MD), same load, for the before/after table
    r["single_autograd_s"] = surrogate_time(single, 1, reps, dtype, fast=False)
    r["batched_64_autograd_s_per_replica"] = surrogate_time(single, 64, max(5, reps // 10), dtype, fast=False) / 64
    r["single_float64_s"] = surrogate_time(single.to(torch.float64), 1, reps, torch.float64)
    single.to(dtype)
    # opt-in torch.compile of the same path (model.use_compiled_path(); compile time excluded, reported)
    t0 = time.perf_counter()
    single.use_compiled_path()
    surrogate_time(single, 1, 1, dtype)
    surrogate_time(single, 64, 1, dtype)
    r["compile_seconds"] = time.perf_counter() - t0
    r["single_compiled_s"] = surrogate_time(single, 1, reps, dtype)
    r["batched_64_compiled_s_per_replica"] = surrogate_time(single, 64, max(5, reps // 10), dtype) / 64
    r["compiled_path_active"] = bool(single._compiled_path)
    single.use_compiled_path(False)
    r["committee_single_s"] = committee_time(committee, 1, reps, dtype)
    # the old committee's predict (independent members), and the committee used in sampling, side by side
    r.update(committee_block(committee, sampling, dtype, max(5, reps // 10)))
    # headline keys: the fastest supported MD mode (torch.compile, opt-in with model.use_compiled_path()
    # or surrogate.compile = true), when it is active on this machine; the default path alongside
    best_single = r["single_compiled_s"] if r["compiled_path_active"] else r["single_s"]
    best_64 = r["batched_64_compiled_s_per_replica"] if r["compiled_path_active"] else r["batched_64_s_per_replica"]
    r["headline_mode"] = "torch.compile fast path" if r["compiled_path_active"] else "default fast path"
    r["ratio_xtb_vs_single"] = r["xtb_s"] / best_single
    r["ratio_xtb_vs_batched_64"] = r["xtb_s"] / best_64
    r["ratio_xtb_vs_single_default_path"] = r["xtb_s"] / r["single_s"]
    r["ratio_xtb_vs_batched_64_default_path"] = r["xtb_s"] / r["batched_64_s_per_replica"]
    sc, n = {}, []
    if args.model is None:
        sizes = (1000, 4000) if args.quick else (1000, 4000, 20000)
        sc = scaling(sizes, dtype)
        r["scaling_seconds"] = {str(k): v for k, v in sc.items()}
        r["scaling_per_atom_us"] = {str(k): v / k * 1e6 for k, v in sc.items()}
        n = sorted(sc)
        r["per_atom_cost_ratio_20k_vs_1k"] = (sc[n[-1]] / n[-1]) / (sc[n[0]] / n[0])
    r["loadavg_end"] = list(os.getloadavg())
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(r, indent=1))
    print(f"{'what':42s} {'ms / replica-step':>18s} {'xTB / this':>11s}")
    for label, key in [("GFN2-xTB (tblite)", "xtb_s"), ("BP single", "single_s"),
                       ("BP single, autograd path", "single_autograd_s"),
                       ("BP single, float64", "single_float64_s"),
                       ("BP single, torch.compile (opt-in)", "single_compiled_s"),
                       ("BP batched x64", "batched_64_s_per_replica"),
                       ("BP batched x64, torch.compile (opt-in)", "batched_64_compiled_s_per_replica"),
                       ("BP batched x64, autograd path", "batched_64_autograd_s_per_replica"),
                       (f"BP committee ({committee.n_members}) single", "committee_single_s"),
                       ("one member batched x64 (interleaved)", "single_interleaved_batched_64_s_per_replica"),
                       (f"old committee ({committee.n_members}) x64, predict",
                        "old_committee_batched_64_s_per_replica"),
                       (f"sampling committee ({sampling.n_members} heads) x64, predict",
                        "committee_batched_64_s_per_replica"),
                       ("sampling committee x64, mean + energy spread",
                        "committee_energy_spread_batched_64_s_per_replica")]:
        print(f"{label:42s} {r[key] * 1e3:18.4f} {r['xtb_s'] / r[key]:11.1f}")
    def rng(key):
        lo, hi = r[key + "_range"]
        return f"{r[key]:.2f} [{lo:.2f}, {hi:.2f}]"

    print(f"medians [min, max] over {r['committee_blocks']} interleaved blocks (xTB timed in each block):")
    for tag, sfx in (("wall", ""), ("thread CPU", "_cpu")):
        print(f"{tag:10s} xTB / committee x64 {rng('ratio_xtb_vs_committee_batched_64' + sfx)} (goal >= 100), "
              f"xTB / one member {rng('ratio_xtb_vs_single_batched_64_interleaved' + sfx)}")
        print(f"{'':10s} committee / one member: sampling {rng('ratio_committee_vs_single_batched_64' + sfx)} (goal "
              f"<= 1.3), its mean + energy spread {rng('ratio_committee_energy_spread_vs_single_batched_64' + sfx)}, "
              f"old committee {rng('ratio_old_committee_vs_single_batched_64' + sfx)}")
    for k in n:
        print(f"periodic Ar, {k:6d} atoms: {sc[k]:.3f} s, {sc[k] / k * 1e6:.1f} us/atom")
    if n:
        print(f"per-atom cost ratio {n[-1]} vs {n[0]} atoms: {r['per_atom_cost_ratio_20k_vs_1k']:.2f}")
    else:
        print(f"{args.model}: {r['n_features']} features, hidden {r['hidden']}")
    print(f"load average {r['loadavg_start'][0]:.2f} -> {r['loadavg_end'][0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
