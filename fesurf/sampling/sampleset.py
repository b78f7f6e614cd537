"""SampleSet: what a sampling run leaves, stored in HDF5 (h5py).

Per frame: the state (window/replica) ``k`` it was sampled in, the CV values,
the reduced potentials of every state ``u_kn[K, N]`` (kT, i.e. beta_k * U_k(x_n),
as pymbar wants them), and optionally the reduced potential of the reference
(unbiased) state ``u_ref[N]`` (kT), dU/dlambda (kT), the surrogate committee
spread (eV), the positions (Angstrom) and the MD step. Metadata: temperature
of every state (K), CV definitions and per-state bias parameters (JSON), free
attributes.

Frames are appended in chunks to resizable datasets. :meth:`SampleSet.checkpoint`
commits the frames written so far together with an opaque checkpoint blob (the
sampler's RNG state, step counter...): the blob is written to a fresh dataset
first, then one attribute (``commit``: frame count + blob name) is replaced and
the file flushed. A run killed at any point is resumed with
``SampleSet.open(path, mode="a")``, which truncates every dataset to the last
committed frame count, so resumed and uninterrupted runs hold identical data.
Frames appended after the last commit are invisible to readers.

Example
-------
>>> import numpy as np
>>> ss = SampleSet.from_arrays(state_index=[0, 0, 1, 1],
...                            u_kn=np.zeros((2, 4)), temperature=300.0)
>>> ss.n_frames, ss.n_states, ss.N_k.tolist()
(4, 2, [2, 2])
"""
from __future__ import annotations

import json
import logging
import os
import uuid
from typing import Any, Sequence

import h5py
import numpy as np

from ..errors import InputError

logger = logging.getLogger(__name__)

FORMAT_NAME = "fesurf.SampleSet"
FORMAT_VERSION = 1

#: per-frame datasets: name -> (dtype, trailing-shape builder, unit)
_OPTIONAL = ("cv", "u_ref", "dudl", "committee_spread", "positions")
_UNITS = {
    "u_kn": "kT",
    "u_ref": "kT",
    "dudl": "kT",
    "cv": "CV units (see cv_definitions)",
    "committee_spread": "eV/A or eV (the guard's unit: attrs['guard']['unit'])",
    "positions": "Angstrom",
    "step": "MD steps",
    "state_index": "index",
}


def _json_dumps(obj, what):
    try:
        return json.dumps(obj)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be JSON-serialisable (dicts, lists, numbers, strings): {exc}") from None


