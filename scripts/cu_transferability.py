"""Bulk-to-surface transferability of a Cu surrogate, with ASE's EMT as the exact reference.

Stages (``python scripts/cu_transferability.py <stage>``; each writes into ``runs/materials/cu``):

``data``     EMT-labelled bulk frames (energies, forces, stress): 32-atom fcc cells isotropically and
             randomly strained (+-4 %), heated (Langevin MD at 300-1200 K) and with a vacancy
             (600 and 1000 K); and a pool of unlabelled surface candidates: EMT MD frames (300-700 K)
             of (100) and (111) slabs, a (100) adatom and a (211) step, plus rattled images of the
             adatom hop path (linear interpolation between hollow sites).
``bulk``     trains the bulk-only committee (``fesurf/data/materials/cu_bulk.pt``).
``retrain``  spread-driven selection: rounds of picking the pool frames with the largest committee
             force spread (``force_deviation_max``), labelling them with EMT and retraining
             (``cu_surface.pt``); every labelled frame goes to ``fesurf/data/materials/cu_emt.npz``.
``report``   both models against EMT: surface energies of relaxed (100), (111) and (211) slabs,
             the adatom hop barrier on (100) (climbing-image NEB; the surrogate's band batched),
             per-environment errors on held-out EMT MD frames and committee spread against error;
             writes ``benchmarks/results/cu_transferability.json``.

Seeded throughout; one thread.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "materials" / "cu"
DATA = ROOT / "fesurf" / "data" / "materials"
RESULTS = ROOT / "benchmarks" / "results"
log = logging.getLogger("cu_transferability")

ACSF = dict(cutoff=5.0, r_min=1.8, n_radial=10, angular_cutoff=1.0, angular_shifts=(0.5,), zetas=(1,), lambdas=(1,))
HIDDEN = (32, 32)
MEMBERS = 4
ROUNDS, PER_ROUND = 3, 30


def emt_oracle():
    from ase.calculators.emt import EMT

    from fesurf.oracles import ASEOracle
    from fesurf.training.periodic_fit import StressOracle

    return StressOracle(ASEOracle(partial(EMT), method="ase:EMT"))


def a0():
    from ase.calculators.emt import EMT

    from fesurf.data.materials import lattice_constant

    return lattice_constant(EMT)


def md_frames(atoms, temperature, n_frames, every, seed, source):
    """EMT Langevin frames (ASE), ``every`` steps of 5 fs apart after 200 steps of equilibration."""
    from ase import units
    from ase.calculators.emt import EMT
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    work = atoms.copy()
    work.calc = EMT()
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(work, temperature_K=temperature, rng=rng)
    dyn = Langevin(work, 5 * units.fs, temperature_K=temperature, friction=0.02 / units.fs, rng=rng)
    dyn.run(200)
    out = []
    for _ in range(n_frames):
        dyn.run(every)
        f = work.copy()
        f.calc = None
        f.set_constraint()
        f.info.update(source=source, temperature=temperature)
        out.append(f)
    return out


def bulk_frames(a):
    from ase.build import bulk

    rng = np.random.default_rng(1)
    cell = bulk("Cu", "fcc", a=a, cubic=True).repeat(2)
    frames = []
    for s in np.linspace(-0.04, 0.04, 9):
        f = cell.copy()
        f.set_cell(cell.cell.array * (1 + s), scale_atoms=True)
        f.rattle(0.02, seed=int(1000 * (s + 1)))
        f.info.update(source="bulk-strain")
        frames.append(f)
    for k in range(24):
        eps = rng.uniform(-0.03, 0.03, (3, 3))
        f = cell.copy()
        f.set_cell(cell.cell.array @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        f.rattle(0.05, seed=100 + k)
        f.info.update(source="bulk-strain")
        frames.append(f)
    for k, t in enumerate((300, 600, 900, 1200)):
        frames += md_frames(cell, t, 25, 40, 10 + k, "bulk-md")
    vac = cell.copy()
    del vac[0]
    for k, t in enumerate((600, 1000)):
        frames += md_frames(vac, t, 25, 40, 20 + k, "bulk-vacancy")
    return frames


def pool_frames(a):
    from fesurf.data.materials import adatom_hop_end_points, slab
    from ase.calculators.emt import EMT

    pool = []
    for k, (facet, t) in enumerate([("100", 300), ("100", 700), ("111", 300), ("111", 700), ("211", 300),
                                    ("211", 600)]):
        pool += md_frames(slab(facet, a), t, 20, 30, 40 + k, f"pool-{facet}")
    ends = adatom_hop_end_points(a, EMT)
    for k, t in enumerate((300, 600)):
        pool += md_frames(ends[0], t, 20, 30, 60 + k, "pool-adatom")
    rng = np.random.default_rng(7)
    for lam in np.linspace(0.0, 1.0, 11):
        base = ends[0].copy()
        base.set_constraint()
        base.positions = (1 - lam) * ends[0].positions + lam * ends[1].positions
        for r in range(3):
            f = base.copy()
            f.positions = base.positions + rng.normal(0.0, 0.03 + 0.03 * r, base.positions.shape)
            f.info.update(source="pool-hop", hop_fraction=float(lam))
            pool.append(f)
    return pool


def heldout_frames(a):
    """Per-environment test frames (EMT MD at 500 K, seeds not used for training or the pool)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from fesurf.data.materials import adatom_hop_end_points, slab

    env = {"bulk": bulk("Cu", "fcc", a=a, cubic=True).repeat(2), "(100)": slab("100", a), "(111)": slab("111", a),
           "(211) step": slab("211", a), "(100) adatom": adatom_hop_end_points(a, EMT)[0]}
    return {name: md_frames(atoms, 500, 12, 40, 900 + k, f"test-{name}") for k, (name, atoms) in enumerate(env.items())}


