"""Reference-call throughput: GFN2-xTB labels of malonaldehyde frames through every executor, side by side.

Measured in one run:

* ``serial``: in this process (one OpenMP thread per call, the default for ms-scale calls);
* ``pool``: :func:`fesurf.execution.make_executor("processes")`, 2 persistent workers, chunked tasks;
* ``dask``: a ``dask.distributed.LocalCluster`` of 2 single-threaded worker processes, chunked tasks;
* ``old``: the previous design, a spawn pool of 2 with one task per call, each task building its own
  calculator, default OpenMP threads.

Pools are started (and warmed with one small batch) before the timed batch, whose calls per second
are reported; start-up seconds are reported beside them. Then B3LYP/def2-SVP single points (PySCF, 4
frames) on pools of 1 and 2 persistent workers give the parallel efficiency t1 / (2 t2).

Finally the same in-process xTB labelling and a batched surrogate sampling run are timed with and
without a competing load (two busy processes, one per core) to show that fesurf's thread layout
degrades gracefully (default threads) where oversubscribed OpenMP collapses.

Writes ``benchmarks/results/reference_throughput.json``. Run on a quiet machine::

    .venv/bin/python benchmarks/reference_throughput.py            # ~4 min on 2 cores
    .venv/bin/python benchmarks/reference_throughput.py --quick    # fewer frames, no DFT
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "reference_throughput.json"


def frames(n, seed=0, amplitude=0.05):
    from fesurf.data import malonaldehyde

    rng = np.random.default_rng(seed)
    base = malonaldehyde()
    out = []
    for _ in range(n):
        a = base.copy()
        a.positions = a.positions + amplitude * rng.normal(size=a.positions.shape)
        out.append(a)
    return out


def timed_label(oracle, configs, executor=None):
    t = time.perf_counter()
    labels = oracle.label(configs, executor=executor)
    dt = time.perf_counter() - t
    assert all(lab.ok for lab in labels)
    return dt, labels


def persistent_pool(oracle, configs, workers=2):
    """fesurf's local pool: (start-up s incl. a warm batch, timed seconds, labels, chunk size)."""
    from fesurf.execution import decide_threads, make_executor, shutdown

    t0 = time.perf_counter()
    pool, owned = make_executor("processes", decide_threads(workers, call_seconds=oracle.call_seconds(9)))
    try:
        timed_label(oracle, frames(4, seed=5), pool)
        start = time.perf_counter() - t0
        dt, labels = timed_label(oracle, configs, pool)
        return start, dt, labels, oracle.last_stats["chunk_size"]
    finally:
        shutdown(pool, owned)


def old_design(configs, workers=2):
    """The previous pipeline: spawn pool, one task per call, a new calculator per task, default threads."""
    from fesurf.oracles import XTBOracle

    oracle = XTBOracle()
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        warm = [pool.submit(oracle._task_copy().compute, a) for a in configs[:workers]]
        [f.result() for f in warm]
        start = time.perf_counter() - t0
        t = time.perf_counter()
        futures = [pool.submit(oracle._task_copy().compute, a) for a in configs]
        labels = [f.result() for f in futures]
        dt = time.perf_counter() - t
    assert all(lab.ok for lab in labels)
    return dt, start, labels


def busy_loop(stop_at):
    x = 0.0
    while time.time() < stop_at:
        for _ in range(100000):
            x += 1.0
    return x


class CompetingLoad:
    """Two busy processes (one per core of a 2-core machine) for the duration of a ``with`` block."""

    def __init__(self, n=2, seconds=600):
        self.n, self.seconds = n, seconds

    def __enter__(self):
        ctx = multiprocessing.get_context("spawn")
        self.procs = [ctx.Process(target=busy_loop, args=(time.time() + self.seconds,), daemon=True)
                      for _ in range(self.n)]
        for p in self.procs:
            p.start()
        time.sleep(1.0)
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.terminate()
            p.join()
        return False


