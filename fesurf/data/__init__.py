"""Stored data: the malonaldehyde datasets and their trained committees.

Two levels, each generated (level-driven MD + umbrella MD along the CV),
labelled and fitted by ``scripts/make_malonaldehyde.py --method ...``:
GFN2-xTB (the demo's reference level and surrogate) and GFN1-xTB (the cheap
level of the cross-level benchmark, corrected to GFN2-xTB). Malonaldehyde atom order:
O1 C C C O2 H(transfer) H H H, so the proton-transfer coordinate is
``distance_difference([0, 5], [4, 5])`` = d(O1-H) - d(O2-H) in Angstrom.

Example
-------
>>> from fesurf.data import malonaldehyde
>>> atoms = malonaldehyde()
>>> atoms.get_chemical_formula()
'C3H4O2'
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms

DATA_DIR = Path(__file__).resolve().parent
#: extxyz.gz with GFN2-xTB energies (eV) and forces (eV/A); info: source, temperature, split.
MALONALDEHYDE_DATASET = DATA_DIR / "malonaldehyde_gfn2.extxyz.gz"
#: the same frames as a compressed npz (fast loading; written from the extxyz).
MALONALDEHYDE_NPZ = DATA_DIR / "malonaldehyde_gfn2.npz"
#: trained BP committee (state dict + JSON config, weights_only loading).
MALONALDEHYDE_COMMITTEE = DATA_DIR / "malonaldehyde_bp_committee.pt"
#: figures measured by the generating script on the stored test sets.
MALONALDEHYDE_METRICS = DATA_DIR / "malonaldehyde_metrics.json"
#: GFN1-xTB counterparts (generated with GFN1-xTB MD; no GFN2 call went into them).
MALONALDEHYDE_GFN1_DATASET = DATA_DIR / "malonaldehyde_gfn1.extxyz.gz"
MALONALDEHYDE_GFN1_COMMITTEE = DATA_DIR / "malonaldehyde_gfn1_bp_committee.pt"
MALONALDEHYDE_GFN1_METRICS = DATA_DIR / "malonaldehyde_gfn1_metrics.json"

#: stored files per level: dataset (extxyz.gz), fast-loading npz copy, committee, metrics, and
#: the generation record (oracle calls made: MD steps and labels).
MALONALDEHYDE_FILES = {
    "GFN2-xTB": dict(dataset=MALONALDEHYDE_DATASET, npz=MALONALDEHYDE_NPZ, committee=MALONALDEHYDE_COMMITTEE,
                     metrics=MALONALDEHYDE_METRICS, generation=DATA_DIR / "malonaldehyde_gfn2_generation.json"),
    "GFN1-xTB": dict(dataset=MALONALDEHYDE_GFN1_DATASET, npz=None, committee=MALONALDEHYDE_GFN1_COMMITTEE,
                     metrics=MALONALDEHYDE_GFN1_METRICS, generation=DATA_DIR / "malonaldehyde_gfn1_generation.json"),
}
#: pipeline builtin surrogate names -> level
BUILTIN_COMMITTEES = {"malonaldehyde_committee": "GFN2-xTB", "malonaldehyde_gfn1_committee": "GFN1-xTB"}


def _files(method: str) -> dict:
    from ..errors import InputError

    if method not in MALONALDEHYDE_FILES:
        raise InputError(f"no stored malonaldehyde data for method {method!r}; choose from {sorted(MALONALDEHYDE_FILES)}")
    return MALONALDEHYDE_FILES[method]
#: O1, O2 and the transferring H (0-based indices).
PROTON_TRANSFER_ATOMS = (0, 4, 5)

# GFN2-xTB minimum (tblite 0.8, BFGS fmax 0.005 eV/A), Angstrom.
_MALONALDEHYDE_POSITIONS = np.array([
    [1.2901, -0.6245, -0.0108], [1.2142, 0.5986, -0.0095], [-0.0193, 1.3311, -0.0044],
    [-1.1996, 0.6614, -0.0019], [-1.3087, -0.6448, -0.0033], [-0.3830, -1.0214, -0.0062],
    [2.1335, 1.2063, -0.0123], [0.0034, 2.4059, -0.0031], [-2.1533, 1.1794, 0.0012]])


def malonaldehyde() -> Atoms:
    """Malonaldehyde (enol, Cs) at its GFN2-xTB minimum; atom order O1 C C C O2 H* H H H."""
    atoms = Atoms("OCCCOHHHH", positions=_MALONALDEHYDE_POSITIONS.copy())
    atoms.info.update(charge=0.0, multiplicity=1)
    return atoms


def load_malonaldehyde_dataset(method: str = "GFN2-xTB"):
    """The stored dataset of ``method`` ("GFN2-xTB" or "GFN1-xTB"; npz copy if present, else the
    extxyz) as a :class:`fesurf.training.data.Dataset` (frames carry ``info['split']``)."""
    from ..training.data import Dataset

    files = _files(method)
    if files["npz"] is not None and files["npz"].exists():
        return Dataset.load_npz(files["npz"])
    return Dataset.read(files["dataset"])


def load_malonaldehyde_committee(dtype=None, method: str = "GFN2-xTB"):
    """The stored BP committee trained on ``method`` labels (a fesurf Potential;
    ``model.predict(state)`` gives the spread).

    >>> from fesurf.data import load_malonaldehyde_committee   # doctest: +SKIP
    >>> model = load_malonaldehyde_committee()                  # doctest: +SKIP
    """
    import torch

    from ..surrogates.io import load_model

    model = load_model(_files(method)["committee"])
    return model.to(dtype) if dtype is not None else model


def load_malonaldehyde_gfn1_committee(dtype=None):
    """The stored BP committee trained on GFN1-xTB labels (the cross-level benchmark's surrogate)."""
    return load_malonaldehyde_committee(dtype, method="GFN1-xTB")


def generation_calls(method: str = "GFN2-xTB") -> int:
    """Oracle calls at ``method`` that made the stored dataset and committee (MD steps plus labels)."""
    import json

    record = json.loads(_files(method)["generation"].read_text())
    return int(record["n_md_calls"]) + int(record["n_label_calls"])
