"""Oracles for several electronic states.

- :class:`SpinPolarizedXTBOracle`: GFN2-xTB (tblite) with ``spin_polarization=1.0``
  and the configuration's multiplicity (without spin polarisation GFN2 gets the
  CH2 singlet-triplet order wrong; see docs/REFERENCE.md).
- :class:`SACASSCFOracle`: PySCF state-averaged CASSCF; ``energy``/``forces`` of
  the root ``target_root``, and in ``Label.extra``: ``energies`` of all roots (eV),
  ``forces_per_state`` [n_roots, n_atoms, 3] (eV/A) and, with ``nacs=True`` (the
  default), the nonadiabatic couplings of :func:`sacasscf_couplings`.
- :class:`FCIOracle`: full CI (SA-CASSCF over all orbitals and electrons, which
  is FCI for every root), with the same ``Label.extra`` entries. Small molecules only.
- :func:`label_spin_states`: the same geometries labelled in several spin states
  (works with any oracle, e.g. ``PySCFOracle(unrestricted=True)`` for UKS).

Open-shell references: ROHF orbitals are copied into a plain ``pyscf.scf.hf.RHF``
object. ``pyscf.scf.RHF(mol)`` is not enough: for ``mol.spin != 0`` it returns an
ROHF object, whose (UHF-type) gradient object breaks PySCF's SA-CASSCF NAC code
(``einsum ... too many subscripts``).

Coupling arrays in ``Label.extra`` are ``[n_roots, n_roots, n_atoms, 3]``:

- ``nac``: derivative coupling d_ij = <Psi_i | d Psi_j / dR> in 1/A, including
  PySCF's "CSF" term (the full derivative coupling, which finite differences of
  wavefunction overlaps reproduce); antisymmetric, zero diagonal, not finite
  where E_i = E_j.
- ``nac_etf``: the same without the CSF term (PySCF ``use_etfs=True``: electron
  translation factors, momentum-conserving; the usual choice for surface
  hopping), 1/A.
- ``nac_ediff``: (E_j - E_i) d_ij in eV/A (PySCF ``mult_ediff=True``, CSF term
  included), symmetric and finite at degeneracies.
- ``nac_etf_ediff``: (E_j - E_i) times ``nac_etf``, eV/A.

The diabatic model (:mod:`fesurf.surrogates.diabatic`) uses the same convention,
d_ij = U_i^T dH U_j / (E_j - E_i). The overall sign of each coupling depends on
the arbitrary phases of the two roots.

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
from .base import Oracle, _charge_mult, as_atoms_list

log = logging.getLogger(__name__)

__all__ = ["SpinPolarizedXTBOracle", "SACASSCFOracle", "FCIOracle", "label_spin_states",
           "sacasscf_couplings"]


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


def _reference_orbitals(mol, conv_tol):
    """RHF (closed shell) or ROHF orbitals held in a plain RHF object (see the module docstring)."""
    from pyscf import scf

    if mol.spin == 0:
        mf = scf.hf.RHF(mol)
        mf.conv_tol = conv_tol
        mf.kernel()
        return mf
    rohf = scf.ROHF(mol)
    rohf.conv_tol = conv_tol
    rohf.kernel()
    mf = scf.hf.RHF(mol)  # not scf.RHF(mol): that returns an ROHF object when mol.spin != 0
    for key in ("mo_coeff", "mo_occ", "mo_energy", "e_tot", "converged"):
        setattr(mf, key, getattr(rohf, key))
    return mf


def sacasscf_couplings(mc) -> dict:
    """Nonadiabatic couplings between all roots of a converged PySCF SA-CASSCF object.

    Returns ``nac``, ``nac_etf`` (1/A) and ``nac_ediff``, ``nac_etf_ediff`` (eV/A),
    each ``[n_roots, n_roots, n_atoms, 3]``; see the module docstring for what each is.
    Index order: ``nac[i, j]`` = <Psi_i | d Psi_j/dR> (PySCF ``state=(i, j)``; checked
    against finite differences of wavefunction overlaps in tests/test_multistate_nac.py).
    Two coupled-perturbed solves per pair of roots.
    """
    e = np.asarray(mc.e_states, dtype=np.float64)
    n, natm = len(e), mc.mol.natm
    out = {k: np.zeros((n, n, natm, 3)) for k in ("nac", "nac_etf", "nac_ediff", "nac_etf_ediff")}
    nac_method = mc.nac_method()
    for i in range(n):
        for j in range(i + 1, n):
            for kind, etf in (("nac", False), ("nac_etf", True)):
                # (E_j - E_i) <i|d j/dR>, Hartree/Bohr; symmetric in i, j
                h = np.asarray(nac_method.kernel(state=(i, j), mult_ediff=True, use_etfs=etf), dtype=np.float64)
                out[kind + "_ediff"][i, j] = out[kind + "_ediff"][j, i] = h * Hartree / Bohr
                with np.errstate(divide="ignore", invalid="ignore"):
                    d = h / (e[j] - e[i]) / Bohr
                out[kind][i, j], out[kind][j, i] = d, -d
    return out


class SACASSCFOracle(Oracle):
    """PySCF SA-CASSCF(ncas, nelecas) with ``n_roots`` equally weighted roots.

    ``target_root`` selects which root is ``Label.energy``/``forces``; every root's
    energy and gradient go to ``Label.extra`` (``energies`` eV, ``forces_per_state``
    eV/A), and with ``nacs=True`` the couplings of :func:`sacasscf_couplings`
    (``nac``, ``nac_etf`` in 1/A; ``nac_ediff``, ``nac_etf_ediff`` in eV/A).
    ``spin_square`` adds PySCF's spin penalty (``fix_spin_``) for that <S^2>; ``"auto"``
    uses S(S+1) of the multiplicity. ``conv_tol`` (Hartree) is used for the SCF and
    the CASSCF energy (NACs need a tight one). :meth:`solve` returns the converged
    PySCF object for further analysis.

    Note: :class:`~fesurf.oracles.base.LabelCache` stores energy and forces only, not
    ``Label.extra``.

    >>> # SACASSCFOracle(ncas=3, nelecas=3, basis="cc-pvdz", n_roots=2).compute(h3_atoms, multiplicity=2)
    """

    def __init__(self, ncas: int, nelecas: int, basis: str = "cc-pvdz", n_roots: int = 2, target_root: int = 0,
                 spin_square: float | str | None = None, nacs: bool = True, conv_tol: float = 1e-10):
        if n_roots < 1 or not 0 <= target_root < n_roots:
            raise InputError("need n_roots >= 1 and 0 <= target_root < n_roots")
        if spin_square is not None and spin_square != "auto" and not float(spin_square) >= 0:
            raise InputError("spin_square is <S^2> = S(S+1) >= 0, 'auto' (from the multiplicity) or None")
        self.ncas = None if ncas is None else int(ncas)
        self.nelecas = None if nelecas is None else int(nelecas)
        self.basis, self.n_roots, self.target_root = basis, int(n_roots), int(target_root)
        self.spin_square, self.nacs, self.conv_tol = spin_square, bool(nacs), float(conv_tol)
        self.method = f"pyscf:SA{n_roots}-CASSCF({nelecas},{ncas})/{basis}"
        self._calc = None

    def _active_space(self, mol):
        return self.ncas, self.nelecas

    def solve(self, atoms, charge=None, multiplicity=None):
        """Run the calculation and return the converged PySCF SA-CASSCF object (atomic units)."""
        from pyscf import gto, mcscf

        q, m = _charge_mult(atoms, charge, multiplicity)
        mol = gto.M(atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.get_positions())],
                    basis=self.basis, charge=int(round(q)), spin=m - 1, unit="Angstrom", verbose=0)
        ncas, nelecas = self._active_space(mol)
        mf = _reference_orbitals(mol, self.conv_tol)
        mc = mcscf.CASSCF(mf, ncas, nelecas).state_average_([1.0 / self.n_roots] * self.n_roots)
        if self.spin_square is not None:
            s = (m - 1) / 2
            mc.fix_spin_(ss=s * (s + 1) if self.spin_square == "auto" else float(self.spin_square))
        mc.conv_tol = self.conv_tol
        mc.kernel()
        if not mc.converged:
            raise RuntimeError("SA-CASSCF did not converge")
        return mc

    def _compute(self, atoms, charge, multiplicity):
        mc = self.solve(atoms, charge, multiplicity)
        energies = np.asarray(mc.e_states) * Hartree
        grad = mc.nuc_grad_method()
        forces = np.stack([-np.asarray(grad.kernel(state=i)) * Hartree / Bohr for i in range(self.n_roots)])
        self._extra = {"energies": energies, "forces_per_state": forces}
        if self.nacs and self.n_roots > 1:
            self._extra.update(sacasscf_couplings(mc))
        return energies[self.target_root], forces[self.target_root]



class FCIOracle(SACASSCFOracle):
    """Full CI for ``n_roots`` roots (PySCF), with per-root gradients and NACs.

    Implemented as SA-CASSCF with every orbital and electron active: the energy of
    each root is then invariant to the orbitals, so the roots are exactly the FCI
    roots (checked against ``pyscf.fci.FCI`` in the tests) and PySCF's SA-CASSCF
    gradient and NAC code gives FCI gradients and couplings. ``spin_square="auto"``
    (default) keeps roots of the configuration's spin (the determinant FCI solver
    would otherwise also return other spin states with the same S_z).
    ``max_determinants`` guards against accidental large calculations.

    >>> # FCIOracle(basis="cc-pvdz", n_roots=2).compute(h3_atoms, multiplicity=2).extra["energies"]
    """

    def __init__(self, basis: str = "cc-pvdz", n_roots: int = 2, target_root: int = 0,
                 spin_square: float | str | None = "auto", nacs: bool = True, conv_tol: float = 1e-10,
                 max_determinants: int = 200_000):
        super().__init__(None, None, basis=basis, n_roots=n_roots, target_root=target_root, spin_square=spin_square,
                         nacs=nacs, conv_tol=conv_tol)
        self.max_determinants = int(max_determinants)
        self.method = f"pyscf:FCI{n_roots}/{basis}" + ("" if spin_square is None else f":ss={spin_square}")

    def _active_space(self, mol):
        from math import comb

        nmo, (na, nb) = mol.nao_nr(), mol.nelec
        ndet = comb(nmo, na) * comb(nmo, nb)
        if ndet > self.max_determinants:
            raise InputError(f"FCI with {nmo} orbitals and {na}+{nb} electrons has {ndet} determinants "
                             f"(> max_determinants={self.max_determinants}); use a smaller basis or SACASSCFOracle")
        return nmo, (na, nb)
