"""Diabatic-matrix models: a network (or an analytic model) gives the symmetric
n x n diabatic Hamiltonian H(R); adiabatic energies are its eigenvalues.

Why: adiabatic surfaces have cusps at conical intersections that a smooth
single-surface fit cannot hold. H(R) is smooth through the seam; the
singularity sits in the eigenvalue step, which is done exactly.

Pieces
------
========================= ========================================
``DiabaticHamiltonian``   base: ``diabatic_matrix(state) -> [n_systems, n, n]`` (eV),
                          eigen-decomposition (closed form for 2 x 2, ``eigh`` beyond),
                          adiabatic energies, Hellmann-Feynman forces, NACs.
``DiabaticModel``         the learned one: diagonals are extensive sums of atomic
                          terms, couplings come from a pooled readout; pluggable
                          feature front end (``CartesianFeatures``, ``PairDistanceFeatures``
                          or any module ``state -> [n_atoms, F]`` with ``n_features``).
``AdiabaticPotential``    a :class:`~fesurf.potentials.Potential` for one adiabatic state.
``DiabaticCV``            smooth CVs H_ii - H_jj and |H_ij|.
``fit_diabatic``          training on adiabatic energies (and forces) with eigen-free losses.
``nac_loss``              sign-insensitive NAC loss.
========================= ========================================

Forces come from Hellmann-Feynman, ``F_i = -U_i^T (dH/dR) U_i``, evaluated as the
autograd gradient of ``U_i^T H U_i`` with the eigenvectors held fixed: no
derivative of ``eigvalsh`` is ever taken, so nothing is NaN at a degeneracy
(there the force is that of one of the two branches). Second derivatives
(Hessians) of adiabatic energies are therefore not available.

Units: energies eV, positions Angstrom, forces eV/A, NACs 1/A.

Example
-------
>>> import torch
>>> from fesurf.state import State
>>> from fesurf.surrogates.diabatic import DiabaticModel, CartesianFeatures, AdiabaticPotential
>>> model = DiabaticModel(CartesianFeatures((0, 1)), n_states=2, hidden=(8,))
>>> s = State(positions=[[0.1, 0.2, 0.0]], atomic_numbers=[1])
>>> tuple(model.adiabatic_energies(s).shape)
(1, 2)
>>> e, f = AdiabaticPotential(model, 0).energy_and_forces(s)
"""
from __future__ import annotations

import json
import logging
import math
from typing import Optional, Sequence

import torch
from torch import nn

from ..errors import InputError
from ..potentials.base import Potential
from ..state import State

log = logging.getLogger(__name__)

__all__ = [
    "DiabaticHamiltonian", "DiabaticModel", "CartesianFeatures", "PairDistanceFeatures",
    "AdiabaticPotential", "DiabaticCV", "fit_diabatic", "nac_loss", "eigen_free_targets",
    "load_diabatic_model",
]

#: gaps below this (eV) count as an exact degeneracy when dividing for NACs
DEGENERACY_EPS = 1e-10


# ====================================================================== eigen step
def _eigh_2x2(h: torch.Tensor):
    """Closed-form eigenvalues/vectors of a batch of symmetric 2x2 matrices (no autograd).

    Returns (energies [n, 2] ascending, vectors [n, 2, 2] with vectors[:, :, i] the i-th).
    """
    h11, h22, h12 = h[:, 0, 0], h[:, 1, 1], h[:, 0, 1]
    mean = 0.5 * (h11 + h22)
    half_diff = 0.5 * (h11 - h22)
    rad = torch.sqrt(half_diff**2 + h12**2)
    e = torch.stack([mean - rad, mean + rad], dim=1)
    # mixing angle: tan(2 theta) = 2 h12 / (h11 - h22); atan2 is defined (0) at the degeneracy
    theta = 0.5 * torch.atan2(h12, half_diff)
    c, s = torch.cos(theta), torch.sin(theta)
    # upper state (E = mean + rad) is (c, s); lower state is (-s, c)
    u = torch.stack([torch.stack([-s, c], dim=1), torch.stack([c, s], dim=1)], dim=2)
    return e, u


