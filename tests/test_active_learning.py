"""On-the-fly active learning (fesurf.training.active): honesty, robustness, guard, resume, bad inputs.

The model system: one particle (an H atom, doublet so the electron count is possible) on an analytic
surface, a double well along x (barrier 0.1 eV, 3.9 kT at 300 K) with harmonic confinement in y and
z, plus an extra Gaussian well off the path, at (x, y) = (0.6, 0.9), 0.15 eV deep, 0.35 A wide.
The seed (Hessian and normal modes at the start x = -1, a restrained scan along x at y ~ 0) never
comes within 0.7 A (2 widths) of it, and without it the PMF along x differs by up to 1.4 kT: the
loop has to find it. The reference is that surface through an ASE calculator (FesurfCalculator)
in an ASEOracle that counts every calculation it makes and fails (a recorded failure, as an SCF
that does not converge) when |z| > 0.25 A, so failed calls are counted too. The exact PMF along x
is quadrature over y (z separates).
"""
from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch
from ase import Atoms

from fesurf.cv import POSITION
from fesurf.errors import InputError, SimulationError
from fesurf.estimators import compute_pmf
from fesurf.estimators.reweight import choose_frames, reweight_pmf
from fesurf.oracles import ASEOracle
from fesurf.potentials import check_potential
from fesurf.potentials.ase_bridge import FesurfCalculator
from fesurf.potentials.base import Potential
from fesurf.sampling.umbrella import umbrella_sampling
from fesurf.state import State
from fesurf.surrogates.cartesian import CartesianCommittee
from fesurf.training.active import (ActiveLearningSettings, Calibration, ExploreSettings, ProductionBias,
                                    ProductionGuard, SeedSettings, SelectSettings, StopSettings, TrustLevels,
                                    _quota, active_learning, committee_spread, farthest_point_sampling)
from fesurf.training.refit import RefitSettings
from fesurf.units import KB

T = 300.0
WELL = dict(xw=0.6, yw=0.9, w=0.35, depth=0.15)


class ExtraWellSurface(Potential):
    """U = a ((x)^2 - 1)^2 + ky/2 y^2 + kz/2 z^2 - depth exp(-((x - xw)^2 + (y - yw)^2) / (2 w^2)), eV."""

    translation_invariant = False
    rotation_invariant = False

    def __init__(self, a=0.10, ky=0.25, kz=4.0, well=True):
        super().__init__()
        self.a, self.ky, self.kz, self.well = a, ky, kz, well

    def surface(self, x, y, lib=np):
        u = self.a * (x * x - 1.0) ** 2 + 0.5 * self.ky * y * y
        if self.well:
            u = u - WELL["depth"] * lib.exp(-((x - WELL["xw"]) ** 2 + (y - WELL["yw"]) ** 2) / (2 * WELL["w"] ** 2))
        return u

    def energy(self, state):
        x, y, z = state.positions.unbind(1)
        return state.sum_per_system(self.surface(x, y, torch) + 0.5 * self.kz * z * z)


class CountingOracle(ASEOracle):
    """The surface as an ASE-calculator oracle that counts its calculations and fails when |z| > 0.25 A."""

    def __init__(self, surface, kill_after=None):
        super().__init__(functools.partial(FesurfCalculator, surface), method="extra-well-surface")
        self.n_compute, self.n_failed, self.kill_after = 0, 0, kill_after

    def _compute(self, atoms, charge, multiplicity):
        if self.kill_after is not None and self.n_compute >= self.kill_after:
            raise Killed("simulated kill")
        self.n_compute += 1
        if abs(atoms.positions[0, 2]) > 0.25:
            self.n_failed += 1
            raise RuntimeError("no convergence (test failure region |z| > 0.25 A)")
        return super()._compute(atoms, charge, multiplicity)


class Killed(BaseException):
    """Stands for a kill: not an Exception, so the oracle does not record it as a failed label."""


def particle():
    atoms = Atoms("H", positions=[[-1.0, 0.0, 0.0]])
    atoms.info["multiplicity"] = 2
    return atoms


BIAS = ProductionBias(POSITION(0, "x"), centers=np.linspace(-1.2, 1.2, 12), kappa=1.0, temperature=T,
                      pmf_range=(-1.1, 1.1), pmf_bins=11)


