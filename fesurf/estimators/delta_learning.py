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
    """
    from .reweight import reweight_pmf

    labelled = np.asarray(labelled, dtype=np.int64)
    du = np.asarray(delta_u, dtype=float)
    T = samples.temperature
    beta_du = du / kT_of(T) if unit_delta_u == "eV" else du
    if features is None:
        if samples.positions is None:
            raise InputError("no stored positions: pass features= [n_frames, d] for delta-learning")
        features = inverse_distance_features(samples.read_positions(np.arange(samples.n_frames)))
    features = np.asarray(features, dtype=float)
    if features.shape[0] != samples.n_frames:
        raise InputError(f"features need one row per frame ({samples.n_frames})")
    model, validation = fit_delta_model(features[labelled], beta_du, holdout_fraction, seed)
    pred = model.predict(features)  # beta dU_model on every frame
    # The model part is a smooth shift of the surrogate's reduced potentials: the reweighted ensemble
    # with target u_ref + beta dU_model is the surrogate corrected by the model, on all frames.
    res = reweight_pmf(samples, labelled, beta_du - pred[labelled], unit_delta_u="kT", target_shift=pred,
                       **reweight_kwargs)
    res.per_bin["model_validation"] = validation
    return res