def eigh_frozen(h: torch.Tensor):
    """Eigen-decomposition of ``h`` [n, k, k] without autograd: (energies [n, k], vectors [n, k, k])."""
    hd = h.detach()
    if hd.shape[-1] == 2:
        return _eigh_2x2(hd)
    e, u = torch.linalg.eigh(hd)
    return e, u


class DiabaticHamiltonian(nn.Module):
    """Base class: anything that gives a symmetric diabatic matrix ``[n_systems, n, n]`` (eV).

    Subclasses implement :meth:`diabatic_matrix` and set ``n_states``,
    ``translation_invariant`` and ``rotation_invariant``. Everything else
    (adiabatic energies, forces, couplings) is derived here.
    """

    n_states: int = 2
    translation_invariant: bool = True
    rotation_invariant: bool = True

    def diabatic_matrix(self, state: State) -> torch.Tensor:
        raise NotImplementedError

    def select_systems(self, systems):
        """The Hamiltonian restricted to some systems (no per-system parameters: itself)."""
        return self

    # ---------------------------------------------------------------- adiabatic
    def adiabatic_energies(self, state: State) -> torch.Tensor:
        """Adiabatic energies ``[n_systems, n_states]`` (eV, ascending), no graph."""
        with torch.no_grad():
            return eigh_frozen(self.diabatic_matrix(state))[0]

    def _expectations(self, state: State, pairs):
        """Differentiable ``U_i^T H U_j`` for the given (i, j) pairs, eigenvectors frozen."""
        h = self.diabatic_matrix(state)
        e, u = eigh_frozen(h)
        out = [torch.einsum("na,nab,nb->n", u[:, :, i], h, u[:, :, j]) for i, j in pairs]
        return out, e, u

    def adiabatic_energies_and_forces(self, state: State, states: Optional[Sequence[int]] = None):
        """Energies ``[n_systems, k]`` (eV) and Hellmann-Feynman forces ``[n_atoms, 3, k]`` (eV/A).

        ``states``: adiabatic state indices (default: all).
        """
        states = list(range(self.n_states)) if states is None else [self._check_index(i) for i in states]
        with torch.enable_grad():
            pos = state.positions.detach().requires_grad_(True)
            vals, e, _ = self._expectations(state.replace(positions=pos), [(i, i) for i in states])
            forces = []
            for k, v in enumerate(vals):
                (g,) = torch.autograd.grad(v.sum(), pos, retain_graph=k < len(vals) - 1, allow_unused=True)
                forces.append(torch.zeros_like(pos) if g is None else -g)
        return e[:, states].detach(), torch.stack(forces, dim=-1).detach()

    def couplings(self, state: State, i: int = 0, j: int = 1) -> dict:
        """Nonadiabatic coupling between adiabatic states ``i`` and ``j``.

        Returns a dict of
        ``"h"``   ``[n_atoms, 3]`` interstate coupling vector ``U_i^T (dH/dR) U_j`` (eV/A),
        ``"gap"`` ``[n_systems]`` ``E_j - E_i`` (eV),
        ``"nac"`` ``[n_atoms, 3]`` ``d_ij = h / (E_j - E_i)`` (1/A). Its overall sign
        is arbitrary (eigenvector phase). Where ``|gap| < DEGENERACY_EPS`` the
        coupling is singular: those systems get ``inf`` magnitude replaced by
        ``h / DEGENERACY_EPS`` (finite, huge) and a warning is logged, never NaN.

        >>> # d = model.couplings(state, 0, 1)["nac"]
        """
        i, j = self._check_index(i), self._check_index(j)
        if i == j:
            raise InputError("couplings need two different adiabatic states, e.g. i=0, j=1")
        with torch.enable_grad():
            pos = state.positions.detach().requires_grad_(True)
            (v,), e, _ = self._expectations(state.replace(positions=pos), [(i, j)])
            (g,) = torch.autograd.grad(v.sum(), pos, allow_unused=True)
        h = torch.zeros_like(pos) if g is None else g.detach()
        gap = (e[:, j] - e[:, i]).detach()
        small = gap.abs() < DEGENERACY_EPS
        if bool(small.any()):
            log.warning("NAC requested at %d degenerate geometries (|gap| < %.0e eV); returning h/eps there",
                        int(small.sum()), DEGENERACY_EPS)
        safe = torch.where(small, torch.full_like(gap, DEGENERACY_EPS), gap)
        return {"h": h, "gap": gap, "nac": h / safe[state.system_index][:, None]}

    def _check_index(self, i):
        if not isinstance(i, (int,)) or not 0 <= i < self.n_states:
            raise InputError(f"adiabatic state index must be an int in 0..{self.n_states - 1}, got {i!r}")
        return i