def settings(**over):
    base = dict(
        trust=TrustLevels(lower=0.05, upper=0.3),
        seed_data=SeedSettings(normal_modes=32, scan_points=6, scan_steps=8),
        explore=ExploreSettings(walkers_per_window=4, steps=300, check_every=10, timestep=1.0, friction=0.05),
        select=SelectSettings(per_round=64, min_validation=8),
        refit=RefitSettings(seed_epochs=100, epochs=40, optimizer="lbfgs", force_weight=1.0, bootstrap=True),
        stop=StopSettings(budget=1200, max_rounds=12, max_beta_sigma=1.0, max_candidate_fraction=0.1))
    base.update(over)
    return ActiveLearningSettings(**base)


def quadrature_pmf(edges, well=True):
    """Exact bin-averaged PMF along x (kT): -ln of the Boltzmann weight of each bin, integrated over y."""
    surface = ExtraWellSurface(well=well)
    xs = np.linspace(edges[0], edges[-1], 2201)
    ys = np.linspace(-4.0, 5.0, 3601)
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    w = np.exp(-surface.surface(X, Y) / (KB * T)).sum(1)
    f = np.array([-np.log(w[(xs >= a) & (xs < b)].sum()) for a, b in zip(edges[:-1], edges[1:])])
    return f - f.min()


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """One loop on the extra-well surface, then guarded production and a sparse correction."""
    oracle = CountingOracle(ExtraWellSurface())
    model = CartesianCommittee(1, hidden=(32, 32), n_members=4, seed=0)
    result = active_learning(oracle, particle(), BIAS, settings(), model=model,
                             workdir=tmp_path_factory.mktemp("al"))
    calls_after_loop, failed_after_loop = oracle.n_compute, oracle.n_failed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        samples = umbrella_sampling(result.model, State.from_atoms(particle()), BIAS.cv,
                                    centers=np.array(BIAS.centers), kappa=BIAS.kappa, temperature=T, timestep=1.0,
                                    friction=0.05, seed=5, n_equilibration=200, n_production=1000, stride=10,
                                    replicas_per_window=24, check_overlap=False, guard=result.guard("warn"))
        frames, pi = choose_frames(samples, 400, bins=BIAS.pmf_bins, range=BIAS.pmf_range, seed=1)
        order = np.argsort(frames)
        frames, pi = frames[order], pi[order]
        configs = []
        for p in samples.read_positions(frames):
            a = particle()
            a.positions = p
            configs.append(a)
        labels = oracle.label(configs)
        ok = np.array([lab.ok for lab in labels])
        du = np.array([lab.energy if lab.ok else np.nan for lab in labels]) - samples.u_ref[frames] * KB * T
        corrected = reweight_pmf(samples, frames[ok], du[ok], inclusion_probability=pi[ok], bins=BIAS.pmf_bins,
                                 range=BIAS.pmf_range, warn=False)
    return dict(result=result, oracle=oracle, calls_after_loop=calls_after_loop, failed_after_loop=failed_after_loop,
                samples=samples,
                corrected=corrected)


def test_every_reference_call_is_counted(loop):
    res = loop["result"]
    calls = res.calls
    # a fresh cache: every configuration the loop sent was computed, so the counter must equal the
    # number of calculations the oracle itself made, failures included
    assert calls["total"] == loop["calls_after_loop"] == calls["computed_this_session"]
    assert calls["failed"] == loop["failed_after_loop"] > 0  # the |z| > 0.25 failures were met and counted
    purposes = ("seed_start", "seed_hessian", "seed_normal_modes", "seed_scan", "selected", "validation",
                "free_energy_check")
    assert sum(calls[p] for p in purposes) == calls["total"]
    assert calls["seed_hessian"] == 6 and calls["seed_start"] == 1 and calls["seed_scan"] == 6 * 8
    assert sum(r["calls_this_round"] for r in res.rounds) == calls["total"]
    assert res.rounds[-1]["calls_total"] == calls["total"]
    # failed labels are counted but never data
    assert len(res.dataset) == calls["total"] - calls["failed"]


def test_loop_finds_the_unvisited_well_and_the_pmf_matches_quadrature(loop):
    res = loop["result"]
    pos = res.dataset.positions.numpy()
    seed = np.array([inf.get("round") == 0 for inf in res.dataset.info])
    dist = np.hypot(pos[:, 0] - WELL["xw"], pos[:, 1] - WELL["yw"])
    assert dist[seed].min() > 2 * WELL["w"]  # the seed never comes near the well ...
    assert (dist[~seed] < WELL["w"]).sum() >= 5  # ... the loop labels its core
    assert res.converged and res.stop_reason == "spread_and_candidate_rate"
    assert res.rounds[-1]["explore"]["max_beta_sigma"] <= 1.0

    edges = BIAS.edges
    exact, no_well = quadrature_pmf(edges), quadrature_pmf(edges, well=False)
    assert np.max(np.abs((no_well - exact) - np.mean(no_well - exact))) > 1.0  # the well matters (1.4 kT)
    corrected = loop["corrected"].corrected.to("kT")
    assert not loop["corrected"].flagged.any()
    dev = corrected.values - exact
    dev -= dev.mean()  # PMFs are defined up to a constant
    # per-bin sigma of the corrected PMF is 0.02-0.10 kT (MBAR analytic + label bootstrap, relative to the
    # lowest bin; mean-aligned differences are smaller): 0.15 kT is the acceptance tolerance
    assert np.max(np.abs(dev)) <= 0.15, (np.round(dev, 3), np.round(corrected.uncertainties, 3))


