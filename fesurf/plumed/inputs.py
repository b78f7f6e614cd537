"""PLUMED input files: fesurf CVs in PLUMED syntax, umbrella-window inputs, and a parser back.

fesurf's CVs (:mod:`fesurf.cv`) map one to one onto PLUMED actions:
DISTANCE, ANGLE, TORSION, POSITION (a component of ``POSITION ATOM=i NOPBC``),
COORDINATION (rational switching function) and COMBINE. Atom indices are
0-based in fesurf and 1-based in PLUMED; the writer adds one.

Units. ``units="plumed"`` (default) writes numbers in PLUMED's native units
(nm, kJ/mol), which is what COLVAR files from GROMACS/LAMMPS/OpenMM runs are
in; ``units="fesurf"`` adds ``UNITS LENGTH=A ENERGY=eV`` and writes fesurf's
numbers unchanged. Either way the parser converts back to fesurf units
(Angstrom, rad, eV). A RESTRAINT is ``0.5 kappa (s - at)^2`` in both codes.

Example
-------
>>> from fesurf.cv import DISTANCE
>>> text = umbrella_window_input(DISTANCE([0, 1]), at=1.5, kappa=2.0, colvar_file="COLVAR.0")
>>> print(text)
d1: DISTANCE ATOMS=1,2
restraint: RESTRAINT ARG=d1 AT=0.15 KAPPA=19297.0665764998
PRINT ARG=d1,restraint.bias STRIDE=10 FILE=COLVAR.0 FMT=%.8f
<BLANKLINE>
>>> w = read_window_input(text)
>>> w["cvs"], round(w["at"][0], 12), round(w["kappa"][0], 9)
([{'type': 'DISTANCE', 'atoms': [0, 1]}], 1.5, 2.0)
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..cv import as_cv_list, cv_from_spec
from ..errors import InputError
from ..units import convert

__all__ = ["PlumedAction", "parse_plumed_input", "plumed_cv_lines", "umbrella_window_input",
           "write_umbrella_inputs", "read_window_input", "read_windows_table", "unit_factors"]

log = logging.getLogger(__name__)

EV_TO_KJMOL = convert(1.0, "eV", "kJ/mol")
A_TO_NM = 0.1


def unit_factors(units: str):
    """``(length, energy)`` factors from fesurf units (Angstrom, eV) to the written units."""
    if units == "plumed":
        return A_TO_NM, EV_TO_KJMOL
    if units == "fesurf":
        return 1.0, 1.0
    raise InputError(f"units must be 'plumed' (nm, kJ/mol) or 'fesurf' (Angstrom, eV), got {units!r}")


def _fmt(x: float) -> str:
    return f"{float(x):.15g}"


def _atoms(idx) -> str:
    return ",".join(str(int(i) + 1) for i in idx)


def _cv_factor(cv, length: float) -> float:
    p = cv.length_power
    if p is None:
        if length != 1.0:
            raise InputError(f"{cv.label()} mixes units (e.g. a distance and an angle), so it has no single "
                             "PLUMED unit; write the input with units='fesurf'")
        return 1.0
    return length ** p


class _Labeller:
    def __init__(self):
        self.counts: dict = {}

    def __call__(self, stem):
        self.counts[stem] = self.counts.get(stem, 0) + 1
        return f"{stem}{self.counts[stem]}"


#: CV types written as `label: TYPE ATOMS=...`, with their label prefixes
_ATOMS_ONLY = {"DISTANCE": "d", "ANGLE": "a", "TORSION": "t"}


def _cv_lines(cv, length, lab, lines) -> str:
    spec = cv.to_spec()
    kind = spec["type"]
    if kind in _ATOMS_ONLY:  # DISTANCE, ANGLE, TORSION: just the atom list
        name = lab(_ATOMS_ONLY[kind])
        lines.append(f"{name}: {kind} ATOMS={_atoms(spec['atoms'])}")
        return name
    if kind == "POSITION":
        name = lab("p")
        lines.append(f"{name}: POSITION ATOM={int(spec['atom']) + 1} NOPBC")
        return f"{name}.{spec['component']}"
    if kind == "COORDINATION":
        name = lab("c")
        line = f"{name}: COORDINATION GROUPA={_atoms(spec['groupa'])}"
        if spec.get("groupb") is not None:
            line += f" GROUPB={_atoms(spec['groupb'])}"
        # the SWITCH form without D_MAX is not stretched, as fesurf's COORDINATION; PLUMED 2.10's short form
        # (R_0= NN= MM=) stretches the function to zero at r0 * 1e-5^(1/(nn-mm)), a ~1e-5 relative change
        sw = f"RATIONAL R_0={_fmt(spec['r0'] * length)} NN={spec['nn']} MM={spec['mm']}"
        if spec.get("d0", 0.0):
            sw += f" D_0={_fmt(spec['d0'] * length)}"
        lines.append(line + f" SWITCH={{{sw}}}")
        return name
    if kind == "COMBINE":
        args = [_cv_lines(a, length, lab, lines) for a in cv.args]
        name = lab("comb")
        params = [p * _cv_factor(a, length) for p, a in zip(cv.parameters, cv.args)]
        line = (f"{name}: COMBINE ARG={','.join(args)} COEFFICIENTS={','.join(_fmt(c) for c in cv.coefficients)}"
                f" PARAMETERS={','.join(_fmt(p) for p in params)} POWERS={','.join(_fmt(p) for p in cv.powers)}")
        if cv.periodic:
            f = _cv_factor(cv, length)
            line += f" PERIODIC={_fmt(cv.period[0] * f)},{_fmt(cv.period[1] * f)}"
        else:
            line += " PERIODIC=NO"
        lines.append(line)
        return name
    raise InputError(f"no PLUMED translation for CV type {kind!r}")


def plumed_cv_lines(cvs, units: str = "plumed"):
    """PLUMED lines defining ``cvs`` and the argument names to use in ARG=.

    Returns ``(lines, args)``. With ``units="fesurf"`` the first line is
    ``UNITS LENGTH=A ENERGY=eV``.

    >>> from fesurf.cv import TORSION, POSITION
    >>> plumed_cv_lines([TORSION([0, 1, 2, 3]), POSITION(0, "y")])
    (['t1: TORSION ATOMS=1,2,3,4', 'p1: POSITION ATOM=1 NOPBC'], ['t1', 'p1.y'])
    """
    cvs = as_cv_list(cvs)
    length, _ = unit_factors(units)
    lines = ["UNITS LENGTH=A ENERGY=eV"] if units == "fesurf" else []
    lab = _Labeller()
    args = [_cv_lines(cv, length, lab, lines) for cv in cvs]
    return lines, args


def _window_rows(value, n_cvs, name):
    a = np.asarray(value, dtype=np.float64)
    if a.ndim == 0:
        a = np.full(n_cvs, float(a))
    a = a.reshape(-1)
    if a.shape[0] != n_cvs or not np.isfinite(a).all():
        raise InputError(f"{name} must be finite with one value per CV ({n_cvs}), got {value!r}")
    return a


def umbrella_window_input(cvs, at, kappa, colvar_file: str = "COLVAR", stride: int = 10,
                          units: str = "plumed", fmt: str = "%.8f", label: str = "restraint") -> str:
    """PLUMED input text for one umbrella window: CV definitions, a RESTRAINT and a PRINT.

    Parameters
    ----------
    cvs : CV, spec dict or list of them
    at : centre(s), fesurf units (Angstrom or rad), one per CV
    kappa : force constant(s), eV / unit^2, one per CV (bias 0.5 kappa (s - at)^2)
    colvar_file, stride : where and how often PLUMED prints ``ARG=cvs,label.bias``
    units : ``"plumed"`` (nm, kJ/mol numbers) or ``"fesurf"`` (adds UNITS LENGTH=A ENERGY=eV)
    fmt : PRINT format; PLUMED's default %f keeps only 6 decimals

    Example: see the module docstring.
    """
    cvs = as_cv_list(cvs)
    stride = int(stride)
    if stride < 1:
        raise InputError(f"stride must be a positive number of steps, got {stride}")
    length, energy = unit_factors(units)
    at = _window_rows(at, len(cvs), "at")
    kappa = _window_rows(kappa, len(cvs), "kappa")
    if (kappa < 0).any():
        raise InputError(f"kappa must be >= 0 (eV/unit^2), got {kappa.tolist()}")
    lines, args = plumed_cv_lines(cvs, units)
    fac = np.array([_cv_factor(c, length) for c in cvs])
    at_p = at * fac
    kappa_p = kappa * energy / fac**2
    lines.append(f"{label}: RESTRAINT ARG={','.join(args)} AT={','.join(_fmt(x) for x in at_p)} "
                 f"KAPPA={','.join(_fmt(k) for k in kappa_p)}")
    lines.append(f"PRINT ARG={','.join(args)},{label}.bias STRIDE={stride} FILE={colvar_file} FMT={fmt}")
    return "\n".join(lines) + "\n"


def write_umbrella_inputs(directory, cvs, at, kappa, stride: int = 10, units: str = "plumed",
                          fmt: str = "%.8f") -> list:
    """Write ``plumed.<k>.dat`` (printing to ``COLVAR.<k>``) for every window and a ``windows.dat`` table.

    ``at`` and ``kappa`` are ``[n_windows]`` (one CV) or ``[n_windows, n_cvs]``
    in fesurf units; kappa may also be one shared value. ``windows.dat`` lists
    ``window AT... KAPPA... colvar_file plumed_input`` in the written units,
    the form :func:`read_windows_table` and ``fesurf analyze colvar`` read.
    Returns the list of input paths.

    >>> import tempfile
    >>> from fesurf.cv import POSITION
    >>> d = tempfile.mkdtemp()
    >>> paths = write_umbrella_inputs(d, POSITION(0, "x"), at=[-1.0, 0.0, 1.0], kappa=0.5)
    >>> [os.path.basename(p) for p in paths]
    ['plumed.0.dat', 'plumed.1.dat', 'plumed.2.dat']
    """
    cvs = as_cv_list(cvs)
    d = len(cvs)
    at = np.asarray(at, dtype=np.float64)
    at = at.reshape(-1, 1) if (at.ndim <= 1 and d == 1) else at.reshape(-1, d)
    kappa = np.asarray(kappa, dtype=np.float64)
    kappa = np.broadcast_to(kappa.reshape(-1, 1) if (kappa.ndim == 1 and d == 1) else kappa, at.shape) \
        if kappa.size in (1, d, at.size) else None
    if kappa is None:
        raise InputError(f"kappa must be one value, one per CV, or one per window ({at.shape[0]}) x CV")
    length, energy = unit_factors(units)
    fac = np.array([_cv_factor(c, length) for c in cvs])
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths, rows = [], []
    for k in range(at.shape[0]):
        colvar, inp = f"COLVAR.{k}", f"plumed.{k}.dat"
        text = umbrella_window_input(cvs, at[k], kappa[k], colvar_file=colvar, stride=stride, units=units, fmt=fmt)
        (directory / inp).write_text(text)
        paths.append(str(directory / inp))
        vals = list(at[k] * fac) + list(kappa[k] * energy / fac**2)
        rows.append(f"{k} " + " ".join(f"{v:.10g}" for v in vals) + f" {colvar} {inp}")
    unit_note = "nm/rad, kJ/mol" if units == "plumed" else "Angstrom/rad, eV"
    header = (f"# window {' '.join(f'AT_{i}' for i in range(d))} {' '.join(f'KAPPA_{i}' for i in range(d))} "
              f"colvar_file plumed_input  (units: {unit_note})")
    (directory / "windows.dat").write_text(header + "\n" + "\n".join(rows) + "\n")
    return paths


@dataclass
class PlumedAction:
    """One action of a PLUMED input: ``label: NAME KEY=value FLAG ...``."""

    name: str
    label: Optional[str] = None
    keywords: dict = field(default_factory=dict)
    flags: list = field(default_factory=list)
    line: int = 0


def parse_plumed_input(text: str) -> list:
    """Split PLUMED input text into :class:`PlumedAction` objects.

    Handles comments (``#``), continuation blocks (``...`` / ``... NAME``),
    ``label:`` prefixes and ``LABEL=`` keywords; keyword values keep their
    text (``{...}`` braces removed).

    >>> acts = parse_plumed_input("d: DISTANCE ATOMS=1,2 # a bond\\nPRINT ...\\n ARG=d\\n STRIDE=5\\n...\\n")
    >>> [(a.label, a.name, a.keywords) for a in acts]
    [('d', 'DISTANCE', {'ATOMS': '1,2'}), (None, 'PRINT', {'ARG': 'd', 'STRIDE': '5'})]
    """
    actions = []
    buf, start, in_block = [], 0, False
    for n, raw in enumerate(str(text).split("\n"), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if in_block:
            if words[0] == "...":
                in_block = False
                actions.append(_make_action(buf, start))
                buf = []
            else:
                buf.extend(words)
            continue
        if words[-1] == "...":
            in_block, buf, start = True, words[:-1], n
            continue
        actions.append(_make_action(words, n))
    if in_block:
        raise InputError(f"PLUMED input: the '...' block opened at line {start} is never closed with '...'")
    return actions


_BRACES = re.compile(r"^\{(.*)\}$")


def _join_braces(words, n):
    out, depth = [], 0
    for w in words:
        if depth > 0:
            out[-1] += " " + w
        else:
            out.append(w)
        depth += w.count("{") - w.count("}")
    if depth != 0:
        raise InputError(f"PLUMED input line {n}: unbalanced braces {{...}}")
    return out


def _make_action(words, n) -> PlumedAction:
    words = _join_braces(words, n)
    label = None
    if words[0].endswith(":"):
        label, words = words[0][:-1], words[1:]
    if not words:
        raise InputError(f"PLUMED input line {n}: a label with no action")
    act = PlumedAction(name=words[0].upper(), label=label, line=n)
    for w in words[1:]:
        if "=" in w:
            k, v = w.split("=", 1)
            m = _BRACES.match(v)
            act.keywords[k.upper()] = m.group(1) if m else v
        else:
            act.flags.append(w.upper())
    if "LABEL" in act.keywords and act.label is None:
        act.label = act.keywords.pop("LABEL")
    return act


def _floats(text, what, n):
    try:
        vals = [float(x) for x in str(text).split(",")]
    except ValueError:
        raise InputError(f"PLUMED input line {n}: {what}={text!r} is not a list of numbers") from None
    return vals


def _idx(text, n):
    try:
        return [int(x) - 1 for x in str(text).split(",")]
    except ValueError:
        raise InputError(f"PLUMED input line {n}: atom list {text!r} is not 1-based integers "
                         "(fesurf reads plain lists, not ranges or groups)") from None


def _spec_of(arg, defs, n):
    base, _, comp = arg.partition(".")
    if base not in defs:
        raise InputError(f"PLUMED input line {n}: argument {arg!r} is not defined by an earlier action")
    act = defs[base]
    kw = act.keywords
    if act.name in ("DISTANCE", "ANGLE", "TORSION"):
        return {"type": act.name, "atoms": _idx(kw["ATOMS"], act.line)}
    if act.name == "POSITION":
        if comp not in ("x", "y", "z"):
            raise InputError(f"PLUMED input line {n}: use a component of POSITION ({base}.x/.y/.z), got {arg!r}")
        return {"type": "POSITION", "atom": _idx(kw["ATOM"], act.line)[0], "component": comp}
    if act.name == "COORDINATION":
        sw = kw
        if "SWITCH" in kw:
            words = kw["SWITCH"].split()
            if not words or words[0].upper() != "RATIONAL":
                raise InputError(f"PLUMED input line {act.line}: fesurf's COORDINATION is the RATIONAL switching "
                                 f"function; got SWITCH={{{kw['SWITCH']}}}")
            sw = {k.upper(): v for k, v in (w.split("=", 1) for w in words[1:] if "=" in w)}
            if "D_MAX" in sw:
                log.warning("PLUMED input line %d: D_MAX (a stretched switching function) has no fesurf "
                            "equivalent; reading the unstretched function", act.line)
        nn = int(sw.get("NN", 6))
        mm = int(sw.get("MM", 0)) or 2 * nn  # PLUMED: MM=0 means 2*NN
        spec = {"type": "COORDINATION", "groupa": _idx(kw["GROUPA"], act.line),
                "r0": float(sw["R_0"]), "nn": nn, "mm": mm, "d0": float(sw.get("D_0", 0.0))}
        if "GROUPB" in kw:
            spec["groupb"] = _idx(kw["GROUPB"], act.line)
        return spec
    if act.name == "COMBINE":
        args = kw["ARG"].split(",")
        m = len(args)
        spec = {"type": "COMBINE", "args": [_spec_of(a, defs, act.line) for a in args],
                "coefficients": _floats(kw.get("COEFFICIENTS", ",".join(["1"] * m)), "COEFFICIENTS", act.line),
                "parameters": _floats(kw.get("PARAMETERS", ",".join(["0"] * m)), "PARAMETERS", act.line),
                "powers": _floats(kw.get("POWERS", ",".join(["1"] * m)), "POWERS", act.line)}
        per = kw.get("PERIODIC", "NO")
        if per.upper() != "NO":
            spec["period"] = _floats(per, "PERIODIC", act.line)
        return spec
    raise InputError(f"PLUMED input line {n}: fesurf has no CV for action {act.name} (argument {arg!r}); "
                     "supported: DISTANCE, ANGLE, TORSION, POSITION, COORDINATION, COMBINE")


def _to_fesurf_units(spec, length):
    """Convert the length-valued fields of a spec read in PLUMED units to Angstrom; returns the CV."""
    if spec["type"] == "COORDINATION":
        spec["r0"] /= length
        spec["d0"] /= length
    if spec["type"] == "COMBINE":
        spec["args"] = [_to_fesurf_units(a, length).to_spec() for a in spec["args"]]
        args = [cv_from_spec(a) for a in spec["args"]]
        spec["parameters"] = [p / _cv_factor(a, length) for p, a in zip(spec["parameters"], args)]
        if "period" in spec:
            f = _cv_factor(cv_from_spec(spec), length)
            spec["period"] = [x / f for x in spec["period"]]
    return cv_from_spec(spec)


def read_window_input(text_or_path) -> dict:
    """Read the CVs, RESTRAINT and PRINT of a one-window PLUMED input, in fesurf units.

    Returns a dict: ``cvs`` (spec dicts), ``args`` (PLUMED argument names),
    ``at`` (Angstrom/rad), ``kappa`` (eV/unit^2), ``colvar_file``, ``stride``,
    ``units`` (``"plumed"`` or ``"fesurf"``), ``at_written``/``kappa_written``
    (the numbers as in the file). Numbers are taken as nm and
    kJ/mol unless a ``UNITS LENGTH=A ENERGY=eV`` line says otherwise (other
    UNITS values are refused).

    Example: see the module docstring.
    """
    text = str(text_or_path)
    if "\n" not in text and os.path.exists(text):
        text = Path(text).read_text()
    acts = parse_plumed_input(text)
    units, length, energy = "plumed", A_TO_NM, EV_TO_KJMOL
    defs, restraint, prints = {}, None, []
    for a in acts:
        if a.name == "UNITS":
            lu, eu = a.keywords.get("LENGTH", "nm"), a.keywords.get("ENERGY", "kj/mol")
            if lu.lower() in ("a", "ang", "angstrom") and eu.lower() == "ev":
                units, length, energy = "fesurf", 1.0, 1.0
            elif not (lu.lower() == "nm" and eu.lower() == "kj/mol"):
                raise InputError(f"PLUMED input line {a.line}: UNITS LENGTH={lu} ENERGY={eu} is not supported; "
                                 "use PLUMED's defaults (nm, kJ/mol) or LENGTH=A ENERGY=eV")
        if a.label:
            defs[a.label] = a
        if a.name == "RESTRAINT":
            if restraint is not None:
                raise InputError(f"PLUMED input line {a.line}: more than one RESTRAINT; one window has one")
            restraint = a
        if a.name == "PRINT":
            prints.append(a)
    if restraint is None:
        raise InputError("the PLUMED input has no RESTRAINT action, so it is not an umbrella window")
    n = restraint.line
    args = restraint.keywords.get("ARG", "").split(",")
    for key in ("AT", "KAPPA"):
        if key not in restraint.keywords:
            raise InputError(f"PLUMED input line {n}: RESTRAINT has no {key}=")
    at = _floats(restraint.keywords["AT"], "AT", n)
    kappa = _floats(restraint.keywords["KAPPA"], "KAPPA", n)
    if not (len(at) == len(kappa) == len(args)):
        raise InputError(f"PLUMED input line {n}: RESTRAINT has {len(args)} ARG, {len(at)} AT and "
                         f"{len(kappa)} KAPPA values; give one of each per argument")
    cvs = [_to_fesurf_units(_spec_of(arg, defs, n), length) for arg in args]
    fac = np.array([_cv_factor(c, length) for c in cvs])
    out = {"cvs": [c.to_spec() for c in cvs], "args": args, "units": units,
           "at": (np.array(at) / fac).tolist(), "kappa": (np.array(kappa) * fac**2 / energy).tolist(),
           "at_written": at, "kappa_written": kappa,
           "colvar_file": None, "stride": None, "bias_label": restraint.label}
    for p in prints:
        if any(a in p.keywords.get("ARG", "").split(",") for a in args):
            out["colvar_file"] = p.keywords.get("FILE", "COLVAR")
            out["stride"] = int(p.keywords.get("STRIDE", 1))
            break
    return out


def read_windows_table(path) -> dict:
    """Read a ``windows.dat`` table (``window AT... KAPPA... colvar_file [plumed_input]`` per row).

    Numbers are returned as written (nm/kJ/mol for PLUMED-made tables).
    Returns ``{"at": [n, d], "kappa": [n, d], "colvar_files": [...], "inputs": [...] or None}``;
    relative file names are resolved against the table's folder.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"windows table {str(path)!r} does not exist")
    rows = []
    for n, raw in enumerate(path.read_text().split("\n"), start=1):
        line = raw.split("#", 1)[0].strip()
        if line:
            rows.append((n, line.split()))
    if not rows:
        raise InputError(f"windows table {str(path)!r} has no rows")
    ncol = len(rows[0][1])
    has_input = not _is_number(rows[0][1][-2]) if ncol >= 5 else False
    d = (ncol - 2 - int(has_input)) // 2
    if d < 1 or 2 * d + 2 + int(has_input) != ncol:
        raise InputError(f"windows table {str(path)!r}: {ncol} columns; expected 'window AT_1..AT_d KAPPA_1..KAPPA_d "
                         "colvar_file [plumed_input]'")
    at, kappa, files, inputs = [], [], [], []
    for n, w in rows:
        if len(w) != ncol:
            raise InputError(f"windows table {str(path)!r}, line {n}: {len(w)} columns, the first row has {ncol}")
        try:
            vals = [float(x) for x in w[1:1 + 2 * d]]
        except ValueError:
            raise InputError(f"windows table {str(path)!r}, line {n}: AT/KAPPA values are not numbers") from None
        at.append(vals[:d])
        kappa.append(vals[d:])
        files.append(str(path.parent / w[1 + 2 * d]))
        if has_input:
            inputs.append(str(path.parent / w[2 + 2 * d]))
    return {"at": np.array(at), "kappa": np.array(kappa), "colvar_files": files,
            "inputs": inputs if has_input else None}


def _is_number(s) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