# ====================================================================== front ends
class CartesianFeatures(nn.Module):
    """Per-atom features = chosen Cartesian components of each atom (A), minus ``origin``.

    For model systems (a particle on a 2D E x e surface). Not invariant.

    >>> CartesianFeatures((0, 1)).n_features
    2
    """

    translation_invariant = False
    rotation_invariant = False

    def __init__(self, components: Sequence[int] = (0, 1), origin: Sequence[float] | None = None):
        super().__init__()
        comps = [int(c) for c in components]
        if not comps or any(c not in (0, 1, 2) for c in comps):
            raise InputError(f"components must be a non-empty subset of 0, 1, 2 (x, y, z), got {components!r}")
        self.components = comps
        origin = [0.0] * len(comps) if origin is None else list(origin)
        if len(origin) != len(comps):
            raise InputError("origin needs one value per component")
        self.register_buffer("origin", torch.tensor(origin, dtype=torch.float64))
        self.n_features = len(comps)

    def forward(self, state: State) -> torch.Tensor:
        return state.positions[:, self.components] - self.origin.to(state.dtype)

    def config(self) -> dict:
        return {"type": "CartesianFeatures", "components": self.components, "origin": self.origin.tolist()}


class PairDistanceFeatures(nn.Module):
    """Features for a fixed-size molecule of ``n_atoms`` atoms (rotation/translation invariant).

    Per atom: one-hot of its slot in the molecule, then all interatomic
    distances of its molecule in fixed pair order, scaled as ``(r - r0) / width``.
    Slot-aware on purpose: diabatic states are not permutation invariant (for
    H3 the E-mode combinations of the distances give H11 - H22 and H12).

    >>> PairDistanceFeatures(3).n_features
    6
    """

    translation_invariant = True
    rotation_invariant = True

    def __init__(self, n_atoms: int, r0: float = 1.0, width: float = 0.2):
        super().__init__()
        if int(n_atoms) < 2:
            raise InputError("PairDistanceFeatures needs n_atoms >= 2")
        if width <= 0:
            raise InputError("width must be positive (A)")
        self.n_atoms, self.r0, self.width = int(n_atoms), float(r0), float(width)
        iu = torch.triu_indices(self.n_atoms, self.n_atoms, 1)
        self.register_buffer("pair_i", iu[0])
        self.register_buffer("pair_j", iu[1])
        self.n_features = self.n_atoms + iu.shape[1]

    def forward(self, state: State) -> torch.Tensor:
        n = self.n_atoms
        if state.n_atoms != n * state.n_systems or bool((state.atoms_per_system != n).any()):
            raise InputError(f"PairDistanceFeatures was built for {n}-atom molecules; every system must have {n} atoms")
        pos = state.positions.view(state.n_systems, n, 3)
        d = (pos[:, self.pair_i] - pos[:, self.pair_j]).norm(dim=-1)  # [ns, n_pairs]
        d = (d - self.r0) / self.width
        onehot = torch.eye(n, dtype=pos.dtype).expand(state.n_systems, n, n)
        return torch.cat([onehot, d[:, None, :].expand(-1, n, -1)], dim=-1).reshape(state.n_atoms, -1)

    def config(self) -> dict:
        return {"type": "PairDistanceFeatures", "n_atoms": self.n_atoms, "r0": self.r0, "width": self.width}


