"""Readers for PLUMED's text output: COLVAR files (``PRINT``) and HILLS files (``METAD``).

PLUMED writes a ``#! FIELDS name1 name2 ...`` header, optional ``#! SET key
value`` constant lines (``min_phi -pi`` / ``max_phi pi`` for periodic CVs,
``multivariate false`` and ``kerneltype stretched-gaussian`` in HILLS), then
one whitespace-separated row per stride. A run continued with ``RESTART``
appends to the file and prints the header again; a killed run may leave a
truncated last line. The reader handles all of these and refuses anything
else (a data row before any header, a wrong number of columns or a bad number
in the middle of the file, NaN/inf) with an :class:`~fesurf.errors.InputError`
naming the file and line.

The ``plumed`` wrapper's ``read_as_pandas`` reads only the first header (no
restarts) and needs a kernel to convert ``pi``; this reader needs neither.

Values are in PLUMED's units as written (by default nm, kJ/mol, ps, rad).

Example
-------
>>> import io
>>> text = "#! FIELDS time phi\\n#! SET min_phi -pi\\n#! SET max_phi pi\\n 0.0 1.0\\n 0.1 -3.0\\n"
>>> c = read_colvar(io.StringIO(text))
>>> c.fields, c["phi"].tolist(), round(c.period("phi")[1], 5)
(['time', 'phi'], [1.0, -3.0], 3.14159)
"""
from __future__ import annotations

import gzip
import io
import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import InputError

__all__ = ["PlumedTable", "Hills", "read_colvar", "read_hills", "parse_constant"]

log = logging.getLogger(__name__)

_PI_EXPR = re.compile(r"^([+-]?)(?:([0-9.eE+-]+)\*)?pi(?:/([0-9.eE+-]+))?$")


def parse_constant(text: str):
    """Value of a ``#! SET`` constant: a float, ``pi``-expressions such as ``-pi``,
    ``2*pi`` or ``pi/2``, else the text itself (``false``, ``stretched-gaussian``).

    >>> parse_constant("-pi") == -math.pi, parse_constant("0.5"), parse_constant("false")
    (True, 0.5, 'false')
    """
    t = text.strip()
    try:
        return float(t)
    except ValueError:
        pass
    m = _PI_EXPR.match(t)
    if m:
        sign = -1.0 if m.group(1) == "-" else 1.0
        try:
            mult = float(m.group(2)) if m.group(2) else 1.0
            div = float(m.group(3)) if m.group(3) else 1.0
            return sign * mult * math.pi / div
        except ValueError:
            return t
    return t


@dataclass
class PlumedTable:
    """A parsed PLUMED data file: column names, a float64 ``[n_rows, n_fields]``
    array and the ``#! SET`` constants.

    Attributes
    ----------
    fields : list of str
        Column names from ``#! FIELDS`` (``time`` first in COLVAR files).
    data : numpy array ``[n_rows, n_fields]``
        Values in PLUMED's output units (nm, kJ/mol, ps, rad unless UNITS was set).
    constants : dict
        ``#! SET`` constants (floats where they parse, e.g. ``min_phi = -pi``).
    path : str or None
        The file read.
    n_segments : int
        Number of headers seen (2 for one restart).
    dropped_rows : int
        Rows removed: a truncated last line, and rows overwritten by a restart.

    ``table["p.x"]`` is one column; :meth:`period` gives ``(min, max)`` of a
    periodic field.
    """

    fields: list
    data: np.ndarray
    constants: dict = field(default_factory=dict)
    path: Optional[str] = None
    n_segments: int = 1
    dropped_rows: int = 0

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.fields:
            raise InputError(f"{self._where()} has no field {name!r}; its fields are {', '.join(self.fields)}")
        return self.data[:, self.fields.index(name)]

    def __contains__(self, name) -> bool:
        return name in self.fields

    def __len__(self) -> int:
        return self.data.shape[0]

    def period(self, name: str):
        """``(min, max)`` of a periodic field (from ``#! SET min_<name>``/``max_<name>``), else None."""
        lo, hi = self.constants.get(f"min_{name}"), self.constants.get(f"max_{name}")
        if isinstance(lo, float) and isinstance(hi, float):
            return (lo, hi)
        return None

    def columns(self, names) -> np.ndarray:
        """``[n_rows, len(names)]`` array of several fields."""
        return np.stack([self[n] for n in names], axis=1)

    def _where(self) -> str:
        return f"PLUMED file {self.path!r}" if self.path else "the PLUMED data"


