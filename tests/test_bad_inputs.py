"""Every public reader, constructor and CLI subcommand meets malformed input with a clear fesurf error.

Each case asserts the error type (InputError, or SimulationError for a run that cannot go on) and that
the message names the problem (a regular expression on the message). A case that raised another
library's exception, or accepted the input silently, fails here.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms

from fesurf import InputError, State
from fesurf.errors import SimulationError

H2O = dict(positions=[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]], atomic_numbers=[8, 1, 1])


def _h2o(**kw):
    return State(**{**H2O, **kw})


def _samples(n_states=2, n=40, **kw):
    from fesurf.sampling import SampleSet

    rng = np.random.default_rng(0)
    u = rng.normal(size=(n_states, n))
    args = dict(state_index=np.arange(n) % n_states, u_kn=u, temperature=300.0, cv=rng.uniform(-1, 1, n),
                u_ref=rng.normal(size=n))
    args.update(kw)
    return SampleSet.from_arrays(**args)


def _model_file(tmp_path, **changes):
    from fesurf.surrogates import BehlerParrinello, save_model

    path = tmp_path / "bp.pt"
    save_model(BehlerParrinello([1, 8], hidden=(4,), seed=0), path)
    if changes:
        payload = torch.load(path, weights_only=True)
        for k, v in changes.items():
            if callable(v):
                v(payload)
            else:
                payload[k] = v
        torch.save(payload, path)
    return path


def _nan_weight(payload):
    sd = payload["state_dict"]
    key = next(k for k, v in sd.items() if v.is_floating_point() and v.numel() > 1)
    sd[key] = sd[key].clone()
    sd[key].view(-1)[0] = float("nan")


def _drop_weight(payload):
    sd = payload["state_dict"]
    sd.pop(next(iter(sd)))


def _bad_config_json(payload):
    import json

    cfg = json.loads(payload["config"])
    cfg["hidden"] = [7, 7]
    payload["config"] = json.dumps(cfg)


# ------------------------------------------------------------------ State
STATE_CASES = [
    ("coincident atoms", lambda: _h2o(positions=[[0, 0, 0], [0, 0, 0], [1, 0, 0]]), r"atoms 0 and 1 .* apart"),
    ("atoms closer than the threshold", lambda: _h2o(positions=[[0, 0, 0], [0.05, 0, 0], [1, 0, 0]]),
     r"atoms 0 and 1 .*0\.050 A apart"),
    ("singular cell with pbc", lambda: _h2o(cell=[[5, 0, 0], [10, 0, 0], [0, 0, 5]], pbc=True), r"cell .* singular"),
    ("zero cell with pbc", lambda: _h2o(cell=np.zeros((3, 3)), pbc=True), r"cell .*volume"),
    ("NaN charge", lambda: _h2o(charge=float("nan")), r"charge .*finite"),
    ("inf charge", lambda: _h2o(charge=float("inf")), r"charge .*finite"),
    ("fractional multiplicity", lambda: _h2o(multiplicity=1.5), r"multiplicity .*whole"),
    ("NaN positions", lambda: _h2o(positions=[[0, 0, 0], [float("nan"), 0, 0], [1, 0, 0]]), r"NaN or inf"),
    ("string positions", lambda: _h2o(positions="abc"), r"positions"),
    ("unknown element", lambda: _h2o(atomic_numbers=[8, 1, 200]), r"unknown element"),
    ("negative mass", lambda: _h2o(masses=[16.0, -1.0, 1.0]), r"masses must be positive"),
    ("NaN cell", lambda: _h2o(cell=[[float("nan"), 0, 0], [0, 5, 0], [0, 0, 5]], pbc=True), r"cell .*finite"),
    ("wrong cell shape", lambda: _h2o(cell=[1.0, 2.0]), r"cell must have shape"),
    ("unsorted system_index", lambda: _h2o(system_index=[1, 0, 0]), r"system_index must be sorted"),
    ("multiplicity zero", lambda: _h2o(multiplicity=0), r"multiplicity"),
    ("from_atoms with NaN", lambda: State.from_atoms(Atoms("H2", positions=[[0, 0, 0], [np.nan, 0, 0]])),
     r"NaN or inf"),
    ("from_atoms with a non-Atoms", lambda: State.from_atoms([1, 2, 3]), r"ase\.Atoms"),
]


# ------------------------------------------------------------------ datasets
def _frames(energy=-10.0, forces=None, n=3):
    from ase.calculators.singlepoint import SinglePointCalculator

    out = []
    for k in range(n):
        a = Atoms("OH2", positions=np.array(H2O["positions"]) + 0.01 * k)
        a.calc = SinglePointCalculator(a, energy=energy, forces=np.zeros((3, 3)) if forces is None else forces)
        out.append(a)
    return out


def _dataset_npz(tmp_path, **changes):
    from fesurf.training import Dataset

    ds = Dataset.from_atoms(_frames())
    path = tmp_path / "ds.npz"
    ds.save_npz(path)
    with np.load(path) as d:
        arrays = {k: d[k] for k in d.files}
    arrays.update(changes)
    np.savez(path, **arrays)
    return path


DATASET_CASES = [
    ("NaN energy", lambda tmp: __import__("fesurf.training", fromlist=["Dataset"]).Dataset.from_atoms(
        _frames(energy=float("nan"))), r"frame 0 .*energy .*NaN"),
    ("NaN force", lambda tmp: __import__("fesurf.training", fromlist=["Dataset"]).Dataset.from_atoms(
        _frames(forces=np.array([[0, 0, 0], [np.nan, 0, 0], [0, 0, 0]]))), r"frame 0 .*forces .*NaN"),
    ("forces of the wrong shape", lambda tmp: __import__("fesurf.training", fromlist=["Dataset"]).Dataset.from_atoms(
        _frames(forces=np.zeros((2, 3)))), r"forces"),
    ("empty dataset", lambda tmp: __import__("fesurf.training", fromlist=["Dataset"]).Dataset.from_atoms([]),
     r"empty dataset"),
    ("npz with NaN energy", lambda tmp: __import__("fesurf.training", fromlist=["Dataset"]).Dataset.load_npz(
        _dataset_npz(tmp, energy=np.array([np.nan, 0.0, 0.0]))), r"energ.*NaN"),
    ("npz with mismatched forces", lambda tmp: __import__("fesurf.training", fromlist=["Dataset"]).Dataset.load_npz(
        _dataset_npz(tmp, forces=np.zeros((4, 3)))), r"forces"),
    ("npz missing a key", lambda tmp: _npz_missing(tmp), r"missing .*energy"),
    ("npz with wrong unit key", lambda tmp: __import__("fesurf.training", fromlist=["Dataset"]).Dataset.load_npz(
        _dataset_npz(tmp, units=np.array('{"energy": "Hartree"}'))), r"unit"),
    ("dataset file missing", lambda tmp: __import__("fesurf.training", fromlist=["Dataset"]).Dataset.read(
        tmp / "none.extxyz"), r"does not exist"),
    ("dataset file garbage", lambda tmp: _read_garbage_dataset(tmp), r"garbage\.extxyz"),
    ("dataset file binary", lambda tmp: _read_binary_dataset(tmp), r"binary\.extxyz"),
]


def _npz_missing(tmp):
    from fesurf.training import Dataset

    path = _dataset_npz(tmp)
    with np.load(path) as d:
        arrays = {k: d[k] for k in d.files if k != "energy"}
    np.savez(path, **arrays)
    return Dataset.load_npz(path)


def _read_garbage_dataset(tmp):
    from fesurf.training import Dataset

    p = tmp / "garbage.extxyz"
    p.write_text("3\nProperties=species:S:1:pos:R:3 energy=-1.0\nO 0 0 0\nH 1 zero 0\n")
    return Dataset.read(p)


def _read_binary_dataset(tmp):
    from fesurf.training import Dataset

    p = tmp / "binary.extxyz"
    p.write_bytes(bytes(range(256)) * 8)
    return Dataset.read(p)


# ------------------------------------------------------------------ model files
def _load(path):
    from fesurf.surrogates import load_model

    return load_model(path)


MODEL_CASES = [
    ("truncated model file", lambda tmp: _load(_truncate(_model_file(tmp))), r"bp\.pt.*(truncated|damaged)"),
    ("foreign binary file", lambda tmp: _load(_write(tmp / "x.pt", bytes(range(256)))), r"x\.pt.*not a (readable )?fesurf"),
    ("text file as a model", lambda tmp: _load(_write(tmp / "m.pt", b"hello\n")), r"m\.pt.*not a (readable )?fesurf"),
    ("other torch file", lambda tmp: _load(_torch_file(tmp)), r"not a fesurf surrogate"),
    ("state dict mismatch", lambda tmp: _load(_model_file(tmp, _=_drop_weight)), r"do(es)? not match its config"),
    ("config mismatch", lambda tmp: _load(_model_file(tmp, _=_bad_config_json)), r"do(es)? not match its config"),
    ("non-finite weights", lambda tmp: _load(_model_file(tmp, _=_nan_weight)), r"non-finite"),
    ("unknown model type", lambda tmp: _load(_model_file(tmp, config='{"type": "Nope"}')), r"unknown model type"),
    ("broken config JSON", lambda tmp: _load(_model_file(tmp, config="{not json")), r"config.*JSON"),
    ("missing model file", lambda tmp: _load(tmp / "none.pt"), r"does not exist"),
]


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _torch_file(tmp):
    path = tmp / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    return path


# ------------------------------------------------------------------ SampleSets and estimators
def _pmf(ss, **kw):
    from fesurf.estimators import compute_pmf

    return compute_pmf(ss, **kw)


def _mbar(ss):
    from fesurf.estimators import delta_f

    return delta_f(ss)


ESTIMATOR_CASES = [
    ("NaN u_kn", lambda tmp: _samples(u_kn=np.full((2, 40), np.nan)), r"u_kn .*(NaN|finite)"),
    ("inf u_ref", lambda tmp: _samples(u_ref=np.full(40, np.inf)), r"u_ref .*(NaN|finite)"),
    ("NaN cv", lambda tmp: _samples(cv=np.full(40, np.nan)), r"cv .*(NaN|finite)"),
    ("state index out of range", lambda tmp: _samples(state_index=np.full(40, 5)), r"state_index"),
    ("a single state for MBAR", lambda tmp: _mbar(_samples(n_states=1, state_index=np.zeros(40, int))),
     r"(one state|single state|at least two)"),
    ("empty PMF range", lambda tmp: _pmf(_samples(), bins=10, range=(5.0, 6.0)), r"no frames .*range"),
    ("reversed PMF range", lambda tmp: _pmf(_samples(), bins=10, range=(1.0, -1.0)), r"range"),
    ("one PMF bin", lambda tmp: _pmf(_samples(), bins=1), r"bins"),
    ("NaN PMF range", lambda tmp: _pmf(_samples(), bins=10, range=(np.nan, 1.0)), r"range"),
    ("PMF of a missing CV", lambda tmp: _pmf(_samples(), cv=3), r"cv"),
    ("more labels than frames", lambda tmp: _choose(_samples(), 400), r"400 labels but only \d+ frames"),
    ("negative label count", lambda tmp: _choose(_samples(), -3), r"n_labels"),
    ("NaN delta_u", lambda tmp: _reweight(_samples(), [0, 1, 2], [0.0, np.nan, 0.1]), r"delta_u .*(NaN|finite)"),
    ("delta_u length mismatch", lambda tmp: _reweight(_samples(), [0, 1, 2], [0.0, 0.1]), r"delta_u"),
    ("labelled frame out of range", lambda tmp: _reweight(_samples(), [0, 1, 99], [0.0, 0.1, 0.2]), r"frame"),
    ("SampleSet file not HDF5", lambda tmp: _open_ss(_write(tmp / "s.h5", b"not hdf5")), r"s\.h5.*not HDF5"),
    ("SampleSet file of another kind", lambda tmp: _open_ss(_other_h5(tmp)), r"not a fesurf SampleSet"),
    ("TI without dU/dlambda", lambda tmp: __import__("fesurf.estimators", fromlist=["ti"]).ti(_samples()),
     r"dudl|dU/dlambda"),
    ("unknown energy unit", lambda tmp: __import__("fesurf.units", fromlist=["convert"]).convert(1.0, "eV", "kcal"),
     r"unknown .*unit"),
    ("kT without temperature", lambda tmp: __import__("fesurf.units", fromlist=["convert"]).convert(1.0, "eV", "kT"),
     r"temperature"),
    ("barrier of a PMF without a maximum", lambda tmp: _flat_barrier(), r"barrier|basin|maximum|minim"),
    ("Jarzynski with NaN work", lambda tmp: __import__("fesurf.estimators", fromlist=["jarzynski"]).jarzynski(
        [0.1, np.nan, 0.2], temperature=300.0), r"(NaN|finite)"),
]


def _choose(ss, n):
    from fesurf.estimators import choose_frames

    return choose_frames(ss, n, bins=5, range=(-1, 1))


def _reweight(ss, frames, du):
    from fesurf.estimators import reweight_pmf

    return reweight_pmf(ss, frames, du, bins=5, range=(-1, 1))


def _open_ss(path):
    from fesurf.sampling import SampleSet

    return SampleSet.open(path)


def _other_h5(tmp):
    import h5py

    path = tmp / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)
    return path


def _flat_barrier():
    from fesurf.analysis import barrier
    from fesurf.estimators import FreeEnergy

    fe = FreeEnergy(np.linspace(0.0, 1.0, 20), np.zeros(20), grid=[np.linspace(-1, 1, 20)], unit="kT",
                    temperature=300.0)
    return barrier(fe)


# ------------------------------------------------------------------ PLUMED files and other readers
def _colvar(tmp, data: bytes, name="COLVAR"):
    from fesurf.plumed import read_colvar

    p = tmp / name
    p.write_bytes(data)
    return read_colvar(p)


def _hills(tmp, data: bytes):
    from fesurf.plumed import read_hills

    p = tmp / "HILLS"
    p.write_bytes(data)
    return read_hills(p)


READER_CASES = [
    ("binary COLVAR", lambda tmp: _colvar(tmp, bytes(range(256)) * 4), r"COLVAR.*(binary|text|decode)"),
    ("COLVAR without FIELDS", lambda tmp: _colvar(tmp, b"1 2 3\n4 5 6\n"), r"COLVAR.*FIELDS"),
    ("COLVAR with a non-number", lambda tmp: _colvar(tmp, b"#! FIELDS time d\n0 0.1\n1 abc\n2 0.3\n"), r"COLVAR.*line 3"),
    ("binary HILLS", lambda tmp: _hills(tmp, b"\x00\xff\xfe" * 100), r"HILLS.*(binary|text|decode)"),
    ("empty HILLS", lambda tmp: _hills(tmp, b""), r"HILLS"),
    ("binary config", lambda tmp: __import__("fesurf.config", fromlist=["load_config"]).load_config(
        _write(tmp / "c.toml", b"\x00\xff\xfe\x80" * 50)), r"c\.toml.*(binary|TOML|text)"),
    ("structure file garbage", lambda tmp: _structure(tmp, b"this is not a structure\n"), r"s\.xyz"),
    ("structure file binary", lambda tmp: _structure(tmp, bytes(range(256))), r"s\.xyz"),
]


def _structure(tmp, data: bytes):
    from fesurf.config import load_config
    from fesurf.pipeline import build_structure

    p = tmp / "s.xyz"
    p.write_bytes(data)
    cfg = load_config({"system": {"structure": str(p)}, "cv": {"type": "DISTANCE", "atoms": [0, 1]}})
    return build_structure(cfg)


# ------------------------------------------------------------------ constructors: CVs, biases, MD, models
def _langevin(**kw):
    from fesurf.md import Langevin
    from fesurf.potentials import Harmonic

    args = dict(timestep=1.0, temperature=300.0, friction=0.01, seed=0)
    args.update(kw)
    md = Langevin(Harmonic(k=1.0), **args)
    return md.run(_h2o(), 2)


CONSTRUCTOR_CASES = [
    ("DISTANCE of one atom", lambda tmp: __import__("fesurf.cv", fromlist=["DISTANCE"]).DISTANCE([0]), r"DISTANCE"),
    ("DISTANCE of an atom with itself", lambda tmp: __import__("fesurf.cv", fromlist=["DISTANCE"]).DISTANCE([1, 1]),
     r"two different atoms"),
    ("negative atom index", lambda tmp: __import__("fesurf.cv", fromlist=["DISTANCE"]).DISTANCE([-1, 2]), r"index"),
    ("CV index beyond the molecule", lambda tmp: __import__("fesurf.cv", fromlist=["DISTANCE"]).DISTANCE([0, 7])(
        _h2o()), r"atom 7|index 7"),
    ("negative restraint kappa", lambda tmp: __import__("fesurf.bias", fromlist=["RESTRAINT"]).RESTRAINT(
        __import__("fesurf.cv", fromlist=["DISTANCE"]).DISTANCE([0, 1]), at=1.0, kappa=-1.0), r"kappa"),
    ("NaN restraint centre", lambda tmp: __import__("fesurf.bias", fromlist=["RESTRAINT"]).RESTRAINT(
        __import__("fesurf.cv", fromlist=["DISTANCE"]).DISTANCE([0, 1]), at=float("nan"), kappa=1.0), r"at|centre"),
    ("negative friction", lambda tmp: _langevin(friction=-1.0), r"friction"),
    ("zero timestep", lambda tmp: _langevin(timestep=0.0), r"timestep"),
    ("NaN temperature", lambda tmp: _langevin(temperature=float("nan")), r"temperature"),
    ("no seed", lambda tmp: _langevin(seed=None), r"seed"),
    ("BP with an unknown element", lambda tmp: __import__("fesurf.surrogates", fromlist=["BehlerParrinello"])
     .BehlerParrinello([1, 300]), r"element"),
    ("BP with no hidden width", lambda tmp: __import__("fesurf.surrogates", fromlist=["BehlerParrinello"])
     .BehlerParrinello([1, 8], hidden=(0,)), r"hidden"),
    ("BP on an element it was not built for", lambda tmp: __import__("fesurf.surrogates", fromlist=["BehlerParrinello"])
     .BehlerParrinello([1, 6], hidden=(4,)).energy(_h2o()), r"element"),
    ("umbrella without centres", lambda tmp: _umbrella(centers=[]), r"centre"),
    ("umbrella with negative steps", lambda tmp: _umbrella(n_production=-5), r"n_production"),
    ("umbrella with a float seed", lambda tmp: _umbrella(seed=1.5), r"seed"),
    ("umbrella with an unknown setting", lambda tmp: _umbrella(timstep=1.0), r"unknown protocol setting"),
    ("blown-up MD", lambda tmp: _blow_up(), r"blew up"),
]


def _umbrella(**kw):
    from fesurf.cv import POSITION
    from fesurf.potentials import DoubleWell1D
    from fesurf.sampling import umbrella_sampling

    args = dict(centers=[-0.5, 0.5], kappa=1.0, temperature=300.0, n_equilibration=0, n_production=20, stride=10,
                seed=0, check_overlap=False)
    args.update(kw)
    centers = args.pop("centers")
    kappa = args.pop("kappa")
    return umbrella_sampling(DoubleWell1D(), State(positions=[[0.0, 0, 0]], atomic_numbers=[1]), POSITION(0, "x"),
                             centers, kappa, **args)


def _blow_up():
    from fesurf.md import VelocityVerlet
    from fesurf.potentials import Harmonic

    return VelocityVerlet(Harmonic(k=1e6), timestep=5.0).run(_h2o(), 200)


# ------------------------------------------------------------------ oracles
def _oracle_label(atoms, **kw):
    from fesurf.oracles import XTBOracle

    return XTBOracle().compute(atoms, **kw)


def test_impossible_charge_and_multiplicity_is_a_failed_label():
    from ase.build import molecule

    lab = _oracle_label(molecule("H2O"), charge=1, multiplicity=1)  # 9 electrons cannot be a singlet
    assert not lab.ok and "9 electrons" in lab.reason and "multiplicity 1" in lab.reason
    lab = _oracle_label(molecule("H2O"), charge=0, multiplicity=5)  # 10 electrons, 4 unpaired: allowed
    assert lab.ok or "electrons" not in lab.reason
    lab = _oracle_label(Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]]), charge=0, multiplicity=5)  # 2 electrons
    assert not lab.ok and "2 electrons" in lab.reason
    lab = _oracle_label(Atoms("H", positions=[[0, 0, 0]]), charge=2, multiplicity=1)  # -1 electrons
    assert not lab.ok and "electrons" in lab.reason


def test_oracle_batch_with_impossible_pair_records_each_failure(tmp_path):
    from ase.build import molecule
    from fesurf.oracles import XTBOracle

    labels = XTBOracle().label([molecule("H2O"), molecule("H2O")], charge=1, multiplicity=1, cache=tmp_path / "c")
    assert [lab.ok for lab in labels] == [False, False]
    assert all(lab.energy is None and lab.forces is None for lab in labels)


CONFIG = {"system": {"structure": "builtin:malonaldehyde"},
          "cv": {"type": "distance_difference", "pairs": [[0, 5], [4, 5]]}}


def _cfg(section, **kw):
    from fesurf.config import load_config

    cfg = {k: dict(v) for k, v in CONFIG.items()}
    cfg.setdefault(section, {}).update(kw)
    return load_config(cfg)


CONFIG_CASES = [
    ("negative n_production", lambda tmp: _cfg("umbrella", n_production=-1), r"'umbrella\.n_production'"),
    ("zero timestep", lambda tmp: _cfg("umbrella", timestep=0.0), r"'umbrella\.timestep'"),
    ("negative friction", lambda tmp: _cfg("umbrella", friction=-0.1), r"'umbrella\.friction'"),
    ("multiplicity zero", lambda tmp: _cfg("system", multiplicity=0), r"'system\.multiplicity'"),
    ("one PMF bin", lambda tmp: _cfg("pmf", bins=1), r"'pmf\.bins'"),
    ("NaN temperature", lambda tmp: _cfg("run", temperature=float("nan")), r"'run\.temperature'"),
    ("zero workers", lambda tmp: _cfg("run", workers=0), r"'run\.workers'"),
    ("negative seed", lambda tmp: _cfg("run", seed=-4), r"'run\.seed'"),
    ("stride longer than production", lambda tmp: _cfg("umbrella", n_production=10, stride=20),
     r"'umbrella\.n_production'"),
    ("zero labels", lambda tmp: _cfg("reweight", n_labels=0), r"'reweight\.n_labels'"),
    ("validation fraction one", lambda tmp: _cfg("train", validation_fraction=1.0), r"'train\.validation_fraction'"),
    ("hidden width zero", lambda tmp: _cfg("surrogate", hidden=[0]), r"'surrogate\.hidden"),
    ("string in a number list", lambda tmp: _cfg("generate", temperatures=[300, "hot"]), r"'generate\.temperatures"),
    ("PMF range of three values", lambda tmp: _cfg("pmf", range=[0, 1, 2]), r"'pmf\.range'"),
    ("reversed PMF range", lambda tmp: _cfg("pmf", range=[1.0, -1.0]), r"'pmf\.range'"),
    ("transmission above one", lambda tmp: _cfg("analysis", transmission=2.0), r"'analysis\.transmission'"),
    ("negative atom index in cv.pairs", lambda tmp: _cfg("cv", pairs=[[0, -5], [4, 5]]), r"'cv\.pairs'"),
    ("dtype float16", lambda tmp: _cfg("surrogate", dtype="float16"), r"'surrogate\.dtype'"),
    ("PLUMED-named CV without atoms", lambda tmp: _cfg("cv", type="DISTANCE"), r"'cv\.atoms'"),
]


ALL_CASES = [("state", *c[:1], (lambda f: (lambda tmp: f()))(c[1]), c[2]) for c in STATE_CASES]
ALL_CASES += [(group, *c) for group, cases in (("dataset", DATASET_CASES), ("model", MODEL_CASES),
                                              ("estimator", ESTIMATOR_CASES), ("reader", READER_CASES),
                                              ("constructor", CONSTRUCTOR_CASES), ("config", CONFIG_CASES))
              for c in cases]


@pytest.mark.parametrize("group, name, call, match", ALL_CASES, ids=[f"{c[0]}: {c[1]}" for c in ALL_CASES])
def test_bad_input_gets_a_clear_error(group, name, call, match, tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises((InputError, SimulationError)) as info:
            call(tmp_path)
    assert info.type in (InputError, SimulationError), f"{name}: {info.type.__name__}: {info.value}"
    import re

    assert re.search(match, str(info.value), re.S), f"{name}: message does not name the problem: {info.value}"


def test_case_count():
    assert len(ALL_CASES) + 2 >= 60  # the issue asks for at least 60 distinct cases (+ the oracle and CLI tests)


# ------------------------------------------------------------------ the CLI: one error line, nothing else
CLI_CASES = [
    (["run", "no_such_config.toml"], r"does not exist"),
    (["run", "{bad_toml}"], r"not valid TOML"),
    (["run", "{binary_toml}"], r"(binary|TOML|text)"),
    (["run", "{bad_key}"], r"'umbrella\.n_production'"),
    (["run", "{garbage_structure}"], r"s\.xyz"),
    (["analyze", "colvar", "--windows", "{windows}", "--temperature", "300"], r"COLVAR\.bin.*binary"),
    (["analyze", "colvar", "--temperature", "300"], r"--windows --inputs is required"),
    (["plumed-input", "--cv", '{{"type": "DISTANCE", "atoms": [0]}}', "--at", "0.1", "--kappa", "10"],
     r"DISTANCE needs two different atoms"),
    (["plumed-input", "--cv", "DISTANCE", "--at", "0.1", "--kappa", "10"], r"--cv must be JSON"),
    (["run"], r"the following arguments are required: config"),
    (["no-such-command"], r"invalid choice"),
]


def _cli_files(tmp):
    (tmp / "bad.toml").write_text("[run\n")
    (tmp / "binary.toml").write_bytes(b"\x00\xff\xfe" * 30)
    (tmp / "badkey.toml").write_text('[system]\nstructure = "builtin:malonaldehyde"\n[cv]\ntype = "distance_difference"\n'
                                     'pairs = [[0, 5], [4, 5]]\n[umbrella]\nn_production = -3\n')
    (tmp / "s.xyz").write_text("garbage here\n")
    (tmp / "garbage.toml").write_text(f'[system]\nstructure = "{tmp / "s.xyz"}"\n[cv]\ntype = "DISTANCE"\n'
                                      'atoms = [0, 1]\n')
    (tmp / "COLVAR.bin").write_bytes(bytes(range(256)) * 3)
    (tmp / "windows.dat").write_text("0 0.1 100 COLVAR.bin\n")
    return {"windows": tmp / "windows.dat", "bad_toml": tmp / "bad.toml", "binary_toml": tmp / "binary.toml", "bad_key": tmp / "badkey.toml",
            "garbage_structure": tmp / "garbage.toml", "binary_colvar": tmp / "COLVAR.bin"}


@pytest.mark.parametrize("argv, match", CLI_CASES, ids=[" ".join(a[:2]) + f" #{i}" for i, (a, _) in enumerate(CLI_CASES)])
def test_cli_prints_one_error_line(argv, match, tmp_path, monkeypatch, capsys):
    import re
    import warnings

    from fesurf.cli import main

    files = _cli_files(tmp_path)
    argv = [a.format(**files) for a in argv]
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse errors exit
            code = exc.code
    out, err = capsys.readouterr()
    assert code != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("fesurf: error: "), err[-3000:]
    assert re.search(match, lines[0]), lines[0]
    assert out == ""


def test_cli_logs_only_with_verbose(tmp_path):
    import subprocess
    import sys

    cfg = tmp_path / "c.toml"
    cfg.write_text('[run]\noutput = "out"\n[system]\nstructure = "builtin:malonaldehyde"\n[cv]\n'
                   'type = "distance_difference"\npairs = [[0, 5], [4, 12]]\n')
    (tmp_path / "out").mkdir()  # an existing run folder must not make INFO lines appear
    quiet = subprocess.run([sys.executable, "-m", "fesurf.cli", "run", str(cfg)], capture_output=True, text=True,
                           cwd=tmp_path, timeout=120)
    assert [ln for ln in quiet.stderr.splitlines() if ln.strip()] == [quiet.stderr.strip()]
    assert "INFO" not in quiet.stderr and quiet.stderr.startswith("fesurf: error: ")
    loud = subprocess.run([sys.executable, "-m", "fesurf.cli", "-v", "run", str(cfg)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert "INFO" in loud.stderr and loud.stderr.strip().splitlines()[-1].startswith("fesurf: error: ")
