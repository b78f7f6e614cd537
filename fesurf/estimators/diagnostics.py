"""Diagnostics that run by default before and after every estimate.

- equilibration detection and decorrelation per state (``pymbar.timeseries``),
- the MBAR overlap matrix (states that fall into non-overlapping groups at 0.03 warn, with the matrix),
- Kish effective sample size per state.

Each problem emits a :class:`EstimatorWarning` subclass (``warnings.warn``), so
users can filter or escalate them (``warnings.simplefilter("error", OverlapWarning)``).
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass, field

import numpy as np

from .._pymbar import pymbar, timeseries
from ..errors import InputError, SimulationError

logger = logging.getLogger(__name__)

#: Overlap below this separates states (REFERENCE.md: umbrella neighbour overlap >= 0.03).
OVERLAP_THRESHOLD = 0.03
#: Kish effective sample size below this warns.
ESS_THRESHOLD = 50.0
#: Fewer uncorrelated samples than this in a state warns.
MIN_UNCORRELATED = 50
#: Discarding more than this fraction as equilibration warns.
EQUILIBRATION_FRACTION = 0.5


class EstimatorWarning(UserWarning):
    """Base class of fesurf estimator warnings."""


class OverlapWarning(EstimatorWarning):
    """Neighbouring states overlap too little for a reliable MBAR/BAR estimate."""


class EffectiveSampleSizeWarning(EstimatorWarning):
    """The Kish effective sample size of a state is small."""


class CorrelationWarning(EstimatorWarning):
    """Too few statistically independent samples in a state."""


class EquilibrationWarning(EstimatorWarning):
    """A large fraction of a state's frames was discarded as equilibration."""


