"""Base class of CV-based biases: a Potential acting through collective variables.

A bias holds a list of CVs; its energy is a function of the CV values
``s [n_systems, n_cvs]`` alone (:meth:`CVBias.energy_from_cv`), so the same
object gives the bias of every window at every stored frame (the u_kn matrix
of umbrella sampling) without touching coordinates again.

Per-replica parameters are tensors ``[n_rows, n_cvs]`` with ``n_rows`` 1
(shared by all replicas) or ``n_systems`` (one row per replica/window).

Example
-------
>>> from fesurf.bias import RESTRAINT
>>> from fesurf.cv import POSITION
>>> RESTRAINT(POSITION(0, "x"), at=[-1.0, 0.0, 1.0], kappa=2.0).n_windows
3
"""
from __future__ import annotations

import torch

from ..cv import as_cv_list, evaluate_cvs
from ..errors import InputError
from ..potentials.base import Potential
from ..state import State


def per_window(value, n_cvs: int, name: str, positive: bool = False, allow_zero: bool = True) -> torch.Tensor:
    """A scalar / [n_cvs] / [n_windows] / [n_windows, n_cvs] parameter as a float64 [rows, n_cvs] tensor.

    A 1D input is read as one value per window when there is one CV, and as
    one value per CV (shared by all windows) when there are several; give a
    2D array ``[n_windows, n_cvs]`` for per-window values of several CVs.
    """
    try:
        t = torch.as_tensor(value, dtype=torch.float64).clone()
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"{name} must be numeric (a number, or one value per window/CV), got {value!r}") from None
    if t.ndim == 0:
        t = t.reshape(1, 1).expand(1, n_cvs).clone()
    elif t.ndim == 1:
        t = t[:, None] if n_cvs == 1 else t[None, :]
    if t.ndim != 2 or t.shape[1] != n_cvs or t.shape[0] == 0:
        raise InputError(f"{name} has shape {tuple(torch.as_tensor(value).shape)}; expected a number, [n_cvs={n_cvs}], "
                         f"[n_windows] (one CV) or [n_windows, {n_cvs}]")
    if not torch.isfinite(t).all():
        raise InputError(f"{name} must be finite, got {t.tolist()}")
    if positive and ((t < 0).any() or (not allow_zero and (t == 0).any())):
        raise InputError(f"{name} must be {'> 0' if not allow_zero else '>= 0'}, got {t.flatten().tolist()[:10]}")
    return t


