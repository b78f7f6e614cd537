"""The shared driver of the sampling protocols: segments, frame recording, checkpoints, resume.

A protocol puts all its windows (replicas) in one State and runs them with one
integrator (built by its :mod:`~fesurf.sampling.protocol` dynamics settings, Langevin BAOAB
by default) on ``Sum([physical, bias])``. The run is cut into segments at the
multiples of the protocol's ``Hooks.every`` (replica exchange attempts, hill
depositions) and of ``Schedule.checkpoint_every``; between segments the protocol's
``on_boundary`` hook acts, and a checkpoint (positions, velocities, integrator
RNG state, step, protocol extras) is committed into the SampleSet with every
frame recorded so far. Resuming loads the last checkpoint and continues, so a
killed and resumed run produces the same SampleSet as an uninterrupted one.

Frames are recorded at the end of steps ``n_equilibration + k * stride``
(k >= 1). Units: timestep fs, temperature K, friction 1/fs.
"""
from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from ..errors import InputError
from ..md import maxwell_boltzmann
from ..potentials import Sum
from ..state import State
from ..units import KB
from .protocol import Schedule
from .sampleset import SampleSet

log = logging.getLogger(__name__)


def seeds_for(seed: int, purpose: int, n: int) -> list[int]:
    """Independent per-replica integer seeds for one purpose (velocities, noise, exchanges)."""
    if seed is None or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an int (every stochastic protocol is seeded), got {seed!r}")
    return [int(x) for x in np.random.SeedSequence([int(seed), int(purpose)]).generate_state(n, dtype=np.uint32)]


def check_temperature(temperature, n_windows: int) -> float:
    """One temperature (K) for all windows; InputError when they differ."""
    t = np.asarray(temperature, dtype=np.float64).reshape(-1)
    if t.size == 0 or not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise InputError(f"temperature must be positive and finite (K), got {temperature!r}")
    if t.size not in (1, n_windows):
        raise InputError(f"give one temperature or one per window ({n_windows}), got {t.size}")
    if not np.allclose(t, t[0], rtol=1e-12, atol=0.0):
        raise InputError(f"mismatched temperatures {np.unique(t).tolist()} K: the windows of one protocol share one "
                         "temperature (their reduced energies are compared in MBAR); run separate protocols per "
                         "temperature")
    return float(t[0])


def replicate_start(state: State, n_windows: int) -> State:
    """The start State with one system per window (a 1-system State is copied to every window)."""
    if not isinstance(state, State):
        raise InputError(f"state must be a fesurf State, got {type(state).__name__}")
    if state.n_systems == 1:
        return state.replicate(n_windows)
    if state.n_systems != n_windows:
        raise InputError(f"the start State has {state.n_systems} systems but there are {n_windows} windows; "
                         "give one system (copied to every window) or one per window")
    counts = state.atoms_per_system
    if bool((counts != counts[0]).any()):
        raise InputError("all windows must hold the same molecule (same number of atoms)")
    return state


def _pack(arrays: dict, meta: dict) -> bytes:
    buf = io.BytesIO()
    arrays = dict(arrays)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(buf, **arrays)
    return buf.getvalue()


def _unpack(blob: bytes):
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
        meta = json.loads(z["__meta__"].tobytes().decode())
    return arrays, meta


def open_samples(path, *, resume: bool, overwrite: bool, create_kwargs: dict) -> SampleSet:
    """A new SampleSet (file or memory), or the resumed one at ``path`` after consistency checks."""
    if path is not None and resume and os.path.exists(path):
        ss = SampleSet.open(path, mode="a")
        want_k = int(create_kwargs["n_states"])
        if ss.n_states != want_k:
            ss.close()
            raise InputError(f"cannot resume {path}: it has {ss.n_states} states but this run has {want_k}")
        t = np.asarray(create_kwargs["temperature"], dtype=np.float64)
        if not np.allclose(ss.temperatures, t, rtol=1e-12, atol=0):
            ss.close()
            raise InputError(f"cannot resume {path}: mismatched temperatures (file {np.unique(ss.temperatures).tolist()} K, "
                             f"run {np.unique(t).tolist()} K)")
        return ss
    return SampleSet.create(path, overwrite=overwrite, in_memory=path is None, **create_kwargs)


