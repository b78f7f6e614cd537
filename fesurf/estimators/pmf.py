"""Potentials of mean force along one or two CVs from biased (umbrella, HREX, FEP) samples.

MBAR reweights every frame to a target ensemble (by default the reference,
unbiased state whose reduced potential the SampleSet stores as ``u_ref``);
``pymbar.FES`` bins the weights (histogram, with pymbar's analytical
uncertainty), or a weighted Gaussian kernel density estimate smooths them
(``scipy.stats.gaussian_kde``; pymbar's own KDE needs scikit-learn, which
fesurf does not depend on). Bootstrap uncertainties resample decorrelated
blocks within each state (seeded).

Example
-------
>>> pmf = compute_pmf(samples, cv=0, bins=40)       # doctest: +SKIP
>>> pmf.plot(path="pmf.png")                        # doctest: +SKIP
"""
from __future__ import annotations

import builtins
import logging
import warnings

import numpy as np
from scipy.special import logsumexp

from .._pymbar import pymbar
from ..errors import InputError
from .diagnostics import (pymbar_errors, ESS_THRESHOLD, EffectiveSampleSizeWarning, EstimatorWarning, build_mbar,
                          kish_ess, remember_f_k,
                          solved_f_k,
                          overlap_diagnostics, prepare)
from .free_energy import FreeEnergy

logger = logging.getLogger(__name__)


def _cv_indices(samples, cv):
    cvs = [cv] if np.ndim(cv) == 0 else list(cv)
    if not 1 <= len(cvs) <= 2:
        raise InputError(f"cv must be one index or two indices (a 1D or 2D PMF), got {cv!r}")
    for c in cvs:
        if not isinstance(c, (int, np.integer)) or not 0 <= c < samples.n_cv:
            raise InputError(f"CV index {c!r} is out of range: the SampleSet stores {samples.n_cv} CV(s) "
                             f"{samples.cv_names}; use an index in [0, {samples.n_cv - 1}]")
    if len(cvs) == 2 and cvs[0] == cvs[1]:
        raise InputError("a 2D PMF needs two different CV indices")
    return cvs


def _edges(x, bins, range_):
    d = x.shape[1]
    # (np.ndim of per-CV edge arrays of different lengths would raise: test the container, not the array)
    if np.isscalar(bins) or (isinstance(bins, np.ndarray) and bins.ndim == 0):
        bins = [int(bins)] * d
    elif d == 1 and len(bins) > 2 and all(np.ndim(b) == 0 for b in bins):
        bins = [np.asarray(bins, dtype=np.float64)]
    if len(bins) != d:
        raise InputError(f"bins must be an int, an edge array (1D), or one entry per CV ({d})")
    if range_ is not None and np.ndim(range_) == 1:
        range_ = [range_]
    edges = []
    for a in range(d):
        b = bins[a]
        if np.ndim(b) == 0:
            if int(b) < 2:
                raise InputError(f"need at least 2 bins per CV, got {b}")
            lo, hi = (x[:, a].min(), x[:, a].max()) if range_ is None else range_[a]
            if not hi > lo:
                raise InputError(f"empty CV range [{lo}, {hi}] for CV axis {a}")
            e = np.linspace(lo, hi, int(b) + 1)
            e[-1] = np.nextafter(e[-1], np.inf)  # keep the largest sample inside the last bin
        else:
            e = np.asarray(b, dtype=np.float64)
            if e.ndim != 1 or e.size < 3 or np.any(np.diff(e) <= 0):
                raise InputError("bin edges must be an increasing 1D array with at least 3 entries")
        edges.append(e)
    return edges


def _target(samples, target):
    if target is None:
        if samples.u_ref is None:
            raise InputError("no target ensemble: the SampleSet has no u_ref (reduced potential of the unbiased "
                             "state); pass target=<state index> or target=<[N] reduced potentials in kT>")
        return samples.u_ref
    if np.ndim(target) == 0:
        k = int(target)
        if not -samples.n_states <= k < samples.n_states:
            raise InputError(f"target state {k} out of range for {samples.n_states} states")
        return samples.u_kn[k]
    t = np.asarray(target, dtype=np.float64)
    if t.shape != (samples.n_frames,):
        raise InputError(f"target must have one reduced potential per frame ({samples.n_frames}), got {t.shape}")
    return t


def _log_weights(u_kn, N_k, f_k, u_n):
    """Normalised MBAR log weights of frames in the target ensemble u_n (all kT)."""
    with np.errstate(divide="ignore"):
        log_nk = np.log(N_k.astype(np.float64))
    log_w = -u_n - logsumexp(f_k[None, :] - u_kn.T + log_nk[None, :], axis=1)
    return log_w - logsumexp(log_w)


