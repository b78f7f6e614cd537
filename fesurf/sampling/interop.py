"""SampleSets in and out of the field's formats: alchemlyb DataFrames and ASE trajectories.

**alchemlyb.** alchemlyb (and every parser it has: GROMACS, AMBER, NAMD, GOMC) holds free-energy data as
two pandas DataFrames:

* ``u_nk``: one row per frame, indexed by ``(time, <lambda names>...)`` where the lambda levels name the
  state the frame was *sampled* in; one column per evaluated state (a float, or a tuple for several
  lambda components); values are reduced potentials in kT. MBAR only needs them up to a per-frame
  constant, so fesurf's ``u_kn = beta (U0 + bias_k)`` maps onto it directly.
* ``dHdl``: the same index; one column per lambda component (GROMACS names ``fep``, ``coul``, ``vdw``...),
  values dU/dlambda in kT.

Both carry ``attrs = {"temperature": K, "energy_unit": "kT"}``. :func:`to_alchemlyb` writes them from a
SampleSet (time in ps from ``attrs["timestep_fs"]`` and the stored MD step); :func:`from_alchemlyb`
builds a SampleSet from them, so fesurf's MBAR/BAR/EXP, TI and (given a reference state and CVs) its
PMF and sparse-reweighting estimators run on data from any MD engine alchemlyb parses.

**Trajectories.** :func:`export_trajectory` writes the stored frames as extended XYZ or ASE ``.traj``
with per-frame ``info``: ``window`` (state index), ``step``, ``cv0``, ``cv1``... (CV units),
``bias_eV`` and ``u_ref_kT``; the surrogate energy U0 (eV) is the frame's potential energy
(``atoms.get_potential_energy()``), readable by ``ase.io.read``, ASE's GUI, OVITO and VMD.

Example
-------
>>> import numpy as np
>>> from fesurf.sampling import SampleSet
>>> ss = SampleSet.from_arrays(state_index=[0, 0, 1, 1], u_kn=np.arange(8.0).reshape(2, 4), temperature=300.0,
...                            dudl=[1.0, 2.0, 3.0, 4.0], state_parameters=[{"lambda": 0.0}, {"lambda": 1.0}])
>>> u_nk, dhdl = to_alchemlyb(ss)
>>> u_nk.index.names, list(u_nk.columns), u_nk.attrs
(FrozenList(['time', 'fep-lambda']), [0.0, 1.0], {'temperature': 300.0, 'energy_unit': 'kT'})
>>> from_alchemlyb(u_nk, dhdl).u_kn.tolist() == ss.u_kn.tolist()
True
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

#: alchemlyb energy units fesurf converts from (to kT)
ENERGY_UNITS = ("kT", "kJ/mol", "kcal/mol", "eV")


# ---------------------------------------------------------------------------------------- to alchemlyb
def _state_labels(samples, lambda_name):
    """(index level names, one label per state: float or tuple)."""
    params = samples.state_parameters
    if params and all(isinstance(p, dict) and "lambda" in p for p in params):
        return [lambda_name or "fep-lambda"], [float(p["lambda"]) for p in params]
    if params and all(isinstance(p, dict) and isinstance(p.get("lambdas"), dict) for p in params):
        names = list(params[0]["lambdas"])
        if any(list(p["lambdas"]) != names for p in params):
            raise InputError("every state's 'lambdas' must name the same components in the same order")
        return names, [tuple(float(p["lambdas"][n]) for n in names) for p in params]
    return [lambda_name or "state"], list(range(samples.n_states))


def _times(samples) -> np.ndarray:
    attrs = samples.attrs
    step = samples.step.astype(np.float64)
    if "alchemlyb_time_per_step" in attrs:
        return step * float(attrs["alchemlyb_time_per_step"])
    if "timestep_fs" in attrs:
        return step * float(attrs["timestep_fs"]) / 1000.0  # ps, alchemlyb's (GROMACS') time unit
    return step


def to_alchemlyb(samples, *, lambda_name: str | None = None):
    """``(u_nk, dHdl)`` DataFrames in alchemlyb's layout from a SampleSet (``dHdl`` None when the set has
    no dU/dlambda or its states carry no lambda values).

    Parameters
    ----------
    samples : SampleSet
        One temperature. States with ``{"lambda": x}`` parameters (TI/FEP windows) are labelled by x under
        the index level ``fep-lambda``; ``{"lambdas": {"coul": x, "vdw": y}}`` gives one level per
        component; other states (umbrella windows) are labelled by their index under ``state``.
    lambda_name : str, optional
        Name of the single lambda level (default ``fep-lambda``, or ``state``).

    Returns
    -------
    u_nk : DataFrame [N, K], kT; index ``(time, <lambda levels>)``, time in ps when the set records the
        MD timestep (else the stored step number).
    dHdl : DataFrame [N, 1] kT or None; column ``fep`` (the lambda level name without ``-lambda``).

    Example
    -------
    >>> u_nk, dHdl = to_alchemlyb(ss)                                         # doctest: +SKIP
    >>> from alchemlyb.estimators import MBAR; MBAR().fit(u_nk).delta_f_     # doctest: +SKIP
    """
    import pandas as pd

    samples.validate()
    temperature = samples.temperature
    names, labels = _state_labels(samples, lambda_name)
    if len(set(labels)) != len(labels):
        raise InputError(f"two states share the lambda value(s) {labels}; alchemlyb needs one label per state")
    si = samples.state_index
    time = _times(samples)
    if len(names) == 1:
        levels = [np.asarray(labels, dtype=object)[si].astype(type(labels[0]))]
    else:
        levels = [np.asarray([labels[k][c] for k in si], dtype=np.float64) for c in range(len(names))]
    index = pd.MultiIndex.from_arrays([time] + levels, names=["time"] + names)
    columns = pd.Index(labels, tupleize_cols=False) if len(names) > 1 else pd.Index(labels)
    attrs = {"temperature": float(temperature), "energy_unit": "kT"}
    u_nk = pd.DataFrame(samples.u_kn.T.copy(), index=index, columns=columns)
    u_nk.attrs = dict(attrs)
    if samples.attrs.get("u_kn_absent"):
        u_nk = None
    dhdl = None
    if samples.dudl is not None and names != ["state"]:
        if len(names) == 1:
            column = names[0][:-len("-lambda")] if names[0].endswith("-lambda") else names[0]
            dhdl = pd.DataFrame({column: samples.dudl.copy()}, index=index.copy())
            dhdl.attrs = dict(attrs)
        else:
            log.warning("dU/dlambda of a multi-component lambda path is one number per frame; no dHdl written")
    return u_nk, dhdl


# ---------------------------------------------------------------------------------------- from alchemlyb
def _check_frame(df, what):
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{what} must be a pandas DataFrame in alchemlyb's layout, got {type(df).__name__}")
    names = list(df.index.names)
    if len(names) < 2 or names[0] != "time":
        raise InputError(f"{what} must be indexed by (time, <lambda levels>...) as alchemlyb's parsers give it; "
                         f"got index levels {names}")
    if df.shape[0] == 0:
        raise InputError(f"{what} has no rows")
    values = df.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(values)):
        bad = int((~np.isfinite(values)).any(axis=1).sum())
        raise InputError(f"{what} has {bad} row(s) with NaN/inf energies; drop them first "
                         "(e.g. df.dropna()), since a failed energy must not enter a SampleSet")
    return names[1:], values


def _temperature(frames, temperature):
    found = {float(df.attrs["temperature"]) for df in frames if df is not None and "temperature" in df.attrs}
    if len(found) > 1:
        raise InputError(f"the DataFrames disagree on the temperature {sorted(found)} K")
    if temperature is None:
        if not found:
            raise InputError("the DataFrames carry no attrs['temperature']; pass temperature=... (K)")
        return found.pop()
    if found and abs(found.pop() - float(temperature)) > 1e-9:
        raise InputError(f"temperature={temperature} K disagrees with the DataFrames' attrs['temperature']")
    return float(temperature)


def _to_kT(df, temperature) -> float:
    from ..units import convert

    unit = df.attrs.get("energy_unit", "kT")
    if unit not in ENERGY_UNITS:
        raise InputError(f"unknown energy_unit {unit!r} in the DataFrame's attrs; use one of {ENERGY_UNITS}")
    return 1.0 if unit == "kT" else float(convert(1.0, unit, "kT", temperature=temperature))


def _row_states(df, lambda_names):
    """The sampled-state label of every row (float, or tuple for several levels)."""
    if len(lambda_names) == 1:
        return [float(v) for v in df.index.get_level_values(1)]
    cols = [df.index.get_level_values(i + 1) for i in range(len(lambda_names))]
    return [tuple(float(c[n]) for c in cols) for n in range(df.shape[0])]


def _label(value, n_levels):
    if n_levels == 1:
        return float(value[0] if isinstance(value, tuple) and len(value) == 1 else value)
    if not isinstance(value, tuple) or len(value) != n_levels:
        raise InputError(f"u_nk column {value!r} is not a tuple of {n_levels} lambda values")
    return tuple(float(v) for v in value)


def _steps(time: np.ndarray):
    """Integer steps and the time per step (the smallest positive gap between distinct times)."""
    uniq = np.unique(time)
    gaps = np.diff(uniq)
    gaps = gaps[gaps > 0]
    if gaps.size == 0:
        return np.zeros(time.size, np.int64), 1.0
    dt = float(gaps.min())
    steps = np.rint(time / dt).astype(np.int64)
    return steps, dt


def from_alchemlyb(u_nk=None, dHdl=None, *, temperature: float | None = None, reference_state=None, cv=None,
                   cv_names: Sequence[str] | None = None, path=None):
    """A SampleSet from alchemlyb DataFrames, e.g. ``alchemlyb.concat`` of parsed GROMACS/AMBER files.

    Parameters
    ----------
    u_nk : DataFrame, optional
        Reduced potentials (kT, or kJ/mol / kcal/mol per ``attrs["energy_unit"]``) of every frame in every
        state (columns); the index's lambda levels say where each frame was sampled.
    dHdl : DataFrame, optional
        dU/dlambda of every frame (one column: one lambda component); the same index as ``u_nk``.
    temperature : float, optional
        K; default ``attrs["temperature"]``.
    reference_state : column label or int, optional
        The unbiased state: its reduced potentials become ``u_ref`` (what PMFs and sparse reweighting need).
    cv : [N] or [N, n_cv] array, optional; cv_names : names of the CVs.
    path : str, optional
        Write the SampleSet to this HDF5 file instead of memory.

    States are the columns of ``u_nk`` (or, without it, the sorted lambda values of ``dHdl``). State
    parameters hold ``{"lambda": x}`` (one component) or ``{"lambdas": {name: x}}``. Without ``u_nk`` the
    set has only dU/dlambda: its ``u_kn`` is zero and ``attrs["u_kn_absent"]`` is True (TI only).

    Example
    -------
    >>> from alchemlyb.parsing.gmx import extract_u_nk, extract_dHdl        # doctest: +SKIP
    >>> ss = from_alchemlyb(alchemlyb.concat([extract_u_nk(f, T=300) for f in files]))   # doctest: +SKIP
    >>> delta_f(ss, "MBAR", equilibrate=False, decorrelate=False)           # doctest: +SKIP
    """
    from .sampleset import SampleSet

    if u_nk is None and dHdl is None:
        raise InputError("give u_nk and/or dHdl (alchemlyb DataFrames)")
    for df, what in ((u_nk, "u_nk"), (dHdl, "dHdl")):
        if df is not None:
            _check_frame(df, what)
    T = _temperature([u_nk, dHdl], temperature)
    ref = u_nk if u_nk is not None else dHdl
    lambda_names, _ = _check_frame(ref, "u_nk" if u_nk is not None else "dHdl")
    n_levels = len(lambda_names)
    rows = _row_states(ref, lambda_names)
    u_kn, dudl, absent = None, None, False
    if u_nk is not None:
        _, values = _check_frame(u_nk, "u_nk")
        states = [_label(c, n_levels) for c in u_nk.columns]
        if len(set(states)) != len(states):
            raise InputError("u_nk has two columns with the same lambda state")
        u_kn = values.T * _to_kT(u_nk, T)
    if dHdl is not None:
        names_d, dvalues = _check_frame(dHdl, "dHdl")
        if names_d != lambda_names:
            raise InputError(f"dHdl's lambda levels {names_d} differ from u_nk's {lambda_names}")
        if u_nk is not None and not dHdl.index.equals(u_nk.index):
            raise InputError("dHdl and u_nk must hold the same frames in the same order (the same index); "
                             "parse them from the same files and subsample them together")
        if dvalues.shape[1] != 1:
            raise InputError(f"dHdl has {dvalues.shape[1]} lambda components {list(dHdl.columns)}; fesurf's TI "
                             "integrates one: pass dHdl[[name]] with the windows along that component")
        dudl = dvalues[:, 0] * _to_kT(dHdl, T)
        if u_nk is None:
            states = sorted(set(rows))
            u_kn = np.zeros((len(states), len(rows)))
            absent = True
            log.warning("from_alchemlyb: no u_nk given; the SampleSet holds dU/dlambda only (TI), u_kn is zero")
    lookup = {s: k for k, s in enumerate(states)}
    missing = sorted({r for r in rows if r not in lookup}, key=str)
    if missing:
        raise InputError(f"frames were sampled at lambda {missing[:3]}, which is not among the u_nk columns "
                         f"{states}; give u_nk with a column for every sampled state")
    state_index = np.array([lookup[r] for r in rows], dtype=np.int64)
    time = np.asarray(ref.index.get_level_values(0), dtype=np.float64)
    steps, dt = _steps(time)
    params = ([{"lambda": s} for s in states] if n_levels == 1
              else [{"lambdas": dict(zip(lambda_names, s))} for s in states])
    u_ref = None
    if reference_state is not None:  # a state label first, else a column index
        try:
            key = _label(reference_state, n_levels)
        except (InputError, TypeError, ValueError):
            key = None
        if key in lookup:
            k_ref = lookup[key]
        elif isinstance(reference_state, (int, np.integer)) and -len(states) <= int(reference_state) < len(states):
            k_ref = int(reference_state)
        else:
            k_ref = None
        if k_ref is None or absent:
            raise InputError(f"reference_state {reference_state!r} is not a u_nk column (or index) of {states}")
        u_ref = u_kn[k_ref].copy()
    cv_arr = None
    if cv is not None:
        cv_arr = np.asarray(cv, dtype=np.float64)
        cv_arr = cv_arr[:, None] if cv_arr.ndim == 1 else cv_arr
        if cv_arr.shape[0] != len(rows):
            raise InputError(f"cv has {cv_arr.shape[0]} rows for {len(rows)} frames")
    defs = None
    if cv_arr is not None:
        names = list(cv_names) if cv_names is not None else [f"cv{i}" for i in range(cv_arr.shape[1])]
        if len(names) != cv_arr.shape[1]:
            raise InputError(f"cv_names has {len(names)} names for {cv_arr.shape[1]} CVs")
        defs = [{"name": n} for n in names]
    attrs = {"protocol": "alchemlyb", "alchemlyb_index_names": ["time"] + list(lambda_names),
             "alchemlyb_time_per_step": dt, "u_kn_absent": absent,
             "energy_convention": "u_kn: alchemlyb u_nk (reduced, kT, up to a per-frame constant)"}
    return SampleSet.from_arrays(state_index=state_index, u_kn=u_kn, temperature=T, dudl=dudl, u_ref=u_ref,
                                 cv=cv_arr, step=steps, cv_definitions=defs, state_parameters=params,
                                 attrs=attrs, path=path)


# ---------------------------------------------------------------------------------------- trajectories
FORMATS = ("extxyz", "traj")


def run_atomic_numbers(run_dir, samples=None):
    """The atomic numbers (one system) of a run folder's frames: ``samples.attrs["atomic_numbers"]``, else
    any stored reference label (``qm_cache/``, ``labels/``), else None."""
    if samples is not None and samples.attrs.get("atomic_numbers"):
        return np.asarray(samples.attrs["atomic_numbers"], dtype=np.int64)
    from ..oracles.store import FILENAME, LabelStore

    n_atoms = None
    if samples is not None and samples.positions is not None:
        n_atoms = samples._f["positions"].shape[1]
    for sub in ("qm_cache", "labels"):
        folder = Path(run_dir) / sub
        if not folder.is_dir() or not ((folder / FILENAME).exists() or any(folder.glob("*/*.npz"))):
            continue
        for _, label in LabelStore(folder):
            if n_atoms is None or len(label.numbers) == n_atoms:
                return np.asarray(label.numbers, dtype=np.int64)
    return None


def export_trajectory(samples, path, numbers, *, format: str | None = None, every: int = 1,
                      windows: Sequence[int] | None = None, cell=None, pbc=None, chunk: int = 2000) -> int:
    """Write a SampleSet's stored frames as an ASE trajectory; returns the number of frames written.

    Parameters
    ----------
    samples : SampleSet with positions (Angstrom).
    path : output file (``.extxyz``/``.xyz`` or ``.traj``).
    numbers : [n_atoms] atomic numbers of one system.
    format : ``"extxyz"`` or ``"traj"`` (default: from the suffix).
    every : keep every ``every``-th frame of each window (time order within the window).
    windows : only frames sampled in these states.

    Each frame's ``info``: ``window``, ``step``, ``cv0``... (CV units), ``u_ref_kT`` and ``bias_eV`` (with a
    reference energy), ``dudl_kT`` (lambda windows); its potential energy (SinglePointCalculator) is
    U0 in eV (``u_ref * kT``), or the sampled state's energy when no reference energy is stored.

    Example
    -------
    >>> n = export_trajectory(SampleSet.open("samples.h5"), "frames.extxyz", atoms.numbers)   # doctest: +SKIP
    >>> ase.io.read("frames.extxyz", ":")[0].info["window"]                 # doctest: +SKIP
    0
    """
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write
    from ase.io.trajectory import Trajectory

    from ..units import kT as kT_of

    path = Path(path)
    fmt = format or {".traj": "traj", ".xyz": "extxyz", ".extxyz": "extxyz"}.get(path.suffix.lower())
    if fmt not in FORMATS:
        raise InputError(f"trajectory format must be one of {FORMATS} (or a .extxyz/.xyz/.traj file name), "
                         f"got {format or path.suffix!r}")
    if samples.positions is None and "positions" not in samples._f:
        raise InputError("this SampleSet stores no positions, so there are no frames to export "
                         "(sample with Storage(positions=True))")
    n_atoms = samples._f["positions"].shape[1]
    numbers = np.asarray(numbers, dtype=np.int64).reshape(-1)
    if numbers.size != n_atoms:
        raise InputError(f"{numbers.size} atomic numbers given for frames of {n_atoms} atoms")
    if int(every) < 1:
        raise InputError(f"every must be >= 1, got {every}")
    si_all = samples.state_index
    chosen = range(samples.n_states) if windows is None else sorted({int(w) for w in windows})
    bad = [w for w in chosen if not 0 <= w < samples.n_states]
    if bad:
        raise InputError(f"window {bad[0]} does not exist; the SampleSet has windows 0..{samples.n_states - 1}")
    frames = np.sort(np.concatenate([np.where(si_all == k)[0][::int(every)] for k in chosen] or [np.zeros(0, int)]))
    temps = samples.temperatures
    si, step = samples.state_index, samples.step
    cvs, u_ref, dudl, u_kn = samples.cv, samples.u_ref, samples.dudl, samples.u_kn
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    traj = Trajectory(str(path), "w") if fmt == "traj" else None
    written = 0
    try:
        for start in range(0, frames.size, int(chunk)):
            idx = frames[start:start + int(chunk)]
            pos = samples.read_positions(idx)
            batch = []
            for n, x in zip(idx, pos):
                k = int(si[n])
                kt = float(kT_of(temps[k]))
                atoms = Atoms(numbers=numbers, positions=x, cell=cell, pbc=pbc if pbc is not None else False)
                info = {"window": k, "step": int(step[n])}
                if cvs is not None:
                    info.update({f"cv{i}": float(v) for i, v in enumerate(cvs[n])})
                if u_ref is not None:
                    energy = float(u_ref[n]) * kt
                    info.update(u_ref_kT=float(u_ref[n]), bias_eV=float(u_kn[k, n] - u_ref[n]) * kt)
                else:
                    energy = float(u_kn[k, n]) * kt
                if dudl is not None:
                    info["dudl_kT"] = float(dudl[n])
                atoms.info.update(info)
                atoms.calc = SinglePointCalculator(atoms, energy=energy)
                batch.append(atoms)
            if traj is not None:
                for atoms in batch:
                    traj.write(atoms)
            else:
                write(str(path), batch, format="extxyz", append=written > 0)
            written += len(batch)
    finally:
        if traj is not None:
            traj.close()
    log.info("wrote %d frames to %s (%s)", written, path, fmt)
    return written


__all__ = ["to_alchemlyb", "from_alchemlyb", "export_trajectory", "run_atomic_numbers", "FORMATS"]
