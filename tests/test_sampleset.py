"""SampleSet: incremental HDF5 writes, reopen round trip, checkpoint truncation (also after SIGKILL),
from_arrays, selections and validation."""
import json
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fesurf.errors import InputError
from fesurf.sampling import SampleSet
from fesurf.sampling.sampleset import assert_samplesets_equal

K, N_CV, N_ATOMS = 3, 2, 4


def _chunk(rng, n, start):
    return dict(
        state_index=rng.integers(0, K, n),
        u_kn=rng.normal(size=(K, n)),
        cv=rng.normal(size=(n, N_CV)),
        u_ref=rng.normal(size=n),
        dudl=rng.normal(size=n),
        committee_spread=rng.uniform(0, 0.1, size=n),
        positions=rng.normal(size=(n, N_ATOMS, 3)),
        step=np.arange(start, start + n) * 10,
    )


def _create(path):
    return SampleSet.create(
        path, n_states=K, temperature=[300.0, 300.0, 300.0], n_cv=N_CV, n_atoms=N_ATOMS,
        store_u_ref=True, store_dudl=True, store_committee_spread=True,
        cv_definitions=[{"name": "d01", "kind": "DISTANCE", "atoms": [0, 1]}, {"name": "x", "kind": "POSITION"}],
        state_parameters=[{"center": c, "kappa": 100.0} for c in (0.0, 0.5, 1.0)],
        attrs={"protocol": "umbrella", "timestep_fs": 0.5}, chunk_frames=16)


def test_incremental_writes_reopen_round_trip(tmp_path):
    path = tmp_path / "run.h5"
    rng = np.random.default_rng(0)
    chunks = [_chunk(rng, n, s) for n, s in ((7, 0), (20, 7), (1, 27))]
    ss = _create(path)
    for c in chunks:
        ss.append(**c)
        ss.flush()
    ss.checkpoint({"step": 280, "rng": [1, 2, 3]})
    ss.close()

    back = SampleSet.open(path)
    full = {k: np.concatenate([c[k] for c in chunks], axis=-1 if k == "u_kn" else 0) for k in chunks[0]}
    assert back.n_frames == 28 and back.n_states == K and back.n_cv == N_CV
    for name, value in full.items():
        np.testing.assert_array_equal(getattr(back, name), value, err_msg=name)
    np.testing.assert_array_equal(back.N_k, np.bincount(full["state_index"], minlength=K))
    assert back.cv_names == ["d01", "x"]
    assert back.state_parameters[2] == {"center": 1.0, "kappa": 100.0}
    assert back.attrs == {"protocol": "umbrella", "timestep_fs": 0.5}
    assert back.temperature == 300.0 and back.units["u_kn"] == "kT"
    assert back.checkpoint_data == {"step": 280, "rng": [1, 2, 3]}
    np.testing.assert_array_equal(back.read_positions([5, 1, 5]), full["positions"][[5, 1, 5]])

    mem = SampleSet.from_arrays(**full, temperature=300.0, cv_definitions=back.cv_definitions,
                                state_parameters=back.state_parameters, attrs=back.attrs)
    assert_samplesets_equal(back, mem)
    copy = tmp_path / "copy.h5"
    mem.save(copy)
    assert SampleSet.open(copy).equals(back)
    mem2 = SampleSet.from_arrays(**{**full, "cv": full["cv"] + 1e-9}, temperature=300.0,
                                 cv_definitions=back.cv_definitions, state_parameters=back.state_parameters,
                                 attrs=back.attrs)
    assert not back.equals(mem2) and back.equals(mem2, atol=1e-8)


def test_resume_truncates_to_last_checkpoint(tmp_path):
    path = tmp_path / "run.h5"
    rng = np.random.default_rng(1)
    a, b, c = _chunk(rng, 10, 0), _chunk(rng, 5, 10), _chunk(rng, 8, 15)
    ss = _create(path)
    ss.append(**a)
    ss.checkpoint(b"\x00rng-state-1")
    ss.append(**b)
    ss.checkpoint(b"\x00rng-state-2")
    ss.append(**c)  # partial write after the last checkpoint, then the "crash":
    ss.flush()
    ss._f.close()  # simulated kill: no close()/commit

    reader = SampleSet.open(path)  # readers see committed frames only
    assert reader.n_frames == 15
    reader._f.close()
    resumed = SampleSet.open(path, mode="a")
    assert resumed.n_frames == 15 and resumed._f["u_kn"].shape == (K, 15) and resumed._f["positions"].shape[0] == 15
    assert resumed.checkpoint_data == b"\x00rng-state-2"
    assert list(resumed._f["checkpoint_blobs"]) == [json.loads(resumed._f.attrs["commit"])["blob"]]
    resumed.append(**c)
    resumed.checkpoint(b"\x00rng-state-3")
    resumed.close()

    ref = SampleSet.from_arrays(**{k: np.concatenate([a[k], b[k], c[k]], axis=-1 if k == "u_kn" else 0)
                                   for k in a}, temperature=300.0)
    done = SampleSet.open(path)
    assert done.differences(ref) == ["cv_definitions differ", "state_parameters differ", "attrs differ"]
    assert done.checkpoint_data == b"\x00rng-state-3"