def test_production_guard_records_spreads_and_reports_bins(loop):
    samples, res = loop["samples"], loop["result"]
    guard = samples.attrs["guard"]
    assert guard["upper"] == res.settings.trust.upper and guard["unit"] == "eV/A"
    # the stored spread is the calibrated max force deviation of each stored frame, recomputed here exactly
    idx = np.arange(0, samples.n_frames, 97)
    state = State.from_atoms(particle()).replicate(idx.size)
    state = state.replace(positions=torch.as_tensor(samples.read_positions(idx).reshape(-1, 3)))
    again = committee_spread(res.model, state, res.calibration)["force_deviation_max"]
    np.testing.assert_allclose(samples.committee_spread[idx], again, rtol=1e-10)
    # the trust level at the median stored spread: about half of a new run's frames are flagged
    upper = float(np.median(samples.committee_spread))
    start = State.from_atoms(particle())
    run = dict(centers=np.array(BIAS.centers), kappa=BIAS.kappa, temperature=T, timestep=1.0, friction=0.05, seed=1,
               n_equilibration=20, n_production=400, stride=10, check_overlap=False)
    with pytest.warns(UserWarning, match="trust level"):
        ss = umbrella_sampling(res.model, start, BIAS.cv, **run,
                               guard=ProductionGuard(res.model, upper=upper, calibration=res.calibration))
    flags = ss.untrusted_frames()
    assert 0 < flags.sum() < flags.size
    np.testing.assert_array_equal(flags, ss.committee_spread > upper)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pmf = compute_pmf(ss, bins=BIAS.pmf_bins, range=BIAS.pmf_range, warn=False)
    expected = np.histogram(ss.cv[flags, 0], bins=BIAS.edges)[0]
    np.testing.assert_array_equal(pmf.diagnostics["untrusted_frames_per_bin"], expected)
    assert len(pmf.diagnostics["untrusted_bins"]) == int((expected > 0).sum())
    with pytest.raises(SimulationError, match="trust level"):
        umbrella_sampling(res.model, start, BIAS.cv, **run,
                          guard=ProductionGuard(res.model, upper=upper, action="stop", calibration=res.calibration))


def tiny_settings():
    return settings(seed_data=SeedSettings(normal_modes=8, scan_points=4, scan_steps=3),
                    explore=ExploreSettings(walkers_per_window=2, steps=60, check_every=10, timestep=1.0,
                                            friction=0.05),
                    select=SelectSettings(per_round=12, min_validation=4),
                    refit=RefitSettings(seed_epochs=20, epochs=10, optimizer="lbfgs", force_weight=1.0),
                    stop=StopSettings(budget=500, max_rounds=2, max_beta_sigma=1e-6, max_candidate_fraction=0.0))


