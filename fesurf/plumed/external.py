"""Umbrella sampling run elsewhere (GROMACS, LAMMPS, OpenMM, ASE + PLUMED) -> SampleSet -> MBAR PMF.

Each window k ran with a PLUMED ``RESTRAINT ARG=s AT=a_k KAPPA=kappa_k`` and
printed its CV(s) to a COLVAR file. The reduced potential of frame n in
window k differs from the unbiased one by the restraint alone, so

    u_kn = beta * 0.5 * sum_d kappa_kd (s_nd - a_kd)^2      (kT)

(periodic CVs use the minimum-image difference from the COLVAR ``#! SET
min_/max_`` lines) and ``u_ref = 0`` is the unbiased state. Numbers stay in the
units of the files (PLUMED's default: nm or rad, kJ/mol); ``energy_unit`` says
which energy unit kappa and the bias column are in.

When a COLVAR has exactly one ``*.bias`` column, the restraint energies
recomputed from the window parameters are checked against it, so a window
table that does not match the runs is refused instead of giving a wrong PMF.
The PMF then comes from :func:`fesurf.estimators.compute_pmf` (MBAR, pymbar.FES).

Example
-------
>>> import io, numpy as np
>>> rows = "\\n".join(f" {0.1 * i:.1f} {x:.4f}" for i, x in enumerate(np.linspace(-0.2, 0.2, 50)))
>>> ss = sampleset_from_colvar([io.StringIO("#! FIELDS time p.x\\n" + rows + "\\n") for _ in range(2)],
...                            at=[-0.1, 0.1], kappa=100.0, temperature=300.0, cv_fields=["p.x"])
>>> ss.n_states, ss.n_frames, ss.u_kn.shape
(2, 100, (2, 100))
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

from ..errors import InputError
from ..units import convert, kT as kT_ev
from .files import PlumedTable, read_colvar

__all__ = ["sampleset_from_colvar", "restraint_energies"]

log = logging.getLogger(__name__)


def restraint_energies(s, at, kappa, periods=None) -> np.ndarray:
    """``[n_windows, n_frames]`` RESTRAINT energies 0.5 sum_d kappa_d (s_d - at_d)^2.

    ``s`` [n_frames, d], ``at``/``kappa`` [n_windows, d]; ``periods`` a list of
    ``(min, max)`` or None per CV (minimum-image differences). Units: those of
    kappa times CV units squared.

    >>> restraint_energies(np.array([[0.5]]), np.array([[0.0]]), np.array([[4.0]])).tolist()
    [[0.5]]
    """
    s = np.asarray(s, dtype=np.float64)
    d = s[None, :, :] - np.asarray(at, dtype=np.float64)[:, None, :]
    for j, per in enumerate(periods or []):
        if per is not None:
            w = per[1] - per[0]
            d[..., j] -= w * np.round(d[..., j] / w)
    return 0.5 * (np.asarray(kappa, dtype=np.float64)[:, None, :] * d * d).sum(-1)


def _as_rows(value, n_windows, d, name):
    a = np.asarray(value, dtype=np.float64)
    if a.ndim == 0:
        a = np.full((n_windows, d), float(a))
    elif a.ndim == 1:
        a = a[:, None] if (d == 1 and a.shape[0] == n_windows) else np.broadcast_to(a, (n_windows, d)) \
            if a.shape[0] == d else a
    if a.shape != (n_windows, d) or not np.isfinite(a).all():
        raise InputError(f"{name} must be finite with shape [n_windows={n_windows}, n_cvs={d}] "
                         f"(or one value per window for one CV), got shape {np.shape(value)}")
    return np.array(a)


def sampleset_from_colvar(colvar_files: Sequence, at, kappa, temperature: float, *,
                          cv_fields: Optional[Sequence[str]] = None, energy_unit: str = "kJ/mol",
                          bias_field: Optional[str] = "auto", skip_time: float = 0.0, stride: int = 1,
                          check_tolerance: float = 1e-3, path=None):
    """Build a :class:`~fesurf.sampling.SampleSet` from external umbrella windows.

    Parameters
    ----------
    colvar_files : list of paths (or open text files), one COLVAR per window
    at, kappa : window centres and force constants as in the PLUMED input
        (``[n_windows]`` for one CV or ``[n_windows, n_cvs]``; kappa may be one
        shared number), in the COLVAR units (nm/rad; energy_unit per unit^2)
    temperature : K, of every window
    cv_fields : COLVAR field names of the restrained CVs (default: every field
        except ``time`` and those ending in ``.bias``)
    energy_unit : unit of kappa and of the bias column ("kJ/mol", "kcal/mol", "eV")
    bias_field : field with the printed restraint energy to check against
        (``"auto"``: the single ``*.bias`` field if there is exactly one; None: no check)
    skip_time : drop frames with time < skip_time (ps) in every window
    stride : keep every ``stride``-th frame
    check_tolerance : largest allowed |recomputed - printed| bias, energy_unit
        (the default suits FMT=%.8f; PLUMED's default %f needs about 1e-2)
    path : write the SampleSet to this HDF5 file (default: in memory)

    Returns
    -------
    SampleSet with ``cv`` (file units), ``u_kn`` and ``u_ref = 0`` (kT),
    ``step`` (row numbers), ``state_parameters`` (RESTRAINT at/kappa per window)
    and ``attrs`` naming the files and units.
    """
    from ..sampling.sampleset import SampleSet

    files = list(colvar_files)
    if not files:
        raise InputError("sampleset_from_colvar needs at least one COLVAR file")
    if not temperature or float(temperature) <= 0:
        raise InputError(f"temperature must be positive (K), got {temperature}")
    if int(stride) < 1:
        raise InputError(f"stride must be >= 1, got {stride}")
    tables = [f if isinstance(f, PlumedTable) else read_colvar(f) for f in files]
    fields0 = tables[0].fields
    if cv_fields is None:
        cv_fields = [f for f in fields0 if f != "time" and not f.endswith(".bias")]
    cv_fields = list(cv_fields)
    if not cv_fields:
        raise InputError(f"no CV fields found in {tables[0]._where()}; pass cv_fields=[...]")
    d = len(cv_fields)
    K = len(tables)
    at = _as_rows(at, K, d, "at")
    kappa = _as_rows(kappa, K, d, "kappa")
    if (kappa < 0).any():
        raise InputError("kappa must be >= 0")
    beta = 1.0 / convert(kT_ev(float(temperature)), "eV", energy_unit)
    periods = [tables[0].period(f) for f in cv_fields]

    cvs, state_index, steps, times = [], [], [], []
    for k, t in enumerate(tables):
        for f in cv_fields:
            if f not in t:
                raise InputError(f"{t._where()} has no field {f!r} (fields: {', '.join(t.fields)}); "
                                 "all windows must print the same CVs")
        keep = np.ones(len(t), bool)
        if skip_time and "time" in t:
            keep &= t["time"] >= skip_time
        idx = np.nonzero(keep)[0][::int(stride)]
        if idx.size == 0:
            raise InputError(f"{t._where()}: no frames left after skip_time={skip_time} and stride={stride}")
        s = t.columns(cv_fields)[idx]
        bf = bias_field
        if bf == "auto":
            cands = [f for f in t.fields if f.endswith(".bias")]
            bf = cands[0] if len(cands) == 1 else None
        if bf is not None:
            own = restraint_energies(s, at[k:k + 1], kappa[k:k + 1], periods)[0]
            err = np.abs(own - t[bf][idx])
            if err.max() > check_tolerance * max(1.0, float(np.abs(t[bf][idx]).max()) * 1e-3):
                raise InputError(
                    f"{t._where()}: the restraint energy from window {k}'s parameters (AT={at[k].tolist()}, "
                    f"KAPPA={kappa[k].tolist()}) differs from the printed {bf} by up to {err.max():.3g} "
                    f"{energy_unit}; check that the windows are listed in the same order as the files and in the "
                    "file units (pass bias_field=None to skip this check)")
        cvs.append(s)
        state_index.append(np.full(idx.size, k))
        steps.append(idx)
        times.append(t["time"][idx] if "time" in t else idx.astype(float))
    s_all = np.concatenate(cvs)
    u_kn = beta * restraint_energies(s_all, at, kappa, periods)
    params = [{"type": "RESTRAINT", "at": at[k].tolist(), "kappa": kappa[k].tolist()} for k in range(K)]
    defs = [{"type": "PLUMED", "name": f, "field": f, "period": None if p is None else list(p)} for f, p in zip(cv_fields, periods)]
    ss = SampleSet.from_arrays(
        state_index=np.concatenate(state_index), u_kn=u_kn, temperature=float(temperature), cv=s_all,
        u_ref=np.zeros(s_all.shape[0]), step=np.concatenate(steps), cv_definitions=defs, state_parameters=params,
        attrs={"source": "PLUMED COLVAR", "colvar_files": [str(t.path) for t in tables],
               "energy_unit": energy_unit, "cv_fields": cv_fields}, path=path)
    return ss
