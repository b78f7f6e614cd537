"""OpenMMPotential and solvated systems, against OpenMM itself, and the two ML/MM routes.

References: OpenMM's own Context on the same System (energies and forces to 1e-6 relative), one-by-one
evaluation, finite differences (Reference platform, double precision), a complete OpenMM System (no
double counting), closed-form Coulomb, and the two ML/MM routes: OpenMM driving the MD with fesurf's model
as an ``openmm.PythonForce`` (OpenMMDriver; and openmm-ml's ``createMixedSystem`` with fesurf's model as an
ASE calculator, when openmm-ml is installed) against fesurf's engine driving the multi-level potential.
"""
import numpy as np
import pytest
import torch
from ase import Atoms

openmm = pytest.importorskip("openmm")

from fesurf.data import long_range  # noqa: E402
from fesurf.errors import InputError  # noqa: E402
from fesurf.potentials import check_potential  # noqa: E402
from fesurf.potentials.ase_bridge import FesurfCalculator  # noqa: E402
from fesurf.potentials.multilevel import MultiLevelPotential, Region  # noqa: E402
from fesurf.potentials.openmm import (KJMOL, NM, OpenMMDriver, OpenMMPotential, SoluteParameters,  # noqa: E402
                                      solvate)
from fesurf.state import State  # noqa: E402

# Cl- + CH3Cl (C, Cl, H, H, H, Cl'): fixed charges and GAFF-like LJ for the check (sigma A, epsilon eV)
PARAMS = SoluteParameters(charges=[-0.25, -0.45, 0.12, 0.12, 0.12, -0.66], sigma=[3.40, 3.47, 2.65, 2.65, 2.65, 4.40],
                          epsilon=[0.0047, 0.0115, 0.00068, 0.00068, 0.00068, 0.0016])


@pytest.fixture(scope="module")
def solvated():
    a = long_range.complex_at(long_range.ch3cl_minimum(), 3.3)
    return solvate(a, box=17.0, parameters=PARAMS, cutoff=7.5, minimize=False)


def _replicas(sol, n, scale=0.03, seed=0):
    rng = np.random.default_rng(seed)
    states = [sol.state(positions=sol.positions + rng.normal(scale=scale, size=sol.positions.shape)) for _ in range(n)]
    return State.concatenate(states)


def _openmm_reference(system, positions_A, cell_A, platform="CPU"):
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform),
                         {"Threads": "1"} if platform == "CPU" else {})
    ctx.setPeriodicBoxVectors(*(cell_A / 10.0))
    ctx.setPositions(positions_A / 10.0)
    st = ctx.getState(getEnergy=True, getForces=True)
    return (st.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole),
            st.getForces(asNumpy=True).value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer))


def test_solvated_system_layout(solvated):
    sol = solvated
    assert sol.solute == tuple(range(6)) and sol.n_waters * 3 == len(sol.water) and sol.n_waters > 100
    assert list(sol.numbers[6:9]) == [8, 1, 1]
    np.testing.assert_allclose(sol.charges[:6], PARAMS.charges, atol=1e-9)
    np.testing.assert_allclose(sol.charges[6:9], [-0.834, 0.417, 0.417], atol=1e-9)  # TIP3P
    nb = [f for f in sol.system.getForces() if isinstance(f, openmm.NonbondedForce)][0]
    assert nb.getNonbondedMethod() == openmm.NonbondedForce.PME
    # every solute pair is excluded (the core potential computes the solute itself)
    pairs = {tuple(sorted(nb.getExceptionParameters(k)[:2])) for k in range(nb.getNumExceptions())}
    assert all((j, i) in pairs for i in range(6) for j in range(i))
    assert sol.to_atoms().info["charge"] == -1


