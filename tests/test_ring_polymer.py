"""Ring-polymer MD on the batched State: replica map, normal modes, exact/Cayley free propagation,
PILE-L, conserved quantity, blow-up detection, reproducibility, the centroid bias and the centroid
umbrella protocol (centroid PMFs of a harmonic well and an inverted parabolic barrier)."""
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from fesurf.cv import POSITION
from fesurf.errors import InputError, SimulationError
from fesurf.md.ring_polymer import (HBAR, CentroidPotential, PILEDynamics, RingPolymer,
                                    free_ring_frequencies, normal_mode_matrix, ring_polymer_state,
                                    substitute_isotopes)
from fesurf.potentials import Harmonic, Potential, Scale, Sum, check_potential
from fesurf.replicas import ReplicaMap
from fesurf.sampling.pimd import bead_positions, quantum_umbrella_sampling
from fesurf.sampling.protocol import Schedule
from fesurf.state import State
from fesurf.units import KB, MV2_TO_EV

T = 300.0
KT = KB * T
M_H = 1.00782503223


def one_atom(n=1, masses=None):
    return State(positions=[[0.0, 0.0, 0.0]] * n, atomic_numbers=[1] * n, system_index=list(range(n)),
                 masses=masses)


def k_for(u, mass=M_H):
    """Stiffness (eV/A^2) giving beta hbar w = u at 300 K for ``mass``."""
    w = u * KT / HBAR
    return mass * w * w * MV2_TO_EV


# ----------------------------------------------------------------------------- replica map
def test_replica_map_round_trips_and_reductions():
    rmap = ReplicaMap(window=3, walker=2, bead=4)
    x = torch.arange(24.0)[:, None] * torch.ones(1, 5)
    for axis in rmap.names:
        assert torch.equal(rmap.merge(rmap.split(x, axis), axis), x)
    assert rmap.index(window=2, walker=1, bead=3) == 23
    assert rmap.coords(13) == {"window": 1, "walker": 1, "bead": 1}
    assert torch.equal(rmap.reduce(x, "bead")[:, 0], torch.arange(24.0).view(6, 4).mean(1))
    assert torch.equal(rmap.expand(rmap.reduce(x, "bead"), "bead")[:4, 0], torch.full((4,), 1.5))
    assert rmap.systems_where(window=1, walker=0).tolist() == [8, 9, 10, 11]
    np_split = rmap.split(np.arange(24), "window")
    assert np_split.shape == (8, 3) and np_split[0].tolist() == [0, 8, 16]
    assert rmap.without("bead") == ReplicaMap(window=3, walker=2)
    with pytest.raises(InputError, match="no replica axis"):
        rmap.split(x, "image")
    with pytest.raises(InputError, match="rows"):
        rmap.split(x[:5], "bead")
    with pytest.raises(InputError, match="size >= 1"):
        ReplicaMap(bead=0)


# ----------------------------------------------------------------------------- normal modes
def test_normal_modes_orthonormal_and_diagonalise_the_springs():
    for P in (1, 2, 5, 8):
        C = normal_mode_matrix(P)
        assert torch.allclose(C.T @ C, torch.eye(P, dtype=C.dtype), atol=1e-13)
        # the cyclic second-difference matrix is diagonal in the modes, eigenvalues (2 sin(k pi/P))^2
        L = 2 * torch.eye(P, dtype=C.dtype) - torch.roll(torch.eye(P, dtype=C.dtype), 1, 0) \
            - torch.roll(torch.eye(P, dtype=C.dtype), -1, 0)
        if P == 1:
            L = torch.zeros(1, 1, dtype=C.dtype)
        if P == 2:
            L = torch.tensor([[2.0, -2.0], [-2.0, 2.0]], dtype=C.dtype)  # two springs between the same beads
        D = C.T @ L @ C
        expected = torch.as_tensor(free_ring_frequencies(P) ** 2, dtype=C.dtype)
        assert torch.allclose(D, torch.diag(expected), atol=1e-12)