class CVBias(Potential):
    """A Potential that depends on positions only through CVs.

    Subclasses implement :meth:`energy_from_cv` (eV, ``[n_rows_or_n_systems]``)
    and :meth:`_param_names` (the per-window parameter buffers).
    Invariance flags follow the CVs: a bias on a Cartesian POSITION is not
    translation/rotation invariant.
    """

    def __init__(self, cvs):
        super().__init__()
        self.cvs = torch.nn.ModuleList(as_cv_list(cvs))
        self.translation_invariant = all(c.translation_invariant for c in self.cvs)
        self.rotation_invariant = all(c.rotation_invariant for c in self.cvs)

    @property
    def n_cvs(self) -> int:
        return len(self.cvs)

    _param_names: tuple = ()

    @property
    def n_windows(self) -> int:
        """Number of parameter rows (1 when all replicas share the parameters)."""
        return max(getattr(self, n).shape[0] for n in self._param_names) if self._param_names else 1

    def cv_values(self, state: State) -> torch.Tensor:
        """[n_systems, n_cvs] CV values."""
        return evaluate_cvs(list(self.cvs), state)

    def difference(self, s: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """``s - ref`` per CV column, minimum image for periodic CVs."""
        cols = [c.difference(s[..., j], ref[..., j]) for j, c in enumerate(self.cvs)]
        return torch.stack(cols, dim=-1)

    def _rows(self, state: State):
        n = self.n_windows
        if n not in (1, state.n_systems):
            raise InputError(f"{type(self).__name__} has parameters for {n} windows but the State has "
                             f"{state.n_systems} systems; give one row per system, or a single shared row")

    def energy(self, state: State) -> torch.Tensor:
        self._rows(state)
        return self.energy_from_cv(self.cv_values(state))

    def energy_from_cv(self, s: torch.Tensor) -> torch.Tensor:
        """Bias (eV) from CV values ``s [n, n_cvs]`` with row i of the parameters for row i of s."""
        raise NotImplementedError

    def energy_and_cv_gradient(self, s: torch.Tensor):
        """``(V [n] eV, dV/ds [n, n_cvs] eV per CV unit)`` at CV values ``s [n, n_cvs]``.

        By autograd on :meth:`energy_from_cv` here; biases with a closed-form derivative override it.
        """
        with torch.enable_grad():
            s = s.detach().requires_grad_(True)
            v = self.energy_from_cv(s)
            (dv,) = torch.autograd.grad(v.sum(), s, allow_unused=True)
        return v.detach(), torch.zeros_like(s) if dv is None else dv

    def energy_and_forces(self, state: State, create_graph: bool = False):
        """``(V [n_systems] eV, forces [n_atoms, 3] eV/A)`` by the chain rule ``F = -dV/ds · ds/dx``.

        ``dV/ds`` comes from :meth:`energy_and_cv_gradient`, so a bias with thousands of hills costs one
        vector-Jacobian product of the CVs, not a backward pass through every hill. ``ds/dx`` is the CVs'
        closed form (:meth:`~fesurf.cv.CV.value_and_jacobian`) when every CV has one, else autograd
        through the CVs alone. ``create_graph=True`` (force matching) takes the
        plain autograd route of :class:`~fesurf.potentials.Potential`.
        """
        if create_graph:
            return super().energy_and_forces(state, create_graph=True)
        self._rows(state)
        parts = [cv.value_and_jacobian(state) for cv in self.cvs]
        if all(part is not None for part in parts):  # closed-form CV gradients: no autograd at all
            energy, dv_ds = self.energy_and_cv_gradient(torch.stack([part[0] for part in parts], dim=-1))
            forces = torch.zeros_like(state.positions)
            for j, (_, atoms, jac) in enumerate(parts):
                forces.index_add_(0, atoms.reshape(-1), (-dv_ds[:, j, None, None].to(jac.dtype) * jac).reshape(-1, 3))
            return energy.to(state.dtype), forces
        with torch.enable_grad():
            pos = state.positions.detach().requires_grad_(True)
            s = self.cv_values(state.replace(positions=pos))
            energy, dv_ds = self.energy_and_cv_gradient(s.detach())
            grad = None
            if s.requires_grad:
                (grad,) = torch.autograd.grad(s, pos, grad_outputs=dv_ds.to(s.dtype), allow_unused=True)
        forces = torch.zeros_like(pos) if grad is None else -grad
        return energy.to(pos.dtype), forces.detach()

    def window_energies(self, s: torch.Tensor) -> torch.Tensor:
        """``[n_windows, n_frames]`` bias (eV) of every window k at every frame's CV values ``s [n_frames, n_cvs]``.

        This is what umbrella sampling stores as reduced energies u_kn / beta.
        """
        s = torch.as_tensor(s, dtype=torch.float64)
        if s.ndim == 1:
            s = s[:, None]
        k, n = self.n_windows, s.shape[0]
        rows = self.select_systems(torch.arange(k).repeat_interleave(n).tolist())
        return rows.energy_from_cv(s.repeat(k, 1)).reshape(k, n)

    def select_systems(self, systems):
        systems = torch.as_tensor(systems, dtype=torch.long).reshape(-1)
        new = self._copy()
        for name in self._param_names:
            t = getattr(self, name)
            if t.shape[0] > 1:
                setattr(new, name, t[systems].clone())
        return new

    def _copy(self):
        import copy

        return copy.copy(self)._replace_buffers()

    def _replace_buffers(self):
        # copy.copy shares the _buffers dict; give the copy its own
        self._buffers = dict(self._buffers)
        self._modules = dict(self._modules)
        return self

    def parameters_spec(self) -> dict:
        """JSON-able description: type, CV specs and every per-window parameter."""
        spec = {"type": type(self).__name__, "cvs": [c.to_spec() for c in self.cvs]}
        for name in self._param_names:
            spec[name] = getattr(self, name).tolist()
        return spec