class _Recorder:
    """Reporter that buffers frames at the steps the protocol asks for."""

    stride = 1

    def __init__(self, n_equilibration, stride, frame_fn):
        self.n_equilibration, self.every, self.frame_fn = n_equilibration, stride, frame_fn
        self.start = None
        self.buffer = []

    def due(self, step) -> bool:
        """Whether ``step`` is a recorded frame (the integrator skips building ``info`` on the others).
        A segment's starting frame was recorded at the end of the previous segment."""
        return step != self.start and step > self.n_equilibration and (step - self.n_equilibration) % self.every == 0

    def report(self, step, state, info):
        if self.due(step):
            self.buffer.append(self.frame_fn(state, info, step))

    def flush_into(self, samples: SampleSet):
        if not self.buffer:
            return
        keys = self.buffer[0].keys()
        merged = {}
        for k in keys:
            parts = [b[k] for b in self.buffer]
            merged[k] = np.concatenate(parts, axis=1 if k == "u_kn" else 0)
        samples.append(**merged)
        self.buffer = []


@dataclass
class Hooks:
    """What a protocol does between segments: ``on_boundary(step, state) -> state | None`` every
    ``every`` steps (exchanges, hill depositions); ``get_extra() -> (arrays, meta)`` and
    ``set_extra(arrays, meta)`` carry its own state through checkpoints."""

    every: Optional[int] = None
    on_boundary: Optional[Callable] = None
    get_extra: Optional[Callable] = None
    set_extra: Optional[Callable] = None


def drive(*, physical, bias, start: State, temperature: float, dynamics, schedule: Schedule, samples: SampleSet,
          frame_fn: Callable, hooks: Hooks | None = None, on_checkpoint: Callable | None = None,
          progress=None) -> State:
    """Run (or resume) a batched protocol; see the module docstring. Returns the final State.

    ``dynamics`` is a settings object (:class:`~fesurf.sampling.protocol.LangevinDynamics` or another
    mover with ``build``); ``schedule`` a :class:`~fesurf.sampling.protocol.Schedule`.
    """
    hooks = hooks or Hooks()
    if hooks.every is not None and int(hooks.every) < 1:
        raise InputError(f"the protocol's boundary interval must be >= 1 steps or None, got {hooks.every}")
    checkpoint_every = schedule.checkpoint_every
    boundary_every = hooks.every
    total = schedule.total_steps
    n = start.n_systems
    total_potential = physical if bias is None else Sum([physical, bias])
    integrator = dynamics.build(total_potential, temperature, n, seeds_for(dynamics.seed, 2, n))
    blob = samples.checkpoint_data
    if isinstance(blob, (bytes, bytearray)):
        arrays, meta = _unpack(blob)
        step = int(meta["step"])
        state = start.replace(positions=torch.from_numpy(arrays["positions"]).to(start.dtype),
                              velocities=torch.from_numpy(arrays["velocities"]).to(start.dtype))
        integrator.set_rng_state(meta["rng"])
        if hooks.set_extra is not None:
            hooks.set_extra({k[6:]: v for k, v in arrays.items() if k.startswith("extra_")}, meta.get("extra", {}))
        log.info("resuming at step %d of %d (%d frames committed)", step, total, samples.n_frames)
    else:
        step = 0
        state = start if start.velocities is not None else maxwell_boltzmann(
            start, temperature, seed=seeds_for(dynamics.seed, 1, n))
    integrator.step_count = step
    recorder = _Recorder(int(schedule.n_equilibration), int(schedule.stride), frame_fn)
    marks = [m for m in (checkpoint_every, boundary_every) if m]

    def checkpoint(state):
        recorder.flush_into(samples)
        arrays = {"positions": state.positions.numpy(), "velocities": state.velocities.numpy()}
        extra_meta = {}
        if hooks.get_extra is not None:
            extra_arrays, extra_meta = hooks.get_extra()
            arrays.update({f"extra_{k}": v for k, v in extra_arrays.items()})
        samples.checkpoint(_pack(arrays, {"step": step, "rng": integrator.rng_state(), "extra": extra_meta}))
        if on_checkpoint is not None:
            on_checkpoint(step)

    from tqdm.auto import tqdm

    # one bar for the whole protocol (quiet off a terminal); the integrator's own bar would restart per segment
    bar = tqdm(total=total, initial=step, disable=(not progress) if progress is not None else None,
               desc="sampling", unit="step", mininterval=0.5)
    while step < total:
        nxt = min([total] + [(step // m + 1) * m for m in marks])
        recorder.start = step
        state = integrator.run(state, nxt - step, reporters=(recorder,), progress=False)
        bar.update(nxt - step)
        step = nxt
        if boundary_every and step % boundary_every == 0 and hooks.on_boundary is not None:
            state = hooks.on_boundary(step, state) or state
        if (checkpoint_every and step % checkpoint_every == 0) or step == total:
            checkpoint(state)
        else:
            recorder.flush_into(samples)
    bar.close()
    return state


def reduced(energy_ev, temperature):
    """eV -> kT (numpy)."""
    return np.asarray(energy_ev, dtype=np.float64) / (KB * temperature)
