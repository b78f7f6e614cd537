"""Barriers, rates and rate errors against closed forms and quadrature."""
import numpy as np
import pytest
from scipy.integrate import quad

from fesurf import InputError
from fesurf.analysis import (barrier, barrier_precision_for_rate, cv_effective_mass, eyring_rate,
                             rate_error_factor, tst_rate_from_pmf)
from fesurf.estimators import FreeEnergy
from fesurf.units import H_PLANCK_EV_S, KB, MV2_TO_EV


def test_rate_numbers_from_the_field_notes():
    assert eyring_rate(0.0, 298.0) == pytest.approx(KB * 298.0 / H_PLANCK_EV_S)
    assert KB * 298.0 / H_PLANCK_EV_S == pytest.approx(6.21e12, rel=1e-3)
    # one decade per 1.364 kcal/mol at 298 K; 0.5 / 1 / 2 kcal/mol -> 2.3x / 5.4x / 29x
    assert rate_error_factor(1.364, 298.0) == pytest.approx(10.0, rel=2e-3)
    assert [round(float(rate_error_factor(d, 298.0)), 1) for d in (0.5, 1.0, 2.0)] == [2.3, 5.4, 29.3]
    # a rate within 20% at 300 K needs the barrier to kT ln 1.2 = 0.109 kcal/mol
    d = barrier_precision_for_rate(0.2, 300.0)
    assert d == pytest.approx(0.1087, abs=2e-4)
    assert rate_error_factor(d, 300.0) == pytest.approx(1.2)
    assert eyring_rate(10.0, 300.0, transmission=0.5) == pytest.approx(0.5 * eyring_rate(10.0, 300.0))
    with pytest.raises(InputError):
        eyring_rate(1.0, -5.0)
    with pytest.raises(InputError):
        barrier_precision_for_rate(0.0, 300.0)


def asymmetric_double_well(n=801):
    s = np.linspace(-2.0, 2.0, n)
    f = 8.0 * (s**2 - 1.0) ** 2 + 1.5 * s  # kT; product (right) higher by ~3 kT
    return s, f


def test_barrier_integrates_basins_by_quadrature():
    s, f = asymmetric_double_well()
    pmf = FreeEnergy(f - f.min(), np.full(s.size, 0.02), unit="kT", temperature=300.0, grid=[s], method="exact")
    b = barrier(pmf)
    fx = lambda x: 8.0 * (x**2 - 1.0) ** 2 + 1.5 * x  # noqa: E731
    x_ts = s[np.argmax(np.where(np.abs(s) < 0.5, f, -np.inf))]
    z_r = quad(lambda x: np.exp(-fx(x)), -2.0, x_ts)[0]
    z_p = quad(lambda x: np.exp(-fx(x)), x_ts, 2.0)[0]
    # grid sums (ds = 0.005) converge to the integrals far below 1e-3 kT for this smooth integrand
    assert b.reaction.value == pytest.approx(-np.log(z_p / z_r), abs=1e-3)
    assert b.activation.value == pytest.approx(fx(x_ts) + np.log(z_r), abs=1e-3)
    assert abs(b.ts_location - x_ts) < 1e-9
    # the basin free energy is not the minimum value: it includes the basin's width (entropy)
    assert abs(b.activation.value - (fx(x_ts) - f[s < 0].min())) > 0.3
    # sigma propagation: each basin's sigma <= per-point sigma, barrier sigma ~ sqrt(2) * 0.02 at most
    assert 0.02 <= b.activation.error <= 0.02 * np.sqrt(2) + 1e-12
    kcal = b.to("kcal/mol")
    assert kcal.activation.value == pytest.approx(b.activation.value * KB * 300.0 * 23.0605, rel=1e-3)


def test_explicit_basins_and_bootstrap_sigma():
    s, f = asymmetric_double_well()
    pmf = FreeEnergy(f, None, unit="kT", temperature=300.0, grid=[s])
    auto = barrier(pmf)
    explicit = barrier(pmf, reactant=(-2.0, auto.ts_location), product=(auto.ts_location + 0.004, 2.0))
    assert explicit.activation.value == pytest.approx(auto.activation.value, abs=1e-3)
    rng = np.random.default_rng(0)
    realisations = f[None, :] + rng.normal(0, 0.1, size=(200, 1))  # a constant shift per realisation
    boot = barrier(pmf, pmf_samples=realisations)
    assert boot.activation.error < 1e-8  # a uniform shift moves nothing: barriers are differences
    with pytest.raises(InputError, match="single minimum"):
        barrier(FreeEnergy(s**2, None, unit="kT", temperature=300.0, grid=[s]))
    with pytest.raises(InputError, match="both"):
        barrier(pmf, reactant=(-2, 0))


def test_tst_rate_from_pmf_matches_harmonic_tst_for_a_high_barrier():
    # particle of mass m on U(x) = B ((x/a)^2 - 1)^2; for B >> kT the 1D TST rate tends to
    # (omega / 2 pi) exp(-B/kT) with omega = sqrt(U''(a) / m) = sqrt(8 B / (a^2 m)); corrections O(kT/B).
    T, m, a = 300.0, 1.008, 0.5
    kt = KB * T
    B = 15 * kt
    x = np.linspace(-1.0, 1.0, 4001)
    F = B * ((x / a) ** 2 - 1) ** 2 / kt
    pmf = FreeEnergy(F, None, unit="kT", temperature=T, grid=[x])
    k = tst_rate_from_pmf(pmf, effective_mass=m)
    omega = np.sqrt(8 * B / (a * a) / (m * MV2_TO_EV))  # 1/fs
    k_harm = omega / (2 * np.pi) * np.exp(-B / kt) * 1e15
    assert k == pytest.approx(k_harm, rel=0.08)  # anharmonic correction ~ (3/8)... kT/B ~ 5%


def test_cv_effective_mass_of_a_distance_difference():
    # s = |r_H - r_O1| - |r_H - r_O2| with H midway between the oxygens on a line along e:
    # ds/dr_O1 = -e, ds/dr_O2 = -e, ds/dr_H = 2e, so 1/m_s = 1/16 + 1/16 + 4/1.008 (amu^-1)
    e = np.array([1.0, 0.0, 0.0])
    grad = np.stack([-e, -e, 2 * e])
    assert cv_effective_mass(grad, [16.0, 16.0, 1.008]) == pytest.approx(1.0 / (2 / 16.0 + 4 / 1.008))
    with pytest.raises(InputError):
        cv_effective_mass(np.zeros((2, 3)), [1.0, 1.0])
