"""ΔA by MBAR, BAR and EXP between harmonic states sampled exactly (numpy Boltzmann draws).

All energies are reduced (kT). A harmonic state with stiffness k (kT/A^2) in d
Cartesian dof has Z = (2 pi / k)^(d/2), so ΔA(A -> B) = (d/2) ln(k_B / k_A) kT exactly.
"""
import warnings

import numpy as np
import pytest

from fesurf.errors import InputError
from fesurf.estimators import OverlapWarning, delta_f
from fesurf.sampling import SampleSet

DOF = 3  # one atom in 3D


def harmonic_samples(ks, n, rng, dof=DOF, centres=None):
    """n exact Boltzmann samples in each harmonic state k (kT/A^2); u_kn of every sample in every state."""
    ks = np.asarray(ks, dtype=float)
    centres = np.zeros(len(ks)) if centres is None else np.asarray(centres, dtype=float)
    x = np.concatenate([c + rng.normal(0.0, 1.0 / np.sqrt(k), size=(n, dof)) for k, c in zip(ks, centres)])
    u_kn = 0.5 * ks[:, None] * ((x[None, :, :] - centres[:, None, None]) ** 2).sum(-1)
    return SampleSet.from_arrays(state_index=np.repeat(np.arange(len(ks)), n), u_kn=u_kn, temperature=300.0,
                                 cv=x[:, 0])


def lambda_states(k_a, k_b, n_states):
    lam = np.linspace(0.0, 1.0, n_states)
    return (1 - lam) * k_a + lam * k_b  # U_lambda = (1-lambda) U_A + lambda U_B is harmonic with this k


@pytest.mark.parametrize("ratio,n_states", [(10.0, 6), (100.0, 11)])
@pytest.mark.parametrize("method", ["MBAR", "BAR", "EXP"])
def test_harmonic_delta_f_matches_analytic(method, ratio, n_states):
    rng = np.random.default_rng(int(ratio) + n_states)
    ss = harmonic_samples(lambda_states(1.0, ratio, n_states), 1000, rng)
    exact = 0.5 * DOF * np.log(ratio)
    fe = delta_f(ss, method=method)
    # The reported σ is the asymptotic standard error of the estimator; |error| > 3σ happens with
    # probability 0.3% for an unbiased Gaussian estimate. EXP goes wide -> narrow (the well-behaved
    # direction), and λ-spacing keeps every neighbour overlap > 0.03, so its finite-N bias is << σ.
    assert abs(fe.value - exact) < 3 * fe.error, (fe, exact)
    assert fe.error > 0.0
    assert fe.unit == "kT" and fe.temperature == 300.0
    assert fe.diagnostics["overlap_matrix"].shape == (n_states, n_states)
    assert np.all(fe.diagnostics["kish_ess"] > 100)


def test_reported_sigma_matches_spread_over_repeats():
    # Two states k = 1 and 2 (1 dof), 300 samples each, 30 independent repeats per method.
    # The sample standard deviation of 30 estimates has a relative standard error of
    # 1/sqrt(2 * 29) = 13%, so the ratio of mean reported σ to the observed spread lies in
    # [0.6, 1.6] unless the reported σ is wrong by far more than 3 of those standard errors.
    rng = np.random.default_rng(42)
    results = {m: [] for m in ("MBAR", "BAR", "EXP")}
    for _ in range(30):
        ss = harmonic_samples([1.0, 2.0], 300, rng, dof=1)
        for m in results:
            fe = delta_f(ss, method=m, warn=False)
            results[m].append((fe.value, fe.error))
    exact = 0.5 * np.log(2.0)
    for m, vals in results.items():
        v, e = np.array(vals).T
        ratio = e.mean() / v.std(ddof=1)
        assert 0.6 < ratio < 1.6, (m, ratio)
        # the mean of 30 repeats is within 3 standard errors of the mean of the exact value
        assert abs(v.mean() - exact) < 3 * v.std(ddof=1) / np.sqrt(30), (m, v.mean(), exact)


def test_overlap_warning_includes_matrix():
    rng = np.random.default_rng(3)
    ss = harmonic_samples([1.0, 1.0, 1.0], 300, rng, dof=1, centres=[0.0, 1.0, 12.0])  # 2 -> 3 do not overlap
    with pytest.warns(OverlapWarning) as rec:
        fe = delta_f(ss, method="MBAR")
    msg = str(rec[0].message)
    with np.printoptions(precision=3, suppress=True, linewidth=150):
        assert str(fe.diagnostics["overlap_matrix"]) in msg
    assert "[[0, 1], [2]]" in msg and "(1, 2)" in msg and "(0, 1)" not in msg
    assert fe.diagnostics["neighbour_overlap"][1] < 1e-6
    assert fe.diagnostics["neighbour_overlap"][0] > 0.03


@pytest.mark.filterwarnings("ignore::fesurf.estimators.EstimatorWarning")
def test_bad_input_raises():
    rng = np.random.default_rng(4)
    ss = harmonic_samples([1.0, 2.0, 4.0], 50, rng, dof=1)
    empty = ss.select(np.where(ss.state_index != 1)[0])  # state 1 sampled but without frames
    with pytest.raises(InputError, match="empty window"):
        delta_f(empty)
    hot = SampleSet.from_arrays(state_index=ss.state_index, u_kn=ss.u_kn, temperature=[300.0, 300.0, 350.0])
    with pytest.raises(InputError, match="different temperatures"):
        delta_f(hot)
    with pytest.raises(InputError, match="to_state"):
        delta_f(ss, to_state=3)
    with pytest.raises(InputError, match="method"):
        delta_f(ss, method="WHAM")
    fep = SampleSet.from_arrays(state_index=np.zeros(50, int), u_kn=ss.u_kn[:, :50], temperature=300.0,
                                sampled=[True, False, False])
    with pytest.raises(InputError, match="both states"):
        delta_f(fep, method="BAR", to_state=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fe = delta_f(fep, method="EXP", to_state=1)  # one-sided FEP to an unsampled state is allowed
    assert np.isfinite(fe.value)
