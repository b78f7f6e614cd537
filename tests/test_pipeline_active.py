"""The pipeline's active-learning route (surrogate.model = "", surrogate.strategy = "active") on a tiny GFN2-xTB
system, bifluoride FHF- (3 atoms, milliseconds a call): the stage is killed while it labels round 1, resumes
without recomputing a single label, counts every call exactly once, and the sample stage records the
production guard's spreads. Small settings: the loop's science is tested in test_active_learning.py.
"""
import numpy as np
import pytest

from fesurf.oracles import XTBOracle

CONFIG = """
[run]
output = "{out}"
seed = 2
[system]
structure = "{xyz}"
charge = -1
[oracle]
method = "GFN2-xTB"
[surrogate]
model = ""
n_members = 2
hidden = [8]
[active]
lower = 0.2
upper = 2.0
per_round = 10
walkers = 2
steps = 40
check_every = 10
budget = 200
max_rounds = 2
normal_modes = 8
scan_points = 4
scan_steps = 2
seed_epochs = 20
epochs = 5
confirm_steps = 0
[cv]
type = "distance_difference"
pairs = [[0, 1], [2, 1]]
[umbrella]
range = [-0.3, 0.3]
n_windows = 4
kappa = 4.0
n_equilibration = 10
n_production = 40
stride = 10
[pmf]
bins = 4
"""


class Killed(BaseException):
    """Stands for a kill (not an Exception: the oracle does not record it as a failed label)."""


class CountingXTB(XTBOracle):
    """GFN2-xTB that counts the calculations it makes, and dies before calculation ``kill_after + 1``."""

    def __init__(self, kill_after=None):
        super().__init__()
        self.n_compute, self.kill_after = 0, kill_after

    def _compute(self, atoms, charge, multiplicity):
        if self.kill_after is not None and self.n_compute >= self.kill_after:
            raise Killed("simulated kill")
        self.n_compute += 1
        return super()._compute(atoms, charge, multiplicity)


def _stages(cfg, oracle, names):
    from fesurf.pipeline import Run, build_cv, build_structure, route
    from fesurf.pipeline.stages import Products, depends, science_config

    stages = route(cfg)
    run = Run(cfg, depends(stages), hash_view=science_config(cfg))
    atoms = build_structure(cfg)
    p = Products(atoms=atoms, cv=build_cv(cfg, len(atoms)), oracle=oracle)
    try:
        for stage in stages:
            if stage.name in names:
                stage.run(run, p)
    finally:
        run.close()
    return run, p


def test_active_route_resumes_after_a_kill_without_recomputing(tmp_path):
    from fesurf.config import load_config
    from fesurf.pipeline import route

    xyz = tmp_path / "fhf.xyz"
    xyz.write_text("3\nbifluoride\nF 0.0 0.0 0.0\nH 0.0 0.0 1.0\nF 0.0 0.0 2.3\n")
    text = CONFIG.format(out=tmp_path / "run", xyz=xyz)
    (tmp_path / "run.toml").write_text(text)
    cfg = load_config(tmp_path / "run.toml")
    assert [s.name for s in route(cfg)][:2] == ["active", "sample"]
    fixed = load_config(tmp_path / "run.toml")
    fixed["surrogate"]["strategy"] = "fixed"
    assert [s.name for s in route(fixed)][:3] == ["generate", "label", "train"]  # the old generation, by name

    # seed: start 1 + Hessian 6N = 18 + normal modes 8 + scan 4 x 2 = 35 calls; die 5 labels into round 1
    n_seed = 1 + 18 + 8 + 4 * 2
    killed = CountingXTB(kill_after=n_seed + 5)
    with pytest.raises(Killed):
        _stages(cfg, killed, {"active"})
    assert killed.n_compute == n_seed + 5
    again = CountingXTB()
    run, p = _stages(load_config(tmp_path / "run.toml"), again, {"active", "sample"})
    entry = run.stages["active"]
    # every call counted once: the counter equals the calculations both sessions made, none twice
    assert p.training_calls == entry["qm_calls"] == killed.n_compute + again.n_compute
    record = __import__("json").loads((tmp_path / "run" / "active_learning.json").read_text())
    assert record["calls"]["total"] == entry["qm_calls"]
    assert record["calls"]["from_cache_this_session"] == 5  # the 5 labels made before the kill, reused
    assert record["rounds"][0]["calls_total"] == n_seed and entry["rounds"] == record["rounds"][-1]["round"]
    # the sample stage ran with the production guard at active.upper, recording a spread per frame
    guard = p.samples.attrs["guard"]
    assert guard["upper"] == 2.0 and guard["action"] == "warn"
    spread = np.asarray(p.samples.committee_spread)
    assert spread.shape == (p.samples.n_frames,) and np.isfinite(spread).all() and (spread > 0).all()
    p.samples.close()
    # a finished stage reruns without a single call and reports the same count
    idle = CountingXTB()
    _, q = _stages(load_config(tmp_path / "run.toml"), idle, {"active"})
    assert idle.n_compute == 0 and q.training_calls == entry["qm_calls"]