def test_a_killed_loop_resumes_without_recomputing(tmp_path):
    def run(oracle, workdir):
        model = CartesianCommittee(1, hidden=(16,), n_members=3, seed=0)
        return active_learning(oracle, particle(), BIAS, tiny_settings(), model=model, workdir=workdir)

    plain = CountingOracle(ExtraWellSurface())
    reference = run(plain, tmp_path / "plain")
    n_round0 = reference.rounds[0]["calls_total"]
    killed = CountingOracle(ExtraWellSurface(), kill_after=n_round0 + 5)  # dies while labelling round 1
    with pytest.raises(Killed):
        run(killed, tmp_path / "resumed")
    again = CountingOracle(ExtraWellSurface())
    resumed = run(again, tmp_path / "resumed")
    assert killed.n_compute + again.n_compute == plain.n_compute  # nothing computed twice
    assert resumed.calls["total"] == reference.calls["total"]  # the count includes the calls before the kill
    assert resumed.calls["from_cache_this_session"] == 5
    np.testing.assert_array_equal(resumed.dataset.energy.numpy(), reference.dataset.energy.numpy())
    for a, b in zip(resumed.model.state_dict().values(), reference.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a finished loop reruns from its checkpoint without a single call
    idle = CountingOracle(ExtraWellSurface())
    assert run(idle, tmp_path / "resumed").calls["total"] == reference.calls["total"] and idle.n_compute == 0


def test_cartesian_committee_is_a_potential_and_selection_helpers():
    model = CartesianCommittee(2, hidden=(8, 8), n_members=3, seed=1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2), dtype=p.dtype))
    state = State(positions=[[0.1, 0.2, 0.3], [1.0, 0.1, -0.2]], atomic_numbers=[1, 1]).replicate(3)
    state = state.replace(positions=state.positions + 0.05 * torch.arange(18, dtype=torch.float64).view(6, 3) / 18)
    assert check_potential(model, state)["max_force_error"] < 1e-6
    # farthest-point sampling on a line: the ends first, then the middle
    x = np.array([[0.0], [0.4], [1.0], [0.5], [0.45]])
    assert farthest_point_sampling(x, 3).tolist() == [0, 2, 3]
    # shares proportional to weights, each capped, the rest handed on
    assert _quota(np.array([1.0, 1.0, 2.0]), 8, np.array([10, 1, 10])).tolist() == [2, 1, 5]
    assert _quota(np.array([0.0, 0.0, 1.0]), 3, np.array([2, 2, 1])).sum() == 3


def test_bad_inputs_are_refused():
    with pytest.raises(InputError, match="lower < upper"):
        TrustLevels(lower=0.3, upper=0.1)
    with pytest.raises(InputError, match="pmf_range"):
        ProductionBias(POSITION(0, "x"), centers=[0.0, 1.0], kappa=1.0, temperature=T, pmf_range=(1.0, 0.0))
    with pytest.raises(InputError, match="kappa"):
        ProductionBias(POSITION(0, "x"), centers=[0.0, 1.0], kappa=-1.0, temperature=T)
    with pytest.raises(InputError, match="strategy"):
        SelectSettings(strategy="uncertainty")
    with pytest.raises(InputError, match="check_every"):
        ExploreSettings(steps=10, check_every=20)
    with pytest.raises(InputError, match="optimizer"):
        RefitSettings(optimizer="sgd")
    with pytest.raises(InputError, match="action"):
        ProductionGuard(CartesianCommittee(1), upper=0.2, action="halt")
    with pytest.raises(InputError, match="committee"):
        active_learning(CountingOracle(ExtraWellSurface()), particle(), BIAS, settings(),
                        model=CartesianCommittee(1, n_members=1))
    with pytest.raises(InputError, match="ProductionBias"):
        active_learning(CountingOracle(ExtraWellSurface()), particle(), {"centers": [0.0]}, settings(),
                        model=CartesianCommittee(1))
    with pytest.raises(InputError, match="Oracle"):
        active_learning(object(), particle(), BIAS, settings(), model=CartesianCommittee(1))
    assert Calibration().energy == 1.0


def test_pipeline_stage_settings_and_guard_from_config():
    from fesurf.config import load_config
    from fesurf.pipeline.active_stage import ACTIVE_DEFAULTS, ActiveLearn, active_settings, production_guard

    cfg = load_config({"system": {"structure": "builtin:malonaldehyde"},
                       "cv": {"type": "distance_difference", "pairs": [[0, 5], [4, 5]]},
                       "umbrella": {"range": [-0.9, 0.9], "n_windows": 16, "kappa": 3.0}})
    cfg["active"] = {"lower": 0.2, "upper": 0.5, "walkers": 3, "budget": 1234, "selection": "random"}
    settings, bias = active_settings(cfg)
    assert (settings.trust.lower, settings.trust.upper) == (0.2, 0.5)
    assert settings.explore.walkers_per_window == 3 and settings.stop.budget == 1234
    assert settings.select.strategy == "random" and settings.select.per_round == ACTIVE_DEFAULTS["per_round"]
    assert settings.explore.timestep == cfg["umbrella"]["timestep"]  # the production dynamics
    assert len(bias.centers) == 16 and bias.kappa == 3.0 and bias.pmf_bins == cfg["pmf"]["bins"]
    committee = CartesianCommittee(9, n_members=2)
    guard = production_guard(cfg, committee)
    assert guard.upper == 0.5 and guard.action == "warn"  # the loop's upper level by default
    cfg["umbrella"]["guard"], cfg["umbrella"]["guard_upper"] = "stop", 0.8
    assert (production_guard(cfg, committee).upper, production_guard(cfg, committee).action) == (0.8, "stop")
    cfg["umbrella"]["guard"] = "off"
    assert production_guard(cfg, committee) is None
    assert production_guard(dict(cfg, umbrella=dict(cfg["umbrella"], guard="warn")),
                            CartesianCommittee(9, n_members=1)) is None  # a single network has no spread
    cfg["umbrella"]["guard"] = "halt"
    with pytest.raises(InputError, match="umbrella.guard"):
        production_guard(cfg, committee)
    cfg["active"]["lower"] = 0.9
    with pytest.raises(InputError, match=r"\[active\]"):
        active_settings(cfg)
    assert ActiveLearn.replaces == ("generate", "label", "train")
    cfg["active"] = {"confirm_steps": 0}
    assert active_settings(cfg)[0].stop.confirm_steps is None
    cfg["active"] = {}
    assert active_settings(cfg)[0].stop.confirm_steps == cfg["umbrella"]["n_equilibration"] + cfg["umbrella"]["n_production"]


