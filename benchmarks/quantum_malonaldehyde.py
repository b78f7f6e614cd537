"""Quantum (centroid) free-energy profile of malonaldehyde proton transfer at 300 K and its H/D kinetic
isotope effect, corrected to GFN2-xTB, with the classical-nuclei barrier beside it.

Three umbrella runs on the centroid CV s = d(O1-H) - d(O2-H) (Angstrom) with the stored GFN2-xTB BP
committee (``fesurf.data.load_malonaldehyde_committee``), all windows and beads in one State per run:

1. classical nuclei (P = 1, the same PILE machinery: Langevin on the centroid);
2. quantum, transferring proton H (P = 16 beads);
3. quantum, transferring proton D (atom 5 deuterated, P = 16).

Each surrogate PMF is corrected to GFN2-xTB by sparse labels (:func:`fesurf.sampling.pimd.reweight_quantum_pmf`:
stratified frames, every bead labelled with ``fesurf.oracles.XTBOracle``, wTP on the bead-averaged dU).
The KIE is centroid QTST (:func:`fesurf.estimators.quantum.kinetic_isotope_effect`) from the two corrected
PMFs, with the CV's effective mass at the TS from each run's centroids.

Settings are small to keep the compute near 20 minutes on one core (stated in the JSON): 14 windows,
16 beads, 16,000 production steps of 0.5 fs per window (8 ps), 240 labelled frames per run.

Run: ``OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/quantum_malonaldehyde.py``; writes
``benchmarks/results/quantum_malonaldehyde.json``. ``--quick`` shrinks everything (a smoke run).
"""
from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "quantum_malonaldehyde.json"
DIRECT = Path(__file__).resolve().parent / "results" / "gfn2xtb_direct_reference.json"

LITERATURE = {
    "ccsd_t_barrier_kcal_mol": 4.1,
    "tunnelling_splitting_H_cm1": 21.6,
    "tunnelling_splitting_D_cm1": 3.0,
    "note": ("CCSD(T) electronic barrier and the experimental ground-state tunnelling splittings (REFERENCE.md). "
             "Path-integral QTST and quantum-instanton KIEs for malonaldehyde on an ab initio reactive surface: "
             "Wong et al., JCTC 6, 2566 (2010); centroid-TST isotope effects: Iftimie and Schofield, JCP 115, "
             "5891 (2001). Their numerical KIEs were not checked here."),
}


def settings(quick: bool) -> dict:
    if quick:
        return dict(n_beads=4, n_windows=8, n_equilibration=100, n_production=600, stride=5, n_labels=120,
                    pmf_bins=8)
    return dict(n_beads=16, n_windows=14, n_equilibration=1000, n_production=16000, stride=20, n_labels=240,
                pmf_bins=24)


