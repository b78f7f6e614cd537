"""Sampling that is exact in the reference distribution: surrogate proposals, reference acceptance.

Sparse reweighting corrects a surrogate ensemble after the fact and fails where the two
ensembles overlap poorly. Here the surrogate only *proposes*; the reference (an
:class:`~fesurf.oracles.Oracle` such as GFN2-xTB, or any Potential) decides, so every chain is a
Markov chain whose stationary distribution is exactly ``exp(-beta (U_ref + bias_k))``:

``proposal="md"`` (hybrid Monte Carlo with a surrogate Hamiltonian)
    Fresh Maxwell–Boltzmann momenta, then a short velocity-Verlet trajectory on
    ``H_sur = U_sur + bias + K``. The map is time-reversible and volume-preserving, so the
    Metropolis–Hastings test on the *reference* Hamiltonian ``H_ref = U_ref + bias + K``,
    ``min(1, exp(-beta dH_ref))``, is exact. ``dH_ref`` splits into the surrogate energy error
    along the trajectory ``dH_sur`` (integration error) plus the end-point difference
    ``ddU = dU(x') - dU(x)`` of ``dU = U_ref - U_sur``.
``proposal="mc"`` (nested Markov chain Monte Carlo, Iftimie–Minary–Tuckerman 2000, Gelb 2003)
    An inner random-walk Metropolis chain on ``U_sur + bias``; it is reversible for the
    surrogate ensemble, so the outer test is ``min(1, exp(-beta ddU))``.
``delayed_acceptance=True`` (Christen and Fox 2005, md proposals)
    First screen with the surrogate alone, ``min(1, exp(-beta dH_sur))``; only proposals that pass
    cost a reference call, and they pass the second stage with ``min(1, exp(-beta ddU))``.

``correction="linear"``
    A ridge model of dU, linear in pair features, fitted to the reference labels of the first third
    of equilibration (every proposal's end point is labelled anyway), is added to the surrogate;
    a narrower spread of ``ddU`` means higher acceptance for the same trajectory length.

Every replica (window x walker) of one State proposes in the same batched surrogate call; the
end points of all of them go to the reference in one batch (``oracle.label(configs,
executor=...)``). The proposal length (steps and timestep for md, inner steps and step size for
mc) is tuned on the fly per window (pooled over its replicas) towards ``target_acceptance`` in the
first half of equilibration (two thirds with a correction), then frozen (the average of the second
half of tuning); the rest of equilibration relaxes the chains with the frozen kernel, so the
production chain is exact and starts from a settled state. Acceptance for
Gaussian end-point errors of spread sigma is ``erfc(beta sigma / 2)`` (docs/notes/hybrid_mc.md);
:func:`gaussian_acceptance` and :func:`max_atoms_for_acceptance` give the closed forms.

:func:`hybrid_mc_sampling` runs umbrella windows (or unbiased walkers) this way and returns a
:class:`~fesurf.sampling.SampleSet` with ``u_kn = beta (U_ref + bias_k)`` and ``u_ref = beta U_ref``
at the *reference* level, so MBAR (:func:`fesurf.estimators.compute_pmf`) gives the reference PMF
directly, with no reweighting step; ``u_ref * kT`` is the reference energy of every stored frame
(labels for free). Its ``attrs["hybrid_mc"]`` hold per window: acceptance (with its batch-means
standard error) beside the Gaussian prediction from the measured beta*sigma, the spreads of
``dH_sur`` and ``ddU`` on the proposals, reference calls, statistical inefficiency in moves and
effective samples per reference call.

Units: timestep fs, step_size Angstrom, temperature K, energies eV (kT in reduced energies);
schedule steps are Monte Carlo moves.

Example
-------
>>> import numpy as np
>>> from fesurf.cv import POSITION
>>> from fesurf.potentials import DoubleWell1D
>>> from fesurf.state import State
>>> ss = hybrid_mc_sampling(DoubleWell1D(barrier=0.04, x0=1.1), DoubleWell1D(barrier=0.09),
...                         State(positions=[[0.0, 0, 0]], atomic_numbers=[1]), POSITION(0, "x"),
...                         centers=np.linspace(-1.2, 1.2, 5), kappa=1.0, temperature=300.0,
...                         dynamics=HybridMCDynamics(timestep=1.0, n_steps=10, seed=0),
...                         n_equilibration=50, n_production=100, stride=5, check_overlap=False)
>>> ss.N_k.tolist(), ss.attrs["energy_level"]
([20, 20, 20, 20, 20], 'reference')
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from scipy.special import erfc, erfcinv
from tqdm import tqdm

from ..cv import as_cv_list, evaluate_cvs
from ..errors import InputError
from ..md.integrators import ACCELERATION, make_rngs, reporter_due
from ..potentials.base import Potential
from ..state import State
from ..units import KB, MV2_TO_EV
from ._engine import Hooks, check_temperature, drive, open_samples, replicate_start
from .protocol import resolve
from .sampleset import SampleSet

log = logging.getLogger(__name__)

__all__ = ["HybridMCDynamics", "HybridMC", "hybrid_mc_sampling", "hybrid_mc_report", "format_report",
           "PairFeatureCorrection", "fit_pair_correction",
           "pooled_statistical_inefficiency", "sparse_bins",
           "gaussian_acceptance", "beta_sigma_for_acceptance", "max_atoms_for_acceptance"]

PROPOSALS = ("md", "mc")
CORRECTIONS = ("none", "linear")
#: moves per block for the batch-means standard error of the acceptance
BLOCK = 20
#: Robbins–Monro gain sequence of the tuner: gamma_t = (t + T0)^-KAPPA
_T0, _KAPPA = 10.0, 0.6


# --------------------------------------------------------------------------- closed forms
def gaussian_acceptance(beta_sigma):
    """Mean Metropolis acceptance ``erfc(beta sigma / 2)`` for Gaussian errors of spread sigma.

    ``beta_sigma`` is sigma/kT of ``U_ref - U_sur`` at a configuration, independent between a
    proposal's two end points (so their difference has spread sqrt(2) sigma); derived in
    docs/notes/hybrid_mc.md.

    >>> [round(float(gaussian_acceptance(b)), 3) for b in (0.5, 1.0, 2.0)]
    [0.724, 0.48, 0.157]
    """
    b = np.asarray(beta_sigma, dtype=np.float64)
    if np.any(~np.isfinite(b)) or np.any(b < 0):
        raise InputError(f"beta_sigma must be finite and >= 0 (kT), got {beta_sigma!r}")
    return erfc(b / 2.0)


def beta_sigma_for_acceptance(acceptance):
    """The beta*sigma (kT) at which :func:`gaussian_acceptance` equals ``acceptance`` (0 < a <= 1).

    >>> round(float(beta_sigma_for_acceptance(0.5)), 4)
    0.9539
    """
    a = np.asarray(acceptance, dtype=np.float64)
    if np.any(~(a > 0)) or np.any(a > 1):
        raise InputError(f"acceptance must lie in (0, 1], got {acceptance!r}")
    return 2.0 * erfcinv(a)


def max_atoms_for_acceptance(per_atom_error, temperature, acceptance: float = 0.5):
    """Largest system (atoms) whose end-point acceptance stays >= ``acceptance``.

    Uncorrelated per-atom surrogate errors of ``per_atom_error`` (eV/atom) add up to
    sigma = sqrt(N) per_atom_error, and erfc(beta sigma / 2) >= acceptance caps N.

    >>> round(float(max_atoms_for_acceptance(0.001, 300.0)))     # 1 meV/atom at 300 K
    608
    """
    e = float(per_atom_error)
    if not (np.isfinite(e) and e > 0):
        raise InputError(f"per_atom_error must be a positive energy (eV/atom), got {per_atom_error!r}")
    t = float(temperature)
    if not (np.isfinite(t) and t > 0):
        raise InputError(f"temperature must be positive (K), got {temperature!r}")
    return (float(beta_sigma_for_acceptance(acceptance)) * KB * t / e) ** 2


# --------------------------------------------------------------------------- settings
def _number(value, name, unit, *, lo=0.0, hi=None, inclusive=False):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number ({unit}), got {value!r}") from None
    ok = np.isfinite(v) and (v >= lo if inclusive else v > lo) and (hi is None or v <= hi)
    if not ok:
        bound = f">= {lo}" if inclusive else f"> {lo}"
        raise InputError(f"{name} must be {bound}{'' if hi is None else f' and <= {hi}'} ({unit}), got {value!r}")
    return v


def _whole(value, name, lo=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise InputError(f"{name} must be a whole number >= {lo}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class HybridMCDynamics:
    """Settings of the exact mover: surrogate proposals, reference Metropolis–Hastings acceptance.

    Parameters
    ----------
    proposal : "md" (velocity-Verlet trajectory on the surrogate with fresh Maxwell–Boltzmann
        momenta) or "mc" (inner random-walk Metropolis chain on the surrogate)
    timestep : fs, initial velocity-Verlet timestep (md)
    n_steps : initial proposal length: velocity-Verlet steps (md) or inner Metropolis steps (mc)
    step_size : Angstrom, initial Gaussian displacement per coordinate of the inner chain (mc)
    target_acceptance : reference acceptance the tuner aims at (0-1)
    surrogate_acceptance : target of the surrogate-only part: mean min(1, exp(-beta dH_sur)) of the
        trajectories (md, tunes the timestep) or the inner chain's acceptance (mc, tunes step_size);
        default 0.95 (md) / 0.4 (mc)
    tune : adapt the proposal per window during equilibration (frozen before production)
    tune_moves : moves of tuning (None: the first half of the protocol's equilibration, two thirds with
        a correction, so the rest relaxes the chains with the frozen kernel)
    max_steps : cap on the proposal length (steps; None: 4 x n_steps). In a harmonic-like window the
        acceptance stays high at any length, so the cap is what bounds the tuned trajectories
    max_timestep : fs, cap on the tuned timestep (None: 2 x timestep)
    jitter : each md trajectory uses timestep x U(1 - jitter, 1 + jitter) (state-independent, so
        exactness holds; it breaks periodic orbits in harmonic wells)
    delayed_acceptance : two-stage (surrogate, then reference) acceptance for md proposals
    correction : "none", or "linear": fit a ridge model of dU = U_ref - U_sur, linear in pair features
        (1/r_ij and r_ij), to the reference labels of every proposal in the first third of equilibration
        (labels for free) and propose on U_sur + dU_model from then on; frozen before production, so the
        chain stays exact, and a narrower spread of the end-point difference raises the acceptance
    seed : int; seeds every replica's stream (momenta, jitter, acceptance draws)

    Example
    -------
    >>> HybridMCDynamics(timestep=0.5, n_steps=20, target_acceptance=0.6).attrs()["dynamics"]
    'hybrid-mc'
    """

    proposal: str = "md"
    timestep: float = 0.5
    n_steps: int = 10
    step_size: float = 0.05
    target_acceptance: float = 0.6
    surrogate_acceptance: Optional[float] = None
    tune: bool = True
    tune_moves: Optional[int] = None
    max_steps: Optional[int] = None
    max_timestep: Optional[float] = None
    jitter: float = 0.2
    delayed_acceptance: bool = False
    correction: str = "none"
    seed: int = 0

    def __post_init__(self):
        if self.proposal not in PROPOSALS:
            raise InputError(f"proposal must be one of {PROPOSALS} ('md': surrogate velocity-Verlet trajectory, "
                             f"'mc': inner Metropolis chain on the surrogate), got {self.proposal!r}")
        _number(self.timestep, "timestep", "fs")
        _whole(self.n_steps, "n_steps")
        _number(self.step_size, "step_size", "Angstrom")
        _number(self.target_acceptance, "target_acceptance", "fraction", hi=1.0)
        if self.target_acceptance >= 1.0:
            raise InputError("target_acceptance must be < 1 (a chain that accepts everything does not move far)")
        if self.surrogate_acceptance is not None:
            _number(self.surrogate_acceptance, "surrogate_acceptance", "fraction", hi=1.0)
            if self.surrogate_acceptance >= 1.0:
                raise InputError("surrogate_acceptance must be < 1")
        if not isinstance(self.tune, (bool, np.bool_)):
            raise InputError(f"tune must be True or False, got {self.tune!r}")
        if self.tune_moves is not None:
            _whole(self.tune_moves, "tune_moves", lo=0)
        if self.max_steps is not None:
            _whole(self.max_steps, "max_steps")
        if self.n_steps > self.step_cap:
            raise InputError(f"n_steps ({self.n_steps}) exceeds max_steps ({self.max_steps})")
        if self.max_timestep is not None:
            _number(self.max_timestep, "max_timestep", "fs")
            if self.max_timestep < self.timestep:
                raise InputError(f"max_timestep ({self.max_timestep} fs) is below timestep ({self.timestep} fs)")
        _number(self.jitter, "jitter", "fraction", lo=0.0, hi=0.9, inclusive=True)
        if not isinstance(self.delayed_acceptance, (bool, np.bool_)):
            raise InputError(f"delayed_acceptance must be True or False, got {self.delayed_acceptance!r}")
        if self.delayed_acceptance and self.proposal == "mc":
            raise InputError("delayed_acceptance applies to md proposals; the mc proposal is already an exact "
                             "surrogate chain whose outer test uses the reference alone")
        if self.correction not in CORRECTIONS:
            raise InputError(f"correction must be one of {CORRECTIONS}, got {self.correction!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise InputError(f"seed must be an int (every stochastic protocol is seeded), got {self.seed!r}")

    @property
    def step_cap(self) -> int:
        """The longest proposal (steps) the tuner may choose."""
        return int(self.max_steps) if self.max_steps is not None else 4 * int(self.n_steps)

    @property
    def surrogate_target(self) -> float:
        if self.surrogate_acceptance is not None:
            return float(self.surrogate_acceptance)
        return 0.95 if self.proposal == "md" else 0.4

    def build(self, potential, temperature: float, n_systems: int, noise_seeds, *, reference=None, bias=None,
              executor=None, n_tune: int | None = None, n_equilibration: int = 0, tune_groups=None,
              n_fit: int = 0) -> "HybridMC":
        """The mover for ``n_systems`` replicas (``noise_seeds``: one int per replica).

        ``potential`` proposes (the surrogate, plus the bias when the protocol adds one); ``reference``
        (an Oracle or Potential, None: ``potential`` itself, i.e. plain hybrid MC) accepts, with
        ``bias`` (the per-replica bias Potential, None: none, or already inside ``potential`` when
        ``reference`` is None). ``n_tune`` moves are tuned (None: ``tune_moves``, else none);
        statistics of moves from ``n_equilibration`` on are the production ones. ``tune_groups`` (one int
        per replica, default: each replica alone) pools the tuner over replicas that share a target (the
        walkers of one window), which then share one proposal length. With ``correction="linear"`` the
        dU model is fitted on the labels of the first ``n_fit`` moves (0: no correction).
        """
        if n_tune is None:
            n_tune = self.tune_moves if self.tune_moves is not None else 0
        if self.correction != "none" and int(n_fit) < 1:
            raise InputError(f"correction={self.correction!r} is fitted on the labels of the first n_fit moves; "
                             "pass n_fit >= 1 (hybrid_mc_sampling uses the first third of equilibration)")
        return self._mover_class()(self, potential, temperature, n_systems, noise_seeds, reference=reference, bias=bias,
                        executor=executor, n_tune=int(n_tune) if self.tune else 0,
                        n_equilibration=int(n_equilibration), tune_groups=tune_groups,
                        n_fit=int(n_fit) if self.correction != "none" else 0)

    def _mover_class(self):
        return HybridMC

    def attrs(self) -> dict:
        """What a SampleSet records about the mover."""
        return {"dynamics": "hybrid-mc", "proposal": self.proposal, "timestep_fs": float(self.timestep),
                "n_steps": int(self.n_steps), "step_size_A": float(self.step_size),
                "target_acceptance": float(self.target_acceptance), "surrogate_acceptance": self.surrogate_target,
                "tune": bool(self.tune), "tune_moves": self.tune_moves, "max_steps": self.step_cap,
                "max_timestep_fs": float(self.max_timestep if self.max_timestep is not None else 2 * self.timestep),
                "jitter": float(self.jitter), "delayed_acceptance": bool(self.delayed_acceptance),
                "correction": self.correction, "seed": int(self.seed)}


# --------------------------------------------------------------------------- reference level
class _Reference:
    """Reference energies (eV) of selected systems in one batch; NaN where a call failed."""

    def __init__(self, reference, executor):
        from ..oracles.base import Oracle

        self.reference = reference
        self.executor = executor
        self.is_oracle = isinstance(reference, Oracle)
        if reference is not None and not self.is_oracle and not isinstance(reference, Potential):
            raise InputError(f"reference must be a fesurf Oracle (e.g. XTBOracle()) or a Potential, "
                             f"got {type(reference).__name__}")
        if executor is not None and not self.is_oracle:
            raise InputError("executor= runs oracle calls; the reference here is a Potential (evaluated in one "
                             "batched call), so drop executor or pass an Oracle")

    @property
    def name(self) -> str:
        if self.reference is None:
            return "proposal potential"
        return getattr(self.reference, "method", None) or type(self.reference).__name__

    def __call__(self, state: State, systems: np.ndarray) -> np.ndarray:
        if systems.size == 0:
            return np.zeros(0)
        whole = systems.size == state.n_systems and bool(np.all(systems == np.arange(state.n_systems)))
        sub = state if whole else state.select(systems.tolist())
        if self.is_oracle:
            labels = self.reference.label(sub.to_atoms(), executor=self.executor, progress=False)
            return np.array([lab.energy if lab.ok else np.nan for lab in labels], dtype=np.float64)
        with torch.no_grad():
            e = (self.reference if whole else self.reference.select_systems(systems.tolist())).energy(sub)
        return e.detach().to(torch.float64).numpy().copy()


# --------------------------------------------------------------------------- proposal correction
def _pair_index(n_atoms: int):
    i, j = np.triu_indices(n_atoms, 1)
    return torch.as_tensor(i), torch.as_tensor(j)


class PairFeatureCorrection(Potential):
    """A model of dU = U_ref - U_sur (eV), linear in standardised pair features of each system.

    Features: ``1/r_ij`` and ``r_ij`` (Angstrom) over all atom pairs of a system (a single atom: its
    Cartesian coordinates). ``energy = ((phi - mean) / scale) @ weights + offset``. All systems hold the
    same atoms in the same order (replicas of one molecule). Built by :func:`fit_pair_correction`.

    >>> corr = fit_pair_correction(np.random.default_rng(0).normal(size=(40, 3, 3)), np.zeros(40))
    >>> corr.weights.abs().max().item() < 1e-12
    True
    """

    def __init__(self, n_atoms: int, weights, offset, mean, scale):
        super().__init__()
        self.n_atoms = int(n_atoms)
        single = self.n_atoms == 1
        self.translation_invariant = self.rotation_invariant = not single
        for name, val in (("weights", weights), ("mean", mean), ("scale", scale)):
            self.register_buffer(name, torch.as_tensor(np.asarray(val, dtype=np.float64)))
        self.offset = float(offset)

    def features(self, state: State) -> torch.Tensor:
        pos = state.positions.reshape(state.n_systems, -1, 3)
        if pos.shape[1] != self.n_atoms:
            raise InputError(f"the correction was fitted for {self.n_atoms} atoms per system, got {pos.shape[1]}")
        if self.n_atoms == 1:
            return pos[:, 0, :]
        i, j = _pair_index(self.n_atoms)
        r = (pos[:, i] - pos[:, j]).norm(dim=-1)
        return torch.cat([1.0 / r, r], dim=1)

    def energy(self, state: State) -> torch.Tensor:
        z = (self.features(state) - self.mean.to(state.dtype)) / self.scale.to(state.dtype)
        return z @ self.weights.to(state.dtype) + self.offset


def _pair_features_np(positions: np.ndarray) -> np.ndarray:
    pos = np.asarray(positions, dtype=np.float64)
    if pos.shape[1] == 1:
        return pos[:, 0, :]
    i, j = np.triu_indices(pos.shape[1], 1)
    r = np.linalg.norm(pos[:, i] - pos[:, j], axis=2)
    return np.concatenate([1.0 / r, r], axis=1)


def fit_pair_correction(positions, delta_u, *, seed: int = 0, alphas=(1e-3, 1e-2, 1e-1, 1.0, 10.0),
                        return_info: bool = False):
    """Ridge fit of a :class:`PairFeatureCorrection` to labelled configurations.

    ``positions`` [n, n_atoms, 3] (Angstrom), ``delta_u`` [n] (eV, U_ref - U_sur). The ridge strength is
    the one of ``alphas`` with the lowest error on a seeded 25% hold-out; the model is then refitted on
    every label. ``return_info`` adds a dict with the hold-out RMSE (eV) of the model and of a constant.
    """
    x = np.asarray(positions, dtype=np.float64)
    y = np.asarray(delta_u, dtype=np.float64).reshape(-1)
    if x.ndim != 3 or x.shape[0] != y.size or x.shape[2] != 3:
        raise InputError(f"positions must be [n, n_atoms, 3] with one dU per configuration; got {x.shape} and "
                         f"{y.size} values")
    finite = np.isfinite(y) & np.isfinite(x).all(axis=(1, 2))
    x, y = x[finite], y[finite]
    phi = _pair_features_np(x)
    if y.size < max(8, phi.shape[1] // 4):
        raise InputError(f"{y.size} labels are too few to fit a correction with {phi.shape[1]} features; "
                         "equilibrate longer (the labels come from the first third of equilibration)")
    mean, scale = phi.mean(axis=0), phi.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = (phi - mean) / scale
    y0 = y.mean()
    order = np.random.default_rng(seed).permutation(y.size)
    hold, train = order[: max(2, y.size // 4)], order[max(2, y.size // 4):]

    def solve(rows, alpha):
        a = z[rows]
        return np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ (y[rows] - y0))

    errors = [float(np.sqrt(np.mean((z[hold] @ solve(train, a) + y0 - y[hold]) ** 2))) for a in alphas]
    best = int(np.argmin(errors))
    w = solve(np.arange(y.size), alphas[best])
    model = PairFeatureCorrection(x.shape[1], w, y0, mean, scale)
    if not return_info:
        return model
    info = {"n_labels": int(y.size), "alpha": float(alphas[best]), "holdout_rmse_eV": errors[best],
            "holdout_rmse_constant_eV": float(np.sqrt(np.mean((y[hold] - y[train].mean()) ** 2)))}
    return model, info


# --------------------------------------------------------------------------- the mover
_STATS = ("moves", "accepted", "prob_sum", "null", "calls", "failed_calls", "surrogate_failures",
          "n_ref", "s_ref", "ss_ref", "n_sur", "s_sur", "ss_sur", "n_du", "s_du", "ss_du",
          "blk_moves", "blk_acc", "n_blk", "s_blk", "ss_blk",
          "eq_moves", "eq_accepted", "eq_calls", "initial_calls")


class HybridMC:
    """Integrator-like mover for :func:`~fesurf.sampling._engine.drive` (built by
    :meth:`HybridMCDynamics.build`): each "step" is one Monte Carlo move of every replica.

    ``run(state, n_moves, reporters, progress)`` reports ``info`` with ``potential_energy``
    (U_ref + bias of the current state, eV), ``reference_energy`` (U_ref, eV), ``bias_energy`` and
    ``accepted`` (bool per replica, last move). ``rng_state``/``set_rng_state`` and
    ``get_extra``/``set_extra`` carry everything a resumed run needs (streams, current reference
    energies, tuned parameters, statistics), so a killed and resumed run equals an uninterrupted one.
    """

    stochastic = True

    def __init__(self, settings: HybridMCDynamics, potential, temperature, n_systems, noise_seeds, *,
                 reference=None, bias=None, executor=None, n_tune=0, n_equilibration=0, tune_groups=None,
                 n_fit=0):
        self.settings = settings
        self.potential = potential
        self.bias = bias
        self.reference = _Reference(reference, executor)
        self.temperature = float(temperature)
        self.beta = 1.0 / (KB * self.temperature)
        self.n = int(n_systems)
        self.n_tune = int(n_tune)
        self.n_equilibration = int(n_equilibration)
        self.step_count = 0
        self._rngs = make_rngs(noise_seeds, self.n)
        n = self.n
        groups = np.arange(n) if tune_groups is None else np.asarray(tune_groups, dtype=np.int64).reshape(-1)
        if groups.shape != (n,) or groups.min() < 0:
            raise InputError(f"tune_groups needs one non-negative int per replica ({n}), got shape {groups.shape}")
        self._groups = np.unique(groups, return_inverse=True)[1]
        self._group_size = np.bincount(self._groups).astype(np.float64)
        s = settings
        self.max_timestep = float(s.max_timestep if s.max_timestep is not None else 2 * s.timestep)
        self.timestep = np.full(n, float(s.timestep))
        self.n_steps = np.full(n, int(s.n_steps), dtype=np.int64)
        self.step_size = np.full(n, float(s.step_size))
        # tuner state: log of the trajectory time (md) / inner steps (mc), log of timestep / step size
        self._log_len = np.log(self.timestep * self.n_steps) if s.proposal == "md" else np.log(self.n_steps * 1.0)
        self._log_fine = np.log(self.timestep if s.proposal == "md" else self.step_size)
        self._avg = np.zeros((3, n))  # sums over the second half of tuning: count, log_len, log_fine
        self.stats = {k: np.zeros(n) for k in _STATS}
        self._frozen_logged = False
        self.n_fit = int(n_fit)
        self.correction: PairFeatureCorrection | None = None
        self.correction_info: dict = {}
        self._lab_x, self._lab_du = [], []  # reference labels collected for the correction (x' A, dU eV)
        self._x_ref = None  # positions the cached reference energies belong to
        self._u_ref = None  # [n] reference energy (eV) of the current state
        self.last_accepted = np.zeros(n, dtype=bool)

    # ------------------------------------------------------------ checkpoint state
    def rng_state(self):
        """JSON-able state of every replica's stream."""
        return [r.bit_generator.state for r in self._rngs]

    def set_rng_state(self, states):
        if states is None:
            return
        if len(states) != self.n:
            raise InputError(f"restored RNG state has {len(states)} replicas, this run has {self.n}")
        self._rngs = [np.random.Generator(np.random.PCG64()) for _ in states]
        for r, st in zip(self._rngs, states):
            r.bit_generator.state = st

    def get_extra(self):
        """(arrays, meta) for a checkpoint: current reference energies, tuned parameters, statistics."""
        arrays = {"timestep": self.timestep, "n_steps": self.n_steps, "step_size": self.step_size,
                  "log_len": self._log_len, "log_fine": self._log_fine, "avg": self._avg,
                  **{f"stat_{k}": v for k, v in self.stats.items()}}
        if self._u_ref is not None:
            arrays["u_ref"] = self._u_ref
            arrays["x_ref"] = self._x_ref.numpy()
        if self._lab_x:
            arrays["lab_x"], arrays["lab_du"] = np.concatenate(self._lab_x), np.concatenate(self._lab_du)
        meta = {"frozen_logged": self._frozen_logged}
        if self.correction is not None:
            c = self.correction
            arrays.update(corr_w=c.weights.numpy(), corr_mean=c.mean.numpy(), corr_scale=c.scale.numpy())
            meta.update(corr_offset=c.offset, corr_n_atoms=c.n_atoms, corr_info=self.correction_info)
        return {k: np.array(v) for k, v in arrays.items()}, meta

    def set_extra(self, arrays, meta):
        self.timestep = arrays["timestep"].astype(np.float64)
        self.n_steps = arrays["n_steps"].astype(np.int64)
        self.step_size = arrays["step_size"].astype(np.float64)
        self._log_len, self._log_fine = arrays["log_len"].copy(), arrays["log_fine"].copy()
        self._avg = arrays["avg"].copy()
        for k in _STATS:
            self.stats[k] = arrays[f"stat_{k}"].astype(np.float64)
        if "u_ref" in arrays:
            self._u_ref = arrays["u_ref"].astype(np.float64)
            self._x_ref = torch.from_numpy(arrays["x_ref"].copy())
        self._frozen_logged = bool(meta.get("frozen_logged", False))
        if "lab_x" in arrays:
            self._lab_x, self._lab_du = [arrays["lab_x"].copy()], [arrays["lab_du"].copy()]
        if "corr_w" in arrays:
            self.correction = PairFeatureCorrection(meta["corr_n_atoms"], arrays["corr_w"], meta["corr_offset"],
                                                    arrays["corr_mean"], arrays["corr_scale"])
            self.correction_info = dict(meta.get("corr_info", {}))

    # ------------------------------------------------------------ energies
    def _proposal_energy_and_forces(self, state: State):
        e, f = self.potential.energy_and_forces(state)
        if self.correction is not None:
            ec, fc = self.correction.energy_and_forces(state)
            e, f = e + ec, f + fc
        return e, f

    def _proposal_energy(self, state: State):
        with torch.no_grad():
            e = self.potential.energy(state)
            if self.correction is not None:
                e = e + self.correction.energy(state)
        return e

    def _bias(self, state: State) -> np.ndarray:
        if self.bias is None:
            return np.zeros(state.n_systems)
        with torch.no_grad():
            return self.bias.energy(state).detach().to(torch.float64).numpy().copy()

    def _reference(self, state: State, systems: np.ndarray, e_sur_total: np.ndarray | None = None) -> np.ndarray:
        """U_ref (eV) of the given systems; with no reference, the proposal potential minus the bias."""
        if self.reference.reference is None:
            return e_sur_total[systems] - self._bias(state)[systems]
        return self.reference(state, systems)

    def _kinetic(self, state: State, v: torch.Tensor) -> np.ndarray:
        per_atom = 0.5 * state.masses * (v * v).sum(dim=1) * MV2_TO_EV
        return state.sum_per_system(per_atom).numpy()

    # ------------------------------------------------------------ random draws (per replica, fixed order)
    def _uniform(self):
        return np.array([1.0 - r.random() for r in self._rngs])  # (0, 1]

    def _normals(self, slices, active=None):
        parts = []
        for i, (r, (a, b)) in enumerate(zip(self._rngs, slices)):
            if active is None or active[i]:
                parts.append(r.standard_normal((b - a, 3)))
            else:
                parts.append(np.zeros((b - a, 3)))
        return torch.from_numpy(np.concatenate(parts))

    # ------------------------------------------------------------ proposals
    def _propose_md(self, work: State, e0: np.ndarray, f0: torch.Tensor):
        """Velocity-Verlet trajectories of every replica; returns (x', v0, v', e_sur_total', f', failed)."""
        sl = self._slices
        # one jitter draw per replica and move (also at jitter 0: the stream layout never changes)
        dt = self.timestep * (1.0 + self.settings.jitter * (2.0 * self._uniform() - 1.0))
        z = self._normals(sl)
        v0 = z * torch.sqrt(KB * self.temperature / (work.masses * MV2_TO_EV))[:, None]
        x, v, f = work.positions.clone(), v0.clone(), f0.clone()
        inv_m = (ACCELERATION / work.masses)[:, None]
        n_max = int(self.n_steps.max())
        e = e0.copy()
        sys = work.system_index
        for k in range(n_max):
            h = torch.from_numpy(np.where(k < self.n_steps, dt, 0.0))[sys][:, None]
            v = v + (0.5 * h) * f * inv_m
            x = x + h * v
            energy, f = self._proposal_energy_and_forces(work.replace(positions=x))
            v = v + (0.5 * h) * f * inv_m
            e = energy.detach().to(torch.float64).numpy()
        finite_x = torch.isfinite(work.sum_per_system(x.abs().sum(dim=1))).numpy()
        failed = ~(np.isfinite(e) & finite_x)
        return x.detach(), v0, v.detach(), e.copy(), f.detach(), failed

    def _propose_mc(self, work: State, e0: np.ndarray):
        """Inner Metropolis chains on the surrogate; returns (x', e_sur_total', inner acceptance, moved)."""
        sl = self._slices
        x = work.positions.clone()
        e = e0.copy()
        acc = np.zeros(self.n)
        sys = work.system_index
        n_max = int(self.n_steps.max())
        for k in range(n_max):
            active = k < self.n_steps
            z = self._normals(sl, active)
            u = np.array([1.0 - r.random() if a else 1.0 for r, a in zip(self._rngs, active)])
            trial = x + torch.from_numpy(self.step_size)[sys][:, None] * z
            et = self._proposal_energy(work.replace(positions=trial)).detach().to(torch.float64).numpy()
            with np.errstate(over="ignore", invalid="ignore"):
                ok = active & np.isfinite(et) & (np.log(u) < -self.beta * (et - e))
            x = torch.where(torch.from_numpy(ok)[sys][:, None], trial, x)
            e = np.where(ok, et, e)
            acc += ok
        inner = acc / np.maximum(self.n_steps, 1)
        return x, e, inner, acc > 0

    # ------------------------------------------------------------ one move
    def _move(self, work: State):
        s = self.settings
        beta = self.beta
        n = self.n
        sys = work.system_index
        production = self.step_count >= self.n_equilibration
        st = self.stats
        md = s.proposal == "md"
        if md:
            x1, v0, v1, e1, f1, failed = self._propose_md(work, self._e, self._f)
            moved = ~failed
            d_sur = (e1 - self._e) + (self._kinetic(work, v1) - self._kinetic(work, v0))
            inner = None
        else:
            x1, e1, inner, moved = self._propose_mc(work, self._e)
            f1 = None
            failed = np.zeros(n, dtype=bool)
            d_sur = np.zeros(n)  # the inner chain is reversible for the surrogate: no surrogate term
        new = work.replace(positions=x1)
        need = moved.copy()
        if s.delayed_acceptance:
            u1 = self._uniform()
            with np.errstate(over="ignore", invalid="ignore"):
                need &= np.log(u1) < -beta * d_sur
        b1 = self._bias(new)
        u_ref1 = np.full(n, np.nan)
        idx = np.flatnonzero(need)
        if idx.size:
            u_ref1[idx] = self._reference(new, idx, e1)
        calls = need.astype(np.float64) if self.reference.reference is not None else np.zeros(n)
        if self.step_count < self.n_fit and idx.size:  # labels for the proposal correction (dU at x')
            good = idx[np.isfinite(u_ref1[idx])]
            self._lab_x.append(x1.numpy().reshape(n, -1, 3)[good].copy())
            self._lab_du.append((u_ref1 - (e1 - b1))[good].copy())
        ref_failed = need & ~np.isfinite(u_ref1)
        # end-point difference of dU = U_ref - U_sur (the bias cancels), eV
        d_du = (u_ref1 + b1 - e1) - (self._u_ref + self._b - self._e)
        # -log(acceptance ratio) / beta: md = surrogate energy error + end-point difference; mc = end points
        d_ref = d_sur + d_du
        u = self._uniform()
        ok = need & np.isfinite(d_du)
        with np.errstate(over="ignore", invalid="ignore"):
            # Christen-Fox second stage tests d_du alone (the first stage took care of d_sur)
            test = d_du if s.delayed_acceptance else d_ref
            accept = ok & (np.log(u) < -beta * test)
            # acceptance probability (delayed: an unbiased estimate, 1{stage 1 passed} x stage-2 probability)
            prob = np.where(ok, np.minimum(1.0, np.exp(-beta * np.where(ok, test, 0.0))), 0.0)
        null = ~moved & ~failed  # mc: the inner chain never moved; the state stays, no reference call
        prob = np.where(null, 1.0, prob)

        if production:
            real = ~null
            st["moves"] += real
            st["accepted"] += accept & real
            st["prob_sum"] += np.where(real, prob, 0.0)
            st["null"] += null
            st["calls"] += calls
            st["failed_calls"] += ref_failed
            st["surrogate_failures"] += failed
            for key, val, mask in (("ref", d_ref, ok), ("du", d_du, ok),
                                   ("sur", d_sur, moved & np.isfinite(d_sur) & md)):
                bv = np.where(mask, beta * np.where(mask, val, 0.0), 0.0)
                st["n_" + key] += mask
                st["s_" + key] += bv
                st["ss_" + key] += bv * bv
            st["blk_moves"] += real
            st["blk_acc"] += accept & real
            full = st["blk_moves"] >= BLOCK
            frac = np.where(full, st["blk_acc"] / np.maximum(st["blk_moves"], 1), 0.0)
            st["n_blk"] += full
            st["s_blk"] += frac
            st["ss_blk"] += frac * frac
            st["blk_moves"] = np.where(full, 0.0, st["blk_moves"])
            st["blk_acc"] = np.where(full, 0.0, st["blk_acc"])
        else:
            st["eq_moves"] += 1
            st["eq_accepted"] += accept
            st["eq_calls"] += calls

        if self.step_count < self.n_tune:  # tuning in equilibration only; frozen afterwards
            self._adapt(prob, d_sur, moved, inner)

        acc_atoms = torch.from_numpy(accept)[sys][:, None]
        positions = torch.where(acc_atoms, x1, work.positions)
        if md:
            self._f = torch.where(acc_atoms, f1, self._f)
            velocities = torch.where(acc_atoms, v1, v0)
        else:
            velocities = work.velocities if work.velocities is not None else torch.zeros_like(positions)
        self._e = np.where(accept, e1, self._e)
        self._b = np.where(accept, b1, self._b)
        self._u_ref = np.where(accept, u_ref1, self._u_ref)
        self.last_accepted = accept
        out = work.replace(positions=positions, velocities=velocities)
        if self.n_fit and self.step_count == self.n_fit - 1:
            self._fit_correction(out)
        return out

    def _fit_correction(self, work: State):
        x = np.concatenate(self._lab_x) if self._lab_x else np.zeros((0, work.n_atoms // self.n, 3))
        du = np.concatenate(self._lab_du) if self._lab_du else np.zeros(0)
        self.correction, info = fit_pair_correction(x, du, seed=self.settings.seed, return_info=True)
        kt = KB * self.temperature
        info.update(holdout_rmse_kT=info["holdout_rmse_eV"] / kt,
                    holdout_rmse_constant_kT=info["holdout_rmse_constant_eV"] / kt, fitted_after_moves=self.n_fit)
        self.correction_info = info
        self._lab_x, self._lab_du = [], []
        self._avg[:] = 0.0  # tuning averages from the uncorrected proposals no longer apply
        self._surrogate_at(work)  # the proposal Hamiltonian changed: new surrogate energies and forces
        log.info("hybrid MC: dU correction fitted on %d reference labels of the first %d moves (hold-out RMSE "
                 "%.2f kT, constant model %.2f kT); proposals use U_sur + dU_model from now on",
                 info["n_labels"], self.n_fit, info["holdout_rmse_kT"], info["holdout_rmse_constant_kT"])

    def _group_mean(self, values):
        return (np.bincount(self._groups, weights=values) / self._group_size)[self._groups]

    def _adapt(self, prob, d_sur, moved, inner):
        s = self.settings
        # the gain sequence (and the averaging window) restart when the correction changes the proposals
        t0 = self.n_fit if self.correction is not None else 0
        t = self.step_count - t0
        gamma = (t + _T0) ** (-_KAPPA)
        prob = self._group_mean(prob)
        if s.proposal == "md":
            with np.errstate(over="ignore", invalid="ignore"):
                a_sur = np.where(moved & np.isfinite(d_sur), np.minimum(1.0, np.exp(-self.beta * d_sur)), 0.0)
            a_sur = self._group_mean(a_sur)
            self._log_fine = np.minimum(self._log_fine + gamma * (a_sur - s.surrogate_target),
                                        math.log(self.max_timestep))
            self._log_len = self._log_len + gamma * (prob - s.target_acceptance)
            self._log_len = np.clip(self._log_len, self._log_fine, self._log_fine + math.log(s.step_cap))
        else:
            self._log_fine = self._log_fine + gamma * (self._group_mean(inner) - s.surrogate_target)
            self._log_len = np.clip(self._log_len + gamma * (prob - s.target_acceptance), 0.0, math.log(s.step_cap))
        if t >= (self.n_tune - t0) // 2:
            self._avg += np.stack([np.ones(self.n), self._log_len, self._log_fine])
        last = self.step_count == self.n_tune - 1
        if last:  # freeze: the average of the second half of tuning
            count = np.maximum(self._avg[0], 1.0)
            self._log_len, self._log_fine = self._avg[1] / count, self._avg[2] / count
        self._apply_tuning()
        if last:
            self._log_frozen()

    def _apply_tuning(self):
        s = self.settings
        if s.proposal == "md":
            self.timestep = np.exp(self._log_fine)
            self.n_steps = np.clip(np.rint(np.exp(self._log_len) / self.timestep), 1, s.step_cap).astype(np.int64)
        else:
            self.step_size = np.exp(self._log_fine)
            self.n_steps = np.clip(np.rint(np.exp(self._log_len)), 1, s.step_cap).astype(np.int64)

    def _log_frozen(self):
        self._frozen_logged = True
        if self.settings.proposal == "md":
            log.info("hybrid MC tuning frozen after %d moves: timestep %s fs, steps %s", self.n_tune,
                     np.round(self.timestep, 3).tolist(), self.n_steps.tolist())
        else:
            log.info("hybrid MC tuning frozen after %d moves: step size %s A, inner steps %s", self.n_tune,
                     np.round(self.step_size, 4).tolist(), self.n_steps.tolist())

    # ------------------------------------------------------------ run
    def _surrogate_at(self, work: State):
        """Cache the proposal (surrogate + correction + bias) energy, and forces for md, at ``work``."""
        if self.settings.proposal == "md":
            e, f = self._proposal_energy_and_forces(work)
            self._f = f.detach()
        else:
            e = self._proposal_energy(work)
        self._e = e.detach().to(torch.float64).numpy().copy()

    def _prepare(self, work: State):
        """Surrogate energy/forces, bias and (when missing) reference energy of the current state."""
        self._slices = work.atom_slices()
        self._surrogate_at(work)
        self._b = self._bias(work)
        if self._u_ref is None or self._x_ref is None or not torch.equal(self._x_ref, work.positions):
            every = np.arange(self.n)
            self._u_ref = self._reference(work, every, self._e)
            if self.reference.reference is not None:
                self.stats["initial_calls"] += 1
            bad = ~np.isfinite(self._u_ref)
            if bad.any():
                from ..errors import SimulationError

                raise SimulationError(f"the reference ({self.reference.name}) failed on the current configuration "
                                      f"of replica(s) {np.flatnonzero(bad).tolist()}: the chain needs a finite "
                                      "reference energy to start from; check the start structure")

    def info(self) -> dict:
        u = torch.from_numpy(self._u_ref.copy())
        b = torch.from_numpy(self._b.copy())
        return {"potential_energy": u + b, "reference_energy": u, "bias_energy": b,
                "surrogate_energy": torch.from_numpy(self._e.copy()), "accepted": self.last_accepted.copy()}

    def run(self, state: State, n_steps: int, reporters=(), progress=None) -> State:
        """Make ``n_steps`` moves of every replica from ``state``; returns the final State."""
        if int(n_steps) < 0:
            raise InputError("n_steps must be >= 0")
        if state.n_systems != self.n:
            raise InputError(f"the mover was built for {self.n} replicas, the State has {state.n_systems}")
        work = state.clone()
        if work.velocities is None:
            work.velocities = torch.zeros_like(work.positions)
        if self.n_tune and self.step_count >= self.n_tune and not self._frozen_logged:
            self._log_frozen()
        self._prepare(work)
        for rep in reporters:
            rep.report(self.step_count, work, self.info())
        start = self.step_count
        bar = tqdm(total=int(n_steps), disable=(not progress) if progress is not None else None,
                   desc="hybrid MC", unit="move", mininterval=0.5)
        for _ in range(int(n_steps)):
            work = self._move(work)
            self.step_count += 1
            self._x_ref = work.positions.clone()
            for rep in reporters:
                if reporter_due(rep, self.step_count, start):
                    rep.report(self.step_count, work, self.info())
            bar.update(1)
        bar.close()
        self._x_ref = work.positions.clone()
        return work.clone()


# --------------------------------------------------------------------------- diagnostics
def _mean_sd(n, s, ss):
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, s / np.maximum(n, 1), np.nan)
        var = np.where(n > 1, (ss - n * mean * mean) / np.maximum(n - 1, 1), np.nan)
    return mean, np.sqrt(np.maximum(var, 0.0))


def pooled_statistical_inefficiency(chains) -> float:
    """Statistical inefficiency g = 1 + 2 tau (frames) pooled over several chains of one target.

    The same estimator as pymbar's ``timeseries.statistical_inefficiency_multiple`` (the fluctuation
    autocorrelation averaged over chains, normalised by the pooled variance, summed with weights
    ``1 - t/N`` until it first crosses zero after lag 10), vectorised with FFTs for equal-length chains
    (pymbar's loop is used for ragged ones). Per-chain estimates from short chains are biased low; pooling
    many walkers of one window is what makes g usable. A constant series gives its length (no information).

    >>> rng = np.random.default_rng(0)
    >>> x = np.zeros((64, 400))
    >>> for t in range(1, 400):
    ...     x[:, t] = 0.8 * x[:, t - 1] + rng.standard_normal(64)
    >>> round(pooled_statistical_inefficiency(x), 1)      # AR(1), phi = 0.8: g = (1 + phi) / (1 - phi) = 9
    9.7
    """
    from .._pymbar import timeseries

    xs = [np.asarray(x, dtype=np.float64).reshape(-1) for x in chains]
    n = max(x.size for x in xs)
    if n < 4 or not all(np.isfinite(x).all() for x in xs) or max(np.ptp(x) for x in xs) == 0:
        return float(max(n, 1))
    if len({x.size for x in xs}) > 1:
        return max(1.0, float(timeseries.statistical_inefficiency_multiple(xs, fast=False)))
    a = np.stack(xs)
    d = a - a.mean()
    var = np.mean(d * d)
    f = np.fft.rfft(d, n=2 * n, axis=1)
    acov = np.fft.irfft(f * np.conj(f), n=2 * n, axis=1)[:, :n].sum(axis=0)
    lags = np.arange(1, n - 1)
    c = acov[1:n - 1] / (a.shape[0] * (n - lags)) / var
    stop = np.flatnonzero((c <= 0.0) & (lags > 10))
    end = stop[0] if stop.size else c.size
    return max(1.0, float(1.0 + 2.0 * np.sum(c[:end] * (1.0 - lags[:end] / n))))


def hybrid_mc_report(stats: dict, window_of_system, *, samples: SampleSet | None = None, stride: int = 1,
                     n_systems: int | None = None) -> dict:
    """Per-window acceptance, Gaussian prediction, error spreads, calls and sampling efficiency.

    ``stats`` are the mover's per-replica statistics; ``window_of_system`` the window of every replica.
    With ``samples`` (frames stored every ``stride`` moves, all replicas per record) the statistical
    inefficiency g (in moves, pooled over the replicas of a window) of the first CV and of the reduced
    potential gives effective samples = sampled moves / g, effective samples per reference call, and
    the integrated autocorrelation in reference calls (g x calls per move).
    """
    win = np.asarray(window_of_system, dtype=np.int64)
    k = int(win.max()) + 1
    n_sys = win.size

    def per_window(name):
        return np.bincount(win, weights=np.asarray(stats[name], dtype=np.float64), minlength=k)

    moves, accepted = per_window("moves"), per_window("accepted")
    with np.errstate(invalid="ignore", divide="ignore"):
        acceptance = np.where(moves > 0, accepted / np.maximum(moves, 1), np.nan)
        prob = np.where(moves > 0, per_window("prob_sum") / np.maximum(moves, 1), np.nan)
    blk_mean, blk_sd = _mean_sd(per_window("n_blk"), per_window("s_blk"), per_window("ss_blk"))
    nblk = per_window("n_blk")
    acc_se = np.where(nblk > 1, blk_sd / np.sqrt(np.maximum(nblk, 1)), np.nan)
    out = {"window": list(range(k)), "moves": moves.tolist(), "acceptance": acceptance.tolist(),
           "acceptance_se": acc_se.tolist(), "mean_acceptance_probability": prob.tolist()}
    for key, label in (("ref", "log_ratio"), ("du", "endpoint_difference"), ("sur", "integration_error")):
        _, sd = _mean_sd(per_window("n_" + key), per_window("s_" + key), per_window("ss_" + key))
        out[f"sd_beta_{label}"] = sd.tolist()
    # Gaussian log acceptance ratio with <exp(-x)> = 1 has mean s^2/2 and acceptance 2 Phi(-s/2), which is
    # erfc(beta sigma / 2) with beta sigma = s / sqrt(2) (the per-configuration spread for independent ends)
    beta_sigma = np.asarray(out["sd_beta_log_ratio"]) / math.sqrt(2.0)
    out["beta_sigma"] = beta_sigma.tolist()
    out["beta_sigma_endpoint"] = (np.asarray(out["sd_beta_endpoint_difference"]) / math.sqrt(2.0)).tolist()
    with np.errstate(invalid="ignore"):
        out["predicted_acceptance"] = np.where(np.isfinite(beta_sigma), erfc(np.nan_to_num(beta_sigma) / 2.0),
                                               np.nan).tolist()
    calls_prod = per_window("calls")
    calls_total = calls_prod + per_window("eq_calls") + per_window("initial_calls")
    out.update(reference_calls=calls_total.tolist(), reference_calls_production=calls_prod.tolist(),
               failed_reference_calls=per_window("failed_calls").tolist(),
               surrogate_failures=per_window("surrogate_failures").tolist(), null_proposals=per_window("null").tolist(),
               equilibration_acceptance=np.where(per_window("eq_moves") > 0, per_window("eq_accepted")
                                                 / np.maximum(per_window("eq_moves"), 1), np.nan).tolist())
    out["reference_calls_total"] = float(calls_total.sum())
    out["per_system"] = {"moves": np.asarray(stats["moves"]).tolist(), "accepted": np.asarray(stats["accepted"]).tolist(),
                         "calls": np.asarray(stats["calls"]).tolist()}
    if samples is not None and samples.n_frames:
        n_sys = n_systems or n_sys
        nf = samples.n_frames
        if nf % n_sys:
            raise InputError(f"{nf} frames are not whole records of {n_sys} replicas")
        # frames are stored record by record, every replica once per record: [records, replicas]
        series = {"cv": samples.cv[:, 0] if samples.n_cv else None,
                  "energy": samples.u_kn[samples.state_index, np.arange(nf)]}
        frames_w = np.bincount(win, minlength=k).astype(np.float64) * (nf // n_sys)
        calls_per_move = np.where(moves > 0, calls_prod / np.maximum(moves, 1), np.nan)
        for tag, values in series.items():
            if values is None:
                continue
            by_replica = values.reshape(nf // n_sys, n_sys).T
            g_win = np.full(k, np.nan)
            for w in range(k):
                g_win[w] = pooled_statistical_inefficiency(by_replica[win == w]) * stride  # in moves
            n_eff = frames_w * stride / g_win
            with np.errstate(divide="ignore", invalid="ignore"):
                per_call = np.where(calls_prod > 0, n_eff / calls_prod, np.nan)
                out[f"statistical_inefficiency_moves_{tag}"] = g_win.tolist()
                out[f"effective_samples_{tag}"] = n_eff.tolist()
                out[f"effective_samples_per_reference_call_{tag}"] = per_call.tolist()
                out[f"reference_calls_per_effective_sample_{tag}"] = np.where(per_call > 0, 1.0 / per_call,
                                                                              np.nan).tolist()
                out[f"autocorrelation_in_reference_calls_{tag}"] = (g_win * calls_per_move).tolist()
    return out


def sparse_bins(pmf, min_samples: int = 10) -> np.ndarray:
    """Bins of a reference-level PMF (from :func:`~fesurf.estimators.compute_pmf`) to flag: no data, or fewer
    than ``min_samples`` decorrelated frames (the estimate's sigma is unreliable there). The exact-sampling
    counterpart of the reweighting flags (Kish ESS, beta*sigma(dU)), which do not apply: nothing is reweighted.

    >>> sparse_bins(compute_pmf(ss, bins=20)).sum()       # doctest: +SKIP
    0
    """
    counts = np.asarray(pmf.diagnostics.get("counts"), dtype=np.float64)
    values = np.asarray(pmf.values, dtype=np.float64)
    if counts.shape != values.shape:
        raise InputError("the PMF carries no per-bin counts (diagnostics['counts']); compute it with compute_pmf")
    return ~np.isfinite(values) | (counts < int(min_samples))


def format_report(report: dict, temperature: float | None = None, n_atoms: int | None = None) -> str:
    """A table of :func:`hybrid_mc_report`: measured acceptance beside erfc(beta sigma / 2).

    >>> print(format_report(ss.attrs["hybrid_mc"]))       # doctest: +SKIP
    """
    rows = [f"{'window':>6} {'moves':>7} {'accept':>7} {'± se':>6} {'erfc(bs/2)':>10} {'beta*sigma':>10} "
            f"{'sd b*ddU':>8} {'sd b*dHsur':>10} {'ref calls':>9} {'g moves':>8} {'calls/eff':>9}"]
    g = report.get("statistical_inefficiency_moves_cv", [np.nan] * len(report["window"]))
    cpe = report.get("reference_calls_per_effective_sample_cv", [np.nan] * len(report["window"]))
    for i, w in enumerate(report["window"]):
        rows.append(f"{w:>6d} {report['moves'][i]:>7.0f} {report['acceptance'][i]:>7.3f} "
                    f"{report['acceptance_se'][i]:>6.3f} {report['predicted_acceptance'][i]:>10.3f} "
                    f"{report['beta_sigma'][i]:>10.3f} {report['sd_beta_endpoint_difference'][i]:>8.3f} "
                    f"{report['sd_beta_integration_error'][i]:>10.3f} {report['reference_calls'][i]:>9.0f} "
                    f"{g[i]:>8.2f} {cpe[i]:>9.2f}")
    if temperature is not None and n_atoms:
        bs = np.nanmedian(report["beta_sigma"])
        if np.isfinite(bs) and bs > 0:
            per_atom = bs * KB * float(temperature) / math.sqrt(n_atoms) * 1e3
            rows.append(f"median beta*sigma {bs:.2f} kT on {n_atoms} atoms = {per_atom:.2f} meV/atom if uncorrelated; "
                        f"50% acceptance caps the system at ~"
                        f"{max_atoms_for_acceptance(per_atom * 1e-3, temperature):.0f} atoms")
    return "\n".join(rows)


# --------------------------------------------------------------------------- the protocol
class _BoundDynamics:
    """HybridMCDynamics bound to a reference, a bias and an executor, in the form drive() builds."""

    def __init__(self, settings, reference, bias, executor, n_tune, n_equilibration, tune_groups, n_fit):
        self.settings, self.reference, self.bias, self.executor = settings, reference, bias, executor
        self.n_tune, self.n_equilibration, self.tune_groups, self.n_fit = n_tune, n_equilibration, tune_groups, n_fit
        self.seed = settings.seed
        self.mover: HybridMC | None = None

    def build(self, potential, temperature, n_systems, noise_seeds):
        self.mover = self.settings.build(potential, temperature, n_systems, noise_seeds, reference=self.reference,
                                         bias=self.bias, executor=self.executor, n_tune=self.n_tune,
                                         n_equilibration=self.n_equilibration, tune_groups=self.tune_groups,
                                         n_fit=self.n_fit)
        return self.mover

    def attrs(self):
        return self.settings.attrs()


def _split_settings(settings: dict):
    names = set(HybridMCDynamics.__dataclass_fields__)
    return {k: v for k, v in settings.items() if k in names}, {k: v for k, v in settings.items() if k not in names}


def hybrid_mc_sampling(surrogate, reference, state: State, cvs, centers=None, kappa=None, *, temperature,
                       dynamics=None, schedule=None, storage=None, executor=None, replicas_per_window: int = 1,
                       check_overlap: bool = True, on_checkpoint=None, progress=None, **settings) -> SampleSet:
    """Exact reference-level sampling of umbrella windows (or unbiased walkers) with surrogate proposals.

    Parameters
    ----------
    surrogate : Potential
        Proposes moves (U_sur, eV), e.g. a committee trained at a cheaper level.
    reference : Oracle or Potential
        Accepts them (U_ref, eV): every end point is labelled in one batch per move,
        ``reference.label(configs, executor=executor)`` for an Oracle.
    state : State
        One system (copied to every replica) or one per replica.
    cvs : CV, spec dict or list of them; recorded every frame and restrained by the windows
    centers, kappa : umbrella windows as in :func:`~fesurf.sampling.umbrella_sampling` (CV units,
        eV/unit^2); both None for unbiased sampling (one state, ``replicas_per_window`` walkers)
    temperature : K
    dynamics : :class:`HybridMCDynamics`, or its fields as keywords (``proposal``, ``timestep`` ...)
    schedule : :class:`~fesurf.sampling.protocol.Schedule` in moves, or ``n_equilibration`` (default
        200; tuning in its first half), ``n_production`` (2000), ``stride`` (1), ``checkpoint_every``
    storage : :class:`~fesurf.sampling.protocol.Storage`, or ``path``, ``resume``, ``overwrite``,
        ``store_positions``
    executor : concurrent.futures.Executor for the oracle's calls (None: in process)
    replicas_per_window : independent chains per window (system ``k * replicas_per_window + r``); for
        unbiased sampling a start State of several systems gives one walker per system

    Returns
    -------
    SampleSet
        At the reference level: ``u_kn = beta (U_ref + bias_k)``, ``u_ref = beta U_ref`` (kT), so
        ``compute_pmf(samples)`` is the reference PMF and ``u_ref * kT`` the reference energy of every
        frame; ``attrs["hybrid_mc"]`` holds :func:`hybrid_mc_report`.

    Example
    -------
    >>> from fesurf.cv import distance_difference                       # doctest: +SKIP
    >>> from fesurf.data import load_malonaldehyde_gfn1_committee, malonaldehyde   # doctest: +SKIP
    >>> from fesurf.oracles import XTBOracle                            # doctest: +SKIP
    >>> ss = hybrid_mc_sampling(load_malonaldehyde_gfn1_committee(), XTBOracle(),  # doctest: +SKIP
    ...                         State.from_atoms(malonaldehyde()), distance_difference([0, 5], [4, 5]),
    ...                         centers=np.linspace(-0.9, 0.9, 16), kappa=3.0, temperature=300.0,
    ...                         dynamics=HybridMCDynamics(timestep=0.5, n_steps=20))
    """
    from ..bias import RESTRAINT

    mine, rest = _split_settings(settings)
    if dynamics is None:
        dynamics = HybridMCDynamics(**mine)
    elif mine:
        raise InputError(f"give either dynamics= or the keywords {sorted(mine)}, not both")
    if not isinstance(dynamics, HybridMCDynamics):
        raise InputError(f"dynamics must be a HybridMCDynamics, got {type(dynamics).__name__}")
    _, schedule, storage = resolve(dynamics=dynamics, schedule=schedule, storage=storage,
                                   defaults={"n_equilibration": 200, "n_production": 2000, "stride": 1}, **rest)
    if not isinstance(surrogate, Potential):
        raise InputError(f"surrogate must be a fesurf Potential, got {type(surrogate).__name__}")
    if reference is None:
        raise InputError("reference is required (an Oracle such as XTBOracle() or a Potential); for plain hybrid MC "
                         "on one potential use umbrella_sampling(..., dynamics=HybridMCDynamics(...))")
    _Reference(reference, executor)  # validates the pair early
    cvs = as_cv_list(cvs)
    if (centers is None) != (kappa is None):
        raise InputError("give both centers and kappa (umbrella windows) or neither (unbiased sampling)")
    reps = replicas_per_window
    if isinstance(reps, bool) or not isinstance(reps, (int, np.integer)) or reps < 1:
        raise InputError(f"replicas_per_window must be a whole number >= 1, got {replicas_per_window!r}")
    if centers is not None:
        from .umbrella import _restraint

        bias = _restraint(cvs, centers, kappa)
        k = bias.n_windows
    else:
        bias, k = None, 1
        if reps == 1 and isinstance(state, State) and state.n_systems > 1:
            reps = state.n_systems  # unbiased: one walker per system of the start State
    temperature = check_temperature(temperature, k)
    n_sys = k * reps
    window_of_system = np.repeat(np.arange(k), reps)
    system_bias = None if bias is None else (bias if reps == 1 else bias.select_systems(window_of_system.tolist()))
    start = replicate_start(state, n_sys)
    for c in cvs:
        c.validate(start)
    n_atoms = int(start.atoms_per_system[0])
    beta = 1.0 / (KB * temperature)
    if bias is not None:
        params = [{"type": "RESTRAINT", "at": bias.at[min(i, bias.at.shape[0] - 1)].tolist(),
                   "kappa": bias.kappa[min(i, bias.kappa.shape[0] - 1)].tolist()} for i in range(k)]
    else:
        params = [{"type": "unbiased"}]
    ref = _Reference(reference, executor)
    attrs = {"protocol": "hybrid_mc", **dynamics.attrs(), **schedule.attrs(), "replicas_per_window": int(reps),
             "surrogate": type(surrogate).__name__, "reference": ref.name, "energy_level": "reference",
             "energy_convention": "u_kn = beta (U_ref + bias_k); u_ref = beta U_ref (the reference level: MBAR gives "
                                  "the reference PMF directly, u_ref kT is each frame's reference energy)"}
    samples = open_samples(storage.path, resume=storage.resume, overwrite=storage.overwrite, create_kwargs=dict(
        n_states=k, temperature=temperature, n_cv=len(cvs), n_atoms=n_atoms if storage.store_positions else None,
        store_u_ref=True, cv_definitions=[dict(name=c.label(), **c.to_spec()) for c in cvs], state_parameters=params,
        attrs=attrs))
    n_eq = int(schedule.n_equilibration)
    corrected = dynamics.correction != "none"
    n_fit = n_eq // 3 if corrected else 0
    if corrected and n_eq < 30:
        raise InputError(f"correction={dynamics.correction!r} fits dU on the labels of the first third of "
                         f"equilibration; give n_equilibration >= 30 moves (got {n_eq})")
    default_tune = (2 * n_eq) // 3 if corrected else n_eq // 2  # tuning ends after the correction is in place
    n_tune = (dynamics.tune_moves if dynamics.tune_moves is not None else default_tune) if dynamics.tune else 0
    if dynamics.tune and n_tune > schedule.n_equilibration:
        raise InputError(f"tune_moves ({n_tune}) exceeds n_equilibration ({schedule.n_equilibration}): tuning must "
                         "end before production so the production chain is exact")
    bound = _BoundDynamics(dynamics, reference, system_bias, executor, n_tune, schedule.n_equilibration,
                           window_of_system, n_fit)  # the replicas of a window share one tuned proposal
    def frame_fn(work, info, step):
        with torch.no_grad():
            s = evaluate_cvs(cvs, work)
        u_ref = info["reference_energy"].numpy()
        w = bias.window_energies(s).numpy() if bias is not None else np.zeros((1, n_sys))
        out = {"state_index": window_of_system, "u_kn": beta * (u_ref[None, :] + w), "u_ref": beta * u_ref,
               "cv": s.numpy().copy(), "step": np.full(n_sys, step, dtype=np.int64)}
        if storage.store_positions:
            out["positions"] = work.positions.numpy().reshape(n_sys, n_atoms, 3).copy()
        return out

    hooks = Hooks(get_extra=lambda: bound.mover.get_extra(), set_extra=lambda a, m: bound.mover.set_extra(a, m))
    log.info("hybrid MC: %d window(s) x %d replica(s), %s proposals on %s, %s accepts at %.1f K", k, reps,
             dynamics.proposal, type(surrogate).__name__, ref.name, temperature)
    drive(physical=surrogate, bias=system_bias, start=start, temperature=temperature, dynamics=bound,
          schedule=schedule, samples=samples, frame_fn=frame_fn, hooks=hooks, on_checkpoint=on_checkpoint,
          progress=progress)
    report = hybrid_mc_report(bound.mover.stats, window_of_system, samples=samples, stride=schedule.stride,
                              n_systems=n_sys)
    report["tuned"] = {"timestep_fs": bound.mover.timestep.tolist(), "n_steps": bound.mover.n_steps.tolist(),
                       "step_size_A": bound.mover.step_size.tolist()}
    if bound.mover.correction is not None:
        report["correction"] = dict(bound.mover.correction_info, kind=dynamics.correction)
    samples.set_attrs(hybrid_mc=report)
    samples.checkpoint()
    log.info("hybrid MC acceptance per window (measured vs the Gaussian-dU prediction erfc(beta sigma/2); "
             "sigma/kT per window in the beta*sigma column):\n%s",
             format_report(report, temperature=temperature, n_atoms=n_atoms))
    if check_overlap and k > 1:
        from .umbrella import check_window_overlap

        check_window_overlap(samples)
    return samples
