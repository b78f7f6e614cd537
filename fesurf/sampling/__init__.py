"""Sampling protocols and their product, the SampleSet (layer 4).

Example
-------
>>> from fesurf.sampling import SampleSet
"""
from .sampleset import SampleSet, assert_samplesets_equal

__all__ = ["SampleSet", "assert_samplesets_equal"]
