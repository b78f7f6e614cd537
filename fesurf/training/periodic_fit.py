"""Periodic surrogates: stress labels, energy-force-virial training, stress by autograd.

Reference labels with stress come from :class:`StressOracle`, which wraps any ASE-calculator-backed
oracle (:class:`~fesurf.oracles.XTBOracle` with tblite's periodic GFN1/GFN2, or
:class:`~fesurf.oracles.ASEOracle` around EMT) and stores the stress tensor (eV/A^3, ASE sign:
``sigma = (1/V) dE/d(strain)``) in ``Label.extra["stress"]``; a
:class:`~fesurf.training.data.Dataset` built from such labels carries ``cell``, ``pbc`` and ``stress``.

:func:`train_periodic` fits a :class:`~fesurf.surrogates.BehlerParrinello` (or SchNet / a committee)
on energies, forces and stress. Loss per committee member and frame (the
:func:`fesurf.training.fit.train` loss plus a virial term)::

    energy_weight * ((E - E_ref) / n)^2 + force_weight * mean_i,a (F - F_ref)^2
      + virial_weight * mean_ab ((W - W_ref) / n)^2,      W = -V sigma   (eV)

so the virial enters per atom, like the energy. Frames without stress (molecules, slabs whose
stress is not wanted) get no virial term. The stress of a model comes from one autograd pass
through a homogeneous strain of positions and cell (:func:`energy_forces_virial`), which needs the
model's pair vectors to be differentiable in the cell (``fesurf.surrogates.graph``).

Units: eV, Angstrom, eV/A, eV/A^3.

Example
-------
>>> from ase.build import bulk
>>> from ase.calculators.emt import EMT
>>> from fesurf.oracles import ASEOracle
>>> from functools import partial
>>> lab = StressOracle(ASEOracle(partial(EMT), method="EMT")).compute(bulk("Cu", "fcc", a=3.7, cubic=True))
>>> lab.extra["stress"].shape
(3, 3)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..oracles.base import Oracle
from ..state import State
from .data import Dataset
from ..md.barostat import energy_forces_virial
from .fit import TrainConfig, energy_force_loss, frame_mean, run_training

log = logging.getLogger(__name__)

__all__ = ["StressOracle", "PeriodicTrainConfig", "energy_forces_virial", "member_energies_forces_virial",
           "train_periodic", "periodic_metrics"]


class StressOracle(Oracle):
    """An oracle that also stores the stress of periodic configurations (``Label.extra["stress"]``,
    [3, 3] eV/A^3, ASE sign). Wraps an oracle whose ``_compute`` attaches an ASE calculator that gives
    stress (tblite, EMT, most periodic codes); non-periodic configurations carry no stress.

    The method string gains ``+stress``, so the label cache keeps these labels apart from plain ones.

    >>> from fesurf.oracles import XTBOracle
    >>> StressOracle(XTBOracle(method="GFN1-xTB")).method
    'tblite:GFN1-xTB+stress'
    """

    def __init__(self, oracle: Oracle):
        if not isinstance(oracle, Oracle):
            raise InputError(f"StressOracle wraps a fesurf Oracle, got {type(oracle).__name__}")
        self.inner = oracle
        self.method = f"{oracle.method}+stress"
        self._calc = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["inner"] = self.inner._task_copy()
        return state

    def call_seconds(self, n_atoms: int) -> float:
        return self.inner.call_seconds(n_atoms)

    def _compute(self, atoms, charge, multiplicity):
        self.inner._extra = {}
        energy, forces = self.inner._compute(atoms, charge, multiplicity)
        self._extra.update(self.inner._extra)
        if np.any(atoms.pbc):
            if atoms.calc is None:
                raise InputError(f"{type(self.inner).__name__} attaches no ASE calculator, so StressOracle cannot "
                                 "read a stress from it")
            self._extra["stress"] = np.asarray(atoms.get_stress(voigt=False), dtype=np.float64)
        return energy, forces


# ------------------------------------------------------------------------------------ model stress
def _strained(state: State, dtype):
    strain = torch.zeros(state.n_systems, 3, 3, dtype=dtype, requires_grad=True)
    sym = 0.5 * (strain + strain.transpose(1, 2))
    deform = torch.eye(3, dtype=dtype) + sym
    return strain, deform


def member_energies_forces_virial(model, state: State, create_graph: bool = False):
    """Per-member ``(energies [M, S] eV, forces [M, n, 3] eV/A, virial [M, S, 3, 3] eV)`` of an
    :class:`~fesurf.surrogates.AtomisticModel`; ``virial = -dE/d(strain)`` (ASE stress ``-virial / V``).

    Members get their own copy of the positions (per-member forces in one backward pass, as
    :meth:`~fesurf.surrogates.AtomisticModel.member_energies_and_forces`); the strain is shared, so
    each member's virial is one more backward pass through the same graph. ``create_graph=True``
    keeps the graph (training on stress).
    """
    if state.cell is None:
        raise InputError("the virial needs a cell; give the State a cell (and pbc) for periodic systems")
    m = model.n_members
    dt = model.model_dtype
    with torch.enable_grad():
        pos0 = state.positions.detach().to(dt).unsqueeze(0).repeat(m, 1, 1).requires_grad_(True)
        strain, deform = _strained(state, dt)
        pos = torch.einsum("mni,nij->mnj", pos0, deform[state.system_index])
        cell = torch.bmm(state.cell.detach().to(dt), deform)
        energies, _ = model._member_outputs(pos, state.replace(cell=cell))
        (g_pos,) = torch.autograd.grad(energies.sum(), pos0, create_graph=create_graph, retain_graph=True)
        virial = []
        for k in range(m):
            (g,) = torch.autograd.grad(energies[k].sum(), strain, create_graph=create_graph,
                                       retain_graph=create_graph or k < m - 1)
            virial.append(-g)
    virial = torch.stack(virial)
    forces = -g_pos
    if not create_graph:
        energies, forces, virial = energies.detach(), forces.detach(), virial.detach()
    return energies, forces, virial


# ------------------------------------------------------------------------------------------ training
@dataclass
class PeriodicTrainConfig(TrainConfig):
    """:class:`~fesurf.training.fit.TrainConfig` plus the virial term.

    virial_weight : weight of the mean squared virial error per atom, ``mean_ab ((W - W_ref) / n)^2``
        (eV^2/atom^2, like the energy term); 0 trains on energies and forces only. Frames of a Dataset
        without stress get no virial term.
    """

    virial_weight: float = 0.1

    def __post_init__(self):
        for name in ("energy_weight", "force_weight", "virial_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise InputError(f"{name} must be a number >= 0, got {v!r}")
        if int(self.epochs) < 0 or int(self.batch_size) < 1:
            raise InputError("epochs must be >= 0 and batch_size >= 1")
        if self.dtype not in ("float64", "float32"):
            raise InputError("dtype must be 'float64' or 'float32'")


def _batch(dataset: Dataset, frames, dtype):
    state, energy, forces = dataset.batch(frames, dtype)
    stress = None if dataset.stress is None else dataset.stress[torch.as_tensor(frames, dtype=torch.long)].to(dtype)
    return state, energy, forces, stress


def _periodic_losses(model, state, energy, forces, stress, cfg, frame_weights=None):
    """Per-member loss [M] on one batch (the module docstring's loss)."""
    use_virial = stress is not None and cfg.virial_weight > 0
    if use_virial:
        e_pred, f_pred, w_pred = member_energies_forces_virial(model, state, create_graph=True)
    else:
        e_pred, f_pred, _ = model.member_energies_and_forces(state, create_graph=True)
    per_frame, n_at = energy_force_loss(state, e_pred, f_pred, energy, forces, cfg)
    if use_virial:
        volume = torch.linalg.det(state.cell).abs().to(e_pred.dtype)
        w_ref = -volume[:, None, None] * stress
        dw = (w_pred - w_ref) / n_at[:, None, None]
        per_frame = per_frame + cfg.virial_weight * (dw ** 2).mean((-1, -2))
    return frame_mean(per_frame, frame_weights)


def train_periodic(model, dataset: Dataset, train_idx, val_idx, config: PeriodicTrainConfig | None = None,
                   progress=None) -> dict:
    """Fit ``model`` in place on energies, forces and (when the Dataset has it) stress.

    Parameters
    ----------
    model : AtomisticModel (BehlerParrinello, SchNet, Committee), not heteroscedastic
    dataset : Dataset, periodic frames (``cell``/``pbc``), optionally with ``stress``
    train_idx, val_idx : frame indices
    config : :class:`PeriodicTrainConfig`

    Per-element reference energies, the energy scale and descriptor statistics are set as in
    :func:`fesurf.training.fit.train`; Adam with ReduceLROnPlateau and early stopping on the validation
    loss, best weights restored; ``bootstrap=True`` resamples frames per member. Deterministic for a seed.
    Returns the history (``train_loss``, ``val_loss``, ``lr``, ``best_epoch``, ``seconds``, ``config``).

    >>> # see tests/test_periodic_fit.py for a complete small run
    """
    cfg = config or PeriodicTrainConfig()
    if not isinstance(cfg, PeriodicTrainConfig):
        raise InputError(f"config must be a PeriodicTrainConfig, got {type(cfg).__name__}")
    if getattr(model, "heteroscedastic", False):
        raise InputError("train_periodic does not train heteroscedastic heads; build the model with "
                         "heteroscedastic=False")
    if not isinstance(dataset, Dataset):
        raise InputError(f"dataset must be a fesurf Dataset, got {type(dataset).__name__}")
    if cfg.virial_weight > 0 and dataset.stress is None:
        log.info("the dataset has no stress: training on energies and forces only")
    return run_training(model, dataset, train_idx, val_idx, cfg, progress, _batch, _periodic_losses)


def periodic_metrics(model, dataset: Dataset, frames=None, batch_size: int = 16) -> dict:
    """Errors of ``model`` on periodic frames: energy MAE/RMSE per atom (meV/atom), force MAE/RMSE
    (eV/A), stress MAE/RMSE (eV/A^3 and GPa) when the Dataset has stress, and per-frame arrays
    (``energy_error_per_atom`` eV, ``force_rmse`` eV/A, ``energy_std`` eV committee spread,
    ``force_deviation_max`` eV/A).

    >>> # see tests/test_periodic_fit.py
    """
    from ase.units import GPa

    frames = torch.arange(len(dataset)) if frames is None else torch.as_tensor(frames, dtype=torch.long)
    if frames.numel() == 0:
        raise InputError("no frames to evaluate")
    de, frm, dsig, spread, fdev, f_err = [], [], [], [], [], []
    for k in range(0, len(frames), batch_size):
        idx = frames[k:k + batch_size]
        state, energy, forces, stress = _batch(dataset, idx, torch.float64)
        e_m, f_m, w_m = member_energies_forces_virial(model.to(torch.float64) if model.model_dtype != torch.float64
                                                      else model, state)
        n_at = state.atoms_per_system.double()
        e = e_m.mean(0)
        f = f_m.mean(0)
        de.append(((e - energy) / n_at).numpy())
        err = ((f - forces) ** 2).sum(-1)
        f_err.append((f - forces).reshape(-1).numpy())
        frm.append(np.sqrt((torch.zeros(len(idx), dtype=torch.float64).index_add(0, state.system_index, err)
                            / (3 * n_at)).numpy()))
        spread.append(e_m.std(0, unbiased=False).numpy() if e_m.shape[0] > 1 else np.zeros(len(idx)))
        dev = ((f_m - f) ** 2).sum(-1).mean(0).sqrt()
        fdev.append(torch.zeros(len(idx), dtype=torch.float64).scatter_reduce(
            0, state.system_index, dev, reduce="amax", include_self=True).numpy())
        if stress is not None:
            vol = torch.linalg.det(state.cell).abs()
            sig = -w_m.mean(0) / vol[:, None, None]
            dsig.append((sig - stress).reshape(len(idx), 9).numpy())
    de, frm = np.concatenate(de), np.concatenate(frm)
    f_err = np.concatenate(f_err)
    out = {"n_frames": int(len(frames)), "energy_mae_meV_atom": float(1e3 * np.abs(de).mean()),
           "energy_rmse_meV_atom": float(1e3 * np.sqrt((de ** 2).mean())),
           "force_mae_eV_A": float(np.abs(f_err).mean()), "force_rmse_eV_A": float(np.sqrt((f_err ** 2).mean())),
           "energy_error_per_atom": de, "force_rmse": frm, "energy_std": np.concatenate(spread),
           "force_deviation_max": np.concatenate(fdev)}
    if dsig:
        dsig = np.concatenate(dsig)
        out.update(stress_mae_eV_A3=float(np.abs(dsig).mean()), stress_rmse_eV_A3=float(np.sqrt((dsig ** 2).mean())),
                   stress_mae_GPa=float(np.abs(dsig).mean() / GPa))
    return out