def test_agrees_with_openmm_and_batched_equals_one_by_one(solvated):
    sol = solvated
    states = _replicas(sol, 3)
    pot = sol.potential()
    assert pot._context(0).getPlatform().getPropertyValue(pot._context(0), "Threads") == "1"
    e, f = pot.energy_and_forces(states)
    for k, (a, b) in enumerate(states.atom_slices()):
        e_ref, f_ref = _openmm_reference(sol.system, states.positions[a:b].numpy(), sol.cell)
        assert abs(float(e[k]) / KJMOL - e_ref) <= 1e-6 * abs(e_ref)
        assert np.abs(f[a:b].numpy() / (KJMOL / NM) - f_ref).max() <= 1e-6 * np.abs(f_ref).max()
        e1, f1 = sol.potential().energy_and_forces(states.select(k))  # one by one, fresh Contexts
        # equal up to the CPU platform's run-to-run reproducibility (mixed precision: Contexts differ by
        # up to ~1e-8 relative in energy, usually bitwise equal); the Reference-platform contract check
        # below holds batched = one-by-one to 1e-10
        assert abs(float(e1[0]) - float(e[k])) <= 1e-7 * abs(float(e[k]))
        assert float((f1 - f[a:b]).abs().max()) <= 1e-6 * float(f[a:b].abs().max())


def test_contract_on_the_reference_platform():
    sol = solvate(Atoms("Cl", positions=[[0.0, 0.0, 0.0]], info={"charge": -1}), box=13.0,
                  forcefield=("amber14/tip3p.xml",), residue_names=("CL",), cutoff=6.0,
                  ewald_tolerance=1e-6, switch_distance=5.0, minimize=False)  # LJ smooth at the cutoff
    assert abs(sol.charges[0] + 1.0) < 1e-12  # amber14's Joung-Cheatham chloride template
    # two Contexts serve the finite-difference batch (building one per displaced copy costs most of the time).
    # Tolerance 1e-5: the real-space Coulomb is cut where erfc ~ ewald_tolerance (1e-6), a kink of that
    # relative size that the 4th-order stencil sees (measured 2e-6 here; 1e-7 passes 1e-6 but costs 10x).
    report = check_potential(sol.potential(platform="Reference", max_contexts=2), _replicas(sol, 2, seed=3),
                             max_fd_coords=8, fd_step=1e-3, force_rtol=1e-5)
    assert report["max_force_error"] < 1e-5


def test_solvate_relaxes_the_water_around_a_fixed_solute():
    cl = Atoms("Cl", positions=[[0.0, 0.0, 0.0]], info={"charge": -1})
    kw = dict(box=12.5, forcefield=("amber14/tip3p.xml",), residue_names=("CL",), cutoff=6.0)
    raw, relaxed = solvate(cl, minimize=False, **kw), solvate(cl, **kw)
    assert raw.n_waters == relaxed.n_waters and np.array_equal(relaxed.positions[0], raw.positions[0])
    e_raw, e_rel = (float(s.potential().energy(s.state())[0]) for s in (raw, relaxed))
    assert e_rel < e_raw - 10.0  # Modeller's tiled box has O-O contacts of ~1.8 A across the faces (~+56 eV)
    o = relaxed.to_atoms().get_all_distances(mic=True)[np.ix_(relaxed.numbers == 8, relaxed.numbers == 8)]
    assert (o + 10.0 * np.eye(len(o))).min() > 2.3


def test_openmm_driving_and_fesurf_driving_give_the_same_trajectory(solvated):
    """Route 1: OpenMM integrates the MM System plus fesurf's ML core (OpenMMDriver, an openmm.PythonForce as
    in openmm-ml's ASE potential); route 2: fesurf's
    engine integrates the multi-level ML/MM potential with OpenMM inside. Same energies and forces at the
    start, and the same trajectory: OpenMM's leapfrog started from v(-dt/2) = -a(0) dt/2 is velocity Verlet
    from v(0) = 0 in exact arithmetic."""
    from ase import units

    from fesurf.md import VelocityVerlet

    sol = solvated
    model = long_range.load("local")  # a Cl- + CH3Cl BP committee (gas phase, GFN2-xTB labels)
    core = Region(sol.solute, charge=-1.0)
    ml_mm = MultiLevelPotential.additive(core, model, n_atoms=sol.n_atoms,
                                         interaction_potential=OpenMMPotential(sol.system, platform="Reference"))
    start = sol.state()
    start.velocities = torch.zeros_like(start.positions)
    dt, n = 0.25, 4  # fs
    driver = OpenMMDriver(sol.system, MultiLevelPotential.additive(core, model, n_atoms=sol.n_atoms), start,
                          openmm.VerletIntegrator(dt * 1e-3))
    e0, f0 = ml_mm.energy_and_forces(start)
    assert abs(driver.potential_energy() - float(e0[0])) <= 1e-9 * abs(float(e0[0]))
    assert np.abs(driver.forces() - f0.numpy()).max() <= 1e-9 * float(f0.abs().max())
    acc = f0.numpy() / sol.masses[:, None] * units.fs ** 2  # A/fs^2
    driver.set_velocities(-0.5 * dt * acc)
    driver.step(n)
    end = VelocityVerlet(ml_mm, timestep=dt).run(start, n)
    moved = float((end.positions - start.positions).abs().max())
    assert moved > 1e-3  # it moved (A)
    assert np.abs(driver.positions() - end.positions.numpy()).max() < 1e-6 * moved
    # measured: positions 1e-11 A apart after 4 steps (0.034 A moved), energies 3e-11 relative
    assert abs(driver.potential_energy() - float(ml_mm.energy(end).detach()[0])) <= 1e-8 * abs(float(e0[0]))