def label(frames, cache_dir):
    from fesurf.training.data import Dataset

    for f in frames:  # EMT has no spin; the label needs a possible one: a doublet for odd electron counts
        f.info["multiplicity"] = 1 + int(f.numbers.sum()) % 2
    labs = emt_oracle().label(frames, cache=str(cache_dir))
    failed = [lab.reason for lab in labs if not lab.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(frames)} EMT labels failed, e.g. {failed[0]}")
    ds = Dataset.from_labels(labs)
    for inf, f in zip(ds.info, [f for f, lab in zip(frames, labs) if lab.ok]):
        inf.update({k: v for k, v in f.info.items() if k in ("source", "temperature", "hop_fraction")})
    return ds


def concat(datasets):
    import ase

    from fesurf.training.data import Dataset

    frames = [f for d in datasets for f in d.to_atoms()]
    return Dataset.from_atoms(frames)


def train(ds, seed=0, epochs=120):
    from fesurf.surrogates import BehlerParrinello
    from fesurf.training.periodic_fit import PeriodicTrainConfig, train_periodic

    model = BehlerParrinello([29], hidden=HIDDEN, n_members=MEMBERS, acsf=ACSF, seed=seed)
    split = ds.split(seed=seed, fractions=(0.9, 0.1, 0.0))
    cfg = PeriodicTrainConfig(epochs=epochs, batch_size=16, lr=5e-3, lr_patience=6, patience=20, energy_weight=1.0,
                              force_weight=0.05, virial_weight=0.5, bootstrap=True, seed=seed, dtype="float32")
    hist = train_periodic(model, ds, split["train"], split["val"], cfg)
    model = model.to(torch.float64)
    model.supports_stress = True
    return model, hist


def stage_data(args):
    WORK.mkdir(parents=True, exist_ok=True)
    a = a0()
    t0 = time.time()
    ds = label(bulk_frames(a), WORK / "labels")
    ds.save_npz(WORK / "bulk.npz")
    import ase.io

    ase.io.write(WORK / "pool.extxyz", pool_frames(a))
    held = heldout_frames(a)
    for name, frames in held.items():
        label(frames, WORK / "labels").save_npz(WORK / f"test_{name.replace(' ', '_').strip('()')}.npz")
    log.info("a0 %.5f A; %d bulk frames; pool written; %.0f s", a, len(ds), time.time() - t0)


def stage_bulk(args):
    from fesurf.surrogates import save_model
    from fesurf.training.data import Dataset

    ds = Dataset.load_npz(WORK / "bulk.npz")
    t0 = time.time()
    model, hist = train(ds, epochs=args.epochs)
    save_model(model.to(torch.float32), DATA / "cu_bulk.pt", metadata={
        "how": "scripts/cu_transferability.py bulk: BP committee on EMT bulk frames only",
        "n_frames": len(ds), "epochs_run": len(hist["val_loss"]), "best_epoch": hist["best_epoch"],
        "seconds": time.time() - t0})
    log.info("bulk model: %d frames, %d epochs, %.0f s", len(ds), len(hist["val_loss"]), time.time() - t0)


def spreads(model, frames):
    from fesurf.state import State

    out = []
    for k in range(0, len(frames), 16):
        st = State.from_atoms(frames[k:k + 16])
        out.append(model.predict(st)["force_deviation_max"].numpy())
    return np.concatenate(out)


