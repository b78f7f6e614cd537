"""Potentials: the contract, analytic references, combinators and the ASE bridge."""
from .analytic import DoubleWell1D, DoubleWell2D, Harmonic, LennardJones, Morse, MullerBrown
from .ase_bridge import ASEPotential, FesurfCalculator
from .base import Potential
from .combinators import LambdaMix, Scale, Sum
from .contract import ContractViolation, check_potential, finite_difference_forces, finite_difference_stress

__all__ = [
    "Potential", "check_potential", "finite_difference_forces", "finite_difference_stress", "ContractViolation",
    "Harmonic", "DoubleWell1D", "DoubleWell2D", "MullerBrown", "Morse", "LennardJones",
    "Sum", "Scale", "LambdaMix", "FesurfCalculator", "ASEPotential",
]
