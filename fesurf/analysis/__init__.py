"""Analysis (layer 5): barriers and reaction free energies from PMFs, rates, rate errors.

Example
-------
>>> from fesurf.analysis import eyring_rate, rate_error_factor, barrier_precision_for_rate
>>> round(float(rate_error_factor(1.0, 298.0)), 1)     # 1 kcal/mol at 298 K
5.4
"""
from .barriers import Barrier, barrier, basin_free_energy, find_basins
from .rates import (barrier_precision_for_rate, cv_effective_mass, eyring_rate, rate_error_factor,
                    tst_rate_from_pmf)

__all__ = ["Barrier", "barrier", "basin_free_energy", "find_basins", "eyring_rate", "rate_error_factor",
           "barrier_precision_for_rate", "cv_effective_mass", "tst_rate_from_pmf"]