def _open_text(source):
    if isinstance(source, io.TextIOBase) or hasattr(source, "read"):
        return source, getattr(source, "name", None), False
    path = os.fspath(source)
    if not os.path.exists(path):
        raise InputError(f"PLUMED file {path!r} does not exist; check the path (COLVAR/HILLS are written "
                         "in the directory PLUMED ran in)")
    if path.endswith(".gz"):
        return gzip.open(path, "rt"), path, True
    from ..io_checks import read_text

    return io.StringIO(read_text(path, "PLUMED file")), path, True


def _parse(source, kind: str, restart: str = "overwrite") -> PlumedTable:
    if restart not in ("overwrite", "append"):
        raise InputError(f"restart must be 'overwrite' or 'append', got {restart!r}")
    fh, path, close = _open_text(source)
    try:
        text = fh.read()
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        raise InputError(f"PLUMED {kind} file {path!r} is not readable text ({type(exc).__name__}: {exc}); "
                         "is it a PLUMED output file?") from None
    finally:
        if close:
            fh.close()
    where = f"{kind} file {path!r}" if path else f"{kind} data"
    lines = text.split("\n")
    ends_with_newline = text.endswith("\n")
    if ends_with_newline:
        lines = lines[:-1]

    fields = None
    constants: dict = {}
    segments: list = []  # list of (first_line_number, rows)
    rows: list = []
    row_lines: list = []
    dropped = 0
    pending_bad = None  # (lineno, reason) of a bad row; allowed only as the last row of a segment

    def close_segment():
        nonlocal pending_bad, dropped
        if pending_bad is not None:
            log.warning("%s: dropping the truncated line %d (%s)", where, pending_bad[0], pending_bad[1])
            dropped += 1
            pending_bad = None
        if rows:
            segments.append((row_lines[0], np.array(rows, dtype=np.float64)))
        rows.clear()
        row_lines.clear()

    for n, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#!"):
            parts = line[2:].split()
            if parts and parts[0] == "FIELDS":
                new = parts[1:]
                if not new:
                    raise InputError(f"{where}, line {n}: '#! FIELDS' lists no fields")
                if fields is not None and new != fields:
                    raise InputError(f"{where}, line {n}: a restart header has fields {new} but the file began "
                                     f"with {fields}; split the file at line {n} and read the parts separately")
                close_segment()
                fields = new
            elif parts and parts[0] == "SET" and len(parts) >= 3:
                constants[parts[1]] = parse_constant(" ".join(parts[2:]))
            continue
        if line.startswith("#"):
            continue
        if fields is None:
            raise InputError(f"{where}, line {n}: data before any '#! FIELDS' header; a PLUMED {kind} file "
                             "starts with a line like '#! FIELDS time d1 d1.bias' (is this a PLUMED file?)")
        if pending_bad is not None:
            raise InputError(f"{where}, line {pending_bad[0]}: {pending_bad[1]}; a damaged line in the middle "
                             "of the file means it is corrupt (only a truncated last line is skipped)")
        tokens = line.split()
        if len(tokens) != len(fields):
            pending_bad = (n, f"{len(tokens)} columns where the header at FIELDS has {len(fields)} "
                              f"({' '.join(fields)})")
            continue
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            pending_bad = (n, f"a value that is not a number in {line[:60]!r}")
            continue
        if not all(math.isfinite(v) for v in values):
            bad = [f for f, v in zip(fields, values) if not math.isfinite(v)]
            raise InputError(f"{where}, line {n}: non-finite value (NaN or inf) in field(s) {', '.join(bad)}; "
                             "the simulation that wrote it probably blew up: check it and cut the file "
                             "before this line")
        rows.append(values)
        row_lines.append(n)
    if not ends_with_newline and rows and pending_bad is None and lines and lines[-1].strip() \
            and not lines[-1].lstrip().startswith("#"):
        # PLUMED terminates every row: a final row without newline was cut while writing
        pending_bad = (row_lines[-1], "no end-of-line at the end of the file")
        rows.pop()
        row_lines.pop()
    close_segment()
    if fields is None:
        raise InputError(f"{where} has no '#! FIELDS' header (empty or not a PLUMED file)")
    if not segments:
        raise InputError(f"{where} has a header but no data rows")

    if restart == "overwrite" and "time" in fields and len(segments) > 1:
        it = fields.index("time")
        kept = []
        for _, block in segments:
            start = block[0, it]
            trimmed = []
            for prev in kept:
                keep = prev[:, it] < start
                dropped += int((~keep).sum())
                trimmed.append(prev[keep])
            kept = trimmed + [block]
        data = np.concatenate(kept)
    else:
        data = np.concatenate([b for _, b in segments])
    return PlumedTable(fields=list(fields), data=data, constants=constants, path=path,
                       n_segments=len(segments), dropped_rows=dropped)