def _hist_f(x, log_w, edges):
    """-ln(bin probability) per bin (inf where empty), shape = number of bins per axis."""
    idx = [np.digitize(x[:, a], e) - 1 for a, e in enumerate(edges)]
    shape = tuple(e.size - 1 for e in edges)
    inside = np.all([(i >= 0) & (i < s) for i, s in zip(idx, shape)], axis=0)
    flat = np.ravel_multi_index([i[inside] for i in idx], shape)
    f = np.full(int(np.prod(shape)), np.inf)
    lw = log_w[inside]
    order = np.argsort(flat, kind="stable")
    flat, lw = flat[order], lw[order]
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    for s, e in zip(starts, np.r_[starts[1:], flat.size]):
        f[flat[s]] = -logsumexp(lw[s:e])
    return f.reshape(shape)


def _index_space(x, edges):
    """The histogram in bin-index coordinates, for pymbar's FES.

    Every axis gets the same integer edges ``0..M`` (M: the most bins of any axis); a sample inside the
    grid sits at the centre of its bin (index + 0.5, bins by ``np.digitize``: a value on an upper edge
    belongs to the next bin), a sample outside it at -1, which pymbar leaves out of every bin. Returns
    ``(index_x [n, d], index_edges [M + 1], index_mesh [n_occupied, d], occupied [n_bins])``: the query
    points are the occupied bins, in the C order of the grid of ``edges``.
    """
    sizes = np.array([e.size - 1 for e in edges])
    idx = np.stack([np.digitize(x[:, a], e) - 1 for a, e in enumerate(edges)], axis=1)
    inside = np.all((idx >= 0) & (idx < sizes), axis=1)
    index_x = np.where(inside[:, None], idx + 0.5, -1.0)
    grid = np.zeros(tuple(sizes), dtype=bool)
    grid[tuple(idx[inside].T)] = True
    occupied = grid.reshape(-1)
    index_mesh = np.stack(np.unravel_index(np.flatnonzero(occupied), tuple(sizes)), axis=1) + 0.5
    return index_x, np.arange(sizes.max() + 1, dtype=np.float64), index_mesh, occupied


def _kde_f(x, log_w, grid_pts, bandwidth, return_kde=False):
    from scipy.stats import gaussian_kde

    w = np.exp(log_w - log_w.max())
    kde = gaussian_kde(x.T, weights=w / w.sum(), bw_method=bandwidth)
    with np.errstate(divide="ignore"):
        f = -np.log(kde(grid_pts.T))
    return (f, kde) if return_kde else f