def stage_retrain(args):
    import ase.io

    from fesurf.data.materials import load
    from fesurf.surrogates import save_model
    from fesurf.training.data import Dataset

    pool = ase.io.read(WORK / "pool.extxyz", ":")
    ds = Dataset.load_npz(WORK / "bulk.npz")
    for inf in ds.info:
        inf["round"] = 0
    model = load("cu_bulk")
    taken = np.zeros(len(pool), bool)
    history = []
    t0 = time.time()
    for r in range(1, ROUNDS + 1):
        sp = spreads(model, pool)
        order = [k for k in np.argsort(-sp) if not taken[k]][:PER_ROUND]
        taken[order] = True
        new = label([pool[k] for k in order], WORK / "labels")
        for inf in new.info:
            inf["round"] = r
        ds = concat([ds, new])
        history.append({"round": r, "picked_spread_eV_A": [float(sp[k]) for k in order],
                        "sources": [pool[k].info.get("source") for k in order],
                        "pool_spread_median_eV_A": float(np.median(sp[~taken]))})
        log.info("round %d: spread of picks %.3f-%.3f eV/A (pool median %.3f); %d frames", r, sp[order].min(),
                 sp[order].max(), np.median(sp), len(ds))
        model, hist = train(ds, seed=r, epochs=args.epochs)
    ds.save_npz(DATA / "cu_emt.npz")
    save_model(model.to(torch.float32), DATA / "cu_surface.pt", metadata={
        "how": "scripts/cu_transferability.py retrain: bulk frames + spread-selected surface frames (EMT)",
        "rounds": ROUNDS, "per_round": PER_ROUND, "n_frames": len(ds), "seconds": time.time() - t0})
    (WORK / "selection.json").write_text(json.dumps(history, indent=1))


def measure(factory_or_model, a, ends=None):
    from fesurf.data.materials import J_PER_M2, bulk_energy, calculator, hop_barrier, surface_energy

    calc = (lambda: calculator(factory_or_model)) if hasattr(factory_or_model, "energy") else factory_or_model
    eb = bulk_energy(calc, a)
    out = {"bulk_energy_eV_atom": eb}
    for facet in ("100", "111", "211"):
        g, _ = surface_energy(calc, facet, a, eb)
        out[f"gamma_{facet}_J_m2"] = g * J_PER_M2
    res = hop_barrier(factory_or_model, a)
    out.update(hop_barrier_eV=res.barrier, hop_converged=res.converged, hop_steps=res.n_steps, hop_calls=res.n_calls)
    return out


def environment_errors(model):
    from fesurf.training.data import Dataset
    from fesurf.training.periodic_fit import periodic_metrics

    out = {}
    for path in sorted(WORK.glob("test_*.npz")):
        ds = Dataset.load_npz(path)
        m = periodic_metrics(model, ds)
        out[path.stem[5:]] = {"energy_mae_meV_atom": m["energy_mae_meV_atom"], "force_rmse_eV_A": m["force_rmse_eV_A"],
                              "force_deviation_max_mean_eV_A": float(np.mean(m["force_deviation_max"])),
                              "stress_mae_GPa": m.get("stress_mae_GPa"),
                              "spread": m["force_deviation_max"].tolist(), "error": m["force_rmse"].tolist()}
    return out


def stage_report(args):
    from ase.calculators.emt import EMT
    from scipy.stats import spearmanr

    from fesurf.data.materials import load

    a = a0()
    ref = measure(EMT, a)
    result = {"lattice_constant_EMT_A": a, "EMT": ref}
    for name in ("cu_bulk", "cu_surface"):
        model = load(name)
        got = measure(model, a)
        env = environment_errors(model)
        spread = np.concatenate([e["spread"] for e in env.values()])
        error = np.concatenate([e["error"] for e in env.values()])
        got["errors_vs_EMT"] = {k: got[k] - ref[k] for k in ref if isinstance(ref[k], float)}
        got["relative_errors_vs_EMT"] = {k: (got[k] - ref[k]) / ref[k] for k in ref if k.startswith("gamma")}
        got["environments"] = {k: {kk: vv for kk, vv in v.items() if kk not in ("spread", "error")}
                               for k, v in env.items()}
        got["spread_error_spearman"] = float(spearmanr(spread, error).statistic)
        result[name] = got
    sel = WORK / "selection.json"
    if sel.exists():
        result["selection"] = json.loads(sel.read_text())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cu_transferability.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "selection"}, indent=1, default=float))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=["data", "bulk", "retrain", "report"])
    parser.add_argument("--epochs", type=int, default=120)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("fesurf").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    {"data": stage_data, "bulk": stage_bulk, "retrain": stage_retrain, "report": stage_report}[args.stage](args)


if __name__ == "__main__":
    main()
