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

import contextlib
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


def electron_count_problem(numbers, charge, multiplicity) -> Optional[str]:
    """Why a charge and multiplicity are impossible for these atoms, or None when they are possible.

    ``n = sum(Z) - charge`` electrons with ``multiplicity = 2S + 1`` need a whole, non-negative ``n``,
    ``2S <= n`` unpaired electrons, and ``n`` and ``2S`` of the same parity.

    >>> electron_count_problem([8, 1, 1], 1, 1)
    'H2O with charge +1 has 9 electrons, which cannot have multiplicity 1 (2S = 0 unpaired): an odd count needs an even multiplicity (2, 4, ...)'
    >>> electron_count_problem([8, 1, 1], 0, 3) is None
    True
    """
    from ase.data import chemical_symbols
    from ase.formula import Formula

    q, m = float(charge), int(multiplicity)
    n_float = float(np.sum(np.asarray(numbers, dtype=np.int64))) - q
    zs = [int(z) for z in np.asarray(numbers).reshape(-1)]
    name = Formula.from_list([chemical_symbols[z] for z in zs]).format("hill") if zs else "the system"
    qtext = f"{q:+g}" if q else "0"
    if abs(n_float - round(n_float)) > 1e-8:
        return f"{name} with charge {qtext} has a fractional number of electrons ({n_float:g}); give a whole charge"
    n = int(round(n_float))
    if n < 0:
        return f"{name} with charge {qtext} would have {n} electrons; the charge is too positive"
    if m < 1:
        return f"multiplicity is 2S+1 and must be >= 1, got {m}"
    unpaired = m - 1
    if unpaired > n:
        return (f"{name} with charge {qtext} has {n} electrons, too few for multiplicity {m} "
                f"({unpaired} unpaired electrons)")
    if (n - unpaired) % 2:
        need = "an even multiplicity (2, 4, ...)" if n % 2 else "an odd multiplicity (1, 3, ...)"
        return (f"{name} with charge {qtext} has {n} electrons, which cannot have multiplicity {m} "
                f"(2S = {unpaired} unpaired): an {'odd' if n % 2 else 'even'} count needs {need}")
    return None


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