def test_the_stopping_test_is_confirmed_on_a_long_exploration():
    # a stopping test that any exploration passes: the loop must still run the confirmation exploration
    # (confirm_steps MD steps) before it stops, and report it
    loose = StopSettings(budget=500, max_rounds=3, max_beta_sigma=100.0, max_candidate_fraction=1.0,
                         min_frames_per_bin=1, confirm_steps=120)
    base = tiny_settings()
    s = ActiveLearningSettings(trust=TrustLevels(lower=0.05, upper=50.0), seed_data=base.seed_data,
                               explore=base.explore, select=base.select, refit=base.refit, stop=loose)
    res = active_learning(CountingOracle(ExtraWellSurface()), particle(), BIAS, s,
                          model=CartesianCommittee(1, hidden=(16,), n_members=3, seed=0))
    last = res.rounds[-1]["explore"]
    assert res.converged and res.rounds[-1]["round"] == 1
    assert last["confirmation_steps"] == 120 and last["n_checked"] == 120 // 10 * 2 * len(BIAS.centers)


class SpreadIsX(ExtraWellSurface):
    """A harmonic 'committee' whose max force deviation is |x| (eV/A) exactly: the guard's ground truth."""

    n_members = 2

    def __init__(self):
        super().__init__(a=0.0, ky=0.5, kz=0.5, well=False)

    def energy(self, state):
        return super().energy(state) + state.sum_per_system(0.25 * state.positions[:, 0] ** 2)

    def predict(self, state, calibrated=False):
        e, f = self.energy_and_forces(state)
        x = state.positions[:, 0].detach().abs()
        return {"energy": e.detach(), "forces": f, "energy_std": 1e-3 * torch.ones_like(e),
                "force_deviation_max": x}


def test_the_exploration_guard_keeps_only_trusted_frames_and_restarts_walkers():
    from fesurf.training.active import _explore

    # the window at 0.6 holds its walkers near x = 0.48 +- 0.10 (restraint 2 eV/A^2 + curvature 0.5): most
    # checks find them above the upper level 0.4, so they are sent back to their last trusted frame
    bias = ProductionBias(POSITION(0, "x"), centers=[0.0, 0.6], kappa=2.0, temperature=T)
    s = settings(trust=TrustLevels(lower=0.1, upper=0.4),
                 explore=ExploreSettings(walkers_per_window=4, steps=200, check_every=10, timestep=1.0, friction=0.05))
    start = np.zeros((8, 1, 3))
    out = _explore(SpreadIsX(), bias, start, particle(), s, Calibration(forces=1.0, n_frames=8), round_index=1)
    assert out["n_checked"] == 8 * 20 and out["n_untrusted"] > 20
    kept = out["positions"][:, 0, 0]
    # every stored frame is trusted, and its recorded deviation is its own |x| (nothing untrusted is ever data)
    assert np.all(np.abs(kept) <= 0.4) and kept.size == out["n_checked"] - out["n_untrusted"]
    np.testing.assert_allclose(out["force_deviation_max"], np.abs(kept), rtol=1e-12)
    assert out["n_candidates"] == int(np.sum(np.abs(kept) > 0.1))
    # each walker ends at its last trusted frame (the frame a restart goes back to), or its start
    for w in range(8):
        mine = np.nonzero(out["walker"] == w)[0]
        want = out["positions"][mine[-1]] if mine.size else start[w]
        np.testing.assert_array_equal(out["final_positions"][w], want)
    # the precursors (trusted frames of walkers that went untrusted next) all belong to the window at 0.6
    # (the window at 0 holds its walkers at 0 +- 0.1 A: 0.4 is 4 sigma away)
    assert out["precursors"].size > 0 and set(out["walker"][out["precursors"]].tolist()) <= {4, 5, 6, 7}
