"""Accuracy metrics, committee calibration and parity plots.

Energies: MAE/RMSE in meV/atom and kcal/mol (per configuration); forces:
MAE/RMSE in eV/A per component.

Example
-------
>>> import torch
>>> m = error_metrics(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.1]), torch.tensor([2, 2]),
...                   torch.zeros(4, 3), torch.zeros(4, 3))
>>> round(m["energy_mae_meV_per_atom"], 3)
25.0
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr

from ..units import convert
from .data import Dataset


def error_metrics(e_pred, e_ref, n_atoms, f_pred, f_ref) -> dict:
    """Energy (meV/atom, kcal/mol) and force (eV/A) MAE and RMSE."""
    de = (e_pred - e_ref).double()
    dea = de / n_atoms.double()
    df = (f_pred - f_ref).double()
    kcal = convert(1.0, "eV", "kcal/mol")
    return {
        "energy_mae_meV_per_atom": float(dea.abs().mean()) * 1000,
        "energy_rmse_meV_per_atom": float(dea.pow(2).mean().sqrt()) * 1000,
        "energy_mae_kcal_mol": float(de.abs().mean()) * kcal,
        "energy_rmse_kcal_mol": float(de.pow(2).mean().sqrt()) * kcal,
        "force_mae_eV_A": float(df.abs().mean()),
        "force_rmse_eV_A": float(df.pow(2).mean().sqrt()),
        "n_frames": int(de.numel()),
    }


def predict_dataset(model, dataset: Dataset, idx, batch_size: int = 256) -> dict:
    """Committee predictions over frames ``idx``: energy, forces, spreads, references."""
    idx = torch.as_tensor(idx, dtype=torch.long)
    dtype = model.model_dtype
    out = {k: [] for k in ("energy", "forces", "energy_std", "force_deviation_max", "ref_energy", "ref_forces",
                           "n_atoms", "aleatoric_std")}
    for k in range(0, len(idx), batch_size):
        state, e, f = dataset.batch(idx[k:k + batch_size], dtype)
        p = model.predict(state)
        out["energy"].append(p["energy"].double())
        out["forces"].append(p["forces"].double())
        out["energy_std"].append(p["energy_std"].double())
        out["force_deviation_max"].append(p["force_deviation_max"].double())
        if "aleatoric_std" in p:
            out["aleatoric_std"].append(p["aleatoric_std"].double())
        out["ref_energy"].append(e.double())
        out["ref_forces"].append(f.double())
        out["n_atoms"].append(state.atoms_per_system)
    return {k: torch.cat(v) for k, v in out.items() if v}


def evaluate(model, dataset: Dataset, idx) -> dict:
    """Error metrics of ``model`` on frames ``idx`` (plus the mean committee spreads)."""
    p = predict_dataset(model, dataset, idx)
    m = error_metrics(p["energy"], p["ref_energy"], p["n_atoms"], p["forces"], p["ref_forces"])
    m["mean_energy_std_kcal_mol"] = float(p["energy_std"].mean()) * convert(1.0, "eV", "kcal/mol")
    m["mean_force_deviation_max_eV_A"] = float(p["force_deviation_max"].mean())
    return m


def calibration(model, dataset: Dataset, idx, n_bins: int = 5) -> dict:
    """Spread-vs-error calibration on held-out frames.

    Returns the Spearman rank correlations between the committee energy spread
    and the absolute energy error, and between the maximum force deviation and
    the maximum atomic force error; the factor ``k`` that makes
    ``k * energy_std`` an unbiased estimate of the RMS error
    (``sqrt(mean(err^2) / mean(std^2))``); and binned (spread, RMS error) pairs.
    """
    p = predict_dataset(model, dataset, idx)
    err = (p["energy"] - p["ref_energy"]).abs().numpy()
    std = p["energy_std"].numpy()
    ferr = (p["forces"] - p["ref_forces"]).norm(dim=1)
    sys = torch.repeat_interleave(torch.arange(len(err)), p["n_atoms"])
    fmax = torch.zeros(len(err), dtype=torch.float64).scatter_reduce(0, sys, ferr, "amax").numpy()
    fdev = p["force_deviation_max"].numpy()
    order = np.argsort(std)
    bins = np.array_split(order, n_bins)
    return {
        "spearman_energy": float(spearmanr(std, err).statistic),
        "spearman_forces": float(spearmanr(fdev, fmax).statistic),
        "scale_factor": float(np.sqrt(np.mean(err ** 2) / max(np.mean(std ** 2), 1e-30))),
        "binned_std_eV": [float(std[b].mean()) for b in bins],
        "binned_rmse_eV": [float(np.sqrt(np.mean(err[b] ** 2))) for b in bins],
        "n_frames": int(len(err)),
    }


def parity_plot(model, dataset: Dataset, idx, path=None, title: str = ""):
    """Energy (per atom, meV-relative) and force parity plots; returns a matplotlib Figure
    (saved to ``path`` if given)."""
    from matplotlib.figure import Figure

    p = predict_dataset(model, dataset, idx)
    fig = Figure(figsize=(9, 4))
    ax1, ax2 = fig.subplots(1, 2)
    kcal = convert(1.0, "eV", "kcal/mol")
    e_ref = (p["ref_energy"] - p["ref_energy"].mean()) * kcal
    e_pred = (p["energy"] - p["ref_energy"].mean()) * kcal
    ax1.scatter(e_ref, e_pred, s=4)
    lim = [float(min(e_ref.min(), e_pred.min())), float(max(e_ref.max(), e_pred.max()))]
    ax1.plot(lim, lim, "k--", lw=0.8)
    ax1.set_xlabel("reference energy (kcal/mol, shifted)")
    ax1.set_ylabel("model energy (kcal/mol, shifted)")
    fr, fp = p["ref_forces"].flatten(), p["forces"].flatten()
    ax2.scatter(fr, fp, s=1)
    lim = [float(fr.min()), float(fr.max())]
    ax2.plot(lim, lim, "k--", lw=0.8)
    ax2.set_xlabel("reference force component (eV/A)")
    ax2.set_ylabel("model force component (eV/A)")
    fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
