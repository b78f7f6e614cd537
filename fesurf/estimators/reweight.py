"""Reweighting a surrogate's free energies to the reference (QM) from sparse labels.

The surrogate samples; the reference energy is known on a subset L of frames.
Weighted thermodynamic perturbation (wTP: Li, Jia, Pan, Shao, Mei, JCTC 2018;
gwTP: Giese, Zeng, York, JPCA 2022) corrects each CV bin b of the surrogate's
PMF with

    F_ref(b) = F_sur(b) - kT ln( sum_{n in L_b} v_n exp(-beta dU_n) / sum_{n in L_b} v_n )

where dU_n = U_ref(x_n) - U_sur(x_n) and v_n = w_n / pi_n: w_n is the MBAR
weight of frame n in the surrogate's unbiased ensemble, and pi_n the
probability that frame n was chosen for labelling (Horvitz–Thompson; uniform
choice within a bin needs no correction). The second-order cumulant
F_sur + <beta dU> - Var(beta dU)/2 (unbiased for Gaussian dU) is reported
beside it.

Per bin the result carries the number of labels, the Kish effective sample
size of the exponential weights, and sigma(beta dU). Exponential averaging
fails quietly when overlap is poor (Kish fraction exp(-(beta sigma)^2)), so bins
with ESS below ``min_ess`` or beta sigma above ``max_beta_sigma`` are flagged,
warned about, and set to NaN in the corrected PMF: never silently reported.

Example
-------
>>> # res = reweight_pmf(samples, labelled, delta_u_eV, cv=0, bins=30)
>>> # res.corrected.values, res.per_bin["kish_ess"], res.flagged
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

from ..errors import InputError
from ..units import convert, kT as kT_of
from .diagnostics import EstimatorWarning, build_mbar, kish_ess, prepare
from .free_energy import FreeEnergy
from .pmf import compute_pmf

log = logging.getLogger(__name__)

#: default flags: a bin needs at least this Kish ESS of its exponential weights ...
MIN_ESS = 5.0
#: ... and beta * sigma(dU) at most this (Kish fraction exp(-9) ~ 1e-4 beyond it).
MAX_BETA_SIGMA = 3.0


class PoorOverlapWarning(EstimatorWarning):
    """Some bins cannot be reweighted to the reference reliably (flagged, set to NaN)."""


def frame_log_weights(samples, target=None, equilibrate: bool = True, decorrelate: bool = True):
    """Normalised MBAR log weights of *every* frame of ``samples`` in a target ensemble.

    MBAR (f_k) is solved on the decorrelated frames; the weight formula
    w_n ∝ exp(-u_target(x_n)) / sum_k N_k exp(f_k - u_k(x_n)) then applies to
    any frame drawn from the same mixture, including labelled frames that the
    decorrelation dropped. ``target``: None = the SampleSet's ``u_ref``
    (unbiased state), an int state, or an [N] reduced potential (kT).
    """
    prep = prepare(samples, equilibrate=equilibrate, decorrelate=decorrelate)
    mbar = build_mbar(samples.u_kn[:, prep.frames], prep.N_k)
    if target is None:
        if samples.u_ref is None:
            raise InputError("the SampleSet has no u_ref (unbiased reduced potential); pass target=")
        u_t = samples.u_ref
    elif isinstance(target, (int, np.integer)):
        u_t = samples.u_kn[int(target)]
    else:
        u_t = np.asarray(target, dtype=float)
    with np.errstate(divide="ignore"):
        log_nk = np.log(prep.N_k.astype(float))
    log_w = -u_t - logsumexp(mbar.f_k[None, :] - samples.u_kn.T + log_nk[None, :], axis=1)
    # frames before equilibration are outside the stationary mixture: weight zero
    keep = np.zeros(samples.n_frames, bool)
    si = samples.state_index
    for k in range(samples.n_states):
        idx = np.where(si == k)[0]
        keep[idx[int(prep.t0_k[k]):]] = True
    log_w = np.where(keep, log_w, -np.inf)
    return log_w - logsumexp(log_w[keep]), prep


def exp_correction(log_v, beta_du):
    """-ln( sum v exp(-x) / sum v ) for log-weights ``log_v`` and x = beta dU (kT).

    Returns (wTP correction, cumulant correction, Kish ESS, weighted sigma of x).
    """
    log_v = np.asarray(log_v, float)
    x = np.asarray(beta_du, float)
    lv = log_v - logsumexp(log_v)
    wtp = -logsumexp(lv - x)
    p = np.exp(lv)
    mean = float(np.sum(p * x))
    var = float(np.sum(p * (x - mean) ** 2))
    n_eff = kish_ess(np.exp(lv - x - np.max(lv - x)))
    return float(wtp), mean - 0.5 * var, n_eff, float(np.sqrt(var))


@dataclass
class ReweightResult:
    """Surrogate and reference PMFs with per-bin diagnostics (all in ``unit``)."""

    surrogate: FreeEnergy
    corrected: FreeEnergy  # wTP, flagged bins NaN
    cumulant: FreeEnergy  # second-order cumulant, flagged bins NaN
    per_bin: dict  # n_labels, kish_ess, beta_sigma, mean_beta_du, correction_wtp, ci_low, ci_high
    flagged: np.ndarray  # bool per bin
    n_labels: int
    corrected_samples: np.ndarray = field(repr=False)  # bootstrap realisations [n_boot, n_bins] (unit)

    def summary(self) -> str:
        rows = [f"{'bin centre':>11}{'labels':>7}{'ESS':>8}{'beta*sigma':>11}{'F_sur':>9}{'F_ref':>9}  flag"]
        grid = self.surrogate.grid[0]
        for b in range(grid.size):
            pb = self.per_bin
            rows.append(f"{grid[b]:11.3f}{pb['n_labels'][b]:7d}{pb['kish_ess'][b]:8.1f}{pb['beta_sigma'][b]:11.2f}"
                        f"{self.surrogate.values[b]:9.3f}{self.corrected.values[b]:9.3f}  "
                        f"{'POOR OVERLAP' if self.flagged[b] else ''}")
        return "\n".join(rows)

    def barrier(self, **kwargs):
        """Corrected barrier (:func:`fesurf.analysis.barrier`) with sigma from the label bootstrap
        combined in quadrature with the surrogate PMF's own statistical sigma."""
        from ..analysis.barriers import barrier

        sur = barrier(self.surrogate, **kwargs)
        boot = barrier(self.corrected, pmf_samples=self.corrected_samples, **kwargs)
        for name in ("reaction", "activation", "reverse_activation"):
            fe = getattr(boot, name)
            s_err = getattr(sur, name).error or 0.0
            fe.uncertainties = np.asarray(np.hypot(fe.error or 0.0, s_err))
        return boot


