"""Molecular dynamics on the batched State: integrators, reporters, stability tools."""
from .integrators import Bussi, Integrator, Langevin, VelocityVerlet, maxwell_boltzmann
from .ring_polymer import (CentroidPotential, PILEDynamics, RingPolymer, RingPolymerReporter, ring_polymer_state,
                           substitute_isotopes)
from .reporters import EnergyReporter, ExtXYZReporter, HDF5Reporter
from .stability import canonical_check, nve_drift, timestep_scan

__all__ = [
    "Integrator", "VelocityVerlet", "Langevin", "Bussi", "maxwell_boltzmann",
    "EnergyReporter", "ExtXYZReporter", "HDF5Reporter",
    "nve_drift", "timestep_scan", "canonical_check",
    "RingPolymer", "PILEDynamics", "RingPolymerReporter", "CentroidPotential", "ring_polymer_state",
    "substitute_isotopes",
]
