"""Lambda-window sampling for thermodynamic integration (TI) and FEP/MBAR.

All lambda windows are replicas of one State driven by
``U(lambda) = (1 - lambda) U_A + lambda U_B`` (:class:`~fesurf.potentials.LambdaMix`,
one lambda per replica) in one Langevin integrator call. Every frame stores

- ``dudl[n] = beta (U_B - U_A)(x_n)`` (kT), dU/dlambda in the window it was sampled in,
- ``u_kn[k, n] = beta U(lambda_k; x_n)`` (kT) for every lambda state k (for MBAR/BAR/EXP),

and the positions. :func:`thermodynamic_integration` picks the lambda nodes
from the quadrature: Gauss–Legendre nodes (from :mod:`fesurf.estimators`) or
an even grid including 0 and 1 for trapezoid/Simpson. :func:`lambda_from_configurations`
builds the same SampleSet from user-supplied frames and energies.

Units: energies eV, temperature K, timestep fs, friction 1/fs.

Example
-------
>>> from fesurf.potentials import Harmonic
>>> from fesurf.state import State
>>> ss = thermodynamic_integration(Harmonic(k=1.0), Harmonic(k=4.0), State(positions=[[0.0, 0, 0]], atomic_numbers=[1]),
...                                n_lambdas=3, temperature=300.0, n_equilibration=50, n_production=200, stride=10)
>>> [round(p["lambda"], 4) for p in ss.state_parameters]
[0.1127, 0.5, 0.8873]
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..errors import InputError
from ..potentials import LambdaMix, Potential
from ..state import State
from ..units import KB
from ._engine import check_temperature, drive, open_samples, replicate_start
from .protocol import resolve
from .sampleset import SampleSet

log = logging.getLogger(__name__)

QUADRATURES = ("gauss-legendre", "trapezoid", "simpson")


def lambda_nodes(n_lambdas: int, quadrature: str = "gauss-legendre") -> np.ndarray:
    """Lambda values for a quadrature: Gauss–Legendre nodes on [0, 1], or ``linspace(0, 1, n)``.

    >>> lambda_nodes(3, "trapezoid").tolist()
    [0.0, 0.5, 1.0]
    """
    if quadrature not in QUADRATURES:
        raise InputError(f"unknown quadrature {quadrature!r}; use one of {', '.join(QUADRATURES)}")
    n = int(n_lambdas)
    if quadrature == "gauss-legendre":
        from ..estimators.ti import gauss_legendre_lambdas

        return gauss_legendre_lambdas(n)
    if n < 2 or (quadrature == "simpson" and n % 2 == 0):
        raise InputError(f"{quadrature} needs n_lambdas >= 2{' and odd' if quadrature == 'simpson' else ''}, got {n}")
    return np.linspace(0.0, 1.0, n)


def _check_lambdas(lambdas):
    lam = np.asarray(lambdas, dtype=np.float64).reshape(-1)
    if lam.size == 0:
        raise InputError("no lambda windows given (empty list); give at least one lambda in [0, 1]")
    if not np.all(np.isfinite(lam)) or lam.min() < 0 or lam.max() > 1:
        raise InputError(f"lambdas must lie in [0, 1], got {lam.tolist()}")
    return lam


def lambda_sampling(potential_a: Potential, potential_b: Potential, state: State, lambdas, *, temperature,
                    dynamics=None, schedule=None, storage=None, protocol: str = "lambda", on_checkpoint=None,
                    progress=None, **settings) -> SampleSet:
    """Sample every lambda window (one replica each) and record dU/dlambda and u_kn of all lambda states.

    Settings (``dynamics``, ``schedule``, ``storage`` or their flat keywords) as
    :func:`fesurf.sampling.umbrella_sampling`; ``lambdas`` [K] in [0, 1].
    State parameters hold ``{"lambda": value}``, as :func:`fesurf.estimators.ti` reads them.
    """
    dynamics, schedule, storage = resolve(dynamics=dynamics, schedule=schedule, storage=storage, **settings)
    store_positions = storage.store_positions
    if not isinstance(potential_a, Potential) or not isinstance(potential_b, Potential):
        raise InputError("potential_a and potential_b must be fesurf Potentials")
    lam = _check_lambdas(lambdas)
    k = lam.size
    temperature = check_temperature(temperature, k)
    start = replicate_start(state, k)
    n_atoms = int(start.atoms_per_system[0])
    beta = 1.0 / (KB * temperature)
    mix = LambdaMix(potential_a, potential_b, lam=torch.as_tensor(lam))
    attrs = {"protocol": protocol, **dynamics.attrs(), **schedule.attrs(),
             "potential_a": type(potential_a).__name__, "potential_b": type(potential_b).__name__,
             "energy_convention": "u_kn = beta ((1 - lambda_k) U_A + lambda_k U_B); dudl = beta (U_B - U_A)"}
    samples = open_samples(storage.path, resume=storage.resume, overwrite=storage.overwrite, create_kwargs=dict(
        n_states=k, temperature=temperature, n_atoms=n_atoms if store_positions else None, store_dudl=True,
        state_parameters=[{"lambda": float(x)} for x in lam], attrs=attrs))
    windows = np.arange(k)
    lam_col = lam[:, None]

    def frame(work, info, step):
        with torch.no_grad():
            ea = potential_a.energy(work).numpy()
            eb = potential_b.energy(work).numpy()
        out = {"state_index": windows, "u_kn": beta * ((1.0 - lam_col) * ea[None, :] + lam_col * eb[None, :]),
               "dudl": beta * (eb - ea), "step": np.full(k, step, dtype=np.int64)}
        if store_positions:
            out["positions"] = work.positions.numpy().reshape(k, n_atoms, 3).copy()
        return out

    drive(physical=mix, bias=None, start=start, temperature=temperature, dynamics=dynamics, schedule=schedule,
          samples=samples, frame_fn=frame, on_checkpoint=on_checkpoint, progress=progress)
    return samples


def thermodynamic_integration(potential_a: Potential, potential_b: Potential, state: State, *, n_lambdas: int = 11,
                              quadrature: str = "gauss-legendre", lambdas=None, **kwargs) -> SampleSet:
    """TI windows at the nodes of ``quadrature`` (or at explicit ``lambdas``); see :func:`lambda_sampling`.

    Integrate with ``fesurf.estimators.ti(samples, method=quadrature)``.
    """
    lam = lambda_nodes(n_lambdas, quadrature) if lambdas is None else lambdas
    ss = lambda_sampling(potential_a, potential_b, state, lam, protocol="ti", **kwargs)
    ss.set_attrs(quadrature=quadrature if lambdas is None else "user")
    return ss


def lambda_from_configurations(window_index, energies_a, energies_b, lambdas, *, temperature, path=None,
                               positions=None) -> SampleSet:
    """A TI/FEP SampleSet from frames the user supplies: their U_A and U_B energies (eV) and windows.

    >>> ss = lambda_from_configurations([0, 1], [0.0, 0.1], [0.02, 0.05], [0.0, 1.0], temperature=300.0)
    >>> ss.dudl.round(3).tolist()
    [0.774, -1.934]
    """
    lam = _check_lambdas(lambdas)
    k = lam.size
    temperature = check_temperature(temperature, k)
    win = np.asarray(window_index, dtype=np.int64).reshape(-1)
    ea = np.asarray(energies_a, dtype=np.float64).reshape(-1)
    eb = np.asarray(energies_b, dtype=np.float64).reshape(-1)
    if not (win.shape == ea.shape == eb.shape):
        raise InputError(f"window_index, energies_a and energies_b need one value per frame; got sizes "
                         f"{win.size}, {ea.size}, {eb.size}")
    if win.size == 0 or win.min() < 0 or win.max() >= k:
        raise InputError(f"window_index values must lie in [0, {k - 1}] (one per frame)")
    if not (np.all(np.isfinite(ea)) and np.all(np.isfinite(eb))):
        raise InputError("energies_a and energies_b must be finite (eV)")
    empty = np.where(np.bincount(win, minlength=k) == 0)[0]
    if empty.size:
        raise InputError(f"lambda window(s) {empty.tolist()} have no frames (empty window)")
    beta = 1.0 / (KB * temperature)
    order = np.argsort(win, kind="stable")
    u_kn = beta * ((1.0 - lam[:, None]) * ea[None, :] + lam[:, None] * eb[None, :])
    pos = None if positions is None else np.asarray(positions, dtype=np.float64)[order]
    return SampleSet.from_arrays(state_index=win[order], u_kn=u_kn[:, order], dudl=(beta * (eb - ea))[order],
                                 temperature=temperature, positions=pos, step=np.arange(win.size)[order],
                                 state_parameters=[{"lambda": float(x)} for x in lam],
                                 attrs={"protocol": "lambda-configurations"}, path=path)