def read_colvar(source, restart: str = "overwrite") -> PlumedTable:
    """Read a PLUMED COLVAR file (``PRINT ARG=... FILE=COLVAR``).

    Parameters
    ----------
    source : path (``.gz`` works) or open text file
    restart : ``"overwrite"`` (default) or ``"append"``
        After a restart header, rows of earlier segments whose time is at or
        after the new segment's first time are dropped (PLUMED repeats the
        restart frame; a run restarted from an older checkpoint redoes
        steps). ``"append"`` keeps every row.

    Returns
    -------
    PlumedTable
        Values in PLUMED's output units (nm, rad, kJ/mol, ps by default).

    Raises
    ------
    InputError
        Missing file or header, non-finite values, a damaged row that is not
        the last one, fields that change at a restart.

    Example
    -------
    >>> c = read_colvar(io.StringIO("#! FIELDS time d\\n 0 1.5\\n 1 1.6\\n 2 1."))
    >>> c["d"].tolist(), c.dropped_rows   # the cut last row is skipped
    ([1.5, 1.6], 1)
    """
    return _parse(source, "COLVAR", restart)


# PLUMED's Gaussian cutoff: kernels vanish beyond 0.5*(d/sigma)^2 = 6.25
# ("stretched" Gaussians are shifted and rescaled to reach zero there).
DP2_CUTOFF = 6.25
STRETCH_A = 1.0 / (1.0 - math.exp(-DP2_CUTOFF))
STRETCH_B = -math.exp(-DP2_CUTOFF) * STRETCH_A


