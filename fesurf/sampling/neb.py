"""Nudged elastic band with every image a replica of one State: one potential call per band step.

ASE's NEB machinery does the band (improved tangents, springs, the climbing image, its optimisers);
fesurf supplies the forces. Each intermediate image gets a small calculator that shares one
:class:`BatchedImages` evaluator: the first image asked for forces after the optimiser moved the band
evaluates *all* intermediate images in one batched potential call (a State with one system per
image), the others read their share. So a band step costs one surrogate call instead of one per
image, and the result is the one ASE's image-by-image NEB gives with the same potential (tested).

:func:`neb` runs a band; :class:`NEBSettings` groups the settings; :class:`NEBResult` holds the path,
its energies and the barriers. :class:`OracleCalculator` is any fesurf oracle as an ASE calculator
through a label cache, so an expensive reference NEB or relaxation (GFN1-xTB in a 65-atom cell)
resumes where it was killed: ASE's optimisers are deterministic, so the replay hits the cache.

Units: energies eV, forces eV/A, spring constant eV/A^2, positions Angstrom.

Example
-------
>>> import numpy as np
>>> from ase import Atoms
>>> from fesurf.potentials import MullerBrown
>>> a = Atoms("H", positions=[[-0.558, 1.442, 0.0]])
>>> b = Atoms("H", positions=[[-0.050, 0.467, 0.0]])
>>> res = neb(MullerBrown(scale=0.01), [a, b], NEBSettings(n_images=7, k=0.5, fmax=0.01))
>>> res.converged, res.climbing_image
(True, 3)
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.singlepoint import SinglePointCalculator

from ..errors import InputError, OracleError
from ..state import State

log = logging.getLogger(__name__)

__all__ = ["NEBSettings", "NEBResult", "BatchedImages", "neb", "image_by_image_neb", "interpolate_band",
           "OracleCalculator"]

_OPTIMIZERS = ("FIRE", "BFGS", "LBFGS", "MDMin")


@dataclass(frozen=True)
class NEBSettings:
    """How to run a band.

    Parameters
    ----------
    n_images : images in the band, end points included (>= 3).
    k : spring constant, eV/A^2.
    climb : climbing image (the highest image climbs to the saddle, free of springs).
    method : ASE's NEB tangent method (``"improvedtangent"``, ``"aseneb"``, ``"eb"``, ``"spline"``,
        ``"string"``).
    fmax : convergence threshold on the largest NEB force component, eV/A.
    steps : optimiser step limit.
    optimizer : ``"FIRE"``, ``"BFGS"``, ``"LBFGS"`` or ``"MDMin"`` (ASE's).
    interpolation : ``"linear"`` or ``"idpp"`` (ASE's image-dependent pair potential) between the end points.
    mic : minimum-image convention for the interpolation (periodic cells).
    max_step : optimiser's largest step, Angstrom.
    """

    n_images: int = 7
    k: float = 0.1
    climb: bool = True
    method: str = "improvedtangent"
    fmax: float = 0.05
    steps: int = 500
    optimizer: str = "FIRE"
    interpolation: str = "linear"
    mic: bool = False
    max_step: float = 0.1

    def __post_init__(self):
        if isinstance(self.n_images, bool) or not isinstance(self.n_images, (int, np.integer)) or self.n_images < 3:
            raise InputError(f"n_images counts the band's images with its two end points; it must be an integer >= 3, "
                             f"got {self.n_images!r}")
        for name in ("k", "fmax", "max_step"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not np.isfinite(v) or v <= 0:
                raise InputError(f"{name} must be a positive number, got {v!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)) or self.steps < 1:
            raise InputError(f"steps must be an integer >= 1, got {self.steps!r}")
        if self.optimizer not in _OPTIMIZERS:
            raise InputError(f"unknown optimizer {self.optimizer!r}; use one of {_OPTIMIZERS}")
        if self.method not in ("improvedtangent", "aseneb", "eb", "spline", "string"):
            raise InputError(f"unknown NEB method {self.method!r}; use 'improvedtangent', 'aseneb', 'eb', 'spline' "
                             "or 'string'")
        if self.interpolation not in ("linear", "idpp"):
            raise InputError(f"interpolation must be 'linear' or 'idpp', got {self.interpolation!r}")


@dataclass
class NEBResult:
    """A relaxed band: ``images`` (ase.Atoms, end points included, with their energies attached),
    ``energies`` [n_images] eV, ``barrier`` (highest image minus the first end point, eV),
    ``reverse_barrier`` (minus the last end point), ``climbing_image`` (index of the highest image),
    ``converged``, ``n_steps`` (optimiser steps), ``n_calls`` (potential calls, each over all moving
    images), ``path`` [n_images] cumulative distance along the band (Angstrom), ``max_force``
    (final largest NEB force component, eV/A)."""

    images: list
    energies: np.ndarray
    barrier: float
    reverse_barrier: float
    climbing_image: int
    converged: bool
    n_steps: int
    n_calls: int
    path: np.ndarray
    max_force: float
    settings: dict

    def to_dict(self) -> dict:
        """JSON-able summary (no structures)."""
        return {"energies_eV": [float(e) for e in self.energies], "barrier_eV": float(self.barrier),
                "reverse_barrier_eV": float(self.reverse_barrier), "climbing_image": int(self.climbing_image),
                "converged": bool(self.converged), "n_steps": int(self.n_steps), "n_calls": int(self.n_calls),
                "path_A": [float(p) for p in self.path], "max_force_eV_A": float(self.max_force),
                "settings": self.settings}


class BatchedImages:
    """Energies and forces of all moving images of a band in one call of ``potential``.

    ``images``: the intermediate images (ase.Atoms, same atoms and cell). :meth:`results` returns image
    ``index``'s energy and forces; when any image moved since the last evaluation, all images are
    evaluated again in one call. ``n_calls`` counts those calls.
    """

    def __init__(self, potential, images: Sequence[Atoms], dtype=torch.float64):
        self.potential = potential
        self.images = list(images)
        self.template = State.from_atoms(self.images, dtype=dtype)  # validated once: same atoms in every image
        self.dtype = dtype
        self.n_calls = 0
        self._positions = None
        self._energies = None
        self._forces = None

    def _current(self):
        return np.stack([a.positions for a in self.images])

    def results(self, index: int):
        pos = self._current()
        if self._positions is None or not np.array_equal(pos, self._positions):
            state = self.template.replace(positions=torch.as_tensor(pos.reshape(-1, 3), dtype=self.dtype))
            energy, forces = self.potential.energy_and_forces(state)
            self._positions = pos
            self._energies = energy.detach().cpu().double().numpy()
            self._forces = forces.detach().cpu().double().numpy().reshape(pos.shape)
            self.n_calls += 1
            if not (np.isfinite(self._energies).all() and np.isfinite(self._forces).all()):
                from ..errors import SimulationError

                raise SimulationError("the potential returned non-finite energies or forces on the band; shorten "
                                      "max_step or check the end points")
        return float(self._energies[index]), self._forces[index].copy()


class _ImageCalculator(Calculator):
    """Image ``index``'s share of a :class:`BatchedImages` evaluation."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, batch: BatchedImages, index: int):
        super().__init__()
        self.batch, self.index = batch, int(index)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        energy, forces = self.batch.results(self.index)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}


def _check_end_points(end_points):
    end_points = list(end_points)
    if len(end_points) < 2 or not all(isinstance(a, Atoms) for a in end_points):
        raise InputError("give the band's end points (two ase.Atoms), or a whole band of ase.Atoms")
    first = end_points[0]
    for k, a in enumerate(end_points):
        if len(a) != len(first) or not np.array_equal(a.numbers, first.numbers):
            raise InputError(f"image {k} has other atoms than image 0 (same atoms in the same order needed)")
        if not np.array_equal(a.pbc, first.pbc) or (np.any(first.pbc) and not np.allclose(a.cell, first.cell)):
            raise InputError(f"image {k} has another cell or pbc than image 0; a band lives in one fixed cell")
        if not np.isfinite(a.positions).all():
            raise InputError(f"image {k} has non-finite positions")
    return [a.copy() for a in end_points]


def interpolate_band(end_points: Sequence[Atoms], settings: NEBSettings) -> list:
    """The band's images: the two end points with ``n_images - 2`` interpolated between (ASE's
    ``linear`` or ``idpp``), or the given band itself when it already has ``n_images`` images."""
    images = _check_end_points(end_points)
    if len(images) == settings.n_images:
        return images
    if len(images) != 2:
        raise InputError(f"got {len(images)} images; give the two end points or exactly n_images = "
                         f"{settings.n_images} images")
    from ase.mep import NEB

    band = [images[0]] + [images[0].copy() for _ in range(settings.n_images - 2)] + [images[1]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        tmp = NEB(band, method=settings.method)
        tmp.interpolate(method=settings.interpolation, mic=settings.mic, apply_constraint=False)
    return band


def _optimizer(settings, target, logfile):
    import ase.optimize as opt

    cls = getattr(opt, settings.optimizer)
    kw = {"maxstep": settings.max_step} if settings.optimizer in ("FIRE", "BFGS", "LBFGS") else {"dt": settings.max_step}
    return cls(target, logfile=logfile, **kw)


def _relax_band(band, settings, end_energies, logfile):
    from ase.mep import NEB

    neb_obj = NEB(band, k=settings.k, climb=settings.climb, method=settings.method)
    opt = _optimizer(settings, neb_obj, logfile)
    converged = bool(opt.run(fmax=settings.fmax, steps=settings.steps))
    forces = neb_obj.get_forces()
    energies = np.asarray(neb_obj.energies, dtype=np.float64).copy()
    energies[0], energies[-1] = end_energies
    return neb_obj, converged, int(opt.nsteps), float(np.abs(forces).max()) if forces.size else 0.0, energies


def _result(band, energies, converged, n_steps, n_calls, max_force, settings):
    pos = np.stack([a.positions for a in band])
    d = np.diff(pos, axis=0)
    if np.any(band[0].pbc):
        from ase.geometry import find_mic

        d = np.stack([find_mic(x, band[0].cell, band[0].pbc)[0] for x in d])
    path = np.concatenate([[0.0], np.cumsum(np.sqrt((d ** 2).sum(axis=(1, 2))))])
    out = []
    for a, e in zip(band, energies):
        c = a.copy()
        c.calc = SinglePointCalculator(c, energy=float(e))
        out.append(c)
    top = int(np.argmax(energies[1:-1])) + 1
    return NEBResult(images=out, energies=energies, barrier=float(energies[top] - energies[0]),
                     reverse_barrier=float(energies[top] - energies[-1]), climbing_image=top, converged=converged,
                     n_steps=n_steps, n_calls=n_calls, path=path, max_force=max_force, settings=asdict(settings))


def neb(potential, end_points: Sequence[Atoms], settings: NEBSettings | None = None, *, dtype=torch.float64,
        logfile: Optional[str] = None) -> NEBResult:
    """Relax a (climbing-image) nudged elastic band on a fesurf potential, all images in one call per step.

    Parameters
    ----------
    potential : Potential
        Any fesurf potential (a surrogate, an analytic potential); called once per band step on a State
        holding every moving image.
    end_points : the two end points (ase.Atoms, relaxed beforehand), or a whole band of ``n_images`` images.
    settings : :class:`NEBSettings`
    logfile : the optimiser's log (None: quiet; ``"-"``: standard output).

    Returns a :class:`NEBResult`. If the band does not reach ``fmax`` in ``steps`` steps the result says
    ``converged=False`` (and a warning says so); nothing is hidden.

    >>> from ase import Atoms
    >>> from fesurf.potentials import MullerBrown
    >>> a, b = Atoms("H", [[-0.558, 1.442, 0]]), Atoms("H", [[-0.050, 0.467, 0]])
    >>> round(neb(MullerBrown(scale=0.01), [a, b], NEBSettings(n_images=7, k=0.5, fmax=0.01)).barrier, 3)
    1.06
    """
    settings = settings or NEBSettings()
    if not isinstance(settings, NEBSettings):
        raise InputError(f"settings must be a NEBSettings, got {type(settings).__name__}")
    if not hasattr(potential, "energy_and_forces"):
        raise InputError(f"potential must be a fesurf Potential, got {type(potential).__name__}")
    band = interpolate_band(end_points, settings)
    ends = BatchedImages(potential, [band[0], band[-1]], dtype=dtype)
    end_energies = (ends.results(0)[0], ends.results(1)[0])
    for a, e, k in zip((band[0], band[-1]), end_energies, (0, 1)):
        a.calc = SinglePointCalculator(a, energy=e, forces=ends.results(k)[1])
    batch = BatchedImages(potential, band[1:-1], dtype=dtype)
    for k, a in enumerate(band[1:-1]):
        a.calc = _ImageCalculator(batch, k)
    _, converged, n_steps, fmax, energies = _relax_band(band, settings, end_energies, logfile)
    if not converged:
        warnings.warn(f"the band did not converge to fmax = {settings.fmax} eV/A in {settings.steps} steps (largest "
                      f"NEB force {fmax:.3g} eV/A); raise steps or check the end points", RuntimeWarning, stacklevel=2)
    return _result(band, energies, converged, n_steps, batch.n_calls + 1, fmax, settings)


def image_by_image_neb(calculator_factory, end_points: Sequence[Atoms], settings: NEBSettings | None = None, *,
                       logfile: Optional[str] = None) -> NEBResult:
    """ASE's ordinary NEB, one calculator per image, each called in turn (the reference for :func:`neb`,
    and the way to run a band on a reference method: ``calculator_factory()`` returns one ASE calculator,
    e.g. ``lambda: OracleCalculator(oracle, cache=...)`` or ``ase.calculators.emt.EMT``).

    ``n_calls`` counts calculator calls (one per image per step, plus the end points).

    >>> from ase import Atoms
    >>> from fesurf.potentials import FesurfCalculator, MullerBrown
    >>> a, b = Atoms("H", [[-0.558, 1.442, 0]]), Atoms("H", [[-0.050, 0.467, 0]])
    >>> r = image_by_image_neb(lambda: FesurfCalculator(MullerBrown(scale=0.01)), [a, b],
    ...                        NEBSettings(n_images=7, k=0.5, fmax=0.01))
    >>> round(r.barrier, 3)
    1.06
    """
    settings = settings or NEBSettings()
    if not callable(calculator_factory):
        raise InputError("calculator_factory must be a callable returning a new ASE calculator")
    band = interpolate_band(end_points, settings)
    counters = []
    for a in band:
        calc = calculator_factory()
        a.calc = _Counted(calc, counters)
    end_energies = (band[0].get_potential_energy(), band[-1].get_potential_energy())
    _, converged, n_steps, fmax, energies = _relax_band(band, settings, end_energies, logfile)
    if not converged:
        warnings.warn(f"the band did not converge to fmax = {settings.fmax} eV/A in {settings.steps} steps",
                      RuntimeWarning, stacklevel=2)
    return _result(band, energies, converged, n_steps, len(counters), fmax, settings)


class _Counted(Calculator):
    """Delegates to ``inner`` and appends to ``counter`` on every real calculation."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, inner, counter: list):
        super().__init__()
        self.inner, self.counter = inner, counter

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        work = self.atoms.copy()
        work.calc = self.inner
        energy = work.get_potential_energy()
        self.results = {"energy": energy, "free_energy": energy, "forces": work.get_forces()}
        self.counter.append(1)


class OracleCalculator(Calculator):
    """A fesurf oracle as an ASE calculator, through a label cache (relaxations and NEBs that resume).

    Every calculation goes through ``oracle.label([atoms], cache=cache)``: a configuration already in
    the cache costs nothing, so a killed relaxation or band, run again from the same start, replays
    its steps from the cache and continues. Stress (eV/A^3, ASE Voigt order) is available when the
    oracle stores it (``Label.extra["stress"]``, e.g. :class:`fesurf.training.periodic_fit.StressOracle`).
    ``n_computed`` counts the calls that were not in the cache.

    >>> from ase.build import molecule
    >>> from fesurf.oracles import XTBOracle
    >>> atoms = molecule("H2O")
    >>> atoms.calc = OracleCalculator(XTBOracle())
    >>> atoms.get_forces().shape
    (3, 3)
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, oracle, cache=None, charge=None, multiplicity=None, **kwargs):
        super().__init__(**kwargs)
        if not hasattr(oracle, "label"):
            raise InputError(f"oracle must be a fesurf Oracle, got {type(oracle).__name__}")
        self.oracle, self.cache = oracle, cache
        if cache is not None and not hasattr(cache, "get"):
            from ..oracles.base import LabelCache

            self.cache = LabelCache(cache)
        self.charge, self.multiplicity = charge, multiplicity
        self.n_computed = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        lab = self.oracle.label([self.atoms], cache=self.cache, charge=self.charge, multiplicity=self.multiplicity)[0]
        self.n_computed += int(self.oracle.last_stats["computed"])
        if not lab.ok:
            raise OracleError(f"{lab.method} failed: {lab.reason}")
        self.results = {"energy": float(lab.energy), "free_energy": float(lab.energy),
                        "forces": np.asarray(lab.forces, dtype=np.float64)}
        stress = (lab.extra or {}).get("stress")
        if stress is not None:
            s = np.asarray(stress, dtype=np.float64).reshape(3, 3)
            self.results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        elif "stress" in properties:
            from ase.calculators.calculator import PropertyNotImplementedError

            raise PropertyNotImplementedError(f"{lab.method} labels carry no stress; wrap the oracle in "
                                              "fesurf.training.periodic_fit.StressOracle")
