"""Sparse reweighting of a deliberately wrong surrogate to an exact reference (issue 5, analytic case).

The 'surrogate' is a double well with a barrier 1.5 kT too low, a tilt of 0.4 kT/A, a ripple
0.3 kT sin(7x) ('noise'), and a 30% softer confinement in y and z (so dU also varies orthogonally
to the CV, as in a real molecule). The 'reference' is the exact DoubleWell1D. The exact PMFs along
x are known by quadrature; bins are compared with the exact bin average -ln(<exp(-F)>_bin).
"""
import numpy as np
import pytest
import torch
from scipy.integrate import quad

from fesurf import InputError, State
from fesurf.cv import POSITION
from fesurf.estimators.reweight import PoorOverlapWarning, choose_frames, exp_correction, reweight_pmf
from fesurf.potentials import DoubleWell1D, Potential, Sum, check_potential
from fesurf.sampling.umbrella import umbrella_sampling
from fesurf.units import kT

T = 300.0
KT = kT(T)
EDGES = np.linspace(-1.5, 1.5, 31)


class Ripple(Potential):
    """amp * sin(q x) per atom: the surrogate's 'noise' (eV, 1/A)."""

    translation_invariant = rotation_invariant = False

    def __init__(self, amp, q):
        super().__init__()
        self.amp, self.q = amp, q

    def energy(self, state):
        return state.sum_per_system(self.amp * torch.sin(self.q * state.positions[:, 0]))


REFERENCE = DoubleWell1D(barrier=6 * KT, x0=1.0, confine=40 * KT)
SURROGATE = Sum([DoubleWell1D(barrier=4.5 * KT, x0=1.0, tilt=0.4 * KT, confine=28 * KT), Ripple(0.3 * KT, 7.0)])


def exact_binned(f):
    out = np.array([-np.log(quad(lambda x: np.exp(-f(x)), a, b)[0] / (b - a)) for a, b in zip(EDGES[:-1], EDGES[1:])])
    return out - out.min()


EXACT_REF = exact_binned(lambda x: 6 * (x * x - 1) ** 2)
EXACT_SUR = exact_binned(lambda x: 4.5 * (x * x - 1) ** 2 + 0.4 * x + 0.3 * np.sin(7 * x))


def aligned_max_error(values, exact):
    ok = np.isfinite(values)
    d = values[ok] - exact[ok]
    return np.max(np.abs(d - d.mean()))


@pytest.fixture(scope="module")
def surrogate_run():
    # 17 windows x 40k steps (2 fs), friction 0.1/fs (near the windows' frequency, fastest decorrelation),
    # frames every 10 steps: ~3000 uncorrelated frames per window; MBAR's per-bin sigma is <= 0.1 kT
    # (measured 0.03-0.10 relative to the lowest bin).
    return umbrella_sampling(SURROGATE, State(positions=[[0.0, 0, 0]], atomic_numbers=[1]), POSITION(0, "x"),
                             centers=np.linspace(-1.6, 1.6, 17), kappa=60 * KT, temperature=T, timestep=2.0,
                             friction=0.1, n_equilibration=1000, n_production=40000, stride=10, seed=1)


def delta_u(samples, frames, reference):
    pos = samples.read_positions(frames)
    s = State(positions=torch.as_tensor(pos.reshape(-1, 3)), atomic_numbers=[1] * len(frames),
              system_index=torch.arange(len(frames)))
    return (reference.energy(s) - SURROGATE.energy(s)).numpy()


def test_ripple_passes_contract(gen):
    s = State(positions=torch.randn(4, 3, generator=gen, dtype=torch.float64), atomic_numbers=[1] * 4,
              system_index=[0, 0, 1, 1])
    check_potential(SURROGATE, s)


