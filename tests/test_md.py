"""MD engine: integrator accuracy, thermostat ensembles, batching, ASE agreement, errors."""
import numpy as np
import pytest
import torch
from ase.cluster import Icosahedron
from ase.io import read
from ase.md.verlet import VelocityVerlet as AseVerlet
from ase.units import fs

from fesurf import InputError, SimulationError, State
from fesurf.md import (Bussi, EnergyReporter, ExtXYZReporter, HDF5Reporter, Langevin, VelocityVerlet,
                       canonical_check, maxwell_boltzmann, nve_drift, timestep_scan)
from fesurf.potentials import FesurfCalculator, Harmonic, LennardJones, Potential


def lj13(n_replicas=1, rattle=0.0, seed=0):
    atoms = Icosahedron("Ar", 2)  # 13-atom argon cluster
    frames = []
    for k in range(n_replicas):
        a = atoms.copy()
        if rattle:
            a.rattle(rattle, seed=seed + k)
        frames.append(a)
    return State.from_atoms(frames)


ONE_PARTICLE = State(positions=[[0.1, 0.0, 0.0]], atomic_numbers=[1])


@pytest.mark.parametrize("case", ["harmonic", "lj13"])
def test_halving_dt_divides_energy_fluctuation_by_four(case):
    # Velocity Verlet's shadow Hamiltonian differs from H by O(dt^2): the fluctuation of H ratio is 4
    # up to O(dt^2) corrections; the acceptance band is 3.5-4.5.
    if case == "harmonic":
        pot, state, dts, duration, temp = Harmonic(k=5.0), ONE_PARTICLE, (1.0, 0.5), 2000.0, 300.0
    else:
        pot, state, dts, duration, temp = LennardJones(), lj13(), (8.0, 4.0), 10000.0, 30.0
    start = maxwell_boltzmann(state, temp, seed=0, remove_com=pot.translation_invariant)
    coarse, fine = (nve_drift(pot, start, dt, duration_fs=duration) for dt in dts)
    ratio = coarse.fluctuation_meV_per_atom / fine.fluctuation_meV_per_atom
    assert 3.5 <= ratio <= 4.5


@pytest.mark.parametrize("case", ["harmonic", "lj13"])
def test_timestep_scan_choice_keeps_drift_below_threshold(case):
    if case == "harmonic":
        pot, state, dts, temp = Harmonic(k=5.0), ONE_PARTICLE, (0.5, 1.0, 2.0, 4.0, 8.0, 16.0), 300.0
    else:
        pot, state, dts, temp = LennardJones(), lj13(), (5.0, 10.0, 20.0, 40.0, 80.0, 160.0), 40.0
    scan = timestep_scan(pot, state, dts, duration_fs=4000.0, threshold=0.1, temperature=temp, seed=1)
    assert scan.best_timestep is not None and scan.best_timestep > dts[0]
    assert scan.results[-1].drift_meV_per_atom_ps >= 0.1  # the scan found where drift fails
    # an independent, longer run at the chosen step (new velocities) stays below 0.1 meV/atom/ps
    check = nve_drift(pot, state, scan.best_timestep, duration_fs=12000.0, temperature=temp, seed=7)
    assert check.drift_meV_per_atom_ps < 0.1
    assert "dt (fs)" in scan.table()


@pytest.mark.parametrize("thermostat", ["langevin", "bussi"])
def test_thermostats_sample_the_canonical_kinetic_energy(thermostat):
    # <KE> = (Nf/2) kT and Var(KE) = (Nf/2)(kT)^2. canonical_check derives each standard error from the
    # run length and the statistical inefficiency g of the series: se = std * sqrt(g / n_frames), pooled
    # over 8 independent replicas. Pass when both agree within 3 standard errors.
    temperature = 25.0
    pot = LennardJones()
    if thermostat == "langevin":
        md = Langevin(pot, 10.0, temperature=temperature, friction=0.01, seed=11)
        n_dof = 39  # Langevin does not conserve momentum: all 3N degrees of freedom
    else:
        md = Bussi(pot, 10.0, temperature=temperature, tau=100.0, seed=11)
        n_dof = 39 - 3  # momentum conserved and zero: centre of mass removed
    rep = EnergyReporter(stride=5)
    md.run(maxwell_boltzmann(lj13(8, rattle=0.05), temperature, seed=3, remove_com=True), 10000, [rep])
    result = canonical_check(rep.arrays()["kinetic_energy"], temperature, n_dof, discard=100)
    assert result.passed(3.0), str(result)
    # the conserved quantity (including thermostat work) stays put: < 1% of kT per atom
    conserved = rep.arrays()["conserved"]
    assert np.abs(conserved - conserved[0]).max() / 13 < 0.01 * 8.617e-5 * temperature


