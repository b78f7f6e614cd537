"""Oracles for several electronic states.

- :class:`SpinPolarizedXTBOracle`: GFN2-xTB (tblite) with ``spin_polarization=1.0``
  and the configuration's multiplicity (without spin polarisation GFN2 gets the
  CH2 singlet-triplet order wrong; see docs/REFERENCE.md).
- :class:`SACASSCFOracle`: PySCF state-averaged CASSCF; ``energy``/``forces`` of
  the root ``target_root``, and in ``Label.extra``: ``energies`` of all roots (eV),
  ``forces_per_state`` [n_roots, n_atoms, 3] (eV/A). NACs are not returned yet
  (PySCF's SA-CASSCF NAC code failed on the wrapped open-shell reference). Open-shell
  references use ROHF orbitals wrapped in an RHF object (PySCF's CASSCF
  gradient/NAC code rejects an ROHF object).
- :func:`label_spin_states`: the same geometries labelled in several spin states.

Units: eV, A.

Example
-------
>>> from ase import Atoms
>>> lab = SpinPolarizedXTBOracle().compute(Atoms("CH2", [[0, 0, 0], [1.1, 0, 0], [-0.4, 1.0, 0]]), multiplicity=3)
>>> lab.ok
True
"""
from __future__ import annotations

import logging

import numpy as np
from ase.units import Bohr, Hartree

from ..errors import InputError
from .base import Oracle, as_atoms_list

log = logging.getLogger(__name__)

__all__ = ["SpinPolarizedXTBOracle", "SACASSCFOracle", "label_spin_states"]


class SpinPolarizedXTBOracle(Oracle):
    """GFN2-xTB with spin polarisation; the multiplicity comes from each configuration/label call."""

    def __init__(self, method: str = "GFN2-xTB", spin_polarization: float = 1.0, accuracy: float = 1.0):
        self.xtb_method, self.spin_polarization, self.accuracy = method, float(spin_polarization), float(accuracy)
        self.method = f"tblite:{method}:spinpol={self.spin_polarization}"
        self._calc = None

    def _compute(self, atoms, charge, multiplicity):
        from tblite.ase import TBLite

        atoms.calc = TBLite(method=self.xtb_method, charge=charge, multiplicity=multiplicity,
                            spin_polarization=self.spin_polarization, accuracy=self.accuracy, verbosity=0)
        return atoms.get_potential_energy(), atoms.get_forces()


def label_spin_states(oracle: Oracle, configs, multiplicities=(1, 3), **kwargs) -> dict:
    """Label every configuration in every multiplicity: ``{multiplicity: [Label, ...]}``.

    Keyword arguments (``executor=``, ``cache=``...) go to :meth:`Oracle.label`.
    """
    atoms = as_atoms_list(configs)
    if not multiplicities:
        raise InputError("give at least one multiplicity (2S+1)")
    return {int(m): oracle.label(atoms, multiplicity=int(m), **kwargs) for m in multiplicities}


class SACASSCFOracle(Oracle):
    """PySCF SA-CASSCF(ncas, nelecas) with ``n_roots`` equally weighted roots.

    ``target_root`` selects which root is ``Label.energy``/``forces``; every root's
    energy and gradient go to ``Label.extra``.

    >>> # SACASSCFOracle(ncas=3, nelecas=3, basis="cc-pvdz", n_roots=2).compute(h3_atoms, multiplicity=2)
    """

    def __init__(self, ncas: int, nelecas: int, basis: str = "cc-pvdz", n_roots: int = 2, target_root: int = 0,
                 spin_square: float | None = None):
        if n_roots < 1 or not 0 <= target_root < n_roots:
            raise InputError("need n_roots >= 1 and 0 <= target_root < n_roots")
        self.ncas, self.nelecas, self.basis = int(ncas), int(nelecas), basis
        self.n_roots, self.target_root, self.spin_square = int(n_roots), int(target_root), spin_square
        self.method = f"pyscf:SA{n_roots}-CASSCF({nelecas},{ncas})/{basis}"
        self._calc = None

    def _compute(self, atoms, charge, multiplicity):
        from pyscf import gto, mcscf, scf

        mol = gto.M(atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.get_positions())],
                    basis=self.basis, charge=int(round(charge)), spin=int(multiplicity) - 1, unit="Angstrom", verbose=0)
        if mol.spin:
            rohf = scf.ROHF(mol).run()
            mf = scf.RHF(mol)
            mf.__dict__.update(rohf.__dict__)  # PySCF's CASSCF gradients/NACs reject an ROHF object
        else:
            mf = scf.RHF(mol).run()
        mc = mcscf.CASSCF(mf, self.ncas, self.nelecas).state_average_([1.0 / self.n_roots] * self.n_roots)
        if self.spin_square is not None:
            mc.fix_spin_(ss=self.spin_square)
        mc.kernel()
        if not mc.converged:
            raise RuntimeError("SA-CASSCF did not converge")
        energies = np.asarray(mc.e_states) * Hartree
        grad = mc.nuc_grad_method()
        forces = np.stack([-np.asarray(grad.kernel(state=i)) * Hartree / Bohr for i in range(self.n_roots)])
        self._extra = {"energies": energies, "forces_per_state": forces}
        return energies[self.target_root], forces[self.target_root]

    def compute(self, atoms, charge=None, multiplicity=None):
        """As :meth:`Oracle.compute`, with all roots' data in ``Label.extra``."""
        self._extra = {}
        lab = super().compute(atoms, charge, multiplicity)
        if lab.ok:
            lab.extra.update(self._extra)
        return lab
