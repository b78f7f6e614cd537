"""Force-matching training of atomistic surrogates (single models and committees).

Loss per committee member: ``energy_weight * mean(((E - E_ref) / n_atoms)^2)
+ force_weight * mean((F - F_ref)^2)`` (eV^2/atom^2 and (eV/A)^2 per force
component), plus an optional Gaussian NLL on energies for a heteroscedastic
head. Per-element reference energies are fitted by least squares before
training; descriptors are standardised per element. Adam with
ReduceLROnPlateau and early stopping on the validation loss; the best
weights are restored. Deterministic for a given seed.

Example
-------
>>> from fesurf.training import TrainConfig
>>> TrainConfig(epochs=5).batch_size
32
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import InputError
from .data import Dataset

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Training settings.

    epochs, batch_size (frames), lr (Adam), lr_factor/lr_patience (plateau
    schedule, epochs), patience (early stopping, epochs), min_lr, energy_weight
    and force_weight (loss weights, see module doc), nll_weight (heteroscedastic
    head), bootstrap (resample training frames per member), seed, dtype
    ("float64" or "float32"), max_time (s, wall-clock budget), stat_frames
    (frames used for descriptor statistics).
    """

    epochs: int = 200
    batch_size: int = 32
    lr: float = 3e-3
    lr_factor: float = 0.5
    lr_patience: int = 8
    min_lr: float = 1e-5
    patience: int = 25
    energy_weight: float = 1.0
    force_weight: float = 0.005
    nll_weight: float = 0.1
    bootstrap: bool = False
    seed: int = 0
    dtype: str = "float64"
    max_time: float | None = None
    stat_frames: int = 500


def fit_element_energies(dataset: Dataset, elements) -> torch.Tensor:
    """Least-squares per-element reference energies (eV): ``E_k ~ sum_Z n_kZ e_Z``.

    With a single composition the minimum-norm solution is returned (only the
    sum matters then).

    >>> from ase.build import molecule
    >>> from fesurf.oracles import XTBOracle
    >>> ds = Dataset.from_labels(XTBOracle().label([molecule("H2O"), molecule("H2")]))
    >>> e = fit_element_energies(ds, [1, 8]); round(float(2 * e[0]), 3) == round(float(ds.energy[1]), 3)
    True
    """
    elements = sorted(int(z) for z in elements)
    lookup = {z: k for k, z in enumerate(elements)}
    counts = np.zeros((len(dataset), len(elements)))
    frame = torch.repeat_interleave(torch.arange(len(dataset)), dataset.n_atoms).numpy()
    for f, z in zip(frame, dataset.numbers.tolist()):
        if z not in lookup:
            raise InputError(f"element {z} is in the data but not in the model's elements {elements}")
        counts[f, lookup[z]] += 1
    coef, *_ = np.linalg.lstsq(counts, dataset.energy.numpy(), rcond=None)
    return torch.as_tensor(coef, dtype=torch.float64)


def _prepare(model, dataset: Dataset, train_idx, cfg: TrainConfig):
    """Reference energies, energy scale and descriptor statistics from the training frames."""
    sub = dataset.subset(train_idx)
    e_ref = fit_element_energies(sub, model.elements if hasattr(model, "elements") else model.acsf.elements)
    model.element_energy.copy_(e_ref.to(model.element_energy.dtype))
    state, energy, forces = sub.batch(torch.arange(len(sub)))
    resid = energy - state.sum_per_system(e_ref[_species(model, state.atomic_numbers)])
    scale = float(resid.std() / np.sqrt(float(sub.n_atoms.double().mean()))) if len(sub) > 1 else 1.0
    scale = max(scale, float(forces.abs().mean()) * 0.1, 1e-3)
    model.energy_scale.fill_(scale)
    if hasattr(model, "feature_mean"):
        gen = torch.Generator().manual_seed(cfg.seed)
        pick = torch.randperm(len(sub), generator=gen)[:cfg.stat_frames]
        st, _, _ = sub.batch(pick)
        with torch.no_grad():
            g = model.descriptors(st.positions, st)
        sp = model.acsf.species(st.atomic_numbers)
        for e in range(model.acsf.n_elements):
            rows = g[sp == e]
            if rows.shape[0] > 1:
                model.feature_mean[e] = rows.mean(0)
                std = rows.std(0)
                model.feature_std[e] = torch.where(std > 1e-6, std, torch.ones_like(std))


def _species(model, numbers):
    return model.acsf.species(numbers) if hasattr(model, "acsf") else model.species(numbers)


def energy_force_loss(state, e_pred, f_pred, energy, forces, cfg):
    """Per-member, per-frame ``energy_weight * ((E - E_ref) / n)^2 + force_weight * mean (F - F_ref)^2``
    ``[M, B]`` (the module docstring's loss), and the atoms per frame ``[B]``; other trainers add terms."""
    n_at = state.atoms_per_system.to(e_pred.dtype)
    de = (e_pred - energy) / n_at  # [M, B]
    df2 = ((f_pred - forces) ** 2).sum(-1)  # [M, N]
    df2_sys = torch.zeros_like(de).index_add(1, state.system_index, df2) / (3 * n_at)  # [M, B]
    return cfg.energy_weight * de ** 2 + cfg.force_weight * df2_sys, n_at


def frame_mean(per_frame, frame_weights=None):
    """Per-member loss ``[M]``: the mean over frames, or the bootstrap-weighted mean."""
    if frame_weights is not None:
        return (per_frame * frame_weights).sum(1) / frame_weights.sum(1).clamp_min(1e-12)
    return per_frame.mean(1)