WRITER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from fesurf.sampling import SampleSet
    path = sys.argv[1]
    ss = SampleSet.create(path, n_states=2, temperature=300.0, n_cv=1, n_atoms=3, chunk_frames=8)
    rng = np.random.default_rng(7)
    for i in range(60):
        ss.append(state_index=i % 2, u_kn=rng.normal(size=(2, 5)), cv=rng.normal(size=(5, 1)),
                  positions=rng.normal(size=(5, 3, 3)))
        if i % 10 == 9:
            ss.checkpoint({"chunk": i})
        if i == 44:
            os.kill(os.getpid(), signal.SIGKILL)  # dies mid-run, 5 chunks after the last checkpoint
""")


def test_sigkill_mid_run_leaves_consistent_file(tmp_path):
    path = tmp_path / "killed.h5"
    proc = subprocess.run([sys.executable, "-c", WRITER, str(path)], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    ss = SampleSet.open(path, mode="a")
    assert ss.checkpoint_data == {"chunk": 39} and ss.n_frames == 40 * 5
    rng = np.random.default_rng(7)  # the same stream the writer used
    u, cv, pos = [], [], []
    for _ in range(40):
        u.append(rng.normal(size=(2, 5)))
        cv.append(rng.normal(size=(5, 1)))
        pos.append(rng.normal(size=(5, 3, 3)))
    np.testing.assert_array_equal(ss.u_kn, np.concatenate(u, axis=1))
    np.testing.assert_array_equal(ss.cv, np.concatenate(cv))
    np.testing.assert_array_equal(ss.positions, np.concatenate(pos))
    np.testing.assert_array_equal(ss.state_index, np.repeat(np.arange(40) % 2, 5))
    ss.close()


def test_validation_errors(tmp_path):
    with pytest.raises(InputError, match="temperature"):
        SampleSet.create(tmp_path / "a.h5", n_states=2, temperature=[300.0, 300.0, 310.0])
    ss = SampleSet.create(tmp_path / "b.h5", n_states=2, temperature=300.0, n_cv=1)
    with pytest.raises(InputError, match="shape"):
        ss.append(state_index=0, u_kn=np.zeros((3, 4)), cv=np.zeros(4))
    with pytest.raises(InputError, match="state_index"):
        ss.append(state_index=2, u_kn=np.zeros((2, 4)), cv=np.zeros(4))
    with pytest.raises(InputError, match="NaN"):
        ss.append(state_index=0, u_kn=np.full((2, 1), np.nan), cv=np.zeros(1))
    with pytest.raises(InputError, match="cv"):
        ss.append(state_index=0, u_kn=np.zeros((2, 1)))
    with pytest.raises(InputError, match="not declared"):
        ss.append(state_index=0, u_kn=np.zeros((2, 1)), cv=np.zeros(1), dudl=np.zeros(1))
    with pytest.raises(InputError, match="exists"):
        SampleSet.create(tmp_path / "b.h5", n_states=2, temperature=300.0)
    ss.append(state_index=0, u_kn=np.zeros((2, 3)), cv=np.zeros(3))
    with pytest.raises(InputError, match="empty window"):
        ss.validate()
    ok = SampleSet.from_arrays(state_index=[0, 0], u_kn=np.zeros((2, 2)), temperature=300.0, sampled=[True, False])
    ok.validate()  # state 1 is an evaluation-only target, not an empty window
    hot = SampleSet.from_arrays(state_index=[0, 1], u_kn=np.zeros((2, 2)), temperature=[300.0, 310.0])
    with pytest.raises(InputError, match="different temperatures"):
        hot.validate()
    assert hot.select_states([1]).temperature == 310.0
    with pytest.raises(InputError, match="not a fesurf SampleSet"):
        import h5py
        h5py.File(tmp_path / "c.h5", "w").close()
        SampleSet.open(tmp_path / "c.h5")
