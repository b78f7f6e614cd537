"""Write tutorials/13_active_learning.ipynb (cells only) and optionally execute it in place.

Usage: .venv/bin/python scripts/make_tutorial_13.py [--execute] [--quick]
(--execute runs it with nbclient in the project's interpreter and stores the outputs; --quick sets
FESURF_TUTORIAL_QUICK=1 for that run.)
"""
from __future__ import annotations

import argparse
import os
import pathlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

PATH = pathlib.Path(__file__).resolve().parents[1] / "tutorials" / "13_active_learning.ipynb"

CELLS = [
    new_markdown_cell("""# 13 · A surrogate for a new reaction, from nothing, by active learning

The reaction: the identity S<sub>N</sub>2 exchange Cl<sup>-</sup> + CH<sub>3</sub>Cl → ClCH<sub>3</sub> + Cl<sup>-</sup>
in the gas phase at 300 K, with GFN2-xTB as the reference. Nothing about it is stored in the
repository: no structure, no data, no model. The collective variable is
`d(C-Cl_a) - d(C-Cl_b)` (Angstrom): about -1.2 in the reactant ion-dipole complex, 0 at the
D<sub>3h</sub> transition state, +1.2 in the product complex.

The plan, every reference call counted:

1. relax a hand-built complex with the reference itself;
2. **active learning** (`fesurf.training.active`): seed labels (Hessian displacements, normal modes,
   a restrained scan along the CV), then rounds of surrogate MD under the production umbrella bias
   (all windows, several walkers each, one batched model call per step), labels where the committee's
   calibrated force deviation lies between two trust levels, warm-started refits, until every CV bin
   predicts `beta*sigma(dU) <= 1` and few frames are still uncertain;
3. production umbrella sampling with the surrogate, every frame's spread recorded by the production guard;
4. the sparse correction to GFN2 (two-stage delta learning, as `reweight.estimator = "delta"`);
5. a **direct GFN2-xTB umbrella run** with the same windows, as the reference to compare against.

`FESURF_TUTORIAL_QUICK=1` shrinks every step (well under a minute; the barriers then carry larger sigmas)."""),
    new_code_cell("""import os, tempfile, time, warnings
import numpy as np
import matplotlib.pyplot as plt
import torch
from ase import Atoms
from ase.optimize import BFGS
from fesurf import State
from fesurf.analysis import barrier
from fesurf.cv import distance_difference
from fesurf.estimators import compute_pmf
from fesurf.estimators.delta_learning import delta_two_stage
from fesurf.execution import limit_threads
from fesurf.oracles import LabelCache, XTBOracle
from fesurf.potentials.ase_bridge import FesurfCalculator
from fesurf.sampling.umbrella import umbrella_sampling
from fesurf.training.active import (ActiveLearningSettings, ExploreSettings, ProductionBias, SeedSettings,
                                    SelectSettings, StopSettings, TrustLevels, active_learning)
from fesurf.training.refit import RefitSettings
from fesurf.units import convert, kT

torch.set_num_threads(1)
QUICK = os.environ.get("FESURF_TUTORIAL_QUICK") == "1"
T = 300.0
KCAL = convert(1.0, "kT", "kcal/mol", temperature=T)
warnings.simplefilter("ignore")  # short runs: the estimators' equilibration/correlation notes
work = tempfile.mkdtemp(prefix="fesurf_tutorial13_")
oracle = XTBOracle()  # GFN2-xTB, one OpenMP thread per call (limit_threads below)
t_start = time.perf_counter()"""),
    new_markdown_cell("""## 1. A start structure, relaxed with the reference

Cl<sub>a</sub>-C-Cl<sub>b</sub> on a line, the three hydrogens pointing away from the bonded Cl<sub>a</sub>
(the back side, where Cl<sub>b</sub> attacks). The relaxation runs on the oracle as a Potential, whose
`n_calls` counts every GFN2 calculation it makes."""),
    new_code_cell("""def complex_guess(d_a=1.8, d_b=3.2):
    pos = [[0, 0, -d_a], [0, 0, 0], [0, 0, d_b]]
    for k in range(3):
        phi = 2 * np.pi * k / 3
        pos.append([1.06 * np.cos(phi), 1.06 * np.sin(phi), 0.36])  # H-C 1.12 A, pointing away from Cl_a
    atoms = Atoms("ClCClHHH", positions=pos)
    atoms.info.update(charge=-1, multiplicity=1)
    return atoms

atoms = complex_guess()
relax_potential = oracle.as_potential()
atoms.calc = FesurfCalculator(relax_potential)
with limit_threads(1):
    BFGS(atoms, logfile=None).run(fmax=0.02, steps=200)
atoms.calc = None
cv = distance_difference([1, 0], [1, 2])
s0 = float(cv(State.from_atoms(atoms))[0])
print(f"relaxed complex: d(C-Cl_a) = {atoms.get_distance(1, 0):.3f} A, d(C-Cl_b) = {atoms.get_distance(1, 2):.3f} A, "
      f"CV = {s0:.3f} A; {relax_potential.n_calls} GFN2 calls")"""),
    new_markdown_cell("""## 2. Active learning under the production bias

The production windows: 14 umbrellas over [-1.4, 1.4] A with kappa = 4 eV/A^2 (the
curvature at the transition state is about -2.5 eV/A^2: kappa must exceed it); the PMF and the
stopping test use 26 bins over [-1.3, 1.3] A (13 in quick mode, where the labels are fewer). The loop explores
under exactly these windows, so it learns where production will sample. Trust levels are on the
committee's calibrated maximum atomic force deviation (eV/A): frames between 0.3 and 0.6 are
candidates, above 0.6 a walker is restarted from its last trusted frame. When the stopping test
passes, it is confirmed on an exploration as long as production (`confirm_steps`): a hole that
short rounds did not reach (a free Cl<sup>-</sup> has many ways to go) would show up there as untrusted
walkers, and the loop would go on with those frames."""),
    new_code_cell("""N_PRODUCTION = 800 if QUICK else 10000  # production MD steps per window (after the equilibration)
N_EQUILIBRATION = 200 if QUICK else 500
bias = ProductionBias(cv, centers=np.linspace(-1.4, 1.4, 14), kappa=4.0, temperature=T, pmf_range=(-1.3, 1.3),
                      pmf_bins=13 if QUICK else 26)
settings = ActiveLearningSettings(
    trust=TrustLevels(lower=0.3, upper=0.6),
    seed_data=SeedSettings(normal_modes=24 if QUICK else 32, scan_points=6, scan_steps=3 if QUICK else 6),
    explore=ExploreSettings(walkers_per_window=4 if QUICK else 8, steps=200 if QUICK else 500, check_every=20,
                            timestep=0.5, friction=0.02),
    select=SelectSettings(per_round=50 if QUICK else 120, min_validation=6),
    refit=RefitSettings(seed_epochs=80 if QUICK else 200, epochs=25 if QUICK else 40, optimizer="lbfgs",
                        bootstrap=True, dtype="float32"),
    stop=StopSettings(budget=500 if QUICK else 2500, max_rounds=3 if QUICK else 15, max_beta_sigma=1.0,
                      max_candidate_fraction=0.05, confirm_steps=N_EQUILIBRATION + N_PRODUCTION))
t0 = time.perf_counter()
with limit_threads(1):
    result = active_learning(oracle, atoms, bias, settings, workdir=os.path.join(work, "active"))
t_loop = time.perf_counter() - t0
print(result.table())
print(f"stopped: {result.stop_reason} after {result.rounds[-1]['round']} rounds, {t_loop:.0f} s")
print("loop reference calls by purpose:", {k: v for k, v in result.calls.items() if v and k not in
      ('computed_this_session', 'from_cache_this_session')})
worst = [r['explore']['max_beta_sigma'] for r in result.rounds[1:]]
print("max predicted beta*sigma(dU) per round:", [round(w, 2) for w in worst])
print(f"calibration (held-out labels): energy x{result.calibration.energy:.2f}, forces x{result.calibration.forces:.2f}")"""),
    new_markdown_cell("""Calls per round, and the committee's calibrated energy spread per CV bin, as the
`beta*sigma(dU)` it predicts for the sparse correction (dashed: the stopping level 1)."""),
    new_code_cell("""fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
ax1.bar([r['round'] for r in result.rounds], [r['calls_this_round'] for r in result.rounds], color="C0")
ax1.set_xlabel("round (0 = seed)"); ax1.set_ylabel("GFN2 calls"); ax1.set_title("reference calls per round")
for r in result.rounds[1:]:
    ex = r['explore']
    ax2.plot(ex['bin_centres'], [np.nan if b is None else b for b in ex['beta_sigma']], marker=".",
             label=f"round {r['round']} ({r['calls_total']} calls)")
ax2.axhline(1.0, color="k", ls="--", lw=0.8)
ax2.set_xlabel("CV d(C-Cl_a) - d(C-Cl_b) (A)"); ax2.set_ylabel("predicted beta*sigma(dU)")
ax2.set_title("calibrated spread per CV bin"); ax2.legend(fontsize=7)
fig.tight_layout(); plt.show()"""),
    new_markdown_cell("""## 3. Production with the surrogate, guarded

Each window starts where the loop left that window's first walker (`result.window_starts`): from the
reactant complex alone, the far windows would be pulled across the whole CV range by their restraints
in the first steps. Every recorded frame stores the calibrated force deviation; frames above the upper
trust level would be flagged and the PMF would name the bins that hold them."""),
    new_code_cell("""t0 = time.perf_counter()
samples = umbrella_sampling(result.model, result.window_starts(atoms), cv, centers=np.array(bias.centers), kappa=bias.kappa,
                            temperature=T, timestep=0.5, friction=0.02, seed=1, n_equilibration=N_EQUILIBRATION,
                            n_production=N_PRODUCTION, stride=10, check_overlap=False,
                            guard=result.guard("warn"))
t_prod = time.perf_counter() - t0
pmf_sur = compute_pmf(samples, bins=bias.pmf_bins, range=bias.pmf_range)
b_sur = barrier(pmf_sur).to("kcal/mol")
flags = samples.untrusted_frames()
print(f"production: {samples.n_frames} frames, {int(flags.sum())} flagged by the guard, {t_prod:.0f} s; "
      f"bins with flagged frames: {pmf_sur.diagnostics['untrusted_bins']}")"""),
    new_markdown_cell("""## 4. Sparse correction to GFN2-xTB

Two-stage delta learning: a quarter of the labels fit a model of `dU = U_GFN2 - U_surrogate`,
the rest are drawn per bin by model-corrected weight and correct what the model missed."""),
    new_code_cell("""qm_cache = LabelCache(os.path.join(work, "qm"))

def label(frames):
    configs = []
    for p in samples.read_positions(frames):
        a = atoms.copy()
        a.positions = p
        configs.append(a)
    with limit_threads(1):
        labels = oracle.label(configs, cache=qm_cache)
    du = np.array([lab.energy if lab.ok else np.nan for lab in labels]) - samples.u_ref[frames] * kT(T)
    return du, np.isfinite(du), [lab.reason for lab in labels]

res, two = delta_two_stage(samples, label, 150 if QUICK else 600, bins=bias.pmf_bins, range=bias.pmf_range, seed=7,
                           warn=False)
b_cor = res.barrier().to("kcal/mol")
print(f"correction: {two.n_calls} GFN2 labels, {int(res.flagged.sum())} flagged bins, max beta*sigma(dU - model) "
      f"{np.nanmax(res.per_bin['beta_sigma']):.2f}")
t_fesurf = time.perf_counter() - t_start"""),
    new_markdown_cell("""## 5. The direct reference: GFN2-xTB umbrella sampling, the same windows

Every MD step of every window is a GFN2 call here. Each window starts from the last surrogate
production frame of that window (started from the reactant complex, the far windows would be torn
apart by their restraints in the first steps)."""),
    new_code_cell("""direct_potential = oracle.as_potential()
last = [int(np.nonzero(samples.state_index == k)[0][-1]) for k in range(len(bias.centers))]
starts = State.from_atoms(atoms).replicate(len(last))
starts = starts.replace(positions=torch.as_tensor(samples.read_positions(last).reshape(-1, 3)))
t0 = time.perf_counter()
with limit_threads(1):
    direct = umbrella_sampling(direct_potential, starts, cv, centers=np.array(bias.centers),
                               kappa=bias.kappa, temperature=T, timestep=0.5, friction=0.02, seed=2,
                               n_equilibration=50 if QUICK else 500, n_production=150 if QUICK else 6000, stride=10,
                               check_overlap=False, store_positions=False)
t_direct = time.perf_counter() - t0
pmf_direct = compute_pmf(direct, bins=bias.pmf_bins, range=bias.pmf_range)
b_dir = barrier(pmf_direct).to("kcal/mol")
fesurf_calls = relax_potential.n_calls + result.calls["total"] + two.n_calls
z = (b_cor.activation.value - b_dir.activation.value) / np.hypot(b_cor.activation.error, b_dir.activation.error)
print(f"reference calls: relaxation {relax_potential.n_calls} + loop {result.calls['total']} + correction "
      f"{two.n_calls} = {fesurf_calls}; direct run {direct_potential.n_calls}")
print(f"barrier (kcal/mol): surrogate {b_sur.activation.value:.2f} +- {b_sur.activation.error:.2f} | corrected "
      f"{b_cor.activation.value:.2f} +- {b_cor.activation.error:.2f} | direct GFN2 {b_dir.activation.value:.2f} +- "
      f"{b_dir.activation.error:.2f} | z = {z:+.2f}")
print(f"wall time: fesurf route {t_fesurf:.0f} s, direct run {t_direct:.0f} s (this machine, this run)")"""),
    new_code_cell("""fig, ax = plt.subplots(figsize=(6.5, 4))
for fe, name in ((res.surrogate.to("kcal/mol"), "surrogate (active learning)"),
                 (res.corrected.to("kcal/mol"), "corrected to GFN2 (sparse labels)"),
                 (pmf_direct.to("kcal/mol"), "direct GFN2 umbrella sampling")):
    fe.plot(ax=ax, label=name)
ax.set_xlabel("CV d(C-Cl_a) - d(C-Cl_b) (A)"); ax.set_ylabel("F (kcal/mol)"); ax.legend(fontsize=8)
fig.tight_layout(); plt.show()"""),
    new_markdown_cell("""**Reading.** The loop spends its calls where the committee is unsure under the production
bias, so the predicted `beta*sigma(dU)` falls bin by bin; the surrogate's barrier is already close,
and a few hundred sparse labels move it to the reference level with an honest sigma. The direct run
needs a GFN2 call for every MD step of every window. In quick mode (the test suite's setting) every
part is short, the direct run most of all, and the sigmas are large."""),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--execute", action="store_true")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    nb = new_notebook(cells=CELLS, metadata={"kernelspec": {"display_name": "Python 3", "language": "python",
                                                            "name": "python3"}})
    if args.execute:
        from nbclient import NotebookClient

        if args.quick:
            os.environ["FESURF_TUTORIAL_QUICK"] = "1"
        os.environ.setdefault("MPLBACKEND", "Agg")
        NotebookClient(nb, timeout=7200, kernel_name="python3",
                       resources={"metadata": {"path": str(PATH.parent)}}).execute()
    nbformat.write(nb, PATH)
    print(f"wrote {PATH}")


if __name__ == "__main__":
    main()
