"""Stored GFN2-xTB data and models for the long-range surrogates (``scripts/make_long_range_data.py``).

Files in this folder (how each was computed: the script's docstring and ``generation.json``):

* ``cl_ch3cl_gfn2.npz`` -- Cl- + CH3Cl frames (charge -1; atoms C, Cl, H, H, H, Cl'), energies, forces,
  Mulliken charges and dipoles; ``info["split"]``.
* ``cl_ch3cl_curve_gfn2.npz`` -- the held-out binding curve, Cl' behind C on the C3 axis of the
  GFN2-optimised CH3Cl, d(Cl'-C) 2-15 A (``info["distance"]``).
* ``nacl_dissociation_gfn2.npz`` -- neutral Na-Cl 2-10 A.
* ``ag3_gfn2.npz`` -- Ag3 geometries, each as Ag3+ and Ag3- (``info["geometry"]``, ``info["split"]``).
* ``<system>_local.pt`` / ``<system>_hybrid.pt`` / ``cl_ch3cl_hybrid_exclusion.pt`` -- trained local
  (Behler-Parrinello) and hybrid (:class:`~fesurf.surrogates.long_range.LongRangeModel`) committees;
  ``metrics.json`` their test errors.

Example
-------
>>> from fesurf.data import long_range
>>> ds = long_range.dataset("cl_ch3cl_curve")
>>> ds.atom_charges is not None, int(ds.numbers[5])
(True, 17)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms

from ...errors import InputError

DATA_DIR = Path(__file__).resolve().parent
DATASETS = ("cl_ch3cl", "cl_ch3cl_curve", "nacl_dissociation", "ag3")
MODELS = ("local", "hybrid", "hybrid_exclusion")


def dataset(name: str):
    """A stored :class:`~fesurf.training.data.Dataset` (``name`` one of :data:`DATASETS`)."""
    from ...training.data import Dataset

    if name not in DATASETS:
        raise InputError(f"unknown long-range dataset {name!r}; choose one of {DATASETS}")
    path = DATA_DIR / f"{name}_gfn2.npz"
    if not path.exists():
        raise InputError(f"{path} is missing; run scripts/make_long_range_data.py --stage generate")
    return Dataset.load_npz(path)


def load(kind: str, system: str = "cl_ch3cl"):
    """A stored trained model: ``kind`` in :data:`MODELS`, ``system`` ``"cl_ch3cl"`` or ``"ag3"``."""
    from ...surrogates.io import load_model

    if kind not in MODELS or system not in ("cl_ch3cl", "ag3"):
        raise InputError(f"unknown stored model {system}_{kind}; kinds {MODELS}, systems cl_ch3cl, ag3")
    path = DATA_DIR / f"{system}_{kind}.pt"
    if not path.exists():
        raise InputError(f"{path} is missing; run scripts/make_long_range_data.py --stage train")
    return load_model(path)


def ch3cl_minimum() -> Atoms:
    """The GFN2-xTB-optimised CH3Cl of the stored binding curve: C at the origin, C-Cl along +z."""
    ds = dataset("cl_ch3cl_curve")
    a, b = int(ds.offsets[0]), int(ds.offsets[1])
    return Atoms(numbers=ds.numbers[a:b - 1].numpy(), positions=ds.positions[a:b - 1].numpy())


def complex_at(mol: Atoms, d: float, direction=(0.0, 0.0, -1.0)) -> Atoms:
    """CH3Cl + Cl- with Cl' at ``d`` (Angstrom) from C (atom 0) along ``direction``; charge -1.

    >>> m = Atoms("CCl", positions=[[0, 0, 0], [0, 0, 1.8]])
    >>> complex_at(m, 3.0).positions[-1].tolist()
    [0.0, 0.0, -3.0]
    """
    direction = np.asarray(direction, float) / np.linalg.norm(direction)
    a = Atoms(numbers=list(mol.numbers) + [17], positions=np.vstack([mol.positions, mol.positions[0] + direction * d]))
    a.info.update(charge=-1, multiplicity=1)
    return a


def separated_energy() -> float:
    """GFN2-xTB energy (eV) of CH3Cl (at the curve's geometry) plus a free Cl-: the curve's zero."""
    import json

    return float(json.loads((DATA_DIR / "cl_ch3cl_fragments.json").read_text())["energy_separated_eV"])


#: where a model's own zero of the binding curve is taken: Cl' this far (Angstrom) from C
FAR_DISTANCE = 1000.0


def binding_curve(model=None) -> dict:
    """The stored Cl- ... CH3Cl binding curve, relative to the separated fragments.

    Returns ``distance`` [K] (A), ``reference`` [K] (GFN2-xTB, eV), ``reference_force`` [K] (eV/A,
    force on Cl' along the C -> Cl' direction; negative = attraction) and, with a ``model``, the
    model's ``energy`` and ``force`` on the same geometries, its zero taken at
    :data:`FAR_DISTANCE` (so a model's own error on the isolated fragments cancels).
    """
    import torch

    from ...state import State

    ds = dataset("cl_ch3cl_curve")
    d = np.array([i["distance"] for i in ds.info])
    state, energy, forces = ds.batch(torch.arange(len(ds)))
    axis = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64)
    cl = ds.offsets[1:] - 1  # Cl' is the last atom of each frame
    out = {"distance": d, "reference": energy.numpy() - separated_energy(),
           "reference_force": (forces[cl] @ axis).numpy()}
    if model is not None:
        e, f = model.energy_and_forces(state)
        pos = state.positions[:6].clone()
        pos[5] = axis * FAR_DISTANCE
        far = State(positions=pos, atomic_numbers=state.atomic_numbers[:6], charge=-1.0)
        with torch.no_grad():
            e_far = float(model.energy(far)[0])
        out["energy"] = e.detach().numpy() - e_far
        out["force"] = (f.detach()[cl] @ axis).numpy()
    return out
