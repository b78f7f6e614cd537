"""The Potential contract.

A Potential is a ``torch.nn.Module`` whose :meth:`Potential.energy` maps a
:class:`~fesurf.state.State` to energies ``[n_systems]`` in eV. Forces
(eV/Angstrom) are ``-dE/dx`` by autograd unless a subclass overrides
:meth:`Potential.energy_and_forces` with exact ones.

Example
-------
>>> import torch
>>> from fesurf.potentials import Harmonic
>>> from fesurf.state import State
>>> s = State(positions=[[1.0, 0.0, 0.0]], atomic_numbers=[1])
>>> e, f = Harmonic(k=2.0).energy_and_forces(s)
>>> float(e[0]), f[0].tolist()
(1.0, [-2.0, -0.0, -0.0])
"""
from __future__ import annotations

import torch

from ..state import State


class Potential(torch.nn.Module):
    """Base class of every potential (analytic, surrogate, oracle bridge, bias).

    Class attributes a subclass sets to describe itself:

    ``translation_invariant`` / ``rotation_invariant``
        What :func:`~fesurf.potentials.check_potential` tests.
    ``supports_stress``
        Whether :meth:`stress` is meaningful (periodic, cell-aware potentials).
    ``differentiable``
        False for potentials that cannot be differentiated by autograd (an
        external calculator); they must override :meth:`energy_and_forces`.
    """

    translation_invariant: bool = True
    rotation_invariant: bool = True
    supports_stress: bool = False
    differentiable: bool = True

    def energy(self, state: State) -> torch.Tensor:
        """Energies ``[n_systems]`` in eV."""
        raise NotImplementedError

    def forward(self, state: State) -> torch.Tensor:
        return self.energy(state)

    def select_systems(self, systems) -> "Potential":
        """The potential restricted to the given systems of a batch.

        Potentials with per-system parameters (umbrella centres, lambda
        windows, per-replica temperatures) override this so that
        ``p.select_systems(idx).energy(state.select(idx))`` equals
        ``p.energy(state)[idx]``; :func:`check_potential` relies on it.
        Potentials without per-system parameters return themselves.
        """
        return self

    def energy_and_forces(self, state: State, create_graph: bool = False):
        """Return ``(energy [n_systems] eV, forces [n_atoms, 3] eV/A)``.

        ``create_graph=True`` keeps the graph so a loss on forces can be
        back-propagated (force matching).
        """
        with torch.enable_grad():
            pos = state.positions
            if not pos.requires_grad:
                pos = pos.detach().requires_grad_(True)
            energy = self.energy(state.replace(positions=pos))
            (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=create_graph, allow_unused=True)
        forces = torch.zeros_like(pos) if grad is None else -grad
        if not create_graph:
            energy, forces = energy.detach(), forces.detach()
        return energy, forces

    def forces(self, state: State) -> torch.Tensor:
        """Forces ``[n_atoms, 3]`` in eV/Angstrom."""
        return self.energy_and_forces(state)[1]

    def stress(self, state: State) -> torch.Tensor:
        """Stress ``[n_systems, 3, 3]`` in eV/A^3 (ASE sign: dE/d(strain) / V).

        Computed by autograd through a homogeneous strain of positions and cell.
        Only for potentials with ``supports_stress`` and a cell.
        """
        if not self.supports_stress or state.cell is None:
            from ..errors import InputError

            raise InputError(f"{type(self).__name__} does not provide stress for this state; "
                             "stress needs a periodic, cell-aware potential and a cell")
        with torch.enable_grad():
            strain = torch.zeros(state.n_systems, 3, 3, dtype=state.dtype, requires_grad=True)
            sym = 0.5 * (strain + strain.transpose(1, 2))
            deform = torch.eye(3, dtype=state.dtype) + sym
            pos = torch.einsum("ni,nij->nj", state.positions, deform[state.system_index])
            cell = torch.bmm(state.cell, deform)
            energy = self.energy(state.replace(positions=pos, cell=cell))
            (grad,) = torch.autograd.grad(energy.sum(), strain)
        volume = torch.linalg.det(state.cell).abs()
        return grad / volume[:, None, None]
