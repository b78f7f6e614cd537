"""Oracles: failure records, cache, executors, charge/multiplicity, PySCF gradients, MD on an oracle."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.lj import LennardJones

from fesurf.errors import OracleError
from fesurf.oracles import ASEOracle, LabelCache, PySCFOracle, XTBOracle
from fesurf.potentials import check_potential
from fesurf.state import State
from fesurf.training.data import Dataset, write_labels


class CountingLJ(LennardJones):
    calls = 0

    def calculate(self, *args, **kwargs):
        CountingLJ.calls += 1
        super().calculate(*args, **kwargs)


class Exploding(LennardJones):
    def calculate(self, atoms=None, *args, **kwargs):
        if len(atoms) == 4:
            raise RuntimeError("SCF exploded")
        super().calculate(atoms, *args, **kwargs)


def test_impossible_configuration_is_recorded_and_rest_labelled(tmp_path):
    water = molecule("H2O")
    bad = water.copy()
    bad.positions[1] = bad.positions[0]  # two atoms on top of each other
    labels = XTBOracle().label([water, bad, molecule("NH3")])
    assert [lab.ok for lab in labels] == [True, False, True]
    assert "apart" in labels[1].reason and labels[1].energy is None and labels[1].forces is None
    assert np.isfinite(labels[0].energy) and np.isfinite(labels[2].forces).all()
    # failed frames never reach a dataset file
    assert write_labels(labels, tmp_path / "d.extxyz") == 2
    ds = Dataset.read(tmp_path / "d.extxyz")
    assert len(ds) == 2 and torch.isfinite(ds.energy).all()
    assert abs(float(ds.energy[0]) - labels[0].energy) < 1e-6


def test_crash_is_recorded_with_reason():
    oracle = ASEOracle(lambda: Exploding(sigma=1.0, epsilon=0.01), method="lj-exploding")
    labels = oracle.label([molecule("H2O"), molecule("NH3"), molecule("CH4")])
    assert [lab.ok for lab in labels] == [True, False, True]
    assert "SCF exploded" in labels[1].reason


def test_cache_avoids_recomputation_and_executor_matches_serial(tmp_path):
    oracle = ASEOracle(lambda: CountingLJ(sigma=1.0, epsilon=0.01), method="lj-counting")
    configs = [molecule(n) for n in ("H2O", "NH3", "CH4")]
    CountingLJ.calls = 0
    first = oracle.label(configs, cache=tmp_path)
    n_calls = CountingLJ.calls
    assert n_calls >= 3 and len(LabelCache(tmp_path)) == 3
    again = oracle.label(configs, cache=tmp_path)
    assert CountingLJ.calls == n_calls  # nothing recomputed
    for a, b in zip(first, again):
        assert a.energy == b.energy and np.array_equal(a.forces, b.forces)
    with ThreadPoolExecutor(2) as ex:
        threaded = oracle.label(configs, executor=ex)
    for a, b in zip(first, threaded):
        assert abs(a.energy - b.energy) < 1e-12
    # a different method or multiplicity is a different cache entry
    other = ASEOracle(lambda: CountingLJ(sigma=1.1, epsilon=0.01), method="lj-counting-2")
    other.label(configs[:1], cache=tmp_path)
    assert len(LabelCache(tmp_path)) == 4


def test_cache_keeps_label_extras(tmp_path):
    """Multi-root oracles put root energies, couplings and <S^2> in Label.extra; the cache returns them."""
    from fesurf.oracles import Label, config_key

    h2 = molecule("H2")
    lab = Label(numbers=h2.numbers, positions=h2.positions, charge=0.0, multiplicity=1, method="m", ok=True,
                energy=-1.0, forces=np.zeros((2, 3)),
                extra={"spin_square": 0.0, "n_roots": 2, "state": "S0", "energies": np.array([-1.0, -0.5]),
                       "nac": np.arange(24.0).reshape(2, 2, 2, 3)})
    cache = LabelCache(tmp_path)
    key = config_key(h2.numbers, h2.positions, 0.0, 1, "m")
    cache.put(key, lab)
    back = cache.get(key)
    assert back.extra["spin_square"] == 0.0 and back.extra["n_roots"] == 2 and back.extra["state"] == "S0"
    assert np.array_equal(back.extra["energies"], lab.extra["energies"])
    assert np.array_equal(back.extra["nac"], lab.extra["nac"])
    bad = Label(numbers=h2.numbers, positions=h2.positions, charge=0.0, multiplicity=1, method="m", ok=True,
                energy=-1.0, forces=np.zeros((2, 3)), extra={"obj": object()})
    with pytest.raises(Exception, match="cannot be cached"):
        cache.put(key, bad)


def test_charge_and_multiplicity_are_passed_through():
    from tblite.ase import TBLite

    ch2 = molecule("CH2_s3B1d")
    triplet = XTBOracle().label([ch2], multiplicity=3)[0]
    singlet = XTBOracle().label([ch2], multiplicity=1)[0]
    assert triplet.multiplicity == 3 and singlet.multiplicity == 1
    ref = ch2.copy()
    ref.calc = TBLite(method="GFN2-xTB", multiplicity=3, verbosity=0)
    assert abs(triplet.energy - ref.get_potential_energy()) < 1e-6
    assert abs(triplet.energy - singlet.energy) > 0.05
    cation = XTBOracle().label([molecule("H2O")], charge=1, multiplicity=2)[0]
    ref = molecule("H2O")
    ref.calc = TBLite(method="GFN2-xTB", charge=1, multiplicity=2, verbosity=0)
    assert cation.charge == 1 and abs(cation.energy - ref.get_potential_energy()) < 1e-6
    gfn1 = XTBOracle(method="GFN1-xTB").compute(molecule("H2O"))
    assert gfn1.method == "tblite:GFN1-xTB" and abs(gfn1.energy - XTBOracle().compute(molecule("H2O")).energy) > 1


def test_pyscf_rks_gradients_match_finite_differences_and_failures():
    oracle = PySCFOracle(xc="PBE", basis="sto-3g")
    h2 = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.80]])
    lab = oracle.compute(h2)
    assert lab.ok and lab.method == "pyscf:KS:PBE/sto-3g:grid3"
    step = 1e-3
    plus, minus = h2.copy(), h2.copy()
    plus.positions[1, 2] += step
    minus.positions[1, 2] -= step
    fd = -(oracle.compute(plus).energy - oracle.compute(minus).energy) / (2 * step)
    # central difference error ~ step^2 * E''' ~ 1e-6 eV/A; SCF converged to 1e-9 Ha
    assert abs(lab.forces[1, 2] - fd) < 1e-4
    assert abs(lab.forces.sum(axis=0)).max() < 1e-4  # no net force
    h_atom = PySCFOracle(xc="PBE", basis="sto-3g").compute(Atoms("H"), multiplicity=2)
    assert h_atom.ok and h_atom.multiplicity == 2
    failed = PySCFOracle(xc="PBE", basis="sto-3g", max_cycle=1).compute(molecule("H2O"))
    assert not failed.ok and "not converged" in failed.reason


def test_oracle_potential_contract_and_md(tmp_path):
    water = State.from_atoms([molecule("H2O"), molecule("H2O")])
    water = water.replace(positions=water.positions + 0.02 * torch.randn(6, 3, generator=torch.Generator().manual_seed(3),
                                                                           dtype=torch.float64))
    pot = XTBOracle().as_potential()
    # xTB's SCF (accuracy 1) converges energies to ~1e-7 eV and the density to ~1e-5, and each replica
    # restarts from its previous wavefunction: forces agree to ~1e-5 relative between batched and
    # one-by-one calls, and FD with a 1e-3 A step sees ~1e-4 relative noise
    check_potential(pot, water, force_rtol=1e-3, batch_rtol=1e-4, invariance_atol=1e-5, max_fd_coords=6)
    bad = water.clone()
    bad.positions[1] = bad.positions[0]
    with pytest.raises(OracleError, match="apart"):
        pot.energy_and_forces(bad)
    from fesurf.training.generate import oracle_md

    frames = oracle_md(XTBOracle(), molecule("H2O"), temperatures=[300.0, 600.0], n_frames=3, stride=2,
                       equilibration=2, seed=1)
    assert len(frames) == 6 and frames[-1].info["temperature"] == 600.0
