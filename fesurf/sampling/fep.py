"""FEP/MBAR runs: lambda windows recording the reduced energy of every lambda state.

The same batched lambda-window sampler as TI (:func:`fesurf.sampling.ti.lambda_sampling`)
with an even lambda grid by default; analyse with
``fesurf.estimators.delta_f(samples, "MBAR")`` (or "BAR", "EXP").
Units: eV, K, fs.

Example
-------
>>> from fesurf.potentials import Harmonic
>>> from fesurf.state import State
>>> ss = fep_sampling(Harmonic(k=1.0), Harmonic(k=2.0), State(positions=[[0.0, 0, 0]], atomic_numbers=[1]),
...                   n_lambdas=4, temperature=300.0, n_equilibration=50, n_production=100, stride=10)
>>> ss.u_kn.shape
(4, 40)
"""
from __future__ import annotations

import numpy as np

from ..state import State
from .ti import lambda_from_configurations, lambda_sampling

__all__ = ["fep_sampling", "lambda_from_configurations"]


def fep_sampling(potential_a, potential_b, state: State, *, n_lambdas: int = 11, lambdas=None, **kwargs):
    """Sample lambda windows (default ``linspace(0, 1, n_lambdas)``) and store u_kn for every lambda state.

    Keyword arguments as :func:`fesurf.sampling.ti.lambda_sampling`.
    """
    lam = np.linspace(0.0, 1.0, int(n_lambdas)) if lambdas is None else lambdas
    return lambda_sampling(potential_a, potential_b, state, lam, protocol="fep", **kwargs)
