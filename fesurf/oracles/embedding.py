"""QM/MM electrostatic embedding for the reference oracle: the core in the field of MM point charges.

:class:`PointChargeEmbedding` says which atoms of a full (solvated) configuration are the QM core and
what the fixed MM charges of the others are; :class:`EmbeddedPySCFOracle` labels the full configuration
with the core's Kohn-Sham/HF energy in the field of the MM charges within a cutoff (PySCF's
``qmmm.mm_charge``), with the forces on the core atoms *and* on the MM atoms that carry the charges.

The label's energy is ``E_QM(core; field) = E_core + E_(core electrons + nuclei)-(MM charges)``: the core
polarised by the charges and its electrostatic interaction with them. It holds neither the MM-MM energy
nor the core-MM Lennard-Jones term; those are classical and the same in ML/MM and QM/MM, so they cancel in
the ML/MM -> QM/MM correction ``E_QM/MM - E_ML/MM``. The classical core-water Coulomb of the ML/MM model
over the same selected charges is what the label replaces (:meth:`PointChargeEmbedding.mm_coulomb`), so per
frame ``E_QM/MM - E_ML/MM = E_label - E_ML(core) - mm_coulomb``. MM atoms outside the cutoff get zero force.

Charges enter by whole groups (``groups``: water molecules, residues): a group is in when any of its atoms
lies within ``cutoff`` of any core atom (minimum image in periodic cells; the group is then placed as the
image nearest the core). The selection is a hard switch, as in common QM/MM practice: energies jump when a
group crosses the cutoff; label frames, do not differentiate across that surface.

Settings that change the labels (the charges, core, cutoff, groups) are part of the method string, so the
label cache keeps embedded and gas-phase labels apart.

tblite (0.8.0) has no external point charges in its Python API (its interactions are a uniform electric
field, spin polarisation and implicit solvation), so GFN2-xTB/MM electrostatic embedding is not offered
here; :func:`embedded_oracle` says so.

Units: eV, Angstrom, e.

Example
-------
>>> from ase import Atoms
>>> w = Atoms("OH2Na", positions=[[0, 0, 0], [0.76, 0.59, 0], [-0.76, 0.59, 0], [0, -4.0, 0]])
>>> emb = PointChargeEmbedding(core=(0, 1, 2), charges=[0, 0, 0, 1.0], cutoff=8.0)
>>> lab = EmbeddedPySCFOracle(emb, xc="HF", basis="sto-3g").compute(w)
>>> lab.ok, lab.forces.shape, lab.extra["n_mm_charges"]
(True, (4, 3), 1)
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

import numpy as np
from ase import Atoms
from ase.units import Bohr, Hartree

from ..errors import InputError
from .base import Label, _charge_mult, _too_close, electron_count_problem
from .dft import PySCFOracle, SCFNotConverged


@dataclass(frozen=True)
class PointChargeEmbedding:
    """The QM core of a full configuration and the fixed MM point charges around it.

    Parameters
    ----------
    core : atom indices of the QM region (the core must be whole: no covalent cut, no link atoms).
    charges : [n_atoms] MM charge of every atom of the full configuration (e; core entries are ignored),
        e.g. :attr:`fesurf.potentials.openmm.SolvatedSystem.charges`.
    cutoff : Angstrom; a group of MM atoms enters when one of its atoms is this close to a core atom
        (None: every MM charge, molecules only).
    groups : tuple of index tuples, the MM atoms that enter together (whole molecules); atoms not in
        any group enter one by one. ``water_groups(first, n)`` builds TIP3P's O, H, H triples.

    >>> PointChargeEmbedding(core=(0,), charges=[-1.0, -0.834, 0.417, 0.417], groups=((1, 2, 3),)).n_atoms
    4
    """

    core: tuple
    charges: tuple
    cutoff: Optional[float] = 12.0
    groups: tuple = ()

    def __post_init__(self):
        core = tuple(int(i) for i in self.core)
        q = tuple(float(x) for x in np.asarray(self.charges, dtype=float).reshape(-1))
        object.__setattr__(self, "core", core)
        object.__setattr__(self, "charges", q)
        n = len(q)
        if not core or len(set(core)) != len(core) or min(core) < 0 or max(core) >= n:
            raise InputError(f"core must be distinct atom indices in 0..{n - 1} (one charge per atom of the full "
                             f"configuration), got {list(core)}")
        if not np.all(np.isfinite(q)):
            raise InputError("the MM charges must be finite numbers (e)")
        if self.cutoff is not None and not float(self.cutoff) > 0:
            raise InputError(f"cutoff must be positive (Angstrom) or None, got {self.cutoff}")
        groups = tuple(tuple(int(i) for i in g) for g in self.groups)
        flat = [i for g in groups for i in g]
        if len(set(flat)) != len(flat) or any(i in set(core) or not 0 <= i < n for i in flat):
            raise InputError("groups must be disjoint tuples of MM atom indices (not core atoms, < n_atoms)")
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "cutoff", None if self.cutoff is None else float(self.cutoff))

    @property
    def n_atoms(self) -> int:
        return len(self.charges)

    def all_groups(self) -> list:
        """Every MM atom in a group: the given groups, then the remaining MM atoms one by one."""
        seen = set(self.core) | {i for g in self.groups for i in g}
        return list(self.groups) + [(i,) for i in range(self.n_atoms) if i not in seen]

    def digest(self) -> str:
        """A short digest of the settings (part of the oracle's method string)."""
        h = hashlib.sha256(np.asarray(self.core, dtype=np.int64).tobytes())
        h.update(np.round(np.asarray(self.charges), 8).tobytes())
        h.update(repr((self.cutoff, self.groups)).encode())
        return h.hexdigest()[:12]

    def select(self, atoms: Atoms):
        """The MM charges in the field of the core: ``(indices [k], positions [k, 3] A, charges [k] e)``.

        Groups inside the cutoff, each placed as the periodic image nearest the core's first atom; atoms
        with zero charge are dropped.
        """
        if len(atoms) != self.n_atoms:
            raise InputError(f"the embedding is set up for {self.n_atoms} atoms, the configuration has {len(atoms)}")
        pos = atoms.get_positions()
        core = pos[list(self.core)]
        periodic = bool(np.any(atoms.pbc))
        cell = np.asarray(atoms.cell.array)
        if periodic and self.cutoff is None:
            raise InputError("a periodic configuration needs a finite embedding cutoff (Angstrom)")
        if periodic and not np.all(atoms.pbc):
            raise InputError("electrostatic embedding supports molecules or fully periodic cells, not slabs")
        if periodic:
            widths = np.abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
            if self.cutoff > 0.5 * widths.min():
                raise InputError(f"the embedding cutoff {self.cutoff} A exceeds half the cell width "
                                 f"({0.5 * widths.min():.2f} A); use a smaller cutoff or a larger box")
        idx, out = [], []
        for g in self.all_groups():
            p = pos[list(g)]
            if periodic:  # shift the whole group by the lattice vector that brings its first atom nearest the core
                d = p[0] - core[0]
                frac = np.linalg.solve(cell.T, d)
                p = p - np.round(frac) @ cell
            if self.cutoff is not None:
                d = p[:, None, :] - core[None, :, :]
                if periodic:
                    frac = np.linalg.solve(cell.T, d.reshape(-1, 3).T).T
                    d = (frac - np.round(frac)) @ cell
                if float(np.sqrt((d.reshape(-1, 3) ** 2).sum(-1)).min()) > self.cutoff:
                    continue
            idx.extend(g)
            out.append(p)
        if not idx:
            return np.zeros(0, dtype=int), np.zeros((0, 3)), np.zeros(0)
        idx = np.asarray(idx)
        q = np.asarray(self.charges)[idx]
        keep = q != 0.0
        return idx[keep], np.concatenate(out)[keep], q[keep]


    def mm_coulomb(self, atoms: Atoms, core_charges) -> float:
        """Classical Coulomb energy (eV) of fixed core charges with the MM charges this embedding selects.

        The term a QM/MM label replaces in a mechanically embedded ML/MM energy: per frame,
        ``E_QM/MM - E_ML/MM = E_label - E_ML(core) - mm_coulomb(atoms, q_core)`` when the ML/MM
        environment term holds the core-water Coulomb with charges ``q_core`` (e, one per core atom) and
        everything else (water-water, LJ, Coulomb beyond the cutoff) is common to both levels.
        """
        q_core = np.asarray(core_charges, dtype=float).reshape(-1)
        if q_core.shape != (len(self.core),) or not np.all(np.isfinite(q_core)):
            raise InputError(f"core_charges needs {len(self.core)} finite charges (e), one per core atom")
        _, mm_pos, mm_q = self.select(atoms)
        if not len(mm_q):
            return 0.0
        core = atoms.get_positions()[list(self.core)]
        r = np.linalg.norm(core[:, None, :] - mm_pos[None, :, :], axis=-1)
        return float(Hartree * Bohr * (q_core[:, None] * mm_q[None, :] / r).sum())


def water_groups(first: int, n_waters: int) -> tuple:
    """``((first, first+1, first+2), ...)``: the atom triples of ``n_waters`` waters stored O, H, H."""
    return tuple((first + 3 * k, first + 3 * k + 1, first + 3 * k + 2) for k in range(int(n_waters)))


class EmbeddedPySCFOracle(PySCFOracle):
    """DFT/HF of the core in the field of the MM point charges (PySCF ``qmmm.mm_charge``), as an Oracle.

    Parameters
    ----------
    embedding : :class:`PointChargeEmbedding`.
    xc, basis, unrestricted, conv_tol, max_cycle, grid_level, density_fit, auxbasis : as
        :class:`~fesurf.oracles.PySCFOracle` (the gas-phase oracle with the same settings is
        :meth:`gas_phase`).

    ``compute(atoms)`` takes the *full* configuration (core and MM atoms, ``info['charge']`` and
    ``info['multiplicity']`` of the core) and returns a :class:`~fesurf.oracles.Label` over all its atoms:
    forces on the core from the QM/MM gradient, on the included MM atoms from the field of the core's
    electrons and nuclei (``grad_hcore_mm + grad_nuc_mm``), zero elsewhere. ``Label.extra`` holds
    ``n_mm_charges`` (charges in the field) and ``spin_square``.
    """

    def __init__(self, embedding: PointChargeEmbedding, **pyscf_settings):
        if not isinstance(embedding, PointChargeEmbedding):
            raise InputError("EmbeddedPySCFOracle needs a PointChargeEmbedding(core=..., charges=..., cutoff=...)")
        super().__init__(**pyscf_settings)
        self.embedding = embedding
        self.gas_method = self.method
        cut = "all" if embedding.cutoff is None else f"{embedding.cutoff:g}"
        self.method = f"pyscf-qmmm[{self.gas_method}]:cutoff={cut}:mm={embedding.digest()}"

    def gas_phase(self) -> PySCFOracle:
        """The plain PySCF oracle with the same settings (label the isolated core with it)."""
        return PySCFOracle(xc=self.xc, basis=self.basis, unrestricted=self.unrestricted, conv_tol=self.conv_tol,
                           max_cycle=self.max_cycle, grid_level=self.grid_level, density_fit=self.density_fit,
                           auxbasis=self.auxbasis)

    def call_seconds(self, n_atoms: int) -> float:
        return super().call_seconds(len(self.embedding.core))

    def compute(self, atoms: Atoms, charge=None, multiplicity=None) -> Label:
        """Label one full configuration (the electron count is checked on the core only)."""
        q, m = _charge_mult(atoms, charge, multiplicity)
        base = dict(numbers=atoms.get_atomic_numbers().copy(), positions=atoms.get_positions().copy(),
                    charge=q, multiplicity=m, method=self.method,
                    cell=np.asarray(atoms.cell.array).copy() if np.any(atoms.pbc) else None,
                    pbc=np.asarray(atoms.pbc).copy() if np.any(atoms.pbc) else None)
        if len(atoms) != self.embedding.n_atoms:
            raise InputError(f"the embedding is set up for {self.embedding.n_atoms} atoms, the configuration has "
                             f"{len(atoms)}")
        reason = _too_close(atoms) or electron_count_problem(atoms.numbers[list(self.embedding.core)], q, m)
        if reason is not None:
            return Label(ok=False, reason=reason, **base)
        self._extra = {}
        try:
            energy, forces = self._compute(atoms.copy(), q, m)
        except InputError:
            raise
        except Exception as exc:  # a crash of the QM code is a recorded failure
            return Label(ok=False, reason=f"{type(exc).__name__}: {exc}".strip()[:500], **base)
        forces = np.asarray(forces, dtype=np.float64).reshape(len(atoms), 3)
        if not (np.isfinite(energy) and np.isfinite(forces).all()):
            return Label(ok=False, reason="non-finite energy or forces returned", **base)
        return Label(ok=True, energy=float(energy), forces=forces, extra=dict(self._extra), **base)

    def _compute(self, atoms, charge, multiplicity):
        from pyscf import qmmm

        emb = self.embedding
        core = list(emb.core)
        idx, mm_pos, mm_q = emb.select(atoms)
        mf = self._make_scf(atoms[core], charge, multiplicity)
        if len(idx):
            mf = qmmm.mm_charge(mf, mm_pos, mm_q, unit="Angstrom")
        energy = mf.kernel()
        if not mf.converged:
            raise SCFNotConverged(f"SCF not converged in {self.max_cycle} cycles")
        g = mf.nuc_grad_method()
        grad_core = g.kernel()
        forces = np.zeros((len(atoms), 3))
        forces[core] = -np.asarray(grad_core) * Hartree / Bohr
        if len(idx):
            dm = mf.make_rdm1()
            if dm.ndim == 3:  # UKS: the total density
                dm = dm[0] + dm[1]
            grad_mm = g.grad_hcore_mm(dm) + g.grad_nuc_mm()
            forces[idx] = -np.asarray(grad_mm) * Hartree / Bohr
        self._extra = {"spin_square": float(mf.spin_square()[0]) if self._unrestricted(multiplicity) else 0.0,
                       "n_mm_charges": int(len(idx))}
        return float(energy) * Hartree, forces


def embedded_oracle(kind: str, embedding: PointChargeEmbedding, **settings):
    """An electrostatically embedded reference oracle by name: ``"pyscf"`` (DFT/HF, PySCF ``qmmm``).

    ``"xtb"`` raises :class:`~fesurf.errors.InputError`: tblite's Python API (0.8.0) has no external
    point charges.
    """
    if kind == "pyscf":
        return EmbeddedPySCFOracle(embedding, **settings)
    if kind in ("xtb", "tblite"):
        raise InputError("tblite (0.8.0) has no external point-charge interaction in its Python API (only a "
                         "uniform electric field, spin polarisation and implicit solvation); use kind='pyscf' "
                         "for electrostatic embedding, or mechanical embedding with GFN2-xTB")
    raise InputError(f"unknown embedded oracle {kind!r}; use 'pyscf'")


__all__ = ["PointChargeEmbedding", "EmbeddedPySCFOracle", "embedded_oracle", "water_groups"]