_FRONT_ENDS = {"CartesianFeatures": CartesianFeatures, "PairDistanceFeatures": PairDistanceFeatures}


class _SkipMLP(nn.Module):
    """``Linear(x) + MLP(x)``: the linear path lets the simplest (linear) diabatic
    coupling be represented exactly, which keeps the mixing angle smooth."""

    def __init__(self, n_in, hidden, n_out, dtype):
        super().__init__()
        layers, last = [], n_in
        for h in hidden:
            layers += [nn.Linear(last, h, dtype=dtype), nn.SiLU()]
            last = h
        layers.append(nn.Linear(last, n_out, dtype=dtype))
        self.mlp = nn.Sequential(*layers)
        self.linear = nn.Linear(n_in, n_out, bias=False, dtype=dtype)

    def forward(self, x):
        return self.linear(x) + self.mlp(x)


def _mlp(n_in, hidden, n_out, dtype):
    return _SkipMLP(n_in, hidden, n_out, dtype)


# ====================================================================== the model
class DiabaticModel(DiabaticHamiltonian):
    """Learned symmetric diabatic matrix H(R) (eV).

    Diagonals: ``H_ii = shift + sum_atoms eps_i(features_a)`` (extensive).
    Couplings: ``H_ij = readout_ij(sum_atoms phi(features_a))`` (pooled readout).

    Parameters
    ----------
    representation : nn.Module
        ``state -> [n_atoms, F]`` with attribute ``n_features`` (and optionally
        ``translation_invariant`` / ``rotation_invariant`` and ``config()``).
    n_states : int (>= 2)
    hidden : hidden layer widths of the atomic and readout networks.
    dtype : torch.float64 by default (keep float64 near seams).

    >>> m = DiabaticModel(PairDistanceFeatures(3), n_states=2)
    >>> m.n_pairs
    1
    """

    def __init__(self, representation: nn.Module, n_states: int = 2, hidden: Sequence[int] = (32, 32),
                 dtype=torch.float64):
        super().__init__()
        if int(n_states) < 2:
            raise InputError("a diabatic model needs n_states >= 2")
        n_feat = getattr(representation, "n_features", None)
        if not isinstance(n_feat, int) or n_feat < 1:
            raise InputError("representation must have an integer attribute n_features (features per atom)")
        self.representation = representation
        self.n_states = int(n_states)
        self.hidden = [int(h) for h in hidden]
        iu = torch.triu_indices(self.n_states, self.n_states, 1)
        self.register_buffer("iu", iu)
        self.n_pairs = iu.shape[1]
        self.atomic = _mlp(n_feat, self.hidden, self.n_states, dtype)
        self.embed = _mlp(n_feat, self.hidden[:1], self.hidden[-1] if self.hidden else 16, dtype)
        self.readout = _mlp(self.hidden[-1] if self.hidden else 16, self.hidden[1:], self.n_pairs, dtype)
        self.register_buffer("shift", torch.zeros((), dtype=dtype))
        self.register_buffer("feature_mean", torch.zeros(n_feat, dtype=dtype))
        self.register_buffer("feature_std", torch.ones(n_feat, dtype=dtype))
        self.translation_invariant = bool(getattr(representation, "translation_invariant", False))
        self.rotation_invariant = bool(getattr(representation, "rotation_invariant", False))

    def _features(self, state):
        f = self.representation(state)
        return (f - self.feature_mean) / self.feature_std

    def diabatic_matrix(self, state: State) -> torch.Tensor:
        """Symmetric ``[n_systems, n_states, n_states]`` diabatic matrix in eV."""
        f = self._features(state)
        diag = state.sum_per_system(self.atomic(f)) + self.shift  # [ns, n]
        pooled = state.sum_per_system(self.embed(f))
        off = self.readout(pooled)  # [ns, n_pairs]
        ns, n = state.n_systems, self.n_states
        h = torch.zeros(ns, n, n, dtype=diag.dtype, device=diag.device)
        h = h + torch.diag_embed(diag)
        offm = torch.zeros(ns, n, n, dtype=diag.dtype, device=diag.device)
        offm = offm.index_put((torch.arange(ns)[:, None], self.iu[0][None], self.iu[1][None]), off)
        return h + offm + offm.transpose(1, 2)

    # ------------------------------------------------------------ persistence
    def config(self) -> dict:
        rep = self.representation
        if not hasattr(rep, "config"):
            raise InputError("this representation has no config(); save the state_dict yourself")
        return {"representation": rep.config(), "n_states": self.n_states, "hidden": self.hidden}

    def save(self, path) -> None:
        """Save state dict + JSON config (load with :func:`load_diabatic_model`)."""
        torch.save({"config": json.dumps(self.config()), "state_dict": self.state_dict()}, path)


