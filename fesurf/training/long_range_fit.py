"""Training of :class:`~fesurf.surrogates.long_range.LongRangeModel` (short range + learned charges).

Loss per committee member and frame (the :mod:`fesurf.training.fit` loss plus charge terms)::

    energy_weight * ((E - E'_ref) / n)^2 + force_weight * mean((F - F'_ref)^2)
      + charge_weight * mean_i (q_i - q_i,ref)^2 + dipole_weight * |mu - mu_ref|^2 / n

with ``E'_ref = E_ref - E_disp`` and ``F'_ref = F_ref - F_disp``: the model's dispersion has no
learned parameters, so it is evaluated once per frame before training and the rest of the model
is fitted to what remains; dispersion is counted once. Charges (e) and dipoles (e*A, about the
coordinate origin) come from :attr:`Dataset.atom_charges` / :attr:`Dataset.dipole` (e.g.
``XTBOracle(moments=True)`` labels). Per-element reference energies, the energy scale and the
descriptor statistics are set as in :func:`fesurf.training.fit.train` (on ``E'_ref``). Adam with
ReduceLROnPlateau and early stopping on the validation loss; the best weights are restored.
Deterministic for a given seed.

Example
-------
>>> LongRangeTrainConfig(charge_weight=2.0).charge_weight
2.0
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from ..errors import InputError
from .data import Dataset
from .fit import TrainConfig, _prepare

log = logging.getLogger(__name__)

__all__ = ["LongRangeTrainConfig", "dispersion_of_dataset", "subtract_dispersion", "train_long_range",
           "long_range_metrics"]


@dataclass
class LongRangeTrainConfig(TrainConfig):
    """:class:`~fesurf.training.fit.TrainConfig` plus the charge terms.

    Attributes
    ----------
    charge_weight : weight of the mean squared charge error (e^2) per atom.
    dipole_weight : weight of the squared dipole error per atom ((e A)^2 / atom).
    charge_pretrain_epochs : epochs that fit only the charge networks (and hardnesses) to the
        reference charges/dipoles before the joint fit (4G-HDNNP trains its charges first).
    """

    charge_weight: float = 1.0
    dipole_weight: float = 0.0
    charge_pretrain_epochs: int = 0

    def __post_init__(self):
        for name in ("energy_weight", "force_weight", "charge_weight", "dipole_weight"):
            if not float(getattr(self, name)) >= 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        if int(self.epochs) < 0 or int(self.batch_size) < 1 or int(self.charge_pretrain_epochs) < 0:
            raise InputError("epochs and charge_pretrain_epochs must be >= 0, batch_size >= 1")


def dispersion_of_dataset(model, dataset: Dataset, batch_size: int = 256):
    """``(E_disp [n_frames] eV, F_disp [n_atoms, 3] eV/A)`` of the model's dispersion term (zeros
    when it has none)."""
    e = torch.zeros(len(dataset), dtype=torch.float64)
    f = torch.zeros(int(dataset.offsets[-1]), 3, dtype=torch.float64)
    disp = getattr(model, "dispersion", None)
    if disp is None:
        return e, f
    disp = disp.to(torch.float64)
    for k in range(0, len(dataset), batch_size):
        frames = torch.arange(k, min(k + batch_size, len(dataset)))
        state, _, _ = dataset.batch(frames)
        ek, fk = disp.energy_and_forces(state)
        e[frames] = ek
        f[dataset.atom_index(frames)] = fk
    return e, f


def subtract_dispersion(model, dataset: Dataset) -> Dataset:
    """A copy of ``dataset`` with the model's dispersion energy and forces taken off the labels."""
    e, f = dispersion_of_dataset(model, dataset)
    out = dataset.subset(torch.arange(len(dataset)))
    out.energy = dataset.energy - e
    out.forces = dataset.forces - f
    return out


def _check_targets(dataset, cfg):
    if cfg.charge_weight > 0 and dataset.atom_charges is None:
        raise InputError("charge_weight > 0 needs reference charges in the Dataset (atom_charges); label with "
                         "XTBOracle(moments=True) or set charge_weight=0")
    if cfg.dipole_weight > 0 and dataset.dipole is None:
        raise InputError("dipole_weight > 0 needs reference dipoles in the Dataset (dipole); label with "
                         "XTBOracle(moments=True) or set dipole_weight=0")


def _batch_targets(dataset, frames, dtype):
    state, energy, forces = dataset.batch(frames, dtype)
    idx = dataset.atom_index(frames)
    q = None if dataset.atom_charges is None else dataset.atom_charges[idx].to(dtype)
    mu = None if dataset.dipole is None else dataset.dipole[frames].to(dtype)
    return state, energy, forces, q, mu


