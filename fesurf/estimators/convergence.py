"""Forward / reverse convergence: an estimate recomputed on growing fractions of the data.

Forward uses the first fraction f of every state's frames (time order),
reverse the last fraction f. Both should agree with the full estimate within
error bars long before f = 1; a drift in the forward curve that the reverse
curve does not show points to unequilibrated starting data.

Example
-------
>>> conv = convergence(samples, fractions=[0.25, 0.5, 1.0])        # doctest: +SKIP
>>> conv.plot(path="convergence.png")                              # doctest: +SKIP
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import InputError
from .deltaf import delta_f
from .free_energy import FreeEnergy

logger = logging.getLogger(__name__)


@dataclass
class Convergence:
    """Estimates on fractions of the data.

    ``forward[i]`` / ``reverse[i]`` are FreeEnergy results on the first / last
    ``fractions[i]`` of every state's frames.
    """

    fractions: np.ndarray
    forward: list
    reverse: list

    def values(self, direction: str = "forward") -> np.ndarray:
        """[n_fractions, ...] values (kT or the estimate's unit)."""
        return np.array([fe.values for fe in getattr(self, direction)])

    def errors(self, direction: str = "forward") -> np.ndarray:
        """[n_fractions, ...] 1σ uncertainties (NaN where the estimator gave none)."""
        return np.array([np.full(fe.values.shape, np.nan) if fe.uncertainties is None else fe.uncertainties
                         for fe in getattr(self, direction)])

    def to_dataframe(self):
        """A pandas DataFrame (scalar estimates): fraction, forward, forward_sigma, reverse, reverse_sigma."""
        import pandas as pd

        if self.forward[0].is_profile:
            raise InputError("to_dataframe works for scalar estimates; use values() for profiles")
        return pd.DataFrame({"fraction": self.fractions, "forward": self.values("forward"),
                             "forward_sigma": self.errors("forward"), "reverse": self.values("reverse"),
                             "reverse_sigma": self.errors("reverse")})

    def plot(self, ax=None, path=None):
        """Forward and reverse estimates vs fraction with 1σ bars; returns the Figure."""
        from .plots import plot_convergence

        return plot_convergence(self, ax=ax, path=path)


def convergence(samples, estimate: Callable | None = None, *, fractions=None, **kwargs) -> Convergence:
    """Recompute ``estimate(subset, **kwargs)`` on forward and reverse fractions of the data.

    Parameters
    ----------
    samples : SampleSet
    estimate : callable(SampleSet, **kwargs) -> FreeEnergy, optional
        Default :func:`~fesurf.estimators.delta_f` (MBAR). For a PMF pass
        ``compute_pmf`` with fixed ``bins`` edges or ``range`` so the grids match.
    fractions : sequence of floats in (0, 1], default 0.1, 0.2, ..., 1.0
    **kwargs
        Passed to ``estimate``. Diagnostic warnings of the partial estimates are suppressed.

    Example
    -------
    >>> conv = convergence(ss, fractions=[0.5, 1.0], method="BAR")      # doctest: +SKIP
    """
    estimate = delta_f if estimate is None else estimate
    fr = np.linspace(0.1, 1.0, 10) if fractions is None else np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or fr.size == 0 or np.any(fr <= 0) or np.any(fr > 1):
        raise InputError("fractions must be a 1D list of numbers in (0, 1]")
    si = samples.state_index
    per_state = [np.where(si == k)[0] for k in range(samples.n_states)]
    out = {"forward": [], "reverse": []}
    for f in fr:
        for direction in ("forward", "reverse"):
            parts = []
            for idx in per_state:
                m = int(np.ceil(f * idx.size))
                parts.append(idx[:m] if direction == "forward" else idx[idx.size - m:])
            sub = samples.select(np.sort(np.concatenate(parts)), positions=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fe = estimate(sub, **kwargs)
            if not isinstance(fe, FreeEnergy):
                raise InputError("estimate must return a FreeEnergy")
            out[direction].append(fe)
    return Convergence(fr, out["forward"], out["reverse"])
