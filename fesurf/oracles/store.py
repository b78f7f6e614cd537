"""The reference-label store: an ASE database (SQLite) of labels, browsable with ``ase db``.

One row per configuration and method, keyed by :func:`fesurf.oracles.base.config_key`:

* the structure (numbers, positions, cell, pbc) and, for a successful label, a
  SinglePointCalculator with ``energy`` (eV) and ``forces`` (eV/A);
* key-value pairs ``label_key`` (the config key), ``method``, ``total_charge`` (e),
  ``multiplicity`` (2S+1), ``ok`` and, for failures, ``reason``. (ASE reserves the column ``charge``
  for the sum of initial atomic charges, so the system's charge is ``total_charge``.)
* ``data["extra"]``: the label's extras (root energies, couplings, <S^2>: numbers, strings, arrays).

Browse it with ``ase db labels.db -c id,formula,energy,method,total_charge,multiplicity,ok,reason``
or select failures with ``ase db labels.db ok=False``; ``ase.io.read("labels.db@ok=True")`` (no index argument) reads the
successful ones as Atoms.

A folder written by the old cache (one ``.npz`` per label, ``<folder>/<key[:2]>/<key>.npz``) is
migrated on first use: every entry is copied into ``labels.db`` in one transaction, then the old
files move to ``<folder>/npz_migrated/`` (kept, never read again).

Concurrency: SQLite serialises writers (each write waits for the lock, up to ``timeout`` seconds), so
two fesurf processes may share one folder. The file is in SQLite's write-ahead-log mode with
``synchronous=NORMAL`` (a put costs ~9 ms instead of ~40 ms; a killed process loses nothing committed);
WAL needs a local file system, so on NFS-like shares pass ``journal="delete"`` or set
``FESURF_LABEL_JOURNAL=delete``. A key written twice (two processes labelling the same frame)
keeps the newest row; :meth:`LabelStore.get` always returns the newest. Worker processes of the
execution layer never write here: the main process stores results as chunks arrive.

Example
-------
>>> import tempfile, numpy as np
>>> from fesurf.oracles.base import Label
>>> store = LabelStore(tempfile.mkdtemp())
>>> lab = Label(numbers=np.array([1, 1]), positions=np.array([[0, 0, 0], [0.74, 0, 0]]), charge=0.0,
...             multiplicity=1, method="demo", ok=True, energy=-1.0, forces=np.zeros((2, 3)))
>>> store.put("k1", lab)
>>> len(store), store.get("k1").energy
(1, -1.0)
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ..errors import InputError
from .base import Label

log = logging.getLogger(__name__)

FILENAME = "labels.db"
MIGRATED = "npz_migrated"
_EXTRA = "extra__"


def read_npz_label(path) -> Label:
    """A label from one ``.npz`` file of the old cache format."""
    with np.load(path, allow_pickle=False) as d:
        meta = json.loads(str(d["meta"]))
        ok = bool(meta["ok"])
        return Label(numbers=d["numbers"], positions=d["positions"], charge=meta["charge"],
                     multiplicity=meta["multiplicity"], method=meta["method"], ok=ok,
                     energy=meta.get("energy"), forces=d["forces"] if ok else None, reason=meta.get("reason", ""),
                     cell=d["cell"] if "cell" in d else None, pbc=d["pbc"] if "pbc" in d else None,
                     extra={**meta.get("extra", {}),
                            **{k[len(_EXTRA):]: d[k] for k in d.files if k.startswith(_EXTRA)}})


def _check_extra(extra: dict) -> dict:
    out = {}
    for k, v in extra.items():
        if isinstance(v, (bool, int, float, str)) or v is None:
            out[str(k)] = v
        elif isinstance(v, np.generic):
            out[str(k)] = v.item()
        else:
            arr = np.asarray(v)
            if arr.dtype.kind not in "biufc":
                raise InputError(f"Label.extra[{k!r}] is not a number, string or numeric array; it cannot be cached")
            out[str(k)] = arr
    return out


def label_to_atoms(label: Label):
    """``(atoms, key_value_pairs, data)`` for one ase.db row."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    periodic = label.pbc is not None and bool(np.any(label.pbc))
    atoms = Atoms(numbers=np.asarray(label.numbers), positions=np.asarray(label.positions, dtype=np.float64),
                  cell=np.asarray(label.cell) if periodic and label.cell is not None else None,
                  pbc=np.asarray(label.pbc, dtype=bool) if periodic else False)
    if label.ok:
        atoms.calc = SinglePointCalculator(atoms, energy=float(label.energy),
                                           forces=np.asarray(label.forces, dtype=np.float64))
    kvp = {"method": str(label.method), "total_charge": float(label.charge), "multiplicity": int(label.multiplicity),
           "ok": bool(label.ok)}
    if label.reason:
        kvp["reason"] = str(label.reason)
    return atoms, kvp, {"extra": _check_extra(label.extra or {})}


