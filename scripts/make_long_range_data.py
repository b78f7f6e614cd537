"""Generate, label and fit the stored long-range data (GFN2-xTB through tblite).

Stages (``--stage generate``, ``--stage train`` or ``--stage all``):

``generate`` writes ``fesurf/data/long_range/*.npz`` (fesurf ``Dataset`` files with reference Mulliken
charges and dipoles from ``XTBOracle(moments=True)``) and ``generation.json`` (settings, GFN2 calls):

- ``cl_ch3cl_gfn2.npz``: Cl- + CH3Cl (backside Cl'...C approach, total charge -1). Frames from a
  short GFN2-xTB umbrella run along d(Cl'-C) (windows 2.8-15 A; 300 K; this is the generation data, the
  PMF benchmark's direct reference is a separate, longer run) plus backside scans 2-15 A on thermally
  perturbed CH3Cl geometries. ``info["split"]`` is train/val/test (seeded).
- ``cl_ch3cl_curve_gfn2.npz``: the binding curve, Cl' on the C3 axis behind C of the GFN2-optimised
  CH3Cl, d(Cl'-C) = 2.0-15 A (held out: no training frame is on it).
- ``nacl_dissociation_gfn2.npz``: neutral Na-Cl, 2.0-10 A (tblite's SCF oscillates between
  charge-transfer solutions beyond ~5 A; each point is retried with smaller mixer damping and the
  frame is kept only when one converges: ``info["mixer_damping"]``).
- ``ag3_gfn2.npz``: Ag3 triangles (sides 2.45-3.4 A, apex angle 45-180 deg), each geometry labelled as
  Ag3+ and Ag3- (singlets), ``info["split"]`` by geometry.

``train`` fits and stores (``fesurf/data/long_range/``): the local model (Behler-Parrinello, 5 A cutoff)
and the hybrid (:class:`~fesurf.surrogates.long_range.LongRangeModel`, same descriptor) for Cl- + CH3Cl,
committees of ``--members``; the hybrid again with the long-range terms switched off inside 5 A
(``*_exclusion``); local and hybrid models for Ag3+-; and ``metrics.json`` with their test errors.

Usage: ``OMP_NUM_THREADS=1 python scripts/make_long_range_data.py --stage all`` (about 15 min on one
core; deterministic for the seeds below).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule

from fesurf.data.long_range import complex_at
from fesurf.oracles import XTBOracle
from fesurf.training.data import Dataset, split_indices

log = logging.getLogger("make_long_range_data")
OUT = Path(__file__).resolve().parents[1] / "fesurf" / "data" / "long_range"
#: the local environment of every model here: ACSF radial cutoff 5 A (the issue's local cutoff)
ACSF = {"cutoff": 5.0, "n_radial": 8, "angular_cutoff": 4.0, "angular_shifts": [1.2, 2.6], "zetas": [1.0, 4.0]}


def ch3cl_minimum(oracle):
    """GFN2-optimised CH3Cl, C at the origin, C-Cl along +z (so the backside is -z)."""
    from ase.optimize import BFGS
    from tblite.ase import TBLite

    m = molecule("CH3Cl")
    m.calc = TBLite(method="GFN2-xTB", verbosity=0)
    BFGS(m, logfile=None).run(fmax=1e-4)
    m.calc = None
    m.positions -= m.positions[0]
    z = m.positions[1] / np.linalg.norm(m.positions[1])
    # rotate C-Cl onto +z
    v = np.cross(z, [0, 0, 1.0])
    s, c = np.linalg.norm(v), float(z @ [0, 0, 1.0])
    if s > 1e-12:
        vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
        rot = np.eye(3) + vx + vx @ vx * ((1 - c) / s ** 2)
        m.positions = m.positions @ rot.T
    return m


def label(oracle, frames, what):
    t = time.time()
    labels = oracle.label(frames)
    ok = [lab for lab in labels if lab.ok]
    log.info("%s: %d/%d labelled in %.1f s", what, len(ok), len(labels), time.time() - t)
    return labels


def fragments(mol=None):
    """GFN2-xTB energies of the separated fragments (CH3Cl at the curve's geometry, Cl-): the zero of
    the binding curve, written to ``cl_ch3cl_fragments.json``."""
    from fesurf.data.long_range import ch3cl_minimum

    mol = ch3cl_minimum() if mol is None else mol
    oracle = XTBOracle()
    m = Atoms(numbers=mol.numbers, positions=mol.positions)
    m.info.update(charge=0, multiplicity=1)
    cl = Atoms("Cl", positions=[[0.0, 0, 0]])
    cl.info.update(charge=-1, multiplicity=1)
    e_m, e_cl = oracle.compute(m).energy, oracle.compute(cl).energy
    (OUT / "cl_ch3cl_fragments.json").write_text(json.dumps(
        {"method": oracle.method, "energy_ch3cl_eV": e_m, "energy_chloride_eV": e_cl,
         "energy_separated_eV": e_m + e_cl}, indent=1) + "\n")


def generate_cl_ch3cl(args, record):
    from fesurf.cv import DISTANCE
    from fesurf.sampling.umbrella import umbrella_sampling
    from fesurf.state import State

    oracle = XTBOracle(moments=True)
    mol = ch3cl_minimum(oracle)
    # binding curve (held out)
    d_curve = np.concatenate([np.arange(2.0, 6.0, 0.2), np.arange(6.0, 15.01, 0.5)])
    curve = Dataset.from_labels(label(oracle, [complex_at(mol, d) for d in d_curve], "curve"))
    for k, d in enumerate(d_curve):
        curve.info[k]["distance"] = float(d)
    curve.save_npz(OUT / "cl_ch3cl_curve_gfn2.npz")
    fragments(mol)
    # generation MD: a short GFN2 umbrella run along d(Cl'-C)
    # the MD oracle: same Hamiltonian, a damped SCF mixer (the default one fails now and then on an
    # anion far from the molecule, and a failed MD step would end the run)
    potential = XTBOracle(mixer_damping=0.2, max_iterations=500).as_potential()
    centers = np.concatenate([np.arange(2.8, 6.0, 0.4), np.arange(6.0, 12.01, 1.0)])
    start = State.from_atoms(complex_at(mol, 4.0))
    samples = umbrella_sampling(potential, start, DISTANCE([0, 5]), centers=centers, kappa=args.kappa,
                                temperature=300.0, timestep=0.5, friction=0.02, seed=11,
                                n_equilibration=args.n_equilibration, n_production=args.n_production,
                                stride=args.stride, store_positions=True, check_overlap=False)
    pos = np.asarray(samples.positions)
    windows = np.asarray(samples.state_index)
    samples.close()
    frames = []
    for p in pos.reshape(-1, 6, 3):
        a = Atoms(numbers=list(mol.numbers) + [17], positions=p)
        a.info.update(charge=-1, multiplicity=1, source="umbrella")
        frames.append(a)
    # backside scans on perturbed CH3Cl geometries (taken from the widest-distance windows' frames)
    rng = np.random.default_rng(5)
    far = np.flatnonzero(windows == len(centers) - 1)
    for k in rng.choice(far, size=args.n_scans, replace=False):
        m = Atoms(numbers=mol.numbers, positions=pos.reshape(-1, 6, 3)[k, :5] - pos.reshape(-1, 6, 3)[k, 0])
        axis = -m.positions[1] / np.linalg.norm(m.positions[1])
        tilt = rng.normal(size=3) * 0.15
        for d in rng.uniform(2.0, 15.0, size=args.scan_points):
            a = complex_at(m, d, axis + tilt)
            a.info["source"] = "scan"
            frames.append(a)
    labels = label(oracle, frames, "Cl- + CH3Cl frames")
    ds = Dataset.from_labels(labels)
    split = split_indices(len(ds), seed=3, fractions=(0.8, 0.1, 0.1))
    for name, idx in split.items():
        for k in idx.tolist():
            ds.info[k]["split"] = name
    ds.save_npz(OUT / "cl_ch3cl_gfn2.npz")
    n_md = len(centers) * (args.n_equilibration + args.n_production + 1)
    record["cl_ch3cl"] = {"n_frames": len(ds), "n_curve": len(curve), "umbrella_centers_A": centers.tolist(),
                          "kappa_eV_A2": args.kappa, "n_equilibration": args.n_equilibration,
                          "n_production": args.n_production, "stride": args.stride, "timestep_fs": 0.5,
                          "n_md_calls": int(n_md), "n_label_calls": len(frames) + len(d_curve),
                          "n_failed": sum(not lab.ok for lab in labels)}


def _tblite_point(numbers, positions, charge, damping, guess="sad", max_iter=400):
    """One GFN2-xTB single point through tblite's own interface (its SCF memory is not tied to the
    iteration limit, so long SCFs stay cheap); energy eV, forces eV/A, charges e, dipole e*A."""
    from ase.units import Bohr, Hartree
    from tblite.interface import Calculator

    calc = Calculator("GFN2-xTB", np.asarray(numbers), np.asarray(positions) / Bohr, charge=float(charge))
    calc.set("verbosity", 0)
    calc.set("mixer-damping", float(damping))
    calc.set("max-iter", int(max_iter))
    calc.set("guess", {"sad": 0, "eeq": 1}[guess])
    res = calc.singlepoint()
    return (res.get("energy") * Hartree, -res.get("gradient") * Hartree / Bohr, np.array(res.get("charges")),
            np.array(res.get("dipole")) * Bohr)


def generate_nacl(args, record):
    """Neutral Na-Cl, 2-10 A. Beyond ~5 A the default SCF (mixer damping 0.4, SAD guess) oscillates
    between charge-transfer solutions; each point is retried with the EEQ guess and other dampings
    (same Hamiltonian, 300 K electronic temperature) and dropped when none converges in 400 cycles."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from fesurf.training.data import REF_CHARGES, REF_DIPOLE

    frames, dropped = [], []
    for d in np.concatenate([np.arange(2.0, 6.0, 0.1), np.arange(6.0, 10.01, 0.25)]):
        pos = np.array([[0.0, 0, 0], [d, 0, 0]])
        for guess, damping in (("sad", 0.4), ("eeq", 0.4), ("sad", 0.1), ("sad", 0.05), ("eeq", 0.1),
                               ("eeq", 0.05), ("sad", 0.2), ("eeq", 0.2)):
            try:
                e, f, q, mu = _tblite_point([11, 17], pos, 0, damping, guess)
            except Exception:  # noqa: BLE001 - tblite raises its own error type on a non-converged SCF
                continue
            a = Atoms("NaCl", positions=pos)
            a.info.update(charge=0.0, multiplicity=1, method="tblite:GFN2-xTB", distance=float(d),
                          mixer_damping=damping, scf_guess=guess)
            a.calc = SinglePointCalculator(a, energy=float(e), forces=f)
            a.arrays[REF_CHARGES] = q
            a.info[REF_DIPOLE] = mu
            frames.append(a)
            break
        else:
            dropped.append(float(d))
            log.warning("NaCl at %.2f A: no SCF converged", d)
        log.info("NaCl %.2f A done", d)
    ds = Dataset.from_atoms(frames)
    ds.save_npz(OUT / "nacl_dissociation_gfn2.npz")
    log.info("NaCl: %d frames, dropped %s", len(ds), dropped)
    record["nacl"] = {"n_frames": len(ds), "distances_A": [i["distance"] for i in ds.info],
                      "mixer_damping": [i["mixer_damping"] for i in ds.info], "dropped_distances_A": dropped,
                      "scf_guess": [i["scf_guess"] for i in ds.info], "max_scf_iterations": 400}