def test_five_percent_labels_recover_the_exact_pmf(surrogate_run):
    ss = surrogate_run
    n_labels = int(0.05 * ss.n_frames)
    frames, pi = choose_frames(ss, n_labels, bins=EDGES, seed=2)
    assert frames.size == n_labels and np.all(pi > 0)
    res = reweight_pmf(ss, frames, delta_u(ss, frames, REFERENCE), bins=EDGES, inclusion_probability=pi)
    # the surrogate is wrong by far more than the tolerance ...
    assert aligned_max_error(res.surrogate.values, EXACT_REF) > 1.0
    # ... but right about itself (sampling error only): a check of the MBAR part
    assert aligned_max_error(res.surrogate.values, EXACT_SUR) < 0.15
    # Corrected PMF within 0.15 kT everywhere. Error budget per bin: MBAR sigma <= 0.1 kT plus the
    # correction's bootstrap sigma ~ beta*sigma(dU)/sqrt(labels per bin) ~ 0.45/sqrt(110) = 0.04 kT.
    assert not res.flagged.any()
    assert aligned_max_error(res.corrected.values, EXACT_REF) < 0.15
    assert aligned_max_error(res.cumulant.values, EXACT_REF) < 0.15  # dU ~ Gaussian-ish here
    # per-bin diagnostics are reported; the exact dU spread is 0.43 kT (chi-square, 2 dof) plus x-variation
    assert np.all(res.per_bin["kish_ess"] > 50) and np.all(res.per_bin["beta_sigma"] < 1.0)
    # the 2-sigma band of the corrected PMF covers the exact curve at most bins (after alignment)
    ok = np.isfinite(res.corrected.values)
    d = res.corrected.values[ok] - EXACT_REF[ok]
    assert np.mean(np.abs(d - d.mean()) <= 2 * res.corrected.uncertainties[ok] + 0.02) >= 0.8
    # the corrected barrier is the exact one within its 2 sigma (exact from the binned reference profile)
    from fesurf.analysis import barrier
    from fesurf.estimators import FreeEnergy

    exact_barrier = barrier(FreeEnergy(EXACT_REF, None, unit="kT", temperature=T,
                                       grid=[0.5 * (EDGES[1:] + EDGES[:-1])]))
    b = res.barrier()
    assert abs(b.activation.value - exact_barrier.activation.value) < 2 * b.activation.error + 0.05
    assert "labels" in res.summary()


def test_hopeless_surrogate_fires_the_overlap_flags(surrogate_run):
    # A reference with 10x stiffer y/z confinement: beta*dU = 0.5 * (400-28)/28 * chi2_2 -> beta*sigma ~ 6.6 > 3
    hopeless = DoubleWell1D(barrier=6 * KT, x0=1.0, confine=400 * KT)
    frames, pi = choose_frames(surrogate_run, int(0.05 * surrogate_run.n_frames), bins=EDGES, seed=3)
    with pytest.warns(PoorOverlapWarning, match="beta\\*sigma"):
        res = reweight_pmf(surrogate_run, frames, delta_u(surrogate_run, frames, hopeless), bins=EDGES,
                           inclusion_probability=pi)
    assert res.flagged.mean() > 0.9 and np.isnan(res.corrected.values[res.flagged]).all()
    assert np.nanmin(res.per_bin["beta_sigma"]) > 3.0


def test_bad_labels_are_refused(surrogate_run):
    with pytest.raises(InputError, match="NaN"):
        reweight_pmf(surrogate_run, [0, 1], [0.1, np.nan])
    with pytest.raises(InputError, match="equal length"):
        reweight_pmf(surrogate_run, [0, 1], [0.1])
    with pytest.raises(InputError, match="no labelled"):
        reweight_pmf(surrogate_run, [], [])


def test_exp_correction_closed_forms():
    # Gaussian dU of spread sigma: -ln<exp(-x)> = mu - sigma^2/2 exactly; Kish fraction exp(-sigma^2)
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 1.0, 200_000)
    wtp, cum, ess, sig = exp_correction(np.zeros(x.size), x)
    # sampling sd of the EXP estimate at sigma = 1 kT with 2e5 samples: sqrt((e^{sigma^2}-1)/N) ~ 0.003
    assert wtp == pytest.approx(0.5, abs=0.015) and cum == pytest.approx(0.5, abs=0.01)
    assert ess / x.size == pytest.approx(np.exp(-1.0), rel=0.05) and sig == pytest.approx(1.0, abs=0.01)


def test_delta_learning_corrects_with_few_labels(surrogate_run):
    from fesurf.estimators.delta_learning import reweight_pmf_delta

    ss = surrogate_run
    # 1% of the frames: the model (KRR on the particle's coordinates) carries the smooth part of dU on
    # every frame; wTP on the residuals removes what it missed
    frames, pi = choose_frames(ss, int(0.01 * ss.n_frames), bins=EDGES, seed=5)
    res = reweight_pmf_delta(ss, frames, delta_u(ss, frames, REFERENCE), bins=EDGES, inclusion_probability=pi)
    val = res.per_bin["model_validation"]
    assert val["rmse_kT"] < 0.5 * val["sd_of_labels_kT"]  # the model explains most of dU on held-out labels
    assert not res.flagged.any()
    assert aligned_max_error(res.corrected.values, EXACT_REF) < 0.15