def test_free_ring_polymer_exact_propagation_matches_the_analytic_solution():
    """NVE, no physical force: every normal mode is a harmonic oscillator at w_k (exact to roundoff)."""
    P, dt, n = 8, 0.5, 40
    beads = ring_polymer_state(one_atom(), P, T, seed=3)
    rp = RingPolymer(Harmonic(k=0.0), P, dt, T, thermostat=None)
    final = rp.run(beads, n)
    C = normal_mode_matrix(P)
    wk = torch.as_tensor(free_ring_frequencies(P), dtype=torch.float64) * P * KT / HBAR
    q0, v0 = C.T @ beads.positions, C.T @ beads.velocities
    t = n * dt
    cos, sin = torch.cos(wk * t)[:, None], torch.sin(wk * t)[:, None]
    safe = torch.where(wk > 0, wk, torch.ones_like(wk))[:, None]
    q_exact = torch.where(wk[:, None] > 0, q0 * cos + v0 / safe * sin, q0 + v0 * t)
    assert torch.allclose(C.T @ final.positions, q_exact, atol=1e-10)


@pytest.mark.parametrize("propagator", ["exact", "cayley"])
def test_nve_ring_polymer_conserves_its_hamiltonian_with_dt_squared_error(propagator):
    """Physical harmonic force, no thermostat: H_P fluctuates as dt^2 (halving dt divides it by ~4)."""
    P, k = 8, k_for(8.0)
    spread = []
    for dt in (0.4, 0.2):
        beads = ring_polymer_state(one_atom(), P, T, seed=1)
        rp = RingPolymer(Harmonic(k=k), P, dt, T, thermostat=None, propagator=propagator)
        h = []

        class Rec:
            stride = 1

            def report(self, step, state, info):
                h.append(float(info["ring_conserved"][0]))

        rp.run(beads, int(round(200 / dt)), reporters=[Rec()])
        spread.append(np.std(h))
    ratio = spread[0] / spread[1]
    assert 3.0 < ratio < 5.0, ratio
    assert spread[0] < 0.01 * P * 3 * KT  # 1 % of the ring polymer's thermal energy scale


def test_cayley_stays_stable_where_the_exact_step_is_at_resonance():
    """Cayley is strongly stable: with w_k dt well past pi the free propagation conserves
    V^2 + w^2 Q^2 per mode exactly (the implicit-midpoint invariant) and nothing blows up."""
    P = 32
    beads = ring_polymer_state(one_atom(), P, 1000.0, seed=2)
    rp = RingPolymer(Harmonic(k=0.0), P, 4.0, 1000.0, thermostat=None, propagator="cayley")
    rp.run(beads, 50)
    e = rp.ring_energies()
    rp2 = RingPolymer(Harmonic(k=0.0), P, 4.0, 1000.0, thermostat=None, propagator="cayley")
    rp2.run(beads, 0)
    e0 = rp2.ring_energies()
    assert float(abs(e["hamiltonian"] - e0["hamiltonian"])) < 1e-10 * float(e0["hamiltonian"])


def test_pile_conserved_quantity_includes_thermostat_work():
    P, k = 16, k_for(4.0)
    beads = ring_polymer_state(one_atom(4), P, T, seed=4)
    rp = RingPolymer(Harmonic(k=k), P, 0.25, T, seed=5, tau_centroid=20.0)
    cons, work = [], []

    class Rec:
        stride = 10

        def report(self, step, state, info):
            cons.append(info["ring_conserved"].clone())
            work.append(rp._thermostat_work.clone())

    rp.run(beads, 2000, reporters=[Rec()])
    cons, work = torch.stack(cons), torch.stack(work)
    drift = (cons - cons[0]).abs().max()
    swing = (work - work[0]).abs().max()
    assert swing > 100 * drift  # the thermostat moved energy; the conserved quantity did not


