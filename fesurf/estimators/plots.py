"""Plots of estimator results as matplotlib Figure objects (no pyplot state); PNG on request.

Example
-------
>>> fig = plot_overlap(np.eye(3))
>>> type(fig).__name__
'Figure'
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ..errors import InputError


def _fig_ax(ax, figsize=(5.0, 3.6)):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot(1, 1, 1)


def _axis_label(fe, i: int) -> str:
    """The human-readable label of CV ``i`` (``fe.cv_labels``), else its name."""
    labels = getattr(fe, "cv_labels", None)
    if labels:
        return labels[i]
    return fe.cv_names[i] if fe.cv_names else "CV"


def _save(fig, path):
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_free_energy(fe, ax=None, sigma: float = 2.0, path=None, label=None, exact=None):
    """PMF with a ±sigma·σ band (1D) or filled contours (2D); scalar ΔA as a point with error bar.

    ``exact``: optional values on the same grid, drawn for comparison (1D).
    Returns the Figure; saves a PNG when ``path`` is given.
    """
    fig, ax = _fig_ax(ax)
    if not fe.is_profile:
        ax.errorbar([0], [fe.value], yerr=None if fe.uncertainties is None else [sigma * fe.error], fmt="o")
        ax.set_xticks([0], [fe.method or "ΔA"])
        ax.set_ylabel(f"ΔA / {fe.unit}")
    elif fe.values.ndim == 1:
        x = fe.grid[0] if fe.grid is not None else np.arange(fe.values.size)
        ax.plot(x, fe.values, label=label or fe.method)
        if fe.uncertainties is not None:
            ax.fill_between(x, fe.values - sigma * fe.uncertainties, fe.values + sigma * fe.uncertainties,
                            alpha=0.3, label=f"±{sigma:g}σ")
        if exact is not None:
            ax.plot(x, exact, "k--", label="exact")
        ax.set_xlabel(_axis_label(fe, 0))
        ax.set_ylabel(f"PMF / {fe.unit}")
        ax.legend(frameon=False)
    elif fe.values.ndim == 2:
        gx, gy = fe.grid
        cs = ax.contourf(gx, gy, fe.values.T, levels=20)
        fig.colorbar(cs, ax=ax, label=f"PMF / {fe.unit}")
        ax.set_xlabel(_axis_label(fe, 0))
        ax.set_ylabel(_axis_label(fe, 1))
    else:
        raise InputError("can only plot scalars, 1D and 2D profiles")
    return _save(fig, path)


def plot_overlap(overlap, ax=None, path=None):
    """Heat map of the MBAR overlap matrix (pass the matrix or a FreeEnergy with diagnostics)."""
    O = overlap.diagnostics["overlap_matrix"] if hasattr(overlap, "diagnostics") else overlap
    O = np.asarray(O, dtype=np.float64)
    fig, ax = _fig_ax(ax, (4.5, 4.0))
    im = ax.imshow(O, cmap="viridis", vmin=0.0, vmax=max(float(O.max()), 1e-12), origin="upper")
    fig.colorbar(im, ax=ax, label="overlap")
    if O.shape[0] <= 12:
        for i in range(O.shape[0]):
            for j in range(O.shape[1]):
                ax.text(j, i, f"{O[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
    ax.set_xlabel("state j")
    ax.set_ylabel("state i")
    return _save(fig, path)


def plot_window_histograms(samples, cv: int = 0, bins: int = 60, ax=None, path=None):
    """Histogram of one CV per sampled state (window); gaps between windows show missing overlap."""
    if samples.cv is None or not 0 <= cv < samples.n_cv:
        raise InputError(f"CV index {cv} out of range ({samples.n_cv} CVs stored)")
    x = samples.cv[:, cv]
    si = samples.state_index
    edges = np.linspace(x.min(), x.max(), bins + 1)
    fig, ax = _fig_ax(ax)
    for k in np.unique(si):
        h, _ = np.histogram(x[si == k], bins=edges)
        ax.stairs(h, edges, fill=True, alpha=0.4)
    labels = getattr(samples, "cv_labels", None)
    ax.set_xlabel(labels[cv] if labels else samples.cv_names[cv])
    ax.set_ylabel("frames")
    return _save(fig, path)


def plot_convergence(conv, ax=None, path=None):
    """Forward/reverse estimates vs fraction of data (scalars), or max |PMF - final| (profiles)."""
    fig, ax = _fig_ax(ax)
    fr = conv.fractions
    unit = conv.forward[-1].unit
    if conv.forward[0].is_profile:
        final = conv.forward[-1].values
        for d in ("forward", "reverse"):
            dev = [np.nanmax(np.abs(v - np.nanmean(v - final) - final)) for v in conv.values(d)]
            ax.plot(fr, dev, "o-", label=d)
        ax.set_ylabel(f"max |PMF − final| / {unit}")
    else:
        for d in ("forward", "reverse"):
            ax.errorbar(fr, conv.values(d), yerr=conv.errors(d), fmt="o-", capsize=3, label=d)
        ax.set_ylabel(f"ΔA / {unit}")
    ax.set_xlabel("fraction of data")
    ax.legend(frameon=False)
    return _save(fig, path)
