"""The ASE bridge, both ways.

* :class:`FesurfCalculator`: any fesurf Potential as an ASE calculator
  (energy, forces, and stress where the potential supports it), so ASE's
  dynamics, optimisers, NEB and ``ase.calculators.plumed.Plumed`` can drive it.
* :class:`ASEPotential`: any ASE calculator as a fesurf Potential (no
  autograd: energies and forces come from the calculator, one system at a
  time). The oracles build on it.

Example
-------
>>> from ase.build import molecule
>>> from fesurf.potentials import LennardJones
>>> from fesurf.potentials.ase_bridge import FesurfCalculator
>>> atoms = molecule("CH4")
>>> atoms.calc = FesurfCalculator(LennardJones())
>>> atoms.get_forces().shape
(5, 3)
"""
from __future__ import annotations

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from ..errors import InputError
from ..state import State
from .base import Potential


class FesurfCalculator(Calculator):
    """Wrap a fesurf :class:`~fesurf.potentials.Potential` as an ASE calculator.

    Energies in eV, forces in eV/A, stress in eV/A^3 (ASE Voigt order).
    ``charge`` / ``multiplicity`` default to ``atoms.info`` entries.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, potential: Potential, dtype=torch.float64, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(potential, Potential):
            raise InputError("FesurfCalculator needs a fesurf Potential")
        self.potential = potential
        self.dtype = dtype

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        state = State.from_atoms(self.atoms, dtype=self.dtype)
        energy, forces = self.potential.energy_and_forces(state)
        self.results["energy"] = self.results["free_energy"] = float(energy[0])
        self.results["forces"] = forces.detach().cpu().double().numpy().copy()
        if "stress" in properties:
            if not (self.potential.supports_stress and state.cell is not None):
                from ase.calculators.calculator import PropertyNotImplementedError

                raise PropertyNotImplementedError(f"{type(self.potential).__name__} provides no stress")
            s = self.potential.stress(state)[0].detach().cpu().double().numpy()
            self.results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


class ASEPotential(Potential):
    """Any ASE calculator as a fesurf Potential (exact forces, no autograd).

    Each system of the State is evaluated in turn. ``charge`` and
    ``multiplicity`` go to ``atoms.info``; calculators that take them as
    parameters should be configured accordingly (see ``fesurf.oracles``).
    """

    differentiable = False

    def __init__(self, calculator, rotation_invariant=True, translation_invariant=True):
        super().__init__()
        self.calculator = calculator
        self.rotation_invariant = rotation_invariant
        self.translation_invariant = translation_invariant

    def energy(self, state: State) -> torch.Tensor:
        return self.energy_and_forces(state)[0]

    def energy_and_forces(self, state: State, create_graph: bool = False):
        if create_graph:
            raise InputError("an ASE calculator is not differentiable by autograd; train on its labels instead")
        energies, forces = [], []
        for atoms in state.to_atoms():
            atoms.calc = self.calculator
            energies.append(atoms.get_potential_energy())
            forces.append(atoms.get_forces())
        return (torch.as_tensor(np.array(energies), dtype=state.dtype),
                torch.as_tensor(np.concatenate(forces), dtype=state.dtype))
