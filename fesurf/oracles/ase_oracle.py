"""Any ASE calculator as an oracle.

Example
-------
>>> from ase.build import molecule
>>> from ase.calculators.emt import EMT
>>> from fesurf.oracles import ASEOracle
>>> lab = ASEOracle(EMT, method="EMT").compute(molecule("H2"))
>>> lab.ok
True
"""
from __future__ import annotations

from ..errors import InputError
from .base import Oracle


class ASEOracle(Oracle):
    """Wrap an ASE calculator.

    Parameters
    ----------
    calculator : callable returning a calculator (picklable: usable in a
        process pool; each task gets its own calculator), or a calculator instance
        (serial use only: one instance cannot serve parallel threads).
    method : str
        Name used in metadata and the cache key; describe the settings.
    charge_keyword, multiplicity_keyword : str or None
        Calculator parameters receiving charge (e) and multiplicity (2S+1),
        if the calculator takes them (e.g. "charge", "multiplicity"). They
        also go to ``atoms.info``.
    """

    def __init__(self, calculator, method: str, charge_keyword=None, multiplicity_keyword=None):
        if not method or not isinstance(method, str):
            raise InputError("ASEOracle needs method='...' naming the calculator and its settings (cache key)")
        self._factory = calculator if (callable(calculator) and not hasattr(calculator, "get_potential_energy")) else None
        self._instance = None if self._factory is not None else calculator
        self.method = method
        self.charge_keyword, self.multiplicity_keyword = charge_keyword, multiplicity_keyword
        self._calc = None

    def __getstate__(self):
        state = super().__getstate__()
        if self._factory is None:
            raise InputError("an ASEOracle built from a calculator instance cannot be sent to a process pool; "
                             "pass a calculator factory (e.g. the class, or functools.partial) instead")
        return state

    def _compute(self, atoms, charge, multiplicity):
        if self._calc is None:
            self._calc = self._factory() if self._factory is not None else self._instance
        kw = {}
        if self.charge_keyword:
            kw[self.charge_keyword] = charge
        if self.multiplicity_keyword:
            kw[self.multiplicity_keyword] = multiplicity
        if kw:
            self._calc.set(**kw)
        atoms.info.update(charge=charge, multiplicity=multiplicity)
        atoms.calc = self._calc
        energy = atoms.get_potential_energy()
        return energy, atoms.get_forces()