def _member_losses(model, batch, cfg, weights=None, charges_only=False):
    """Per-member loss [M] on one batch."""
    state, energy, forces, q_ref, mu_ref = batch
    m = model.n_members
    pos = state.positions.detach().to(model.model_dtype).unsqueeze(0).repeat(m, 1, 1).requires_grad_(True)
    n_at = state.atoms_per_system.to(pos.dtype)
    if charges_only:
        x, species, order, counts = model._features(pos, state)
        q = model._charges_from(x, species, order, counts, pos, state)[0]
        per_frame = torch.zeros(m, state.n_systems, dtype=pos.dtype)
    else:
        t = model.member_terms(pos, state, dispersion=False)
        e_pred = t["short_range"] + t["electrostatic"] + t["self_energy"]
        q = t["charges"]
        per_frame = torch.zeros_like(e_pred)
        if cfg.energy_weight > 0:
            per_frame = per_frame + cfg.energy_weight * ((e_pred - energy) / n_at) ** 2
        if cfg.force_weight > 0:
            (grad,) = torch.autograd.grad(e_pred.sum(), pos, create_graph=True)
            df2 = ((-grad - forces) ** 2).sum(-1)  # [M, N]
            per_frame = per_frame + cfg.force_weight * torch.zeros_like(per_frame).index_add(
                1, state.system_index, df2) / (3 * n_at)
    if cfg.charge_weight > 0 and q_ref is not None:
        dq2 = torch.zeros_like(per_frame).index_add(1, state.system_index, (q - q_ref) ** 2) / n_at
        per_frame = per_frame + cfg.charge_weight * dq2
    if cfg.dipole_weight > 0 and mu_ref is not None:
        mu = torch.zeros(m, state.n_systems, 3, dtype=q.dtype).index_add(
            1, state.system_index, q[..., None] * state.positions.to(q.dtype)[None])
        per_frame = per_frame + cfg.dipole_weight * ((mu - mu_ref) ** 2).sum(-1) / n_at
    if weights is not None:
        return (per_frame * weights).sum(1) / weights.sum(1).clamp_min(1e-12)
    return per_frame.mean(1)


def _fit_loop(model, params, dataset, train_idx, val_batches, cfg, epochs, gen, boot, charges_only, progress, tag):
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=cfg.lr_factor, patience=cfg.lr_patience,
                                                       min_lr=cfg.min_lr)
    dtype = model.model_dtype
    history = {"train_loss": [], "val_loss": [], "lr": [], "best_epoch": 0}
    best, best_state, bad = float("inf"), copy.deepcopy(model.state_dict()), 0
    start = time.time()
    bar = tqdm(range(epochs), disable=(not progress) if progress is not None else None, desc=tag)
    for epoch in bar:
        model.train()
        perm = torch.randperm(len(train_idx), generator=gen)
        total, nb = 0.0, 0
        for k in range(0, len(perm), cfg.batch_size):
            pos = perm[k:k + cfg.batch_size]
            batch = _batch_targets(dataset, train_idx[pos], dtype)
            w = None if boot is None else boot[:, pos]
            loss = _member_losses(model, batch, cfg, w, charges_only).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) / model.n_members
            nb += 1
        model.eval()
        val = sum(float(_member_losses(model, b, cfg, None, charges_only).detach().mean()) * b[0].n_systems
                  for b in val_batches) / sum(b[0].n_systems for b in val_batches)
        history["train_loss"].append(total / max(nb, 1))
        history["val_loss"].append(val)
        history["lr"].append(opt.param_groups[0]["lr"])
        sched.step(val)
        if val < best:
            best, best_state, bad = val, copy.deepcopy(model.state_dict()), 0
            history["best_epoch"] = epoch
        else:
            bad += 1
        bar.set_postfix(train=f"{total / max(nb, 1):.3g}", val=f"{val:.3g}")
        if epoch % 10 == 0:
            log.info("%s epoch %d train %.4g val %.4g lr %.2g", tag, epoch, total / max(nb, 1), val,
                     opt.param_groups[0]["lr"])
        if bad >= cfg.patience:
            break
        if cfg.max_time is not None and time.time() - start > cfg.max_time:
            log.warning("%s stopped by its %.0f s time budget at epoch %d; the model now depends on this "
                        "machine's speed", tag, cfg.max_time, epoch)
            history["stopped_by_time"] = True
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    history["seconds"] = time.time() - start
    return history


