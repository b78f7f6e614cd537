"""Delta-learning the surrogate's error and using it as a control variate.

Fit a model of dU = U_ref - U_sur on labelled frames (kernel ridge regression
with a Gaussian kernel on per-frame features; hyperparameters chosen on a
held-out part of the labels and reported), predict dU on every frame, and
correct each CV bin with

    F_ref(b) = F_sur(b) - kT ln <exp(-beta dU_model)>_b (all frames)
                        - kT ln <exp(-beta (dU - dU_model))>_b (labelled frames)

The first term uses every frame (high ESS); the second, on the residuals,
removes whatever the model missed, so the estimate stays unbiased while its
variance drops with the model's accuracy.

Default features: inverse interatomic distances of the stored positions
(invariant to rotation and translation for a fixed atom order).

Example
-------
>>> # res = reweight_pmf_delta(samples, labelled, delta_u_eV, bins=30)
>>> # res.model_validation["rmse_kT"]
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from ..errors import InputError
from ..units import kT as kT_of

log = logging.getLogger(__name__)


def inverse_distance_features(positions) -> np.ndarray:
    """[n_frames, n_pairs] inverse interatomic distances (1/A) from [n_frames, n_atoms, 3]."""
    pos = np.asarray(positions, dtype=float)
    if pos.ndim != 3:
        raise InputError("positions must be [n_frames, n_atoms, 3]")
    n = pos.shape[1]
    if n == 1:
        return pos[:, 0, :]  # a single particle: its coordinates are the only features
    i, j = np.triu_indices(n, 1)
    return 1.0 / np.linalg.norm(pos[:, i] - pos[:, j], axis=2)


@dataclass
class KernelRidge:
    """Gaussian-kernel ridge regression with standardised features and a mean offset."""

    lengthscale: float
    alpha: float
    x_train: np.ndarray = None
    coef: np.ndarray = None
    mean: float = 0.0
    scale: np.ndarray = None
    shift: np.ndarray = None

    def _k(self, a, b):
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return np.exp(-np.maximum(d2, 0.0) / (2 * self.lengthscale**2))

    def fit(self, x, y):
        self.shift, self.scale = x.mean(0), x.std(0) + 1e-12
        self.x_train = (x - self.shift) / self.scale
        self.mean = float(y.mean())
        k = self._k(self.x_train, self.x_train) + self.alpha * np.eye(len(y))
        self.coef = cho_solve(cho_factor(k), y - self.mean)
        return self

    def predict(self, x, chunk: int = 4096):
        xs = (x - self.shift) / self.scale
        return np.concatenate([self._k(xs[i:i + chunk], self.x_train) @ self.coef + self.mean
                               for i in range(0, len(xs), chunk)])


def fit_delta_model(features, beta_du, holdout_fraction: float = 0.2, seed: int = 0):
    """Choose (lengthscale, alpha) on held-out labels, refit on all; return (model, validation dict)."""
    x, y = np.asarray(features, float), np.asarray(beta_du, float)
    if len(y) < 10:
        raise InputError("delta-learning needs at least 10 labelled frames")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    n_val = max(2, int(holdout_fraction * len(y)))
    val, tr = perm[:n_val], perm[n_val:]
    d = x.shape[1]
    best = None
    for ls in np.sqrt(d) * np.array([0.25, 0.5, 1.0, 2.0, 4.0]):
        for alpha in (1e-3, 1e-2, 1e-1, 1.0):
            pred = KernelRidge(ls, alpha).fit(x[tr], y[tr]).predict(x[val])
            rmse = float(np.sqrt(np.mean((pred - y[val]) ** 2)))
            if best is None or rmse < best[0]:
                best = (rmse, ls, alpha)
    rmse, ls, alpha = best
    validation = {"rmse_kT": rmse, "sd_of_labels_kT": float(np.std(y[val])), "n_train": int(tr.size),
                  "n_validation": int(val.size), "lengthscale": float(ls), "alpha": float(alpha)}
    log.info("delta model: held-out RMSE %.3f kT (label sd %.3f kT)", rmse, validation["sd_of_labels_kT"])
    return KernelRidge(ls, alpha).fit(x, y), validation


def reweight_pmf_delta(samples, labelled, delta_u, *, features=None, holdout_fraction: float = 0.2,
                       unit_delta_u: str = "eV", seed: int = 0, **reweight_kwargs):
    """Delta-learned correction of a surrogate PMF (see the module docstring).

    ``features``: [n_frames, d] for every frame of ``samples`` (default:
    inverse distances of the stored positions). Other keyword arguments go
    to :func:`~fesurf.estimators.reweight.reweight_pmf`, which handles the
    residual wTP step and its diagnostics. Returns that function's result
    with ``model_validation`` (held-out RMSE vs the labels' spread, kT) added
    to ``per_bin`` and the surrogate-plus-model correction folded in.

    The model is fitted on the same labels whose residuals are then reweighted, so those residuals
    are in sample (smaller than the held-out RMSE says) and the Kish ESS is that of uniform labels.
    :func:`delta_two_stage` avoids both (model and residual labels apart, residual labels drawn by
    model-corrected weight); prefer it when labels are still to be chosen.
    """
    from .reweight import reweight_pmf

    labelled = np.asarray(labelled, dtype=np.int64)
    du = np.asarray(delta_u, dtype=float)
    beta_du = du / kT_of(samples.temperature) if unit_delta_u == "eV" else du
    features = _frame_features(samples, features)
    model, validation = fit_delta_model(features[labelled], beta_du, holdout_fraction, seed)
    pred = model.predict(features)  # beta dU_model on every frame
    # The model part is a smooth shift of the surrogate's reduced potentials: the reweighted ensemble
    # with target u_ref + beta dU_model is the surrogate corrected by the model, on all frames.
    res = reweight_pmf(samples, labelled, beta_du - pred[labelled], unit_delta_u="kT", target_shift=pred,
                       **reweight_kwargs)
    res.per_bin["model_validation"] = validation
    return res


@dataclass
class TwoStageLabels:
    """Labels of a two-stage delta-learning design (energies in eV, dU = U_ref - U_sur).

    Stage 1 (``model_*``): stratified uniform frames that train the dU model.
    Stage 2 (``residual_*``): frames chosen within each bin with probability
    proportional to their weight in the model-corrected ensemble (exact
    inclusion probabilities in ``residual_inclusion``); their residuals give
    the unbiased per-bin correction. ``failed`` maps frame -> reason;
    ``n_calls`` counts every reference call, failures included.
    """

    model_frames: np.ndarray
    model_delta_u: np.ndarray
    residual_frames: np.ndarray
    residual_delta_u: np.ndarray
    residual_inclusion: np.ndarray
    failed: dict
    n_calls: int


def _frame_features(samples, features):
    if features is None:
        if samples.positions is None:
            raise InputError("no stored positions: pass features= [n_frames, d] for delta-learning")
        features = inverse_distance_features(samples.read_positions(np.arange(samples.n_frames)))
    features = np.asarray(features, dtype=float)
    if features.shape[0] != samples.n_frames:
        raise InputError(f"features need one row per frame ({samples.n_frames})")
    return features


def _stage_model(samples, frames, delta_u_ev, features, holdout_fraction, seed):
    beta_du = np.asarray(delta_u_ev, dtype=float) / kT_of(samples.temperature)
    model, validation = fit_delta_model(features[frames], beta_du, holdout_fraction, seed)
    return model.predict(features), validation


def reweight_two_stage(samples, labels: TwoStageLabels, *, features=None, holdout_fraction: float = 0.2,
                       seed: int = 0, **reweight_kwargs):
    """Corrected PMF from two-stage labels (see :func:`delta_two_stage`); deterministic given the labels.

    The dU model comes from stage 1 only, so the stage-2 residuals are out of sample: the per-bin
    residual wTP (Horvitz–Thompson weights) is unbiased, and their RMS is reported as
    ``per_bin['model_validation']['stage2_residual_rms_kT']``.
    """
    from .reweight import reweight_pmf

    features = _frame_features(samples, features)
    pred, validation = _stage_model(samples, labels.model_frames, labels.model_delta_u, features,
                                    holdout_fraction, seed)
    f2 = np.asarray(labels.residual_frames, dtype=np.int64)
    resid = np.asarray(labels.residual_delta_u, dtype=float) / kT_of(samples.temperature) - pred[f2]
    res = reweight_pmf(samples, f2, resid, unit_delta_u="kT", target_shift=pred,
                       inclusion_probability=labels.residual_inclusion, seed=seed, **reweight_kwargs)
    validation["stage2_residual_rms_kT"] = float(np.sqrt(np.mean(resid ** 2)))
    validation["n_model_labels"] = int(len(labels.model_frames))
    res.per_bin["model_validation"] = validation
    return res


def delta_two_stage(samples, label, n_labels: int, *, model_fraction: float = 0.25, bins=30, range=None,
                    cv: int = 0, features=None, holdout_fraction: float = 0.2, seed: int = 0, **reweight_kwargs):
    """Delta-learning with a two-stage label design; returns ``(ReweightResult, TwoStageLabels)``.

    ``label(frames) -> (delta_u_eV, ok, reasons)`` computes reference labels
    (as for :func:`~fesurf.estimators.reweight.adaptive_reweight`). Stage 1
    labels ``model_fraction * n_labels`` stratified frames and fits the dU
    model; stage 2 spends the rest within each CV bin with probability
    proportional to each frame's weight in the model-corrected ensemble, so
    the residual reweighting keeps a Kish ESS close to the number of labels
    even where dU varies by several kT across a bin (plain uniform labels
    then carry very unequal weights and the bins get flagged).

    >>> # res, labels = delta_two_stage(samples, label, 500, bins=20, range=(-0.8, 0.8))
    >>> # res.barrier().to("kcal/mol").activation
    """
    from .reweight import choose_frames, frame_log_weights

    n_labels = int(n_labels)
    if not 0 < model_fraction < 1:
        raise InputError("model_fraction must lie in (0, 1)")
    n1 = max(10, int(round(model_fraction * n_labels)))
    if n_labels - n1 < 1:
        raise InputError(f"n_labels={n_labels} leaves no stage-2 labels; use at least {n1 + 1}")
    features = _frame_features(samples, features)
    failed = {}

    def run(frames):
        du, ok, reasons = label(frames)
        du, ok = np.asarray(du, dtype=float), np.asarray(ok, dtype=bool)
        failed.update({int(f): str(w) for f, good, w in zip(frames, ok, reasons) if not good})
        return frames[ok], du[ok]

    f1, _ = choose_frames(samples, n1, cv=cv, bins=bins, range=range, seed=seed)
    f1, du1 = run(np.sort(f1))
    pred, _ = _stage_model(samples, f1, du1, features, holdout_fraction, seed)
    log_size, _ = frame_log_weights(samples, target=samples.u_ref + pred)
    f2, pi2 = choose_frames(samples, n_labels - n1, cv=cv, bins=bins, range=range, exclude=f1, seed=seed + 1,
                            frame_log_size=log_size)
    order = np.argsort(f2)
    f2, pi2 = f2[order], pi2[order]
    n_calls = int(f1.size + len(failed) + f2.size)
    pi_of = dict(zip(f2.tolist(), pi2.tolist()))
    f2, du2 = run(f2)
    labels = TwoStageLabels(f1, du1, f2, du2, np.array([pi_of[int(f)] for f in f2]), failed, n_calls)
    res = reweight_two_stage(samples, labels, features=features, holdout_fraction=holdout_fraction, seed=seed,
                             cv=cv, bins=bins, range=range, **reweight_kwargs)
    return res, labels
