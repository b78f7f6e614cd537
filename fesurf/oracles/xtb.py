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

import numpy as np

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
    moments : bool
        Also store tblite's Mulliken charges (``Label.extra["charges"]``, [n_atoms], e) and the
        dipole moment (``Label.extra["dipole"]``, [3], e*A about the coordinate origin); a
        :class:`~fesurf.training.data.Dataset` built from such labels carries them. Labels taken
        from a cache written without ``moments`` carry none.
    mixer_damping : float or None
        tblite's SCF mixer damping (default 0.4); smaller values help SCFs that oscillate, e.g.
        between charge-transfer solutions of separated fragments.
    """

    def __init__(self, method: str = "GFN2-xTB", accuracy: float = 1.0, max_iterations: int = 250,
                 electronic_temperature: float = 300.0, spin_polarization=None, moments: bool = False,
                 mixer_damping=None):
        if method not in XTB_METHODS:
            raise InputError(f"unknown xTB method {method!r}; use one of {XTB_METHODS}")
        self.xtb_method = method
        self.settings = dict(accuracy=float(accuracy), max_iterations=int(max_iterations),
                             electronic_temperature=float(electronic_temperature))
        if spin_polarization is not None:
            self.settings["spin_polarization"] = float(spin_polarization)
        if mixer_damping is not None:
            if not 0 < float(mixer_damping) <= 1:
                raise InputError(f"mixer_damping must lie in (0, 1], got {mixer_damping}")
            self.settings["mixer_damping"] = float(mixer_damping)
        self.moments = bool(moments)
        extras = "" if self.settings == dict(accuracy=1.0, max_iterations=250, electronic_temperature=300.0) else (
            ":" + ",".join(f"{k}={v}" for k, v in sorted(self.settings.items())))
        self.method = f"tblite:{method}{extras}"
        self._calc = None

    def call_seconds(self, n_atoms: int) -> float:
        """About 1.2 ms for malonaldehyde (9 atoms, GFN2, one thread), growing ~n^2 for small molecules."""
        return 1.5e-3 * max(1.0, n_atoms / 9.0) ** 2

    def _compute(self, atoms, charge, multiplicity):
        from tblite.ase import TBLite

        if self._calc is None:
            self._calc = TBLite(method=self.xtb_method, verbosity=0, **self.settings)
        self._calc.set(charge=charge, multiplicity=multiplicity)
        # The calculator object is kept (a worker builds it once), but every SCF starts from the same guess:
        # tblite would otherwise restart from the previous call's wavefunction, and a label would then depend
        # on what that worker computed before (1e-8 eV differences; the restart saves ~10 % of a call).
        self._calc._res = None
        atoms.calc = self._calc
        energy = atoms.get_potential_energy()
        if self.moments:  # tblite's results: Mulliken charges (e), dipole (e*A)
            self._extra["charges"] = np.array(self._calc.results["charges"], dtype=np.float64)
            self._extra["dipole"] = np.array(self._calc.results["dipole"], dtype=np.float64)
        return energy, atoms.get_forces()