class _SolutePairs:
    """Bare Coulomb plus Lennard-Jones (Lorentz-Berthelot, as OpenMM's NonbondedForce) of every solute
    pair, in vacuum: what the complete MM System adds to the one with the solute pairs excluded."""

    def __init__(self, params):
        super().__init__()
        self.q = torch.tensor(params.charges, dtype=torch.float64)
        self.sigma = torch.tensor(params.sigma, dtype=torch.float64)
        self.epsilon = torch.tensor(params.epsilon, dtype=torch.float64)

    def energy(self, state):
        from fesurf.potentials.multilevel import COULOMB

        n = self.q.numel()
        x = state.positions.view(state.n_systems, n, 3)
        i, j = torch.triu_indices(n, n, 1)
        r = (x[:, i] - x[:, j]).norm(dim=-1)
        s = 0.5 * (self.sigma[i] + self.sigma[j])
        eps = torch.sqrt(self.epsilon[i] * self.epsilon[j])
        sr6 = (s / r) ** 6
        return (COULOMB * self.q[i] * self.q[j] / r + 4 * eps * (sr6 * sr6 - sr6)).sum(-1)


def test_ml_mm_counts_nothing_twice_against_a_complete_openmm_system():
    """additive(core = solute pairs in vacuum, interaction = the System with solute pairs excluded) equals
    the complete MM System with them (PME: excluded pairs lose exactly erf(a r)/r, so the two differ by
    the bare 1/r and LJ of the solute pairs)."""
    from fesurf.potentials import Potential

    class Pairs(_SolutePairs, Potential):
        pass

    a = long_range.complex_at(long_range.ch3cl_minimum(), 3.3)
    kw = dict(box=15.5, parameters=PARAMS, cutoff=7.5, ewald_tolerance=1e-6, minimize=False)
    excl, full = solvate(a, **kw), solvate(a, solute_pairs=True, **kw)
    assert np.allclose(excl.positions, full.positions)
    states = _replicas(excl, 2, scale=0.02, seed=4)
    ml_mm = MultiLevelPotential.additive(Region(excl.solute, charge=-1.0), Pairs(PARAMS), n_atoms=excl.n_atoms,
                                         interaction_potential=excl.potential(platform="Reference"))
    e, f = ml_mm.energy_and_forces(states)
    e_ref, f_ref = full.potential(platform="Reference").energy_and_forces(states)
    # Reference platform, double precision: measured 2.4e-10 relative (the core's LJ of bonded atoms makes
    # the totals ~4 keV; ~1e-6 eV absolute)
    assert float((e - e_ref).abs().max()) <= 1e-8 * float(e_ref.abs().max())
    assert float((f - f_ref).abs().max()) <= 1e-8 * float(f_ref.abs().max())
    # and the solute pairs are not small: leaving the core term out misses them
    assert float((ml_mm.energies_by_term(states)["core"]).abs().min()) > 1.0


