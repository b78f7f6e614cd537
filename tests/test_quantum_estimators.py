"""Quantum estimators against closed forms: the harmonic oscillator's energy and heat capacity at
finite P and P -> infinity (both kinetic estimators, 1/P^2 convergence), the ring-polymer radius of
gyration, the H -> D free energy of a harmonic well by mass TI and by scaled-coordinates FEP, and the
kinetic-isotope-effect arithmetic of centroid QTST."""
import math

import numpy as np
import pytest

from fesurf.errors import InputError
from fesurf.estimators import FreeEnergy
from fesurf.estimators.quantum import (harmonic_ring_polymer, kinetic_isotope_effect, mass_ti_free_energy,
                                       mass_ti_nodes, pooled_mean, quantum_estimates,
                                       scaled_coordinates_free_energy)
from fesurf.md.ring_polymer import HBAR, ISOTOPES, RingPolymer, RingPolymerReporter, free_ring_frequencies, \
    ring_polymer_state
from fesurf.potentials import Harmonic
from fesurf.sampling.pimd import isotope_mass_ti, isotope_scaled_coordinates
from fesurf.state import State
from fesurf.units import KB, MV2_TO_EV

M_H = ISOTOPES["H"][1]
M_D = ISOTOPES["D"][1]
#: one oscillator (H, hbar w = 8 kT at 300 K); beta hbar w = 1, 4, 8 by temperature 2400, 600, 300 K,
#: so the ring-polymer spring frequencies w_P = P kT / hbar stay in the range the 0.25 fs step resolves
HBAR_W = 8 * KB * 300.0
K_HO = M_H * (HBAR_W / HBAR) ** 2 * MV2_TO_EV
#: P values run for each beta hbar w (the converged one last)
PLAN = {1.0: (4, 8), 4.0: (8, 16, 32), 8.0: (8, 16, 32, 64)}
#: ring polymers per (beta hbar w, P); the hot, nearly classical ones decorrelate slowest per frame
WALKERS = {1.0: 48, 4.0: 16, 8.0: 16}


def _harmonic_runs():
    """One batched run per P with every beta hbar w that uses that P."""
    out = {}
    for P in sorted({p for ps in PLAN.values() for p in ps}):
        us = [u for u, ps in PLAN.items() if P in ps]
        counts = [WALKERS[u] for u in us]
        temps = np.concatenate([np.full(c, HBAR_W / (KB * u)) for u, c in zip(us, counts)])
        n = temps.size
        start = ring_polymer_state(State(positions=[[0.0, 0, 0]] * n, atomic_numbers=[1] * n,
                                         system_index=list(range(n))), P, temps, seed=P)
        rp = RingPolymer(Harmonic(k=K_HO), P, 0.25, temps, seed=100 + P, tau_centroid=20.0)
        rec = RingPolymerReporter(rp, stride=4, after_step=500)
        rp.run(start, 5500, reporters=[rec])
        arrays = rec.arrays()
        first = np.concatenate([[0], np.cumsum(counts)])
        for i, u in enumerate(us):
            rings = range(first[i], first[i + 1])
            out[(u, P)] = (quantum_estimates(arrays, P, rings=rings),
                           {k: v[:, first[i]:first[i + 1]] for k, v in arrays.items() if k != "step"})
    return out


@pytest.fixture(scope="module")
def harmonic():
    return _harmonic_runs()


def test_harmonic_energy_matches_the_finite_P_closed_form_by_both_estimators(harmonic):
    """<E> (3 dof) of the P-bead ring polymer vs its exact discretised value, within 2 sigma
    (sigma from statistical inefficiency over 16-48 ring polymers x 1250 frames: 0.3-0.7 %)."""
    for (u, P), (est, _) in harmonic.items():
        exact = 3 * HBAR_W * harmonic_ring_polymer(u, P)["energy"]
        for e in (est.energy_virial, est.energy_primitive):
            assert abs(e.value - exact) < 2 * e.error, (u, P, e, exact)
        # the two kinetic estimators agree with each other (they share the configurations)
        d = est.energy_virial.value - est.energy_primitive.value
        assert abs(d) < 2 * math.hypot(est.energy_virial.error, est.energy_primitive.error), (u, P)


