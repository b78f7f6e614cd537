"""Exact reference-level sampling with surrogate proposals (fesurf.sampling.hybrid_mc), on analytic potentials.

The surrogate is deliberately wrong (tests/_hybrid_mc_cases.py: a double well with the barrier 2 kT too low
and shifted minima; a scaled, shifted Mueller-Brown surface); the reference is the exact analytic surface.
Sampled histograms must match quadrature (chi^2 on samples thinned by 2 g per walker, p > 0.01) and the
PMF must match the exact bin free energies; a mover that breaks reversibility on purpose must fail the same
chi^2 check. These are small samples (the module runs in well under a minute); benchmarks/hybrid_mc.py runs
the same cases 4-8x longer for the reported figures (PMF error <= 0.1 kT where F < 4 kT).
"""
import logging
import math

import numpy as np
import pytest
import torch

from fesurf.cv import POSITION
from fesurf.errors import InputError, SimulationError
from fesurf.oracles.base import Oracle
from fesurf.potentials import DoubleWell1D, check_potential
from fesurf.sampling.hybrid_mc import (HybridMCDynamics, beta_sigma_for_acceptance, format_report,
                                       gaussian_acceptance, hybrid_mc_sampling, max_atoms_for_acceptance,
                                       pooled_statistical_inefficiency)
from fesurf.sampling.protocol import Schedule
from fesurf.sampling.sampleset import SampleSet, assert_samplesets_equal
from fesurf.state import State
from fesurf.units import KB

import _hybrid_mc_cases as cases
from _hybrid_mc_cases import KT, REF_1D, SUR_1D, T, points


def _say(name, r):
    print(f"{name}: {r['n_frames']} frames ({r['n_effective']:.0f} effective), chi2 {r['chi2']:.1f} / {r['dof']} dof "
          f"on effective counts, p = {r['p']:.3g}; PMF max error {r['pmf_max_error_kT']:.3f} kT over {r['pmf_bins']} "
          "bins with F < 4 kT")


# ----------------------------------------------------------------------------- closed forms
def test_gaussian_acceptance_closed_form_and_size_cap():
    # erfc(beta sigma / 2): 72 % at 0.5 kT, 48 % at 1 kT, 16 % at 2 kT (docs/notes/hybrid_mc.md)
    np.testing.assert_allclose(gaussian_acceptance([0.5, 1.0, 2.0]), [0.7237, 0.4795, 0.1573], atol=5e-5)
    np.testing.assert_allclose(gaussian_acceptance(beta_sigma_for_acceptance([0.2, 0.5, 0.9])), [0.2, 0.5, 0.9])
    # 50 % acceptance at beta sigma = 0.954; 1 meV/atom uncorrelated at 300 K: sqrt(N) 1 meV = 0.954 kT
    assert max_atoms_for_acceptance(1e-3, 300.0) == pytest.approx((0.95387 * KB * 300.0 / 1e-3) ** 2, rel=1e-4)
    assert 600 < max_atoms_for_acceptance(1e-3, 300.0) < 615
    for bad in (lambda: gaussian_acceptance(-1.0), lambda: beta_sigma_for_acceptance(0.0),
                lambda: max_atoms_for_acceptance(0.0, 300.0), lambda: max_atoms_for_acceptance(1e-3, -1.0)):
        with pytest.raises(InputError):
            bad()


def test_pooled_statistical_inefficiency_equals_pymbar():
    from fesurf._pymbar import timeseries

    rng = np.random.default_rng(1)
    for phi, k, n in ((0.8, 32, 300), (0.97, 16, 250), (0.0, 8, 100)):
        x = np.zeros((k, n))
        for t in range(1, n):
            x[:, t] = phi * x[:, t - 1] + rng.standard_normal(k)
        assert pooled_statistical_inefficiency(x) == pytest.approx(
            float(timeseries.statistical_inefficiency_multiple(list(x), fast=False)), rel=1e-12)
    assert pooled_statistical_inefficiency([np.ones(50)]) == 50.0  # a constant series carries no information


# ----------------------------------------------------------------------------- exactness
# Every walker starts from an exact sample of its target, so these test invariance of exp(-beta (U_ref + bias)).
# The chi^2 uses effective counts (counts / g, g pooled over the walkers of a target from the CV series); for
# the unbiased double well g is set by well hopping (~150-200 moves), which makes the test conservative; the
# deliberately irreversible mover below shows it still has the power to reject.

