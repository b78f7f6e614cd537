"""The ``fesurf`` command.

Subcommands are registered by the modules that own them: each module listed in
``_SUBCOMMAND_MODULES`` has ``register(subparsers)`` that adds its parser and
sets ``func`` (called with the parsed args; returns an exit code, or a
``(exit_code, text)`` pair whose text this module prints).

Example
-------
    fesurf demo
    fesurf --help
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import InputError, OracleError, SimulationError

_SUBCOMMAND_MODULES = [
    "fesurf.md.report",
    "fesurf.pipeline",
    "fesurf.plumed.cli",
    "fesurf.analysis.cli",
]


def say(text: str) -> None:
    """A progress line from a command (the stage list of a run): stdout, flushed at once."""
    print(text, flush=True)


class _Parser(argparse.ArgumentParser):
    """argparse with fesurf's error contract: one ``fesurf: error:`` line on stderr, exit status 2."""

    def error(self, message):
        sys.stderr.write(f"fesurf: error: {self.prog}: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fesurf", description="Free energies at QM accuracy from ML surrogates.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _log_to_stderr(verbose: bool) -> None:
    """Log lines reach stderr only with -v (INFO) or when they are warnings; a run's own log file
    (``fesurf.log`` in the run folder) always gets INFO, independently of this handler."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_fesurf_cli", False)]:
        root.removeHandler(old)  # main() called again in one process (tests, notebooks)
    handler = logging.StreamHandler(sys.stderr)
    handler._fesurf_cli = True
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _log_to_stderr(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
        if isinstance(result, tuple):
            result, text = result
            print(text)
        return int(result or 0)
    except (InputError, SimulationError, OracleError) as exc:
        print(f"fesurf: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2 if isinstance(exc, InputError) else 1
    except KeyboardInterrupt:
        print("fesurf: error: interrupted; rerun the same command to continue from the last checkpoint",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
