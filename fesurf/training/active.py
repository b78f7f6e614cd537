"""On-the-fly active learning: a committee surrogate for a new system from a few thousand reference calls.

The loop, in the style of FLARE, DP-GEN and i-PI's committee models, with every step batched:

SEED     a finite-difference Hessian at the start structure (its 6N displaced frames are labels),
         classical normal-mode samples from it, and a restrained steepest-descent relaxation of the
         oracle towards several CV targets at once, each step a label (:mod:`~fesurf.training.seeding`);
         a few hundred reference calls.
EXPLORE  Langevin MD with the surrogate under the production bias: every umbrella window, several
         walkers per window, all of them replicas of one State (one batched model call per step);
         every ``check_every`` steps the committee's calibrated spreads are read in one call.
SELECT   frames whose calibrated maximum atomic force deviation lies in ``(lower, upper]``
         (DP-GEN's trust levels, eV/A), shared out over the CV bins by uncertainty and diverse in
         descriptor space (farthest-point sampling from the most uncertain one), at most
         ``per_round`` a round, the last trusted frames before a walker crossed ``upper`` first;
         or, to compare, a uniform random draw of explored frames (``strategy="random"``).
GUARD    a walker whose deviation exceeds ``upper`` is restarted from its last trusted frame with
         fresh Maxwell-Boltzmann velocities; the untrusted frame is never data.
LABEL    through ``oracle.label(frames, executor=..., cache=...)``; a small uniform random slice of
         the explored frames is labelled too and kept out of training, as validation and for the
         calibration of the spreads (committees are over-confident until calibrated).
RETRAIN  warm-started from the current weights, a fixed number of epochs
         (:class:`~fesurf.training.refit.CommitteeRefitter`); never a wall-clock budget.
STOP     when, in every CV bin of the production range, the calibrated energy spread predicts
         ``beta * sigma(dU) <= max_beta_sigma`` (RMS of the calibrated energy spreads of the bin's
         explored frames, in kT) and the rate of candidate plus untrusted frames is below
         ``max_candidate_fraction``; or when the reference budget is spent; or, if asked, when the
         sparse-reference correction to the barrier and its 2-sigma interval lie within
         ``free_energy_tolerance`` (kT).

Every reference call is counted where it is made (one configuration labelled = one call, whether
computed now or, after a kill, found in the loop's label cache), by purpose and per round, failed
ones included: :attr:`ActiveLearningResult.calls`. With ``workdir`` the loop checkpoints after
every round (model, labels, walkers, counts); rerunning the same call resumes after the last
completed round, and the label cache returns what the interrupted round had already computed.

Units: energies eV, forces eV/A, lengths Angstrom, temperature K, time fs, kappa eV per CV unit^2.

Example
-------
>>> # from fesurf.training.active import ActiveLearningSettings, ProductionBias, active_learning
>>> # bias = ProductionBias(cv, centers=np.linspace(-0.9, 0.9, 16), kappa=3.0, temperature=300.0,
>>> #                       pmf_range=(-0.8, 0.8), pmf_bins=30)
>>> # result = active_learning(XTBOracle(), atoms, bias, ActiveLearningSettings(), workdir="al")
>>> # result.calls["total"], result.converged, result.model
>>> TrustLevels(lower=0.05, upper=0.15).upper
0.15
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from ase import Atoms

from ..errors import InputError, OracleError, SimulationError
from ..state import State
from ..units import KB, MV2_TO_EV
from . import seeding
from .data import Dataset
from .refit import CommitteeRefitter, RefitSettings

log = logging.getLogger(__name__)

__all__ = ["TrustLevels", "ProductionBias", "SeedSettings", "ExploreSettings", "SelectSettings", "StopSettings",
           "ActiveLearningSettings", "Calibration", "committee_spread", "attach_calibration", "ProductionGuard",
           "farthest_point_sampling", "ReferenceCalls", "ActiveLearningResult", "active_learning", "default_committee"]


def _number(value, name, unit, low=None, low_open=True, high=None, integer=False):
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok and integer:
        ok = float(value) == int(value)
    if ok:
        v = float(value)
        ok = math.isfinite(v) and (low is None or (v > low if low_open else v >= low)) and (high is None or v <= high)
    if not ok:
        rng = "" if low is None else (f" > {low:g}" if low_open else f" >= {low:g}")
        rng += "" if high is None else f" and <= {high:g}"
        kind = "a whole number" if integer else "a number"
        raise InputError(f"{name} must be {kind}{rng}{f' ({unit})' if unit else ''}, got {value!r}")
    return int(value) if integer else float(value)


# ---------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class TrustLevels:
    """DP-GEN trust levels on the calibrated maximum atomic force deviation, eV/A.

    Frames with deviation in ``(lower, upper]`` are candidates for labels; above ``upper`` the
    surrogate is not trusted (walkers restart, frames are never data; in production, frames are
    flagged). DP-GEN's usual window for small molecules is 0.05-0.15 (up to 0.25) eV/A uncalibrated.
    """

    lower: float = 0.10
    upper: float = 0.35

    def __post_init__(self):
        lo = _number(self.lower, "TrustLevels.lower", "eV/A", low=0)
        hi = _number(self.upper, "TrustLevels.upper", "eV/A", low=0)
        if not lo < hi:
            raise InputError(f"TrustLevels needs lower < upper (eV/A), got lower={lo:g}, upper={hi:g}")


@dataclass(frozen=True)
class ProductionBias:
    """The production umbrella bias the loop explores under (the windows of the sampling to come).

    cv : the CV (a fesurf CV or its spec dict); centers : window centres (CV units);
    kappa : restraint force constant (eV per CV unit^2, ``0.5 kappa (s - s0)^2``);
    temperature : K; pmf_range : (lo, hi) of the PMF (default: the centres' range);
    pmf_bins : PMF bins, the bins of the stopping criterion.
    """

    cv: Any
    centers: tuple
    kappa: float
    temperature: float
    pmf_range: Optional[tuple] = None
    pmf_bins: int = 30

    def __post_init__(self):
        from ..cv import as_cv_list

        cvs = as_cv_list(self.cv)
        if len(cvs) != 1:
            raise InputError("ProductionBias takes one CV (the loop's stopping bins are along one CV)")
        object.__setattr__(self, "cv", cvs[0])
        try:
            centers = tuple(float(c) for c in np.asarray(self.centers, dtype=float).reshape(-1))
        except (TypeError, ValueError):
            raise InputError(f"ProductionBias.centers must be numbers (CV units), got {self.centers!r}") from None
        if len(centers) < 1 or not all(math.isfinite(c) for c in centers):
            raise InputError("ProductionBias.centers must be at least one finite window centre (CV units)")
        object.__setattr__(self, "centers", centers)
        _number(self.kappa, "ProductionBias.kappa", "eV per CV unit^2", low=0)
        _number(self.temperature, "ProductionBias.temperature", "K", low=0)
        _number(self.pmf_bins, "ProductionBias.pmf_bins", None, low=1, integer=True)
        rng = self.pmf_range if self.pmf_range is not None else (min(centers), max(centers))
        rng = tuple(float(r) for r in rng)
        if len(rng) != 2 or not rng[0] < rng[1]:
            raise InputError(f"ProductionBias.pmf_range must be (lo, hi) with lo < hi (CV units), got {self.pmf_range!r}")
        object.__setattr__(self, "pmf_range", rng)

    @property
    def kT(self) -> float:
        """eV."""
        return KB * float(self.temperature)

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.pmf_range[0], self.pmf_range[1], int(self.pmf_bins) + 1)

    def to_dict(self) -> dict:
        return {"cv": self.cv.to_spec(), "centers": list(self.centers), "kappa": float(self.kappa),
                "temperature": float(self.temperature), "pmf_range": list(self.pmf_range),
                "pmf_bins": int(self.pmf_bins)}


@dataclass(frozen=True)
class SeedSettings:
    """Seed data (all labels). hessian_step : Angstrom; normal_modes : frames;
    normal_mode_temperature : K (default: the production temperature); scan_points : restrained
    relaxations along the CV (targets spread over the window centres); scan_steps : oracle steps each;
    scan_kappa : eV per CV unit^2 (default 4x the production kappa); scan_max_step : Angstrom per step;
    validation_fraction : share of the seed labels held out (validation, calibration)."""

    hessian_step: float = 0.01
    normal_modes: int = 64
    normal_mode_temperature: Optional[float] = None
    scan_points: int = 8
    scan_steps: int = 10
    scan_kappa: Optional[float] = None
    scan_max_step: float = 0.1
    validation_fraction: float = 0.1

    def __post_init__(self):
        _number(self.hessian_step, "SeedSettings.hessian_step", "A", low=0)
        _number(self.normal_modes, "SeedSettings.normal_modes", None, low=0, low_open=False, integer=True)
        if self.normal_mode_temperature is not None:
            _number(self.normal_mode_temperature, "SeedSettings.normal_mode_temperature", "K", low=0)
        _number(self.scan_points, "SeedSettings.scan_points", None, low=0, low_open=False, integer=True)
        _number(self.scan_steps, "SeedSettings.scan_steps", None, low=0, low_open=False, integer=True)
        if self.scan_kappa is not None:
            _number(self.scan_kappa, "SeedSettings.scan_kappa", "eV per CV unit^2", low=0)
        _number(self.scan_max_step, "SeedSettings.scan_max_step", "A", low=0)
        _number(self.validation_fraction, "SeedSettings.validation_fraction", None, low=0, low_open=False, high=0.5)


@dataclass(frozen=True)
class ExploreSettings:
    """Surrogate MD under the production bias each round. walkers_per_window : replicas per window;
    steps : MD steps per round; check_every : steps between spread checks (and recorded frames);
    timestep : fs; friction : 1/fs."""

    walkers_per_window: int = 4
    steps: int = 1000
    check_every: int = 20
    timestep: float = 0.5
    friction: float = 0.02

    def __post_init__(self):
        _number(self.walkers_per_window, "ExploreSettings.walkers_per_window", None, low=1, low_open=False,
                integer=True)
        _number(self.steps, "ExploreSettings.steps", "MD steps", low=1, low_open=False, integer=True)
        _number(self.check_every, "ExploreSettings.check_every", "MD steps", low=1, low_open=False, integer=True)
        if self.check_every > self.steps:
            raise InputError(f"ExploreSettings.check_every ({self.check_every}) exceeds steps ({self.steps}): "
                             "no frame would be checked")
        _number(self.timestep, "ExploreSettings.timestep", "fs", low=0)
        _number(self.friction, "ExploreSettings.friction", "1/fs", low=0)


@dataclass(frozen=True)
class SelectSettings:
    """Which explored frames get labels. per_round : most training labels a round; strategy : "qbc"
    (query by committee: candidates between the trust levels, farthest-point sampled) or "random"
    (uniform over all trusted explored frames, the literature's baseline); validation_fraction :
    extra uniform random labels a round, as a share of per_round (held out); min_validation : at
    least this many of them."""

    per_round: int = 150
    strategy: str = "qbc"
    validation_fraction: float = 0.1
    min_validation: int = 8

    def __post_init__(self):
        _number(self.per_round, "SelectSettings.per_round", None, low=1, low_open=False, integer=True)
        if self.strategy not in ("qbc", "random"):
            raise InputError(f"SelectSettings.strategy must be 'qbc' or 'random', got {self.strategy!r}")
        _number(self.validation_fraction, "SelectSettings.validation_fraction", None, low=0, low_open=False, high=1)
        _number(self.min_validation, "SelectSettings.min_validation", None, low=0, low_open=False, integer=True)


@dataclass(frozen=True)
class StopSettings:
    """When the loop ends. budget : most reference calls of the whole loop (seed included);
    max_rounds : exploration rounds; max_beta_sigma : the per-bin spread criterion (kT);
    max_candidate_fraction : candidate + untrusted frames per checked frame; min_frames_per_bin :
    explored frames a bin needs to be judged (fewer: not converged); free_energy_tolerance : kT, or
    None (off): also stop when the sparse correction to the barrier lies within it (2 sigma);
    free_energy_labels, free_energy_steps : labels and production MD steps per window of that check;
    confirm_steps : MD steps of a confirmation exploration (say, the production length) run when the test
    passes: it must pass again there, with no untrusted walker, or the loop goes on with its frames."""

    budget: int = 3000
    max_rounds: int = 15
    max_beta_sigma: float = 1.0
    max_candidate_fraction: float = 0.05
    min_frames_per_bin: int = 10
    free_energy_tolerance: Optional[float] = None
    free_energy_labels: int = 100
    free_energy_steps: int = 2000
    confirm_steps: Optional[int] = None

    def __post_init__(self):
        _number(self.budget, "StopSettings.budget", "reference calls", low=1, low_open=False, integer=True)
        _number(self.max_rounds, "StopSettings.max_rounds", None, low=0, low_open=False, integer=True)
        _number(self.max_beta_sigma, "StopSettings.max_beta_sigma", "kT", low=0)
        _number(self.max_candidate_fraction, "StopSettings.max_candidate_fraction", None, low=0, low_open=False,
                high=1)
        _number(self.min_frames_per_bin, "StopSettings.min_frames_per_bin", None, low=1, low_open=False,
                integer=True)
        if self.free_energy_tolerance is not None:
            _number(self.free_energy_tolerance, "StopSettings.free_energy_tolerance", "kT", low=0)
        _number(self.free_energy_labels, "StopSettings.free_energy_labels", None, low=10, low_open=False,
                integer=True)
        _number(self.free_energy_steps, "StopSettings.free_energy_steps", "MD steps", low=1, low_open=False,
                integer=True)
        if self.confirm_steps is not None:
            _number(self.confirm_steps, "StopSettings.confirm_steps", "MD steps", low=1, low_open=False, integer=True)


@dataclass(frozen=True)
class ActiveLearningSettings:
    """All settings of the loop, grouped; ``seed`` seeds every stochastic step."""

    trust: TrustLevels = field(default_factory=TrustLevels)
    seed_data: SeedSettings = field(default_factory=SeedSettings)
    explore: ExploreSettings = field(default_factory=ExploreSettings)
    select: SelectSettings = field(default_factory=SelectSettings)
    refit: RefitSettings = field(default_factory=RefitSettings)
    stop: StopSettings = field(default_factory=StopSettings)
    seed: int = 0

    def __post_init__(self):
        for name, cls in (("trust", TrustLevels), ("seed_data", SeedSettings), ("explore", ExploreSettings),
                          ("select", SelectSettings), ("refit", RefitSettings), ("stop", StopSettings)):
            if not isinstance(getattr(self, name), cls):
                raise InputError(f"ActiveLearningSettings.{name} must be a {cls.__name__}, "
                                 f"got {type(getattr(self, name)).__name__}")
        _number(self.seed, "ActiveLearningSettings.seed", None, low=0, low_open=False, integer=True)

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------ spreads, calibration
@dataclass(frozen=True)
class Calibration:
    """Factors that turn committee spreads into error estimates, fitted on held-out labels.

    ``energy``: sqrt(mean(e^2) / mean(std_E^2)) with e the energy error minus its mean over the
    frames (free energies do not see a constant offset); ``forces``: sqrt(mean(f^2) / mean(dev^2))
    with f the largest atomic force error norm and dev the maximum atomic force deviation of each
    frame. ``n_frames`` held-out frames were used (factors 1 when fewer than ``min_frames``).
    """

    energy: float = 1.0
    forces: float = 1.0
    n_frames: int = 0

    @classmethod
    def fit(cls, model, dataset: Dataset, frames, min_frames: int = 8, previous: "Calibration | None" = None):
        """Fit on ``dataset[frames]``; with fewer than ``min_frames`` frames keep ``previous`` (or 1, 1)."""
        frames = torch.as_tensor(frames, dtype=torch.long)
        if frames.numel() < min_frames:
            return previous if previous is not None else cls()
        p = _predict_frames(model, dataset, frames)
        e_err = p["energy"] - p["ref_energy"]
        e_err = e_err - e_err.mean()
        f_err = np.linalg.norm(p["forces"] - p["ref_forces"], axis=-1).max(axis=-1)
        e_std, f_dev = p["energy_std"], p["force_deviation_max"]
        ke = math.sqrt(float(np.mean(e_err ** 2)) / max(float(np.mean(e_std ** 2)), 1e-30))
        kf = math.sqrt(float(np.mean(f_err ** 2)) / max(float(np.mean(f_dev ** 2)), 1e-30))
        return cls(energy=ke, forces=kf, n_frames=int(frames.numel()))

    def to_dict(self) -> dict:
        return asdict(self)


def _predict_frames(model, dataset: Dataset, frames, batch: int = 256) -> dict:
    """Committee predictions and references (numpy) on dataset frames of one molecule."""
    out = {k: [] for k in ("energy", "energy_std", "force_deviation_max", "forces", "ref_energy", "ref_forces")}
    for k in range(0, len(frames), batch):
        idx = frames[k:k + batch]
        state, e, f = dataset.batch(idx)
        with torch.no_grad():
            p = _raw_predict(model, state)
        n = int(state.atoms_per_system[0])
        out["energy"].append(p["energy"].double().numpy())
        out["energy_std"].append(p["energy_std"].double().numpy())
        out["force_deviation_max"].append(p["force_deviation_max"].double().numpy())
        out["forces"].append(p["forces"].double().numpy().reshape(len(idx), n, 3))
        out["ref_energy"].append(e.double().numpy())
        out["ref_forces"].append(f.double().numpy().reshape(len(idx), n, 3))
    return {k: np.concatenate(v) for k, v in out.items()}


def _raw_predict(model, state: State) -> dict:
    """``model.predict`` without the model's own calibrated keys (and without their freshness check)."""
    try:
        return model.predict(state, calibrated=False)
    except TypeError:  # a model whose predict takes no options
        return model.predict(state)


def attach_calibration(model, calibration: "Calibration") -> None:
    """Store the loop's factors on the model (``model.set_calibration``), so they travel with its file and
    a plain ``model.predict`` gives the calibrated keys; models without calibration support are left alone."""
    if hasattr(model, "set_calibration") and calibration.n_frames > 0:
        model.set_calibration(energy_std_factor=float(calibration.energy), force_deviation_factor=float(
            calibration.forces), n_frames=int(calibration.n_frames), source="fesurf.training.active held-out labels",
            energy_errors="mean error removed (free energies do not see a constant offset)")


def _clear_calibration(model) -> None:
    if hasattr(model, "clear_calibration"):
        model.clear_calibration()


def committee_spread(model, state: State, calibration: Calibration | None = None) -> dict:
    """Calibrated committee spreads of every system of ``state`` (numpy): the one place the loop and
    the production guard read them.

    Returns ``energy_std`` [S] (eV) and ``force_deviation_max`` [S] (eV/A), calibrated, plus the
    raw values (``*_raw``) and ``energy`` [S] (eV). ``calibration`` (the loop's held-out fit) wins;
    without it, a model that calibrates itself (``predict`` returning ``energy_std_calibrated`` /
    ``force_deviation_max_calibrated``) is used as it is; otherwise the raw spreads are returned.

    >>> # s = committee_spread(model, state, Calibration(energy=1.3, forces=1.6))
    >>> # s["force_deviation_max"]   # eV/A, one per system
    """
    with torch.no_grad():
        p = _raw_predict(model, state) if calibration is not None else model.predict(state)
    raw_e = p["energy_std"].detach().double().numpy()
    raw_f = p["force_deviation_max"].detach().double().numpy()
    if calibration is not None:
        e, f = raw_e * calibration.energy, raw_f * calibration.forces
    else:
        e = p.get("energy_std_calibrated", p["energy_std"]).detach().double().numpy()
        f = p.get("force_deviation_max_calibrated", p["force_deviation_max"]).detach().double().numpy()
    return {"energy_std": e, "force_deviation_max": f, "energy_std_raw": raw_e, "force_deviation_max_raw": raw_f,
            "energy": p["energy"].detach().double().numpy()}


@dataclass
class ProductionGuard:
    """Flags production frames the surrogate does not know (pass as ``umbrella_sampling(..., guard=)``).

    Each recorded frame stores its calibrated maximum atomic force deviation (eV/A) in the
    SampleSet's ``committee_spread``; frames above ``upper`` are flagged
    (:meth:`~fesurf.sampling.SampleSet.untrusted_frames`; :func:`~fesurf.estimators.compute_pmf`
    reports the bins that hold them). ``action``: ``"warn"`` records and warns, ``"stop"`` raises
    :class:`~fesurf.errors.SimulationError` at the first flagged frame (the SampleSet keeps its last
    checkpoint).

    >>> # guard = ProductionGuard(model, upper=0.35, action="stop", calibration=result.calibration)
    >>> # samples = umbrella_sampling(model, start, cv, centers, kappa, temperature=300.0, guard=guard)
    """

    model: Any
    upper: float
    action: str = "warn"
    calibration: Optional[Calibration] = None

    def __post_init__(self):
        _number(self.upper, "ProductionGuard.upper", "eV/A", low=0)
        if self.action not in ("warn", "stop"):
            raise InputError(f"ProductionGuard.action must be 'warn' or 'stop', got {self.action!r}")
        self.n_flagged = 0

    def spread(self, state: State) -> np.ndarray:
        """[S] calibrated maximum atomic force deviation (eV/A)."""
        return committee_spread(self.model, state, self.calibration)["force_deviation_max"]

    def check(self, spread: np.ndarray, step: int) -> None:
        """Count flagged systems; with ``action="stop"`` raise on the first."""
        bad = ~(np.asarray(spread) <= self.upper)
        self.n_flagged += int(bad.sum())
        if bad.any() and self.action == "stop":
            which = np.nonzero(bad)[0]
            raise SimulationError(
                f"production guard: at step {step}, replica(s) {which[:10].tolist()} have a calibrated force "
                f"deviation up to {float(np.nanmax(np.where(bad, spread, -np.inf))):.3g} eV/A, above the trust "
                f"level {self.upper:g} eV/A: the surrogate left the region it was trained on. Extend its training "
                "(active learning with a larger budget or more rounds), or set the guard to 'warn' to record "
                "and flag such frames instead", replica=int(which[0]), step=int(step))

    def attrs(self) -> dict:
        """What a SampleSet records about the guard (``attrs['guard']``)."""
        return {"quantity": "calibrated max atomic force deviation", "unit": "eV/A", "upper": float(self.upper),
                "action": self.action, "calibration": None if self.calibration is None else self.calibration.to_dict()}


# ------------------------------------------------------------------------------------------ selection
def farthest_point_sampling(features: np.ndarray, k: int, first: int = 0) -> np.ndarray:
    """Indices of ``k`` rows of ``features`` [N, d], each the farthest (Euclidean) from those chosen
    before, starting from row ``first``.

    >>> farthest_point_sampling(np.array([[0.0], [0.1], [1.0], [0.5]]), 3).tolist()
    [0, 2, 3]
    """
    x = np.asarray(features, dtype=float)
    n = x.shape[0]
    k = int(min(k, n))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    chosen = [int(first)]
    d2 = ((x - x[first]) ** 2).sum(1)
    d2[first] = -1.0  # never twice, even among identical rows
    for _ in range(k - 1):
        nxt = int(np.argmax(d2))
        chosen.append(nxt)
        d2 = np.minimum(d2, ((x - x[nxt]) ** 2).sum(1))
        d2[chosen] = -1.0
    return np.asarray(chosen, dtype=np.int64)


def _frame_features(model, positions: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """[K, d] per-frame features for diversity: the model's standardised descriptors of every atom
    (atom order fixed), or the Cartesian coordinates for a model without descriptors (centred when the
    model is translation invariant)."""
    k, n = positions.shape[:2]
    if hasattr(model, "descriptors") and hasattr(model, "feature_std"):
        dtype = model.model_dtype
        state = State(positions=torch.as_tensor(positions.reshape(-1, 3), dtype=dtype),
                      atomic_numbers=torch.as_tensor(np.tile(numbers, k)),
                      system_index=torch.arange(k).repeat_interleave(n), validate=False)
        state.masses = torch.ones(k * n, dtype=dtype)
        state.pbc = torch.zeros(k, 3, dtype=torch.bool)
        with torch.no_grad():
            g = model.descriptors(state.positions, state)
            sp = model.acsf.species(state.atomic_numbers)
            g = (g - model.feature_mean[sp]) / model.feature_std[sp]
        return g.double().numpy().reshape(k, -1)
    if getattr(model, "translation_invariant", True):
        positions = positions - positions.mean(axis=1, keepdims=True)
    return positions.reshape(k, -1)


# -------------------------------------------------------------------------------------- call counting
class ReferenceCalls:
    """Counts every reference call by purpose: one configuration sent to the oracle is one call
    (computed now, or computed before a kill and returned by the loop's cache), failures included.

    >>> # calls = ReferenceCalls(oracle, executor=None, cache="labels")
    >>> # labels = calls.label(frames, "selected"); calls.total
    """

    PURPOSES = ("seed_start", "seed_hessian", "seed_normal_modes", "seed_scan", "selected", "validation",
                "free_energy_check")

    def __init__(self, oracle, executor=None, cache=None):
        self.oracle, self.executor, self.cache = oracle, executor, cache
        self.counts = {p: 0 for p in self.PURPOSES}
        self.failed = 0
        self.computed = 0
        self.from_cache = 0

    @property
    def total(self) -> int:
        return int(sum(self.counts.values()))

    def label(self, configs, purpose: str):
        if purpose not in self.counts:
            raise InputError(f"unknown reference-call purpose {purpose!r}")
        configs = list(configs)
        if not configs:
            return []
        labels = self.oracle.label(configs, executor=self.executor, cache=self.cache)
        stats = getattr(self.oracle, "last_stats", {}) or {}
        self.counts[purpose] += len(configs)
        self.computed += int(stats.get("computed", len(configs)))
        self.from_cache += int(stats.get("from_cache", 0))
        self.failed += sum(not lab.ok for lab in labels)
        return labels

    def to_dict(self) -> dict:
        return {**self.counts, "total": self.total, "failed": int(self.failed),
                "computed_this_session": int(self.computed), "from_cache_this_session": int(self.from_cache)}

    def restore(self, saved: dict) -> None:
        for p in self.PURPOSES:
            self.counts[p] = int(saved.get(p, 0))
        self.failed = int(saved.get("failed", 0))


# ---------------------------------------------------------------------------------------------- result
@dataclass
class ActiveLearningResult:
    """What the loop made: the committee, its calibration, the labels, the round records and the calls.

    ``roles[k]`` is ``"train"`` or ``"validation"`` for frame ``k`` of ``dataset``; ``rounds`` holds
    one dict per round (calls, candidates, spread per CV bin, validation errors, times);
    ``calls`` the reference calls by purpose and in total (every one the oracle was asked for).
    """

    model: Any
    calibration: Calibration
    dataset: Dataset
    roles: list
    rounds: list
    calls: dict
    converged: bool
    stop_reason: str
    settings: ActiveLearningSettings
    bias: ProductionBias
    walkers: Any = None  # [n_windows * walkers_per_window, n_atoms, 3] last trusted positions, Angstrom

    def window_starts(self, atoms) -> State:
        """One system per production window, at the last trusted frame of that window's first walker.

        Production started from these sits in its windows already; started from one structure, the
        far windows would be pulled across the whole CV range by their restraints in the first steps.

        >>> starts = result.window_starts(atoms)        # doctest: +SKIP
        >>> starts.n_systems == len(result.bias.centers)  # doctest: +SKIP
        True
        """
        if self.walkers is None:
            raise InputError("this result holds no walker positions; start production from a structure instead")
        w = self.settings.explore.walkers_per_window
        first = np.asarray(self.walkers)[::w]
        starts = State.from_atoms(atoms).replicate(first.shape[0])
        return starts.replace(positions=torch.as_tensor(first.reshape(-1, 3), dtype=starts.dtype))

    @property
    def train_idx(self) -> np.ndarray:
        return np.array([k for k, r in enumerate(self.roles) if r == "train"], dtype=np.int64)

    @property
    def val_idx(self) -> np.ndarray:
        return np.array([k for k, r in enumerate(self.roles) if r == "validation"], dtype=np.int64)

    def guard(self, action: str = "warn") -> ProductionGuard:
        """A production guard for this model at the loop's upper trust level and calibration."""
        return ProductionGuard(self.model, upper=self.settings.trust.upper, action=action,
                               calibration=self.calibration)

    def table(self) -> str:
        """One line per round: calls, candidates, the worst predicted beta*sigma(dU), validation errors."""
        rows = [f"{'round':>5} {'calls':>6} {'total':>6} {'checked':>8} {'cand %':>7} {'untrusted':>9} "
                f"{'max b*sig':>9} {'val E rmse meV':>14} {'val F rmse':>10}"]
        for r in self.rounds:
            ex = r.get("explore") or {}
            val = r.get("validation") or {}
            rows.append(f"{r['round']:5d} {r['calls_this_round']:6d} {r['calls_total']:6d} "
                        f"{ex.get('n_checked', 0):8d} {100 * ex.get('candidate_fraction', float('nan')):7.2f} "
                        f"{ex.get('n_untrusted', 0):9d} {ex.get('max_beta_sigma', float('nan')):9.3f} "
                        f"{1000 * val.get('energy_rmse_eV', float('nan')):14.2f} "
                        f"{val.get('force_rmse_eV_A', float('nan')):10.4f}")
        return "\n".join(rows)

    def to_dict(self) -> dict:
        return {"calls": self.calls, "converged": self.converged, "stop_reason": self.stop_reason,
                "calibration": self.calibration.to_dict(), "n_train": int(self.train_idx.size),
                "n_validation": int(self.val_idx.size), "rounds": self.rounds, "settings": self.settings.to_dict(),
                "bias": self.bias.to_dict()}


def default_committee(atoms: Atoms, seed: int = 0):
    """The default surrogate: a 4-member Behler-Parrinello committee, hidden 32x32, the lean ACSF of
    the stored malonaldehyde committee (8 radial + 2 angular shells)."""
    from ..surrogates import BehlerParrinello

    return BehlerParrinello(elements=sorted(set(int(z) for z in atoms.numbers)), hidden=(32, 32), n_members=4,
                            acsf=dict(n_radial=8, angular_shifts=[1.2, 2.6]), seed=int(seed))


# ---------------------------------------------------------------------------------------- exploration
def _seeds(seed: int, *purpose, n: int = 1) -> list:
    return [int(x) for x in np.random.SeedSequence([int(seed), *[int(p) for p in purpose]]).generate_state(
        n, dtype=np.uint32)]


def _explore(model, bias: ProductionBias, start_positions: np.ndarray, atoms: Atoms, settings: ActiveLearningSettings,
             calibration: Calibration, round_index: int) -> dict:
    """One round of guarded, biased surrogate MD; returns the trusted checked frames and the counts."""
    from ..bias import RESTRAINT
    from ..md import Langevin, maxwell_boltzmann
    from ..potentials import Sum

    ex, trust = settings.explore, settings.trust
    w = ex.walkers_per_window
    n_walkers = len(bias.centers) * w
    n = len(atoms)
    start = State.from_atoms(atoms).replicate(n_walkers)
    start = start.replace(positions=torch.as_tensor(start_positions.reshape(-1, 3), dtype=start.dtype))
    restraint = RESTRAINT(bias.cv, at=np.repeat(np.asarray(bias.centers), w), kappa=float(bias.kappa))
    T = float(bias.temperature)
    md = Langevin(Sum([model, restraint]), timestep=float(ex.timestep), temperature=T, friction=float(ex.friction),
                  seed=_seeds(settings.seed, 11, round_index, n=n_walkers))
    md.start(maxwell_boltzmann(start, T, seed=_seeds(settings.seed, 12, round_index, n=n_walkers)))
    rng = np.random.default_rng(_seeds(settings.seed, 13, round_index)[0])
    masses = md.current.masses.view(n_walkers, n)
    v_sigma = torch.sqrt(KB * T / (masses * MV2_TO_EV))  # A/fs per atom
    trusted = start.positions.view(n_walkers, n, 3).clone()
    frames, cvs, e_std, f_dev, walker_of = [], [], [], [], []
    n_checked = n_candidates = n_untrusted = n_kept = 0
    last_kept = np.full(n_walkers, -1, dtype=np.int64)  # each walker's latest trusted frame (index into frames)
    precursors = set()  # trusted frames from which a walker went untrusted: the way into a hole
    for block in range(ex.steps // ex.check_every):
        md.advance(ex.check_every)
        cur = md.current
        pos = cur.positions.view(n_walkers, n, 3)
        finite = torch.isfinite(pos).all(dim=(1, 2)).numpy()
        if finite.all():
            s = committee_spread(model, cur, calibration)
            dev, est = s["force_deviation_max"], s["energy_std"]
            finite &= np.isfinite(dev) & np.isfinite(est) & np.isfinite(s["energy"])
        else:
            dev = np.full(n_walkers, np.inf)
            est = np.full(n_walkers, np.inf)
        ok = finite & (dev <= trust.upper)
        n_checked += n_walkers
        n_untrusted += int((~ok).sum())
        n_candidates += int((ok & (dev > trust.lower)).sum())
        if ok.any():
            with torch.no_grad():
                cv_now = bias.cv(cur).double().numpy()
            keep = np.nonzero(ok)[0]
            frames.append(pos[keep].detach().double().numpy().copy())
            cvs.append(cv_now[keep])
            e_std.append(est[keep])
            f_dev.append(dev[keep])
            walker_of.append(keep)
            trusted[keep] = pos[keep].detach()
            last_kept[keep] = n_kept + np.arange(keep.size)
            n_kept += keep.size
        if not ok.all():  # the guard: back to the last trusted frame, fresh velocities
            bad = np.nonzero(~ok)[0]
            precursors.update(int(i) for i in last_kept[bad] if i >= 0)
            with torch.no_grad():
                pos[bad] = trusted[bad].to(pos.dtype)
                vel = cur.velocities.view(n_walkers, n, 3)
                noise = torch.as_tensor(rng.standard_normal((bad.size, n, 3)), dtype=vel.dtype)
                vel[bad] = noise * v_sigma[bad][..., None].to(vel.dtype)
            md.refresh_forces()
    cat = (lambda parts, shape: np.concatenate(parts) if parts else np.zeros(shape))
    return {"positions": cat(frames, (0, n, 3)), "cv": cat(cvs, (0,)), "energy_std": cat(e_std, (0,)),
            "force_deviation_max": cat(f_dev, (0,)), "walker": cat(walker_of, (0,)).astype(np.int64),
            "precursors": np.array(sorted(precursors), dtype=np.int64),
            "final_positions": trusted.double().numpy().copy(), "n_checked": int(n_checked),
            "n_candidates": int(n_candidates), "n_untrusted": int(n_untrusted)}


def _spread_per_bin(explored: dict, bias: ProductionBias, stop: StopSettings) -> dict:
    """Predicted beta*sigma(dU) per CV bin: RMS calibrated energy spread of the bin's frames, in kT."""
    edges = bias.edges
    x = explored["cv"]
    idx = np.digitize(x, edges) - 1
    inside = (idx >= 0) & (idx < edges.size - 1)
    n = np.bincount(idx[inside], minlength=edges.size - 1)
    ms = np.bincount(idx[inside], weights=explored["energy_std"][inside] ** 2, minlength=edges.size - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        beta_sigma = np.where(n > 0, np.sqrt(ms / np.maximum(n, 1)) / bias.kT, np.nan)
    covered = bool((n >= stop.min_frames_per_bin).all())
    worst = float(np.nanmax(beta_sigma)) if np.isfinite(beta_sigma).any() else float("nan")
    frac = (explored["n_candidates"] + explored["n_untrusted"]) / max(explored["n_checked"], 1)
    spread_ok = covered and bool(np.all(beta_sigma <= stop.max_beta_sigma))
    dev = explored["force_deviation_max"]
    q = np.quantile(dev, [0.5, 0.9, 0.99]).tolist() if dev.size else [float("nan")] * 3
    return {"bin_centres": (0.5 * (edges[1:] + edges[:-1])).tolist(), "n_frames": n.tolist(),
            "trusted_deviation_quantiles_50_90_99": q,
            "beta_sigma": [None if not np.isfinite(b) else float(b) for b in beta_sigma],
            "max_beta_sigma": worst, "covered": covered, "candidate_fraction": float(frac),
            "spread_ok": spread_ok, "rate_ok": bool(frac <= stop.max_candidate_fraction)}


def _quota(weights: np.ndarray, total: int, caps: np.ndarray) -> np.ndarray:
    """Integer shares of ``total`` proportional to ``weights`` (largest remainder), each at most its cap;
    what a capped entry cannot take goes to the others."""
    w = np.clip(np.asarray(weights, dtype=float), 0, None)
    caps = np.asarray(caps, dtype=np.int64)
    q = np.zeros(w.size, np.int64)
    left = int(min(total, caps.sum()))
    while left > 0:
        room = (q < caps) & (w > 0)
        if not room.any():
            room = q < caps
            w = np.where(room, 1.0, 0.0)
        raw = left * np.where(room, w, 0.0) / np.where(room, w, 0.0).sum()
        add = np.minimum(np.floor(raw).astype(np.int64), caps - q)
        if add.sum() == 0:
            add[np.argmax(np.where(room, raw, -np.inf))] = 1
        q += add
        left -= int(add.sum())
    return q


def _stratified_fps(model, explored: dict, cand: np.ndarray, edges: np.ndarray, atoms: Atoms, k: int) -> np.ndarray:
    """``k`` candidates: shared out over CV bins in proportion to the bin's uncertainty (sum of squared
    deviations of its candidates, no more than it has), then farthest-point
    sampled in descriptor space within each bin from its most uncertain frame (plain FPS over all
    candidates would spend the round on a few outliers at the edges of the explored region)."""
    x = explored["cv"][cand]
    b = np.clip(np.digitize(x, edges) - 1, 0, edges.size - 2)  # frames beyond the range join the end bins
    dev = explored["force_deviation_max"][cand]
    counts = np.bincount(b, minlength=edges.size - 1)
    mass = np.bincount(b, weights=dev ** 2, minlength=edges.size - 1)  # where the committee is least sure
    quota = _quota(mass, k, counts)
    feats = _frame_features(model, explored["positions"][cand], atoms.numbers)
    picked = []
    for j in np.nonzero(quota)[0]:
        members = np.nonzero(b == j)[0]
        pick = farthest_point_sampling(feats[members], quota[j], first=int(np.argmax(dev[members])))
        picked.append(cand[members[pick]])
    return np.concatenate(picked) if picked else np.zeros(0, np.int64)


def _select(model, explored: dict, atoms: Atoms, settings: ActiveLearningSettings, n_train: int, n_val: int,
            round_index: int, bias_edges: np.ndarray):
    """(training frame indices, validation frame indices) into the explored frames.

    ``qbc``: first the precursors (the last trusted frame of every walker that then crossed the upper
    level, up to half the round: the way into a region the committee does not know), then candidates
    (deviation above the lower trust level) shared out over the CV bins by their uncertainty and
    farthest-point sampled within each bin; ``random``: a uniform draw
    of all trusted explored frames. Validation: a uniform draw of the trusted frames not selected."""
    rng = np.random.default_rng(_seeds(settings.seed, 21, round_index)[0])
    dev = explored["force_deviation_max"]
    all_idx = np.arange(dev.size)
    if settings.select.strategy == "qbc":
        # first the frames from which a walker crossed the upper level (up to half the round), then candidates
        pre = explored["precursors"]
        if pre.size > n_train // 2:
            feats = _frame_features(model, explored["positions"][pre], atoms.numbers)
            pre = pre[farthest_point_sampling(feats, n_train // 2, first=int(np.argmax(dev[pre])))]
        cand = np.setdiff1d(np.nonzero(dev > settings.trust.lower)[0], pre)  # explored frames are all <= upper
        rest = n_train - pre.size
        more = _stratified_fps(model, explored, cand, bias_edges, atoms, rest) if cand.size and rest > 0 \
            else np.zeros(0, np.int64)
        train = np.concatenate([pre, more])
    else:
        train = rng.choice(all_idx, size=min(n_train, all_idx.size), replace=False) if n_train > 0 else \
            np.zeros(0, np.int64)
    rest = np.setdiff1d(all_idx, train)
    val = rng.choice(rest, size=min(n_val, rest.size), replace=False) if n_val > 0 and rest.size else \
        np.zeros(0, np.int64)
    return np.sort(train), np.sort(val)


def _atoms_at(atoms: Atoms, positions: np.ndarray, **info) -> list:
    out = []
    for p in positions:
        a = atoms.copy()
        a.calc = None
        a.positions = p
        a.info.update(info)
        out.append(a)
    return out


def _validation_metrics(model, dataset: Dataset, val_idx) -> dict:
    if len(val_idx) == 0:
        return {}
    p = _predict_frames(model, dataset, torch.as_tensor(val_idx, dtype=torch.long))
    e_err = p["energy"] - p["ref_energy"]
    return {"n_frames": int(len(val_idx)), "energy_rmse_eV": float(np.std(e_err)),
            "energy_mean_error_eV": float(np.mean(e_err)),
            "force_rmse_eV_A": float(np.sqrt(np.mean((p["forces"] - p["ref_forces"]) ** 2))),
            "mean_energy_std_eV": float(np.mean(p["energy_std"])),
            "mean_force_deviation_max_eV_A": float(np.mean(p["force_deviation_max"]))}


def _free_energy_check(model, bias, atoms, calls: ReferenceCalls, settings, round_index) -> dict:
    """Short surrogate umbrella run, stratified sparse labels, and the correction to the barrier (kT)."""
    from ..analysis import barrier
    from ..estimators.reweight import choose_frames, reweight_pmf
    from ..sampling.protocol import LangevinDynamics, Schedule
    from ..sampling.umbrella import umbrella_sampling

    stop, ex = settings.stop, settings.explore
    samples = umbrella_sampling(
        model, State.from_atoms(atoms), bias.cv, centers=np.asarray(bias.centers), kappa=float(bias.kappa),
        temperature=float(bias.temperature),
        dynamics=LangevinDynamics(timestep=float(ex.timestep), friction=float(ex.friction),
                                  seed=_seeds(settings.seed, 31, round_index)[0]),
        schedule=Schedule(n_equilibration=max(1, stop.free_energy_steps // 10), n_production=stop.free_energy_steps,
                          stride=max(1, stop.free_energy_steps // 100)), check_overlap=False)
    frames, pi = choose_frames(samples, stop.free_energy_labels, bins=bias.pmf_bins, range=bias.pmf_range,
                               seed=_seeds(settings.seed, 32, round_index)[0], allow_fewer=True)
    order = np.argsort(frames)
    frames, pi = frames[order], pi[order]
    labels = calls.label(_atoms_at(atoms, samples.read_positions(frames), source="free_energy_check"),
                         "free_energy_check")
    ok = np.array([lab.ok for lab in labels], dtype=bool)
    du = np.array([lab.energy if lab.ok else np.nan for lab in labels]) - samples.u_ref[frames] * bias.kT
    out = {"n_labels": int(frames.size)}
    try:
        res = reweight_pmf(samples, frames[ok], du[ok], inclusion_probability=pi[ok], bins=bias.pmf_bins,
                           range=bias.pmf_range, warn=False, seed=_seeds(settings.seed, 33, round_index)[0])
        b_sur = barrier(res.surrogate)  # reweight_pmf works in kT here
        b_cor = barrier(res.corrected, pmf_samples=res.corrected_samples)  # sigma: the label bootstrap alone
        delta = float(b_cor.activation.value - b_sur.activation.value)
        sigma = float(b_cor.activation.error or 0.0)
        out.update(correction_kT=delta, correction_sigma_kT=sigma,
                   within=bool(abs(delta) + 2 * sigma <= stop.free_energy_tolerance))
    except InputError as exc:  # flagged bins leave no barrier: not converged
        out.update(within=False, note=str(exc)[:200])
    samples.close()
    return out


# ---------------------------------------------------------------------------------------- checkpoint
def _settings_digest(settings: ActiveLearningSettings, bias: ProductionBias, atoms: Atoms, model) -> str:
    blob = json.dumps({"settings": settings.to_dict(), "bias": bias.to_dict(), "numbers": atoms.numbers.tolist(),
                       "positions": np.round(atoms.positions, 6).tolist(), "model": model.config(),
                       "oracle": None}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class _Checkpoint:
    """The loop's state after a completed round in ``workdir``: model, labels, walkers, record."""

    def __init__(self, workdir: Path, digest: str):
        self.dir, self.digest = workdir, digest
        self.record = workdir / "active_learning.json"

    def save(self, model, frames: list, roles: list, walkers, record: dict) -> None:
        from ..surrogates import save_model

        save_model(model, self.dir / "model.tmp.pt")
        (self.dir / "model.tmp.pt").replace(self.dir / "model.pt")
        (self.dir / "model.tmp.json").replace(self.dir / "model.json")
        data = Dataset.from_atoms(frames)
        data.info = [dict(inf, role=role) for inf, role in zip(data.info, roles)]
        data.save_npz(self.dir / "labels.tmp.npz")
        (self.dir / "labels.tmp.npz").replace(self.dir / "labels.npz")
        if walkers is not None:
            np.save(self.dir / "walkers.tmp.npy", walkers)
            (self.dir / "walkers.tmp.npy").replace(self.dir / "walkers.npy")
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(record, digest=self.digest), indent=1, default=float))
        tmp.replace(self.record)

    def load(self, model):
        if not self.record.exists():
            return None
        from ..surrogates.io import read_weights_file

        record = json.loads(self.record.read_text())
        if record.get("digest") != self.digest:
            raise InputError(f"{self.dir} holds an active-learning run with other settings, start structure or "
                             "model; use another workdir, or delete it to start again")
        payload = read_weights_file(self.dir / "model.pt")
        model.to(getattr(torch, payload.get("dtype", "float64")))
        model.load_state_dict(payload["state_dict"])
        data = Dataset.load_npz(self.dir / "labels.npz")
        walkers = np.load(self.dir / "walkers.npy") if (self.dir / "walkers.npy").exists() else None
        return record, data, walkers


# ---------------------------------------------------------------------------------------------- the loop
def _check_inputs(oracle, atoms, bias, settings, model):
    if not hasattr(oracle, "label"):
        raise InputError(f"oracle must be a fesurf Oracle (with label()), got {type(oracle).__name__}")
    if not isinstance(atoms, Atoms) or len(atoms) < 1:
        raise InputError("atoms must be an ase.Atoms start structure")
    if not isinstance(bias, ProductionBias):
        raise InputError(f"bias must be a ProductionBias, got {type(bias).__name__}")
    if not isinstance(settings, ActiveLearningSettings):
        raise InputError(f"settings must be an ActiveLearningSettings, got {type(settings).__name__}")
    if int(getattr(model, "n_members", 1)) < 2:
        raise InputError("active learning needs a committee (n_members >= 2): its spread decides what to label")
    bias.cv.validate(State.from_atoms(atoms))


def active_learning(oracle, atoms: Atoms, bias: ProductionBias, settings: ActiveLearningSettings | None = None, *,
                    model=None, executor=None, cache=None, workdir=None,
                    on_round: Callable[[dict], None] | None = None) -> ActiveLearningResult:
    """Build a committee surrogate for ``atoms`` with the reference ``oracle`` by on-the-fly active learning.

    Parameters
    ----------
    oracle : Oracle
        The reference; every call goes through ``oracle.label(..., executor=executor, cache=cache)``.
    atoms : ase.Atoms
        Start structure (charge and multiplicity in ``atoms.info``); ideally a minimum.
    bias : ProductionBias
        The production windows (CV, centres, kappa, temperature) and the PMF bins of the stopping test.
    settings : ActiveLearningSettings
    model : an untrained committee (``n_members >= 2``; default :func:`default_committee`).
    executor : where reference calls run (see :mod:`fesurf.execution`).
    cache : LabelCache or directory (default ``workdir/labels`` with a workdir, else none).
    workdir : folder for checkpoints (resume after a kill by calling again), or None.
    on_round : called with each round's record after it is checkpointed.

    Returns an :class:`ActiveLearningResult`.

    >>> # result = active_learning(XTBOracle(), atoms, bias, workdir="runs/al")
    >>> # print(result.table())
    """
    from ..oracles.base import LabelCache

    settings = settings or ActiveLearningSettings()
    model = model if model is not None else default_committee(atoms, settings.seed)
    _check_inputs(oracle, atoms, bias, settings, model)
    _clear_calibration(model)  # factors fitted to other weights would be stale after the first fit
    atoms = atoms.copy()
    atoms.calc = None
    workdir = None if workdir is None else Path(workdir)
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        if cache is None:
            cache = workdir / "labels"
    if cache is not None and not isinstance(cache, LabelCache):
        cache = LabelCache(cache)
    calls = ReferenceCalls(oracle, executor=executor, cache=cache)
    refitter = CommitteeRefitter(model, settings.refit)
    digest = _settings_digest(settings, bias, atoms, model)
    ckpt = _Checkpoint(workdir, digest) if workdir is not None else None
    frames: list = []
    roles: list = []
    rounds: list = []
    walkers = None
    calibration = Calibration()
    converged, reason = False, ""
    t_start = time.perf_counter()

    loaded = ckpt.load(model) if ckpt is not None else None
    if loaded is not None:
        record, data, walkers = loaded
        frames = data.to_atoms()
        roles = [inf.pop("role") for inf in data.info]
        for a in frames:
            a.info.pop("role", None)
        rounds = record["rounds"]
        calls.restore(record["calls"])
        calibration = Calibration(**record["calibration"])
        refitter.n_fits = int(record["n_fits"])
        attach_calibration(model, calibration)
        converged, reason = bool(record["converged"]), str(record["stop_reason"])
        log.info("active learning: resuming after round %d (%d labels, %d reference calls)", rounds[-1]["round"],
                 len(frames), calls.total)
    else:
        frames, roles, walkers, rounds, calibration = _seed_round(oracle, atoms, bias, settings, model, calls,
                                                                 refitter, ckpt, on_round)

    def dataset():
        return Dataset.from_atoms(frames)

    r = rounds[-1]["round"]
    while not reason:
        r += 1
        if r > settings.stop.max_rounds:
            reason = "max_rounds"
            break
        t0 = time.perf_counter()
        before = calls.total
        explored = _explore(model, bias, walkers, atoms, settings, calibration, r)
        per_bin = _spread_per_bin(explored, bias, settings.stop)
        ex_rec = {"n_checked": explored["n_checked"], "n_candidates": explored["n_candidates"],
                  "n_untrusted": explored["n_untrusted"], "n_trusted_frames": int(explored["cv"].size), **per_bin}
        t_explore = time.perf_counter() - t0
        walkers = explored["final_positions"]
        rec = {"round": r, "explore": ex_rec, "calls_this_round": 0, "calls_total": calls.total,
               "calls": calls.to_dict(), "seconds": {"explore": t_explore}}
        confirm = settings.stop.confirm_steps
        if per_bin["spread_ok"] and per_bin["rate_ok"] and confirm:
            # the test passed on a round's exploration; confirm it on one as long as production, where a
            # hole a short exploration did not reach would show up as untrusted walkers
            t0 = time.perf_counter()
            long_settings = ActiveLearningSettings(**{**{f: getattr(settings, f) for f in (
                "trust", "seed_data", "select", "refit", "stop", "seed")},
                "explore": ExploreSettings(**{**asdict(settings.explore), "steps": int(confirm)})})
            explored = _explore(model, bias, walkers, atoms, long_settings, calibration, 10_000 + r)
            per_bin = _spread_per_bin(explored, bias, settings.stop)
            ex_rec = {"n_checked": explored["n_checked"], "n_candidates": explored["n_candidates"],
                      "n_untrusted": explored["n_untrusted"], "n_trusted_frames": int(explored["cv"].size),
                      "confirmation_steps": int(confirm), **per_bin}
            walkers = explored["final_positions"]
            t_explore += time.perf_counter() - t0
            rec.update(explore=ex_rec, seconds={"explore": t_explore})
            log.info("round %d: confirmation exploration of %d steps: %.1f %% candidates, %d untrusted", r, confirm,
                     100 * per_bin["candidate_fraction"], explored["n_untrusted"])
            if explored["n_untrusted"]:
                per_bin["rate_ok"] = False
        if per_bin["spread_ok"] and per_bin["rate_ok"]:
            converged, reason = True, "spread_and_candidate_rate"
            log.info("round %d: every bin predicts beta*sigma(dU) <= %.2f (worst %.3f) and the candidate rate %.3f "
                     "<= %.3f: converged", r, settings.stop.max_beta_sigma, per_bin["max_beta_sigma"],
                     per_bin["candidate_fraction"], settings.stop.max_candidate_fraction)
            rec.update(n_selected=0, n_validation=0)
            rounds.append(rec)
            break
        reserve = settings.stop.free_energy_labels if settings.stop.free_energy_tolerance is not None else 0
        remaining = settings.stop.budget - calls.total - reserve
        n_train = min(settings.select.per_round, remaining)
        n_val = min(max(settings.select.min_validation,
                        int(round(settings.select.validation_fraction * settings.select.per_round))),
                    max(remaining - n_train, 0))
        if n_train < 1:
            reason = "budget"
            rec.update(n_selected=0, n_validation=0)
            rounds.append(rec)
            break
        sel, val = _select(model, explored, atoms, settings, n_train, n_val, r, bias.edges)
        t1 = time.perf_counter()
        lab_t = calls.label(_atoms_at(atoms, explored["positions"][sel], source="active", round=r), "selected")
        lab_v = calls.label(_atoms_at(atoms, explored["positions"][val], source="active_validation", round=r),
                            "validation")
        t_label = time.perf_counter() - t1
        for lab, role in [(lab, "train") for lab in lab_t] + [(lab, "validation") for lab in lab_v]:
            if lab.ok:
                a = lab.to_atoms()
                a.info.update(round=r)
                frames.append(a)
                roles.append(role)
        t2 = time.perf_counter()
        data = dataset()
        tr = np.array([k for k, x in enumerate(roles) if x == "train"])
        va = np.array([k for k, x in enumerate(roles) if x == "validation"])
        _clear_calibration(model)  # the weights are about to change
        fit = refitter.fit(data, tr, va)
        calibration = Calibration.fit(model, data, va, previous=calibration)
        attach_calibration(model, calibration)
        t_fit = time.perf_counter() - t2
        rec.update(n_selected=int(sel.size), n_validation=int(val.size),
                   n_failed=int(sum(not lab.ok for lab in lab_t + lab_v)),
                   selected_cv=explored["cv"][sel].tolist(), selected_deviation=explored["force_deviation_max"][sel].tolist(),
                   fit={k: fit[k] for k in ("epochs", "path", "warm_start", "n_train", "seconds")}
                   | {"final_train_loss": fit["train_loss"][-1]},
                   calibration=calibration.to_dict(), validation=_validation_metrics(model, data, va),
                   seconds={"explore": t_explore, "label": t_label, "fit": t_fit})
        if settings.stop.free_energy_tolerance is not None:
            t3 = time.perf_counter()
            fe = _free_energy_check(model, bias, atoms, calls, settings, r)
            rec["free_energy_check"] = fe
            rec["seconds"]["free_energy_check"] = time.perf_counter() - t3
            if fe.get("within"):
                converged, reason = True, "free_energy_tolerance"
        rec["calls_this_round"] = calls.total - before
        rec["calls_total"] = calls.total
        rec["calls"] = calls.to_dict()
        rounds.append(rec)
        log.info("round %d: %d checked, %.1f %% candidates, %d untrusted, worst beta*sigma %.3f; labelled %d + %d "
                 "validation; %d reference calls in all", r, explored["n_checked"],
                 100 * per_bin["candidate_fraction"], explored["n_untrusted"], per_bin["max_beta_sigma"], sel.size,
                 val.size, calls.total)
        if not reason and calls.total >= settings.stop.budget:
            reason = "budget"
        if ckpt is not None:
            ckpt.save(model, frames, roles, walkers, _record(rounds, calls, calibration, refitter, converged, reason))
        if on_round is not None:
            on_round(rec)
    if ckpt is not None:
        ckpt.save(model, frames, roles, walkers, _record(rounds, calls, calibration, refitter, converged, reason))
    log.info("active learning stopped (%s) after %d rounds: %d reference calls, %.0f s in this session", reason,
             rounds[-1]["round"], calls.total, time.perf_counter() - t_start)
    return ActiveLearningResult(model=model, calibration=calibration, dataset=dataset(), roles=list(roles),
                                rounds=rounds, calls=calls.to_dict(), converged=converged, stop_reason=reason,
                                settings=settings, bias=bias, walkers=walkers)


def _record(rounds, calls, calibration, refitter, converged, reason) -> dict:
    return {"rounds": rounds, "calls": calls.to_dict(), "calibration": calibration.to_dict(),
            "n_fits": refitter.n_fits, "converged": converged, "stop_reason": reason}


def _seed_round(oracle, atoms, bias, settings, model, calls, refitter, ckpt, on_round):
    """Round 0: seed labels, the first fit, the first calibration, the walkers' start frames."""
    sd = settings.seed_data
    t0 = time.perf_counter()
    start = calls.label([atoms], "seed_start")[0]
    if not start.ok:
        raise OracleError(f"the reference failed on the start structure: {start.reason}")
    labels = [start]
    hess_labels = calls.label(seeding.hessian_frames(atoms, sd.hessian_step), "seed_hessian")
    labels += hess_labels
    if sd.normal_modes:
        hessian = seeding.hessian_from_labels(hess_labels, len(atoms), sd.hessian_step)
        t_nm = float(sd.normal_mode_temperature or bias.temperature)
        nm = seeding.normal_mode_frames(atoms, hessian, t_nm, sd.normal_modes, seed=_seeds(settings.seed, 1)[0])
        labels += calls.label(nm, "seed_normal_modes")
    if sd.scan_points and sd.scan_steps:
        targets = np.linspace(min(bias.centers), max(bias.centers), sd.scan_points)
        kappa = float(sd.scan_kappa if sd.scan_kappa is not None else 4.0 * bias.kappa)
        made, _ = seeding.restrained_scan(lambda f: calls.label(f, "seed_scan"), atoms, start, bias.cv, targets,
                                          kappa, sd.scan_steps, max_step=sd.scan_max_step)
        labels += made
    good = [lab for lab in labels if lab.ok]
    if len(good) < 4:
        raise OracleError(f"only {len(good)} seed labels succeeded; check the start structure and the oracle")
    frames = [lab.to_atoms() for lab in good]
    for a in frames:
        a.info.update(round=0)
    rng = np.random.default_rng(_seeds(settings.seed, 2)[0])
    n_val = int(round(sd.validation_fraction * len(frames)))
    val = set(rng.choice(len(frames), size=n_val, replace=False).tolist()) if n_val else set()
    roles = ["validation" if k in val else "train" for k in range(len(frames))]
    data = Dataset.from_atoms(frames)
    tr = np.array([k for k, x in enumerate(roles) if x == "train"])
    va = np.array([k for k, x in enumerate(roles) if x == "validation"])
    t_label = time.perf_counter() - t0
    t1 = time.perf_counter()
    fit = refitter.fit(data, tr, va)
    calibration = Calibration.fit(model, data, va, min_frames=settings.select.min_validation)
    attach_calibration(model, calibration)
    t_fit = time.perf_counter() - t1
    # walkers start at the seed frame whose CV is nearest their window centre
    with torch.no_grad():
        s_all = bias.cv(State.from_atoms(frames)).double().numpy()
    w = settings.explore.walkers_per_window
    pos = np.stack([frames[int(np.argmin(np.abs(s_all - c)))].positions for c in bias.centers])
    walkers = np.repeat(pos, w, axis=0)
    rec = {"round": 0, "calls_this_round": calls.total, "calls_total": calls.total, "calls": calls.to_dict(),
           "n_seed_labels": len(frames), "n_validation": len(val), "seed_cv_range": [float(s_all.min()),
                                                                                       float(s_all.max())],
           "fit": {k: fit[k] for k in ("epochs", "path", "warm_start", "n_train", "seconds")}
           | {"final_train_loss": fit["train_loss"][-1]},
           "calibration": calibration.to_dict(), "validation": _validation_metrics(model, data, va),
           "seconds": {"label": t_label, "fit": t_fit}}
    rounds = [rec]
    log.info("seed: %d labels (%d reference calls), CV %.3f..%.3f; first fit %.1f s", len(frames), calls.total,
             s_all.min(), s_all.max(), t_fit)
    if ckpt is not None:
        ckpt.save(model, frames, roles, walkers, _record(rounds, calls, calibration, refitter, False, ""))
    if on_round is not None:
        on_round(rec)
    return frames, roles, walkers, rounds, calibration
