"""Long NPT reference run of the Lennard-Jones fcc crystal with an independent, exact sampler.

Writes ``tests/data/lj_fcc_npt_reference.json``: the mean volume, its variance and their standard errors
at two pressures for 32 argon atoms (fesurf's ``LennardJones()`` with its default cutoff, 40 K),
sampled by Langevin NVT dynamics (fesurf's BAOAB) plus Metropolis Monte Carlo moves of ln V
(isotropic scaling of positions and cell; acceptance ``min(1, exp(-beta (dU + P dV)) (V'/V)^(N+1))``,
exact by detailed balance for the isothermal-isobaric density ``V^N exp(-beta (U + P V))``). It shares
no code with the stochastic-cell-rescaling barostat that ``tests/test_barostat.py`` checks against it.

Standard errors: the statistical inefficiency of each replica's volume series (``pymbar.timeseries``),
replicas independent. Run: ``OMP_NUM_THREADS=1 python scripts/make_npt_reference.py`` (about 10 min
on one busy core).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk
from ase.units import GPa, kB

from fesurf.md import Langevin, maxwell_boltzmann
from fesurf.potentials import LennardJones
from fesurf.state import State

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "lj_fcc_npt_reference.json"

TEMPERATURE = 40.0          # K
PRESSURES_GPA = (0.0, 0.04)  # the two state points of the test
A_START = 5.40              # Angstrom, fcc lattice constant to start from
REPLICAS = 8                # per pressure
TIMESTEP, FRICTION = 10.0, 0.01   # fs, 1/fs
MC_EVERY, MC_STEP = 3, 0.02       # MD steps between volume moves; ln V proposal width
N_EQUIL, N_PROD, STRIDE = 1500, 12000, 3
SEED = 11


def main():
    torch.set_num_threads(1)
    t0 = time.time()
    pot = LennardJones()
    one = State.from_atoms(bulk("Ar", "fcc", a=A_START, cubic=True).repeat(2))
    n_atoms = one.n_atoms
    state = one.replicate(2 * REPLICAS)
    pressure = torch.as_tensor(np.repeat(np.asarray(PRESSURES_GPA) * GPa, REPLICAS))
    beta = 1.0 / (kB * TEMPERATURE)
    md = Langevin(pot, timestep=TIMESTEP, temperature=TEMPERATURE, friction=FRICTION, seed=SEED)
    md.start(maxwell_boltzmann(state, TEMPERATURE, seed=SEED + 1))
    rng = np.random.default_rng(SEED + 2)
    volumes, accepted, tried = [], 0, 0
    for step in range(1, N_EQUIL + N_PROD + 1):
        md.advance(1)
        work = md.current
        if step % MC_EVERY == 0:
            v_old = torch.linalg.det(work.cell)
            d = torch.as_tensor(rng.normal(0.0, MC_STEP, size=work.n_systems))
            mu = torch.exp(d / 3.0)
            old_pos, old_cell, old_e = work.positions.clone(), work.cell.clone(), md._energy.clone()
            trial = work.replace(positions=old_pos * mu[work.system_index][:, None], cell=old_cell * mu[:, None, None])
            e_new = pot.energy(trial).detach()
            v_new = v_old * torch.exp(d)
            log_acc = -beta * (e_new - old_e + pressure * (v_new - v_old)) + (n_atoms + 1) * d
            take = torch.log(torch.as_tensor(rng.random(work.n_systems))) < log_acc
            tried += work.n_systems
            accepted += int(take.sum())
            if bool(take.any()):
                sel = take[work.system_index]
                work.positions.copy_(torch.where(sel[:, None], trial.positions, old_pos))
                work.cell = torch.where(take[:, None, None], trial.cell, old_cell)
                md.refresh_forces()
        if step > N_EQUIL and step % STRIDE == 0:
            volumes.append(torch.linalg.det(work.cell).numpy().copy())
    from pymbar import timeseries

    vol = np.array(volumes)  # [frames, replicas]
    out = {"how": __doc__.strip().splitlines()[0], "script": "scripts/make_npt_reference.py",
           "potential": "fesurf.potentials.LennardJones() (argon, epsilon 0.0104 eV, sigma 3.40 A, cutoff 8.5 A)",
           "n_atoms": n_atoms, "temperature_K": TEMPERATURE, "timestep_fs": TIMESTEP, "friction_per_fs": FRICTION,
           "mc_every_steps": MC_EVERY, "mc_lnV_step": MC_STEP, "n_equilibration": N_EQUIL, "n_production": N_PROD,
           "stride": STRIDE, "replicas_per_pressure": REPLICAS, "acceptance": accepted / max(tried, 1),
           "seconds": time.time() - t0, "state_points": []}
    for k, p in enumerate(PRESSURES_GPA):
        cols = vol[:, k * REPLICAS:(k + 1) * REPLICAS]
        g = [timeseries.statistical_inefficiency(cols[:, r]) for r in range(REPLICAS)]
        n_eff = sum(cols.shape[0] / gi for gi in g)
        mean = float(cols.mean())
        var = float(cols.var(ddof=1))
        # standard errors: independent replicas, each series counted by its statistical inefficiency;
        # the variance's error uses the Gaussian value 2 var^2 / n_eff (g of V^2 taken equal to that of V)
        out["state_points"].append({"pressure_GPa": p, "mean_volume_A3": mean, "mean_volume_sem_A3":
                                    float(np.sqrt(var / n_eff)), "volume_variance_A6": var,
                                    "volume_variance_sem_A6": float(var * np.sqrt(2.0 / n_eff)),
                                    "n_effective": float(n_eff), "statistical_inefficiency_steps": float(np.mean(g) * STRIDE)})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
