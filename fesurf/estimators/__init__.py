"""Free-energy estimators (layer 5): pymbar-backed MBAR/BAR/EXP, PMFs, TI quadrature, diagnostics.

Everything reads a :class:`~fesurf.sampling.SampleSet` (reduced potentials in kT)
and returns a :class:`FreeEnergy`. Diagnostics (equilibration, decorrelation,
overlap matrix, Kish ESS) are on by default and warn with :class:`EstimatorWarning`
subclasses.

Example
-------
>>> from fesurf.estimators import delta_f, compute_pmf, ti, gauss_legendre_lambdas
>>> gauss_legendre_lambdas(3).round(3).tolist()
[0.113, 0.5, 0.887]
"""
from .convergence import Convergence, convergence
from .deltaf import delta_f
from .diagnostics import (CorrelationWarning, EffectiveSampleSizeWarning, EquilibrationWarning, EstimatorWarning,
                          OverlapWarning, build_mbar, kish_ess, overlap_diagnostics, prepare)
from .free_energy import FreeEnergy
from .plots import plot_convergence, plot_free_energy, plot_overlap, plot_window_histograms
from .pmf import compute_pmf
from .ti import gauss_legendre_lambdas, integrate_ti, ti, ti_weights
from .neq import DissipationWarning, bar_from_work, jarzynski
from .reweight import (AdaptiveResult, PoorOverlapWarning, ReweightResult, adaptive_reweight, choose_frames,
                       reweight_pmf)
from .delta_learning import reweight_pmf_delta
from .quantum import (IsotopeEffect, QuantumEstimates, kinetic_isotope_effect, mass_ti_free_energy, mass_ti_nodes,
                      quantum_estimates, scaled_coordinates_free_energy)

__all__ = [
    "FreeEnergy", "delta_f", "compute_pmf", "ti", "integrate_ti", "ti_weights", "gauss_legendre_lambdas",
    "convergence", "Convergence", "prepare", "build_mbar", "overlap_diagnostics", "kish_ess",
    "EstimatorWarning", "OverlapWarning", "EffectiveSampleSizeWarning", "CorrelationWarning",
    "EquilibrationWarning", "reweight_pmf", "reweight_pmf_delta", "choose_frames", "adaptive_reweight",
    "ReweightResult", "AdaptiveResult", "PoorOverlapWarning", "jarzynski", "bar_from_work", "DissipationWarning",
    "plot_free_energy", "plot_overlap", "plot_window_histograms", "plot_convergence",
    "quantum_estimates", "QuantumEstimates", "mass_ti_nodes", "mass_ti_free_energy", "scaled_coordinates_free_energy",
    "kinetic_isotope_effect", "IsotopeEffect",
]