def load_diabatic_model(path) -> DiabaticModel:
    """Load a model written by :meth:`DiabaticModel.save` (``weights_only=True``).

    >>> # model = load_diabatic_model("h3.pt")
    """
    from .io import check_finite_parameters, read_weights_file

    blob = read_weights_file(path, "diabatic model file")
    try:
        cfg = json.loads(blob["config"])
        rep_cfg = dict(cfg["representation"])
        kind = rep_cfg.pop("type")
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path} is not a fesurf diabatic model file (config: {exc})") from None
    cls = _FRONT_ENDS.get(kind)
    if cls is None:
        raise InputError(f"unknown representation {kind!r} in {path}; known: {sorted(_FRONT_ENDS)}")
    try:
        model = DiabaticModel(cls(**rep_cfg), cfg["n_states"], cfg["hidden"])
        model.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise InputError(f"{path}: the stored weights do not match its config ({str(exc).splitlines()[0][:200]})") \
            from None
    check_finite_parameters(model, path)
    return model


# ====================================================================== Potential
class AdiabaticPotential(Potential):
    """The adiabatic surface ``state_index`` of a diabatic Hamiltonian, as a Potential.

    ``energy`` is ``U_i^T H U_i`` with the eigenvectors frozen: its value is the
    eigenvalue and its autograd gradient is the Hellmann-Feynman force, so MD,
    biases and umbrella sampling run on it unchanged. Exact away from seams; at
    a seam the force is that of one branch (finite).

    >>> # pot = AdiabaticPotential(model, 0); integrator = Langevin(pot, 1.0, 300.0, 0.01, seed=0)
    """

    def __init__(self, hamiltonian: DiabaticHamiltonian, state_index: int = 0):
        super().__init__()
        if not isinstance(hamiltonian, DiabaticHamiltonian):
            raise InputError("AdiabaticPotential needs a DiabaticHamiltonian (e.g. a DiabaticModel)")
        self.hamiltonian = hamiltonian
        self.state_index = hamiltonian._check_index(state_index)
        self.translation_invariant = hamiltonian.translation_invariant
        self.rotation_invariant = hamiltonian.rotation_invariant

    def select_systems(self, systems):
        return AdiabaticPotential(self.hamiltonian.select_systems(systems), self.state_index)

    def energy(self, state: State) -> torch.Tensor:
        (v,), _, _ = self.hamiltonian._expectations(state, [(self.state_index, self.state_index)])
        return v


# ====================================================================== CVs
def _cv_base():
    from ..cv import CV  # layer 3; imported lazily so the surrogate layer does not depend on it

    return CV