def test_same_seed_same_trajectory_and_batched_equals_one_by_one():
    P = 4
    masses = [M_H, 2.01410177812, 3.0160492813]
    temps = [300.0, 250.0, 400.0]
    seeds = [11, 12, 13]
    start = ring_polymer_state(one_atom(3, masses=masses), P, temps, seed=0)
    pot = Sum([Harmonic(k=[2.0, 1.0, 0.5]), Harmonic(k=0.3, center=[0.1, 0.0, 0.0])])
    batched = RingPolymer(pot, P, 0.5, temps, seed=seeds, tau_centroid=30.0).run(start, 150)
    again = RingPolymer(pot, P, 0.5, temps, seed=seeds, tau_centroid=30.0).run(start, 150)
    assert torch.equal(batched.positions, again.positions)
    other = RingPolymer(pot, P, 0.5, temps, seed=[21, 22, 23], tau_centroid=30.0).run(start, 150)
    assert not torch.allclose(batched.positions, other.positions)
    for r in range(3):
        one = start.select(list(range(r * P, (r + 1) * P)))
        single = RingPolymer(pot, P, 0.5, temps[r], seed=[seeds[r]], tau_centroid=30.0).run(one, 150)
        assert torch.allclose(batched.positions[r * P:(r + 1) * P], single.positions, rtol=0, atol=1e-11)
        assert torch.allclose(batched.velocities[r * P:(r + 1) * P], single.velocities, rtol=0, atol=1e-11)


def test_rng_state_round_trip_continues_the_same_trajectory():
    P = 4
    start = ring_polymer_state(one_atom(2), P, T, seed=0)
    straight = RingPolymer(Harmonic(k=1.0), P, 0.5, T, seed=5).run(start, 60)
    a = RingPolymer(Harmonic(k=1.0), P, 0.5, T, seed=5)
    mid = a.run(start, 30)
    b = RingPolymer(Harmonic(k=1.0), P, 0.5, T, seed=999)
    b.set_rng_state(a.rng_state())
    resumed = b.run(mid, 30)
    assert torch.allclose(resumed.positions, straight.positions, atol=1e-12)


# ----------------------------------------------------------------------------- blow-ups and bad input
class _NaNOnBead(Potential):
    translation_invariant = rotation_invariant = False

    def __init__(self, system, after):
        super().__init__()
        self.system, self.after, self.calls = system, after, 0

    def energy(self, state):
        self.calls += 1
        e = 0.5 * (state.positions ** 2).sum(dim=1)
        e = state.sum_per_system(e)
        if self.calls > self.after:
            e = e.clone()
            e[self.system] = float("nan")
        return e


def test_blow_up_names_the_ring_polymer_and_the_bead():
    P = 4
    start = ring_polymer_state(one_atom(3), P, T, seed=0)
    with pytest.raises(SimulationError, match="ring polymer 2, bead 1") as err:
        RingPolymer(_NaNOnBead(system=2 * P + 1, after=15), P, 0.5, T, seed=1).run(start, 100)
    assert err.value.ring_polymer == 2 and err.value.bead == 1 and err.value.replica == 9
    assert err.value.last_good_state.n_systems == 3 * P
    assert torch.isfinite(err.value.last_good_state.positions).all()


def test_inverted_barrier_beyond_the_crossover_runs_away_and_is_caught():
    """beta hbar w_b > 2 P sin(pi/P): the first internal mode is unstable at the barrier top."""
    P, u = 4, 7.0  # 2 P sin(pi/P) = 5.66 < 7
    kb = k_for(u)
    pot = Sum([Scale(Harmonic(k=[kb, 0, 0]), -1.0), Harmonic(k=[0, kb, kb])])
    bias = CentroidPotential(Harmonic(k=[3 * kb, 0, 0]), P)  # holds the centroid, not the internal modes
    start = ring_polymer_state(one_atom(), P, T, seed=0)
    with pytest.raises(SimulationError, match="runaway|non-finite"):
        RingPolymer(Sum([pot, bias]), P, 0.5, T, seed=1, tau_centroid=20.0).run(start, 20000)