def test_exact_1d_unbiased_with_wrong_surrogate_matches_quadrature():
    r = cases.case_1d_unbiased(n_walkers=512, n_prod=300)
    _say("1D unbiased", r)
    assert r["samples"].attrs["energy_level"] == "reference" and r["n_frames"] == 512 * 300
    assert r["n_effective"] > 500 and r["p"] > 0.01
    # histogram PMF; the well populations carry ~900 effective samples: sigma(F) ~ 2/sqrt(900) = 0.07 kT between
    # the wells, so 0.25 kT is a 3.5 sigma bound (benchmarks/hybrid_mc.py, 12x the effective samples: <= 0.1 kT)
    assert r["pmf_bins"] == 12 and r["pmf_max_error_kT"] <= 0.25
    rep = r["report"]
    # reference calls: one per walker at the start and one per move (md, no delayed acceptance, no failures)
    assert rep["reference_calls_total"] == 512 * (1 + 60 + 300)
    assert 0.4 < rep["acceptance"][0] < 0.95
    assert rep["tuned"]["n_steps"] != [10] * 512  # the proposal length was tuned (then frozen)
    assert len(set(rep["tuned"]["n_steps"])) == 1  # one window: its walkers share the tuned proposal


def test_exact_1d_umbrella_windows_pmf_and_per_window_histograms():
    # g in a window is ~2-3 moves, so many short chains (48 x 150 moves) give the frames at the least cost
    r = cases.case_1d_windows(reps=48, n_prod=150)
    _say("1D windows", r)
    assert r["p"] > 0.01
    # 36k frames, ~15k effective: sigma(F) ~ 0.05-0.08 kT at the far bins (MBAR over 4 links), so 0.25 kT is a
    # 3-5 sigma bound here (benchmarks/hybrid_mc.py: <= 0.1 kT at 8x the frames)
    assert r["pmf_bins"] == 16 and r["pmf_max_error_kT"] <= 0.25
    rep = r["report"]
    assert len(rep["acceptance"]) == 5 and min(rep["acceptance"]) > 0.4
    assert rep["reference_calls"] == [48 * 211.0] * 5
    # diagnostics: measured acceptance beside the Gaussian prediction from beta*sigma, efficiency per call
    for key in ("predicted_acceptance", "beta_sigma", "statistical_inefficiency_moves_cv",
                "effective_samples_per_reference_call_cv", "reference_calls_per_effective_sample_cv",
                "autocorrelation_in_reference_calls_cv"):
        assert len(rep[key]) == 5 and np.all(np.isfinite(rep[key]))
    np.testing.assert_allclose(np.asarray(rep["effective_samples_per_reference_call_cv"]),
                               np.asarray(rep["effective_samples_cv"]) / np.asarray(rep["reference_calls_production"]))


def test_exact_2d_mueller_brown_unbiased_and_grid_windows():
    check_potential(cases.DistortedMullerBrown(), points([[-0.5, 1.4], [0.6, 0.1]]))
    # unbiased: g ~ 200 moves (basin hopping), so the chains stay longer than g; 384 walkers x 240 moves
    # walkers start from exact samples, so equilibration only tunes (15 moves) and relaxes (15 moves)
    r = cases.case_2d_unbiased(n_walkers=384, n_eq=30, n_prod=240)
    _say("2D unbiased", r)
    assert r["p"] > 0.01 and r["n_effective"] > 200
    assert r["pmf_max_error_kT"] <= 0.3  # x-marginal; ~400 effective samples of the basin populations
    # windows: g ~ 10 moves, so 12 replicas x 120 moves per window (36k frames) at less cost than 6 x 240
    w = cases.case_2d_windows(reps=12, n_eq=30, n_prod=120)
    _say("2D windows", w)
    assert w["p"] > 0.01
    # 2D MBAR PMF on 6 x 6 bins from 36k frames, ~3800 effective (benchmark: 8x the frames). The sparsest of the
    # 22 compared bins hold ~40 effective frames (sigma ~ 0.16 kT), so the max over 22 bins is bounded at 0.45 kT
    # (about 3 sigma there); seeds at these settings gave 0.28-0.35 kT
    assert w["pmf_bins"] >= 20 and w["pmf_max_error_kT"] <= 0.45


def test_asymmetric_proposal_fails_the_same_chi2_check():
    # 120 moves suffice: the drift moves every accepted end point by +0.05 A (the exact chains above pass with
    # the same walkers, start samples and g estimator at 150-300 moves)
    r = cases.case_drifting(n_walkers=512, n_prod=120)
    _say("asymmetric proposal", r)
    assert r["p"] < 1e-6


