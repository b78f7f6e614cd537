"""Multi-surface systems: model two-state potentials, crossing-point searches
(MECP, MECI) and spin-crossover thermodynamics.

See :mod:`fesurf.multistate.models`, :mod:`fesurf.multistate.crossing` and
:mod:`fesurf.multistate.spin_crossover`.
"""
from .models import DisplacedHarmonic, LinearVibronicCoupling, TullySimpleAvoidedCrossing

__all__ = ["LinearVibronicCoupling", "DisplacedHarmonic", "TullySimpleAvoidedCrossing"]
