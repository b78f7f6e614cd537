"""Free-energy differences between states: MBAR, BAR and EXP (pymbar-backed).

All methods read reduced potentials ``u_kn`` (kT) from a SampleSet, run the
default diagnostics (equilibration, decorrelation, overlap matrix, Kish ESS)
and return a :class:`~fesurf.estimators.FreeEnergy` in kT unless ``unit`` says otherwise.

Example
-------
>>> import numpy as np
>>> from fesurf.sampling import SampleSet
>>> rng = np.random.default_rng(1)
>>> xa, xb = rng.normal(0, 1, 2000), rng.normal(0, 0.5, 2000)   # k_A = 1, k_B = 4 (kT units)
>>> x = np.concatenate([xa, xb])
>>> ss = SampleSet.from_arrays(state_index=np.repeat([0, 1], 2000),
...                            u_kn=np.stack([0.5 * x**2, 2.0 * x**2]), temperature=300.0)
>>> fe = delta_f(ss, method="MBAR")           # exact: 0.5 ln 4 = 0.693 kT
>>> bool(abs(fe.value - 0.5 * np.log(4)) < 4 * fe.error)
True
"""
from __future__ import annotations

import logging

import numpy as np

from .._pymbar import pymbar
from ..errors import InputError
from .diagnostics import build_mbar, overlap_diagnostics, prepare, pymbar_errors
from .free_energy import FreeEnergy

logger = logging.getLogger(__name__)

METHODS = ("MBAR", "BAR", "EXP")


def _state(samples, k, name):
    K = samples.n_states
    if not -K <= int(k) < K:
        raise InputError(f"{name}={k} is out of range for {K} states")
    return int(k) % K


def _path(samples, i, j, N_k, need_both: bool):
    """States visited from i to j: i, the sampled states strictly between, j."""
    lo, hi = sorted((i, j))
    between = [k for k in range(lo + 1, hi) if N_k[k] > 0]
    path = [lo] + between + [hi]
    if i > j:
        path = path[::-1]
    for a, b in zip(path[:-1], path[1:]):
        if N_k[a] == 0 or (need_both and N_k[b] == 0):
            raise InputError(
                f"states {a} -> {b} on the path {i} -> {j} need frames sampled in "
                f"{'both states' if need_both else f'state {a}'} for this estimator; use MBAR instead")
    return path


def delta_f(samples, method: str = "MBAR", *, from_state: int = 0, to_state: int = -1,
            equilibrate: bool = True, decorrelate: bool = True, observable=None, unit: str = "kT",
            overlap_threshold: float | None = None, warn: bool = True) -> FreeEnergy:
    """ΔA = A(to_state) - A(from_state) from a SampleSet, with a 1σ uncertainty.

    Parameters
    ----------
    samples : SampleSet
        ``u_kn`` of every frame in every state (kT); one temperature.
    method : {"MBAR", "BAR", "EXP"}
        MBAR uses all states. BAR chains pairwise BAR over the sampled states
        from ``from_state`` to ``to_state`` (errors added in quadrature). EXP
        chains forward exponential averaging (Zwanzig) along the same path; the
        last state may be unsampled (a pure FEP target).
    from_state, to_state : int
        State indices (negative counts from the end).
    equilibrate, decorrelate : bool
        Drop the equilibration transient and subsample to uncorrelated frames
        per state (``pymbar.timeseries``); on by default.
    observable : [N] array, optional
        Time series used for equilibration/decorrelation (default: own-state u).
    unit : str
        Unit of the returned values (kT, kJ/mol, kcal/mol, eV, meV).
    overlap_threshold : float, optional
        Neighbour overlap below which an :class:`OverlapWarning` is raised (default 0.03).
    warn : bool
        Emit diagnostic warnings (default True).

    Returns
    -------
    FreeEnergy
        Scalar ΔA; ``diagnostics`` holds the overlap matrix, Kish ESS, N_k used,
        statistical inefficiencies, and for MBAR all ``f_k`` with ``df_k``.

    Example
    -------
    >>> fe = delta_f(ss, method="BAR")            # doctest: +SKIP
    >>> print(fe.to("kcal/mol"))                   # doctest: +SKIP
    """
    method = method.upper()
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    if samples.n_states < 2:
        raise InputError(f"a free-energy difference needs at least two states; this SampleSet has "
                         f"{samples.n_states} (one state: an unbiased run, use compute_pmf for its profile)")
    i, j = _state(samples, from_state, "from_state"), _state(samples, to_state, "to_state")
    prep = prepare(samples, equilibrate=equilibrate, decorrelate=decorrelate, observable=observable)
    T = samples.temperature
    u = samples.u_kn[:, prep.frames]
    mbar = build_mbar(u, prep.N_k)
    kw = {} if overlap_threshold is None else {"threshold": overlap_threshold}
    diag = overlap_diagnostics(mbar, warn=warn, **kw)
    diag.update(prep.info())
    diag.update(from_state=i, to_state=j)
    if i == j:
        return FreeEnergy(0.0, 0.0, unit="kT", temperature=T, method=method, diagnostics=diag).to(unit)

    if method == "MBAR":
        with pymbar_errors("MBAR free-energy differences"):
            res = mbar.compute_free_energy_differences()
        value, err = res["Delta_f"][i, j], res["dDelta_f"][i, j]
        diag["f_k"] = res["Delta_f"][0]
        diag["df_k"] = res["dDelta_f"][0]
    else:
        starts = np.concatenate([[0], np.cumsum(prep.N_k)])
        own = {k: u[:, starts[k]:starts[k + 1]] for k in range(samples.n_states)}
        path = _path(samples, i, j, prep.N_k, need_both=(method == "BAR"))
        value, var, steps = 0.0, 0.0, []
        for a, b in zip(path[:-1], path[1:]):
            w_f = own[a][b] - own[a][a]
            with pymbar_errors(f"{method} between states {a} and {b}"):
                if method == "BAR":
                    w_r = own[b][a] - own[b][b]
                    r = pymbar.bar(w_f, w_r)
                else:
                    r = pymbar.exp(w_f)
            value += r["Delta_f"]
            var += r["dDelta_f"] ** 2
            steps.append({"from": a, "to": b, "Delta_f": r["Delta_f"], "dDelta_f": r["dDelta_f"]})
        err = np.sqrt(var)
        diag["steps"] = steps
    logger.info("%s dA(%d->%d) = %.4f +- %.4f kT", method, i, j, value, err)
    return FreeEnergy(float(value), float(err), unit="kT", temperature=T, method=method,
                      diagnostics=diag).to(unit)
