"""Li interstitial hop in crystalline Si (GFN1-xTB reference): reference NEB, surrogate, free-energy barrier.

Stages (each resumable: every GFN1-xTB call goes through one label cache, and ASE's optimisers are
deterministic, so a killed stage rerun replays its calls from the cache and continues):

``reference``  GFN1-xTB lattice constant of the 64-atom cubic Si cell (zero pressure by a secant on
               the tblite stress), Li relaxed at a tetrahedral site T_A, the other tetrahedral site
               T_B made from it by the inversion through the hexagonal site H between them (an
               inversion centre of the diamond lattice), and the climbing-image NEB T_A -> H -> T_B.
``labels``     the training frames: thermal displacements (300-600 K) of the relaxed band, labelled.
``train``      a BP committee on all GFN1-xTB labels of this study (NEB calls included).
``neb``        the surrogate NEB (batched: all images in one call per step) against the reference.
``umbrella``   umbrella sampling at 300 K with the surrogate on a PLUMED COMBINE of DISTANCEs.
``correct``    the sparse-reference correction (choose_frames / reweight_pmf) and the barrier with sigma.
``report``     writes benchmarks/results/li_hop.json.

Run with one OpenMP thread: ``OMP_NUM_THREADS=1 python scripts/li_hop.py reference``.
Work files go to ``runs/materials/li_hop`` (not stored); the stored model and data go to
``fesurf/data/materials/``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "materials" / "li_hop"
CACHE = ROOT / "runs" / "materials" / "labels_gfn1"
DATA = ROOT / "fesurf" / "data" / "materials"
RESULTS = ROOT / "benchmarks" / "results"
log = logging.getLogger("li_hop")

A_START = 5.43          # Angstrom, experimental Si lattice constant (the secant starts here)
N_REP = 2               # 2x2x2 conventional cells: Si64
MULTIPLICITY = 2        # Si64Li: 257 valence electrons, a doublet
NEB_IMAGES = 5          # end points included: T_A, 3 moving images (the middle one is H by symmetry), T_B


def oracle():
    from fesurf.oracles import XTBOracle
    from fesurf.training.periodic_fit import StressOracle

    return StressOracle(XTBOracle(method="GFN1-xTB"))


def calculator():
    from fesurf.sampling.neb import OracleCalculator

    return OracleCalculator(oracle(), cache=str(CACHE), multiplicity=MULTIPLICITY)


def si64(a):
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=a, cubic=True).repeat((N_REP, N_REP, N_REP))
    atoms.pbc = True
    return atoms


def lattice_constant():
    """Zero-pressure GFN1-xTB lattice constant of Si64 (secant on the pressure, 1e-3 GPa)."""
    from ase.units import GPa

    calc = calculator()
    calc.multiplicity = 1

    def pressure(a):
        atoms = si64(a)
        atoms.calc = calc
        return -float(np.trace(atoms.get_stress(voigt=False))) / 3.0 / GPa

    a0, a1 = A_START, A_START * 1.01
    p0, p1 = pressure(a0), pressure(a1)
    for _ in range(6):
        a2 = a1 - p1 * (a1 - a0) / (p1 - p0)
        a0, p0, a1, p1 = a1, p1, a2, pressure(a2)
        log.info("a = %.5f A: P = %.4f GPa", a1, p1)
        if abs(p1) < 1e-3:
            break
    return float(a1), float(p1)


def sites(a):
    """T_A, H, T_B of the conventional cell at the origin, Cartesian (Angstrom)."""
    return a * np.array([0.5, 0.5, 0.5]), a * np.array([0.625, 0.625, 0.625]), a * np.array([0.75, 0.75, 0.75])


def li_at(a, where):
    from ase import Atoms

    atoms = si64(a) + Atoms("Li", positions=[where])
    atoms.info["multiplicity"] = MULTIPLICITY
    return atoms


def invert_through(atoms, centre, ideal):
    """The configuration inverted through ``centre``, atoms renumbered so that atom j sits near its
    own ideal site ``ideal[j]`` (the band's end points must match atom by atom)."""
    L = atoms.cell.array.diagonal()
    out = atoms.copy()
    new = 2.0 * centre - atoms.positions
    ideal_new = (2.0 * centre - ideal)
    pos = atoms.positions.copy()
    host = [i for i in range(len(atoms)) if atoms.numbers[i] == 14]
    for i in range(len(atoms)):
        if i not in host:  # the Li: its image is the other site, no renumbering
            pos[i] = new[i]
            continue
        d = ideal[host] - ideal_new[i]
        d -= L * np.round(d / L)
        j = host[int(np.argmin((d ** 2).sum(1)))]
        d = d[host.index(j)]
        if (d ** 2).sum() > 1e-6:
            raise RuntimeError("the inversion does not map the lattice onto itself")
        pos[j] = new[i] + (ideal[j] - ideal_new[i])
    out.positions = pos
    return out


def stage_reference(args):
    from ase.optimize import BFGS

    from fesurf.sampling.neb import NEBSettings, image_by_image_neb

    WORK.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    a, p = lattice_constant()
    log.info("GFN1-xTB Si64 lattice constant %.4f A (P = %.2e GPa)", a, p)
    ta, hx, tb = sites(a)
    start = li_at(a, ta)
    ideal = start.positions.copy()
    start.calc = calculator()
    opt = BFGS(start, maxstep=0.1, logfile=str(WORK / "relax_TA.log"))
    opt.run(fmax=0.02, steps=200)
    e_ta = start.get_potential_energy()
    end = invert_through(start, hx, ideal)
    end.calc = calculator()
    e_tb = end.get_potential_energy()  # equal to e_ta by symmetry (a check of the construction)
    log.info("E(T_A) = %.6f, E(T_B) = %.6f eV", e_ta, e_tb)
    settings = NEBSettings(n_images=NEB_IMAGES, k=0.1, climb=True, fmax=0.05, steps=200, optimizer="BFGS",
                           max_step=0.1)
    res = image_by_image_neb(calculator, [start, end], settings, logfile=str(WORK / "neb_reference.log"))
    import ase.io

    ase.io.write(WORK / "neb_reference.extxyz", res.images)
    out = dict(res.to_dict(), lattice_constant_A=a, pressure_GPa=p, energy_TA_eV=e_ta, energy_TB_eV=e_tb,
               relax_steps=int(opt.nsteps), seconds=time.time() - t0)
    (WORK / "reference.json").write_text(json.dumps(out, indent=1))
    log.info("reference NEB barrier %.4f eV (converged %s, %d steps)", res.barrier, res.converged, res.n_steps)


def band_images():
    import ase.io

    return ase.io.read(WORK / "neb_reference.extxyz", ":")


def thermal_frames(seed=0):
    """Training frames: the band's images and their midpoints, each with Gaussian displacements
    (Si 0.04-0.10 A, Li 0.12 A rms per component, about the 300-600 K amplitudes), seeded."""
    band = band_images()
    bases = []
    for k in range(len(band)):
        bases.append(band[k].positions)
        if k + 1 < len(band):
            bases.append(0.5 * (band[k].positions + band[k + 1].positions))
    rng = np.random.default_rng(seed)
    frames = []
    for base in bases:
        for amp in (0.04, 0.06, 0.08, 0.10, 0.04, 0.06, 0.08, 0.10, 0.07):
            a = band[0].copy()
            a.calc = None
            sig = np.where(a.numbers == 3, 0.12, amp)[:, None]
            a.positions = base + rng.normal(size=base.shape) * sig
            a.info["multiplicity"] = MULTIPLICITY
            a.info["source"] = "thermal"
            frames.append(a)
    return frames


def stage_labels(args):
    frames = thermal_frames(seed=args.seed)
    t0 = time.time()
    labels = oracle().label(frames, cache=str(CACHE), multiplicity=MULTIPLICITY)
    log.info("%d thermal frames labelled (%d failed) in %.0f s", len(labels), sum(not l.ok for l in labels),
             time.time() - t0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=["reference", "labels"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("fesurf").setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(1)
    {"reference": stage_reference, "labels": stage_labels}[args.stage](args)


if __name__ == "__main__":
    main()