class DiabaticCV(_cv_base()):
    """Smooth diabatic collective variables of a diabatic Hamiltonian.

    ``kind="difference"``: ``H_ii - H_jj`` (eV); ``kind="coupling"``:
    ``|H_ij|`` smoothed as ``sqrt(H_ij^2 + delta^2)`` (eV; ``delta`` default 1e-6 eV)
    so its derivative exists where the coupling changes sign.

    >>> # cv = DiabaticCV(model, "difference"); cv(state)
    """

    def __init__(self, hamiltonian: DiabaticHamiltonian, kind: str = "difference", i: int = 0, j: int = 1,
                 delta: float = 1e-6):
        super().__init__()
        if kind not in ("difference", "coupling"):
            raise InputError(f"kind must be 'difference' or 'coupling', got {kind!r}")
        if i == j:
            raise InputError("a diabatic CV needs two different diabatic states i != j")
        self.hamiltonian, self.kind = hamiltonian, kind
        self.i, self.j = hamiltonian._check_index(i), hamiltonian._check_index(j)
        self.delta = float(delta)
        self.translation_invariant = hamiltonian.translation_invariant
        self.rotation_invariant = hamiltonian.rotation_invariant
        self.length_power = None

    def compute(self, state: State) -> torch.Tensor:
        h = self.hamiltonian.diabatic_matrix(state)
        if self.kind == "difference":
            return h[:, self.i, self.i] - h[:, self.j, self.j]
        return torch.sqrt(h[:, self.i, self.j] ** 2 + self.delta**2)

    def to_spec(self) -> dict:
        return {"type": "DIABATIC_" + self.kind.upper(), "states": [self.i, self.j]}

    def label(self):
        return f"DIABATIC_{self.kind.upper()}({self.i},{self.j})"


# ====================================================================== training
def eigen_free_targets(energies: torch.Tensor, forces: Optional[torch.Tensor] = None,
                       system_index: Optional[torch.Tensor] = None):
    """Eigen-free targets from adiabatic data.

    For n states: mean ``m = sum E_i / n`` and central power sums
    ``mu_k = sum_i (E_i - m)^k / n`` for k = 2..n (for two states ``mu_2 =
    gap^2 / 4``, i.e. the squared gap (H11-H22)^2 + 4 H12^2 over 4). With forces
    ``[n_atoms, 3, n]`` (eV/A) also their gradients ``[n_atoms, 3]`` (eV/A, dE/dR).

    Returns ``(values [n_systems, n], gradients [n_atoms, 3, n] or None)``;
    column 0 is the mean, column k-1 is mu_k.
    """
    e = energies
    n = e.shape[1]
    m = e.mean(dim=1, keepdim=True)
    dev = e - m
    vals = [m[:, 0]] + [(dev**k).mean(dim=1) for k in range(2, n + 1)]
    values = torch.stack(vals, dim=1)
    if forces is None:
        return values, None
    g = -forces  # dE/dR [n_atoms, 3, n]
    gm = g.mean(dim=-1, keepdim=True)
    dev_a = dev[system_index]  # [n_atoms, n]
    grads = [gm[..., 0]] + [(k * dev_a[:, None, :] ** (k - 1) * (g - gm)).mean(dim=-1) for k in range(2, n + 1)]
    return values, torch.stack(grads, dim=-1)


def _model_invariants(h: torch.Tensor):
    n = h.shape[-1]
    m = torch.diagonal(h, dim1=1, dim2=2).mean(dim=1)
    c = h - m[:, None, None] * torch.eye(n, dtype=h.dtype)
    vals, p = [m], c
    for k in range(2, n + 1):
        p = p @ c
        vals.append(torch.diagonal(p, dim1=1, dim2=2).sum(dim=1) / n)
    return torch.stack(vals, dim=1)


