import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from fesurf import InputError, State


def test_from_and_to_atoms_round_trip():
    water = molecule("H2O")
    water.info["charge"] = -1
    water.info["multiplicity"] = 2
    water.set_velocities(np.arange(9.0).reshape(3, 3) * 0.01)
    s = State.from_atoms([water, molecule("CH4")])
    assert s.n_systems == 2 and s.n_atoms == 8
    assert s.atoms_per_system.tolist() == [3, 5]
    assert s.charge.tolist() == [-1.0, 0.0] and s.multiplicity.tolist() == [2, 1]
    back = s.to_atoms()
    assert np.allclose(back[0].positions, water.positions)
    assert np.allclose(back[0].get_velocities(), water.get_velocities())
    assert back[0].info["multiplicity"] == 2 and back[1].get_chemical_formula() == "CH4"


def test_periodic_cell_round_trip():
    cu = bulk("Cu", cubic=True)
    s = State.from_atoms(cu)
    assert s.cell.shape == (1, 3, 3) and bool(s.pbc.all())
    assert np.allclose(s.to_atoms()[0].cell.array, cu.cell.array)


def test_replicate_and_select():
    s = State.from_atoms(molecule("CH3CH2OH")).replicate(5)
    assert s.n_systems == 5 and s.system_index.tolist()[:10] == [0] * 9 + [1]
    sub = s.select([4, 1])
    assert sub.n_systems == 2 and torch.equal(sub.positions, s.positions[:18])
    with pytest.raises(InputError, match="out of range"):
        s.select(7)


def test_kinetic_energy_units():
    # 1 amu at 1 A/fs has KE = 0.5 * 103.6427 eV (1 amu A^2/fs^2 = 103.6427 eV from ase.units)
    s = State(positions=[[0.0, 0, 0]], atomic_numbers=[1], masses=[1.0], velocities=[[1.0, 0, 0]])
    assert float(s.kinetic_energy()[0]) == pytest.approx(0.5 * 103.642696, rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(positions=[[np.nan, 0, 0]], atomic_numbers=[1]), "NaN"),
        (dict(positions=[[0.0, 0, 0]], atomic_numbers=[1], masses=[0.0]), "masses must be positive"),
        (dict(positions=[[0.0, 0, 0]], atomic_numbers=[1], masses=[-2.0]), "masses must be positive"),
        (dict(positions=[[0.0, 0]], atomic_numbers=[1]), r"shape \[n_atoms, 3\]"),
        (dict(positions=[[0.0, 0, 0]] * 2, atomic_numbers=[1]), "atomic_numbers must have shape"),
        (dict(positions=[[0.0, 0, 0]], atomic_numbers=[1], velocities=[[0.0, 0]]), "velocities must have shape"),
        (dict(positions=[[0.0, 0, 0]], atomic_numbers=[200]), "unknown element"),
        (dict(positions=[[0.0, 0, 0]], atomic_numbers=[0]), "unknown element"),
        (dict(positions=[[0.0, 0, 0]] * 2, atomic_numbers=[1, 1], system_index=[1, 0]), "sorted"),
        (dict(positions=[[0.0, 0, 0]], atomic_numbers=[1], pbc=[True] * 3), "no cell"),
        (dict(positions=[[0.0, 0, 0]], atomic_numbers=[1], multiplicity=0), "multiplicity"),
    ],
)
def test_bad_input_is_an_input_error_with_a_fix(kwargs, message):
    with pytest.raises(InputError, match=message):
        State(**kwargs)


def test_unknown_element_symbol_from_ase():
    with pytest.raises(KeyError):
        Atoms("Xx")  # ASE itself refuses unknown symbols; numbers go through State's check
    with pytest.raises(InputError, match="unknown element"):
        State(positions=torch.zeros(1, 3), atomic_numbers=torch.tensor([119]))
