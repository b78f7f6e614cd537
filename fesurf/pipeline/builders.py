"""What a config builds before any stage runs: the structure, the CV, the oracle, the executor."""
from __future__ import annotations

import logging

from ..errors import InputError

log = logging.getLogger(__name__)


def build_structure(cfg):
    """The starting structure (ase.Atoms) with charge and multiplicity set; the pair must be possible
    (electron count and multiplicity of the same parity)."""
    from ..io_checks import read_structures
    from ..oracles.base import electron_count_problem

    spec = cfg["system"]["structure"]
    if spec.startswith("builtin:"):
        from .. import data

        name = spec.split(":", 1)[1]
        if not hasattr(data, name):
            raise InputError(f"'system.structure': unknown builtin {name!r}; available: builtin:malonaldehyde")
        atoms = getattr(data, name)()
    else:
        atoms = read_structures(spec, index=-1, what="'system.structure'")
    atoms.info["charge"] = float(cfg["system"]["charge"])
    atoms.info["multiplicity"] = int(cfg["system"]["multiplicity"])
    problem = electron_count_problem(atoms.numbers, atoms.info["charge"], atoms.info["multiplicity"])
    if problem:
        raise InputError(f"'system.charge' and 'system.multiplicity': {problem}")
    return atoms


def build_cv(cfg, n_atoms: int, symbols=None):
    """The CV from ``[cv]``; atom indices are checked against the structure (error names the key).
    ``symbols`` (the structure's chemical symbols) give it a readable label, e.g. ``d(O1–H) − d(O2–H) (Å)``."""
    from ..cv import cv_from_spec, distance_difference

    c = cfg["cv"]
    if c["type"] == "distance_difference":
        key, indices = "cv.pairs", [i for p in c["pairs"] for i in p]
    else:
        key, indices = "cv.atoms", list(c["atoms"] or [])
    bad = [i for i in indices if not isinstance(i, int) or not 0 <= i < n_atoms]
    if bad:
        raise InputError(f"'{key}' holds atom index {bad[0]}, out of range for a structure of {n_atoms} atoms "
                         f"(indices are 0-based: 0..{n_atoms - 1})")
    if c["type"] == "distance_difference":
        return distance_difference(c["pairs"][0], c["pairs"][1], symbols=symbols)
    try:
        return cv_from_spec({"type": c["type"], "atoms": c["atoms"]})
    except InputError as exc:
        raise InputError(f"'cv.type' / 'cv.atoms': {exc}") from None


def build_oracle(cfg):
    """The reference oracle of ``[oracle]``."""
    from ..oracles import PySCFOracle, XTBOracle

    method = cfg["oracle"]["method"]
    if method == "DFT":
        return PySCFOracle(xc=cfg["oracle"]["xc"], basis=cfg["oracle"]["basis"])
    return XTBOracle(method=method)


def build_execution(cfg, oracle, n_atoms: int):
    """``(layout, executor, owned)`` for the run's reference calls from ``run.executor`` / ``run.workers``.

    ``"auto"``: in this process for ms-scale oracles (xTB), a local pool of ``run.workers`` for slower ones
    (DFT) when ``run.workers > 1``.
    """
    from ..execution import MS_SCALE_SECONDS, apply_threads, decide_threads, make_executor

    spec = cfg["run"]["executor"]
    workers = int(cfg["run"]["workers"])
    call = oracle.call_seconds(n_atoms)
    if spec == "auto":
        spec = "processes" if (workers > 1 and call >= MS_SCALE_SECONDS) else "serial"
    pool_workers = workers if spec == "processes" else (workers if spec not in ("serial",) else 0)
    layout = decide_threads(pool_workers if spec != "serial" else 0, threads=cfg["run"]["threads"],
                            call_seconds=call)
    apply_threads(layout.main_threads)
    executor, owned = make_executor(spec, layout)
    log.info("%s; reference calls: %s (%.3g s per call estimated)", layout.describe(),
             "in this process" if executor is None else spec, call)
    return layout, executor, owned