def _losses(model, state, energy, forces, cfg, frame_weights=None):
    """Per-member loss [M] (and its parts) on one batch."""
    e_pred, f_pred, log_var = model.member_energies_and_forces(state, create_graph=True)
    per_frame, n_at = energy_force_loss(state, e_pred, f_pred, energy, forces, cfg)
    if log_var is not None:
        nll = 0.5 * (log_var + (e_pred.detach() - energy) ** 2 / log_var.exp())
        per_frame = per_frame + cfg.nll_weight * nll / n_at
    return frame_mean(per_frame, frame_weights)


def train(model, dataset: Dataset, train_idx, val_idx, config: TrainConfig | None = None, progress=None) -> dict:
    """Fit ``model`` (a BehlerParrinello, SchNet or Committee of them) in place.

    Parameters
    ----------
    model : AtomisticModel
    dataset : Dataset
    train_idx, val_idx : frame indices (e.g. from :meth:`Dataset.split`).
    config : TrainConfig

    Returns a history dict: per-epoch ``train_loss``, ``val_loss`` (mean over
    members), ``lr``, ``best_epoch``, ``seconds``.

    >>> # see tests/test_training.py for a complete small run
    """
    cfg = config or TrainConfig()
    if cfg.dtype not in ("float64", "float32"):
        raise InputError("dtype must be 'float64' or 'float32'")
    return run_training(model, dataset, train_idx, val_idx, cfg, progress, _dataset_batch, _losses)


def _dataset_batch(dataset: Dataset, frames, dtype):
    return dataset.batch(frames, dtype)


def run_training(model, dataset: Dataset, train_idx, val_idx, cfg: TrainConfig, progress, make_batch, loss_fn) -> dict:
    """The training loop of :func:`train`, shared by the other trainers (periodic cells with stress:
    :func:`fesurf.training.periodic_fit.train_periodic`): reference energies and descriptor statistics
    (:func:`_prepare`), bootstrap weights, Adam with ReduceLROnPlateau, early stopping, best weights restored.

    ``make_batch(dataset, frames, dtype)`` returns a tuple whose first item is the batch's State;
    ``loss_fn(model, *batch, cfg, frame_weights)`` returns the per-member loss ``[M]``.
    """
    train_idx = torch.as_tensor(train_idx, dtype=torch.long)
    val_idx = torch.as_tensor(val_idx, dtype=torch.long)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise InputError("training and validation sets must both be non-empty")
    dtype = getattr(torch, cfg.dtype)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.to(torch.float64)
    members = list(model.members) if hasattr(model, "members") else [model]
    for m in members:
        _prepare(m, dataset, train_idx, cfg)
    model.to(dtype)
    n_members = model.n_members
    boot = None
    if cfg.bootstrap:
        draws = torch.randint(0, len(train_idx), (n_members, len(train_idx)), generator=gen)
        boot = torch.zeros(n_members, len(train_idx), dtype=dtype)
        boot.scatter_add_(1, draws, torch.ones_like(draws, dtype=dtype))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=cfg.lr_factor, patience=cfg.lr_patience,
                                                       min_lr=cfg.min_lr)
    val_batches = [make_batch(dataset, val_idx[k:k + 256], dtype) for k in range(0, len(val_idx), 256)]
    history = {"train_loss": [], "val_loss": [], "lr": [], "best_epoch": 0}
    best, best_state, bad_epochs = float("inf"), copy.deepcopy(model.state_dict()), 0
    start = time.time()
    bar = tqdm(range(cfg.epochs), disable=(not progress) if progress is not None else None, desc="train")
    for epoch in bar:
        model.train()
        perm = torch.randperm(len(train_idx), generator=gen)
        total, nb = 0.0, 0
        for k in range(0, len(perm), cfg.batch_size):
            pos = perm[k:k + cfg.batch_size]
            batch = make_batch(dataset, train_idx[pos], dtype)
            weights = None if boot is None else boot[:, pos]
            loss = loss_fn(model, *batch, cfg, weights).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) / n_members
            nb += 1
        model.eval()
        val = 0.0
        for batch in val_batches:
            val += float(loss_fn(model, *batch, cfg).detach().mean()) * batch[0].n_systems
        val /= len(val_idx)
        history["train_loss"].append(total / nb)
        history["val_loss"].append(val)
        history["lr"].append(opt.param_groups[0]["lr"])
        sched.step(val)
        if val < best:
            best, best_state, bad_epochs = val, copy.deepcopy(model.state_dict()), 0
            history["best_epoch"] = epoch
        else:
            bad_epochs += 1
        bar.set_postfix(train=f"{total / nb:.3g}", val=f"{val:.3g}")
        if epoch % 10 == 0:
            log.info("epoch %d train %.4g val %.4g lr %.2g (%.0f s)", epoch, total / nb, val,
                     opt.param_groups[0]["lr"], time.time() - start)
        if bad_epochs >= cfg.patience:
            log.info("early stop at epoch %d (best %d)", epoch, history["best_epoch"])
            break
        if cfg.max_time is not None and time.time() - start > cfg.max_time:
            # a wall-clock stop makes the model depend on the machine's speed: say so loudly
            log.warning("training stopped by its %.0f s time budget at epoch %d of %d; the model now depends on "
                        "this machine's speed (set max_time=None and choose epochs for a reproducible result)",
                        cfg.max_time, epoch, cfg.epochs)
            history["stopped_by_time"] = True
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    history["seconds"] = time.time() - start
    history["config"] = asdict(cfg)
    return history