def test_harmonic_energy_converges_to_coth_within_one_percent(harmonic):
    """At the largest P of each beta hbar w, <E> is within 1 % of (hbar w / 2) coth(beta hbar w / 2)."""
    for u, ps in PLAN.items():
        est, _ = harmonic[(u, ps[-1])]
        exact = 3 * HBAR_W * harmonic_ring_polymer(u)["energy"]
        assert abs(est.energy_virial.value / exact - 1) < 0.01, (u, est.energy_virial, exact)
        assert abs(est.energy_primitive.value / exact - 1) < 0.01, (u, est.energy_primitive, exact)


def test_harmonic_energy_error_falls_as_one_over_P_squared(harmonic):
    """beta hbar w = 8: log|<E>_P - E_inf| vs log P over P = 8, 16, 32 has slope -2 (the exact
    discretised values give -1.89 there; sigma of the fitted slope about 0.1)."""
    exact_inf = 3 * HBAR_W * harmonic_ring_polymer(8.0)["energy"]
    Ps = np.array([8, 16, 32])
    dev = np.array([exact_inf - harmonic[(8.0, P)][0].energy_virial.value for P in Ps])
    assert (dev > 0).all()
    slope = np.polyfit(np.log(Ps), np.log(dev), 1)[0]
    assert abs(slope + 2.0) < 0.3, slope


def test_heat_capacity_estimators_match_the_closed_form(harmonic):
    """C_V / k_B (3 dof): thermodynamic-virial and thermodynamic estimators within 3 sigma of the exact
    P-bead value (the covariance estimators are noisy: sigma 5-20 %)."""
    for (u, P), (est, _) in harmonic.items():
        exact = 3 * harmonic_ring_polymer(u, P)["heat_capacity"]
        for c in (est.heat_capacity_tv, est.heat_capacity_tt):
            assert abs(c.value - exact) < 3 * c.error, (u, P, c, exact)


def test_radius_of_gyration_matches_the_normal_mode_closed_form(harmonic):
    """<R_g^2> = 3 kT sum_{k>=1} 1 / (m (w_k^2 + w^2)) for a harmonic ring polymer."""
    for (u, P), (_, rec) in harmonic.items():
        T = HBAR_W / (KB * u)
        wk = free_ring_frequencies(P) * P * KB * T / HBAR
        w = HBAR_W / HBAR
        exact = 3 * KB * T * np.sum(1.0 / (M_H * MV2_TO_EV * (wk[1:] ** 2 + w ** 2)))
        est = pooled_mean(rec["radius_of_gyration"][:, :, 0] ** 2)
        assert abs(est.value - exact) < 2.5 * est.error, (u, P, est, exact)


# ----------------------------------------------------------------------------- isotopes
def _harmonic_h_to_d(P, u_h):
    """Exact A(D) - A(H) (eV) of the P-bead ring polymer of a 3D harmonic well."""
    kT = KB * 300.0
    u_d = u_h * math.sqrt(M_H / M_D)
    return 3 * kT * (u_d * harmonic_ring_polymer(u_d, P)["free_energy"] - u_h * harmonic_ring_polymer(u_h, P)["free_energy"])


def test_mass_ti_and_scaled_coordinates_give_the_harmonic_h_to_d_free_energy():
    """H -> D in a harmonic well (beta hbar w_H = 4 at 300 K, P = 16): both estimators within 2 sigma of
    the exact discretised value (-48.6 meV; the classical part alone is -26.9 meV)."""
    P, u_h = 16, 4.0
    k = M_H * (u_h * KB * 300.0 / HBAR) ** 2 * MV2_TO_EV
    state = State(positions=[[0.0, 0.0, 0.0]], atomic_numbers=[1], masses=[M_H])
    kw = dict(n_beads=P, temperature=300.0, walkers=6, timestep=0.5, n_steps=4000, n_equilibration=500, stride=5,
              tau_centroid=20.0)
    ti = isotope_mass_ti(Harmonic(k=k), state, [0], "D", n_nodes=4, **kw)
    sc = isotope_scaled_coordinates(Harmonic(k=k), state, [0], "D", **kw)
    exact = _harmonic_h_to_d(P, u_h)
    for res in (ti, sc):
        fe = res.free_energy
        assert fe.error < 0.5e-3  # sigma well below 1 meV (TI ~0.1 meV, SC-FEP ~0.2 meV)
        assert abs(fe.value - exact) < 2 * fe.error, (res.method, fe.value, fe.error, exact)
    assert ti.masses[0] > M_H and ti.masses[-1] < M_D  # Gauss-Legendre nodes are interior
    assert sc.free_energy.diagnostics["kish_ess"] > 1000