@pytest.mark.parametrize("variant", ["mc", "delayed", "corrected"])
def test_nested_mc_delayed_acceptance_and_corrected_proposals_are_exact(variant):
    dyn = {"mc": HybridMCDynamics(proposal="mc", step_size=0.15, n_steps=4, max_steps=8, seed=4),
           "delayed": HybridMCDynamics(timestep=1.0, n_steps=10, delayed_acceptance=True, surrogate_acceptance=0.8,
                                       seed=4),
           "corrected": HybridMCDynamics(timestep=1.0, n_steps=10, correction="linear", seed=4)}[variant]
    # 256 walkers x 240 moves: the chains stay longer than g (~130-190 moves, set by well hopping)
    r = cases.case_1d_unbiased(n_walkers=256, n_prod=240, dynamics=dyn, seed=5)
    _say(variant, r)
    rep = r["report"]
    # ~400-550 effective samples: sigma(F) between the wells ~ 2/sqrt(400) = 0.1 kT, so 0.3 kT is a 3 sigma bound
    assert r["n_effective"] > 250 and r["p"] > 0.01 and r["pmf_max_error_kT"] <= 0.3
    if variant == "delayed":  # proposals the surrogate screen rejects cost no reference call
        assert rep["reference_calls_total"] < 256 * 301
    elif variant == "mc":  # no integrator in the nested chain: no surrogate energy error term
        assert np.isnan(rep["sd_beta_integration_error"][0])
    else:  # fitted on every reference label of the first third of equilibration (20 moves x 256 walkers)
        assert rep["correction"]["n_labels"] == 20 * 256 and rep["correction"]["fitted_after_moves"] == 20


@pytest.mark.parametrize("beta_sigma", [0.5, 1.0, 2.0])
def test_acceptance_law_erfc_for_gaussian_endpoint_errors(beta_sigma, caplog):
    caplog.set_level(logging.INFO, logger="fesurf.sampling.hybrid_mc")
    # 512 independent walkers x 200 moves (the SE comes from the spread of the walkers' acceptance fractions)
    r = cases.case_acceptance_law(beta_sigma, n_walkers=512, n_prod=200)
    print(f"beta sigma {beta_sigma}: acceptance {r['measured']:.4f} +- {r['se']:.4f} over {r['n_proposals']} "
          f"proposals, erfc(beta sigma/2) = {r['expected']:.4f}, z = {r['z']:+.2f}; logged beta*sigma "
          f"{r['logged_beta_sigma']:.3f}, predicted {r['predicted']:.4f}")
    assert abs(r["z"]) < 3 and r["se"] < 0.01  # 3 SE: a 1-SE band would fail a correct chain 32% of the time
    assert r["sd_integration"] < 0.01  # the quarter-period VV trajectory conserves H_sur to < 0.01 kT
    # the spread of the log acceptance ratio recovers the set sigma (sd of this estimate ~ 0.2-0.3 %)
    assert r["logged_beta_sigma"] == pytest.approx(beta_sigma, rel=0.03)
    assert r["predicted"] == pytest.approx(r["expected"], abs=0.02)
    assert "beta*sigma" in caplog.text and "erfc(beta sigma/2)" in caplog.text


# ----------------------------------------------------------------------------- engine contracts
def test_batched_equals_one_by_one_with_tuning():
    sur, ref = DoubleWell1D(**SUR_1D), DoubleWell1D(**REF_1D)
    start = points([[-1.0], [0.2], [1.1]])
    dyn = HybridMCDynamics(timestep=1.0, n_steps=6, seed=0)
    seeds = [101, 202, 303]
    batch = dyn.build(sur, T, 3, seeds, reference=ref, n_tune=20).run(start, 40)
    for i in range(3):
        one = dyn.build(sur, T, 1, [seeds[i]], reference=ref, n_tune=20).run(start.select([i]), 40)
        assert torch.equal(one.positions, batch.select([i]).positions)