def test_point_charge_coupling_equals_openmm_coulomb_between_the_regions(solvated):
    """Mechanical embedding's solute-water Coulomb two ways: fesurf's PointChargeCoupling (bare 1/r) and an
    OpenMM NonbondedForce without cutoff holding the same charges, solute-solute and water-water excluded."""
    from fesurf.potentials.multilevel import PointChargeCoupling

    sol = solvated
    keep = list(sol.solute) + list(sol.water[:3 * 20])  # the solute and 20 waters, as a cluster
    q = sol.charges[keep]
    system = openmm.System()
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
    for i in keep:
        system.addParticle(sol.masses[i])
        nb.addParticle(float(sol.charges[i]), 0.1, 0.0)
    n_sol = len(sol.solute)
    for i in range(len(keep)):
        for j in range(i):
            if (i < n_sol) == (j < n_sol):
                nb.addException(i, j, 0.0, 0.1, 0.0)
    system.addForce(nb)
    rng = np.random.default_rng(5)
    states = State.concatenate([State(positions=sol.positions[keep] + rng.normal(scale=0.05, size=(len(keep), 3)),
                                      atomic_numbers=sol.numbers[keep]) for _ in range(2)])
    coupling = PointChargeCoupling(Region(tuple(range(n_sol))), Region(tuple(range(n_sol, len(keep)))),
                                   charges_b=q[n_sol:], charges_a=q[:n_sol], cutoff=None)
    e, f = coupling.energy_and_forces(states)
    e_omm, f_omm = OpenMMPotential(system, platform="Reference").energy_and_forces(states)
    # the Coulomb constants: ase's Hartree*Bohr and OpenMM's ONE_4PI_EPS0 agree to ~1e-8 relative
    assert float((e - e_omm).abs().max()) <= 1e-6 * float(e_omm.abs().max())
    assert float((f - f_omm).abs().max()) <= 1e-6 * float(f_omm.abs().max())


def test_embedding_of_a_solvated_system_takes_whole_waters(solvated):
    sol = solvated
    emb = sol.embedding(cutoff=6.0)
    idx, pos, q = emb.select(sol.to_atoms())
    assert len(idx) % 3 == 0 and len(idx) > 0 and set(idx) <= set(sol.water)
    assert np.all(np.asarray(idx)[::3] % 3 == 0) and np.allclose(q.reshape(-1, 3).sum(1), 0.0, atol=1e-9)
    d = np.linalg.norm(pos[:, None] - sol.positions[None, :6], axis=-1).min(1).reshape(-1, 3).min(1)
    assert d.max() <= 6.0 and d.min() > 1.5  # each water has an atom within the cutoff, placed by the image


def test_bad_inputs(solvated):
    sol = solvated
    pot = sol.potential()
    with pytest.raises(InputError, match="particles"):
        pot.energy(State(positions=[[0.0, 0, 0]], atomic_numbers=[1]))
    with pytest.raises(InputError, match="periodic"):
        pot.energy(sol.state().replace(cell=None, pbc=torch.zeros(1, 3, dtype=torch.bool)))
    skew = sol.state()
    skew.cell = skew.cell.clone()
    skew.cell[0, 0, 1] = 1.0
    with pytest.raises(InputError, match="reduced form"):
        pot.energy(skew)
    with pytest.raises(InputError, match="platform"):
        OpenMMPotential(sol.system, platform="Nonexistent")
    with pytest.raises(InputError, match="openmm.System"):
        OpenMMPotential("not a system")
    with pytest.raises(InputError, match="exactly one of box"):
        solvate(Atoms("Cl"), parameters=SoluteParameters([-1.0], [4.4], [0.0016]))
    with pytest.raises(InputError, match="nonbonded parameters"):
        solvate(Atoms("Cl"), box=20.0)
    with pytest.raises(InputError, match="twice the cutoff"):
        solvate(Atoms("Cl"), box=12.0, parameters=SoluteParameters([-1.0], [4.4], [0.0016]))
    with pytest.raises(InputError, match="epsilon"):
        SoluteParameters([-1.0], [4.4], [-1.0])
    with pytest.raises(InputError, match="differentiable"):
        pot.energy_and_forces(sol.state(), create_graph=True)
    with pytest.raises(InputError, match="template must be one system"):
        OpenMMDriver(sol.system, pot, sol.state().replicate(2), openmm.VerletIntegrator(0.001))
