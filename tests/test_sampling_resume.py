"""Checkpoint/resume: a run killed with SIGKILL and resumed equals the uninterrupted run."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from fesurf.sampling import SampleSet
from fesurf.sampling.sampleset import assert_samplesets_equal

SCRIPT = textwrap.dedent("""
    import sys, numpy as np, torch
    torch.set_num_threads(1)
    from fesurf.cv import POSITION
    from fesurf.bias import METAD
    from fesurf.potentials import DoubleWell1D
    from fesurf.sampling import umbrella_sampling, metadynamics
    from fesurf.state import State
    path, protocol, resume = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    one = State(positions=[[0.0, 0, 0]], atomic_numbers=[1])
    report = lambda step: print(step, flush=True)
    if protocol == "hrex":
        ss = umbrella_sampling(DoubleWell1D(barrier=0.13), one, POSITION(0, "x"), np.linspace(-1.3, 1.3, 7), 0.6,
                               temperature=300.0, friction=0.2, n_equilibration=100, n_production=3000, stride=10,
                               seed=4, exchange_every=50, checkpoint_every=200, path=path, resume=resume,
                               check_overlap=False, on_checkpoint=report)
    else:
        m = METAD(POSITION(0, "x"), sigma=0.1, height=0.003, pace=50, biasfactor=8.0, temperature=300.0)
        ss = metadynamics(DoubleWell1D(barrier=0.13), one.replicate(3), m, temperature=300.0, friction=0.2,
                          n_steps=3000, stride=10, seed=4, checkpoint_every=200, path=path, resume=resume,
                          on_checkpoint=report)
    ss.close()
    print("done", flush=True)
""")


def _run(args):
    return subprocess.run([sys.executable, "-c", SCRIPT] + args, capture_output=True, text=True, check=True)


@pytest.mark.parametrize("protocol", ["hrex", "metad"])
def test_sigkill_and_resume_gives_identical_sampleset(tmp_path, protocol):
    full, killed = str(tmp_path / "full.h5"), str(tmp_path / "killed.h5")
    _run([full, protocol, "0"])
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, killed, protocol, "0"], stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:  # wait until a few checkpoints are on disk, then kill mid-run
        if line.strip().isdigit() and int(line) >= 1000:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with SampleSet.open(killed) as part, SampleSet.open(full) as whole:
        assert 0 < part.n_frames < whole.n_frames  # killed before the end
    out = _run([killed, protocol, "1"])
    assert "done" in out.stdout
    with SampleSet.open(killed) as a, SampleSet.open(full) as b:
        assert_samplesets_equal(a, b)  # exact equality: positions, CVs, u_kn, steps, metadata
