"""Units and constants. Everything comes from ``ase.units``; nothing is typed by hand.

Inside fesurf: energies in eV, lengths in Angstrom, time in fs, masses in amu,
temperatures in K, velocities in Angstrom/fs. Estimators work in kT.

Example
-------
>>> from fesurf import units
>>> round(units.kT(300.0), 6)          # eV
0.025852
>>> round(units.convert(1.0, "kcal/mol", "kJ/mol"), 3)
4.184
"""
from __future__ import annotations

from ase import units as _ase

from .errors import InputError

#: Boltzmann constant in eV/K.
KB = _ase.kB
#: one femtosecond in ASE's internal time unit.
FS = _ase.fs
#: multiply ``m [amu] * v**2 [(A/fs)**2]`` by this to get eV.
MV2_TO_EV = 1.0 / _ase.fs**2
#: Planck constant in eV*s (for Eyring rates).
H_PLANCK_EV_S = 2.0 * 3.141592653589793 * _ase._hbar / _ase._e

_PER_EV = {
    "eV": 1.0,
    "meV": 1000.0,
    "kJ/mol": _ase.mol / _ase.kJ,
    "kcal/mol": _ase.mol / _ase.kcal,
}

ENERGY_UNITS = tuple(_PER_EV) + ("kT",)


def kT(temperature):
    """Thermal energy in eV at ``temperature`` (K). Works on floats, arrays and tensors."""
    return KB * temperature


def convert(value, from_unit: str, to_unit: str, temperature: float | None = None):
    """Convert an energy between eV, meV, kJ/mol, kcal/mol and kT.

    ``kT`` needs ``temperature`` in K. Works on floats, numpy arrays and tensors.

    >>> round(convert(1.0, "kT", "kcal/mol", temperature=298.15), 4)
    0.5925
    """
    for unit in (from_unit, to_unit):
        if unit not in ENERGY_UNITS:
            raise InputError(f"unknown energy unit {unit!r}; use one of {', '.join(ENERGY_UNITS)}")
    if "kT" in (from_unit, to_unit) and temperature is None:
        raise InputError("converting to or from kT needs temperature= in K")

    def per_ev(unit):
        return 1.0 / kT(temperature) if unit == "kT" else _PER_EV[unit]

    return value * (per_ev(to_unit) / per_ev(from_unit))
