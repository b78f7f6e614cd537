"""Protocol settings as small objects: how to move, when to record, where to store.

Every sampling protocol (umbrella, TI/FEP, metadynamics, and the ones built on
them) takes the same three groups of settings instead of re-listing twenty
keywords:

============== ========================================
``Dynamics``   how the replicas move: :class:`LangevinDynamics` (BAOAB) here; other
               movers (ring polymers, hybrid Monte Carlo) provide the same
               ``build(potential, temperature, n_systems)`` and ``attrs()``.
``Schedule``   ``n_equilibration``, ``n_production``, ``stride``, ``checkpoint_every`` (MD steps).
``Storage``    ``path``, ``resume``, ``overwrite``, ``store_positions``.
============== ========================================

The protocol functions still accept the old flat keywords (``timestep=``,
``n_production=``, ``path=`` ...), which :func:`resolve` folds into these objects,
so a call may use either style but not both for one group.

Units: timestep fs, friction 1/fs; steps are MD steps (or moves, for Monte Carlo movers).

Example
-------
>>> from fesurf.sampling.protocol import LangevinDynamics, Schedule, Storage
>>> dyn = LangevinDynamics(timestep=0.5, friction=0.02, seed=3)
>>> sched = Schedule(n_equilibration=100, n_production=1000, stride=10)
>>> sched.n_frames_per_replica
100
>>> Storage().path is None
True
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional, Sequence, Union

import numpy as np

from ..errors import InputError

__all__ = ["LangevinDynamics", "Schedule", "Storage", "resolve"]


def _positive_number(value, name, unit):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a positive number ({unit}), got {value!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise InputError(f"{name} must be a positive number ({unit}), got {value!r}")
    return v


@dataclass(frozen=True)
class LangevinDynamics:
    """Langevin (BAOAB) dynamics for every replica.

    Parameters
    ----------
    timestep : fs
    friction : 1/fs, one value or one per replica
    seed : int; seeds the starting velocities and every replica's noise stream
    """

    timestep: float = 1.0
    friction: Union[float, Sequence[float]] = 0.01
    seed: int = 0

    def __post_init__(self):
        _positive_number(self.timestep, "timestep", "fs")
        f = np.asarray(self.friction, dtype=np.float64) if not isinstance(self.friction, str) else np.array([np.nan])
        if f.size == 0 or not np.all(np.isfinite(f)) or np.any(f <= 0):
            raise InputError(f"friction must be positive (1/fs), one value or one per replica; got {self.friction!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise InputError(f"seed must be an int (every stochastic protocol is seeded), got {self.seed!r}")

    def build(self, potential, temperature: float, n_systems: int, noise_seeds):
        """The integrator for ``n_systems`` replicas (``noise_seeds``: one int per replica)."""
        from ..md import Langevin

        return Langevin(potential, timestep=float(self.timestep), temperature=temperature, friction=self.friction,
                        seed=noise_seeds)

    def attrs(self) -> dict:
        """What a SampleSet records about the dynamics."""
        return {"dynamics": "langevin-baoab", "timestep_fs": float(self.timestep),
                "friction_per_fs": float(np.asarray(self.friction).reshape(-1)[0]), "seed": int(self.seed)}


@dataclass(frozen=True)
class Schedule:
    """When to record: ``n_equilibration`` steps discarded, then ``n_production`` steps with a frame
    every ``stride`` steps; a checkpoint every ``checkpoint_every`` steps (None: only at the end)."""

    n_equilibration: int = 1000
    n_production: int = 10000
    stride: int = 10
    checkpoint_every: Optional[int] = None

    def __post_init__(self):
        for name in ("n_equilibration", "n_production", "stride"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise InputError(f"{name} must be a whole number of steps, got {v!r}")
        if self.n_equilibration < 0 or self.n_production < 0:
            raise InputError(f"n_equilibration and n_production must be >= 0 steps, got "
                             f"{self.n_equilibration} and {self.n_production}")
        if self.stride < 1:
            raise InputError(f"stride must be >= 1 steps, got {self.stride}")
        if self.n_production < self.stride:
            raise InputError(f"n_production ({self.n_production}) is shorter than stride ({self.stride}): "
                             "no frame would be recorded")
        c = self.checkpoint_every
        if c is not None and (isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1):
            raise InputError(f"checkpoint_every must be >= 1 steps or None, got {c!r}")

    @property
    def total_steps(self) -> int:
        return int(self.n_equilibration) + int(self.n_production)

    @property
    def n_frames_per_replica(self) -> int:
        return int(self.n_production) // int(self.stride)

    def attrs(self) -> dict:
        return {"n_equilibration": int(self.n_equilibration), "n_production": int(self.n_production),
                "stride": int(self.stride)}


@dataclass(frozen=True)
class Storage:
    """Where the SampleSet lives: an HDF5 ``path`` (None: in memory); ``resume`` continues a killed run
    from its last checkpoint; ``overwrite`` replaces an existing file; ``store_positions`` keeps every
    frame's positions (Angstrom)."""

    path: Optional[str] = None
    resume: bool = False
    overwrite: bool = False
    store_positions: bool = True

    def __post_init__(self):
        for name in ("resume", "overwrite", "store_positions"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise InputError(f"{name} must be True or False, got {getattr(self, name)!r}")


_GROUPS = {"dynamics": LangevinDynamics, "schedule": Schedule, "storage": Storage}


def resolve(*, dynamics=None, schedule=None, storage=None, defaults: dict | None = None, **flat):
    """Fold flat keywords into the three settings objects.

    ``flat`` holds the old-style keywords a caller passed (only those it passed); ``defaults``
    overrides a group's field defaults for this protocol (e.g. metadynamics records from step 0).
    Giving an object and flat keywords of the same group is an error, as is an unknown keyword.

    >>> dyn, sched, store = resolve(timestep=0.5, n_production=200, stride=10)
    >>> dyn.timestep, sched.n_production, store.path
    (0.5, 200, None)
    """
    given = {"dynamics": dynamics, "schedule": schedule, "storage": storage}
    out = {}
    names = {g: {f.name for f in fields(cls)} for g, cls in _GROUPS.items()}
    unknown = set(flat) - set().union(*names.values())
    if unknown:
        raise InputError(f"unknown protocol setting(s) {sorted(unknown)}; known: "
                         + "; ".join(f"{g}: {sorted(n)}" for g, n in names.items()))
    for group, cls in _GROUPS.items():
        mine = {k: v for k, v in flat.items() if k in names[group]}
        obj = given[group]
        if obj is not None:
            if mine:
                raise InputError(f"give either {group}= or the keywords {sorted(mine)}, not both")
            if group == "dynamics":
                if not (hasattr(obj, "build") and hasattr(obj, "attrs")):
                    raise InputError(f"dynamics must be a settings object such as LangevinDynamics, "
                                     f"got {type(obj).__name__}")
            elif not isinstance(obj, cls):
                raise InputError(f"{group} must be a fesurf.sampling.protocol.{cls.__name__}, got {type(obj).__name__}")
            out[group] = obj
        else:
            base = {k: v for k, v in (defaults or {}).items() if k in names[group]}
            base.update(mine)
            out[group] = cls(**base)
    return out["dynamics"], out["schedule"], out["storage"]


def settings_dict(*objects) -> dict:
    """All fields of some settings objects, merged (for logs and run records)."""
    merged = {}
    for obj in objects:
        merged.update(asdict(obj))
    return merged