def nac_loss(h_pred: torch.Tensor, h_ref: torch.Tensor, system_index: torch.Tensor) -> torch.Tensor:
    """Sign-insensitive NAC loss: mean over systems of ``min(|p - r|^2, |p + r|^2)``.

    ``h_pred``, ``h_ref``: ``[n_atoms, 3]`` coupling vectors (the overall sign of
    each system's vector is arbitrary). Returns a scalar.

    >>> import torch
    >>> r = torch.ones(2, 3, dtype=torch.float64); idx = torch.zeros(2, dtype=torch.long)
    >>> float(nac_loss(-r, r, idx))
    0.0
    """
    ns = int(system_index.max()) + 1
    minus = torch.zeros(ns, dtype=h_pred.dtype).index_add_(0, system_index, ((h_pred - h_ref) ** 2).sum(dim=1))
    plus = torch.zeros(ns, dtype=h_pred.dtype).index_add_(0, system_index, ((h_pred + h_ref) ** 2).sum(dim=1))
    return torch.minimum(minus, plus).mean()


def _lbfgs(params, loss_fn, steps: int) -> None:
    """Minimise ``loss_fn() -> (loss, terms)`` over ``params`` with strong-Wolfe L-BFGS."""
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=steps, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-14, history_size=50)

    def closure():
        opt.zero_grad()
        loss, _ = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)