def generate_ag3(args, record):
    rng = np.random.default_rng(7)
    geoms = []
    while len(geoms) < args.n_ag3:
        r1, r2 = rng.uniform(2.45, 3.4, size=2)
        theta = np.radians(rng.uniform(45.0, 180.0))
        p = np.array([[0, 0, 0], [r1, 0, 0], [r2 * np.cos(theta), r2 * np.sin(theta), 0]])
        if np.linalg.norm(p[1] - p[2]) >= 2.45:
            geoms.append(p)
    frames = []
    for k, p in enumerate(geoms):
        for q in (1, -1):
            a = Atoms("Ag3", positions=p)
            a.info.update(charge=q, multiplicity=1, geometry=k)
            frames.append(a)
    labels = label(XTBOracle(moments=True), frames, "Ag3+-")
    # keep the geometries whose two charge states both converged (pairs at the same geometry)
    both = [k for k in range(len(geoms)) if labels[2 * k].ok and labels[2 * k + 1].ok]
    ds = Dataset.from_labels([labels[2 * k + c] for k in both for c in (0, 1)])
    split = split_indices(len(both), seed=4, fractions=(0.7, 0.1, 0.2))
    name_of = {int(k): name for name, idx in split.items() for k in idx}
    for j, inf in enumerate(ds.info):
        inf["geometry"] = both[j // 2]
        inf["split"] = name_of[j // 2]
    ds.save_npz(OUT / "ag3_gfn2.npz")
    record["ag3"] = {"n_geometries": len(both), "n_frames": len(ds), "n_failed": sum(not lab.ok for lab in labels),
                     "sides_A": [2.45, 3.4], "apex_angle_deg": [45.0, 180.0]}


# ---------------------------------------------------------------------------------------------- train
def _split(ds, name):
    return torch.as_tensor([k for k, i in enumerate(ds.info) if i.get("split") == name], dtype=torch.long)


def hybrid_settings(exclusion: bool):
    """The stored hybrid's long-range settings; ``exclusion`` switches Coulomb and dispersion off inside
    the 5 A local environment (torch-pme's raised cosine)."""
    if exclusion:
        return {"kernel": "exclusion", "switch_radius": 5.0}, {"switch_radius": 5.0}
    return {"kernel": "coulomb"}, {}


def _merge_metrics(new: dict):
    """Update ``metrics.json`` (several fits may run side by side, one model each)."""
    path = OUT / "metrics.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update(new)
    path.write_text(json.dumps(old, indent=1) + "\n")


def train_models(args, record):
    from fesurf.surrogates import BehlerParrinello, save_model
    from fesurf.surrogates.long_range import LongRangeModel
    from fesurf.training import TrainConfig, train
    from fesurf.training.long_range_fit import LongRangeTrainConfig, long_range_metrics, train_long_range

    metrics = {}
    # Cl- + CH3Cl: PhysNet charges (QEq lets charge flow between the separated ion and molecule as the
    # inter-fragment Coulomb term changes with distance: 17 meV of error from 6 to 15 A in a trial fit,
    # against 3.5 meV with PhysNet charges; see docs/notes/long_range.md). Ag3+-: QEq (4G-HDNNP).
    for system, charge_scheme in (("cl_ch3cl", "neutralize"), ("ag3", "qeq")):
        if system not in args.systems:
            continue
        ds = Dataset.load_npz(OUT / f"{system}_gfn2.npz")
        elements = sorted(set(ds.numbers.tolist()))
        tr, va, te = _split(ds, "train"), _split(ds, "val"), _split(ds, "test")
        t = time.time()
        if args.reuse_local and (OUT / f"{system}_local.pt").exists():
            from fesurf.surrogates import load_model

            local = load_model(OUT / f"{system}_local.pt")
        else:
            local = BehlerParrinello(elements, hidden=tuple(args.hidden), n_members=args.members, acsf=ACSF, seed=0)
            train(local, ds, tr, va, TrainConfig(epochs=args.epochs, batch_size=32, lr=3e-3,
                                                 force_weight=args.force_weight, patience=args.patience, seed=0))
            save_model(local, OUT / f"{system}_local.pt", metadata={"dataset": f"{system}_gfn2.npz", "acsf": ACSF})
        m_local = long_range_metrics(local, ds, te)
        m_local["seconds"] = time.time() - t
        metrics[f"{system}_local"] = m_local
        log.info("%s local: %s", system, m_local)
        variants = [False, True] if system == "cl_ch3cl" else [False]
        if args.variants is not None:
            variants = [v for v in variants if ("exclusion" if v else "plain") in args.variants]
        for exclusion in variants:
            t = time.time()
            elec, disp = hybrid_settings(exclusion)
            hybrid = LongRangeModel(elements, hidden=tuple(args.hidden), n_members=args.members, acsf=ACSF,
                                    charges={"scheme": charge_scheme, "hidden": [16]}, electrostatics=elec,
                                    dispersion=disp, seed=0)
            cfg = LongRangeTrainConfig(epochs=args.epochs, batch_size=32, lr=3e-3, force_weight=args.force_weight,
                                       charge_weight=args.charge_weight, dipole_weight=args.dipole_weight,
                                       charge_pretrain_epochs=args.charge_pretrain, patience=args.patience, seed=0)
            train_long_range(hybrid, ds, tr, va, cfg)
            tag = f"{system}_hybrid" + ("_exclusion" if exclusion else "")
            save_model(hybrid, OUT / f"{tag}.pt", metadata={"dataset": f"{system}_gfn2.npz", "acsf": ACSF})
            m = long_range_metrics(hybrid, ds, te)
            m["seconds"] = time.time() - t
            metrics[tag] = m
            log.info("%s: %s", tag, m)
            _merge_metrics({tag: m, f"{system}_local": metrics[f"{system}_local"]})
    record["train"] = {"epochs": args.epochs, "members": args.members, "hidden": args.hidden,
                       "force_weight": args.force_weight, "charge_weight": args.charge_weight,
                       "dipole_weight": args.dipole_weight, "charge_pretrain_epochs": args.charge_pretrain}
    _merge_metrics(metrics)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=("generate", "train", "all"), default="all")
    ap.add_argument("--systems", nargs="+", default=["nacl", "ag3", "cl_ch3cl"])
    ap.add_argument("--kappa", type=float, default=1.0, help="umbrella force constant, eV/A^2")
    ap.add_argument("--n-equilibration", type=int, default=200)
    ap.add_argument("--n-production", type=int, default=1000)
    ap.add_argument("--stride", type=int, default=25)
    ap.add_argument("--n-scans", type=int, default=6)
    ap.add_argument("--scan-points", type=int, default=25)
    ap.add_argument("--n-ag3", type=int, default=250)
    ap.add_argument("--epochs", type=int, default=250)
    ap.add_argument("--members", type=int, default=2)
    ap.add_argument("--hidden", type=int, nargs="+", default=[32, 32])
    ap.add_argument("--force-weight", type=float, default=0.02)
    ap.add_argument("--charge-weight", type=float, default=3.0)
    ap.add_argument("--patience", type=int, default=60, help="early-stopping patience, epochs")
    ap.add_argument("--dipole-weight", type=float, default=0.0)
    ap.add_argument("--charge-pretrain", type=int, default=100)
    ap.add_argument("--variants", nargs="+", default=None, choices=("plain", "exclusion"),
                    help="which Cl- + CH3Cl hybrids to fit (default both)")
    ap.add_argument("--reuse-local", action="store_true", help="load a stored local model instead of refitting it")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    rec_path = OUT / "generation.json"
    record = json.loads(rec_path.read_text()) if rec_path.exists() else {}
    record["command"] = "scripts/make_long_range_data.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())
    record["method"] = "tblite:GFN2-xTB (accuracy 1, 300 K electronic temperature)"
    parts = {"nacl": generate_nacl, "ag3": generate_ag3, "cl_ch3cl": generate_cl_ch3cl}
    if args.stage in ("generate", "all"):
        for name in args.systems:
            parts[name](args, record)
            rec_path.write_text(json.dumps(record, indent=1) + "\n")
    if args.stage in ("train", "all"):
        train_models(args, record)
    rec_path.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
