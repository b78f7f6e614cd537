"""Command-line subcommands for PLUMED: ``fesurf analyze colvar`` and ``fesurf plumed-input``.

``fesurf analyze colvar`` computes an MBAR PMF from umbrella windows run with
PLUMED elsewhere, from a ``windows.dat`` table (``window AT... KAPPA...
colvar_file [plumed_input]``) or from the windows' PLUMED inputs::

    fesurf analyze colvar --windows windows.dat --temperature 300 --bins 40 --output pmf.csv
    fesurf analyze colvar --inputs plumed.*.dat --temperature 300

``fesurf plumed-input`` writes one PLUMED input per umbrella window and a
``windows.dat`` table (fesurf units on the command line: Angstrom, rad, eV)::

    fesurf plumed-input --cv '{"type": "DISTANCE", "atoms": [0, 1]}' \\
        --at 1.0 1.2 1.4 --kappa 5.0 --out windows/

Example
-------
>>> import argparse
>>> p = argparse.ArgumentParser(); sub = p.add_subparsers(dest="command")
>>> register(sub)
>>> p.parse_args(["analyze", "colvar", "--windows", "w.dat", "--temperature", "300"]).temperature
300.0
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..errors import InputError

__all__ = ["register"]


def register(subparsers) -> None:
    """Add ``analyze`` (with ``colvar``) and ``plumed-input`` to an argparse subparsers object."""
    analyze = subparsers.add_parser("analyze", help="analyse runs made elsewhere (PLUMED COLVAR files)")
    asub = analyze.add_subparsers(dest="analyze_command", metavar="WHAT")
    analyze.set_defaults(func=lambda args: (analyze.print_help(), 2)[1])
    c = asub.add_parser("colvar", help="MBAR PMF from the COLVAR files of PLUMED umbrella windows",
                        description="MBAR PMF (pymbar) from PLUMED umbrella windows run elsewhere. Numbers stay in "
                                    "the units of the files (PLUMED default: nm or rad, kJ/mol).")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--windows", help="windows.dat: 'window AT... KAPPA... colvar_file [plumed_input]' per row")
    src.add_argument("--inputs", nargs="+", help="the windows' PLUMED inputs (RESTRAINT + PRINT), in window order")
    c.add_argument("--temperature", type=float, required=True, help="K")
    c.add_argument("--cv-field", action="append", dest="cv_fields",
                   help="COLVAR field of a restrained CV (repeat for several; default: all but time and *.bias)")
    c.add_argument("--energy-unit", default="kJ/mol", help="unit of KAPPA and the bias (default kJ/mol)")
    c.add_argument("--bins", type=int, default=40)
    c.add_argument("--range", type=float, nargs=2, metavar=("LO", "HI"))
    c.add_argument("--skip-time", type=float, default=0.0, help="drop frames before this time (ps)")
    c.add_argument("--unit", default="kJ/mol", help="PMF unit: kT, kJ/mol, kcal/mol, eV")
    c.add_argument("--no-check", action="store_true", help="do not check the window parameters against *.bias")
    c.add_argument("--output", help="write the PMF to this .csv or .json file")
    c.set_defaults(func=_analyze_colvar)

    p = subparsers.add_parser("plumed-input", help="write PLUMED inputs for umbrella windows",
                              description="Write plumed.<k>.dat per window (CVs, RESTRAINT, PRINT to COLVAR.<k>) "
                                          "and windows.dat. Values in fesurf units: Angstrom or rad, eV.")
    p.add_argument("--cv", action="append", required=True,
                   help='CV spec as JSON, e.g. \'{"type": "DISTANCE", "atoms": [0, 1]}\' (0-based atoms; repeat)')
    p.add_argument("--at", nargs="+", required=True,
                   help="window centres; for several CVs give comma-separated tuples, e.g. 1.0,2.0 1.2,2.0")
    p.add_argument("--kappa", required=True, help="force constant(s), eV/unit^2 (comma-separated per CV)")
    p.add_argument("--stride", type=int, default=10)
    p.add_argument("--units", choices=("plumed", "fesurf"), default="plumed",
                   help="numbers written in nm/kJ/mol (plumed, default) or Angstrom/eV with a UNITS line")
    p.add_argument("--out", default=".", help="output folder")
    p.set_defaults(func=_plumed_input)


def _analyze_colvar(args):
    from ..estimators import compute_pmf
    from .external import sampleset_from_colvar
    from .inputs import read_window_input, read_windows_table

    if args.windows:
        w = read_windows_table(args.windows)
        at, kappa, files = w["at"], w["kappa"], w["colvar_files"]
    else:
        at, kappa, files = [], [], []
        for path in args.inputs:
            win = read_window_input(path)
            if win["colvar_file"] is None:
                raise InputError(f"{path}: no PRINT of the restrained CVs, so no COLVAR file to read")
            at.append(win["at_written"])
            kappa.append(win["kappa_written"])
            files.append(os.path.join(os.path.dirname(path), win["colvar_file"]))
        at, kappa = np.array(at), np.array(kappa)
    ss = sampleset_from_colvar(files, at, kappa, args.temperature, cv_fields=args.cv_fields,
                               energy_unit=args.energy_unit, skip_time=args.skip_time,
                               bias_field=None if args.no_check else "auto")
    pmf = compute_pmf(ss, cv=0, bins=args.bins, range=args.range, unit=args.unit)
    if args.output:
        if args.output.endswith(".json"):
            pmf.to_json(args.output)
        else:
            pmf.to_csv(args.output)
    return 0, pmf.to_csv().rstrip("\n")


def _floats(text, what):
    try:
        return [float(x) for x in str(text).split(",")]
    except ValueError:
        raise InputError(f"{what} {text!r} is not a number or comma-separated numbers") from None


def _plumed_input(args):
    from .inputs import write_umbrella_inputs

    try:
        cvs = [json.loads(c) for c in args.cv]
    except json.JSONDecodeError as exc:
        raise InputError(f"--cv must be JSON like '{{\"type\": \"DISTANCE\", \"atoms\": [0, 1]}}' ({exc})") from None
    at = np.array([_floats(a, "--at") for a in args.at])
    kappa = np.array(_floats(args.kappa, "--kappa"))
    if at.shape[1] != len(cvs):
        raise InputError(f"--at gives {at.shape[1]} value(s) per window but there are {len(cvs)} CVs")
    if kappa.size not in (1, len(cvs)):
        raise InputError(f"--kappa gives {kappa.size} values; give one, or one per CV ({len(cvs)})")
    paths = write_umbrella_inputs(args.out, cvs, at, np.broadcast_to(kappa, at.shape), stride=args.stride,
                                  units=args.units)
    return 0, f"wrote {len(paths)} PLUMED inputs and windows.dat to {args.out}"