def compute_pmf(samples, cv=0, *, bins=40, range=None, method: str = "histogram", uncertainty: str | None = None,
                n_bootstrap: int = 100, seed: int | None = 0, target=None, bandwidth=None,
                equilibrate: bool = True, decorrelate: bool = True, observable=None, unit: str = "kT",
                warn: bool = True) -> FreeEnergy:
    """PMF (kT by default) along one or two CVs, relative to its minimum, with 1σ uncertainties.

    Parameters
    ----------
    samples : SampleSet
        Frames with CV values and ``u_kn`` (kT) of every state; one temperature.
    cv : int or (int, int)
        Index (or two) of the CV column(s); out of range raises InputError.
    bins : int, edge array, or one entry per CV
        Number of equal bins over ``range`` (default: sampled range) or explicit edges.
        The PMF is reported at bin centres; for KDE the bin centres are the evaluation grid.
    range : (lo, hi) or one pair per CV, optional
    method : {"histogram", "kde"}
        ``histogram``: ``pymbar.FES`` histogram. ``kde``: MBAR-weighted Gaussian
        KDE (``bandwidth`` as scipy's ``bw_method``: None = Scott's rule, or a float).
    uncertainty : {"analytical", "bootstrap", None}
        Default: analytical (pymbar's asymptotic covariance) for histograms,
        bootstrap for KDE. Bootstrap resamples decorrelated blocks in each state,
        recomputes MBAR and the PMF ``n_bootstrap`` times with ``seed``; the
        reported σ is the spread of PMF differences to the reference (lowest) bin.
    target : None, int, or [N] array
        Ensemble of the PMF: None = ``samples.u_ref`` (the unbiased state), an
        int = that state, an array = reduced potential of every frame (kT).
    equilibrate, decorrelate, observable :
        As in :func:`~fesurf.estimators.delta_f` (on by default).
    unit : str
        kT, kJ/mol, kcal/mol, eV or meV.

    Returns
    -------
    FreeEnergy
        ``values`` [n] or [nx, ny] with 0 at the minimum and NaN where a bin has
        no samples (no data, not a number to trust); ``grid`` are bin centres;
        ``diagnostics`` hold edges, counts per bin, overlap matrix, Kish ESS.

    Example
    -------
    >>> pmf = compute_pmf(ss, cv=0, bins=30)                 # doctest: +SKIP
    >>> pmf2d = compute_pmf(ss, cv=(0, 1), bins=25)          # doctest: +SKIP
    """
    if method not in ("histogram", "kde"):
        raise InputError(f"method must be 'histogram' or 'kde', got {method!r}")
    if uncertainty is None:
        uncertainty = "analytical" if method == "histogram" else "bootstrap"
    if uncertainty not in ("analytical", "bootstrap", "none"):
        raise InputError(f"uncertainty must be 'analytical', 'bootstrap' or 'none', got {uncertainty!r}")
    if method == "kde" and uncertainty == "analytical":
        raise InputError("KDE PMFs have no analytical uncertainty; use uncertainty='bootstrap'")
    if samples.cv is None:
        raise InputError("the SampleSet stores no CV values; create it with n_cv >= 1")
    cvs = _cv_indices(samples, cv)
    u_target_all = _target(samples, target)
    prep = prepare(samples, equilibrate=equilibrate, decorrelate=decorrelate, observable=observable)
    T = samples.temperature
    cv_all = samples.cv[:, cvs]
    u_all = samples.u_kn
    frames = prep.frames
    x, u_kn, u_n = cv_all[frames], u_all[:, frames], u_target_all[frames]
    edges = _edges(x, bins, range)
    inside = np.all([(x[:, a] >= e[0]) & (x[:, a] <= e[-1]) for a, e in enumerate(edges)], axis=0)
    if not inside.any():
        lims = [(float(e[0]), float(e[-1])) for e in edges]
        have = [(float(x[:, a].min()), float(x[:, a].max())) for a in builtins.range(x.shape[1])] if x.size else []
        raise InputError(f"no frames fall inside the PMF range {lims} (the frames span {have}); widen range= or "
                         "check the CV column")
    centres = [0.5 * (e[1:] + e[:-1]) for e in edges]
    mesh = np.stack([m.reshape(-1) for m in np.meshgrid(*centres, indexing="ij")], axis=1)
    shape = tuple(c.size for c in centres)

    if method == "histogram":
        # pymbar's histogram FES wants edge arrays of one length (np.shape of a ragged list fails) and
        # labels a bin i0 + i1 * n_edges, so it gets the data in bin-index coordinates (_index_space).
        # It knows only the bins that hold samples (a query in an empty one raises KeyError): ask for
        # those, and leave the empty ones NaN.
        index_x, index_edges, index_mesh, occupied = _index_space(x, edges)
        f0 = solved_f_k(u_kn, prep.N_k)
        start = dict(initialize="BAR") if f0 is None else dict(initial_f_k=f0, maximum_iterations=0)
        with pymbar_errors("the MBAR PMF"):
            fes = pymbar.FES(u_kn, prep.N_k, mbar_options=dict(solver_protocol="robust", **start))
            remember_f_k(u_kn, prep.N_k, fes.mbar.f_k)
            fes.generate_fes(u_n, index_x, fes_type="histogram",
                             histogram_parameters={"bin_edges": [index_edges] * len(edges)})
            # pymbar's "from-lowest" may pick the group of samples outside the range as the reference;
            # refer values and σ to the lowest bin inside the grid instead.
            first = fes.get_fes(index_mesh, reference_point="from-lowest", uncertainty_method=None)["f_i"]
            if not np.isfinite(first).any():
                raise InputError("no sample falls inside the PMF range; widen range= or check the CV column")
            ref_point = index_mesh[int(np.nanargmin(first))]
            res = fes.get_fes(index_mesh, reference_point="from-specified",
                              fes_reference=ref_point if len(edges) > 1 else float(ref_point[0]),
                              uncertainty_method="analytical" if uncertainty == "analytical" else None)
        def on_grid(per_occupied_bin):  # NaN in the empty bins
            out = np.full(occupied.size, np.nan)
            out[occupied] = per_occupied_bin
            return out.reshape(shape)

        values = on_grid(res["f_i"])
        sig = None if res.get("df_i") is None else on_grid(res["df_i"])
        mbar = fes.get_mbar()
    else:
        mbar = build_mbar(u_kn, prep.N_k)
        values, kde = _kde_f(x, _log_weights(u_kn, prep.N_k, mbar.f_k, u_n), mesh, bandwidth, return_kde=True)
        values = values.reshape(shape)
        values = values - np.nanmin(values[np.isfinite(values)]) if np.isfinite(values).any() else values
        sig = None

    log_w = _log_weights(u_kn, prep.N_k, mbar.f_k, u_n)
    ess_target = kish_ess(np.exp(log_w))
    diag = overlap_diagnostics(mbar, warn=warn)
    diag.update(prep.info())
    counts = np.histogramdd(x, bins=edges)[0]
    diag.update(bin_edges=edges, counts=counts, kish_ess_target=ess_target, cv_indices=cvs)
    _report_untrusted(samples, cv_all, edges, centres, diag, warn)
    if method == "kde":
        diag["kde_covariance"] = np.atleast_2d(kde.covariance)  # Gaussian kernel covariance, CV units^2
    if warn and ess_target < ESS_THRESHOLD:
        warnings.warn(EffectiveSampleSizeWarning(
            f"Kish effective sample size of the PMF's target ensemble is {ess_target:.1f} "
            f"(< {ESS_THRESHOLD:g}): few frames carry the reweighted PMF"), stacklevel=2)

    ref = np.unravel_index(np.nanargmin(np.where(np.isfinite(values), values, np.nan)), shape)
    if uncertainty == "bootstrap":
        sig = _bootstrap(samples, prep, cv_all, u_all, u_target_all, edges, mesh, shape, ref, method,
                         bandwidth, mbar.f_k, n_bootstrap, seed)
    values = np.where(np.isfinite(values), values, np.nan)
    if sig is not None:
        sig = np.where(np.isfinite(values), sig, np.nan)
    diag.update(uncertainty=uncertainty, reference_index=[int(r) for r in ref])
    names = samples.cv_names
    return FreeEnergy(values, sig, unit="kT", temperature=T, grid=centres, cv_names=[names[c] for c in cvs],
                      method=f"MBAR-{method}", diagnostics=diag).to(unit)


