"""Umbrella sampling on the batched engine: every window is a replica of one State.

:func:`umbrella_sampling` restrains CVs with a per-window :class:`~fesurf.bias.RESTRAINT`
(``0.5 kappa (s - centre)^2``), runs all windows in one Langevin integrator
call, and writes a :class:`~fesurf.sampling.SampleSet`: per frame the window
it was sampled in, the CV values, the positions and the reduced potentials

- ``u_kn[k, n] = beta (U0(x_n) + b_k(s_n))`` of every window k (kT), and
- ``u_ref[n] = beta U0(x_n)`` of the unbiased state (kT),

so ``(u_kn - u_ref) kT`` is the bias-only energy and ``u_ref kT`` the
unbiased potential (eV); for one temperature U0 cancels in MBAR.
With ``exchange_every`` it becomes Hamiltonian replica exchange
(:mod:`fesurf.sampling.replica_exchange`). :func:`umbrella_from_configurations`
builds the same SampleSet from configurations and energies the user supplies.

Units: centres in CV units (Angstrom, rad), kappa in eV/unit^2, temperature K,
timestep fs, friction 1/fs; steps are MD steps.

Example
-------
>>> import numpy as np
>>> from fesurf.potentials import DoubleWell1D
>>> from fesurf.cv import POSITION
>>> from fesurf.state import State
>>> ss = umbrella_sampling(DoubleWell1D(barrier=0.05), State(positions=[[0.0, 0, 0]], atomic_numbers=[1]),
...                        POSITION(0, "x"), centers=np.linspace(-1.2, 1.2, 7), kappa=1.0, temperature=300.0,
...                        n_equilibration=100, n_production=500, stride=10, seed=0, check_overlap=False)
>>> ss.n_states, ss.N_k.tolist()
(7, [50, 50, 50, 50, 50, 50, 50])
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
import torch

from ..bias import RESTRAINT
from ..cv import as_cv_list
from ..errors import InputError
from ..state import State
from ..units import KB
from ._engine import Hooks, check_temperature, drive, open_samples, replicate_start
from .protocol import resolve
from .replica_exchange import NeighbourExchange
from .sampleset import SampleSet

log = logging.getLogger(__name__)


class UntrustedFramesWarning(UserWarning):
    """Production frames lie where the surrogate's committee spread exceeds its trust level."""


def _cv_definitions(cvs):
    return [dict(name=c.label(), **c.to_spec()) for c in cvs]


def _restraint(cvs, centers, kappa):
    c = np.asarray(centers, dtype=np.float64) if not torch.is_tensor(centers) else centers.double().numpy()
    if c.size == 0:
        raise InputError("umbrella sampling got no windows (empty list of centres); give one centre per window")
    bias = RESTRAINT(cvs, at=c, kappa=kappa)
    if bias.at.shape[0] == 1 and c.ndim == (1 if len(cvs) > 1 else 0):
        pass  # a single window is allowed
    return bias


def check_window_overlap(samples: SampleSet, threshold: float | None = None) -> dict:
    """MBAR overlap of the windows; warns (``OverlapWarning``, with the overlap matrix) below ``threshold``.

    Uses :mod:`fesurf.estimators` (imported here, at call time). Returns the diagnostics dict.

    >>> diag = check_window_overlap(ss)          # doctest: +SKIP
    """
    from ..estimators.diagnostics import OVERLAP_THRESHOLD, build_mbar, overlap_diagnostics

    samples.validate()
    order = np.argsort(samples.state_index, kind="stable")
    u_kn = samples.u_kn[:, order]
    try:
        mbar = build_mbar(u_kn, samples.N_k)
    except Exception:  # noqa: BLE001 - pymbar's BAR initialisation fails exactly when windows do not overlap
        mbar = build_mbar(u_kn, samples.N_k, initial_f_k=np.zeros(samples.n_states))
    return overlap_diagnostics(mbar, threshold=OVERLAP_THRESHOLD if threshold is None else threshold, warn=True)


