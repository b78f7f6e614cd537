"""Free energies from nonequilibrium work: Jarzynski (forward only) and BAR/Crooks (both directions).

Works in eV at ``temperature`` (K), or already reduced (kT) with ``unit="kT"``.
Results are :class:`~fesurf.estimators.FreeEnergy` scalars in kT with 1σ.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> w = rng.normal(2.0, 1.0, 4000)                       # kT; Gaussian work: dA = <W> - var/2 = 1.5
>>> round(jarzynski(w, unit="kT").value, 1)
1.5
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy.special import logsumexp

from ..errors import InputError
from ..units import kT as kT_of
from .._pymbar import pymbar
from .diagnostics import EstimatorWarning, kish_ess
from .free_energy import FreeEnergy


class DissipationWarning(EstimatorWarning):
    """The work distribution is too wide for a trustworthy exponential average."""


def _reduced(works, temperature, unit, name):
    w = np.asarray(works, dtype=float).ravel()
    if w.size < 2:
        raise InputError(f"{name} needs at least 2 works")
    if not np.isfinite(w).all():
        raise InputError(f"{name} contain NaN/inf: drop failed switches instead of passing them")
    if unit == "kT":
        return w
    if unit != "eV":
        raise InputError("unit must be 'eV' or 'kT'")
    if temperature is None:
        raise InputError("works in eV need temperature= in K")
    return w / kT_of(temperature)


def jarzynski(works, temperature: float | None = None, unit: str = "eV", n_bootstrap: int = 200,
              seed: int = 0) -> FreeEnergy:
    """dA = -kT ln <exp(-W/kT)> from forward works, with a bootstrap 1σ (kT).

    Warns when the Kish ESS of exp(-W) is below 10% of the works (the
    estimate is then dominated by rare low-work switches and biased high).
    """
    w = _reduced(works, temperature, unit, "works")
    dA = float(-(logsumexp(-w) - np.log(w.size)))
    rng = np.random.default_rng(seed)
    boot = [-(logsumexp(-w[rng.integers(0, w.size, w.size)]) - np.log(w.size)) for _ in range(n_bootstrap)]
    ess = kish_ess(np.exp(-(w - w.min())))
    if ess < 0.1 * w.size:
        warnings.warn(DissipationWarning(
            f"Jarzynski: Kish ESS {ess:.1f} of {w.size} works (work sd {w.std():.2f} kT): the estimate is "
            "dominated by a few switches and biased; switch more slowly or add reverse works for BAR"), stacklevel=2)
    return FreeEnergy(dA, float(np.std(boot, ddof=1)), unit="kT", temperature=temperature, method="Jarzynski",
                      diagnostics={"n_works": int(w.size), "kish_ess": ess, "work_mean_kT": float(w.mean()),
                                   "work_sd_kT": float(w.std(ddof=1))})


def bar_from_work(forward_works, reverse_works, temperature: float | None = None, unit: str = "eV") -> FreeEnergy:
    """Bennett acceptance ratio (Crooks) from forward (A->B) and reverse (B->A) works (pymbar).

    Returns dA = A_B - A_A in kT with pymbar's 1σ.
    """
    wf = _reduced(forward_works, temperature, unit, "forward works")
    wr = _reduced(reverse_works, temperature, unit, "reverse works")
    result = pymbar.other_estimators.bar(wf, wr, compute_uncertainty=True, method="false-position")
    dA, err = float(result["Delta_f"]), float(result["dDelta_f"])
    if not np.isfinite(dA) or (dA == 0.0 and err == 0.0):
        raise InputError("BAR failed on these works (no overlap between forward and -reverse work "
                         "distributions); switch more slowly")
    overlap = float(pymbar.other_estimators.bar_overlap(wf, wr))
    return FreeEnergy(dA, err, unit="kT", temperature=temperature, method="BAR (Crooks)",
                      diagnostics={"n_forward": int(wf.size), "n_reverse": int(wr.size), "overlap": overlap})