def test_bad_inputs_raise_input_errors():
    start = ring_polymer_state(one_atom(), 4, T, seed=0)
    with pytest.raises(InputError, match="n_beads"):
        RingPolymer(Harmonic(), 0, 0.5, T, seed=0)
    with pytest.raises(InputError, match="timestep"):
        RingPolymer(Harmonic(), 4, -1.0, T, seed=0)
    with pytest.raises(InputError, match="seed"):
        RingPolymer(Harmonic(), 4, 0.5, T)
    with pytest.raises(InputError, match="propagator"):
        RingPolymer(Harmonic(), 4, 0.5, T, seed=0, propagator="verlet")
    with pytest.raises(InputError, match="temperature"):
        RingPolymer(Harmonic(), 4, 0.5, None, seed=0)
    with pytest.raises(InputError, match="cannot be split"):
        RingPolymer(Harmonic(), 3, 0.5, T, seed=0).run(start, 1)
    uneven = start.replace(masses=start.masses * torch.tensor([1.0, 2.0, 1.0, 1.0], dtype=torch.float64))
    with pytest.raises(InputError, match="same masses"):
        RingPolymer(Harmonic(), 4, 0.5, T, seed=0).run(uneven, 1)
    with pytest.raises(InputError, match="unknown isotope"):
        substitute_isotopes(one_atom(), {0: "X"})
    with pytest.raises(InputError, match="element"):
        substitute_isotopes(one_atom(), {0: "13C"})
    with pytest.raises(InputError, match="out of range"):
        substitute_isotopes(one_atom(), {3: "D"})
    with pytest.raises(InputError, match="n_beads"):
        PILEDynamics(n_beads=0)
    with pytest.raises(InputError, match="splitting"):
        PILEDynamics(splitting="abc")
    with pytest.raises(InputError, match="PILEDynamics"):
        quantum_umbrella_sampling(Harmonic(), one_atom(), POSITION(0, "x"), [0.0], 1.0, temperature=T)


# ----------------------------------------------------------------------------- helpers
def test_ring_polymer_state_samples_the_free_ring_polymer_around_the_centroid():
    P, n = 8, 2000
    classical = one_atom(n).replace(positions=torch.full((n, 3), 0.3, dtype=torch.float64))
    beads = ring_polymer_state(classical, P, T, seed=7)
    C = normal_mode_matrix(P)
    q = (C.T @ beads.positions.view(n, P, 3)).numpy()  # [n, P, 3] normal modes
    assert np.allclose(q[:, 0] / math.sqrt(P), 0.3, atol=1e-12)  # the centroid is the classical position
    wk = free_ring_frequencies(P) * P * KT / HBAR
    var_expected = P * KT / (M_H * MV2_TO_EV * wk[1:] ** 2)
    var = (q[:, 1:] ** 2).mean(axis=(0, 2))
    assert np.allclose(var / var_expected, 1.0, atol=0.075)  # 6000 samples per mode: sigma 1.8 %
    v = (C.T @ beads.velocities.view(n, P, 3)).numpy()
    assert abs((v ** 2).mean() / (P * KT / (M_H * MV2_TO_EV)) - 1.0) < 0.03  # 48000 samples: sigma 0.6 %


def test_centroid_potential_forces_and_contract():
    gen = torch.Generator().manual_seed(0)
    P = 4
    s = State(positions=torch.randn(3 * P * 2, 3, generator=gen, dtype=torch.float64),
              atomic_numbers=[1, 8] * (3 * P), system_index=torch.arange(3 * P).repeat_interleave(2))
    from fesurf.bias import RESTRAINT
    from fesurf.cv import DISTANCE

    bias = CentroidPotential(RESTRAINT(DISTANCE([0, 1]), at=[1.0, 1.2, 0.8], kappa=[2.0, 3.0, 1.0]), P)
    e, f = bias.energy_and_forces(s)
    cen = s.positions.view(3, P, 2, 3).mean(1)
    d = (cen[:, 0] - cen[:, 1]).norm(dim=1)
    expected = 0.5 * torch.tensor([2.0, 3.0, 1.0], dtype=torch.float64) * (d - torch.tensor([1.0, 1.2, 0.8])) ** 2
    assert torch.allclose(e.view(3, P), expected[:, None].expand(3, P))
    # forces are -d(sum of bead energies)/dq by central differences
    h, i = 1e-5, 5
    for c in range(3):
        plus, minus = s.positions.clone(), s.positions.clone()
        plus[i, c] += h
        minus[i, c] -= h
        fd = -(bias.energy(s.replace(positions=plus)).sum() - bias.energy(s.replace(positions=minus)).sum()) / (2 * h)
        assert abs(float(fd) - float(f[i, c])) < 1e-7
    one = State(positions=torch.randn(6, 3, generator=gen, dtype=torch.float64), atomic_numbers=[1, 8] * 3,
                system_index=[0, 0, 1, 1, 2, 2])
    check_potential(CentroidPotential(RESTRAINT(DISTANCE([0, 1]), at=[1.0, 1.2, 0.8], kappa=2.0), 1), one)
    with pytest.raises(InputError, match="whole ring polymers"):
        bias.select_systems([0, 1])