def umbrella_sampling(potential, state: State, cvs, centers, kappa, *, temperature, dynamics=None, schedule=None,
                      storage=None, exchange_every: int | None = None, check_overlap: bool = True,
                      replicas_per_window: int = 1, on_checkpoint=None, progress=None, guard=None,
                      **settings) -> SampleSet:
    """Run all umbrella windows as replicas of one State and return their SampleSet.

    Parameters
    ----------
    potential : Potential
        The physical (unbiased) potential U0.
    state : State
        One system (copied to every window) or one system per window.
    cvs : CV, spec dict or list of them (1 or 2 CVs typical)
    centers : [n_windows] (one CV) or [n_windows, n_cvs], CV units
    kappa : force constant(s), eV/unit^2: number, [n_cvs], [n_windows] or [n_windows, n_cvs]
    temperature : K (one value, or equal values per window)
    dynamics : :class:`~fesurf.sampling.protocol.LangevinDynamics` (or another mover), or the keywords
        ``timestep`` (fs, default 1), ``friction`` (1/fs, default 0.01), ``seed`` (default 0)
    schedule : :class:`~fesurf.sampling.protocol.Schedule`, or the keywords ``n_equilibration``
        (default 1000), ``n_production`` (10000), ``stride`` (10), ``checkpoint_every`` (None: only
        at the end), all in MD steps; frames every ``stride`` production steps
    storage : :class:`~fesurf.sampling.protocol.Storage`, or the keywords ``path`` (HDF5 file; None: in
        memory), ``resume`` (continue a killed run from its last checkpoint), ``overwrite``,
        ``store_positions`` (keep every frame's positions, Angstrom)
    exchange_every : MD steps between Hamiltonian replica-exchange attempts (None: no exchange)
    check_overlap : after the run, warn (with the overlap matrix) when neighbouring windows do not overlap
    replicas_per_window : independent replicas (walkers) per window, all in the same batch; system
        ``k * replicas_per_window + r`` is replica r of window k (one batched call still runs them all)
    on_checkpoint : optional callable(step) called after each checkpoint
    guard : optional production guard (e.g. :class:`fesurf.training.active.ProductionGuard`): an object
        with ``spread(state) -> [n_systems]`` (eV/A), ``check(spread, step)`` (raises to stop the run),
        ``upper`` and ``attrs()``. Every recorded frame then stores its spread in ``committee_spread``
        and the guard's settings in ``attrs['guard']``; frames above ``upper`` are flagged
        (:meth:`SampleSet.untrusted_frames`) and a warning says how many

    Returns the SampleSet (open; call ``close()`` when it is backed by a file).

    >>> from fesurf.sampling.protocol import LangevinDynamics, Schedule
    >>> from fesurf.potentials import DoubleWell1D
    >>> from fesurf.cv import POSITION
    >>> ss = umbrella_sampling(DoubleWell1D(barrier=0.05), State(positions=[[0.0, 0, 0]], atomic_numbers=[1]),
    ...                        POSITION(0, "x"), centers=[-0.5, 0.5], kappa=1.0, temperature=300.0,
    ...                        dynamics=LangevinDynamics(timestep=1.0, seed=1),
    ...                        schedule=Schedule(n_equilibration=50, n_production=100, stride=10))
    >>> ss.N_k.tolist()
    [10, 10]
    """
    dynamics, schedule, storage = resolve(dynamics=dynamics, schedule=schedule, storage=storage, **settings)
    store_positions = storage.store_positions
    cvs = as_cv_list(cvs)
    bias = _restraint(cvs, centers, kappa)
    k = bias.n_windows
    temperature = check_temperature(temperature, k)
    reps = int(replicas_per_window)
    if reps < 1:
        raise InputError(f"replicas_per_window must be >= 1, got {replicas_per_window}")
    n_sys = k * reps
    window_of_system = np.repeat(np.arange(k), reps)
    system_bias = bias if reps == 1 else bias.select_systems(window_of_system.tolist())
    start = replicate_start(state, n_sys)
    for c in cvs:
        c.validate(start)
    n_atoms = int(start.atoms_per_system[0])
    beta = 1.0 / (KB * temperature)
    params = [{"type": "RESTRAINT", "at": bias.at[min(i, bias.at.shape[0] - 1)].tolist(),
               "kappa": bias.kappa[min(i, bias.kappa.shape[0] - 1)].tolist()} for i in range(k)]
    attrs = {"protocol": "umbrella" if exchange_every is None else "hrex", **dynamics.attrs(), **schedule.attrs(),
             "replicas_per_window": int(replicas_per_window), "potential": type(potential).__name__,
             "energy_convention":
             "u_kn = beta (U0 + bias_k); u_ref = beta U0; bias-only = u_kn - u_ref"}
    if guard is not None:
        attrs["guard"] = guard.attrs()
    samples = open_samples(storage.path, resume=storage.resume, overwrite=storage.overwrite, create_kwargs=dict(
        n_states=k, temperature=temperature, n_cv=len(cvs), n_atoms=n_atoms if store_positions else None,
        store_u_ref=True, store_committee_spread=guard is not None, cv_definitions=_cv_definitions(cvs),
        state_parameters=params, attrs=attrs))

    columns = np.arange(n_sys)

    def frame(work, info, step):
        with torch.no_grad():
            s = bias.cv_values(work)
            w = bias.window_energies(s).numpy()
        u0 = info["potential_energy"].numpy() - w[window_of_system, columns]
        out = {"state_index": window_of_system, "u_kn": beta * (u0[None, :] + w), "u_ref": beta * u0,
               "cv": s.numpy().copy(), "step": np.full(n_sys, step, dtype=np.int64)}
        if store_positions:
            out["positions"] = work.positions.numpy().reshape(n_sys, n_atoms, 3).copy()
        if guard is not None:
            spread = np.asarray(guard.spread(work), dtype=np.float64)
            guard.check(spread, step)
            out["committee_spread"] = spread
        return out

    exchange = None if exchange_every is None else NeighbourExchange(bias, temperature, dynamics.seed, exchange_every,
                                                                      replicas_per_window=reps)
    hooks = None if exchange is None else Hooks(every=exchange_every, on_boundary=exchange.attempt,
                                                get_extra=exchange.get_extra, set_extra=exchange.set_extra)
    drive(physical=potential, bias=system_bias, start=start, temperature=temperature, dynamics=dynamics,
          schedule=schedule, samples=samples, frame_fn=frame, hooks=hooks, on_checkpoint=on_checkpoint,
          progress=progress)
    if exchange is not None:
        stats = exchange.statistics()
        samples.set_attrs(exchange=stats)
        log.info("replica exchange acceptance per neighbour pair: %s", stats["acceptance"])
    if guard is not None:
        flagged = samples.untrusted_frames()
        if flagged is not None and flagged.any():
            warnings.warn(UntrustedFramesWarning(
                f"{int(flagged.sum())} of {flagged.size} recorded frames have a committee spread above the trust "
                f"level {guard.upper:g} {guard.attrs().get('unit', '')}: the surrogate left the region it knows "
                "there; compute_pmf reports the bins that hold them"), stacklevel=2)
    if check_overlap and k > 1:
        check_window_overlap(samples)
    return samples