def kish_ess(weights) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2 of non-negative weights.

    >>> kish_ess([1.0, 1.0, 1.0, 1.0])
    4.0
    """
    w = np.asarray(weights, dtype=np.float64)
    s2 = np.sum(w * w)
    return float(np.sum(w) ** 2 / s2) if s2 > 0 else 0.0


@dataclass
class Prepared:
    """Frames kept for estimation, grouped by state (pymbar's sample order).

    ``frames`` indexes the SampleSet; ``N_k`` counts kept frames per state;
    ``g_k`` / ``t0_k`` are statistical inefficiency and equilibration start
    (in frames of that state's series); ``blocks`` lists, per state, arrays of
    SampleSet frame indices forming the bootstrap units (decorrelated blocks).
    """

    frames: np.ndarray
    N_k: np.ndarray
    g_k: np.ndarray
    t0_k: np.ndarray
    n_raw_k: np.ndarray
    blocks: list = field(default_factory=list)

    def info(self) -> dict:
        return {"N_k_used": self.N_k, "N_k_raw": self.n_raw_k, "statistical_inefficiency": self.g_k,
                "equilibration_start": self.t0_k}


def _observable(samples, own_u, idx, observable):
    if observable is None:
        series = own_u[idx]
        if idx.size > 1 and np.ptp(series) == 0 and samples.cv is not None:
            series = samples.cv[idx, 0]  # own-state potential constant (e.g. no bias): use the CV
        return series
    return np.asarray(observable, dtype=np.float64)[idx]


def _first_time(samples, what) -> bool:
    """True the first time a data warning ``what`` comes up for this SampleSet: estimators prepare the
    same samples several times (PMF, frame weights, label choice), and one warning per problem is enough."""
    try:
        seen = samples.__dict__.setdefault("_fesurf_warned", set())
    except AttributeError:  # an object without a __dict__: always warn
        return True
    if what in seen:
        return False
    seen.add(what)
    return True


def prepare(samples, *, equilibrate: bool = True, decorrelate: bool = True, observable=None,
            min_uncorrelated: int = MIN_UNCORRELATED, equilibration_fraction: float = EQUILIBRATION_FRACTION,
            require_single_temperature: bool = True) -> Prepared:
    """Validate a SampleSet and choose the frames an estimator uses.

    Per sampled state, on the time series ``observable`` (default: the reduced
    potential in the state's own ensemble, kT; the first CV if that is
    constant): ``timeseries.detect_equilibration`` drops the initial transient,
    ``timeseries.statistical_inefficiency`` gives g, and
    ``timeseries.subsample_correlated_data`` keeps uncorrelated frames.
    Frames are taken in SampleSet order within a state (time order).

    Example
    -------
    >>> import numpy as np
    >>> from fesurf.sampling import SampleSet
    >>> rng = np.random.default_rng(0)
    >>> ss = SampleSet.from_arrays(state_index=np.repeat([0, 1], 200), u_kn=rng.normal(size=(2, 400)),
    ...                            temperature=300.0)
    >>> bool(prepare(ss).N_k.sum() > 300)
    True
    """
    samples.validate(require_single_temperature=require_single_temperature)
    if observable is not None and np.asarray(observable).shape != (samples.n_frames,):
        raise InputError(f"observable must have one value per frame ({samples.n_frames})")
    si = samples.state_index
    K = samples.n_states
    frames, blocks = [], []
    N_k = np.zeros(K, np.int64)
    g_k = np.ones(K)
    t0_k = np.zeros(K, np.int64)
    n_raw = np.bincount(si, minlength=K)
    # each frame's reduced potential in its own state, read once (u_kn may live in an HDF5 file)
    own_u = samples.u_kn[si, np.arange(si.size)] if observable is None else None
    for k in range(K):
        idx = np.where(si == k)[0]
        if idx.size == 0:
            blocks.append([])
            continue
        series = _observable(samples, own_u, idx, observable)
        t0, g = 0, 1.0
        if equilibrate and idx.size >= 10:
            nskip = max(1, idx.size // 100)  # detect_equilibration is O(T^2) at nskip=1
            t0, g, _ = timeseries.detect_equilibration(series, fast=True, nskip=nskip)
            # pymbar returns g as float32; subsample_correlated_data then produces duplicate
            # rounded indices for long series and fails (IndexError), so use a Python float.
            t0, g = int(t0), max(1.0, float(g))
            if t0 > equilibration_fraction * idx.size and _first_time(samples, ("equilibration", k, t0)):
                warnings.warn(EquilibrationWarning(
                    f"state {k}: equilibration detection discarded {t0} of {idx.size} frames "
                    f"(> {equilibration_fraction:.0%}); the run is probably too short or still drifting"),
                    stacklevel=3)
        elif idx.size >= 10:
            g = float(timeseries.statistical_inefficiency(series, fast=True))
        kept = idx[t0:]
        if decorrelate and kept.size >= 10:
            sub = np.asarray(timeseries.subsample_correlated_data(series[t0:], g=g), dtype=np.int64)
            blocks.append([kept[i:i + 1] for i in sub])
            kept = kept[sub]
        else:
            blen = max(1, int(np.ceil(g)))
            blocks.append([kept[i:i + blen] for i in range(0, kept.size, blen)])
        g_k[k], t0_k[k], N_k[k] = g, t0, kept.size
        frames.append(kept)
        n_indep = kept.size if decorrelate else kept.size / max(g, 1.0)
        if n_indep < min_uncorrelated and _first_time(samples, ("correlation", k, int(n_indep), decorrelate)):
            warnings.warn(CorrelationWarning(
                f"state {k}: only {n_indep:.0f} statistically independent samples (g = {g:.1f} frames, "
                f"{idx.size} frames); uncertainties are unreliable below {min_uncorrelated}: sample longer"),
                stacklevel=3)
    return Prepared(np.concatenate(frames) if frames else np.zeros(0, np.int64), N_k, g_k, t0_k, n_raw, blocks)


_SOLVED_F_K: dict = {}  # hash of (u_kn, N_k) -> f_k, so re-solving the same data starts at the solution


def _data_key(u_kn, N_k) -> str:
    import hashlib

    h = hashlib.blake2b(np.ascontiguousarray(u_kn, dtype=np.float64).tobytes(), digest_size=16)
    h.update(np.asarray(N_k, dtype=np.int64).tobytes())
    return h.hexdigest()


def solved_f_k(u_kn, N_k):
    """f_k of an earlier MBAR solve of exactly this data, or None. Reweighting solves the same data
    several times (PMF, frame weights, label design); reusing the converged f_k as it is (zero solver
    iterations) saves the solves and keeps repeated calls bit-identical."""
    return _SOLVED_F_K.get(_data_key(u_kn, N_k))


def remember_f_k(u_kn, N_k, f_k) -> None:
    _remember(_data_key(u_kn, N_k), f_k)


def _remember(key, f_k) -> None:
    if len(_SOLVED_F_K) > 32:
        _SOLVED_F_K.clear()
    _SOLVED_F_K[key] = np.array(f_k, dtype=np.float64)


@contextlib.contextmanager
def pymbar_errors(what: str):
    """Translate pymbar's (and numpy's) failures inside the block into fesurf errors that say what to do.

    A rejected input is an :class:`~fesurf.errors.InputError`; a solver breakdown (singular matrices,
    non-finite free energies) is a :class:`~fesurf.errors.SimulationError`, because it means the sampled
    states do not overlap or hold too few frames.
    """
    try:
        yield
    except (InputError, SimulationError):
        raise
    except pymbar.utils.ParameterError as exc:
        raise InputError(f"{what}: pymbar rejected the data ({exc})") from None
    except (np.linalg.LinAlgError, FloatingPointError, ZeroDivisionError, IndexError, KeyError, ValueError) as exc:
        raise SimulationError(
            f"{what} failed inside pymbar ({type(exc).__name__}: {str(exc)[:200]}). This happens when the states "
            "do not overlap, a state holds too few frames, or a bin holds none: check the overlap matrix "
            "(fesurf.estimators.overlap_diagnostics), add or widen windows, sample longer, or use fewer bins") from None


def build_mbar(u_kn, N_k, initial_f_k=None):
    """``pymbar.MBAR`` with fesurf's settings: ``solver_protocol="robust"``, BAR initialisation.

    ``u_kn`` [K, N] in kT with samples grouped by state (state 0 first), ``N_k`` [K].

    >>> import numpy as np
    >>> m = build_mbar(np.zeros((2, 4)), [2, 2])
    >>> bool(abs(m.f_k[1]) < 1e-8)
    True
    """
    kwargs = dict(solver_protocol="robust")
    key = _data_key(u_kn, N_k) if initial_f_k is None else None
    solved = _SOLVED_F_K.get(key) if key else None
    if solved is not None:  # exactly this data was solved before: reuse that solution as it is
        kwargs.update(initial_f_k=solved, maximum_iterations=0)
    elif initial_f_k is None:
        kwargs["initialize"] = "BAR"
    else:
        kwargs["initial_f_k"] = np.asarray(initial_f_k, dtype=np.float64)
    u = np.asarray(u_kn, dtype=np.float64)
    if not np.all(np.isfinite(u)):
        raise InputError("u_kn holds NaN or inf reduced potentials; drop the frames whose energies failed")
    with pymbar_errors("MBAR"):
        mbar = pymbar.MBAR(u, np.asarray(N_k, dtype=np.int64), **kwargs)
    if not np.all(np.isfinite(mbar.f_k)):
        raise SimulationError("MBAR gave non-finite free energies: the states do not overlap; add windows between "
                              "them, widen them or sample longer")
    if key and solved is None:  # a caller-seeded solve (a bootstrap replicate) is not kept for reuse
        _remember(key, mbar.f_k)
    return mbar


def overlap_diagnostics(mbar, *, threshold: float = OVERLAP_THRESHOLD, ess_threshold: float = ESS_THRESHOLD,
                        warn: bool = True) -> dict:
    """Overlap matrix, overlap connectivity and Kish ESS per state, warning below thresholds.

    States are joined when their symmetrised overlap (O[i, j] + O[j, i]) / 2 is at
    least ``threshold``; if the sampled states fall into more than one connected
    group (e.g. a gap between umbrella windows, in any arrangement: a chain or a
    2D grid), an :class:`OverlapWarning` names the groups, the weakest
    consecutive pairs, and prints the whole overlap matrix.
    """
    from scipy.sparse.csgraph import connected_components

    if mbar.N_k.size == 1:  # one state (an unbiased run): nothing to overlap with
        ess = np.asarray(mbar.compute_effective_sample_number(), dtype=np.float64)
        return {"overlap_matrix": np.ones((1, 1)), "neighbour_overlap": np.zeros(0), "overlap_groups": [[0]],
                "kish_ess": ess, "overlap_scalar": 1.0}
    with pymbar_errors("the MBAR overlap matrix"):
        ov = mbar.compute_overlap()
    O = np.asarray(ov["matrix"], dtype=np.float64)
    ess = np.asarray(mbar.compute_effective_sample_number(), dtype=np.float64)
    sampled = np.where(mbar.N_k > 0)[0]
    neighbour = np.array([O[a, b] for a, b in zip(sampled[:-1], sampled[1:])])
    sym = 0.5 * (O + O.T)[np.ix_(sampled, sampled)]
    n_groups, labels = connected_components(sym >= threshold, directed=False)
    groups = [sampled[labels == g].tolist() for g in range(n_groups)]
    if warn and n_groups > 1:
        weak = [(int(a), int(b)) for a, b, o in zip(sampled[:-1], sampled[1:], neighbour) if o < threshold]
        with np.printoptions(precision=3, suppress=True, linewidth=150):
            warnings.warn(OverlapWarning(
                f"the states split into {n_groups} groups that do not overlap (overlap < {threshold}): {groups}; "
                f"consecutive pairs below the threshold: {weak}. Add windows between them, widen them (smaller "
                f"force constant) or sample longer. Overlap matrix O[i, j] (probability that a sample from i is "
                f"seen in j):\n{O}"), stacklevel=3)
    if warn and ess.min() < ess_threshold:
        low = np.where(ess < ess_threshold)[0].tolist()
        warnings.warn(EffectiveSampleSizeWarning(
            f"Kish effective sample size below {ess_threshold:g} in state(s) {low}: "
            f"{np.round(ess[low], 1).tolist()}; estimates there rest on few samples"), stacklevel=3)
    return {"overlap_matrix": O, "neighbour_overlap": neighbour, "overlap_groups": groups, "kish_ess": ess,
            "overlap_scalar": float(np.real(ov["scalar"]))}
