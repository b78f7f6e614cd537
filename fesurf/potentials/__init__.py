"""Potentials: the contract, analytic references, combinators and the ASE bridge."""
from .base import Potential
from .contract import ContractViolation, check_potential, finite_difference_forces

__all__ = ["Potential", "check_potential", "finite_difference_forces", "ContractViolation"]
