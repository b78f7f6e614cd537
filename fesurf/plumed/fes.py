"""Free-energy surfaces from PLUMED metadynamics: ``sum_hills`` and reweighting.

* :func:`sum_hills` is the equivalent of ``plumed sum_hills``: the bias on a
  grid from the Gaussians of a HILLS file (PLUMED's stretched kernels and 6.25
  cutoff), and ``F(s) = -sum of stored heights`` (for well-tempered METAD the
  HILLS heights already carry the gamma/(gamma-1) factor, so this is
  ``-gamma/(gamma-1) V(s)``).
* :func:`reweight_metad` reweights the frames of a COLVAR written during the
  run with the time-dependent bias (Tiwary & Parrinello, JPCB 119, 736 (2015)):
  ``w_n = exp(beta (V(s_n, t_n) - c(t_n)))`` with
  ``c(t) = kT ln[ int exp(gamma/(gamma-1) beta V) ds / int exp(beta V/(gamma-1)) ds ]``
  evaluated on a grid from the hills deposited before ``t``. It gives the FES
  along any printed CV, not only the biased one.

Energies are in the unit of the files (``energy_unit``, PLUMED default
kJ/mol); CVs in the file units.

Example
-------
>>> import io
>>> h = "#! FIELDS time x sigma_x height biasf\\n#! SET kerneltype stretched-gaussian\\n 1 0.0 0.1 2.0 10\\n"
>>> from fesurf.plumed.files import read_hills
>>> fes = sum_hills(read_hills(io.StringIO(h)), grid=[[-1.0, 0.0]])
>>> fes.values.tolist()   # F = -2 at the hill centre, shifted to a zero minimum
[2.0, 0.0]
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

from ..errors import InputError
from ..units import convert, kT as kT_ev
from .files import Hills, PlumedTable, read_colvar, read_hills

__all__ = ["sum_hills", "hills_bias", "reweight_metad", "metad_ct"]

log = logging.getLogger(__name__)


def _grid(hills: Hills, grid, bins, range_):
    if grid is not None:
        axes = [np.asarray(g, dtype=np.float64).reshape(-1) for g in grid]
        if len(axes) != hills.n_cvs:
            raise InputError(f"grid has {len(axes)} axes but the hills have {hills.n_cvs} CVs")
        return axes
    bins = [bins] * hills.n_cvs if np.ndim(bins) == 0 else list(bins)
    axes = []
    for j in range(hills.n_cvs):
        per = hills.periods[j]
        if range_ is not None:
            lo, hi = range_[j] if hills.n_cvs > 1 else range_
        elif per is not None:
            lo, hi = per
        else:
            lo = float((hills.centers[:, j] - 3 * hills.sigmas[:, j]).min())
            hi = float((hills.centers[:, j] + 3 * hills.sigmas[:, j]).max())
        if per is not None and range_ is None:
            n = int(bins[j])
            axes.append(lo + (hi - lo) * (np.arange(n) + 0.5) / n)
        else:
            axes.append(np.linspace(lo, hi, int(bins[j])))
    return axes


def _points(axes):
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1), tuple(a.size for a in axes)


def hills_bias(hills: Hills, points, upto: Optional[int] = None, chunk: int = 4096) -> np.ndarray:
    """Deposited bias V(s) (file energy unit) at ``points [n, n_cvs]`` from the first ``upto`` hills.

    Uses the deposited heights (stored heights times (gamma-1)/gamma), i.e.
    what PLUMED adds to the energy; the ``mtd.bias`` PLUMED prints.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, hills.n_cvs)
    n = hills.n_hills if upto is None else int(upto)
    out = np.zeros(pts.shape[0])
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        k = _kernels(hills, pts, a, b)
        out += k @ hills.heights[a:b]
    return out * hills.bias_scale


def _kernels(hills, pts, a, b):
    sub = Hills(hills.cv_names, hills.time[a:b], hills.centers[a:b], hills.sigmas[a:b], hills.heights[a:b],
                hills.biasfactor, hills.periods, hills.kernel)
    return sub.kernels(pts)


def sum_hills(hills, grid: Optional[Sequence] = None, bins=200, range=None, upto: Optional[int] = None,
              energy_unit: str = "kJ/mol", temperature: Optional[float] = None):
    """FES from a HILLS file, like ``plumed sum_hills`` (minimum shifted to zero).

    Parameters
    ----------
    hills : :class:`~fesurf.plumed.files.Hills` or a path to a HILLS file
    grid : list of 1D arrays, one per CV (default: ``bins`` points over the hills' range,
        or the period for periodic CVs)
    bins, range : grid size and ``(lo, hi)`` (per CV for several CVs) when no grid is given
    upto : use only the first ``upto`` hills (convergence checks)
    energy_unit : unit of the HILLS heights (PLUMED default kJ/mol); the result is in it
    temperature : K, stored on the result (for unit conversions)

    Returns
    -------
    FreeEnergy on the grid, no uncertainties (use :func:`reweight_metad` for error bars).
    """
    from ..estimators.free_energy import FreeEnergy

    if not isinstance(hills, Hills):
        hills = read_hills(hills)
    axes = _grid(hills, grid, bins, range)
    pts, shape = _points(axes)
    v = hills_bias(hills, pts, upto=upto)
    f = -v / hills.bias_scale
    f = (f - f.min()).reshape(shape)
    return FreeEnergy(f, unit=energy_unit, temperature=temperature, grid=axes, cv_names=hills.cv_names,
                      method="sum_hills", diagnostics={"n_hills": hills.n_hills if upto is None else int(upto),
                                                       "biasfactor": hills.biasfactor})


