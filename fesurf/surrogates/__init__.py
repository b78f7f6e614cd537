"""Surrogates: ACSF descriptors, Behler–Parrinello networks, SchNet-style
message passing, committees, save/load/export.

Example
-------
>>> from fesurf.surrogates import BehlerParrinello
>>> BehlerParrinello(elements=[1, 6, 8], n_members=4).n_members
4
"""
from .base import AtomisticModel
from .bp import BehlerParrinello
from .descriptors import ACSF, cosine_cutoff
from .io import export_torchscript, model_from_config, save_model
from .external import ExternalCommittee, MACEPotential, TorchSimPotential, load_mace, load_model, save_mace
from .long_range import LongRangeModel, PointChargeElectrostatics, D3Dispersion
from .schnet import Committee, SchNet
from .spin import SpinCommittee, SpinConditionedModel, SpinStatePotential

__all__ = ["AtomisticModel", "BehlerParrinello", "SchNet", "Committee", "ACSF", "cosine_cutoff",
           "save_model", "load_model", "model_from_config", "export_torchscript",
           "SpinConditionedModel", "SpinCommittee", "SpinStatePotential",
           "MACEPotential", "TorchSimPotential", "ExternalCommittee", "load_mace", "save_mace",
           "LongRangeModel", "PointChargeElectrostatics", "D3Dispersion"]
