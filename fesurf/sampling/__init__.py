"""Sampling protocols and their product, the SampleSet (layer 4).

Example
-------
>>> from fesurf.sampling import SampleSet
"""
from .sampleset import SampleSet

__all__ = ["SampleSet"]
