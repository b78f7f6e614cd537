"""Execution layer: thread layouts, persistent workers, chunked labelling on a process pool and on Dask."""
import multiprocessing
import os

import numpy as np
import pytest
import torch

from fesurf.errors import InputError
from fesurf.execution import (chunk_size_for, decide_threads, limit_threads, make_executor, run_chunks, shutdown,
                              usable_cores)
from fesurf.oracles import XTBOracle

from _execution_helpers import SleepyHarmonicOracle, calculator_identity


def _frames(n, seed=0):
    from fesurf.data import malonaldehyde

    rng = np.random.default_rng(seed)
    base = malonaldehyde()
    out = []
    for _ in range(n):
        a = base.copy()
        a.positions = a.positions + 0.05 * rng.normal(size=a.positions.shape)
        out.append(a)
    return out


@pytest.mark.parametrize("cores", [1, 2, 3, 8, 16])
def test_thread_layouts_never_oversubscribe(cores):
    for workers in range(0, cores + 1):
        for call_seconds in (0.001, 5.0):
            lay = decide_threads(workers, cores=cores, call_seconds=call_seconds)
            busy = max(1, workers) * (lay.threads_per_worker if workers else lay.call_threads)
            assert busy <= cores, lay
            assert 1 <= lay.main_threads <= cores
            if call_seconds < 0.05:  # ms-scale calls run one thread each
                assert lay.call_threads == 1 and lay.threads_per_worker == 1
    assert decide_threads(0, cores=cores, threads=64).main_threads == cores
    assert "usable core" in decide_threads(2, cores=cores).describe()


def test_bad_layouts_and_executors_are_refused():
    with pytest.raises(InputError, match="workers"):
        decide_threads(-1)
    with pytest.raises(InputError, match="threads"):
        decide_threads(0, threads=0)
    with pytest.raises(InputError, match="unknown executor 'gpu-farm'"):
        make_executor("gpu-farm")
    with pytest.raises(InputError, match="executor must be"):
        make_executor(3.5)


def test_limit_threads_sets_and_restores():
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads()
    with limit_threads(1):
        assert torch.get_num_threads() == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info())
    assert torch.get_num_threads() == before
    assert usable_cores() >= 1


def test_chunk_sizes_follow_the_call_cost():
    assert chunk_size_for(0.0015, 240, 2) == 120       # xTB: 0.25 s of calls per task, work for both workers
    assert chunk_size_for(0.0015, 10000, 2) == 166
    assert chunk_size_for(5.0, 4, 2) == 1              # DFT: one call per task
    assert list(run_chunks(len, [[1, 2], [3]])) == [(0, 2), (1, 1)]


@pytest.fixture(scope="module")
def pool():
    lay = decide_threads(2, cores=2, call_seconds=0.001)
    ex, owned = make_executor("processes", lay)
    yield ex
    shutdown(ex, owned)


def test_process_pool_labels_equal_serial_bit_for_bit_and_workers_persist(pool, tmp_path):
    frames = _frames(24)
    oracle = XTBOracle()
    serial = oracle.label(frames)
    pooled = oracle.label(frames, executor=pool, cache=tmp_path / "cache", chunk_size=4)
    assert oracle.last_stats["tasks"] == 6 and oracle.last_stats["computed"] == 24
    for a, b in zip(serial, pooled):
        assert a.ok and b.ok
        assert a.energy == b.energy and np.array_equal(a.forces, b.forces)
    # a second batch reuses each worker's calculator: one calculator object per worker process
    seen = {}
    for _ in range(6):
        pid, calc = pool.submit(calculator_identity, SleepyHarmonicOracle(delay=0.0)).result()
        seen.setdefault(pid, set()).add(calc)
    assert all(len(ids) == 1 for ids in seen.values()), seen
    # the cache was written as chunks arrived: everything is there, and a rerun computes nothing
    again = oracle.label(frames, executor=pool, cache=tmp_path / "cache")
    assert oracle.last_stats["computed"] == 0 and [x.energy for x in again] == [x.energy for x in serial]


def test_a_failed_call_is_recorded_per_configuration_in_a_pool(pool):
    frames = _frames(6)
    frames[2].positions[1] = frames[2].positions[0]  # two atoms on top of each other
    labels = XTBOracle().label(frames, executor=pool, chunk_size=3)
    assert [lab.ok for lab in labels] == [True, True, False, True, True, True]
    assert "apart" in labels[2].reason and labels[2].energy is None


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed")
    import dask

    # a killed worker's task fails at once (no retry on another worker), so the test sees the loss
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=40)
        client = distributed.Client(cluster)
        yield client
        client.close()
        cluster.close()


def test_dask_labels_equal_serial_bit_for_bit(dask_cluster):
    from fesurf.execution import register_thread_plugin

    register_thread_plugin(dask_cluster, 1)
    frames = _frames(16, seed=3)
    oracle = XTBOracle()
    serial = oracle.label(frames)
    dasked = oracle.label(frames, executor=dask_cluster, chunk_size=4)
    assert oracle.last_stats["tasks"] == 4
    for a, b in zip(serial, dasked):
        assert a.energy == b.energy and np.array_equal(a.forces, b.forces)
    threads = dask_cluster.run(lambda: __import__("torch").get_num_threads())
    assert set(threads.values()) == {1}


def test_dask_worker_killed_mid_batch_loses_no_completed_label(dask_cluster, tmp_path):
    from ase import Atoms

    rng = np.random.default_rng(1)
    frames = [Atoms("H2", positions=[[0, 0, 0], [0.7 + 0.01 * k, 0.1 * rng.normal(), 0]]) for k in range(40)]
    cache = tmp_path / "cache"
    kill = tmp_path / "kill-me"
    oracle = SleepyHarmonicOracle(delay=0.05, kill_file=str(kill))
    first = oracle.label(frames[:8], cache=cache)  # 8 labels in the cache before the batch
    assert all(lab.ok for lab in first)
    # the kill file appears once a few chunks of the batch are stored: the next worker to see it dies mid-batch
    import threading
    import time

    from fesurf.oracles import LabelCache

    def plant_kill_file():
        deadline = time.time() + 60
        while len(LabelCache(cache)) < 14 and time.time() < deadline:
            time.sleep(0.005)
        kill.write_text("x")

    watcher = threading.Thread(target=plant_kill_file, daemon=True)
    watcher.start()
    with pytest.raises(Exception) as info:
        oracle.label(frames, executor=dask_cluster, cache=cache, chunk_size=2)
    watcher.join(timeout=5)
    assert "Killed" in type(info.value).__name__ or "died" in str(info.value).lower() or "killed" in str(info.value)
    stored = len(LabelCache(cache))
    assert 8 < stored < 40  # completed chunks were stored as they arrived; the killed one was not
    # the rerun (no kill file) computes only what is missing, and every label is right
    rerun = SleepyHarmonicOracle(delay=0.02)
    labels = rerun.label(frames, executor=dask_cluster, cache=cache, chunk_size=2)
    assert rerun.last_stats["computed"] == 40 - stored
    for a, lab in zip(frames, labels):
        assert lab.ok and lab.energy == pytest.approx(float((a.positions ** 2).sum()), abs=1e-12)
