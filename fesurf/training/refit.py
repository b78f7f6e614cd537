"""Warm-started committee refits for active learning: a fixed number of epochs, normalisation kept.

The loss is the one of :func:`fesurf.training.train` per member and frame,
``energy_weight * ((E - E_ref) / n_atoms)^2 + force_weight * mean((F - F_ref)^2)``, summed over
members; Adam with a cosine decay of the learning rate from ``lr`` to ``lr * final_lr_fraction``
within each fit. The first fit sets the model's normalisation (per-element reference energies,
energy scale, descriptor statistics: :func:`fesurf.training.fit._prepare`, or the model's own
``fit_normalisation``) and starts from the initial weights; every later fit starts from the
current weights and keeps that normalisation, so new data moves the function only through
training. The epoch count decides the result (never a wall-clock budget); the weights after the
last epoch are kept (no selection on the validation labels, which stay held out for calibration).

Fast path (Behler-Parrinello committees on one molecule, the usual active-learning case): the ACSF
descriptors ``G`` and their Cartesian Jacobians ``dG/dx`` are computed once per frame (forward-mode
AD through :class:`~fesurf.surrogates.ACSF`, 3N directions) and kept, so an epoch runs only the
element networks: ``F_m = -(dE_m/dG) . dG/dx`` per member. Before it is used, the path is checked
against the model's own energies and forces on a few frames; any mismatch (a model whose internals
differ) falls back to autograd through the whole model (:meth:`~fesurf.surrogates.AtomisticModel.member_energies_and_forces`).

Example
-------
>>> RefitSettings(epochs=40).warm_lr
0.001
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass

import torch

from ..errors import InputError
from .data import Dataset
from .fit import TrainConfig, _losses, _prepare

log = logging.getLogger(__name__)

#: the fast path keeps every frame's descriptor Jacobian; above this many bytes it is not used
MAX_JACOBIAN_BYTES = 2_000_000_000


@dataclass(frozen=True)
class RefitSettings:
    """How the committee is (re)fitted each round.

    Attributes
    ----------
    seed_epochs : epochs of the first fit (from the initial weights, on the seed labels)
    epochs : epochs of every later, warm-started fit
    optimizer : "adam" (minibatches, cosine learning-rate decay) or "lbfgs" (full batch, strong Wolfe
        line search; then an "epoch" is one L-BFGS iteration: often more accuracy per second for
        small committees on a few thousand frames)
    lr, warm_lr : Adam learning rates of the first and of later fits
    final_lr_fraction : the cosine schedule ends at ``lr * final_lr_fraction``
    batch_size : frames per step; energy_weight, force_weight : loss weights (A^2 for forces)
    dtype : "float64" or "float32" (the model is trained, and left, in this precision)
    fast : use the precomputed-Jacobian path when it applies (checked first)
    bootstrap : each member sees its own bootstrap resample of the training frames (redrawn every fit),
        which makes the members disagree more where data are thin (a more honest spread)
    seed : shuffling seed
    """

    seed_epochs: int = 300
    epochs: int = 60
    optimizer: str = "adam"
    lr: float = 3e-3
    warm_lr: float = 1e-3
    final_lr_fraction: float = 0.1
    batch_size: int = 32
    energy_weight: float = 1.0
    force_weight: float = 0.005
    dtype: str = "float64"
    fast: bool = True
    bootstrap: bool = False
    seed: int = 0

    def __post_init__(self):
        for name in ("seed_epochs", "epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"RefitSettings.{name} must be a whole number >= 1, got {v!r}")
        for name in ("lr", "warm_lr", "final_lr_fraction"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 < v and math.isfinite(v)):
                raise InputError(f"RefitSettings.{name} must be a positive number, got {v!r}")
        if self.final_lr_fraction > 1:
            raise InputError("RefitSettings.final_lr_fraction must be <= 1")
        for name in ("energy_weight", "force_weight"):
            if not float(getattr(self, name)) >= 0:
                raise InputError(f"RefitSettings.{name} must be >= 0")
        if self.optimizer not in ("adam", "lbfgs"):
            raise InputError(f"RefitSettings.optimizer must be 'adam' or 'lbfgs', got {self.optimizer!r}")
        if self.dtype not in ("float64", "float32"):
            raise InputError(f"RefitSettings.dtype must be 'float64' or 'float32', got {self.dtype!r}")


class _DescriptorCache:
    """Per-frame ACSF descriptors [F, n, D] and Jacobians [F, n*D, n*3] of one BP model (append-only)."""

    def __init__(self, model, numbers: torch.Tensor, dtype):
        from ..surrogates.bp import element_groups

        self.model, self.numbers, self.dtype = model, numbers.clone(), dtype
        self.n = int(numbers.numel())
        self.g = None
        self.jac = None
        self.energy = None
        self.forces = None
        self.n_frames = 0
        self._groups = {}
        self._element_groups = element_groups

    def extend(self, dataset: Dataset) -> None:
        from ..surrogates.graph import build_graph
        import torch.autograd.forward_ad as fwAD

        new = torch.arange(self.n_frames, len(dataset))
        if new.numel() == 0:
            return
        acsf, n = self.model.acsf, self.n
        gs, js = [], []
        for k in range(0, new.numel(), 128):
            frames = new[k:k + 128]
            state, _, _ = dataset.batch(frames, torch.float64)
            b = len(frames)
            graph = build_graph(state, acsf.cutoff, triplets=True, triplet_cutoff=acsf.angular_cutoff)
            species = acsf.species(state.atomic_numbers)
            index = acsf.scatter_index(species, graph)
            pos = state.positions
            with torch.no_grad():
                g = acsf(pos, species, graph, index)
            d = g.shape[1]
            jac = torch.empty(b, n, d, n, 3, dtype=torch.float64)
            local = torch.arange(b * n) % n
            for j in range(n):  # one forward-mode pass per Cartesian direction of atom j
                for c in range(3):
                    tangent = torch.zeros_like(pos)
                    tangent[local == j, c] = 1.0
                    with fwAD.dual_level(), torch.no_grad():
                        dual = acsf(fwAD.make_dual(pos, tangent), species, graph, index)
                        jac[:, :, :, j, c] = fwAD.unpack_dual(dual).tangent.view(b, n, d)
            gs.append(g.view(b, n, d).to(self.dtype))
            js.append(jac.view(b, n * d, n * 3).to(self.dtype))
        idx = new
        e, f = dataset.energy[idx].to(self.dtype), dataset.forces[dataset.atom_index(idx)].to(self.dtype)
        parts = [(self.g, torch.cat(gs)), (self.jac, torch.cat(js)), (self.energy, e),
                 (self.forces, f.view(-1, n, 3))]
        self.g, self.jac, self.energy, self.forces = [new_ if old is None else torch.cat([old, new_])
                                                      for old, new_ in parts]
        self.n_frames = len(dataset)

    def _layout(self, b: int):
        hit = self._groups.get(b)
        if hit is None:
            numbers = self.numbers.repeat(b)
            species, order, counts, _ = self._element_groups(self.model.acsf, numbers, None)
            system = torch.arange(b).repeat_interleave(self.n)
            hit = (species, order, counts, system[order])
            self._groups[b] = hit
        return hit

    def member_energies_forces(self, frames: torch.Tensor, create_graph: bool):
        """``(E [M, B] eV, F [M, B, n, 3] eV/A)`` of the cached frames, differentiable in the weights."""
        model, n = self.model, self.n
        b = int(frames.numel())
        species, order, counts, system = self._layout(b)
        g = self.g[frames].reshape(b * n, -1)
        mean, std = model.feature_mean[species].to(g.dtype), model.feature_std[species].to(g.dtype)
        m = model.n_members
        with torch.enable_grad():
            x = ((g - mean) / std).unsqueeze(0).expand(m, -1, -1).clone().requires_grad_(True)
            out = model.mlp(x, order, counts)
            eps = out[..., 0] * model.energy_scale.to(g.dtype) + model.element_energy.to(g.dtype)[species[order]]
            energy = torch.zeros(m, b, dtype=eps.dtype).index_add(1, system, eps)
            (grad,) = torch.autograd.grad(energy.sum(), x, create_graph=create_graph)
        dg = (grad / std).reshape(m, b, -1).transpose(0, 1)  # [B, M, n*D]
        forces = -torch.bmm(dg, self.jac[frames]).view(b, m, n, 3).transpose(0, 1)
        return energy, forces


def _same_molecule(dataset: Dataset):
    """The atomic numbers of every frame when all frames hold the same molecule in one order, else None."""
    counts = dataset.n_atoms
    if len(dataset) == 0 or bool((counts != counts[0]).any()):
        return None
    numbers = dataset.numbers.view(len(dataset), int(counts[0]))
    return numbers[0].clone() if bool((numbers == numbers[0]).all()) else None


class CommitteeRefitter:
    """Fits a committee in rounds: :meth:`fit` once from scratch, then warm-started (see module doc).

    >>> # refit = CommitteeRefitter(model, RefitSettings(epochs=40))
    >>> # refit.fit(dataset, train_idx, val_idx)   # first call: normalisation + seed_epochs
    >>> # refit.fit(bigger_dataset, train_idx2, val_idx2)   # warm: epochs
    """

    def __init__(self, model, settings: RefitSettings | None = None):
        self.model = model
        self.settings = settings or RefitSettings()
        self.n_fits = 0
        self._cache = None
        self._fast_checked = None  # None: not decided yet; False: autograd path

    # ------------------------------------------------------------------ paths
    def _try_fast(self, dataset: Dataset) -> bool:
        from ..surrogates.base import AtomisticModel

        s = self.settings
        if self._fast_checked is not None:
            return bool(self._fast_checked)
        self._fast_checked = False
        if not s.fast or not all(hasattr(self.model, a) for a in ("acsf", "mlp", "feature_mean", "feature_std",
                                                                  "element_energy", "energy_scale")):
            return False
        if getattr(self.model, "heteroscedastic", False):
            return False
        numbers = _same_molecule(dataset)
        if numbers is None:
            return False
        n, d = int(numbers.numel()), int(self.model.acsf.n_features)
        itemsize = 4 if s.dtype == "float32" else 8
        if 4 * len(dataset) * n * d * n * 3 * itemsize > MAX_JACOBIAN_BYTES:  # room for ~4x growth
            log.info("refit: descriptor Jacobians would exceed %.1f GB; using autograd", MAX_JACOBIAN_BYTES / 1e9)
            return False
        cache = _DescriptorCache(self.model, numbers, getattr(torch, s.dtype))
        probe = dataset.subset(torch.arange(min(3, len(dataset))))
        cache.extend(probe)
        with torch.no_grad():
            e_fast, f_fast = cache.member_energies_forces(torch.arange(len(probe)), create_graph=False)
            state, _, _ = probe.batch(torch.arange(len(probe)), getattr(torch, s.dtype))
            e_ref, f_ref, _ = AtomisticModel.member_energies_and_forces(self.model, state)  # plain autograd
        tol = 1e-4 if s.dtype == "float32" else 1e-8
        ok = (torch.allclose(e_fast.double(), e_ref.double(), rtol=tol, atol=tol)
              and torch.allclose(f_fast.reshape(f_ref.shape).double(), f_ref.double(), rtol=tol, atol=tol))
        if not ok:
            log.warning("refit: the precomputed-descriptor path disagrees with the model; using autograd")
            return False
        self._cache = _DescriptorCache(self.model, numbers, getattr(torch, s.dtype))
        self._fast_checked = True
        return True

    def _normalise(self, dataset: Dataset, train_idx) -> None:
        self.model.to(torch.float64)
        if hasattr(self.model, "fit_normalisation"):
            self.model.fit_normalisation(dataset, train_idx)
        else:
            _prepare(self.model, dataset, train_idx, TrainConfig(seed=self.settings.seed))

    # ------------------------------------------------------------------ fit
    def fit(self, dataset: Dataset, train_idx, val_idx=None) -> dict:
        """One round's fit on ``dataset[train_idx]``; returns a history dict (losses, epochs, seconds, path).

        The dataset must grow append-only between calls (earlier frames unchanged, in order).
        """
        s = self.settings
        train_idx = torch.as_tensor(train_idx, dtype=torch.long)
        if train_idx.numel() < 2:
            raise InputError("a committee fit needs at least 2 training frames")
        val_idx = torch.as_tensor([] if val_idx is None else val_idx, dtype=torch.long)
        first = self.n_fits == 0
        t0 = time.perf_counter()
        if first:
            self._normalise(dataset, train_idx)
        dtype = getattr(torch, s.dtype)
        self.model.to(dtype)
        fast = self._try_fast(dataset)
        if fast:
            self._cache.extend(dataset)
        epochs = s.seed_epochs if first else s.epochs
        lr = s.lr if first else s.warm_lr
        gen = torch.Generator().manual_seed(s.seed + 1000 * self.n_fits)
        opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        n_batches = math.ceil(train_idx.numel() / s.batch_size)
        total_steps = max(1, epochs * n_batches)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: s.final_lr_fraction + (1 - s.final_lr_fraction)
                                                  * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))
        cfg = TrainConfig(energy_weight=s.energy_weight, force_weight=s.force_weight, dtype=s.dtype)
        history = {"train_loss": [], "epochs": epochs, "lr": lr, "path": "descriptor-jacobian" if fast else "autograd",
                   "warm_start": not first, "n_train": int(train_idx.numel()), "n_validation": int(val_idx.numel())}
        boot = None
        if s.bootstrap:  # per-member multinomial counts over the training frames
            m, n_tr = self.model.n_members, train_idx.numel()
            draws = torch.randint(0, n_tr, (m, n_tr), generator=gen)
            boot = torch.zeros(m, n_tr, dtype=dtype).scatter_add_(1, draws, torch.ones(m, n_tr, dtype=dtype))
        self.model.train()
        if s.optimizer == "lbfgs":
            self._lbfgs(dataset, train_idx, cfg, fast, boot, epochs, history)
        for _ in range(epochs if s.optimizer == "adam" else 0):
            order = torch.randperm(train_idx.numel(), generator=gen)
            perm = train_idx[order]
            total = 0.0
            for k in range(0, perm.numel(), s.batch_size):
                frames = perm[k:k + s.batch_size]
                weights = None if boot is None else boot[:, order[k:k + s.batch_size]]
                loss = self._batch_loss(dataset, frames, cfg, fast, create_graph=True, weights=weights).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach())
            history["train_loss"].append(total / n_batches / self.model.n_members)
        self.model.eval()
        if val_idx.numel():
            with torch.no_grad():
                history["val_loss"] = float(sum(float(self._batch_loss(dataset, val_idx[k:k + 256], cfg, fast,
                                                                       create_graph=False).mean()) *
                                                min(256, val_idx.numel() - k)
                                                for k in range(0, val_idx.numel(), 256)) / val_idx.numel())
        history["seconds"] = time.perf_counter() - t0
        history["settings"] = asdict(s)
        self.n_fits += 1
        log.info("refit %d (%s, %s): %d epochs on %d frames, final train loss %.3g, %.1f s", self.n_fits,
                 "warm" if not first else "from scratch", history["path"], epochs, train_idx.numel(),
                 history["train_loss"][-1], history["seconds"])
        return history

    def _lbfgs(self, dataset, train_idx, cfg, fast, boot, iterations, history, chunk: int = 512):
        """Full-batch L-BFGS for ``iterations`` iterations (the loss is the mean over all training frames,
        accumulated chunk by chunk)."""
        opt = torch.optim.LBFGS(self.model.parameters(), lr=1.0, max_iter=int(iterations), history_size=20,
                                line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)
        n = train_idx.numel()

        def closure():
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for k in range(0, n, chunk):
                frames = train_idx[k:k + chunk]
                w = None if boot is None else boot[:, k:k + chunk]
                part = self._batch_loss(dataset, frames, cfg, fast, create_graph=True, weights=w)
                share = frames.numel() / n if boot is None else (w.sum(1) / boot.sum(1))
                loss = (part * share).sum()
                loss.backward()
                total += float(loss.detach())
            history["train_loss"].append(total / self.model.n_members)
            return torch.tensor(total)

        opt.step(closure)

    def _batch_loss(self, dataset, frames, cfg: TrainConfig, fast: bool, create_graph: bool, weights=None):
        """Per-member loss [M] on one batch (the loss of :func:`fesurf.training.fit._losses`);
        ``weights`` [M, B]: per-member frame weights (bootstrap counts)."""
        if not fast:
            state, energy, forces = dataset.batch(frames, getattr(torch, self.settings.dtype))
            if not create_graph:
                with torch.enable_grad():
                    return _losses(self.model, state, energy, forces, cfg, weights).detach()
            return _losses(self.model, state, energy, forces, cfg, weights)
        cache = self._cache
        e_pred, f_pred = cache.member_energies_forces(frames, create_graph=create_graph)
        n = cache.n
        de = (e_pred - cache.energy[frames]) / n
        df2 = ((f_pred - cache.forces[frames]) ** 2).sum((-1, -2)) / (3 * n)
        per_frame = cfg.energy_weight * de ** 2 + cfg.force_weight * df2  # [M, B]
        if weights is not None:
            return (per_frame * weights).sum(1) / weights.sum(1).clamp_min(1e-12)
        return per_frame.mean(1)
