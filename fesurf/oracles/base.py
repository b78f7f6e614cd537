"""Reference oracles: label configurations with energies (eV) and forces (eV/A).

An :class:`Oracle` labels one configuration (:meth:`Oracle.compute`) or a
batch (:meth:`Oracle.label`), serially or through any
``concurrent.futures.Executor`` (a process pool, a Dask cluster's
``client.get_executor()``). Results go into an optional on-disk
:class:`LabelCache` keyed by the rounded configuration, charge, multiplicity
and method, so a rerun does not recompute. A failed calculation (atoms on top
of each other, SCF not converged, a crash) becomes a :class:`Label` with
``ok=False`` and its ``reason``; it never becomes a zero or a NaN, and the
rest of the batch is labelled.

Example
-------
>>> from ase.build import molecule
>>> from fesurf.oracles import XTBOracle
>>> labels = XTBOracle().label([molecule("H2O")])
>>> labels[0].ok, labels[0].forces.shape
(True, (3, 3))
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from ase import Atoms

from ..errors import InputError, OracleError
from ..state import State

log = logging.getLogger(__name__)

#: two atoms closer than this (Angstrom) are an impossible configuration.
MIN_DISTANCE = 0.3
#: positions are rounded to this many decimals (Angstrom) for the cache key.
KEY_DECIMALS = 6


@dataclass
class Label:
    """The result of one reference calculation.

    ``energy`` in eV and ``forces`` [n_atoms, 3] in eV/A when ``ok``; both
    ``None`` otherwise, with ``reason`` saying why it failed.
    """

    numbers: np.ndarray
    positions: np.ndarray
    charge: float
    multiplicity: int
    method: str
    ok: bool
    energy: Optional[float] = None
    forces: Optional[np.ndarray] = None
    reason: str = ""
    cell: Optional[np.ndarray] = None
    pbc: Optional[np.ndarray] = None
    extra: dict = field(default_factory=dict)

    def to_atoms(self) -> Atoms:
        """An ``ase.Atoms`` with a SinglePointCalculator holding energy and forces
        (only for ``ok`` labels) and ``info`` charge, multiplicity, method."""
        from ase.calculators.singlepoint import SinglePointCalculator

        if not self.ok:
            raise InputError(f"label failed ({self.reason}); failed labels have no energy to export")
        atoms = Atoms(numbers=self.numbers, positions=self.positions,
                      cell=self.cell if self.cell is not None else None,
                      pbc=self.pbc if self.pbc is not None else False)
        atoms.info.update(charge=float(self.charge), multiplicity=int(self.multiplicity), method=self.method)
        atoms.calc = SinglePointCalculator(atoms, energy=float(self.energy), forces=np.array(self.forces))
        return atoms


def as_atoms_list(configs) -> list[Atoms]:
    """Accept a State, one ``ase.Atoms`` or a sequence of them; return a list of Atoms."""
    if isinstance(configs, State):
        return configs.to_atoms()
    if isinstance(configs, Atoms):
        return [configs]
    configs = list(configs)
    if not all(isinstance(a, Atoms) for a in configs):
        raise InputError("configurations must be a fesurf State, an ase.Atoms or a list of ase.Atoms")
    return configs


def _charge_mult(atoms: Atoms, charge, multiplicity):
    q = float(atoms.info.get("charge", 0.0) if charge is None else charge)
    if multiplicity is not None:
        m = int(multiplicity)
    elif "multiplicity" in atoms.info:
        m = int(atoms.info["multiplicity"])
    elif "spin" in atoms.info:
        m = int(round(2 * atoms.info["spin"])) + 1
    else:
        m = 1
    if m < 1:
        raise InputError(f"multiplicity is 2S+1 and must be >= 1, got {m}")
    return q, m


def config_key(numbers, positions, charge, multiplicity, method: str, cell=None, pbc=None) -> str:
    """Hex digest identifying a configuration + method (positions rounded to 1e-6 A)."""
    h = hashlib.sha256()
    h.update(method.encode())
    h.update(np.asarray(numbers, dtype=np.int64).tobytes())
    pos = np.round(np.asarray(positions, dtype=np.float64), KEY_DECIMALS) + 0.0  # +0.0 folds -0 into 0
    h.update(pos.tobytes())
    h.update(np.array([float(charge), float(multiplicity)]).tobytes())
    if cell is not None and pbc is not None and np.any(pbc):
        h.update(np.round(np.asarray(cell, dtype=np.float64), KEY_DECIMALS).tobytes())
        h.update(np.asarray(pbc, dtype=bool).tobytes())
    return h.hexdigest()


_EXTRA = "extra__"


class LabelCache:
    """Directory of labels keyed by :func:`config_key` (one small ``.npz`` per entry).

    Failed labels are cached too (with their reason) unless ``retry_failed``
    is passed to :meth:`Oracle.label`.

    >>> import tempfile
    >>> cache = LabelCache(tempfile.mkdtemp())
    >>> len(cache)
    0
    """

    def __init__(self, directory):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key):
        return self.directory / key[:2] / f"{key}.npz"

    def __len__(self):
        return sum(1 for _ in self.directory.glob("*/*.npz"))

    def get(self, key) -> Optional[Label]:
        path = self._path(key)
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as d:
            meta = json.loads(str(d["meta"]))
            ok = bool(meta["ok"])
            return Label(numbers=d["numbers"], positions=d["positions"], charge=meta["charge"],
                         multiplicity=meta["multiplicity"], method=meta["method"], ok=ok,
                         energy=meta.get("energy"), forces=d["forces"] if ok else None,
                         reason=meta.get("reason", ""),
                         cell=d["cell"] if "cell" in d else None, pbc=d["pbc"] if "pbc" in d else None,
                         extra={**meta.get("extra", {}),
                                **{k[len(_EXTRA):]: d[k] for k in d.files if k.startswith(_EXTRA)}})

    def put(self, key, label: Label):
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        meta = dict(ok=label.ok, charge=label.charge, multiplicity=label.multiplicity, method=label.method,
                    energy=label.energy, reason=label.reason)
        arrays = dict(numbers=label.numbers, positions=label.positions, meta=np.array(json.dumps(meta)))
        if label.ok:
            arrays["forces"] = label.forces
        if label.cell is not None:
            arrays["cell"], arrays["pbc"] = label.cell, label.pbc
        # extras (root energies, couplings, <S^2>, ...): scalars in the JSON, numeric arrays as arrays
        meta["extra"] = {}
        for k, v in label.extra.items():
            if isinstance(v, (bool, int, float, str)) or v is None:
                meta["extra"][k] = v
            elif isinstance(v, np.generic):
                meta["extra"][k] = v.item()
            else:
                arr = np.asarray(v)
                if arr.dtype.kind not in "biufc":
                    raise InputError(f"Label.extra[{k!r}] is not a number, string or numeric array; it cannot be cached")
                arrays[_EXTRA + k] = arr
        arrays["meta"] = np.array(json.dumps(meta))
        tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)


def _too_close(atoms: Atoms) -> Optional[str]:
    if len(atoms) < 2:
        return None
    d = atoms.get_all_distances(mic=bool(np.any(atoms.pbc)))
    np.fill_diagonal(d, np.inf)
    i, j = np.unravel_index(np.argmin(d), d.shape)
    if d[i, j] < MIN_DISTANCE:
        return (f"atoms {min(i, j)} and {max(i, j)} are {d[i, j]:.3f} A apart (< {MIN_DISTANCE} A): "
                "impossible configuration, not computed")
    return None


class Oracle:
    """Base class. Subclasses implement :meth:`_compute` (energy eV, forces eV/A); anything more it
    computes (root energies, couplings, <S^2>) goes into ``self._extra``, which a successful
    :meth:`compute` copies into ``Label.extra``.

    Oracles are picklable (settings only), so they run in process pools; the
    underlying calculator is rebuilt lazily in each process.
    """

    #: a string naming method and settings; part of the cache key.
    method: str = "oracle"

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_calc"] = None
        return state

    def _compute(self, atoms: Atoms, charge: float, multiplicity: int):
        raise NotImplementedError

    def compute(self, atoms: Atoms, charge=None, multiplicity=None) -> Label:
        """Label one configuration; failures come back as ``Label(ok=False, reason=...)``."""
        q, m = _charge_mult(atoms, charge, multiplicity)
        base = dict(numbers=atoms.get_atomic_numbers().copy(), positions=atoms.get_positions().copy(),
                    charge=q, multiplicity=m, method=self.method,
                    cell=np.asarray(atoms.cell.array).copy() if np.any(atoms.pbc) else None,
                    pbc=np.asarray(atoms.pbc).copy() if np.any(atoms.pbc) else None)
        reason = _too_close(atoms)
        if reason is not None:
            return Label(ok=False, reason=reason, **base)
        self._extra = {}  # _compute may leave more results here (root energies, couplings, <S^2>)
        try:
            energy, forces = self._compute(atoms.copy(), q, m)
        except Exception as exc:  # any crash of the QM code is a recorded failure, not a lost batch
            return Label(ok=False, reason=f"{type(exc).__name__}: {exc}".strip()[:500], **base)
        forces = np.asarray(forces, dtype=np.float64).reshape(len(atoms), 3)
        if not (np.isfinite(energy) and np.isfinite(forces).all()):
            return Label(ok=False, reason="non-finite energy or forces returned", **base)
        return Label(ok=True, energy=float(energy), forces=forces, extra=dict(self._extra), **base)

    def _task_copy(self):
        import copy

        twin = copy.copy(self)
        twin._calc = None
        return twin

    def label(self, configs, *, executor=None, cache: LabelCache | str | os.PathLike | None = None,
              charge=None, multiplicity=None, retry_failed: bool = False, progress=None) -> list[Label]:
        """Label a batch of configurations.

        Parameters
        ----------
        configs : State, ase.Atoms or list of ase.Atoms
        executor : concurrent.futures.Executor, optional
            Runs the calculations (default: serial in this process). For a
            process pool use the spawn context
            (``ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"))``):
            forking a process that has already run tblite can deadlock.
        cache : LabelCache or directory, optional
            Reuse and store labels keyed by configuration + method.
        charge, multiplicity : optional overrides of ``atoms.info`` (e, 2S+1).
        retry_failed : bool
            Recompute configurations whose cached label is a failure.

        Returns one :class:`Label` per configuration, in order; check ``.ok``.
        """
        from tqdm.auto import tqdm

        atoms_list = as_atoms_list(configs)
        if cache is not None and not isinstance(cache, LabelCache):
            cache = LabelCache(cache)
        out: list[Optional[Label]] = [None] * len(atoms_list)
        todo, keys = [], []
        for k, atoms in enumerate(atoms_list):
            q, m = _charge_mult(atoms, charge, multiplicity)
            key = config_key(atoms.numbers, atoms.positions, q, m, self.method, atoms.cell.array, atoms.pbc)
            keys.append((key, q, m))
            hit = cache.get(key) if cache is not None else None
            if hit is not None and (hit.ok or not retry_failed):
                out[k] = hit
            else:
                todo.append(k)
        log.info("%s: %d configurations, %d from cache, %d to compute", self.method, len(atoms_list),
                 len(atoms_list) - len(todo), len(todo))
        bar = tqdm(total=len(todo), disable=(not progress) if progress is not None else None,
                   desc=self.method, unit="calc")
        if executor is None:
            results = (self.compute(atoms_list[k], keys[k][1], keys[k][2]) for k in todo)
        else:
            # each task gets its own shallow copy with no calculator yet: threads must not share one
            # calculator object (ASE calculators keep per-call state), processes pickle a copy anyway
            futures = [executor.submit(self._task_copy().compute, atoms_list[k], keys[k][1], keys[k][2])
                       for k in todo]
            results = (f.result() for f in futures)
        for k, lab in zip(todo, results):
            out[k] = lab
            if cache is not None:
                cache.put(keys[k][0], lab)
            if not lab.ok:
                log.warning("%s failed on configuration %d: %s", self.method, k, lab.reason)
            bar.update(1)
        bar.close()
        return out  # type: ignore[return-value]

    def as_potential(self):
        """This oracle as a fesurf Potential (exact forces, not differentiable)."""
        from .potential import OraclePotential

        return OraclePotential(self)


def successful(labels: Sequence[Label]) -> list[Label]:
    """The labels with ``ok=True``."""
    return [lab for lab in labels if lab.ok]


def raise_on_failure(label: Label) -> Label:
    """Return ``label`` or raise :class:`~fesurf.errors.OracleError` with its reason."""
    if not label.ok:
        raise OracleError(f"{label.method} failed: {label.reason}")
    return label
