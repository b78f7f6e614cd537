"""Oracles for the execution tests (importable by worker processes: tests/ is on their sys.path)."""
import os
import time

import numpy as np

from fesurf.oracles.base import Oracle


class SleepyHarmonicOracle(Oracle):
    """E = sum |x|^2 (eV), after ``delay`` seconds. If ``kill_file`` exists when a call starts, the first
    worker to remove it dies on the spot (os._exit), as a machine failure would kill it mid-batch."""

    def __init__(self, delay: float = 0.02, kill_file: str | None = None):
        self.delay, self.kill_file = float(delay), kill_file
        self.method = "sleepy-harmonic"  # the cache key: the same with and without a kill file
        self._calc = None

    def cache_identity(self) -> str:
        return self.method

    def call_seconds(self, n_atoms: int) -> float:
        return self.delay

    def _compute(self, atoms, charge, multiplicity):
        if self.kill_file:
            try:
                os.remove(self.kill_file)
            except FileNotFoundError:
                pass
            else:
                os._exit(1)
        if self._calc is None:
            self._calc = {"pid": os.getpid(), "built": time.time()}
        time.sleep(self.delay)
        x = atoms.positions
        return float((x ** 2).sum()), -2.0 * x


def calculator_identity(oracle):
    """(pid, id of the kept calculator) after one call, as seen inside a worker."""
    from ase import Atoms

    from fesurf.execution import worker_oracle

    kept = worker_oracle(oracle)
    kept.compute(Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]]))
    return os.getpid(), id(kept._calc)