class NpzLabelCache:
    """The old label cache (one small ``.npz`` per entry), kept for reading old folders; ``LabelCache`` is
    now :class:`fesurf.oracles.store.LabelStore` (an ase.db file), which migrates such a folder on first use.

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
        reason = _too_close(atoms) or electron_count_problem(atoms.numbers, q, m)
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

    def cache_identity(self) -> str:
        """A digest of this oracle's settings (its pickled state without the calculator): workers keep one
        long-lived copy per identity."""
        import pickle

        state = {k: v for k, v in self.__getstate__().items() if k not in ("_calc", "_extra")}
        try:
            blob = pickle.dumps(state)
        except Exception:  # noqa: BLE001 - an unpicklable setting: fall back to the method string
            blob = self.method.encode()
        return hashlib.sha256(type(self).__qualname__.encode() + blob).hexdigest()[:24]

    def call_seconds(self, n_atoms: int) -> float:
        """Estimated seconds of one call on ``n_atoms`` atoms (sets threads and chunk sizes; not a result).
        Subclasses override; the default assumes a ms-scale method."""
        return 0.01

    def label(self, configs, *, executor=None, cache: LabelCache | str | os.PathLike | None = None,
              charge=None, multiplicity=None, retry_failed: bool = False, progress=None,
              chunk_size: Optional[int] = None) -> list[Label]:
        """Label a batch of configurations.

        Parameters
        ----------
        configs : State, ase.Atoms or list of ase.Atoms
        executor : None (in this process), an executor from :func:`fesurf.execution.make_executor`
            (a persistent spawn pool), any ``concurrent.futures.Executor``, or a
            ``dask.distributed.Client``. Work is sent in chunks sized to the call cost (many ms-scale
            xTB calls per task, one DFT call per task); each worker keeps one long-lived calculator.
        cache : LabelCache or directory, optional
            Reuse and store labels keyed by configuration + method. Results are stored as each chunk
            arrives, so a kill loses at most the calls in flight.
        charge, multiplicity : optional overrides of ``atoms.info`` (e, 2S+1).
        retry_failed : bool
            Recompute configurations whose cached label is a failure.
        chunk_size : calls per task (default: from :meth:`call_seconds`, about 0.25 s of work per task).

        Returns one :class:`Label` per configuration, in order; check ``.ok``. ``self.last_stats`` holds
        the counts (computed, from cache, failed) and the calls per second of the batch.
        """
        import time

        from tqdm.auto import tqdm

        from ..execution import chunk_size_for, decide_threads, is_dask_client, limit_threads, run_chunks

        atoms_list = as_atoms_list(configs)
        if cache is not None and not isinstance(cache, LabelCache):
            cache = LabelCache(cache)
        out: list[Optional[Label]] = [None] * len(atoms_list)
        todo, keys = [], []
        for atoms in atoms_list:
            q, m = _charge_mult(atoms, charge, multiplicity)
            key = config_key(atoms.numbers, atoms.positions, q, m, self.method, atoms.cell.array, atoms.pbc)
            keys.append((key, q, m))
        hits = cache.get_many([k for k, _, _ in keys]) if cache is not None else {}
        for k in range(len(atoms_list)):
            hit = hits.get(keys[k][0])
            if hit is not None and (hit.ok or not retry_failed):
                out[k] = hit
            else:
                todo.append(k)
        log.info("%s: %d configurations, %d from cache, %d to compute", self.method, len(atoms_list),
                 len(atoms_list) - len(todo), len(todo))
        n_atoms = max((len(atoms_list[k]) for k in todo), default=1)
        est = self.call_seconds(n_atoms)
        n_workers = 1
        if executor is not None:
            n_workers = (len(executor.scheduler_info().get("workers", {})) or 1) if is_dask_client(executor) else \
                int(getattr(executor, "_max_workers", 1) or 1)
        size = int(chunk_size) if chunk_size else chunk_size_for(est, len(todo), n_workers)
        if size < 1:
            raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
        items = [(k, atoms_list[k], keys[k][1], keys[k][2]) for k in todo]
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        bar = tqdm(total=len(todo), disable=(not progress) if progress is not None else None,
                   desc=self.method, unit="call")
        t0 = time.perf_counter()
        n_failed = 0
        threads = decide_threads(0, call_seconds=est).call_threads
        if executor is None:
            # in this process: one chunk per configuration, so each label is stored as soon as it exists
            chunks = [[it] for it in items]
            runner = run_chunks(lambda chunk: [(k, self.compute(a, q, m)) for k, a, q, m in chunk], chunks)
            context = limit_threads(threads)
        else:
            runner = run_chunks(_ChunkTask(self), chunks, executor=executor)
            context = contextlib.nullcontext()
        pending, flushed = [], time.perf_counter()

        def flush():
            nonlocal pending, flushed
            if cache is not None and pending:
                cache.put_many(pending)
            pending, flushed = [], time.perf_counter()

        try:
            with context:
                for _, results in runner:
                    for k, lab in results:
                        out[k] = lab
                        pending.append((keys[k][0], lab))
                        if not lab.ok:
                            n_failed += 1
                            log.warning("%s failed on configuration %d: %s", self.method, k, lab.reason)
                    bar.update(len(results))
                    # one transaction per chunk from workers; in this process, every ~0.5 s of results
                    if executor is not None or time.perf_counter() - flushed > 0.5 or len(pending) >= 256:
                        flush()
        finally:
            flush()  # also when a worker dies: everything that arrived is stored
        bar.close()
        seconds = time.perf_counter() - t0
        self.last_stats = {"computed": len(todo), "from_cache": len(atoms_list) - len(todo), "failed": n_failed,
                           "seconds": seconds, "calls_per_second": len(todo) / seconds if todo and seconds > 0
                           else 0.0, "chunk_size": size, "tasks": len(chunks)}
        return out  # type: ignore[return-value]

    def as_potential(self):
        """This oracle as a fesurf Potential (exact forces, not differentiable)."""
        from .potential import OraclePotential

        return OraclePotential(self)


class _ChunkTask:
    """A picklable task: label a chunk of ``(index, atoms, charge, multiplicity)`` with the worker's
    long-lived copy of the oracle (see :func:`fesurf.execution.worker_oracle`)."""

    def __init__(self, oracle):
        self.oracle = oracle

    def __call__(self, chunk):
        from ..execution import worker_oracle

        kept = worker_oracle(self.oracle)
        return [(k, kept.compute(atoms, q, m)) for k, atoms, q, m in chunk]


def successful(labels: Sequence[Label]) -> list[Label]:
    """The labels with ``ok=True``."""
    return [lab for lab in labels if lab.ok]


def raise_on_failure(label: Label) -> Label:
    """Return ``label`` or raise :class:`~fesurf.errors.OracleError` with its reason."""
    if not label.ok:
        raise OracleError(f"{label.method} failed: {label.reason}")
    return label


from .store import LabelStore as LabelCache  # noqa: E402  (the ase.db label store; issue 19)
