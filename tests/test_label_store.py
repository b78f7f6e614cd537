"""The reference-label store: an ase.db SQLite file that `ase db` browses, migrated from the old .npz cache."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from ase.build import molecule

from fesurf.errors import InputError
from fesurf.oracles import LabelCache, config_key
from fesurf.oracles.base import Label, NpzLabelCache
from fesurf.oracles.store import FILENAME, MIGRATED, LabelStore


def _labels():
    h2o, ch4 = molecule("H2O"), molecule("CH4")
    box = molecule("H2")
    box.cell, box.pbc = np.diag([4.0, 5.0, 6.0]), True
    rng = np.random.default_rng(0)
    return {
        "ok": Label(numbers=h2o.numbers, positions=h2o.positions, charge=0.0, multiplicity=1, method="GFN2-xTB",
                    ok=True, energy=-137.25, forces=rng.normal(size=(3, 3)),
                    extra={"spin_square": 0.0, "n_roots": 2, "state": "S0", "energies": np.array([-1.0, -0.5]),
                           "nac": np.arange(24.0).reshape(2, 2, 2, 3)}),
        "failed": Label(numbers=ch4.numbers, positions=ch4.positions, charge=1.0, multiplicity=2, method="GFN2-xTB",
                        ok=False, reason="SCF not converged in 250 iterations"),
        "periodic": Label(numbers=box.numbers, positions=box.positions, charge=0.0, multiplicity=3, method="PBE/def2",
                          ok=True, energy=-31.5, forces=np.zeros((2, 3)), cell=box.cell.array.copy(),
                          pbc=np.array([True, True, True])),
    }


def _same(a: Label, b: Label):
    assert a.ok == b.ok and a.method == b.method and a.reason == b.reason
    assert a.charge == b.charge and a.multiplicity == b.multiplicity
    np.testing.assert_array_equal(a.numbers, b.numbers)
    np.testing.assert_array_equal(a.positions, b.positions)
    if a.ok:
        assert a.energy == b.energy
        np.testing.assert_array_equal(a.forces, b.forces)
    else:
        assert b.energy is None and b.forces is None
    assert (a.cell is None) == (b.cell is None)
    if a.cell is not None:
        np.testing.assert_array_equal(a.cell, b.cell)
        np.testing.assert_array_equal(a.pbc, b.pbc)
    assert set(a.extra) == set(b.extra)
    for k, v in a.extra.items():
        np.testing.assert_array_equal(np.asarray(b.extra[k]), np.asarray(v))


def test_label_store_round_trip_and_ase_db_browses_it(tmp_path):
    import ase.io

    labels = _labels()
    store = LabelCache(tmp_path)
    assert isinstance(store, LabelStore) and len(store) == 0 and store.get("nothing") is None
    for key, lab in labels.items():
        store.put(key, lab)
    again = LabelStore(tmp_path / FILENAME)  # the .db file itself opens the same store
    assert len(again) == 3
    for key, lab in labels.items():
        _same(lab, again.get(key))
    store.put("ok", labels["ok"])  # a key written twice keeps one (the newest) row
    assert len(store) == 3 and store.db.count() == 3
    out = subprocess.run([sys.executable, "-m", "ase", "db", str(tmp_path / FILENAME), "-c",
                          "id,formula,energy,method,total_charge,multiplicity,ok,reason", "-L", "0"],
                         capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "GFN2-xTB" in out.stdout and "PBE/def2" in out.stdout and "-137.250" in out.stdout
    assert "SCF not converged" in out.stdout and "Rows: 3" in out.stdout
    failed = subprocess.run([sys.executable, "-m", "ase", "db", str(tmp_path / FILENAME), "ok=False", "-c",
                             "formula,reason"], capture_output=True, text=True, check=True)
    assert "CH4" in failed.stdout and "H2O" not in failed.stdout
    good = ase.io.read(f"{tmp_path / FILENAME}@ok=True")  # a query selects rows (a list)
    assert sorted(a.get_potential_energy() for a in good) == [-137.25, -31.5]


def test_an_old_npz_cache_is_migrated_on_first_use_and_oracles_reuse_it(tmp_path):
    from ase.calculators.lj import LennardJones

    from fesurf.oracles import ASEOracle

    old = NpzLabelCache(tmp_path)
    labels = _labels()
    for key, lab in labels.items():
        old.put(key, lab)
    # labels an oracle computed into the old cache, keyed as Oracle.label keys them
    oracle = ASEOracle(lambda: LennardJones(sigma=1.0, epsilon=0.01), method="lj")
    configs = [molecule(n) for n in ("H2O", "NH3")]
    for a in configs:
        old.put(config_key(a.numbers, a.positions, 0.0, 1, "lj", a.cell.array, a.pbc), oracle.compute(a))
    n_old = len(list(tmp_path.glob("*/*.npz")))
    assert n_old == 5
    store = LabelCache(tmp_path)  # first use: migrated
    assert len(store) == 5 and (tmp_path / FILENAME).exists()
    for key, lab in labels.items():
        _same(lab, store.get(key))
    assert not list(tmp_path.glob("??/*.npz"))  # old files moved aside, kept
    assert len(list((tmp_path / MIGRATED).glob("*/*.npz"))) == 5
    assert len(LabelCache(tmp_path)) == 5  # reopening migrates nothing twice
    again = oracle.label(configs, cache=tmp_path)
    assert oracle.last_stats["computed"] == 0 and oracle.last_stats["from_cache"] == 2
    assert all(lab.ok for lab in again)


_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from fesurf.oracles.base import Label
    from fesurf.oracles.store import LabelStore
    folder, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = LabelStore(folder)
    for k in range(first, last):
        store.put(f"key{k}", Label(numbers=np.array([1, 1]), positions=np.array([[0, 0, 0], [0.7 + 0.001 * k, 0, 0]]),
                                   charge=0.0, multiplicity=1, method="m", ok=True, energy=float(k),
                                   forces=np.full((2, 3), float(k))))
""")


def test_two_processes_can_share_one_store(tmp_path):
    """Two fesurf processes label into one folder at once (20 keys in common): no write is lost."""
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "cache"), str(a), str(b)], env=env,
                              stderr=subprocess.PIPE, text=True) for a, b in ((0, 40), (20, 60))]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    store = LabelStore(tmp_path / "cache")
    assert len(store) == 60
    for k in (0, 25, 59):
        lab = store.get(f"key{k}")
        assert lab.ok and lab.energy == float(k) and float(lab.forces[0, 0]) == float(k)


def test_bad_store_inputs(tmp_path):
    store = LabelStore(tmp_path / "s")
    lab = _labels()["ok"]
    bad = Label(numbers=lab.numbers, positions=lab.positions, charge=0.0, multiplicity=1, method="m", ok=True,
                energy=-1.0, forces=np.zeros((3, 3)), extra={"obj": object()})
    with pytest.raises(InputError, match="cannot be cached"):
        store.put("k", bad)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        LabelStore(tmp_path / "afile")
