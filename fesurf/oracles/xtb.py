"""GFN2-xTB / GFN1-xTB through tblite: the embedded default oracle.

Example
-------
>>> from ase.build import molecule
>>> from fesurf.oracles import XTBOracle
>>> lab = XTBOracle(method="GFN1-xTB").compute(molecule("H2O"))
>>> lab.ok, lab.method
(True, 'tblite:GFN1-xTB')
"""
from __future__ import annotations

from ..errors import InputError
from .base import Oracle

XTB_METHODS = ("GFN2-xTB", "GFN1-xTB", "IPEA1-xTB")


class XTBOracle(Oracle):
    """Tight-binding oracle (tblite).

    Parameters
    ----------
    method : "GFN2-xTB" (default), "GFN1-xTB" or "IPEA1-xTB"
    accuracy : float
        tblite numerical accuracy (smaller is tighter).
    max_iterations : int
        SCF iteration limit; a non-converged SCF is a recorded failure.
    electronic_temperature : float
        K.
    spin_polarization : float or None
        Spin-polarization scaling (1.0 needed for open-shell state ordering).
    """

    def __init__(self, method: str = "GFN2-xTB", accuracy: float = 1.0, max_iterations: int = 250,
                 electronic_temperature: float = 300.0, spin_polarization=None):
        if method not in XTB_METHODS:
            raise InputError(f"unknown xTB method {method!r}; use one of {XTB_METHODS}")
        self.xtb_method = method
        self.settings = dict(accuracy=float(accuracy), max_iterations=int(max_iterations),
                             electronic_temperature=float(electronic_temperature))
        if spin_polarization is not None:
            self.settings["spin_polarization"] = float(spin_polarization)
        extras = "" if self.settings == dict(accuracy=1.0, max_iterations=250, electronic_temperature=300.0) else (
            ":" + ",".join(f"{k}={v}" for k, v in sorted(self.settings.items())))
        self.method = f"tblite:{method}{extras}"
        self._calc = None

    def _compute(self, atoms, charge, multiplicity):
        from tblite.ase import TBLite

        if self._calc is None:
            self._calc = TBLite(method=self.xtb_method, verbosity=0, **self.settings)
        self._calc.set(charge=charge, multiplicity=multiplicity)
        atoms.calc = self._calc
        energy = atoms.get_potential_energy()
        return energy, atoms.get_forces()