def test_frames_carry_reference_energies_and_resume_after_a_crash_is_identical(tmp_path):
    sur, ref = DoubleWell1D(**SUR_1D), DoubleWell1D(**REF_1D)
    start = points([[-1.0], [1.0], [0.0]])
    # the crash (at the checkpoint of move 10) comes before the correction is fitted (move 12), so the labels
    # collected so far, the tuner and the streams must all come back from the checkpoint
    kw = dict(centers=[-0.8, 0.0, 0.8], kappa=1.0, temperature=T,
              dynamics=HybridMCDynamics(timestep=1.0, n_steps=3, correction="linear", seed=9),
              schedule=Schedule(n_equilibration=36, n_production=80, stride=5, checkpoint_every=10),
              check_overlap=False)
    full = hybrid_mc_sampling(sur, ref, start, POSITION(0, "x"), path=str(tmp_path / "full.h5"), **kw)
    # labels for free: u_ref kT is the reference energy of every stored frame
    pos = full.positions
    frames = State(positions=pos.reshape(-1, 3), atomic_numbers=[1] * len(pos), system_index=np.arange(len(pos)))
    np.testing.assert_allclose(full.u_ref * KT, ref.energy(frames).numpy(), rtol=0, atol=1e-12)

    class Crash(Exception):
        pass

    def crash_at(step):
        if step >= 10:
            raise Crash

    path = str(tmp_path / "killed.h5")
    with pytest.raises(Crash):
        hybrid_mc_sampling(sur, ref, start, POSITION(0, "x"), path=path, on_checkpoint=crash_at, **kw)
    with SampleSet.open(path) as part:
        assert part.n_frames < full.n_frames and part.checkpoint_data is not None  # killed in equilibration
    resumed = hybrid_mc_sampling(sur, ref, start, POSITION(0, "x"), path=path, resume=True, **kw)
    assert_samplesets_equal(resumed, full)  # frames, u_kn, CVs and the acceptance/call statistics in attrs
    assert resumed.attrs["hybrid_mc"]["correction"]["n_labels"] == 3 * 12
    full.close()
    resumed.close()


def test_plain_hybrid_mc_as_the_mover_of_umbrella_sampling():
    # HybridMCDynamics is a mover like LangevinDynamics: with no separate reference the potential both proposes
    # and accepts (plain hybrid MC); the umbrella frames still carry u_ref = beta U0 of their configuration
    from fesurf.sampling import umbrella_sampling

    ref = DoubleWell1D(**REF_1D)
    ss = umbrella_sampling(ref, points([[0.0]]), POSITION(0, "x"), [-0.8, 0.8], 1.0, temperature=T,
                           dynamics=HybridMCDynamics(timestep=1.0, n_steps=5, seed=2),
                           n_equilibration=10, n_production=60, stride=5, check_overlap=False)
    frames = points(ss.positions[:, 0, :2])
    frames = frames.replace(positions=torch.from_numpy(ss.positions.reshape(-1, 3)))
    np.testing.assert_allclose(ss.u_ref * KT, ref.energy(frames).numpy(), rtol=0, atol=1e-12)
    assert ss.attrs["dynamics"] == "hybrid-mc" and np.ptp(ss.cv[ss.state_index == 0, 0]) > 0  # the chain moves
    with pytest.raises(InputError, match="n_fit"):
        HybridMCDynamics(correction="linear").build(ref, T, 1, [0])


class _HalfLineOracle(Oracle):
    """An Oracle on the reference double well that fails (SCF-like crash) for x > 1.15 A."""

    method = "test:half-line"

    def _compute(self, atoms, charge, multiplicity):
        x = float(atoms.positions[0, 0])
        if x > 1.15:
            raise RuntimeError("SCF did not converge")
        s = State.from_atoms(atoms)
        e, f = DoubleWell1D(**REF_1D).energy_and_forces(s)
        return float(e[0]), f.numpy()


def test_oracle_reference_through_an_executor_records_failed_calls():
    from concurrent.futures import ThreadPoolExecutor

    start = points([[0.9], [1.0]], z=2)  # helium: a closed shell, so the oracle accepts multiplicity 1
    kw = dict(temperature=T, dynamics=HybridMCDynamics(timestep=1.0, n_steps=8, seed=3, tune=False),
              schedule=Schedule(n_equilibration=0, n_production=60, stride=1), check_overlap=False)
    serial = hybrid_mc_sampling(DoubleWell1D(**SUR_1D), _HalfLineOracle(), start, POSITION(0, "x"), **kw)
    with ThreadPoolExecutor(2) as ex:
        pooled = hybrid_mc_sampling(DoubleWell1D(**SUR_1D), _HalfLineOracle(), start, POSITION(0, "x"),
                                    executor=ex, **kw)
    assert_samplesets_equal(serial, pooled)
    rep = serial.attrs["hybrid_mc"]
    assert rep["failed_reference_calls"][0] > 0  # proposals beyond 1.15 A failed and were rejected
    assert serial.cv[:, 0].max() <= 1.15
    assert rep["reference_calls_total"] == 2 * 61
    assert serial.attrs["reference"] == "test:half-line"
    assert "beta*sigma" in format_report(rep, temperature=T, n_atoms=1)