def test_adaptive_labelling_stops_at_target_and_records_failures(surrogate_run):
    from fesurf.estimators.reweight import adaptive_reweight

    ss = surrogate_run
    calls = []

    def label(frames):
        calls.append(len(frames))
        du = delta_u(ss, frames, REFERENCE)
        ok = (frames % 17) != 0  # a deterministic share of 'failed QM calls'
        return np.where(ok, du, 0.0), ok, ["SCF not converged" if not g else "" for g in ok]

    out = adaptive_reweight(ss, label, target_sigma=0.35, budget=1200, initial=300, per_round=150, bins=EDGES)
    assert sum(calls) <= 1200
    assert out.failed and all(r == "SCF not converged" for r in out.failed.values())
    assert not set(out.failed) & set(out.labelled.tolist())  # failures never enter the estimate
    last = out.history[-1]
    if out.converged:
        assert last["activation_sigma_kT"] <= 0.35
    else:
        assert sum(calls) == 1200
    # sigma shrinks (non-strictly) as labels accumulate
    sig = [h["activation_sigma_kT"] for h in out.history if "activation_sigma_kT" in h]
    assert sig[-1] <= sig[0] + 1e-9


def test_pps_frame_choice_has_exact_inclusion_probabilities(surrogate_run):
    """Systematic PPS: exactly the quota, no repeats, and each item's empirical inclusion frequency
    matches its probability (20,000 draws over 300 items; |z| < 4.5, the max of 300 normals rarely
    passes 4); in choose_frames, each bin gets its quota of distinct frames."""
    from fesurf.estimators.reweight import _pps_inclusion, _systematic_pps

    rng = np.random.default_rng(0)
    pi = _pps_inclusion(rng.normal(scale=1.5, size=300), 20)
    assert abs(pi.sum() - 20) < 1e-9 and (pi == 1.0).any() and pi.max() <= 1.0
    counts = np.zeros(300)
    for _ in range(20000):
        take = _systematic_pps(pi, rng)
        assert take.size == 20 and np.unique(take).size == 20
        counts[take] += 1
    z = (counts / 20000 - pi) / np.sqrt(pi * (1 - pi) / 20000 + 1e-12)
    assert np.all(counts[pi == 1.0] == 20000) and np.max(np.abs(z[pi < 1])) < 4.5
    assert np.allclose(_pps_inclusion(np.log(np.array([1.0, 1.0, 100.0, 1.0])), 2), [1 / 3, 1 / 3, 1.0, 1 / 3])
    log_size = rng.normal(scale=1.5, size=surrogate_run.n_frames)
    frames, pi = choose_frames(surrogate_run, 60, bins=EDGES[12:16], seed=1, frame_log_size=log_size)
    assert frames.size == 60 and np.unique(frames).size == 60 and np.all((pi > 0) & (pi <= 1))


def test_two_stage_delta_learning_keeps_ess_near_the_label_count(surrogate_run):
    """Stage 1 (25%) fits the dU model; stage 2 picks frames by their model-corrected weight, so the
    residual reweighting keeps a Kish ESS close to the labels per bin and recovers the exact PMF."""
    from fesurf.estimators.delta_learning import delta_two_stage, reweight_two_stage

    ss = surrogate_run
    n = int(0.01 * ss.n_frames)

    def label(frames):
        du = delta_u(ss, frames, REFERENCE)
        ok = (frames % 23) != 0  # a few 'failed QM calls'
        return np.where(ok, du, np.nan), ok, ["crashed" if not g else "" for g in ok]

    res, labels = delta_two_stage(ss, label, n, bins=EDGES, seed=3)
    assert labels.n_calls == n and labels.failed and all(r == "crashed" for r in labels.failed.values())
    assert not set(labels.failed) & set(labels.residual_frames.tolist())
    lab = res.per_bin["n_labels"]
    used = lab >= 3
    assert np.median(res.per_bin["kish_ess"][used] / lab[used]) > 0.8
    assert aligned_max_error(res.corrected.values, EXACT_REF) < 0.15
    assert res.per_bin["model_validation"]["stage2_residual_rms_kT"] < 0.5
    again = reweight_two_stage(ss, labels, bins=EDGES, seed=3)  # deterministic from the stored labels
    np.testing.assert_allclose(again.corrected.values, res.corrected.values, rtol=0, atol=1e-9)