def fit_diabatic(model: DiabaticModel, state: State, energies, forces=None, *, nac=None, nac_pair=(0, 1),
                 epochs: int = 2000, lr: float = 3e-3, force_weight: float = 1.0, nac_weight: float = 0.1,
                 lbfgs_steps: int = 200, gap_floor: float = 0.02, smoothness: float = 1e-5, seed: int = 0, progress=None) -> dict:
    """Fit a diabatic model to adiabatic energies (and forces) with eigen-free losses.

    Parameters
    ----------
    model : DiabaticModel (modified in place)
    state : State holding all training configurations (one system each).
    energies : ``[n_systems, n_states]`` adiabatic energies in eV (ascending per row).
    forces : optional ``[n_atoms, 3, n_states]`` adiabatic forces in eV/A.
    nac : optional ``[n_atoms, 3]`` reference coupling vectors ``h_ij`` (eV/A) for
        the pair ``nac_pair``; compared sign-insensitively (two states only).
    epochs, lr : Adam steps and learning rate; then ``lbfgs_steps`` of L-BFGS.
    force_weight : weight of the gradient loss (A^2 relative to energies).
    smoothness : L2 penalty on the weights of the nonlinear paths (the linear
        skip paths are free). Energies alone do not fix the diabatic rotation
        (any smooth mixing angle fits them); this prior picks the smoothest,
        which is what makes the NACs physical.
    gap_floor : the squared-gap residual is divided by ``|mu_2| + gap_floor * std(mu_2)``
        (relative accuracy near seams).
    seed : seeds parameter initialisation.

    Losses never differentiate an eigen-decomposition: for two states the
    mean energy and the squared gap ``(H11-H22)^2 + 4 H12^2`` (and their
    gradients); for more states the central power sums of H (characteristic
    polynomial information).

    Returns a dict with the final loss terms (energy RMSE of the invariants in eV).

    >>> # fit_diabatic(model, train_state, E_train, F_train, epochs=500)
    """
    from tqdm.auto import tqdm

    e = torch.as_tensor(energies, dtype=torch.float64)
    n = model.n_states
    if e.shape != (state.n_systems, n):
        raise InputError(f"energies must have shape [n_systems={state.n_systems}, n_states={n}], got {tuple(e.shape)}")
    if not torch.isfinite(e).all():
        raise InputError("energies contain NaN/inf; drop failed oracle points before fitting")
    f = None
    if forces is not None:
        f = torch.as_tensor(forces, dtype=torch.float64)
        if f.shape != (state.n_atoms, 3, n):
            raise InputError(f"forces must have shape [n_atoms={state.n_atoms}, 3, n_states={n}], got {tuple(f.shape)}")
    if nac is not None and n != 2:
        raise InputError("the NAC loss is implemented for two-state models")
    e = torch.sort(e, dim=1).values
    tv, tg = eigen_free_targets(e, f, state.system_index)
    torch.manual_seed(seed)
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            layer.reset_parameters()
    for layer in model.modules():
        if isinstance(layer, _SkipMLP):
            nn.init.zeros_(layer.mlp[-1].weight)
            nn.init.zeros_(layer.mlp[-1].bias)
    with torch.no_grad():
        feats = model.representation(state)
        std = feats.std(dim=0)
        model.feature_mean.copy_(feats.mean(dim=0))
        model.feature_std.copy_(torch.where(std > 1e-12, std, torch.ones_like(std)))
        model.shift.copy_(e.mean())
    # scales so every invariant contributes comparably (mu_k has units eV^k)
    vscale = tv.std(dim=0).clamp_min(1e-6)
    gscale = tg.std(dim=(0, 1)).clamp_min(1e-6) if tg is not None else None
    # the gap invariants (mu_k, k >= 2) are weighted relatively: an absolute error
    # eps in gap^2 is a gap error sqrt(eps) at the seam, so small gaps need weight
    vden = vscale.expand_as(tv).clone()
    vden[:, 1:] = tv[:, 1:].abs() + gap_floor * vscale[1:]
    pos = state.positions.detach().requires_grad_(f is not None or nac is not None)

    def loss_fn():
        st = state.replace(positions=pos)
        h = model.diabatic_matrix(st)
        inv = _model_invariants(h)
        loss_e = (((inv - tv) / vden) ** 2).mean()
        terms = {"energy": loss_e}
        loss = loss_e
        if f is not None or nac is not None:
            grads = []
            cols = range(inv.shape[1]) if f is not None else []
            for k in cols:
                (g,) = torch.autograd.grad(inv[:, k].sum(), pos, create_graph=True)
                grads.append(g)
            if f is not None:
                gpred = torch.stack(grads, dim=-1)
                loss_g = (((gpred - tg) / gscale) ** 2).mean()
                terms["gradient"] = loss_g
                loss = loss + force_weight * loss_g
            if nac is not None:
                ev, u = _eigh_2x2(h.detach())
                # the eigenvectors are frozen: their error only shifts the loss by O(gap change)
                v = torch.einsum("na,nab,nb->n", u[:, :, nac_pair[0]], h, u[:, :, nac_pair[1]])
                (hv,) = torch.autograd.grad(v.sum(), pos, create_graph=True)
                loss_n = nac_loss(hv, torch.as_tensor(nac, dtype=torch.float64), state.system_index)
                terms["nac"] = loss_n
                loss = loss + nac_weight * loss_n
        if smoothness > 0:
            pen = sum((p**2).sum() for p in nonlinear)
            loss = loss + smoothness * pen
        return loss, terms

    nonlinear = [p for name, p in model.named_parameters() if ".mlp." in name and name.endswith("weight")]
    # Phase 1: the linear (skip) paths alone, with every nonlinear output at zero. The
    # smoothest diabatic rotation is then the starting point, so the full fit refines it
    # instead of landing, seed by seed, in one of the many rotations that fit energies
    # equally well (energies and forces alone do not fix the mixing angle).
    linear = [p for name, p in model.named_parameters() if ".linear." in name]
    if linear and lbfgs_steps > 0:
        _lbfgs(linear, loss_fn, lbfgs_steps)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1), eta_min=lr * 0.02)
    for _ in tqdm(range(epochs), disable=None if progress is None else not progress, desc="fit diabatic"):
        opt.zero_grad()
        loss, _ = loss_fn()
        loss.backward()
        opt.step()
        sched.step()
    if lbfgs_steps > 0:
        _lbfgs(list(model.parameters()), loss_fn, lbfgs_steps)
    loss, terms = loss_fn()
    out = {k: float(v.detach()) for k, v in terms.items()}
    out["loss"] = float(loss.detach())
    if not math.isfinite(out["loss"]):
        raise InputError("training diverged (non-finite loss); lower lr or check the data")
    log.info("fit_diabatic done: %s", out)
    return out