def test_mass_ti_quadrature_is_exact_for_a_classical_particle():
    """Classical <K> = 3/2 kT: A(m1) - A(m0) = -3/2 kT ln(m1/m0) (Gauss-Legendre, any parametrization)."""
    kT = KB * 300.0
    for par in ("inverse_sqrt", "linear"):
        nodes = mass_ti_nodes(M_H, M_D, 6, par)
        fe = mass_ti_free_energy(nodes, np.full(6, 1.5 * kT), np.full(6, 1e-4))
        assert abs(fe.value + 1.5 * kT * math.log(M_D / M_H)) < 1e-6 * kT
    # and the scaled-coordinates estimator reduces to the same classical term when dV = 0
    fe = scaled_coordinates_free_energy(np.zeros((50, 2)), 300.0, M_D / M_H)
    assert abs(fe.value + 1.5 * kT * math.log(M_D / M_H)) < 1e-12


# ----------------------------------------------------------------------------- KIE
def _double_well(barrier_kT, sigma=0.02):
    s = np.linspace(-1.5, 1.5, 301)
    return FreeEnergy(barrier_kT * (s ** 2 - 1) ** 2, np.full(s.size, sigma), unit="kT", temperature=300.0, grid=[s])


def test_kinetic_isotope_effect_is_the_ratio_of_qtst_rates():
    from fesurf.analysis import barrier, tst_rate_from_pmf

    light, heavy = _double_well(6.0), _double_well(8.0)
    res = kinetic_isotope_effect(light, heavy, 1.0, 2.0)
    k_ratio = tst_rate_from_pmf(light, 1.0) / tst_rate_from_pmf(heavy, 2.0)
    assert res.kie == pytest.approx(k_ratio, rel=1e-10)
    d_l = barrier(light).activation.value
    d_h = barrier(heavy).activation.value
    assert res.ln_kie == pytest.approx(0.5 * math.log(2.0) - (d_l - d_h), abs=1e-12)
    s_l, s_h = barrier(light).activation.error, barrier(heavy).activation.error
    assert res.ln_kie_error == pytest.approx(math.hypot(s_l, s_h), rel=1e-12)
    assert res.error == pytest.approx(res.kie * res.ln_kie_error)


def test_quantum_estimator_bad_inputs():
    with pytest.raises(InputError, match="positive mass"):
        mass_ti_nodes(-1.0, 2.0)
    with pytest.raises(InputError, match="parametrization"):
        mass_ti_nodes(1.0, 2.0, 3, "log")
    with pytest.raises(InputError, match="one value per node"):
        mass_ti_free_energy(mass_ti_nodes(1.0, 2.0, 3), [0.1, 0.2])
    with pytest.raises(InputError, match="finite"):
        scaled_coordinates_free_energy(np.array([np.nan, 0.0]), 300.0, 2.0)
    with pytest.raises(InputError, match="same temperature"):
        kinetic_isotope_effect(_double_well(6.0), FreeEnergy(np.zeros(3), grid=[np.arange(3.0)], temperature=200.0,
                                                             unit="kT"), 1.0, 2.0)
    with pytest.raises(InputError, match="positive mass"):
        kinetic_isotope_effect(_double_well(6.0), _double_well(6.0), 0.0, 2.0)
    with pytest.raises(InputError, match="record"):
        quantum_estimates({"potential": np.zeros((3, 1))}, 4)
    with pytest.raises(InputError, match="time series"):
        pooled_mean(np.zeros(1))
    with pytest.raises(InputError, match="one system"):
        isotope_mass_ti(Harmonic(), State(positions=[[0.0, 0, 0]] * 2, atomic_numbers=[1, 1], system_index=[0, 1]),
                        [0], "D", n_beads=4, temperature=300.0)
