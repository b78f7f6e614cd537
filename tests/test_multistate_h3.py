"""H3 (FCI/cc-pVDZ, two lowest doublets; dataset made by scripts/make_h3_dataset.py):
a diabatic model trained on adiabatic energies finds the D3h seam minimum."""
import json
from pathlib import Path

import numpy as np
import torch

from fesurf.multistate.crossing import find_meci
from fesurf.state import State
from fesurf.surrogates.diabatic import DiabaticModel, PairDistanceFeatures, fit_diabatic

DATA = Path(__file__).resolve().parents[1] / "fesurf/data/h3/h3_fci_ccpvdz.npz"


def _states(p):
    return State(positions=torch.as_tensor(p.reshape(-1, 3)), atomic_numbers=[1] * (3 * len(p)),
                 system_index=torch.arange(len(p)).repeat_interleave(3))


def test_h3_meci_and_heldout_rmse():
    torch.set_num_threads(1)
    d = np.load(DATA)
    pos, ene = d["positions"], d["energies"]
    ref_R = json.loads(str(d["meta"]))["seam_minimum_R"]  # our own FCI D3h scan (parabola-free quartic fit)
    assert abs(ref_R - 1.087) < 0.01  # consistent with docs/REFERENCE.md
    n_train = 240  # points are i.i.d. random triangles, so the tail is a fair held-out set
    model = DiabaticModel(PairDistanceFeatures(3, r0=1.1, width=0.1), 2, hidden=(32, 32))
    fit_diabatic(model, _states(pos[:n_train]), torch.as_tensor(ene[:n_train]), epochs=1000, lr=5e-3,
                 lbfgs_steps=1000, seed=0)
    pred = model.adiabatic_energies(_states(pos[n_train:])).numpy()
    rmse = np.sqrt(((pred - ene[n_train:]) ** 2).mean(axis=0))
    assert rmse.max() <= 0.020, rmse  # eV, both adiabats (measured ~2 meV)
    start = np.array([[[0.0, 0.0, 0.0], [1.15, 0.0, 0.0], [0.5, 0.95, 0.0]]])  # scalene start
    res = find_meci(model, _states(start), max_steps=2000)
    assert res.converged and res.gap < 1e-3
    p = res.state.positions.numpy()
    sides = np.array([np.linalg.norm(p[0] - p[1]), np.linalg.norm(p[0] - p[2]), np.linalg.norm(p[1] - p[2])])
    assert sides.max() - sides.min() < 0.01  # equilateral
    assert abs(sides.mean() - ref_R) < 0.02