def sampling_cost(n_steps=300):
    """Seconds per replica-step of the stored committee, 16 umbrella windows of malonaldehyde."""
    import torch

    from fesurf.cv import distance_difference
    from fesurf.data import load_malonaldehyde_committee, malonaldehyde
    from fesurf.sampling import umbrella_sampling
    from fesurf.state import State

    model = load_malonaldehyde_committee()
    start = State.from_atoms(malonaldehyde(), dtype=torch.float64)
    args = dict(centers=np.linspace(-0.9, 0.9, 16), kappa=3.0, temperature=300.0, timestep=0.5,
                n_equilibration=20, n_production=n_steps, stride=20, seed=0, check_overlap=False,
                store_positions=False)
    umbrella_sampling(model, start, distance_difference([0, 5], [4, 5]), **{**args, "n_production": 40})
    t = time.perf_counter()
    umbrella_sampling(model, start, distance_difference([0, 5], [4, 5]), **args)
    return (time.perf_counter() - t) / ((n_steps + 20) * 16)


def _fresh_sampling_cost():
    from fesurf.execution import apply_threads, decide_threads

    apply_threads(decide_threads().main_threads)  # as `fesurf run` sets its main process
    return sampling_cost()


def sampling_cost_in_fresh_process():
    """:func:`sampling_cost` in a new process with fesurf's thread layout, as a ``fesurf run`` samples.

    (This benchmark's own process has run DFT pools, Dask and an all-threads OpenMP case by then; a
    sampler sharing the GIL and the OpenMP runtime with what they leave behind is not what users run.)
    """
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_fresh_sampling_cost).result()