def train_long_range(model, dataset: Dataset, train_idx, val_idx, config: LongRangeTrainConfig | None = None,
                     progress=None) -> dict:
    """Fit a :class:`~fesurf.surrogates.long_range.LongRangeModel` in place.

    Parameters
    ----------
    model : LongRangeModel (any committee size).
    dataset : Dataset with energies (eV), forces (eV/A) and, for the charge terms, reference
        ``atom_charges`` (e) and/or ``dipole`` (e A).
    train_idx, val_idx : frame indices.
    config : LongRangeTrainConfig.

    Returns a history dict (``train_loss``, ``val_loss``, ``lr``, ``best_epoch``, ``seconds``; the
    charge pre-fit's under ``charge_pretrain``).

    >>> # see tests/test_long_range.py for a complete small run
    """
    cfg = config or LongRangeTrainConfig()
    if not isinstance(cfg, LongRangeTrainConfig):
        raise InputError("config must be a LongRangeTrainConfig")
    if cfg.dtype not in ("float64", "float32"):
        raise InputError("dtype must be 'float64' or 'float32'")
    if not hasattr(model, "member_terms"):
        raise InputError("train_long_range trains a LongRangeModel; use fesurf.training.train for local models")
    train_idx = torch.as_tensor(train_idx, dtype=torch.long)
    val_idx = torch.as_tensor(val_idx, dtype=torch.long)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise InputError("training and validation sets must both be non-empty")
    _check_targets(dataset, cfg)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.to(torch.float64)
    target = subtract_dispersion(model, dataset)
    _prepare(model, target, train_idx, cfg)
    dtype = getattr(torch, cfg.dtype)
    model.to(dtype)
    boot = None
    if cfg.bootstrap:
        draws = torch.randint(0, len(train_idx), (model.n_members, len(train_idx)), generator=gen)
        boot = torch.zeros(model.n_members, len(train_idx), dtype=dtype)
        boot.scatter_add_(1, draws, torch.ones_like(draws, dtype=dtype))
    val_batches = [_batch_targets(target, val_idx[k:k + 256], dtype) for k in range(0, len(val_idx), 256)]
    history = {}
    if cfg.charge_pretrain_epochs > 0 and (cfg.charge_weight > 0 or cfg.dipole_weight > 0):
        params = list(model.charge_mlp.parameters()) + ([model.raw_hardness] if hasattr(model, "raw_hardness") else [])
        history["charge_pretrain"] = _fit_loop(model, params, target, train_idx, val_batches, cfg,
                                               cfg.charge_pretrain_epochs, gen, boot, True, progress, "charges")
    history.update(_fit_loop(model, list(model.parameters()), target, train_idx, val_batches, cfg, cfg.epochs, gen,
                             boot, False, progress, "train"))
    history["config"] = asdict(cfg)
    return history


def long_range_metrics(model, dataset: Dataset, frames=None, batch_size: int = 128) -> dict:
    """Committee-mean errors on ``frames``: energy MAE/RMSE (eV and eV/atom), force RMSE (eV/A),
    charge MAE (e) and dipole MAE (e A, norm of the error) where the Dataset has references.

    >>> # metrics = long_range_metrics(model, dataset, split["test"])
    """
    frames = torch.arange(len(dataset)) if frames is None else torch.as_tensor(frames, dtype=torch.long)
    de, dea, df, dq, dmu = [], [], [], [], []
    for k in range(0, len(frames), batch_size):
        fr = frames[k:k + batch_size]
        state, energy, forces, q_ref, mu_ref = _batch_targets(dataset, fr, torch.float64)
        st = state.to(model.model_dtype)
        with torch.enable_grad():  # plain autograd: works for any Potential
            pos = st.positions.detach().requires_grad_(True)
            e = model.energy(st.replace(positions=pos))
            (g,) = torch.autograd.grad(e.sum(), pos)
        e, f = e.detach().double(), -g.double()
        de.append(e - energy)
        dea.append((e - energy) / state.atoms_per_system)
        df.append((f - forces).reshape(-1))
        if hasattr(model, "charges") and (q_ref is not None or mu_ref is not None):
            with torch.no_grad():
                q = model.charges(state).mean(0).double()
            if q_ref is not None:
                dq.append(q - q_ref)
            if mu_ref is not None:
                mu = torch.zeros(state.n_systems, 3, dtype=q.dtype).index_add(0, state.system_index,
                                                                               q[:, None] * state.positions)
                dmu.append((mu - mu_ref).norm(dim=1))
    de, dea, df = torch.cat(de), torch.cat(dea), torch.cat(df)
    out = {"n_frames": int(len(frames)), "energy_mae_eV": float(de.abs().mean()),
           "energy_rmse_eV": float(de.pow(2).mean().sqrt()), "energy_mae_eV_per_atom": float(dea.abs().mean()),
           "energy_rmse_eV_per_atom": float(dea.pow(2).mean().sqrt()), "force_rmse_eV_A": float(df.pow(2).mean().sqrt())}
    if dq:
        out["charge_mae_e"] = float(torch.cat(dq).abs().mean())
    if dmu:
        out["dipole_mae_eA"] = float(torch.cat(dmu).mean())
    return out