def _bin_index(x, edges):
    idx = np.digitize(x, edges) - 1
    idx[(x == edges[-1])] = edges.size - 2
    return np.where((idx >= 0) & (idx < edges.size - 1), idx, -1)


def reweight_pmf(samples, labelled, delta_u, *, cv: int = 0, bins=30, range=None, unit_delta_u: str = "eV",
                 inclusion_probability=None, min_ess: float = MIN_ESS, max_beta_sigma: float = MAX_BETA_SIGMA,
                 min_labels: int = 3, n_bootstrap: int = 200, seed: int = 0, unit: str = "kT",
                 equilibrate: bool = True, decorrelate: bool = True, warn: bool = True,
                 target_shift=None) -> ReweightResult:
    """Correct a surrogate umbrella/MBAR PMF to the reference with labels on a subset of frames.

    Parameters
    ----------
    samples : SampleSet
        From a surrogate run, with CV values, ``u_kn`` and ``u_ref``.
    labelled : [L] int
        SampleSet frame indices that have reference energies.
    delta_u : [L] float
        U_ref - U_sur on those frames, in ``unit_delta_u`` (eV by default, or kT).
        Failed labels must be left out (never passed as 0 or NaN).
    inclusion_probability : [L] float, optional
        Probability each labelled frame had of being chosen (from
        :func:`choose_frames`); default uniform within each bin.
    min_ess, max_beta_sigma, min_labels
        Flags: a bin is flagged when its Kish ESS < min_ess, beta sigma(dU) >
        max_beta_sigma, or it has fewer than ``min_labels`` labels.
    n_bootstrap, seed
        Bootstrap of the labels within each bin for confidence intervals.
    target_shift : [N] float, optional
        Reduced energy (kT) added to every frame's unbiased potential before
        reweighting (a delta-learned model of dU; then ``delta_u`` are the
        model's residuals and ``surrogate`` is the surrogate-plus-model PMF).
    """
    labelled = np.asarray(labelled, dtype=np.int64)
    du = np.asarray(delta_u, dtype=float)
    if labelled.ndim != 1 or du.shape != labelled.shape:
        raise InputError(f"labelled ({labelled.shape}) and delta_u ({du.shape}) must be 1D of equal length")
    if labelled.size == 0:
        raise InputError("no labelled frames: label some frames with the reference first")
    if not np.isfinite(du).all():
        raise InputError("delta_u contains NaN/inf: leave failed reference calculations out of the labels")
    if (labelled < 0).any() or (labelled >= samples.n_frames).any():
        raise InputError(f"labelled frame indices must lie in 0..{samples.n_frames - 1}")
    if len(np.unique(labelled)) != labelled.size:
        raise InputError("labelled frames contain duplicates")
    T = samples.temperature
    beta_du = du / kT_of(T) if unit_delta_u == "eV" else (du if unit_delta_u == "kT" else None)
    if beta_du is None:
        raise InputError("unit_delta_u must be 'eV' or 'kT'")

    target = None
    if target_shift is not None:
        if samples.u_ref is None:
            raise InputError("target_shift needs the SampleSet's u_ref (unbiased reduced potential)")
        target = samples.u_ref + np.asarray(target_shift, dtype=float)
    surrogate = compute_pmf(samples, cv=cv, bins=bins, range=range, equilibrate=equilibrate,
                            decorrelate=decorrelate, warn=warn, target=target)
    edges = np.asarray(surrogate.diagnostics["bin_edges"][0])
    n_bins = edges.size - 1
    log_w, _ = frame_log_weights(samples, target=target, equilibrate=equilibrate, decorrelate=decorrelate)
    x = samples.cv[:, cv]
    bin_of_label = _bin_index(x[labelled], edges)
    if inclusion_probability is None:
        pi = np.ones(labelled.size)
    else:
        pi = np.asarray(inclusion_probability, dtype=float)
        if pi.shape != labelled.shape or (pi <= 0).any() or (pi > 1).any():
            raise InputError("inclusion_probability must be one value in (0, 1] per labelled frame")
    log_v = log_w[labelled] - np.log(pi)

    rng = np.random.default_rng(seed)
    n_lab = np.zeros(n_bins, np.int64)
    ess, bsig, mean_x = np.zeros(n_bins), np.full(n_bins, np.nan), np.full(n_bins, np.nan)
    corr_wtp, corr_cum = np.full(n_bins, np.nan), np.full(n_bins, np.nan)
    boot = np.full((n_bootstrap, n_bins), np.nan)
    for b in np.arange(n_bins):
        sel = np.where((bin_of_label == b) & np.isfinite(log_v))[0]
        n_lab[b] = sel.size
        if sel.size == 0:
            continue
        c_wtp, c_cum, n_eff, sig = exp_correction(log_v[sel], beta_du[sel])
        corr_wtp[b], corr_cum[b], ess[b], bsig[b] = c_wtp, c_cum, n_eff, sig
        mean_x[b] = float(np.average(beta_du[sel], weights=np.exp(log_v[sel] - log_v[sel].max())))
        for r in np.arange(n_bootstrap):
            pick = sel[rng.integers(0, sel.size, sel.size)]
            boot[r, b] = exp_correction(log_v[pick], beta_du[pick])[0]

    has_data = np.isfinite(surrogate.to("kT").values)
    flagged = has_data & ((n_lab < min_labels) | (ess < min_ess) | ~(bsig <= max_beta_sigma))
    if warn and flagged.any():
        centres = surrogate.grid[0][flagged]
        warnings.warn(PoorOverlapWarning(
            f"{int(flagged.sum())} of {int(has_data.sum())} bins cannot be corrected reliably (fewer than "
            f"{min_labels} labels, Kish ESS < {min_ess:g}, or beta*sigma(dU) > {max_beta_sigma:g}); they are NaN "
            f"in the corrected PMF. Bin centres: {np.round(centres, 3).tolist()}; beta*sigma there: "
            f"{np.round(bsig[flagged], 2).tolist()}. Label more frames there, or switch to nonequilibrium "
            "switching / a delta-learned correction when beta*sigma > 3."), stacklevel=2)

    f_sur = surrogate.to("kT")
    sig_sur = f_sur.uncertainties if f_sur.uncertainties is not None else np.zeros(n_bins)

    def corrected_profile(corr):
        vals = np.where(flagged | ~np.isfinite(corr), np.nan, f_sur.values + corr)
        ref = np.nanmin(vals) if np.isfinite(vals).any() else 0.0
        return vals - ref

    vals_wtp = corrected_profile(corr_wtp)
    vals_cum = corrected_profile(corr_cum)
    boot_vals = f_sur.values[None, :] + boot
    boot_vals = np.where(flagged[None, :], np.nan, boot_vals)
    finite_rows = np.isfinite(boot_vals).any(axis=1)
    row_min = np.nanmin(np.where(finite_rows[:, None], boot_vals, 0.0), axis=1, keepdims=True)
    boot_vals = boot_vals - row_min
    sig_boot = np.nanstd(boot, axis=0, ddof=1) if n_bootstrap > 1 else np.zeros(n_bins)
    sig_tot = np.where(np.isfinite(vals_wtp), np.hypot(np.nan_to_num(sig_boot), np.nan_to_num(sig_sur)), np.nan)
    lo, hi = (np.nanpercentile(boot, q, axis=0) if n_bootstrap > 1 else np.full(n_bins, np.nan) for q in (2.5, 97.5))
    per_bin = dict(n_labels=n_lab, kish_ess=ess, beta_sigma=bsig, mean_beta_du=mean_x, correction_wtp=corr_wtp,
                   correction_cumulant=corr_cum, correction_ci95_low=lo, correction_ci95_high=hi,
                   correction_sigma=sig_boot,
                   untrusted_frames=surrogate.diagnostics.get("untrusted_frames_per_bin"))
    diag = dict(surrogate.diagnostics, reweighting=dict(per_bin, flagged=flagged, min_ess=min_ess,
                                                        max_beta_sigma=max_beta_sigma, n_labels_total=labelled.size))

    def fe(vals, sig, method):
        return FreeEnergy(vals, sig, unit="kT", temperature=T, grid=surrogate.grid, cv_names=surrogate.cv_names,
                          method=method, diagnostics=diag).to(unit)

    factor = convert(1.0, "kT", unit, temperature=T)
    return ReweightResult(
        surrogate=f_sur.to(unit),
        corrected=fe(vals_wtp, sig_tot, "wTP (MBAR weights x exp(-beta dU))"),
        cumulant=fe(vals_cum, sig_tot, "second-order cumulant"),
        per_bin=per_bin, flagged=flagged, n_labels=int(labelled.size),
        corrected_samples=boot_vals * factor,
    )


