"""Biases on collective variables: restraints, walls, metadynamics, lambda coupling.

All are :class:`~fesurf.potentials.Potential` objects; add one to a physical
potential with ``fesurf.potentials.Sum([physical, bias])``. Lambda coupling
between any two potentials for TI/FEP is :class:`~fesurf.potentials.LambdaMix`
(re-exported here).

Example
-------
>>> from fesurf.bias import RESTRAINT
>>> from fesurf.cv import DISTANCE
>>> RESTRAINT(DISTANCE([0, 1]), at=1.5, kappa=10.0).parameters_spec()["type"]
'RESTRAINT'
"""
from ..potentials.combinators import LambdaMix
from .base import CVBias, per_window
from .metad import METAD
from .restraint import LOWER_WALLS, RESTRAINT, UPPER_WALLS

__all__ = ["CVBias", "RESTRAINT", "UPPER_WALLS", "LOWER_WALLS", "METAD", "LambdaMix", "per_window"]
