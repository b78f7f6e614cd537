"""Reference oracles: GFN2-xTB/GFN1-xTB (tblite), DFT (PySCF), any ASE calculator.

Label a batch with ``oracle.label(configs, executor=..., cache=...)``; run MD
on an oracle with ``oracle.as_potential()``.

Example
-------
>>> from ase.build import molecule
>>> from fesurf.oracles import XTBOracle
>>> [lab.ok for lab in XTBOracle().label([molecule("H2O"), molecule("NH3")])]
[True, True]
"""
from .ase_oracle import ASEOracle
from .base import Label, LabelCache, Oracle, config_key, raise_on_failure, successful
from .dft import PySCFOracle
from .multistate import FCIOracle, SACASSCFOracle, SpinPolarizedXTBOracle, label_spin_states
from .potential import OraclePotential
from .xtb import XTBOracle

__all__ = ["Oracle", "Label", "LabelCache", "config_key", "successful", "raise_on_failure",
           "XTBOracle", "PySCFOracle", "ASEOracle", "OraclePotential",
           "SpinPolarizedXTBOracle", "SACASSCFOracle", "FCIOracle", "label_spin_states"]
