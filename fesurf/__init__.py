"""fesurf: free energies at QM accuracy from ML surrogates.

Layers (see docs/DESIGN.md): units/state/errors -> potentials -> surrogates, oracles
-> cv, bias, md -> sampling, training, plumed -> estimators, analysis -> pipeline, cli.
"""
from .errors import InputError, OracleError, SimulationError
from .state import State

__version__ = "0.1.0"
__all__ = ["State", "InputError", "SimulationError", "OracleError", "__version__"]