def _frames_state(configurations) -> State:
    if isinstance(configurations, State):
        return configurations
    try:
        return State.from_atoms(list(configurations))
    except (TypeError, InputError):
        raise InputError("configurations must be a State (one system per frame) or a list of ase.Atoms") from None


def umbrella_from_configurations(configurations, window_index, cvs, centers, kappa, *, temperature,
                                 energies=None, path=None, store_positions: bool = True) -> SampleSet:
    """A umbrella SampleSet from frames the user supplies instead of running MD.

    Parameters
    ----------
    configurations : State with one system per frame, or a list of ase.Atoms
    window_index : [n_frames] window each frame was sampled in (0-based)
    cvs, centers, kappa : as in :func:`umbrella_sampling`
    temperature : K
    energies : [n_frames] unbiased potential energies (eV), optional; without
        them U0 is taken as 0 (it cancels in MBAR at one temperature)

    >>> from fesurf.state import State
    >>> from fesurf.cv import POSITION
    >>> frames = State(positions=[[-1.0, 0, 0], [1.0, 0, 0]], atomic_numbers=[1, 1], system_index=[0, 1])
    >>> ss = umbrella_from_configurations(frames, [0, 1], POSITION(0, "x"), [-1.0, 1.0], 1.0, temperature=300.0)
    >>> ss.N_k.tolist()
    [1, 1]
    """
    cvs = as_cv_list(cvs)
    bias = _restraint(cvs, centers, kappa)
    k = bias.n_windows
    temperature = check_temperature(temperature, k)
    frames = _frames_state(configurations)
    n = frames.n_systems
    win = np.asarray(window_index, dtype=np.int64).reshape(-1)
    if win.shape != (n,):
        raise InputError(f"window_index needs one window per frame ({n}), got {win.size}")
    if win.min() < 0 or win.max() >= k:
        raise InputError(f"window_index values must lie in [0, {k - 1}]")
    empty = np.where(np.bincount(win, minlength=k) == 0)[0]
    if empty.size:
        raise InputError(f"window(s) {empty.tolist()} have no frames (empty window); drop their centres or add frames")
    for c in cvs:
        c.validate(frames)
    beta = 1.0 / (KB * temperature)
    with torch.no_grad():
        s = torch.stack([c(frames) for c in cvs], dim=-1)
        w = bias.window_energies(s).numpy()
    u0 = np.zeros(n) if energies is None else np.asarray(energies, dtype=np.float64).reshape(-1)
    if u0.shape != (n,) or not np.all(np.isfinite(u0)):
        raise InputError(f"energies must be {n} finite values (eV), one per frame")
    order = np.argsort(win, kind="stable")
    counts = frames.atoms_per_system
    positions = None
    if store_positions:
        if bool((counts != counts[0]).any()):
            raise InputError("frames with different atom counts cannot be stored together; use store_positions=False")
        positions = frames.positions.numpy().reshape(n, int(counts[0]), 3)[order]
    params = [{"type": "RESTRAINT", "at": bias.at[min(i, bias.at.shape[0] - 1)].tolist(),
               "kappa": bias.kappa[min(i, bias.kappa.shape[0] - 1)].tolist()} for i in range(k)]
    return SampleSet.from_arrays(state_index=win[order], u_kn=(beta * (u0[None, :] + w))[:, order],
                                 u_ref=beta * u0[order], cv=s.numpy()[order], positions=positions,
                                 step=np.arange(n)[order], temperature=temperature,
                                 cv_definitions=_cv_definitions(cvs), state_parameters=params,
                                 attrs={"protocol": "umbrella-configurations", "energies_given": energies is not None},
                                 path=path)


warnings.filterwarnings("default", module=__name__)