def xtb_call_cost(n=60, threads=None):
    """Seconds per in-process GFN2-xTB call (fesurf's layout; or a fixed OpenMP thread count)."""
    from fesurf.execution import limit_threads
    from fesurf.oracles import XTBOracle

    configs = frames(n, seed=11)
    oracle = XTBOracle()
    oracle.label(configs[:3])
    if threads is None:
        dt, _ = timed_label(oracle, configs)
    else:
        with limit_threads(threads):
            # the "default OpenMP threads" case: every core, as an unconfigured process would use
            from tblite.ase import TBLite

            calc = TBLite(method="GFN2-xTB", verbosity=0)
            t = time.perf_counter()
            for a in configs:
                b = a.copy()
                b.calc = calc
                b.get_forces()
            dt = time.perf_counter() - t
    return dt / n


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    from fesurf.execution import (apply_threads, decide_threads, make_executor, register_thread_plugin, shutdown,
                                  usable_cores)
    from fesurf.oracles import PySCFOracle, XTBOracle

    apply_threads(decide_threads().main_threads)  # the layout `fesurf run` applies to its main process

    n = 120 if args.quick else 240
    configs = frames(n)
    oracle = XTBOracle()
    out = {"n_frames": n, "cores": usable_cores(), "load_average_start": os.getloadavg()[0]}

    # serial, in this process
    timed_label(oracle, configs[:5])
    serial_runs = [timed_label(oracle, configs) for _ in range(3)]
    serial = serial_runs[0][1]
    out["serial_calls_per_s"] = n / float(np.median([r[0] for r in serial_runs]))

    # persistent local pool of 2
    out["pool_start_s"], dt, pooled, out["pool_chunk_size"] = persistent_pool(oracle, configs)
    out["pool_calls_per_s"] = n / dt
    assert all(a.energy == b.energy for a, b in zip(serial, pooled))

    # Dask LocalCluster of 2
    import distributed

    t0 = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       silence_logs=40)
    client = distributed.Client(cluster)
    register_thread_plugin(client, 1)
    timed_label(oracle, frames(4, seed=6), client)
    out["dask_start_s"] = time.perf_counter() - t0
    # three timed batches, the median kept: this shared VM's neighbours move single batches by 2x
    repeats = [timed_label(oracle, configs, client) for _ in range(3)]
    dt = float(np.median([r[0] for r in repeats]))
    dasked = repeats[0][1]
    out["dask_calls_per_s"] = n / dt
    out["dask_seconds_repeats"] = [r[0] for r in repeats]
    assert all(a.energy == b.energy for a, b in zip(serial, dasked))
    # overhead per call: Dask wall time beyond an ideal 2-way split of the serial work
    out["dask_overhead_per_call_ms"] = max(0.0, (dt - (n / out["serial_calls_per_s"]) / 2) / n * 1e3)
    client.close()
    cluster.close()

    # the old one-task-per-call spawn pool
    dt, start, _ = old_design(configs)
    out["old_calls_per_s"] = n / dt
    out["old_start_s"] = start
    out["ratio_pool_vs_old"] = out["pool_calls_per_s"] / out["old_calls_per_s"]
    out["ratio_pool_vs_serial"] = out["pool_calls_per_s"] / out["serial_calls_per_s"]

    # DFT on persistent pools of 1 and 2 workers (one thread each)
    if not args.quick:
        dft = PySCFOracle(xc="B3LYP", basis="def2-SVP")
        dft_frames = frames(4, seed=7)
        times = {}
        for w in (1, 2):
            ex, owned = make_executor("processes", decide_threads(w, cores=w, call_seconds=5.0))
            timed_label(dft, frames(w, seed=8), ex)  # warm every worker (imports, basis set)
            times[w], _ = timed_label(dft, dft_frames, ex)
            shutdown(ex, owned)
        out["dft_seconds_1_worker"], out["dft_seconds_2_workers"] = times[1], times[2]
        out["parallel_efficiency_2_workers"] = times[1] / (2 * times[2])

    # graceful degradation under a competing load (two busy processes)
    # (the all-threads xTB case runs last in each phase: its idle OpenMP threads, left spinning in this
    # process, would otherwise be timed as part of the next measurement)
    quiet_md = sampling_cost_in_fresh_process()
    quiet_xtb = xtb_call_cost()
    quiet_xtb_all_threads = xtb_call_cost(threads=usable_cores())
    n_loaded = min(n, 120)
    with CompetingLoad(n=max(2, usable_cores())):
        loaded_md = sampling_cost_in_fresh_process()
        loaded_xtb = xtb_call_cost()
        # the persistent pool and the old design again, side by side under the same load
        _, dt_pool_loaded, _, _ = persistent_pool(oracle, configs[:n_loaded])
        dt_old_loaded, start_old_loaded, _ = old_design(configs[:n_loaded])
        loaded_xtb_all_threads = xtb_call_cost(threads=usable_cores())
    out.update(pool_calls_per_s_loaded=n_loaded / dt_pool_loaded, old_calls_per_s_loaded=n_loaded / dt_old_loaded,
               old_start_s_loaded=start_old_loaded, ratio_pool_vs_old_loaded=dt_old_loaded / dt_pool_loaded)
    out.update(xtb_call_ms_quiet=quiet_xtb * 1e3, xtb_call_ms_loaded=loaded_xtb * 1e3,
               xtb_load_slowdown=loaded_xtb / quiet_xtb,
               xtb_call_ms_quiet_all_threads=quiet_xtb_all_threads * 1e3,
               xtb_call_ms_loaded_all_threads=loaded_xtb_all_threads * 1e3,
               xtb_load_slowdown_all_threads=loaded_xtb_all_threads / quiet_xtb_all_threads,
               sampling_us_per_replica_step_quiet=quiet_md * 1e6, sampling_us_per_replica_step_loaded=loaded_md * 1e6,
               sampling_load_slowdown=loaded_md / quiet_md)
    out["goals"] = {"ratio_pool_vs_old": ">= 20", "dask_overhead_per_call_ms": "<= 1",
                    "parallel_efficiency_2_workers": ">= 0.8", "xtb_load_slowdown": "<= 2",
                    "sampling_load_slowdown": "<= 2.5"}
    out["load_average_end"] = os.getloadavg()[0]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    for k, v in out.items():
        if k != "goals":
            print(f"{k:40s} {v:.4g}" if isinstance(v, float) else f"{k:40s} {v}")


if __name__ == "__main__":
    main()