@dataclass
class Hills:
    """Gaussians deposited by PLUMED METAD (from a HILLS file).

    Attributes
    ----------
    cv_names : list of str
    time : [n_hills] ps
    centers : [n_hills, n_cvs] (PLUMED units of each CV)
    sigmas : [n_hills, n_cvs]
    heights : [n_hills] kJ/mol, **as stored**: for well-tempered METAD these
        are the deposited heights times gamma/(gamma-1), so that minus their sum
        is the free-energy estimate (as ``plumed sum_hills`` does)
    biasfactor : float or None (gamma; None for plain METAD)
    periods : list of ``(min, max)`` or None per CV
    kernel : ``"stretched-gaussian"`` (PLUMED >= 2.8) or ``"gaussian"``
    """

    cv_names: list
    time: np.ndarray
    centers: np.ndarray
    sigmas: np.ndarray
    heights: np.ndarray
    biasfactor: Optional[float]
    periods: list
    kernel: str = "stretched-gaussian"
    path: Optional[str] = None

    @property
    def n_hills(self) -> int:
        return self.heights.shape[0]

    @property
    def n_cvs(self) -> int:
        return len(self.cv_names)

    @property
    def bias_scale(self) -> float:
        """Factor turning stored heights into deposited bias: (gamma-1)/gamma, or 1 for plain METAD."""
        if self.biasfactor is None or not math.isfinite(self.biasfactor) or self.biasfactor <= 1.0:
            return 1.0
        return (self.biasfactor - 1.0) / self.biasfactor

    def kernels(self, points, upto: Optional[int] = None) -> np.ndarray:
        """Unit-height kernel values ``[n_points, n_hills]`` of the first ``upto``
        hills at ``points [n_points, n_cvs]`` (PLUMED's cutoff and stretching)."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, self.n_cvs)
        c, s = self.centers[:upto], self.sigmas[:upto]
        d = pts[:, None, :] - c[None, :, :]
        for k, per in enumerate(self.periods):
            if per is not None:
                w = per[1] - per[0]
                d[..., k] -= w * np.round(d[..., k] / w)
        dp2 = 0.5 * ((d / s[None]) ** 2).sum(-1)
        if self.kernel == "stretched-gaussian":
            val = STRETCH_A * np.exp(-dp2) + STRETCH_B
        else:
            val = np.exp(-dp2)
        return np.where(dp2 < DP2_CUTOFF, val, 0.0)


def read_hills(source, restart: str = "overwrite") -> Hills:
    """Read a PLUMED HILLS file written by ``METAD`` (diagonal Gaussians).

    Fields expected: ``time``, the CV names, ``sigma_<cv>`` per CV, ``height``
    and optionally ``biasf``. ``#! SET multivariate true`` (full covariance
    hills) is refused with an InputError.

    >>> text = ("#! FIELDS time x sigma_x height biasf\\n#! SET multivariate false\\n"
    ...         "#! SET kerneltype stretched-gaussian\\n 0.5 0.1 0.2 1.2 6\\n")
    >>> h = read_hills(io.StringIO(text))
    >>> h.cv_names, h.biasfactor, round(h.bias_scale, 4)
    (['x'], 6.0, 0.8333)
    """
    t = _parse(source, "HILLS", restart)
    where = f"HILLS file {t.path!r}" if t.path else "HILLS data"
    mv = t.constants.get("multivariate", "false")
    if str(mv).lower() == "true":
        raise InputError(f"{where} holds multivariate (full-covariance) hills, which fesurf does not sum; "
                         "run METAD without ADAPTIVE or use plumed sum_hills")
    if "height" not in t.fields or "time" not in t.fields:
        raise InputError(f"{where} lacks 'time' or 'height' fields ({' '.join(t.fields)}); is it a METAD HILLS file?")
    cvs = [f for f in t.fields if f not in ("time", "height", "biasf") and not f.startswith("sigma_")]
    for cv in cvs:
        if f"sigma_{cv}" not in t.fields:
            raise InputError(f"{where} has CV {cv!r} but no sigma_{cv} field; fields: {' '.join(t.fields)}")
    kernel = str(t.constants.get("kerneltype", "gaussian"))
    if kernel not in ("stretched-gaussian", "gaussian"):
        raise InputError(f"{where}: unknown kerneltype {kernel!r} (PLUMED writes stretched-gaussian or gaussian)")
    sig = t.columns([f"sigma_{c}" for c in cvs])
    if (sig <= 0).any():
        raise InputError(f"{where}: non-positive sigma values; the file is damaged")
    biasf = None
    if "biasf" in t.fields:
        b = np.unique(t["biasf"])
        if len(b) != 1:
            raise InputError(f"{where}: the biasf column changes ({b[:4]}); sum segments with one bias factor")
        biasf = float(b[0])
    return Hills(cv_names=cvs, time=t["time"].copy(), centers=t.columns(cvs), sigmas=sig,
                 heights=t["height"].copy(), biasfactor=biasf, periods=[t.period(c) for c in cvs],
                 kernel=kernel, path=t.path)
