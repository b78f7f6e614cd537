"""Metadynamics runs on the batched engine (one or many replicas/walkers).

:func:`metadynamics` drives ``Sum([potential, METAD])`` with Langevin dynamics;
every ``pace`` steps each replica deposits a hill (:meth:`~fesurf.bias.METAD.deposit`).
Frames store, per replica k (one state per replica):

- ``u_kn[k, n] = beta (U0(x_n) + V_k(s_n, t_n))`` with ``V_k(., t_n)`` the bias the
  frame felt (hills deposited before it), and ``u_ref[n] = beta U0(x_n)`` (kT);
- the CV values, positions and the MD step.

Hills are part of every checkpoint, so a killed run resumes exactly. At the
end the hills can be written as a PLUMED HILLS file. Reweight frames with
:func:`metad_log_weights` (Tiwary–Parrinello c(t) or the final bias), or read
the free energy from the bias with :meth:`~fesurf.bias.METAD.free_energy`.

Example
-------
>>> from fesurf.potentials import DoubleWell1D
>>> from fesurf.bias import METAD
>>> from fesurf.cv import POSITION
>>> from fesurf.state import State
>>> m = METAD(POSITION(0, "x"), sigma=0.1, height=0.005, pace=20, biasfactor=5.0, temperature=300.0)
>>> ss = metadynamics(DoubleWell1D(barrier=0.1), State(positions=[[-1.0, 0, 0]], atomic_numbers=[1]), m,
...                   temperature=300.0, n_steps=200, stride=10, seed=0)
>>> m.n_hills, ss.n_frames
(10, 20)
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..bias import METAD
from ..errors import InputError
from ..state import State
from ..units import KB
from ._engine import Hooks, check_temperature, drive, open_samples
from .protocol import resolve
from .sampleset import SampleSet
from .umbrella import _cv_definitions, _frames_state

log = logging.getLogger(__name__)


def _check_bias(bias, temperature, timestep):
    if not isinstance(bias, METAD):
        raise InputError(f"bias must be a fesurf.bias.METAD, got {type(bias).__name__}")
    if bias.temperature is None:
        bias.temperature = temperature
    elif abs(bias.temperature - temperature) > 1e-9 * temperature:
        raise InputError(f"mismatched temperatures: the METAD bias is well-tempered at {bias.temperature} K "
                         f"but the run is at {temperature} K; use the same temperature")
    bias.timestep = float(timestep)


def metadynamics(potential, state: State, bias: METAD, *, temperature, n_steps: int = 100000, dynamics=None,
                 schedule=None, storage=None, hills_file=None, hills_units: str = "plumed", on_checkpoint=None,
                 progress=None, **settings) -> SampleSet:
    """Run (well-tempered) metadynamics on every replica of ``state`` and return the SampleSet.

    Parameters
    ----------
    potential : Potential, the physical potential U0
    state : State; each system is one replica (walker); with ``bias.shared`` they share hills
    bias : METAD (its hills grow in place; pass a fresh one, or one holding earlier hills)
    temperature : K (must equal the bias's temperature)
    n_steps : MD steps after ``n_equilibration`` (hills are deposited from step 0); the schedule's
        ``n_production`` when ``schedule`` is given
    dynamics, schedule, storage : settings objects or their flat keywords, as in
        :func:`~fesurf.sampling.umbrella_sampling`; here ``n_equilibration`` defaults to 0 and
        ``stride`` to 100 MD steps
    hills_file : write the final hills there in PLUMED's HILLS format (``hills_units``)
    """
    if schedule is None:
        settings.setdefault("n_production", n_steps)
    dynamics, schedule, storage = resolve(dynamics=dynamics, schedule=schedule, storage=storage,
                                          defaults={"n_equilibration": 0, "stride": 100}, **settings)
    store_positions = storage.store_positions
    timestep = dynamics.timestep
    temperature = check_temperature(temperature, 1)
    _check_bias(bias, temperature, timestep)
    start = state
    if not isinstance(start, State):
        raise InputError("state must be a fesurf State")
    k = start.n_systems
    for c in bias.cvs:
        c.validate(start)
    counts = start.atoms_per_system
    n_atoms = int(counts[0])
    if store_positions and bool((counts != counts[0]).any()):
        raise InputError("replicas with different atom counts: use store_positions=False")
    beta = 1.0 / (KB * temperature)
    attrs = {"protocol": "metadynamics", **dynamics.attrs(), **schedule.attrs(), "potential": type(potential).__name__,
             "energy_convention": "u_kn[k] = beta (U0 + V_k(s, t)) (bias felt by the frame); u_ref = beta U0"}
    params = [dict(bias.parameters_spec(), replica=i) for i in range(k)]
    samples = open_samples(storage.path, resume=storage.resume, overwrite=storage.overwrite, create_kwargs=dict(
        n_states=k, temperature=temperature, n_cv=bias.n_cvs, n_atoms=n_atoms if store_positions else None,
        store_u_ref=True, cv_definitions=_cv_definitions(list(bias.cvs)), state_parameters=params, attrs=attrs))
    reps = np.arange(k)
    initial_hills = bias.n_hills

    def frame(work, info, step):
        with torch.no_grad():
            s = bias.cv_values(work)
            v = bias.energy_from_cv(s)
            if bias.shared:
                rows = v.numpy()[None, :].repeat(k, axis=0)
            else:
                rows = np.stack([bias.energy_from_cv(s, replicas=torch.full((k,), r, dtype=torch.long)).numpy()
                                 for r in range(k)])
        u0 = info["potential_energy"].numpy() - v.numpy()
        out = {"state_index": reps, "u_kn": beta * (u0[None, :] + rows), "u_ref": beta * u0, "cv": s.numpy().copy(),
               "step": np.full(k, step, dtype=np.int64)}
        if store_positions:
            out["positions"] = work.positions.numpy().reshape(k, n_atoms, 3).copy()
        return out

    def deposit(step, work):
        bias.deposit(work, step)

    def get_extra():
        h = bias.hills()
        return {f"hills_{name}": arr for name, arr in h.items()}, {}

    def set_extra(arrays, meta):
        bias.truncate(0)
        bias.add_hills(arrays["hills_centers"], arrays["hills_heights"], arrays["hills_owners"], arrays["hills_steps"])

    drive(physical=potential, bias=bias, start=start, temperature=temperature, dynamics=dynamics, schedule=schedule,
          samples=samples, frame_fn=frame, hooks=Hooks(every=bias.pace, on_boundary=deposit, get_extra=get_extra,
                                                       set_extra=set_extra),
          on_checkpoint=on_checkpoint, progress=progress)
    samples.set_attrs(n_hills=bias.n_hills, initial_hills=initial_hills)
    if hills_file is not None:
        bias.write_hills(hills_file, units=hills_units)
    return samples


def metad_log_weights(samples: SampleSet, bias: METAD, *, method: str = "ct", grid=None, replica: int | None = None):
    """Log reweighting factors (kT units) of the frames of a metadynamics SampleSet.

    ``method="ct"`` (Tiwary–Parrinello): ``beta (V(s_n, t_n) - c(t_n))`` with
    c(t) on ``grid [G, n_cvs]``; ``method="final"``: ``beta V_final(s_n)``.
    Per-replica hills use each frame's own replica; pass ``replica`` to keep
    only its frames. Returns ``(frame_indices, log_w)``.

    >>> idx, log_w = metad_log_weights(ss, bias, grid=np.linspace(-2, 2, 201)[:, None])   # doctest: +SKIP
    """
    si = samples.state_index
    frames = np.arange(samples.n_frames) if replica is None else np.where(si == int(replica))[0]
    if frames.size == 0:
        raise InputError(f"no frames for replica {replica}")
    u = samples.u_kn
    kt = KB * samples.temperature
    v = (u[si[frames], frames] - samples.u_ref[frames]) * kt
    out = np.empty(frames.size)
    owners = [0] if bias.shared else np.unique(si[frames]).tolist()
    for o in owners:
        sel = np.ones(frames.size, bool) if bias.shared else si[frames] == o
        out[sel] = bias.log_weights(v[sel], samples.step[frames][sel], grid=grid, method=method,
                                    s=samples.cv[frames][sel], owner=o)
    return frames, out


def metadynamics_from_configurations(configurations, bias: METAD, steps, *, temperature, replica_index=None,
                                     energies=None, path=None) -> SampleSet:
    """A metadynamics SampleSet from user-supplied frames, their MD steps and a METAD holding the run's hills.

    Each frame's bias is the one it felt: hills of its replica deposited
    before its step. ``energies`` (eV, unbiased) are optional (U0 = 0 otherwise).
    """
    temperature = check_temperature(temperature, 1)
    _check_bias(bias, temperature, bias.timestep)
    frames = _frames_state(configurations)
    n = frames.n_systems
    steps = np.asarray(steps, dtype=np.int64).reshape(-1)
    rep = np.zeros(n, np.int64) if replica_index is None else np.asarray(replica_index, dtype=np.int64).reshape(-1)
    if steps.shape != (n,) or rep.shape != (n,):
        raise InputError(f"steps and replica_index need one value per frame ({n})")
    if rep.min() < 0:
        raise InputError("replica_index must be >= 0")
    k = int(rep.max()) + 1
    for c in bias.cvs:
        c.validate(frames)
    u0 = np.zeros(n) if energies is None else np.asarray(energies, dtype=np.float64).reshape(-1)
    if u0.shape != (n,):
        raise InputError(f"energies must have one value per frame ({n})")
    beta = 1.0 / (KB * temperature)
    with torch.no_grad():
        s = bias.cv_values(frames)
    u_kn = np.empty((k, n))
    hill_steps = bias.steps.numpy()
    for i in range(n):
        upto = int(np.searchsorted(hill_steps, steps[i], side="left")) if np.all(np.diff(hill_steps) >= 0) else None
        if upto is None:
            raise InputError("the METAD hills must be in deposition order")
        for r in range(k):
            u_kn[r, i] = beta * (u0[i] + bias.grid_energy(s[i:i + 1].numpy(), owner=r, upto=upto)[0])
    order = np.lexsort((steps, rep))
    return SampleSet.from_arrays(state_index=rep[order], u_kn=u_kn[:, order], u_ref=beta * u0[order],
                                 cv=s.numpy()[order], step=steps[order], temperature=temperature,
                                 cv_definitions=_cv_definitions(list(bias.cvs)),
                                 state_parameters=[dict(bias.parameters_spec(), replica=r) for r in range(k)],
                                 attrs={"protocol": "metadynamics-configurations"}, path=path)