class SampleSet:
    """Frames and metadata of a sampling run, backed by an HDF5 file (on disk or in memory).

    Do not call the constructor directly: use :meth:`create` (new file, written
    incrementally), :meth:`open` (read or resume) or :meth:`from_arrays`
    (in-memory, from user-supplied configurations and energies).

    Energies: ``u_kn``, ``u_ref`` and ``dudl`` are reduced (divided by k_B T_k), in kT.

    Example
    -------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "run.h5")
    >>> ss = SampleSet.create(path, n_states=2, temperature=300.0, n_cv=1)
    >>> ss.append(state_index=[0, 1], u_kn=np.zeros((2, 2)), cv=[[0.1], [0.9]])
    >>> ss.checkpoint({"step": 10})
    >>> ss.close()
    >>> SampleSet.open(path).cv[:, 0].tolist()
    [0.1, 0.9]
    """

    def __init__(self, h5file: h5py.File, *, _writable: bool):
        self._f = h5file
        self._writable = _writable
        if self._f.attrs.get("format") != FORMAT_NAME:
            raise InputError(f"{h5file.filename} is not a fesurf SampleSet (missing format attribute)")
        commit = json.loads(self._f.attrs["commit"])
        self._committed = int(commit["n_frames"])
        self._n = self._committed

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        path,
        *,
        n_states: int,
        temperature,
        n_cv: int = 0,
        n_atoms: int | None = None,
        store_u_ref: bool = False,
        store_dudl: bool = False,
        store_committee_spread: bool = False,
        cv_definitions: Sequence[dict] | None = None,
        state_parameters: Sequence[dict] | None = None,
        sampled: Sequence[bool] | None = None,
        attrs: dict | None = None,
        overwrite: bool = False,
        chunk_frames: int = 512,
        in_memory: bool = False,
    ) -> "SampleSet":
        """Create a new, empty SampleSet file to be filled with :meth:`append`.

        Parameters
        ----------
        path : str or os.PathLike
            HDF5 file to create (ignored as a file when ``in_memory``).
        n_states : int
            Number of thermodynamic states K (windows, lambda values, replicas);
            every frame stores its reduced potential in all K states.
        temperature : float or sequence of K floats
            Temperature of each state, K.
        n_cv : int
            Number of CV values stored per frame (0: none).
        n_atoms : int, optional
            Store positions [n_atoms, 3] (Angstrom) per frame when given.
        store_u_ref, store_dudl, store_committee_spread : bool
            Declare the optional per-frame datasets: reduced potential of the
            reference (unbiased) state (kT), dU/dlambda (kT), committee spread (eV).
        cv_definitions : list of dict, optional
            JSON-able description of every CV (e.g. ``{"name": "d", "kind": "DISTANCE", "atoms": [0, 1]}``).
        state_parameters : list of K dicts, optional
            JSON-able bias / lambda parameters of every state.
        sampled : list of K bool, optional
            Which states were (or will be) sampled; default all. States with
            ``False`` are evaluation-only targets (FEP); a sampled state with no
            frames is an error at estimation time.
        attrs : dict, optional
            Free-form JSON-able metadata.
        overwrite : bool
            Replace an existing file (default: refuse).
        chunk_frames : int
            HDF5 chunk length along the frame axis.

        Example
        -------
        >>> ss = SampleSet.create("x.h5", n_states=3, temperature=300.0, in_memory=True)
        >>> ss.n_frames
        0
        """
        n_states = int(n_states)
        if n_states < 1:
            raise InputError(f"n_states must be >= 1, got {n_states}")
        temps = np.broadcast_to(np.asarray(temperature, dtype=np.float64), (n_states,)).copy() \
            if np.ndim(temperature) == 0 else np.asarray(temperature, dtype=np.float64)
        if temps.shape != (n_states,):
            raise InputError(f"temperature must be a float or {n_states} values (one per state), got shape {temps.shape}")
        if not np.all(np.isfinite(temps)) or np.any(temps <= 0):
            raise InputError(f"temperatures must be positive and finite (K), got {temps}")
        if n_cv < 0:
            raise InputError(f"n_cv must be >= 0, got {n_cv}")
        if cv_definitions is not None and len(cv_definitions) != n_cv:
            raise InputError(f"cv_definitions has {len(cv_definitions)} entries but n_cv={n_cv}; give one dict per CV")
        if state_parameters is not None and len(state_parameters) != n_states:
            raise InputError(f"state_parameters has {len(state_parameters)} entries; give one dict per state ({n_states})")
        sampled_arr = np.ones(n_states, bool) if sampled is None else np.asarray(sampled, bool)
        if sampled_arr.shape != (n_states,):
            raise InputError(f"sampled must have one bool per state ({n_states}), got shape {sampled_arr.shape}")

        if in_memory:
            f = h5py.File(f"mem-{uuid.uuid4().hex}.h5", "w", driver="core", backing_store=False)
        else:
            if os.path.exists(path) and not overwrite:
                raise InputError(f"{path} exists; pass overwrite=True or resume it with SampleSet.open(path, mode='a')")
            f = h5py.File(path, "w")
        f.attrs["format"] = FORMAT_NAME
        f.attrs["version"] = FORMAT_VERSION
        f.attrs["temperatures"] = temps
        f.attrs["sampled"] = sampled_arr
        f.attrs["cv_definitions"] = _json_dumps(list(cv_definitions or [{"name": f"cv{i}"} for i in range(n_cv)]), "cv_definitions")
        f.attrs["state_parameters"] = _json_dumps(list(state_parameters or [{} for _ in range(n_states)]), "state_parameters")
        f.attrs["user_attrs"] = _json_dumps(dict(attrs or {}), "attrs")
        f.attrs["units"] = json.dumps(_UNITS)
        c = int(chunk_frames)
        f.create_dataset("state_index", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(c,))
        f.create_dataset("step", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(c,))
        f.create_dataset("u_kn", shape=(n_states, 0), maxshape=(n_states, None), dtype=np.float64,
                         chunks=(n_states, max(1, min(c, 65536 // n_states))))
        if n_cv:
            f.create_dataset("cv", shape=(0, n_cv), maxshape=(None, n_cv), dtype=np.float64, chunks=(c, n_cv))
        for name, flag in (("u_ref", store_u_ref), ("dudl", store_dudl), ("committee_spread", store_committee_spread)):
            if flag:
                f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(c,))
        if n_atoms:
            f.create_dataset("positions", shape=(0, int(n_atoms), 3), maxshape=(None, int(n_atoms), 3),
                             dtype=np.float64, chunks=(max(1, min(c, 8192 // int(n_atoms))), int(n_atoms), 3))
        f.create_group("checkpoint_blobs")
        f.attrs["commit"] = json.dumps({"n_frames": 0, "seq": 0, "blob": None, "kind": None})
        f.flush()
        return cls(f, _writable=True)

    @classmethod
    def open(cls, path, mode: str = "r") -> "SampleSet":
        """Open an existing SampleSet for reading (``mode="r"``) or to resume writing (``mode="a"``).

        With ``mode="a"`` every dataset is truncated to the frame count of the
        last :meth:`checkpoint` (frames written after it, e.g. before a kill,
        are dropped); read the sampler state back from :attr:`checkpoint_data`.

        Example
        -------
        >>> ss = SampleSet.open("run.h5", mode="a")          # doctest: +SKIP
        >>> rng_state = ss.checkpoint_data                    # doctest: +SKIP
        """
        if mode not in ("r", "a"):
            raise InputError(f"mode must be 'r' (read) or 'a' (resume), got {mode!r}")
        if not os.path.exists(path):
            raise InputError(f"no SampleSet file at {path}")
        try:
            f = h5py.File(path, "r" if mode == "r" else "r+")
        except OSError as exc:
            raise InputError(f"cannot open {path} as HDF5 ({exc}); the file is damaged or not HDF5") from None
        ss = cls(f, _writable=(mode == "a"))
        if mode == "a":
            ss._truncate(ss._committed)
        return ss

    @classmethod
    def from_arrays(
        cls,
        *,
        state_index,
        u_kn,
        temperature,
        cv=None,
        u_ref=None,
        dudl=None,
        committee_spread=None,
        positions=None,
        step=None,
        cv_definitions=None,
        state_parameters=None,
        sampled=None,
        attrs=None,
        path=None,
    ) -> "SampleSet":
        """Build a SampleSet from arrays (user-supplied configurations and energies).

        Parameters
        ----------
        state_index : [N] ints
            State each frame was sampled in.
        u_kn : [K, N] float
            Reduced potential (kT) of every frame in every state.
        temperature : float or [K] floats, K
        cv : [N] or [N, n_cv] float, optional
        u_ref, dudl : [N] float (kT), optional; committee_spread : [N] (eV); positions : [N, n_atoms, 3] (Angstrom)
        path : str, optional
            Write to this file instead of memory.

        Example
        -------
        >>> import numpy as np
        >>> ss = SampleSet.from_arrays(state_index=[0, 1], u_kn=np.zeros((2, 2)), temperature=300.0, cv=[0.0, 1.0])
        >>> ss.cv.shape
        (2, 1)
        """
        u_kn = np.asarray(u_kn, dtype=np.float64)
        if u_kn.ndim != 2:
            raise InputError(f"u_kn must be [K, N] (states x frames), got shape {u_kn.shape}")
        cv_arr = None
        if cv is not None:
            cv_arr = np.asarray(cv, dtype=np.float64)
            if cv_arr.ndim == 1:
                cv_arr = cv_arr[:, None]
        pos = None if positions is None else np.asarray(positions, dtype=np.float64)
        ss = cls.create(
            path, n_states=u_kn.shape[0], temperature=temperature,
            n_cv=0 if cv_arr is None else cv_arr.shape[1],
            n_atoms=None if pos is None else pos.shape[1],
            store_u_ref=u_ref is not None, store_dudl=dudl is not None,
            store_committee_spread=committee_spread is not None,
            cv_definitions=cv_definitions, state_parameters=state_parameters, sampled=sampled,
            attrs=attrs, in_memory=path is None, overwrite=False,
        )
        ss.append(state_index=state_index, u_kn=u_kn, cv=cv_arr, u_ref=u_ref, dudl=dudl,
                  committee_spread=committee_spread, positions=pos, step=step)
        ss.checkpoint()
        return ss

    # ------------------------------------------------------------------ writing
    def append(self, *, state_index, u_kn, cv=None, u_ref=None, dudl=None, committee_spread=None,
               positions=None, step=None) -> None:
        """Append a chunk of ``n`` frames (not yet committed: call :meth:`checkpoint`).

        Parameters
        ----------
        state_index : int or [n] ints
            State each frame was sampled in (an int applies to all n frames).
        u_kn : [K, n] float
            Reduced potentials (kT) of the new frames in every state.
        cv : [n, n_cv] (or [n] when n_cv == 1); u_ref, dudl : [n] kT;
        committee_spread : [n] eV; positions : [n, n_atoms, 3] Angstrom; step : [n] ints
            Every dataset declared at :meth:`create` must be given.

        Example
        -------
        >>> import numpy as np
        >>> ss = SampleSet.create("x", n_states=2, temperature=300.0, in_memory=True)
        >>> ss.append(state_index=1, u_kn=np.ones((2, 3)))
        >>> ss.n_frames
        3
        """
        if not self._writable:
            raise InputError("this SampleSet is open read-only; use SampleSet.open(path, mode='a') to append")
        K = self.n_states
        u = np.asarray(u_kn, dtype=np.float64)
        if u.ndim != 2 or u.shape[0] != K:
            raise InputError(f"u_kn must have shape [{K}, n] (states x new frames), got {u.shape}")
        n = u.shape[1]
        si = np.asarray(state_index)
        si = np.full(n, int(si), np.int64) if si.ndim == 0 else si.astype(np.int64)
        if si.shape != (n,):
            raise InputError(f"state_index must be an int or {n} ints (one per frame), got shape {si.shape}")
        if n and (si.min() < 0 or si.max() >= K):
            raise InputError(f"state_index values must lie in [0, {K - 1}], got range [{si.min()}, {si.max()}]")
        if not np.all(np.isfinite(u)):
            raise InputError("u_kn contains NaN/inf; a failed energy must not enter a SampleSet (drop the frame)")
        data = {"state_index": si, "u_kn": u}
        st = np.arange(self._n, self._n + n, dtype=np.int64) if step is None else np.asarray(step, np.int64).reshape(-1)
        if st.shape != (n,):
            raise InputError(f"step must have {n} entries, got shape {st.shape}")
        data["step"] = st
        given = {"cv": cv, "u_ref": u_ref, "dudl": dudl, "committee_spread": committee_spread, "positions": positions}
        for name, value in given.items():
            present = name in self._f
            if value is None:
                if present:
                    raise InputError(f"this SampleSet stores {name!r} per frame; pass {name}= to append")
                continue
            if not present:
                raise InputError(f"{name!r} was not declared when the SampleSet was created; "
                                 f"create it with the matching option (n_cv/n_atoms/store_{name})")
            arr = np.asarray(value, dtype=np.float64)
            want = (n,) + self._f[name].shape[1:]
            if name == "cv" and arr.ndim == 1 and want[1] == 1:
                arr = arr[:, None]
            if arr.shape != want:
                raise InputError(f"{name} must have shape {want}, got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                bad = int(np.nonzero(~np.isfinite(arr.reshape(n, -1)).all(axis=1))[0][0])
                raise InputError(f"{name} of new frame {bad} is NaN or inf; a failed or blown-up frame must not enter "
                                 "a SampleSet (drop the frame)")
            data[name] = arr
        for name, arr in data.items():
            ds = self._f[name]
            if name == "u_kn":
                ds.resize(self._n + n, axis=1)
                ds[:, self._n:self._n + n] = arr
            else:
                ds.resize(self._n + n, axis=0)
                ds[self._n:self._n + n] = arr
        self._n += n

    def flush(self) -> None:
        """Flush buffered data to disk (frames stay uncommitted until :meth:`checkpoint`)."""
        self._f.flush()

    def checkpoint(self, data: Any = None) -> None:
        """Commit all frames appended so far, with an optional checkpoint blob.

        ``data`` is ``bytes`` (e.g. a ``torch.save`` buffer of RNG states) or a
        JSON-able object (e.g. ``{"step": 1000, "rng": [...]}``); ``None`` keeps
        the previous blob. The blob and the frame count change together: a kill
        at any moment leaves the previous or the new commit, never a mix.

        Example
        -------
        >>> import numpy as np
        >>> ss = SampleSet.create("x", n_states=1, temperature=300.0, in_memory=True)
        >>> ss.append(state_index=0, u_kn=np.zeros((1, 2)))
        >>> ss.checkpoint(b"rng-bytes")
        >>> ss.checkpoint_data
        b'rng-bytes'
        """
        if not self._writable:
            raise InputError("this SampleSet is open read-only; checkpoint needs mode='a'")
        old = json.loads(self._f.attrs["commit"])
        seq = int(old["seq"]) + 1
        blob, kind = old["blob"], old["kind"]
        if data is not None:
            if isinstance(data, (bytes, bytearray, memoryview)):
                raw, kind = bytes(data), "bytes"
            else:
                raw, kind = _json_dumps(data, "checkpoint data").encode(), "json"
            blob = f"b{seq}"
            self._f["checkpoint_blobs"].create_dataset(blob, data=np.frombuffer(raw, dtype=np.uint8))
        self._f.flush()  # frames and blob on disk before the commit record points at them
        self._f.attrs["commit"] = json.dumps({"n_frames": self._n, "seq": seq, "blob": blob, "kind": kind})
        self._f.flush()
        if data is not None and old["blob"] is not None and old["blob"] in self._f["checkpoint_blobs"]:
            del self._f["checkpoint_blobs"][old["blob"]]
        self._committed = self._n

    def _truncate(self, n: int) -> None:
        for name in ("state_index", "step", "cv", "u_ref", "dudl", "committee_spread", "positions"):
            if name in self._f and self._f[name].shape[0] != n:
                self._f[name].resize(n, axis=0)
        if self._f["u_kn"].shape[1] != n:
            self._f["u_kn"].resize(n, axis=1)
        commit = json.loads(self._f.attrs["commit"])
        for name in list(self._f["checkpoint_blobs"]):
            if name != commit["blob"]:
                del self._f["checkpoint_blobs"][name]
        self._f.flush()
        self._n = self._committed = n

    def close(self) -> None:
        """Commit pending frames (writable sets) and close the file."""
        if not self._f.id.valid:
            return
        if self._writable and self._n != self._committed:
            self.checkpoint()
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def save(self, path, overwrite: bool = False) -> None:
        """Write the committed frames and metadata to a new HDF5 file at ``path``.

        Example
        -------
        >>> ss.save("copy.h5")                                 # doctest: +SKIP
        """
        if os.path.exists(path) and not overwrite:
            raise InputError(f"{path} exists; pass overwrite=True")
        self.select(np.arange(self.n_frames), path=path, overwrite=overwrite).close()

    # ------------------------------------------------------------------ reading
    @property
    def n_frames(self) -> int:
        """Number of frames visible (committed plus, for a writer, appended since)."""
        return self._n if self._writable else self._committed

    @property
    def n_states(self) -> int:
        """Number of thermodynamic states K."""
        return int(self._f["u_kn"].shape[0])

    @property
    def n_cv(self) -> int:
        """Number of CVs stored per frame."""
        return int(self._f["cv"].shape[1]) if "cv" in self._f else 0

    def _read(self, name):
        if name not in self._f:
            return None
        return self._f[name][: self.n_frames]

    @property
    def state_index(self) -> np.ndarray:
        """[N] int: state each frame was sampled in."""
        return self._read("state_index")

    @property
    def step(self) -> np.ndarray:
        """[N] int: MD step (or running frame number) of each frame."""
        return self._read("step")

    @property
    def u_kn(self) -> np.ndarray:
        """[K, N] float: reduced potential (kT) of every frame in every state."""
        return self._f["u_kn"][:, : self.n_frames]

    @property
    def cv(self) -> np.ndarray | None:
        """[N, n_cv] float CV values, or None."""
        return self._read("cv")

    @property
    def u_ref(self) -> np.ndarray | None:
        """[N] reduced potential (kT) of the reference (unbiased) state, or None."""
        return self._read("u_ref")

    @property
    def dudl(self) -> np.ndarray | None:
        """[N] reduced dU/dlambda (kT) in the state the frame was sampled in, or None."""
        return self._read("dudl")

    @property
    def committee_spread(self) -> np.ndarray | None:
        """[N] committee spread per frame (a production guard stores the calibrated max atomic force
        deviation, eV/A: see ``attrs['guard']``), or None."""
        return self._read("committee_spread")

    def untrusted_frames(self) -> np.ndarray | None:
        """[N] bool: frames whose ``committee_spread`` exceeds the trust level recorded by the sampler's
        production guard (``attrs['guard']['upper']``); None when the run had no guard."""
        guard = self.attrs.get("guard")
        spread = self.committee_spread
        if not guard or spread is None or guard.get("upper") is None:
            return None
        return ~(spread <= float(guard["upper"]))

    @property
    def positions(self) -> np.ndarray | None:
        """[N, n_atoms, 3] positions (Angstrom), or None (reads everything: see :meth:`read_positions`)."""
        return self._read("positions")

    def read_positions(self, frames) -> np.ndarray:
        """Positions (Angstrom) of the given frame indices only, [len(frames), n_atoms, 3]."""
        if "positions" not in self._f:
            raise InputError("this SampleSet stores no positions (create it with n_atoms=...)")
        idx = np.asarray(frames, dtype=np.int64)
        order = np.argsort(idx)
        out = np.empty((idx.size,) + self._f["positions"].shape[1:])
        uniq, inv = np.unique(idx[order], return_inverse=True)
        if uniq.size and (uniq[0] < 0 or uniq[-1] >= self.n_frames):
            raise InputError(f"frame indices must lie in [0, {self.n_frames - 1}]")
        out[order] = self._f["positions"][uniq][inv]
        return out

    @property
    def temperatures(self) -> np.ndarray:
        """[K] temperature of every state, K."""
        return np.array(self._f.attrs["temperatures"], dtype=np.float64)

    @property
    def temperature(self) -> float:
        """The single temperature (K) of all states; InputError if they differ."""
        t = self.temperatures
        if not np.allclose(t, t[0], rtol=1e-9, atol=0):
            raise InputError(
                f"states have different temperatures {np.unique(t).tolist()} K; this estimator reports free "
                "energies at one temperature: analyse states of one temperature (SampleSet.select_states) "
                "or reweight them to a common temperature first")
        return float(t[0])

    @property
    def sampled(self) -> np.ndarray:
        """[K] bool: which states are sampled (False: evaluation-only target states)."""
        return np.array(self._f.attrs["sampled"], dtype=bool)

    @property
    def cv_definitions(self) -> list:
        """JSON definitions of the CVs (list of dicts)."""
        return json.loads(self._f.attrs["cv_definitions"])

    @property
    def cv_names(self) -> list:
        """Name of each CV (from its definition, else ``cv<i>``)."""
        return [d.get("name", f"cv{i}") if isinstance(d, dict) else f"cv{i}" for i, d in enumerate(self.cv_definitions)]

    @property
    def cv_labels(self) -> list:
        """Human-readable axis label (with unit) of each CV, e.g. ``d(O1–H) − d(O2–H) (Å)``: a stored ``label``,
        else described from the CV's atoms, with chemical symbols when ``attrs["atomic_numbers"]`` holds
        one system's atomic numbers (:func:`fesurf.cv.cv_axis_labels`)."""
        from ..cv import cv_axis_labels

        numbers = self.attrs.get("atomic_numbers")
        symbols = None
        if numbers:
            from ase.data import chemical_symbols

            symbols = [chemical_symbols[int(z)] for z in numbers]
        return cv_axis_labels(self.cv_definitions, symbols)

    def to_alchemlyb(self, *, lambda_name: str | None = None):
        """alchemlyb DataFrames of this set: ``(u_nk, dHdl)`` (``dHdl`` None without dU/dlambda).

        See :func:`fesurf.sampling.interop.to_alchemlyb` (index ``(time, <lambda names>)``, values in kT,
        ``attrs`` temperature and energy_unit).

        >>> u_nk, dhdl = ss.to_alchemlyb()                     # doctest: +SKIP
        """
        from .interop import to_alchemlyb

        return to_alchemlyb(self, lambda_name=lambda_name)

    @classmethod
    def from_alchemlyb(cls, u_nk=None, dHdl=None, **kwargs) -> "SampleSet":
        """A SampleSet from alchemlyb ``u_nk`` and/or ``dHdl`` DataFrames (e.g. parsed from GROMACS or AMBER
        output); see :func:`fesurf.sampling.interop.from_alchemlyb`.

        >>> ss = SampleSet.from_alchemlyb(u_nk, dHdl)          # doctest: +SKIP
        """
        from .interop import from_alchemlyb

        return from_alchemlyb(u_nk, dHdl, **kwargs)

    @property
    def state_parameters(self) -> list:
        """JSON bias / lambda parameters of every state (list of K dicts)."""
        return json.loads(self._f.attrs["state_parameters"])

    @property
    def attrs(self) -> dict:
        """Free-form metadata given at creation (a copy; use :meth:`set_attrs` to change)."""
        return json.loads(self._f.attrs["user_attrs"])

    def set_attrs(self, **values) -> None:
        """Merge JSON-able key/values into the free-form metadata."""
        merged = self.attrs
        merged.update(values)
        self._f.attrs["user_attrs"] = _json_dumps(merged, "attrs")

    @property
    def units(self) -> dict:
        """Unit of every stored quantity."""
        return json.loads(self._f.attrs["units"])

    @property
    def N_k(self) -> np.ndarray:
        """[K] number of frames sampled in each state."""
        return np.bincount(self.state_index, minlength=self.n_states).astype(np.int64)

    @property
    def checkpoint_data(self):
        """The blob given to the last :meth:`checkpoint` (bytes or decoded JSON), or None."""
        commit = json.loads(self._f.attrs["commit"])
        if commit["blob"] is None:
            return None
        raw = self._f["checkpoint_blobs"][commit["blob"]][()].tobytes()
        return raw if commit["kind"] == "bytes" else json.loads(raw.decode())

    @property
    def path(self) -> str | None:
        """File path, or None for an in-memory set."""
        return None if self._f.driver == "core" and not os.path.exists(self._f.filename) else self._f.filename

    # ------------------------------------------------------------------ checks and selections
    def validate(self, *, require_single_temperature: bool = True) -> None:
        """Check the set is usable by an estimator; raise InputError otherwise.

        Checks: at least one frame; every sampled state has frames (no empty
        window); finite reduced potentials; one temperature (when required).
        """
        if self.n_frames == 0:
            raise InputError("the SampleSet has no frames; run the sampler (and checkpoint) first")
        empty = np.where(self.sampled & (self.N_k == 0))[0]
        if empty.size:
            raise InputError(
                f"sampled state(s) {empty.tolist()} have no frames (empty window); rerun them, or mark them "
                "as evaluation-only with sampled=[...] / drop them with select_states")
        if require_single_temperature:
            _ = self.temperature

    def select(self, frames, *, path=None, overwrite: bool = False, positions: bool = True) -> "SampleSet":
        """A new SampleSet (in memory unless ``path``) holding the given frames, same metadata.

        ``positions=False`` leaves positions out (cheap subsets for re-estimation).

        Example
        -------
        >>> import numpy as np
        >>> ss = SampleSet.from_arrays(state_index=[0, 1, 1], u_kn=np.zeros((2, 3)), temperature=300.0)
        >>> ss.select([1, 2]).N_k.tolist()
        [0, 2]
        """
        idx = np.asarray(frames, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_frames):
            raise InputError(f"frame indices must lie in [0, {self.n_frames - 1}]")
        return self._copy(idx, np.arange(self.n_states), path, overwrite, positions)

    def select_states(self, states) -> "SampleSet":
        """A new in-memory SampleSet with only the given states (rows of u_kn) and the frames sampled in them."""
        states = np.asarray(states, dtype=np.int64).reshape(-1)
        if states.size == 0 or states.min() < 0 or states.max() >= self.n_states:
            raise InputError(f"states must be indices in [0, {self.n_states - 1}]")
        idx = np.where(np.isin(self.state_index, states))[0]
        return self._copy(idx, states, None, False, True)

    def _copy(self, idx, states, path, overwrite, positions=True):
        remap = np.full(self.n_states, -1, np.int64)
        remap[states] = np.arange(states.size)
        params = self.state_parameters
        ss = SampleSet.create(
            path, n_states=states.size, temperature=self.temperatures[states], n_cv=self.n_cv,
            n_atoms=self._f["positions"].shape[1] if positions and "positions" in self._f else None,
            store_u_ref="u_ref" in self._f, store_dudl="dudl" in self._f,
            store_committee_spread="committee_spread" in self._f,
            cv_definitions=self.cv_definitions if self.n_cv else None,
            state_parameters=[params[s] for s in states], sampled=self.sampled[states],
            attrs=self.attrs, in_memory=path is None, overwrite=overwrite,
        )
        opt = {name: (self._read(name)[idx] if name in self._f else None) for name in _OPTIONAL[:-1]}
        opt["positions"] = self.read_positions(idx) if positions and "positions" in self._f else None
        ss.append(state_index=remap[self.state_index[idx]], u_kn=self.u_kn[np.ix_(states, idx)],
                  step=self.step[idx], **opt)
        ss.checkpoint(self.checkpoint_data)
        return ss

    def differences(self, other: "SampleSet", atol: float = 0.0) -> list:
        """List of human-readable differences from ``other`` (empty when equal within ``atol``)."""
        out = []
        for name in ("n_states", "n_frames", "n_cv"):
            if getattr(self, name) != getattr(other, name):
                out.append(f"{name}: {getattr(self, name)} != {getattr(other, name)}")
        if out:
            return out
        for name in ("temperatures", "sampled"):
            if not np.array_equal(getattr(self, name), getattr(other, name)):
                out.append(f"{name} differ")
        for name in ("cv_definitions", "state_parameters", "attrs"):
            if getattr(self, name) != getattr(other, name):
                out.append(f"{name} differ")
        for name in ("state_index", "step", "u_kn") + _OPTIONAL:
            a, b = getattr(self, name), getattr(other, name)
            if (a is None) != (b is None):
                out.append(f"{name}: present in only one set")
            elif a is not None and not np.allclose(a, b, rtol=0, atol=atol):
                bad = np.argwhere(~np.isclose(a, b, rtol=0, atol=atol))
                out.append(f"{name}: {len(bad)} entries differ, first at {tuple(bad[0])}")
        return out

    def equals(self, other: "SampleSet", atol: float = 0.0) -> bool:
        """True when frames and metadata match ``other`` (within ``atol``); checkpoint blobs are not compared."""
        return not self.differences(other, atol=atol)

    def __repr__(self):
        where = self.path or "memory"
        return (f"SampleSet({where!s}: {self.n_frames} frames, {self.n_states} states, N_k={self.N_k.tolist()}, "
                f"n_cv={self.n_cv}, T={np.unique(self.temperatures).tolist()} K)")


def assert_samplesets_equal(a: SampleSet, b: SampleSet, atol: float = 0.0) -> None:
    """Raise AssertionError listing the differences between two SampleSets (a test helper)."""
    diff = a.differences(b, atol=atol)
    if diff:
        raise AssertionError("SampleSets differ:\n  " + "\n  ".join(diff))