def _pps_inclusion(log_size, q):
    """Inclusion probabilities proportional to size, summing to ``q``, capped at 1 (the cap's excess
    goes to the others)."""
    pi = np.zeros(log_size.size)
    free = np.isfinite(log_size)
    left = float(min(q, free.sum()))
    while left > 0 and free.any():
        s = np.exp(log_size[free] - log_size[free].max())
        share = left * s / s.sum()
        cap = share >= 1.0
        if not cap.any():
            pi[free] = share
            break
        idx = np.where(free)[0][cap]
        pi[idx] = 1.0
        free[idx] = False
        left -= idx.size
    return pi


def _systematic_pps(pi, rng):
    """Randomised systematic sampling: indices of exactly sum(pi) items (an integer), item i included
    with probability exactly pi[i] (each pi <= 1, so no item twice)."""
    perm = rng.permutation(pi.size)
    cum = np.concatenate([[0.0], np.cumsum(pi[perm])])
    points = rng.random() + np.arange(int(round(cum[-1])))
    return perm[np.clip(np.searchsorted(cum, points, side="right") - 1, 0, pi.size - 1)]


def choose_frames(samples, n_labels: int, *, cv: int = 0, bins=30, range=None, exclude=(), seed: int = 0,
                  decorrelate: bool = False, bin_weights=None, frame_log_size=None, allow_fewer: bool = False):
    """Stratified random choice of frames to label: spread evenly over CV bins, uniform within each.

    Candidates are the equilibrated frames (``pymbar.timeseries`` detection), all of them by default:
    the labels' infinite-budget limit is then the full-sample estimate. ``decorrelate=True`` keeps
    only every g-th frame, which saves nothing when labels are few and adds the noise of the thinned
    pool, which a label bootstrap cannot see (dU may decorrelate more slowly than the bias energy).
    Returns ``(frames, inclusion_probability)``; pass both to :func:`reweight_pmf`
    (uniform choice within a bin makes the per-bin estimate unbiased; the
    probabilities matter only when bins are pooled, as in ΔA between states).
    ``bin_weights`` (one per bin) shares the labels out unevenly, e.g. to the
    bins whose correction is least certain (adaptive labelling).
    ``frame_log_size`` ([n_frames] log sizes, e.g. the target ensemble's log
    weights): within each bin, randomised systematic sampling with inclusion
    probability proportional to size (PPS, capped at 1), so labelled frames
    carry near-equal weights in that ensemble; the count per bin is the quota
    and the returned probabilities are exact (Horvitz–Thompson).
    Asking for more labels than there are candidate frames inside the bins is an InputError, unless
    ``allow_fewer`` (then every candidate is taken).
    """
    if isinstance(n_labels, bool) or not isinstance(n_labels, (int, np.integer)) or int(n_labels) < 1:
        raise InputError(f"n_labels must be a whole number >= 1, got {n_labels!r}")
    prep = prepare(samples, decorrelate=decorrelate)
    cand = np.setdiff1d(prep.frames, np.asarray(exclude, dtype=np.int64))
    if cand.size == 0:
        raise InputError("no candidate frames left to label")
    x = samples.cv[cand, cv]
    lo, hi = (x.min(), x.max()) if range is None else range
    edges = np.linspace(lo, hi, int(bins) + 1) if np.isscalar(bins) else np.asarray(bins, float)
    b = _bin_index(x, edges)
    rng = np.random.default_rng(seed)
    groups = [cand[b == k] for k in np.arange(edges.size - 1)]
    sizes = np.array([g.size for g in groups])
    want = np.ones(len(groups)) if bin_weights is None else np.clip(np.asarray(bin_weights, float), 0, None)
    if want.shape != sizes.shape or not np.isfinite(want).all():
        raise InputError(f"bin_weights must hold {sizes.size} finite values, one per bin")
    want = np.where(sizes > 0, want, 0.0)
    if int(n_labels) > int(sizes.sum()) and not allow_fewer:
        raise InputError(f"asked for {int(n_labels)} labels but only {int(sizes.sum())} frames (equilibrated, inside "
                         f"the bins{', not excluded' if len(exclude) else ''}) are candidates; ask for fewer labels, "
                         "widen range= or sample longer")
    quota = np.zeros(len(groups), np.int64)
    remaining = min(int(n_labels), int(sizes.sum()))
    while remaining > 0:  # hand labels out by weight, never more than a bin's candidates
        room = (quota < sizes) & (want > 0)
        if not room.any():
            room = quota < sizes
            want = np.where(room, 1.0, 0.0)
        share = np.floor(remaining * want * room / (want * room).sum()).astype(np.int64)
        if share.sum() == 0:
            share[np.argmax(np.where(room, want, -1))] = 1
        share = np.minimum(share, sizes - quota)
        quota += share
        remaining -= int(share.sum())
    frames, probs = [], []
    if frame_log_size is not None:
        frame_log_size = np.asarray(frame_log_size, dtype=float)
        if frame_log_size.shape != (samples.n_frames,):
            raise InputError(f"frame_log_size needs one value per frame ({samples.n_frames})")
    for g, q in zip(groups, quota):
        if not q:
            continue
        if frame_log_size is None:
            frames.append(rng.choice(g, size=q, replace=False))
            probs.append(np.full(q, q / g.size))
        else:
            pi = _pps_inclusion(frame_log_size[g], q)
            take = _systematic_pps(pi, rng)
            frames.append(g[take])
            probs.append(pi[take])
    if not any(f.size for f in frames):
        raise InputError("no frame was chosen; raise n_labels")
    return np.concatenate(frames), np.concatenate(probs)


