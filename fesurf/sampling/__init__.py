"""Sampling protocols and their product, the SampleSet (layer 4).

Example
-------
>>> from fesurf.sampling import SampleSet
"""
from .sampleset import SampleSet

__all__ = ["SampleSet"]

# sampling protocols (batched engine)
from .fep import fep_sampling  # noqa: E402
from .metadynamics import metad_log_weights, metadynamics, metadynamics_from_configurations  # noqa: E402
from .replica_exchange import NeighbourExchange, hamiltonian_replica_exchange  # noqa: E402
from .ti import lambda_from_configurations, lambda_nodes, lambda_sampling, thermodynamic_integration  # noqa: E402
from .umbrella import check_window_overlap, umbrella_from_configurations, umbrella_sampling  # noqa: E402
from .interop import export_trajectory, from_alchemlyb, to_alchemlyb  # noqa: E402
from .hybrid_mc import HybridMCDynamics, hybrid_mc_sampling  # noqa: E402
from .pimd import (bead_labeller, isotope_mass_ti, isotope_scaled_coordinates, quantum_umbrella_sampling,  # noqa: E402
                   reweight_quantum_pmf)

__all__ += [
    "umbrella_sampling", "umbrella_from_configurations", "check_window_overlap",
    "hamiltonian_replica_exchange", "NeighbourExchange",
    "thermodynamic_integration", "lambda_sampling", "lambda_nodes", "lambda_from_configurations", "fep_sampling",
    "metadynamics", "metad_log_weights", "metadynamics_from_configurations",
    "to_alchemlyb", "from_alchemlyb", "export_trajectory",
    "hybrid_mc_sampling", "HybridMCDynamics",
    "quantum_umbrella_sampling", "bead_labeller", "reweight_quantum_pmf", "isotope_mass_ti", "isotope_scaled_coordinates",
]