def _report_untrusted(samples, cv_all, edges, centres, diag, warn):
    """Bins holding frames a production guard flagged (committee spread above its trust level)."""
    flags = samples.untrusted_frames() if hasattr(samples, "untrusted_frames") else None
    if flags is None:
        return
    per_bin = np.histogramdd(cv_all[flags], bins=edges)[0] if flags.any() else np.zeros([e.size - 1 for e in edges])
    diag["untrusted_frames_per_bin"] = per_bin
    where = np.nonzero(per_bin > 0)
    diag["untrusted_bins"] = [tuple(float(centres[a][i]) for a, i in enumerate(idx)) for idx in zip(*where)]
    if warn and per_bin.sum() > 0:
        warnings.warn(EstimatorWarning(
            f"{int(per_bin.sum())} frames in {len(diag['untrusted_bins'])} PMF bins were flagged by the production "
            f"guard (committee spread above {samples.attrs['guard']['upper']:g} "
            f"{samples.attrs['guard'].get('unit', '')}); the surrogate is not trusted there: bin centres "
            f"{[round(c[0], 3) if len(c) == 1 else c for c in diag['untrusted_bins']][:20]}"), stacklevel=3)


def _bootstrap(samples, prep, cv_all, u_all, u_target_all, edges, mesh, shape, ref, method, bandwidth,
               f_k, n_bootstrap, seed):
    if int(n_bootstrap) < 2:
        raise InputError(f"n_bootstrap must be >= 2, got {n_bootstrap}")
    rng = np.random.default_rng(seed)
    reps = np.full((int(n_bootstrap),) + shape, np.nan)
    for b in range(int(n_bootstrap)):
        frames, N_k = [], np.zeros(samples.n_states, np.int64)
        for k, blocks in enumerate(prep.blocks):
            if not blocks:
                continue
            pick = rng.integers(0, len(blocks), size=len(blocks))
            chosen = np.concatenate([blocks[p] for p in pick])
            frames.append(chosen)
            N_k[k] = chosen.size
        frames = np.concatenate(frames)
        u_kn = u_all[:, frames]
        mbar = build_mbar(u_kn, N_k, initial_f_k=f_k)
        log_w = _log_weights(u_kn, N_k, mbar.f_k, u_target_all[frames])
        x = cv_all[frames]
        f = _hist_f(x, log_w, edges) if method == "histogram" else _kde_f(x, log_w, mesh, bandwidth).reshape(shape)
        reps[b] = f - f[ref]
    reps[~np.isfinite(reps)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanstd(reps, axis=0, ddof=1)