def test_start_where_the_reference_fails_raises():
    with pytest.raises(SimulationError, match="reference"):
        hybrid_mc_sampling(DoubleWell1D(**SUR_1D), _HalfLineOracle(), points([[1.5]], z=2), POSITION(0, "x"),
                           temperature=T, n_equilibration=0, n_production=5)


def test_pair_feature_correction_fits_a_linear_model_and_passes_the_potential_contract():
    from fesurf.sampling.hybrid_mc import fit_pair_correction

    rng = np.random.default_rng(0)
    x = rng.normal(scale=0.4, size=(200, 3, 3)) + np.array([[0.0, 0, 0], [1.2, 0, 0], [0, 1.3, 0]])
    i, j = np.triu_indices(3, 1)
    r = np.linalg.norm(x[:, i] - x[:, j], axis=2)
    du = 0.02 * (1 / r).sum(axis=1) - 0.01 * r[:, 0] + 0.3  # exactly linear in the features
    corr, info = fit_pair_correction(x, du, return_info=True)
    frames = State(positions=x.reshape(-1, 3), atomic_numbers=[1, 6, 8] * 200, system_index=np.repeat(np.arange(200), 3))
    np.testing.assert_allclose(corr.energy(frames).numpy(), du, atol=2e-4)  # ridge shrinkage only
    assert info["holdout_rmse_eV"] < 0.05 * info["holdout_rmse_constant_eV"]
    check_potential(corr, State(positions=x[:2].reshape(-1, 3), atomic_numbers=[1, 6, 8] * 2,
                                system_index=[0, 0, 0, 1, 1, 1]))
    with pytest.raises(InputError, match="too few"):
        fit_pair_correction(x[:3], du[:3])


def test_bad_input_is_rejected_with_a_clear_message():
    sur, ref, one, cv = DoubleWell1D(**SUR_1D), DoubleWell1D(**REF_1D), points([[0.0]]), POSITION(0, "x")
    for kwargs in (dict(proposal="langevin"), dict(timestep=0.0), dict(n_steps=0), dict(target_acceptance=1.0),
                   dict(target_acceptance=-0.1), dict(surrogate_acceptance=1.5), dict(jitter=0.95),
                   dict(proposal="mc", delayed_acceptance=True), dict(seed=None), dict(n_steps=300, max_steps=200),
                   dict(max_timestep=0.1, timestep=0.5), dict(tune="yes"), dict(correction="quadratic")):
        with pytest.raises(InputError):
            HybridMCDynamics(**kwargs)
    run = dict(temperature=T, n_equilibration=10, n_production=10)
    with pytest.raises(InputError, match="reference is required"):
        hybrid_mc_sampling(sur, None, one, cv, **run)
    with pytest.raises(InputError, match="Oracle"):
        hybrid_mc_sampling(sur, "GFN2-xTB", one, cv, **run)
    with pytest.raises(InputError, match="executor"):
        hybrid_mc_sampling(sur, ref, one, cv, executor=object(), **run)
    with pytest.raises(InputError, match="both centers and kappa"):
        hybrid_mc_sampling(sur, ref, one, cv, centers=[0.0], **run)
    with pytest.raises(InputError, match="tune_moves"):
        hybrid_mc_sampling(sur, ref, one, cv, tune_moves=50, **run)
    with pytest.raises(InputError, match="not both"):
        hybrid_mc_sampling(sur, ref, one, cv, dynamics=HybridMCDynamics(), timestep=0.5, **run)
    with pytest.raises(InputError, match="HybridMCDynamics"):
        from fesurf.sampling.protocol import LangevinDynamics

        hybrid_mc_sampling(sur, ref, one, cv, dynamics=LangevinDynamics(), **run)
    with pytest.raises(InputError, match="replicas_per_window"):
        hybrid_mc_sampling(sur, ref, one, cv, replicas_per_window=0, **run)
    with pytest.raises(InputError, match="surrogate"):
        hybrid_mc_sampling("model", ref, one, cv, **run)
    with pytest.raises(InputError, match="n_equilibration >= 30"):
        hybrid_mc_sampling(sur, ref, one, cv, correction="linear", **run)
