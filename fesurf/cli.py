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

from .errors import InputError

_SUBCOMMAND_MODULES = [
    "fesurf.md.report",
    "fesurf.pipeline",
    "fesurf.plumed.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fesurf", description="Free energies at QM accuracy from ML surrogates.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
        if isinstance(result, tuple):
            result, text = result
            print(text)
        return int(result or 0)
    except InputError as exc:
        print(f"fesurf: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