# ----------------------------------------------------------------------------- centroid umbrella
def _centroid_pmf_deviation(potential, sign, u, kappa_extra, seed):
    """Centroid PMF along x from quantum umbrella sampling vs the exact bin-averaged
    sign * 1/2 k x^2 (exact at every P for a quadratic potential: the centroid decouples)."""
    from fesurf.estimators import compute_pmf

    kx = k_for(u)
    sig = math.sqrt(KT / kx)
    lo, hi = -2.4 * sig, 2.4 * sig
    centers = np.linspace(lo, hi, 9)
    dx = centers[1] - centers[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ss = quantum_umbrella_sampling(potential, one_atom(), POSITION(0, "x"), centers=centers,
                                       kappa=kappa_extra * kx + KT / dx ** 2, temperature=T,
                                       dynamics=PILEDynamics(n_beads=4, timestep=0.5, tau_centroid=10.0, seed=seed),
                                       schedule=Schedule(n_equilibration=400, n_production=3000, stride=5),
                                       replicas_per_window=32)
        pmf = compute_pmf(ss, bins=10, range=(lo, hi))
    edges = pmf.diagnostics["bin_edges"][0]
    exact = []
    for a, b in zip(edges[:-1], edges[1:]):
        x = np.linspace(a, b, 201)
        exact.append(-(logsumexp(-sign * 0.5 * kx * x ** 2 / KT) - np.log(x.size)))
    d = pmf.values - np.array(exact)
    w = 1.0 / np.maximum(pmf.uncertainties, 1e-3) ** 2
    d -= np.sum(w * d) / np.sum(w)  # both are defined up to a constant
    return d, pmf.uncertainties, ss


def test_centroid_pmf_of_a_harmonic_well_matches_its_closed_form():
    """Feynman-Hibbs: W(x_c) = 1/2 m w^2 x_c^2 + kT ln(sinh(u/2)/(u/2)), u = beta hbar w = 4."""
    kx = k_for(4.0)
    d, sig, ss = _centroid_pmf_deviation(Harmonic(k=[kx, kx, kx]), +1, 4.0, 0.0, seed=0)
    # per-bin sigma 0.01-0.03 kT (MBAR, 9 windows x 32 ring polymers x 600 frames)
    assert np.sqrt(np.mean(d ** 2)) < 0.05 and np.abs(d).max() < 0.05 + 2 * np.nanmax(sig), (d, sig)
    assert ss.attrs["n_beads"] == 4 and bead_positions(ss, [0]).shape == (1, 4, 1, 3)


def test_centroid_pmf_of_an_inverted_barrier_matches_its_closed_form():
    """Voth, Chandler, Miller: W(x_c) = -1/2 m w_b^2 x_c^2 + kT ln(sin(u/2)/(u/2)) for u = beta hbar w_b
    = 3 < 2 pi (and < 2 P sin(pi/P) = 5.66 at P = 4)."""
    kx = k_for(3.0)
    pot = Sum([Scale(Harmonic(k=[kx, 0, 0]), -1.0), Harmonic(k=[0, kx, kx])])
    d, sig, _ = _centroid_pmf_deviation(pot, -1, 3.0, 1.0, seed=0)
    assert np.sqrt(np.mean(d ** 2)) < 0.05 and np.abs(d).max() < 0.05 + 2 * np.nanmax(sig), (d, sig)


def test_quantum_umbrella_resume_equals_uninterrupted(tmp_path):
    kx = k_for(4.0)
    kw = dict(centers=[-0.05, 0.05], kappa=5.0, temperature=T,
              dynamics=PILEDynamics(n_beads=4, timestep=0.5, seed=2))
    sched = Schedule(n_equilibration=20, n_production=80, stride=10, checkpoint_every=40)
    full = quantum_umbrella_sampling(Harmonic(k=kx), one_atom(), POSITION(0, "x"), schedule=sched,
                                     check_overlap=False, **kw)
    path = tmp_path / "q.h5"

    class Stop(Exception):
        pass

    def kill(step):
        if step == 40:
            raise Stop

    with pytest.raises(Stop):
        quantum_umbrella_sampling(Harmonic(k=kx), one_atom(), POSITION(0, "x"), schedule=sched, path=str(path),
                                  check_overlap=False, on_checkpoint=kill, **kw)
    resumed = quantum_umbrella_sampling(Harmonic(k=kx), one_atom(), POSITION(0, "x"), schedule=sched,
                                        path=str(path), resume=True, check_overlap=False, **kw)
    assert resumed.n_frames == full.n_frames == 16
    assert np.allclose(resumed.u_kn, full.u_kn, atol=1e-12) and np.allclose(resumed.positions, full.positions)
    resumed.close()


def test_bead_labeller_averages_the_reference_over_beads():
    """Reference = a stiffer harmonic well: dUbar must be (1/P) sum_j 1/2 (k_ref - k_sur) |q_j|^2 exactly,
    and reweight_quantum_pmf must run the ordinary wTP path on it."""
    import functools

    from ase import Atoms

    from fesurf.oracles import ASEOracle
    from fesurf.potentials import FesurfCalculator
    from fesurf.sampling.pimd import bead_labeller, reweight_quantum_pmf

    k_sur, k_ref, P = 2.0, 2.5, 4
    ss = quantum_umbrella_sampling(Harmonic(k=k_sur), one_atom(), POSITION(0, "x"), centers=[-0.1, 0.0, 0.1],
                                   kappa=20.0, temperature=T, dynamics=PILEDynamics(n_beads=P, timestep=0.5, seed=4),
                                   schedule=Schedule(n_equilibration=20, n_production=200, stride=10),
                                   check_overlap=False)
    oracle = ASEOracle(functools.partial(FesurfCalculator, Harmonic(k=k_ref)), method="harmonic-ref")
    template = Atoms("H", positions=[[0.0, 0, 0]])
    template.info["multiplicity"] = 2  # one electron: a doublet
    label = bead_labeller(ss, oracle, template)
    frames = np.array([0, 5, 17, 40])
    du, ok, reasons = label(frames)
    q = bead_positions(ss, frames)  # [n, P, 1, 3]
    expected = (0.5 * (k_ref - k_sur) * (q ** 2).sum(axis=(2, 3))).mean(axis=1)
    assert ok.all() and reasons == [""] * 4 and label.n_calls == 4 * P
    assert np.allclose(du, expected, atol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res, used, du_used = reweight_quantum_pmf(ss, label, 30, bins=3, range=(-0.15, 0.15), min_labels=1,
                                                  min_ess=1.0)
    assert used.size == du_used.size and res.n_labels == used.size
    with pytest.raises(InputError, match="template"):
        bead_labeller(ss, oracle, Atoms("H2", positions=[[0.0, 0, 0], [1.0, 0, 0]]))


def test_centroid_bias_leaves_the_kinetic_estimators_unchanged():
    """The bias force is equal on all beads and sum_j (q_j - c) = 0, so K_V and K_T do not see it."""
    P = 8
    beads = ring_polymer_state(one_atom(3), P, T, seed=9)
    pot = Harmonic(k=1.5)
    plain = RingPolymer(pot, P, 0.5, T, seed=1)
    biased = RingPolymer(Sum([pot, CentroidPotential(Harmonic(k=7.0, center=[0.2, 0.0, 0.0]), P)]), P, 0.5, T, seed=1)
    plain.run(beads, 0)
    biased.run(beads, 0)
    a, b = plain.observables(), biased.observables()
    assert np.allclose(a["kinetic_virial"], b["kinetic_virial"], atol=1e-12, rtol=0)
    assert np.allclose(a["kinetic_primitive"], b["kinetic_primitive"], atol=1e-12, rtol=0)
    assert not np.allclose(a["potential"], b["potential"])
