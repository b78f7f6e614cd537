"""Accuracy metrics, committee spread calibration (stored factors, curves) and parity plots.

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

from ..errors import InputError
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
    """Committee predictions over frames ``idx``: energy, forces, raw (uncalibrated) spreads, references."""
    idx = torch.as_tensor(idx, dtype=torch.long)
    dtype = model.model_dtype
    out = {k: [] for k in ("energy", "forces", "energy_std", "force_deviation_max", "ref_energy", "ref_forces",
                           "n_atoms", "aleatoric_std")}
    raw = {"calibrated": False} if hasattr(model, "checked_calibration") else {}  # raw spreads, no factor check
    for k in range(0, len(idx), batch_size):
        state, e, f = dataset.batch(idx[k:k + batch_size], dtype)
        p = model.predict(state, **raw)
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


def spread_and_errors(model, dataset: Dataset, idx, batch_size: int = 256) -> dict:
    """Per-frame raw committee spreads and the errors they should predict, on frames ``idx``
    (numpy float64 arrays): ``energy_std`` and ``energy_error`` = |E - E_ref| (eV);
    ``force_deviation_max`` and ``force_error_max`` = max over atoms of |F - F_ref| (eV/A).
    Any calibration attached to ``model`` is ignored here (raw spreads)."""
    p = predict_dataset(model, dataset, idx, batch_size)
    n = len(p["energy"])
    sys = torch.repeat_interleave(torch.arange(n), p["n_atoms"])
    ferr = (p["forces"] - p["ref_forces"]).norm(dim=1)
    fmax = torch.zeros(n, dtype=torch.float64).scatter_reduce(0, sys, ferr, "amax", include_self=False)
    return {"energy_std": p["energy_std"].numpy(), "energy_error": (p["energy"] - p["ref_energy"]).abs().numpy(),
            "force_deviation_max": p["force_deviation_max"].numpy(), "force_error_max": fmax.numpy()}


def _binned(spread: np.ndarray, error: np.ndarray, n_bins: int) -> dict:
    """Equal-count bins of increasing ``spread``: mean spread and RMS error per bin, and the RMS over
    bins of log(RMS error / RMS spread) (0 for a calibrated spread; scale-free)."""
    order = np.argsort(spread, kind="stable")
    bins = [b for b in np.array_split(order, min(n_bins, len(order))) if len(b)]
    rms_s = np.array([np.sqrt(np.mean(spread[b] ** 2)) for b in bins])
    rms_e = np.array([np.sqrt(np.mean(error[b] ** 2)) for b in bins])
    ok = (rms_s > 0) & (rms_e > 0)
    return {"spread": [float(np.mean(spread[b])) for b in bins], "spread_rms": rms_s.tolist(),
            "error_rms": rms_e.tolist(), "n_per_bin": [int(len(b)) for b in bins],
            "log_miscalibration": float(np.sqrt(np.mean(np.log(rms_e[ok] / rms_s[ok]) ** 2))) if ok.any() else
            float("nan")}


def calibration_curves(model, dataset: Dataset, idx, n_bins: int = 10, factors: dict | None = None) -> dict:
    """Binned predicted spread against RMS error on frames ``idx`` (a calibration curve: points on the
    diagonal mean the spread predicts the error), for energies (eV) and maximum atomic forces (eV/A).

    The spreads are multiplied by ``factors`` (``energy_std_factor``, ``force_deviation_factor``;
    default: the model's own calibration, or 1 if it has none). Returns ``{"energy": {...},
    "forces": {...}, "factors": {...}, "spearman_energy", "spearman_forces", "n_frames"}``, each
    curve with per-bin ``spread`` (mean), ``spread_rms``, ``error_rms``, ``n_per_bin`` and the
    scale-free ``log_miscalibration`` (RMS over bins of log(error / spread)).
    """
    if factors is None:
        cal = model.checked_calibration() if hasattr(model, "checked_calibration") else None
        factors = cal or {"energy_std_factor": 1.0, "force_deviation_factor": 1.0}
    d = spread_and_errors(model, dataset, idx)
    ke, kf = float(factors["energy_std_factor"]), float(factors["force_deviation_factor"])
    return {"energy": _binned(ke * d["energy_std"], d["energy_error"], n_bins),
            "forces": _binned(kf * d["force_deviation_max"], d["force_error_max"], n_bins),
            "factors": {"energy_std_factor": ke, "force_deviation_factor": kf},
            "spearman_energy": float(spearmanr(d["energy_std"], d["energy_error"]).statistic),
            "spearman_forces": float(spearmanr(d["force_deviation_max"], d["force_error_max"]).statistic),
            "n_frames": int(len(d["energy_std"]))}


def calibrate(model, dataset: Dataset, frames, n_bins: int = 10, attach: bool = True) -> dict:
    """Calibrate the committee spread on held-out ``frames`` (not used in training) and attach the
    factors to ``model`` (they are saved with it by :func:`~fesurf.surrogates.save_model`).

    ``energy_std_factor = sqrt(mean(err_E^2) / mean(std_E^2))``: the factor that makes the scaled
    energy spread an unbiased estimate of the RMS energy error (eV) over these frames;
    ``force_deviation_factor`` likewise for the maximum atomic force deviation against the
    maximum atomic force error (eV/A), so that thresholds in eV/A (DP-GEN trust levels) mean
    force errors. Call it again after every retraining: :meth:`~fesurf.surrogates.AtomisticModel.predict`
    refuses factors that belong to older weights.

    Returns the factors, the calibration curves on these frames before and after scaling
    (see :func:`calibration_curves`), the Spearman correlations and ``n_frames``.

    >>> # after train(model, ds, split["train"], split["val"]):
    >>> # report = calibrate(model, ds, split["val"]); model.predict(state)["force_deviation_max_calibrated"]
    """
    frames = torch.as_tensor(frames, dtype=torch.long)
    if frames.numel() < 2:
        raise InputError(f"calibration needs at least 2 held-out frames, got {frames.numel()}")
    if getattr(model, "n_members", 1) < 2:
        raise InputError("calibration needs a committee (n_members >= 2): a single network has no spread")
    d = spread_and_errors(model, dataset, frames)
    factors = {}
    for key, spread, error in (("energy_std_factor", d["energy_std"], d["energy_error"]),
                               ("force_deviation_factor", d["force_deviation_max"], d["force_error_max"])):
        ms = float(np.mean(spread ** 2))
        if not ms > 0:
            raise InputError(f"the committee spread is zero on all {len(spread)} frames: its members are identical "
                             "(train them with different seeds or bootstrap weights) so it cannot be calibrated")
        factors[key] = float(np.sqrt(np.mean(error ** 2) / ms))
    raw = {"energy_std_factor": 1.0, "force_deviation_factor": 1.0}
    before = {"energy": _binned(d["energy_std"], d["energy_error"], n_bins),
              "forces": _binned(d["force_deviation_max"], d["force_error_max"], n_bins)}
    after = {"energy": _binned(factors["energy_std_factor"] * d["energy_std"], d["energy_error"], n_bins),
             "forces": _binned(factors["force_deviation_factor"] * d["force_deviation_max"], d["force_error_max"],
                               n_bins)}
    out = {**factors, "n_frames": int(frames.numel()), "curves_raw": before, "curves_calibrated": after,
           "raw_factors": raw,
           "spearman_energy": float(spearmanr(d["energy_std"], d["energy_error"]).statistic),
           "spearman_forces": float(spearmanr(d["force_deviation_max"], d["force_error_max"]).statistic)}
    if attach:
        model.set_calibration(factors["energy_std_factor"], factors["force_deviation_factor"],
                              n_frames=out["n_frames"])
    return out


def calibration_plot(curves: dict, path=None, title: str = ""):
    """Calibration curves (from :func:`calibration_curves`, or ``calibrate(...)["curves_calibrated"]``):
    RMS error against RMS predicted spread per bin, energies (kcal/mol) and forces (eV/A), log
    axes with the diagonal. Returns a matplotlib Figure (saved to ``path`` if given)."""
    from matplotlib.figure import Figure

    kcal = convert(1.0, "eV", "kcal/mol")
    fig = Figure(figsize=(9, 4))
    for ax, key, unit, scale in zip(fig.subplots(1, 2), ("energy", "forces"), ("kcal/mol", "eV/A"), (kcal, 1.0)):
        c = curves[key]
        x, y = np.asarray(c["spread_rms"]) * scale, np.asarray(c["error_rms"]) * scale
        ax.loglog(x, y, "o-", label=f"log-miscalibration {c['log_miscalibration']:.2f}")
        lim = [float(min(x.min(), y.min())) * 0.8, float(max(x.max(), y.max())) * 1.25]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set_xlabel(f"predicted spread, RMS per bin ({unit})")
        ax.set_ylabel(f"error, RMS per bin ({unit})")
        ax.set_title("energy" if key == "energy" else "max atomic force")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


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