def row_to_label(row) -> Label:
    """The :class:`~fesurf.oracles.base.Label` of one ase.db row."""
    kvp = row.key_value_pairs
    ok = bool(kvp.get("ok", False))
    pbc = np.asarray(row.pbc, dtype=bool)
    periodic = bool(pbc.any())
    extra = dict(row.data.get("extra", {})) if row.get("data") is not None else {}
    return Label(numbers=np.asarray(row.numbers), positions=np.asarray(row.positions, dtype=np.float64),
                 charge=float(kvp.get("total_charge", 0.0)), multiplicity=int(kvp.get("multiplicity", 1)),
                 method=str(kvp.get("method", "")), ok=ok,
                 energy=float(row.energy) if ok else None,
                 forces=np.asarray(row.forces, dtype=np.float64) if ok else None,
                 reason=str(kvp.get("reason", "")),
                 cell=np.asarray(row.cell, dtype=np.float64) if periodic else None,
                 pbc=pbc if periodic else None, extra=extra)


class LabelStore:
    """Reference labels in an ``ase.db`` SQLite file, keyed by :func:`~fesurf.oracles.base.config_key`.

    Parameters
    ----------
    location : folder or ``.db`` file
        A folder holds ``labels.db`` (created on first use; an old ``.npz`` cache there is migrated).
    timeout : float
        Seconds a writer waits for another process's lock before giving up.
    journal : {"wal", "delete"}
        SQLite journal mode (default ``$FESURF_LABEL_JOURNAL`` or ``"wal"``; ``"delete"`` for network file systems).

    ``len(store)``, ``store.get(key)`` (a Label or None) and ``store.put(key, label)`` as the old cache;
    failed labels are stored too, with their reason.

    >>> import tempfile
    >>> len(LabelStore(tempfile.mkdtemp()))
    0
    """

    def __init__(self, location, *, timeout: float = 60.0, journal: str | None = None):
        location = Path(location)
        if location.suffix == ".db":
            self.directory, self.path = location.parent, location
        else:
            self.directory, self.path = location, location / FILENAME
        if self.directory.exists() and not self.directory.is_dir():
            raise InputError(f"label cache {self.directory} is a file, not a folder; give a folder or a .db path")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.timeout = float(timeout)
        self.journal = (journal or os.environ.get("FESURF_LABEL_JOURNAL") or "wal").lower()
        if self.journal not in ("wal", "delete"):
            raise InputError(f"journal must be 'wal' or 'delete' (network file systems), got {self.journal!r}")
        self._db = None
        self._migrate_npz()

    # ------------------------------------------------------------------ the database
    @property
    def db(self):
        """The ``ase.db`` connection (SQLite)."""
        if self._db is None:
            from ase.db import connect

            db = connect(str(self.path), type="db")
            db._connect = self._connect  # ASE opens each connection with a fixed 20 s timeout and default journal
            self._db = db
        return self._db

    def _connect(self):
        con = sqlite3.connect(str(self.path), timeout=self.timeout)
        con.execute(f"PRAGMA journal_mode={self.journal.upper()}")
        con.execute("PRAGMA synchronous=NORMAL")
        return con

    def _rows(self, key: str):
        return sorted(self.db.select(label_key=str(key)), key=lambda r: r.id)

    def get(self, key) -> Optional[Label]:
        """The newest label stored under ``key``, or None."""
        if not self.path.exists():
            return None
        rows = self._rows(key)
        return row_to_label(rows[-1]) if rows else None

    def put(self, key, label: Label) -> None:
        """Store ``label`` under ``key`` (replacing an older row with the same key)."""
        atoms, kvp, data = label_to_atoms(label)
        old = [r.id for r in self._rows(key)] if self.path.exists() else []
        self.db.write(atoms, key_value_pairs=dict(kvp, label_key=str(key)), data=data)
        if old:
            self.db.delete(old)

    def put_many(self, items) -> int:
        """Store ``(key, label)`` pairs in one transaction; returns how many."""
        n = 0
        with self.db as db:
            for key, label in items:
                atoms, kvp, data = label_to_atoms(label)
                db.write(atoms, key_value_pairs=dict(kvp, label_key=str(key)), data=data)
                n += 1
        return n

    def get_many(self, keys) -> dict:
        """``{key: newest Label}`` for the given keys that are stored (one SQL query finds them, so a
        batch of misses costs almost nothing)."""
        keys = [str(k) for k in keys]
        if not keys or not self.path.exists():
            return {}
        newest = {}
        try:
            con = sqlite3.connect(str(self.path), timeout=self.timeout)
            try:
                for i in range(0, len(keys), 500):  # SQLite's variable limit
                    part = keys[i:i + 500]
                    q = ("SELECT value, MAX(id) FROM text_key_values WHERE key = 'label_key' AND value IN ("
                         + ",".join("?" * len(part)) + ") GROUP BY value")
                    newest.update(dict(con.execute(q, part).fetchall()))
            finally:
                con.close()
        except sqlite3.Error:  # an unexpected schema: fall back to one lookup per key
            return {k: lab for k in keys if (lab := self.get(k)) is not None}
        return {k: row_to_label(self.db.get(id=i)) for k, i in newest.items()}

    def keys(self) -> list[str]:
        """Distinct keys stored."""
        if not self.path.exists():
            return []
        try:  # one SQL query on ASE's key-value table (fast); fall back to reading every row
            con = sqlite3.connect(str(self.path), timeout=self.timeout)
            try:
                rows = con.execute("SELECT DISTINCT value FROM text_key_values WHERE key = 'label_key'").fetchall()
            finally:
                con.close()
            return [r[0] for r in rows]
        except sqlite3.Error:
            return sorted({r.key_value_pairs.get("label_key") for r in self.db.select()} - {None})

    def __len__(self) -> int:
        return len(self.keys())

    def __contains__(self, key) -> bool:
        return self.get(key) is not None

    def __iter__(self) -> Iterator[tuple[str, Label]]:
        """``(key, label)`` of every stored key (newest row of each)."""
        newest = {}
        for row in self.db.select() if self.path.exists() else []:
            newest[row.key_value_pairs.get("label_key")] = row
        for key, row in newest.items():
            if key is not None:
                yield key, row_to_label(row)

    # ------------------------------------------------------------------ migration
    def _legacy_files(self) -> list[Path]:
        return sorted(p for p in self.directory.glob("*/*.npz")
                      if p.parent.name != MIGRATED and len(p.parent.name) == 2 and ".tmp" not in p.name)

    def _migrate_npz(self) -> None:
        files = self._legacy_files()
        if not files:
            return
        items, bad = [], []
        for path in files:
            try:
                items.append((path.stem, read_npz_label(path)))
            except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
                bad.append(f"{path.name} ({type(exc).__name__})")
        n = self.put_many(items)
        target = self.directory / MIGRATED
        for path in files:
            dest = target / path.parent.name / path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(path, dest)
            except FileNotFoundError:  # another process migrated it at the same time
                pass
        for sub in {p.parent for p in files}:
            try:
                sub.rmdir()
            except OSError:
                pass
        log.info("migrated %d labels from the old .npz cache in %s into %s (old files kept in %s)", n,
                 self.directory, self.path.name, target)
        if bad:
            log.warning("%d old cache files could not be read and were not migrated: %s", len(bad), ", ".join(bad[:5]))

    def __repr__(self):
        return f"LabelStore({self.path})"


__all__ = ["LabelStore", "read_npz_label", "label_to_atoms", "row_to_label", "FILENAME"]
