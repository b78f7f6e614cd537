"""An oracle as a (non-differentiable) fesurf Potential, so MD can run on it.

Example
-------
>>> from ase.build import molecule
>>> from fesurf.oracles import XTBOracle
>>> from fesurf.state import State
>>> e, f = XTBOracle().as_potential().energy_and_forces(State.from_atoms(molecule("H2O")))
>>> tuple(f.shape)
(3, 3)
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from ..errors import InputError, OracleError
from ..potentials.base import Potential
from ..state import State


class OraclePotential(Potential):
    """Energies (eV) and exact forces (eV/A) from an oracle, one system at a time.

    Each system slot keeps its own copy of the oracle, so SCF codes restart
    from the previous step's wavefunction of the same replica. A failed
    calculation raises :class:`~fesurf.errors.OracleError` with the reason.
    ``n_calls`` counts the oracle calculations made (one per system per
    evaluation), so a workflow can report its reference-level cost.
    """

    differentiable = False

    def __init__(self, oracle):
        super().__init__()
        self.oracle = oracle
        self._slots = []
        self.n_calls = 0

    def _slot(self, k):
        while len(self._slots) <= k:
            self._slots.append(copy.copy(self.oracle))
            self._slots[-1]._calc = None
        return self._slots[k]

    def energy(self, state: State) -> torch.Tensor:
        return self.energy_and_forces(state)[0]

    def energy_and_forces(self, state: State, create_graph: bool = False):
        if create_graph:
            raise InputError("an oracle is not differentiable by autograd; train a surrogate on its labels instead")
        energies, forces = [], []
        for k, atoms in enumerate(state.to_atoms()):
            lab = self._slot(k).compute(atoms)
            self.n_calls += 1
            if not lab.ok:
                raise OracleError(f"{lab.method} failed on system {k}: {lab.reason}")
            energies.append(lab.energy)
            forces.append(lab.forces)
        return (torch.as_tensor(np.array(energies), dtype=state.dtype),
                torch.as_tensor(np.concatenate(forces), dtype=state.dtype))
