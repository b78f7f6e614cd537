"""Materials studies: stored models and data, and the structures and measurements they are judged on.

Files in this folder (how each was computed: the generating script's docstring and the JSON beside it):

* ``cu_bulk.pt`` -- a Behler-Parrinello committee trained on bulk Cu only (strained, heated and
  vacancy-containing 32-atom cells labelled with ASE's EMT), ``scripts/cu_transferability.py``;
* ``cu_surface.pt`` -- the same model after spread-driven retraining with surface frames;
* ``cu_emt.npz`` -- every EMT-labelled frame of that study (``info["source"]``: bulk, or the selection round);
* ``li_si_gfn1.pt`` / ``li_si_gfn1.npz`` -- the Li-in-Si64 committee and its GFN1-xTB labels
  (``scripts/li_hop.py``); ``li_si_reference_neb.extxyz`` the reference GFN1-xTB band;
* ``si_gfn1.pt`` / ``si_gfn1.npz`` -- the Si committee and labels of ``scripts/si_surface.py``.

The helpers build the structures (periodic slabs with vacuum along z, pbc on all axes so the vesin
neighbour lists apply) and measure surface energies and the adatom hop on Cu(100) with any ASE
calculator, so a model and its reference are measured the same way.

Units: eV, Angstrom; surface energies in eV/A^2 (``J_PER_M2`` converts).

Example
-------
>>> from ase.calculators.emt import EMT
>>> a0 = lattice_constant(EMT)
>>> round(a0, 3)
3.59
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import InputError

DATA_DIR = Path(__file__).resolve().parent
MODELS = ("cu_bulk", "cu_surface", "li_si_gfn1", "si_gfn1")
#: eV/A^2 -> J/m^2
J_PER_M2 = 16.021766


def load(name: str):
    """A stored model (``name`` in :data:`MODELS`), float64, cell-aware."""
    import torch

    from ...surrogates.io import load_model

    if name not in MODELS:
        raise InputError(f"unknown stored materials model {name!r}; choose one of {MODELS}")
    path = DATA_DIR / f"{name}.pt"
    if not path.exists():
        raise InputError(f"{path} is missing; run the generating script named in fesurf/data/materials/__init__.py")
    model = load_model(path).to(torch.float64)
    model.supports_stress = True  # the pair vectors follow the cell (fesurf.surrogates.graph)
    return model


def dataset(name: str):
    """A stored :class:`~fesurf.training.data.Dataset`: ``"cu_emt"``, ``"li_si_gfn1"`` or ``"si_gfn1"``."""
    from ...training.data import Dataset

    path = DATA_DIR / f"{name}.npz"
    if not path.exists():
        raise InputError(f"no stored materials dataset {name!r} ({path})")
    return Dataset.load_npz(path)


def calculator(model):
    """An ASE calculator for a fesurf potential (float64)."""
    from ...potentials.ase_bridge import FesurfCalculator

    return FesurfCalculator(model)


def _calc(factory):
    """A calculator from a class, a factory or an instance."""
    if isinstance(factory, type) or (callable(factory) and not hasattr(factory, "get_potential_energy")):
        return factory()
    return factory


def lattice_constant(calc_factory, symbol: str = "Cu", guess: float = 3.6) -> float:
    """fcc lattice constant (A) minimising the energy of the cubic cell (golden-section search)."""
    from ase.build import bulk
    from scipy.optimize import minimize_scalar

    calc = _calc(calc_factory)

    def energy(a):
        atoms = bulk(symbol, "fcc", a=a, cubic=True)
        atoms.calc = calc
        return atoms.get_potential_energy()

    res = minimize_scalar(energy, bracket=(0.95 * guess, guess, 1.05 * guess), tol=1e-8)
    return float(res.x)


def bulk_energy(calc_factory, a: float, symbol: str = "Cu") -> float:
    """Energy per atom (eV) of the perfect fcc crystal at lattice constant ``a``."""
    from ase.build import bulk

    atoms = bulk(symbol, "fcc", a=a, cubic=True)
    atoms.calc = _calc(calc_factory)
    return float(atoms.get_potential_energy()) / len(atoms)


def slab(facet: str, a: float, layers: int = 7, size=(2, 2), vacuum: float = 7.0, symbol: str = "Cu"):
    """A symmetric fcc slab, ``facet`` ``"100"``, ``"111"`` or ``"211"`` (a step), periodic on all axes."""
    from ase.build import fcc100, fcc111, fcc211

    if facet == "100":
        atoms = fcc100(symbol, size=(*size, layers), a=a, vacuum=vacuum, orthogonal=True)
    elif facet == "111":
        atoms = fcc111(symbol, size=(*size, layers), a=a, vacuum=vacuum)
    elif facet == "211":
        atoms = fcc211(symbol, size=(3, size[1], layers // 2), a=a, vacuum=vacuum)
    else:
        raise InputError(f"facet must be '100', '111' or '211', got {facet!r}")
    atoms.pbc = True
    return atoms


def relax(atoms, calc_factory, fmax: float = 0.005, steps: int = 400):
    """A relaxed copy (ASE BFGS to ``fmax`` eV/A; constraints kept) and its energy (eV)."""
    from ase.optimize import BFGS

    work = atoms.copy()
    work.calc = _calc(calc_factory)
    BFGS(work, logfile=None, maxstep=0.1).run(fmax=fmax, steps=steps)
    return work, float(work.get_potential_energy())


def surface_energy(calc_factory, facet: str, a: float, e_bulk: float, **slab_kw):
    """``(gamma eV/A^2, relaxed slab)``: ``(E_slab - N e_bulk) / (2 A)`` of the relaxed symmetric slab."""
    atoms = slab(facet, a, **slab_kw)
    relaxed, e = relax(atoms, calc_factory)
    cell = relaxed.cell.array
    area = float(np.linalg.norm(np.cross(cell[0], cell[1])))
    return (e - len(relaxed) * e_bulk) / (2.0 * area), relaxed


def adatom_hop_end_points(a: float, calc_factory, size=(3, 3), layers: int = 4, symbol: str = "Cu"):
    """The two relaxed end points of an adatom hop between neighbouring hollow sites of fcc(100)
    (bottom two layers fixed), relaxed with ``calc_factory``."""
    from ase.build import add_adsorbate, fcc100
    from ase.constraints import FixAtoms

    base = fcc100(symbol, size=(*size, layers), a=a, vacuum=7.0, orthogonal=True)
    base.pbc = True
    d = a / np.sqrt(2.0)
    ends = []
    for shift in (0.0, 1.0):
        s = base.copy()
        add_adsorbate(s, symbol, height=1.6, position="hollow", offset=(shift, 0.0))
        s.pbc = True
        s.set_constraint(FixAtoms(mask=s.positions[:, 2] < s.positions[:, 2].min() + 0.5 * a + 0.1))
        ends.append(relax(s, calc_factory, fmax=0.01)[0])
    return ends


def hop_barrier(calc_factory_or_model, a: float, end_points=None, n_images: int = 7, fmax: float = 0.01):
    """Climbing-image NEB of the Cu(100) adatom hop: a fesurf model runs batched
    (:func:`fesurf.sampling.neb.neb`), an ASE calculator factory image by image. Returns the NEBResult."""
    from ...potentials.base import Potential
    from ...sampling.neb import NEBSettings, image_by_image_neb, neb

    settings = NEBSettings(n_images=n_images, k=0.2, climb=True, fmax=fmax, steps=600, optimizer="FIRE")
    if isinstance(calc_factory_or_model, Potential):
        model = calc_factory_or_model
        ends = end_points or adatom_hop_end_points(a, lambda: calculator(model))
        for e in ends:
            e.calc = calculator(model)
        return neb(model, ends, settings)
    ends = end_points or adatom_hop_end_points(a, calc_factory_or_model)
    return image_by_image_neb(calc_factory_or_model, ends, settings)