def run(quick: bool = False, seed: int = 0) -> dict:
    from fesurf.analysis import barrier
    from fesurf.cv import distance_difference
    from fesurf.data import load_malonaldehyde_committee, malonaldehyde
    from fesurf.estimators import compute_pmf
    from fesurf.estimators.quantum import kinetic_isotope_effect
    from fesurf.md.ring_polymer import PILEDynamics, substitute_isotopes
    from fesurf.oracles import XTBOracle
    from fesurf.sampling.pimd import bead_labeller, centroid_effective_mass, quantum_umbrella_sampling, \
        reweight_quantum_pmf
    from fesurf.sampling.protocol import Schedule
    from fesurf.state import State

    torch.set_num_threads(1)
    cfg = settings(quick)
    T = 300.0
    cv = distance_difference([0, 5], [4, 5])
    centers = np.linspace(-0.85, 0.85, cfg["n_windows"])
    kappa = 3.0  # eV/A^2
    pmf_range = (-0.8, 0.8)
    model = load_malonaldehyde_committee()
    atoms = malonaldehyde()
    light = State.from_atoms(atoms)
    heavy = substitute_isotopes(light, {5: "D"})
    oracle = XTBOracle(method="GFN2-xTB")
    sched = Schedule(n_equilibration=cfg["n_equilibration"], n_production=cfg["n_production"], stride=cfg["stride"])
    runs = {"classical": (light, 1), "quantum_H": (light, cfg["n_beads"]), "quantum_D": (heavy, cfg["n_beads"])}
    out = {"settings": dict(cfg, temperature_K=T, centers=centers.tolist(), kappa_eV_A2=kappa, timestep_fs=0.5,
                            tau_centroid_fs=50.0, pile_lambda=1.0, splitting="baoab", propagator="exact",
                            cv="d(O1-H) - d(O2-H), Angstrom", pmf_range=list(pmf_range), seed=seed,
                            surrogate="stored GFN2-xTB BP committee", reference="GFN2-xTB (tblite)",
                            torch_threads=1),
           "literature": LITERATURE}
    pmfs, masses = {}, {}
    t_all = time.perf_counter()
    for i, (name, (start, P)) in enumerate(runs.items()):
        t0 = time.perf_counter()
        dyn = PILEDynamics(n_beads=P, timestep=0.5, tau_centroid=50.0, seed=seed + i)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            samples = quantum_umbrella_sampling(model, start, cv, centers=centers, kappa=kappa, temperature=T,
                                                dynamics=dyn, schedule=sched)
        t_md = time.perf_counter() - t0
        pmf_sur = compute_pmf(samples, bins=cfg["pmf_bins"], range=pmf_range)
        label = bead_labeller(samples, oracle, atoms)
        t1 = time.perf_counter()
        res, frames, du = reweight_quantum_pmf(samples, label, cfg["n_labels"], bins=cfg["pmf_bins"],
                                               range=pmf_range, seed=seed + 7)
        t_qm = time.perf_counter() - t1
        b_sur = barrier(pmf_sur).to("kcal/mol")
        b_cor = res.barrier().to("kcal/mol")
        m_s = centroid_effective_mass(samples, cv, near=b_cor.ts_location, width=0.05)
        pmfs[name], masses[name] = res, m_s
        out[name] = {
            "n_beads": P, "mass_H_amu": float(start.masses[5]),
            "surrogate_barrier": b_sur.to_dict(), "corrected_barrier": b_cor.to_dict(),
            "effective_mass_at_ts_amu": m_s,
            "reference_calls": int(label.n_calls), "n_labelled_frames": int(frames.size),
            "flagged_bins": int(res.flagged.sum()),
            "max_beta_sigma": float(np.nanmax(res.per_bin["beta_sigma"])),
            "mean_beta_dU": float(np.nanmean(res.per_bin["mean_beta_du"])),
            "n_frames": int(samples.n_frames), "md_wall_s": t_md, "labels_wall_s": t_qm,
            "pmf_grid": res.surrogate.grid[0].tolist(),
            "pmf_surrogate_kcal_mol": res.surrogate.to("kcal/mol").values.tolist(),
            "pmf_corrected_kcal_mol": res.corrected.to("kcal/mol").values.tolist(),
            "pmf_corrected_sigma_kcal_mol": res.corrected.to("kcal/mol").uncertainties.tolist(),
        }
        print(f"{name}: P={P} surrogate {b_sur.activation.value:.2f} ± {b_sur.activation.error:.2f}, "
              f"GFN2-corrected {b_cor.activation.value:.2f} ± {b_cor.activation.error:.2f} kcal/mol "
              f"(MD {t_md:.0f} s, {label.n_calls} xTB calls {t_qm:.0f} s)", flush=True)
        samples.close()
    kie = kinetic_isotope_effect(pmfs["quantum_H"].corrected, pmfs["quantum_D"].corrected, masses["quantum_H"],
                                 masses["quantum_D"])
    kie_sur = kinetic_isotope_effect(pmfs["quantum_H"].surrogate, pmfs["quantum_D"].surrogate, masses["quantum_H"],
                                     masses["quantum_D"])
    out["kie_corrected"] = kie.to_dict()
    out["kie_surrogate"] = kie_sur.to_dict()
    out["kie_classical_tst"] = {"kie": float(np.sqrt(masses["quantum_D"] / masses["quantum_H"])),
                                "note": "classical PMFs are mass independent: only the velocity factor remains"}
    if DIRECT.exists():
        direct = json.loads(DIRECT.read_text())["barrier"]
        out["direct_classical_gfn2"] = {"activation": direct["activation"], "activation_sigma": direct["activation_sigma"],
                                        "source": "benchmarks/results/gfn2xtb_direct_reference.json (GFN2-xTB MD)"}
    out["wall_time_s"] = time.perf_counter() - t_all
    out["reference_calls_total"] = int(sum(out[n]["reference_calls"] for n in runs))
    print(f"KIE (GFN2-corrected centroid QTST): {kie}")
    print(f"KIE surrogate: {kie_sur.kie:.2f} ± {kie_sur.error:.2f}; classical TST {out['kie_classical_tst']['kie']:.2f}")
    print(f"wall time {out['wall_time_s']:.0f} s")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny settings (smoke run); does not write the results")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    out = run(quick=args.quick)
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
