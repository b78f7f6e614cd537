"""Command-line subcommands for run folders and metadynamics output.

* ``fesurf report RUN_DIR`` — summary and diagnostic plots of a finished or partial run;
* ``fesurf export RUN_DIR --format extxyz|traj`` — the stored frames with window, CV values and energies;
* ``fesurf analyze hills HILLS`` — ``sum_hills`` of a PLUMED metadynamics run and, with ``--colvar``, the
  reweighted FES along any printed CV (added to the ``analyze`` command of :mod:`fesurf.plumed.cli`).

Example
-------
    fesurf report runs/malonaldehyde
    fesurf export runs/malonaldehyde --format extxyz --every 10
    fesurf analyze hills HILLS --temperature 300 --colvar COLVAR --cv-field d1

>>> import argparse
>>> p = argparse.ArgumentParser(); sub = p.add_subparsers(dest="command")
>>> register(sub)
>>> p.parse_args(["export", "run", "--format", "traj"]).format
'traj'
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError

__all__ = ["register"]

#: examples for subcommands registered by other modules that carry none of their own (shown in --help)
OTHER_EXAMPLES = {
    "plumed-input": "example:\n  fesurf plumed-input --cv '{\"type\": \"DISTANCE\", \"atoms\": [0, 1]}' "
                    "--at 1.0 1.2 1.4 --kappa 5.0 --out windows/",
    ("analyze", "colvar"): "example:\n  fesurf analyze colvar --windows windows.dat --temperature 300 --bins 40 "
                           "--output pmf.csv",
    "analyze": "example:\n  fesurf analyze colvar --inputs plumed.*.dat --temperature 300\n"
               "  fesurf analyze hills HILLS --temperature 300 --colvar COLVAR --cv-field d1",
}


def _subparsers_of(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _add_example(parser, text):
    if parser is not None and not parser.epilog:
        parser.epilog = text
        parser.formatter_class = argparse.RawDescriptionHelpFormatter


def register(subparsers) -> None:
    """Add ``report``, ``export`` and ``analyze hills`` (after :mod:`fesurf.plumed.cli` registered ``analyze``)."""
    raw = argparse.RawDescriptionHelpFormatter
    r = subparsers.add_parser(
        "report", help="summary and diagnostic plots of a run folder (finished or partial)", formatter_class=raw,
        description="Summarise a run folder and save overlap.png, histograms.png, convergence.png, "
                    "reweight_bins.png/.csv and report.json into it. Works on a run still sampling: it reads "
                    "the committed frames of samples.h5.",
        epilog="example:\n  fesurf report runs/malonaldehyde\n  fesurf report runs/malonaldehyde --no-plots")
    r.add_argument("run_dir", help="the run folder (run.output of the config)")
    r.add_argument("--bins", type=int, help="PMF bins (default: the grid of pmf_surrogate.csv, else 30)")
    r.add_argument("--unit", help="energy unit of the plots (default: results.json's, else kcal/mol)")
    r.add_argument("--no-plots", action="store_true", help="print the summary only")
    r.set_defaults(func=_report)

    e = subparsers.add_parser(
        "export", help="write the stored frames as an extended-XYZ or ASE .traj trajectory", formatter_class=raw,
        description="Write the frames of RUN_DIR/samples.h5 with their window, step, CV values (cv0, cv1...), "
                    "surrogate energy (eV) and bias (eV), readable by ase.io.read, ASE's GUI, OVITO and VMD. "
                    "Atomic numbers come from samples.h5, the run's label store, or --structure.",
        epilog="example:\n  fesurf export runs/malonaldehyde --format extxyz --every 10\n"
               "  fesurf export runs/malonaldehyde --format traj --windows 7 8 --output ts_region.traj")
    e.add_argument("run_dir", help="the run folder (or a samples.h5 file)")
    e.add_argument("--format", choices=("extxyz", "traj"), default="extxyz")
    e.add_argument("--output", help="output file (default: RUN_DIR/frames.extxyz or frames.traj)")
    e.add_argument("--every", type=int, default=1, help="keep every N-th frame")
    e.add_argument("--windows", type=int, nargs="+", help="only frames of these windows (0-based)")
    e.add_argument("--structure", help="structure file (or builtin:malonaldehyde) giving the atomic numbers")
    e.set_defaults(func=_export)

    analyze = subparsers.choices.get("analyze")
    if analyze is None:
        analyze = subparsers.add_parser("analyze", help="analyse runs made elsewhere (PLUMED files)")
        analyze.add_subparsers(dest="analyze_command", metavar="WHAT")
        analyze.set_defaults(func=lambda args: (analyze.print_help(), 2)[1])
    asub = _subparsers_of(analyze)
    h = asub.add_parser(
        "hills", help="sum_hills of a PLUMED metadynamics run, and its reweighted FES", formatter_class=raw,
        description="FES from a PLUMED HILLS file like `plumed sum_hills` (minimum at zero); with --colvar, the "
                    "FES along --cv-field reweighted with V(s,t) - c(t) (Tiwary-Parrinello), with block errors. "
                    "Numbers stay in the units of the files (PLUMED default: nm or rad, kJ/mol).",
        epilog="example:\n  fesurf analyze hills HILLS --temperature 300 --bins 200 --output fes.csv\n"
               "  fesurf analyze hills HILLS --temperature 300 --colvar COLVAR --cv-field d1 --bins 50")
    h.add_argument("hills", help="the HILLS file")
    h.add_argument("--temperature", type=float, required=True, help="K")
    h.add_argument("--colvar", help="COLVAR file of the same run: reweight its frames")
    h.add_argument("--cv-field", help="COLVAR field to reweight along (default: the first METAD CV)")
    h.add_argument("--bias-field", default="auto",
                   help="COLVAR field of the METAD bias (default: the single *.bias field; 'none': from the hills)")
    h.add_argument("--energy-unit", default="kJ/mol", help="unit of the HILLS heights (default kJ/mol)")
    h.add_argument("--bins", type=int, default=None, help="grid points (sum_hills: 200) or histogram bins (50)")
    h.add_argument("--range", type=float, nargs=2, metavar=("LO", "HI"))
    h.add_argument("--skip-time", type=float, default=0.0, help="reweighting: drop frames before this time (ps)")
    h.add_argument("--unit", help="FES unit: kT, kJ/mol, kcal/mol, eV (default: the file unit)")
    h.add_argument("--output", help="write the FES to this .csv or .json file")
    h.set_defaults(func=_hills)

    for name, text in OTHER_EXAMPLES.items():
        if isinstance(name, tuple):
            parent = subparsers.choices.get(name[0])
            sp = _subparsers_of(parent) if parent is not None else None
            _add_example(sp.choices.get(name[1]) if sp is not None else None, text)
        else:
            _add_example(subparsers.choices.get(name), text)


# ---------------------------------------------------------------------------------------- commands
def _report(args):
    from .report import ReportSettings, report_run_folder

    settings = ReportSettings(unit=args.unit) if args.unit else None
    if args.unit:
        from ..units import ENERGY_UNITS

        if args.unit not in ENERGY_UNITS:
            raise InputError(f"--unit {args.unit!r}: use one of {', '.join(ENERGY_UNITS)}")
    return 0, report_run_folder(args.run_dir, settings=settings, bins=args.bins, plots=not args.no_plots)


def _structure_numbers(spec):
    from ..io_checks import read_structures

    if spec.startswith("builtin:"):
        from .. import data

        name = spec.split(":", 1)[1]
        if not hasattr(data, name):
            raise InputError(f"--structure: unknown builtin {name!r}; available: builtin:malonaldehyde")
        return getattr(data, name)().numbers
    return read_structures(spec, index=-1, what="--structure").numbers


def _export(args):
    from ..sampling import SampleSet
    from ..sampling.interop import export_trajectory, run_atomic_numbers

    src = Path(args.run_dir)
    run_dir, path = (src.parent, src) if src.suffix == ".h5" else (src, src / "samples.h5")
    if not path.exists():
        raise InputError(f"no samples.h5 in {run_dir}: the run has not sampled yet (or give the .h5 file)")
    out = Path(args.output) if args.output else run_dir / f"frames.{args.format}"
    samples = SampleSet.open(path)
    try:
        numbers = _structure_numbers(args.structure) if args.structure else run_atomic_numbers(run_dir, samples)
        if numbers is None:
            raise InputError(f"the atomic numbers of {path} are unknown (no stored attrs and no label store in "
                             f"{run_dir}); pass --structure FILE (e.g. the config's system.structure)")
        n = export_trajectory(samples, out, numbers, format=args.format, every=args.every, windows=args.windows)
        names = ", ".join(f"cv{i} = {name}" for i, name in enumerate(samples.cv_names))
    finally:
        samples.close()
    return 0, f"wrote {n} frames to {out} ({args.format}; info: window, step, {names or 'no CVs'}, bias_eV, u_ref_kT)"


def _hills(args):
    from ..plumed.fes import reweight_metad, sum_hills
    from ..plumed.files import read_hills

    hills = read_hills(args.hills)
    if args.colvar:
        field = args.cv_field or hills.cv_names[0]
        bias = None if str(args.bias_field).lower() == "none" else args.bias_field
        fes = reweight_metad(args.colvar, hills, args.temperature, field, bias_field=bias, bins=args.bins or 50,
                             range=args.range, skip_time=args.skip_time, energy_unit=args.energy_unit)
    else:
        if args.cv_field:
            raise InputError("--cv-field needs --colvar (sum_hills integrates the METAD CVs of the HILLS file)")
        fes = sum_hills(hills, bins=args.bins or 200, range=args.range, energy_unit=args.energy_unit,
                        temperature=args.temperature)
    if fes.temperature is None:
        fes.temperature = float(args.temperature)
    if args.unit:
        fes = fes.to(args.unit)
    if args.output:
        if args.output.endswith(".json"):
            fes.to_json(args.output)
        else:
            fes.to_csv(args.output)
    return 0, fes.to_csv().rstrip("\n")
