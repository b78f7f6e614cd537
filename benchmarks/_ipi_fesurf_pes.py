"""An i-PI Python driver (PES) that evaluates a fesurf Potential, for the side-by-side benchmarks.

i-PI loads it as a ``custom`` direct forcefield (``<ffdirect><pes>custom</pes><pes_path>this
file</pes_path>``) and calls :meth:`FesurfDriver.compute` with positions in bohr (a list of bead
structures when ``batch_size > 1``); energies go back in hartree and forces in hartree/bohr, converted
with i-PI's own unit tables. ``model`` names the fesurf potential: ``malonaldehyde_committee`` (the
stored GFN2-xTB BP committee) or ``harmonic:K`` (``fesurf.potentials.Harmonic(k=K)``, eV/A^2);
``template`` is an extxyz file with the atoms (numbers, masses).
"""
import json

import numpy as np
import torch
from ase.io import read

from ipi.pes.dummy import Dummy_driver
from ipi.utils.units import unit_to_internal, unit_to_user

__DRIVER_NAME__ = "fesurf"
__DRIVER_CLASS__ = "FesurfDriver"


def build_model(model: str):
    if model == "malonaldehyde_committee":
        from fesurf.data import load_malonaldehyde_committee

        return load_malonaldehyde_committee()
    if model.startswith("harmonic:"):
        from fesurf.potentials import Harmonic

        return Harmonic(k=float(model.split(":", 1)[1]))
    raise ValueError(f"unknown fesurf model {model!r}")


class FesurfDriver(Dummy_driver):
    def __init__(self, template, model="malonaldehyde_committee", *args, **kwargs):
        self.template, self.model_name = template, model
        super().__init__(*args, **kwargs)

    def check_parameters(self):
        from fesurf.state import State

        torch.set_num_threads(1)
        atoms = read(self.template)
        self.n_atoms = len(atoms)
        self.base = State.from_atoms(atoms)
        self.model = build_model(self.model_name)
        self.calls = 0
        self._batches = {1: self.base}

    def _evaluate(self, positions_bohr):
        from fesurf.state import State

        n = len(positions_bohr)
        pos = np.concatenate([unit_to_user("length", "angstrom", np.asarray(p).reshape(-1, 3)) for p in positions_bohr])
        if n not in self._batches:
            self._batches[n] = State.concatenate([self.base] * n)
        state = self._batches[n].replace(positions=torch.as_tensor(pos, dtype=torch.float64))
        e, f = self.model.energy_and_forces(state)
        self.calls += n
        e = unit_to_internal("energy", "electronvolt", e.detach().numpy().astype(np.float64))
        f = unit_to_internal("force", "ev/ang", f.detach().numpy().astype(np.float64)).reshape(n, -1)
        return e, f

    def compute_structure(self, cell, pos):
        e, f = self._evaluate([pos])
        return float(e[0]), f[0], np.zeros((3, 3)), json.dumps({})

    def compute(self, cell, pos):
        if not isinstance(cell, list):
            return self.compute_structure(cell, pos)
        e, f = self._evaluate(pos)
        return [(float(e[i]), f[i], np.zeros((3, 3)), json.dumps({})) for i in range(len(pos))]