@pytest.mark.parametrize("kind", ["langevin", "bussi", "verlet"])
def test_sixteen_replicas_batched_equal_sixteen_single_runs(kind):
    temps = np.linspace(10.0, 40.0, 16)
    seeds = [100 + 7 * k for k in range(16)]
    start = maxwell_boltzmann(lj13(16, rattle=0.05), temps, seed=seeds, remove_com=True)

    def make():
        pot = LennardJones()
        if kind == "langevin":
            return lambda t, s: Langevin(pot, 5.0, temperature=t, friction=0.02, seed=s)
        if kind == "bussi":
            return lambda t, s: Bussi(pot, 5.0, temperature=t, tau=50.0, seed=s)
        return lambda t, s: VelocityVerlet(pot, 5.0)

    batched = make()(temps, seeds).run(start, 200)
    for k in range(16):
        single = make()(float(temps[k]), [seeds[k]]).run(start.select(k), 200)
        a, b = batched.atom_slices()[k]
        assert torch.allclose(batched.positions[a:b], single.positions, rtol=0, atol=1e-12)
        assert torch.allclose(batched.velocities[a:b], single.velocities, rtol=0, atol=1e-12)


def test_same_seed_same_trajectory_and_rng_checkpoint():
    start = maxwell_boltzmann(lj13(2, rattle=0.05), 20.0, seed=1)
    md = Langevin(LennardJones(), 5.0, temperature=20.0, friction=0.01, seed=5)
    half = md.run(start, 50)
    saved = md.rng_state()
    end = md.run(half, 50)
    resumed = Langevin(LennardJones(), 5.0, temperature=20.0, friction=0.01, seed=5)
    resumed.set_rng_state(saved)
    assert torch.equal(resumed.run(half, 50).positions, end.positions)
    again = Langevin(LennardJones(), 5.0, temperature=20.0, friction=0.01, seed=5).run(start, 100)
    assert torch.equal(again.positions, end.positions)


def test_ase_velocity_verlet_follows_fesurf_verlet():
    lj = LennardJones()
    start = maxwell_boltzmann(lj13(rattle=0.05), 30.0, seed=2)
    ours = VelocityVerlet(lj, 5.0).run(start, 300)
    atoms = start.to_atoms()[0]
    atoms.calc = FesurfCalculator(lj)
    AseVerlet(atoms, timestep=5.0 * fs).run(300)
    assert np.allclose(atoms.positions, ours.positions.numpy(), rtol=0, atol=1e-10)
    assert np.allclose(atoms.get_velocities() * fs, ours.velocities.numpy(), rtol=0, atol=1e-12)


class NaNAfter(Potential):
    """Harmonic well that returns NaN once replica 2's particle passes x = 0.5."""

    translation_invariant = rotation_invariant = False

    def energy(self, state):
        e = 0.5 * (state.positions ** 2).sum(1)
        bad = (state.system_index == 2) & (state.positions[:, 0] > 0.5)
        return state.sum_per_system(torch.where(bad, torch.nan, e))


def test_blow_up_names_replica_and_step_and_keeps_last_good_frame():
    start = State(positions=[[0.0, 0, 0]] * 4, atomic_numbers=[1] * 4, system_index=[0, 1, 2, 3],
                  velocities=[[0.0, 0, 0], [0.0, 0, 0], [0.1, 0, 0], [0.0, 0, 0]])
    with pytest.raises(SimulationError, match="replica 2") as info:
        VelocityVerlet(NaNAfter(), 1.0, check_every=5).run(start, 1000)
    err = info.value
    assert err.replica == 2 and err.step > 0 and err.step % 5 == 0
    assert torch.isfinite(err.last_good_state.positions).all()
    assert float(err.last_good_state.positions[2, 0]) <= 0.5 + 0.05

    runaway = State(positions=[[3.0, 0, 0]], atomic_numbers=[1], masses=[1.0])
    with pytest.raises(SimulationError, match="runaway|non-finite"):
        VelocityVerlet(Harmonic(k=50.0), 20.0).run(runaway, 500)


def test_input_errors_for_integrators():
    with pytest.raises(InputError, match="temperature"):
        Langevin(Harmonic(1.0), 1.0, seed=0)
    with pytest.raises(InputError, match="temperature"):
        Bussi(Harmonic(1.0), 1.0, seed=0)
    with pytest.raises(InputError, match="seed"):
        Langevin(Harmonic(1.0), 1.0, temperature=300.0)
    with pytest.raises(InputError, match="timestep"):
        VelocityVerlet(Harmonic(1.0), -1.0)
    with pytest.raises(InputError, match="one value per replica"):
        Langevin(Harmonic(1.0), 1.0, temperature=[300.0, 310.0], seed=0).run(ONE_PARTICLE, 1)
    with pytest.raises(InputError, match="temperature"):
        canonical_check(np.ones(100), None, 3)


def test_reporters_write_extxyz_and_hdf5(tmp_path):
    import h5py

    start = maxwell_boltzmann(lj13(2, rattle=0.05), 20.0, seed=0)
    xyz, h5 = ExtXYZReporter(tmp_path / "traj.xyz", stride=10), HDF5Reporter(tmp_path / "traj.h5", stride=10)
    Langevin(LennardJones(), 5.0, temperature=20.0, seed=1).run(start, 30, [xyz, h5])
    h5.close()
    frames = read(tmp_path / "traj.xyz", index=":")
    assert len(frames) == 4 * 2 and frames[-1].info["step"] == 30 and frames[-1].info["system"] == 1
    with h5py.File(tmp_path / "traj.h5") as f:
        assert f["positions"].shape == (4, 26, 3) and f["conserved"].shape == (4, 2)
        assert list(f["step"][:]) == [0, 10, 20, 30]
        assert np.allclose(f["positions"][0], start.positions.numpy())