@dataclass
class AdaptiveResult:
    """What :func:`adaptive_reweight` did: the final result, the labels, and the round history."""

    result: ReweightResult
    labelled: np.ndarray
    delta_u: np.ndarray
    failed: dict  # frame -> reason
    history: list  # per round: n_labels, activation, activation_sigma
    converged: bool


def adaptive_reweight(samples, label, *, target_sigma: float, budget: int, initial: int = 50, per_round: int = 50,
                      bins=30, range=None, cv: int = 0, seed: int = 0, barrier_kwargs=None, reweight=None,
                      **reweight_kwargs):
    """Label in rounds until the corrected barrier's 1σ (kT) is below ``target_sigma`` or ``budget`` is spent.

    ``label(frames) -> (delta_u_eV, ok, reasons)`` labels SampleSet frames with
    the reference (typically an oracle run through its executor; see
    ``fesurf.oracles``): ``delta_u_eV`` [n] floats, ``ok`` [n] bools,
    ``reasons`` [n] strings for failures. Failed frames count against the
    budget, are recorded, and never enter the estimate. Each new round puts
    labels where the bootstrap sigma of the bin correction is largest.
    ``reweight`` is the estimator (default :func:`reweight_pmf`; or
    :func:`~fesurf.estimators.delta_learning.reweight_pmf_delta`), called with
    ``reweight_kwargs``.
    """
    reweight = reweight_pmf if reweight is None else reweight
    if budget < initial:
        raise InputError("budget must be at least the initial number of labels")
    barrier_kwargs = dict(barrier_kwargs or {})
    labelled, du, failed, history = [], [], {}, []
    tried = np.zeros(0, np.int64)
    weights, result, converged = None, None, False
    rnd = 0
    while tried.size < budget:
        n_new = min(initial if rnd == 0 else per_round, budget - tried.size)
        frames, _ = choose_frames(samples, n_new, cv=cv, bins=bins, range=range, exclude=tried,
                                  seed=seed + rnd, bin_weights=weights, allow_fewer=True)
        values, ok, reasons = label(frames)
        values, ok = np.asarray(values, float), np.asarray(ok, bool)
        for f, good, why in zip(frames, ok, reasons):
            if not good:
                failed[int(f)] = str(why)
        labelled.extend(frames[ok].tolist())
        du.extend(values[ok].tolist())
        tried = np.concatenate([tried, frames])
        rnd += 1
        result = reweight(samples, np.array(labelled), np.array(du), cv=cv, bins=bins, range=range,
                          seed=seed, warn=False, **reweight_kwargs)
        try:
            b = result.barrier(**barrier_kwargs).to("kT")
            sigma = b.activation.error
            history.append({"n_labels": len(labelled), "n_failed": len(failed),
                            "activation_kT": b.activation.value, "activation_sigma_kT": sigma})
        except InputError as exc:  # flagged bins can leave no barrier yet: keep labelling
            sigma = np.inf
            history.append({"n_labels": len(labelled), "n_failed": len(failed), "note": str(exc)})
        log.info("adaptive round %d: %d labels, barrier sigma %.3f kT", rnd, len(labelled), sigma)
        if sigma <= target_sigma:
            converged = True
            break
        cs = np.nan_to_num(result.per_bin["correction_sigma"], nan=1.0)
        weights = np.where(result.per_bin["n_labels"] < 3, cs.max() + 1.0, cs) + 1e-3
    final = reweight(samples, np.array(labelled), np.array(du), cv=cv, bins=bins, range=range, seed=seed,
                     **reweight_kwargs)
    return AdaptiveResult(final, np.array(labelled), np.array(du), failed, history, converged)
