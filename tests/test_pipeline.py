"""The pipeline end to end on the stored malonaldehyde committee, small settings; kill and resume."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

SMALL = """
[run]
output = "{out}"
temperature = 300.0
seed = 3
workers = 1
[system]
structure = "builtin:malonaldehyde"
[oracle]
method = "GFN2-xTB"
[surrogate]
model = "builtin:malonaldehyde_committee"
[cv]
type = "distance_difference"
pairs = [[0, 5], [4, 5]]
[umbrella]
range = [-0.8, 0.8]
n_windows = 8
kappa = 3.0
timestep = 0.5
n_equilibration = 100
n_production = 3000
stride = 10
checkpoint_every = 100
[pmf]
bins = 12
range = [-0.7, 0.7]
[reweight]
n_labels = 96
[analysis]
unit = "kcal/mol"
"""


def test_pipeline_killed_during_sampling_resumes_and_completes(tmp_path):
    cfg = tmp_path / "small.toml"
    out = tmp_path / "run"
    cfg.write_text(SMALL.format(out=out))
    cmd = [sys.executable, "-m", "fesurf.cli", "run", str(cfg)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    samples = out / "samples.h5"
    deadline = time.time() + 120
    while time.time() < deadline and not (samples.exists() and samples.stat().st_size > 50_000):
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed; raise n_production"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "corrected barrier:" in done.stdout and "reference (QM) calls: 96" in done.stdout
    results = json.loads((out / "results.json").read_text())
    stages = json.loads((out / "stages.json").read_text())
    assert all(s in stages for s in ("sample", "pmf", "qm", "reweight", "analysis"))
    assert results["qm_calls"]["sparse_labels"] == 96
    for name in ("pmf_surrogate.csv", "pmf_corrected.csv", "pmf.png", "fesurf.log"):
        assert (out / name).exists()
    # the barrier is finite with a finite error bar; the rate error factor is exp(sigma/RT)
    c = results["corrected"]
    assert 0 < c["activation"] < 10 and 0 < c["activation_sigma"] < 3
    # rerunning a finished run recomputes nothing and gives the same numbers
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert json.loads((out / "results.json").read_text())["corrected"] == c, again.stderr


FROM_SCRATCH = SMALL.replace('model = "builtin:malonaldehyde_committee"', 'model = ""\nstrategy = "fixed"\nn_members = 2\nhidden = [8, 8]') \
    .replace("n_production = 3000", "n_production = 400").replace("n_labels = 96", "n_labels = 24\nestimator = \"delta\"") \
    + """
[generate]
temperatures = [300.0]
frames_per_temperature = 10
biased_frames_per_window = 5
biased_windows = 2
stride = 2
[train]
epochs = 3
"""


def test_building_the_surrogate_counts_every_reference_call(tmp_path):
    """Stages 1-3 from scratch (oracle MD -> labels -> committee): the reported cost is every oracle call,
    MD steps (equilibration 100 + frames x stride, plus the first force call, per replica) and labels;
    a rerun reuses the trained model and reports the same count."""
    from fesurf.config import load_config
    from fesurf.pipeline import Run, build_cv, build_oracle, build_structure, route
    from fesurf.pipeline.stages import Products, depends, science_config

    cfg_path = tmp_path / "scratch.toml"
    cfg_path.write_text(FROM_SCRATCH.format(out=tmp_path / "run"))
    cfg = load_config(cfg_path)
    atoms = build_structure(cfg)
    md_calls = 1 * (100 + 10 * 2 + 1) + 2 * (100 + 5 * 2 + 1)
    labels = 10 + 2 * 5
    stages = route(cfg)
    assert [s.name for s in stages[:3]] == ["generate", "label", "train"]
    for _ in range(2):
        run = Run(cfg, depends(stages), hash_view=science_config(cfg))
        p = Products(atoms=atoms, cv=build_cv(cfg, len(atoms)), oracle=build_oracle(cfg))
        try:
            for stage in stages[:3]:
                stage.run(run, p)
        finally:
            run.close()
        model, calls = p.model, p.training_calls
        assert calls == md_calls + labels
        assert run.stages["generate"]["qm_calls"] == md_calls and run.stages["label"]["qm_calls"] == labels
    assert model.n_members == 2


def test_adaptive_labelling_stops_at_the_budget_or_the_target(tmp_path):
    """reweight.adaptive: rounds of labels until the barrier sigma is below target_sigma or the budget is
    spent; too small a budget gets an error that says which keys to raise."""
    from fesurf import InputError
    from fesurf.pipeline import run_pipeline

    cfg = tmp_path / "adaptive.toml"
    # a third of the sampling of the other tests: the rounds and the budget logic do not depend on it
    short = SMALL.replace("n_production = 3000", "n_production = 1000")
    text = short.format(out=tmp_path / "run").replace(
        "n_labels = 96", "n_labels = 48\nadaptive = true\nbudget = 96\ntarget_sigma = 0.01")
    cfg.write_text(text)
    r = run_pipeline(cfg)
    stages = json.loads((tmp_path / "run" / "stages.json").read_text())
    rounds = stages["qm"]["adaptive_rounds"]
    # a 0.01 kcal/mol target is out of reach: the whole budget is spent, in rounds of 48, 24, 24
    assert [h["n_labels"] + h["n_failed"] for h in rounds] == [48, 72, 96]
    assert stages["qm"]["adaptive_converged"] is False
    assert r["qm_calls"]["sparse_labels"] == 96
    small = short.format(out=tmp_path / "run").replace("n_labels = 96", "n_labels = 6")  # reuses the samples
    cfg.write_text(small)
    with pytest.raises(InputError, match="raise 'reweight.n_labels'"):
        run_pipeline(cfg)


def test_a_changed_model_file_reruns_the_sampling(tmp_path):
    """Stage caches key on the model file's content, not just its name."""
    import shutil

    from fesurf.config import load_config
    from fesurf.data import MALONALDEHYDE_COMMITTEE
    from fesurf.pipeline import _model_digest, route
    from fesurf.pipeline.stages import config_hash, depends, science_config

    model = tmp_path / "committee.pt"
    shutil.copy(MALONALDEHYDE_COMMITTEE, model)
    shutil.copy(MALONALDEHYDE_COMMITTEE.with_suffix(".json"), model.with_suffix(".json"))
    cfg = load_config(tomllib_loads(SMALL.format(out=tmp_path / "run").replace(
        'model = "builtin:malonaldehyde_committee"', f'model = "{model}"')))
    cfg["surrogate"]["model_sha256"] = _model_digest(cfg)
    sections = depends(route(cfg))["sample"]
    before = config_hash(science_config(cfg), sections)
    cfg["run"]["workers"] = 7  # how to compute never invalidates a stage
    assert config_hash(science_config(cfg), sections) == before
    model.write_bytes(model.read_bytes() + b"\0")  # any change to the file
    cfg["surrogate"]["model_sha256"] = _model_digest(cfg)
    assert config_hash(science_config(cfg), sections) != before


def tomllib_loads(text):
    import tomllib

    return tomllib.loads(text)