def metad_ct(hills: Hills, temperature: float, grid: Optional[Sequence] = None, bins=200,
             energy_unit: str = "kJ/mol", chunk: int = 256) -> np.ndarray:
    """``c(t_i)`` (energy_unit) after each of the ``n_hills + 1`` deposition counts (index 0: no hill).

    ``c = kT ln[ sum_grid exp(gamma/(gamma-1) beta V) / sum_grid exp(beta V/(gamma-1)) ]``; for
    plain METAD (no bias factor) ``kT ln mean_grid exp(beta V)``.
    """
    kt = convert(kT_ev(float(temperature)), "eV", energy_unit)
    axes = _grid(hills, grid, bins, None)
    pts, _ = _points(axes)
    g = hills.biasfactor if hills.biasfactor and hills.biasfactor > 1 else None
    v = np.zeros(pts.shape[0])
    out = [0.0]
    scale = hills.bias_scale
    for a in range(0, hills.n_hills, chunk):
        b = min(hills.n_hills, a + chunk)
        cum = v[:, None] + np.cumsum(_kernels(hills, pts, a, b) * (hills.heights[a:b] * scale)[None, :], axis=1)
        bv = cum / kt
        if g is None:
            c = np.logaddexp.reduce(bv, axis=0) - np.log(bv.shape[0])
        else:
            c = np.logaddexp.reduce(bv * g / (g - 1.0), axis=0) - np.logaddexp.reduce(bv / (g - 1.0), axis=0)
        out.extend((kt * c).tolist())
        v = cum[:, -1]
    return np.asarray(out)


def reweight_metad(colvar, hills, temperature: float, cv_field: str, *, bias_field: Optional[str] = "auto",
                   bins=50, range=None, skip_time: float = 0.0, energy_unit: str = "kJ/mol",
                   n_blocks: int = 5, ct_bins: int = 300):
    """FES along ``cv_field`` of a COLVAR from a METAD run, reweighted with ``V(s,t) - c(t)``.

    Parameters
    ----------
    colvar : PlumedTable or path; must hold ``time``, ``cv_field`` and the METAD bias
        (``bias_field``; ``"auto"`` picks the single ``*.bias`` field; None: compute it
        from the hills deposited before each frame's time, for the METAD CVs)
    hills : Hills or path of the same run
    temperature : K
    bins, range : histogram along cv_field (file units)
    skip_time : drop frames before this time (ps), e.g. the first filling transient
    n_blocks : contiguous blocks for the error bars (1 sigma = std of the block
        FES / sqrt(n_blocks))
    ct_bins : grid points per CV for c(t)

    Returns
    -------
    FreeEnergy (energy_unit, minimum at zero) with block uncertainties; empty bins NaN.
    """
    from ..estimators.diagnostics import kish_ess
    from ..estimators.free_energy import FreeEnergy

    colvar = colvar if isinstance(colvar, PlumedTable) else read_colvar(colvar)
    hills = hills if isinstance(hills, Hills) else read_hills(hills)
    if "time" not in colvar:
        raise InputError(f"{colvar._where()} has no 'time' field; reweighting needs the time of each frame")
    kt = convert(kT_ev(float(temperature)), "eV", energy_unit)
    keep = colvar["time"] >= skip_time
    if keep.sum() < 2 * n_blocks:
        raise InputError(f"only {int(keep.sum())} frames after skip_time={skip_time}; need at least {2 * n_blocks}")
    t = colvar["time"][keep]
    s = colvar[cv_field][keep]
    counts = np.searchsorted(hills.time, t, side="left")  # hills deposited before each frame
    if bias_field == "auto":
        cands = [f for f in colvar.fields if f.endswith(".bias")]
        if len(cands) != 1:
            raise InputError(f"{colvar._where()} has {len(cands)} '*.bias' fields ({cands}); name the METAD bias "
                             "with bias_field= or pass bias_field=None to compute it from the hills")
        bias_field = cands[0]
    if bias_field is not None:
        v = colvar[bias_field][keep]
    else:
        missing = [c for c in hills.cv_names if c not in colvar]
        if missing:
            raise InputError(f"{colvar._where()} lacks the METAD CVs {missing}; print them or give bias_field")
        sv = colvar.columns(hills.cv_names)[keep]
        v = np.array([hills_bias(hills, sv[i:i + 1], upto=int(c))[0] for i, c in enumerate(counts)])
    ct = metad_ct(hills, temperature, bins=ct_bins, energy_unit=energy_unit)
    logw = (v - ct[counts]) / kt
    w = np.exp(logw - logw.max())
    edges = np.histogram_bin_edges(s, bins=bins, range=range)
    centers = 0.5 * (edges[1:] + edges[:-1])
    hist = np.histogram(s, bins=edges, weights=w)[0]
    with np.errstate(divide="ignore"):
        f = -kt * np.log(hist / hist.sum())
    f[~np.isfinite(f)] = np.nan
    blocks = []
    for idx in np.array_split(np.arange(s.size), n_blocks):
        hb = np.histogram(s[idx], bins=edges, weights=w[idx])[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            fb = -kt * np.log(hb / hb.sum())
        fb[~np.isfinite(fb)] = np.nan
        blocks.append(fb - np.nanmin(fb) if np.isfinite(fb).any() else fb)
    blocks = np.array(blocks)
    fmin = np.nanmin(f)
    f = f - fmin
    with np.errstate(invalid="ignore"):
        err = np.nanstd(blocks - np.nanmean(blocks, axis=0) + 0.0, axis=0, ddof=1) / np.sqrt(n_blocks)
    err[np.isnan(f)] = np.nan
    return FreeEnergy(f, err, unit=energy_unit, temperature=float(temperature), grid=[centers],
                      cv_names=[cv_field], method="METAD reweighting (c(t))",
                      diagnostics={"kish_ess": kish_ess(w), "n_frames": int(s.size), "n_blocks": int(n_blocks)})
