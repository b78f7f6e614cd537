"""Common machinery of the atomistic surrogates: committee outputs, dtype handling.

Every model is a :class:`~fesurf.potentials.Potential` whose members give
energies ``[n_members, n_systems]`` (eV); the Potential energy is their mean.
:meth:`AtomisticModel.predict` returns mean energy and forces, the energy
standard deviation and the maximum atomic force deviation over members.

Example
-------
>>> from ase.build import molecule
>>> from fesurf.state import State
>>> from fesurf.surrogates import BehlerParrinello
>>> model = BehlerParrinello(elements=[1, 8], n_members=3, seed=0)
>>> out = model.predict(State.from_atoms(molecule("H2O")))
>>> sorted(out)[:3], tuple(out["member_forces"].shape)
(['energy', 'energy_std', 'force_deviation_max'], (3, 3, 3))
"""
from __future__ import annotations

import torch

from ..potentials.base import Potential
from ..state import State


class AtomisticModel(Potential):
    """Base class: subclasses implement ``_member_energies(positions, state, per_member_positions)``.

    ``positions`` is ``[n_atoms, 3]`` (shared by members) or ``[M, n_atoms, 3]``
    (one differentiable copy per member, to get per-member forces in one
    backward pass). Models compute in their parameter dtype and return
    results in the State's dtype.
    """

    translation_invariant = True
    rotation_invariant = True
    n_members: int = 1
    heteroscedastic: bool = False

    @property
    def model_dtype(self):
        return next(self.parameters()).dtype

    def config(self) -> dict:
        raise NotImplementedError

    def _member_outputs(self, positions: torch.Tensor, state: State):
        """Return (energies [M, S], log-variance [M, S] or None) in the model dtype."""
        raise NotImplementedError

    def member_energies(self, state: State) -> torch.Tensor:
        """[n_members, n_systems] energies, eV."""
        pos = state.positions.to(self.model_dtype)
        return self._member_outputs(pos, state)[0].to(state.dtype)

    def energy(self, state: State) -> torch.Tensor:
        """[n_systems] committee-mean energy, eV."""
        return self.member_energies(state).mean(0)

    def energy_and_forces(self, state: State, create_graph: bool = False):
        with torch.enable_grad():
            pos = state.positions
            if not pos.requires_grad:
                pos = pos.detach().requires_grad_(True)
            energy = self._member_outputs(pos.to(self.model_dtype), state)[0].mean(0)
            (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=create_graph)
        energy = energy.to(state.dtype)
        forces = -grad
        if not create_graph:
            energy, forces = energy.detach(), forces.detach()
        return energy, forces

    def member_energies_and_forces(self, state: State, create_graph: bool = False):
        """Per-member ``(energies [M, S], forces [M, n_atoms, 3], log_var [M, S] or None)``
        in one backward pass (members get their own copy of the positions)."""
        m = self.n_members
        with torch.enable_grad():
            pos = state.positions.detach().to(self.model_dtype).unsqueeze(0).repeat(m, 1, 1).requires_grad_(True)
            energies, log_var = self._member_outputs(pos, state)
            (grad,) = torch.autograd.grad(energies.sum(), pos, create_graph=create_graph)
        forces = -grad
        if not create_graph:
            energies, forces = energies.detach(), forces.detach()
            log_var = None if log_var is None else log_var.detach()
        return energies, forces, log_var

    def predict(self, state: State) -> dict:
        """Committee prediction (eV, eV/A).

        Keys: ``energy`` [S] mean, ``forces`` [n_atoms, 3] mean, ``energy_std`` [S]
        (member spread, epistemic), ``force_deviation_max`` [S] (max over atoms of
        the member spread of the force vector, sqrt(mean_m |F_m - F|^2), DP-GEN's
        trigger), ``member_energies`` [M, S], ``member_forces`` [M, n_atoms, 3],
        and ``aleatoric_std`` [S] when the model has a heteroscedastic head.
        """
        e, f, log_var = self.member_energies_and_forces(state)
        e, f = e.to(state.dtype), f.to(state.dtype)
        mean_f = f.mean(0)
        dev = ((f - mean_f) ** 2).sum(-1).mean(0).sqrt()  # [n_atoms]
        dev_max = torch.zeros(state.n_systems, dtype=state.dtype).scatter_reduce(
            0, state.system_index, dev, reduce="amax", include_self=True)
        out = {"energy": e.mean(0), "forces": mean_f,
               "energy_std": e.std(0, unbiased=False) if e.shape[0] > 1 else torch.zeros_like(e[0]),
               "force_deviation_max": dev_max, "member_energies": e, "member_forces": f}
        if log_var is not None:
            out["aleatoric_std"] = log_var.to(state.dtype).exp().mean(0).sqrt()
        return out
