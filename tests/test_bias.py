"""Biases: closed-form energies, PLUMED conventions, the Potential contract,
metadynamics hills, HILLS files (including one written by a real PLUMED)."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fesurf.bias import LOWER_WALLS, METAD, RESTRAINT, UPPER_WALLS
from fesurf.cv import COORDINATION, DISTANCE, POSITION, TORSION, distance_difference
from fesurf.errors import InputError
from fesurf.potentials import check_potential
from fesurf.state import State
from fesurf.units import KB, convert

SAMPLES = Path(__file__).resolve().parent / "data" / "plumed"  # copies of the files a real PLUMED wrote


def _molecules(n_systems=3, seed=0):
    rng = np.random.default_rng(seed)
    base = np.array([[0, 0, 0], [1.0, 0.1, 0], [1.6, 1.0, 0.2], [2.5, 1.1, 0.9]])
    pos = np.concatenate([base + rng.normal(scale=0.1, size=base.shape) for _ in range(n_systems)])
    return State(positions=pos, atomic_numbers=[8, 1, 8, 1] * n_systems, system_index=np.repeat(np.arange(n_systems), 4))


def test_restraint_energy_and_periodic_minimum_image():
    s = _molecules()
    d = DISTANCE([0, 1])(s)
    at = torch.tensor([0.9, 1.0, 1.1], dtype=torch.float64)
    r = RESTRAINT(DISTANCE([0, 1]), at=at, kappa=[10.0, 20.0, 30.0])
    assert torch.allclose(r.energy(s), 0.5 * torch.tensor([10.0, 20, 30], dtype=torch.float64) * (d - at) ** 2)
    # torsion near the +-pi seam: the restraint uses the minimum-image difference
    phi = TORSION([0, 1, 2, 3])(s)
    at_phi = phi + 2 * math.pi - 0.1
    rt = RESTRAINT(TORSION([0, 1, 2, 3]), at=at_phi, kappa=4.0)
    assert torch.allclose(rt.energy(s), torch.full((3,), 0.5 * 4.0 * 0.01, dtype=torch.float64))
    # window_energies: bias of every window at every frame
    w = r.window_energies(d)
    expect = 0.5 * torch.tensor([10.0, 20, 30], dtype=torch.float64)[:, None] * (d[None, :] - at[:, None]) ** 2
    assert torch.allclose(w, expect)


def test_walls_follow_plumed_convention():
    x = torch.tensor([[-2.0], [-0.5], [0.5], [2.0]], dtype=torch.float64)
    up = UPPER_WALLS(POSITION(0, "x"), at=1.0, kappa=3.0, exp=2, eps=0.5, offset=0.2)
    lo = LOWER_WALLS(POSITION(0, "x"), at=-1.0, kappa=3.0, exp=4, eps=1.0, offset=0.0)
    # PLUMED: kappa * ((x - at + offset)/eps)^exp above the wall, no factor 0.5
    assert up.energy_from_cv(x).tolist() == pytest.approx([0, 0, 0, 3.0 * ((2.0 - 1.0 + 0.2) / 0.5) ** 2])
    assert lo.energy_from_cv(x).tolist() == pytest.approx([3.0 * 1.0**4, 0, 0, 0])


@pytest.mark.parametrize("make", [
    lambda: RESTRAINT(DISTANCE([0, 1]), at=[0.9, 1.0, 1.1], kappa=[10.0, 20.0, 30.0]),
    lambda: RESTRAINT([distance_difference([0, 1], [2, 1]), TORSION([0, 1, 2, 3])], at=[[0.1, 1.0], [0.0, 2.0],
                      [-0.1, -3.0]], kappa=[5.0, 1.0]),
    lambda: RESTRAINT(COORDINATION([0, 2], [1, 3], r0=1.2), at=1.0, kappa=2.0),
    lambda: RESTRAINT(POSITION(1, "y"), at=[0.0, 0.2, 0.4], kappa=7.0),
    lambda: UPPER_WALLS(DISTANCE([0, 2]), at=1.2, kappa=5.0, exp=2),
    lambda: LOWER_WALLS([POSITION(0, "x"), DISTANCE([0, 3])], at=[0.1, 3.5], kappa=[1.0, 2.0], exp=4),
], ids=["restraint-distance", "restraint-2d", "restraint-coordination", "restraint-position", "upper", "lower"])
def test_biases_pass_potential_contract(make):
    bias = make()
    s = _molecules()
    check_potential(bias, s)
    cartesian = any(not c.translation_invariant for c in bias.cvs)
    assert bias.translation_invariant is (not cartesian) and bias.rotation_invariant is (not cartesian)


def test_metad_passes_contract_per_replica_and_shared():
    s = _molecules()
    for shared in (False, True):
        m = METAD([DISTANCE([0, 1]), TORSION([0, 1, 2, 3])], sigma=[0.05, 0.3], height=0.02, pace=10,
                  biasfactor=6.0, temperature=300.0, shared=shared)
        for step in (10, 20, 30):
            m.deposit(s.replace(positions=s.positions + 0.02 * step / 10), step)
        check_potential(m, s)
        assert m.n_hills == 9
    m = METAD(POSITION(0, "x"), sigma=0.1, height=0.01, pace=1)
    assert not m.translation_invariant


def test_chain_rule_forces_equal_full_autograd():
    """CVBias forces come from dV/ds (closed form for METAD and RESTRAINT) times the CVs' Jacobian; they
    must equal autograd through the whole bias (the generic Potential route) to round-off, including a
    torsion whose hills sit across the +-pi seam."""
    from fesurf.potentials.base import Potential

    s = _molecules()
    phi = TORSION([0, 1, 2, 3])(s)
    biases = []
    for shared in (False, True):
        m = METAD([DISTANCE([0, 1]), TORSION([0, 1, 2, 3])], sigma=[0.05, 0.3], height=0.02, pace=10,
                  biasfactor=6.0, temperature=300.0, shared=shared)
        m.add_hills(torch.stack([DISTANCE([0, 1])(s) + 0.03, phi + 2 * math.pi - 0.2], 1), [0.02, 0.015, 0.01],
                    [0, 1, 2], [10, 10, 10])
        m.add_hills(torch.stack([DISTANCE([0, 1])(s) - 0.02, phi - 0.1], 1), [0.01, 0.01, 0.01], [0, 1, 2],
                    [20, 20, 20])
        biases.append(m)
    biases += [RESTRAINT([DISTANCE([0, 1]), TORSION([0, 1, 2, 3])], at=[[1.0, 3.0], [0.9, -3.0], [1.1, 0.0]],
                         kappa=[5.0, 1.0]),
               UPPER_WALLS(DISTANCE([0, 2]), at=1.2, kappa=5.0, exp=2),
               # closed-form CV Jacobians (no autograd at all): a distance difference and a position
               RESTRAINT([distance_difference([0, 1], [2, 1]), POSITION(3, "y")], at=[[0.1, 0.0], [-0.2, 0.5], [0.0, 1.0]],
                         kappa=[4.0, 2.0])]
    m = METAD(distance_difference([0, 1], [2, 1]), sigma=0.05, height=0.02, pace=10, biasfactor=6.0, temperature=300.0)
    m.add_hills(distance_difference([0, 1], [2, 1])(s)[:, None] + 0.02, [0.02, 0.015, 0.01], [0, 1, 2], [10, 10, 10])
    biases.append(m)
    for bias in biases:
        e, f = bias.energy_and_forces(s)
        e_ref, f_ref = Potential.energy_and_forces(bias, s)
        assert torch.allclose(e, e_ref, rtol=0, atol=1e-14)
        assert torch.allclose(f, f_ref, rtol=1e-12, atol=1e-13)
        assert float(f.abs().max()) > 1e-3  # the test state really feels the bias
        e_g, f_g = bias.energy_and_forces(s, create_graph=True)  # force matching keeps the graph
        assert torch.allclose(f_g.detach(), f_ref, rtol=1e-12, atol=1e-13)
    empty = METAD(DISTANCE([0, 1]), sigma=0.1, height=0.01, pace=1)
    assert float(empty.energy_and_forces(s)[1].abs().max()) == 0.0


def test_well_tempered_heights_and_separate_replicas():
    t, gamma, w0 = 300.0, 5.0, 0.02
    s = State(positions=[[0.0, 0, 0], [3.0, 0, 0]], atomic_numbers=[1, 1], system_index=[0, 1])
    m = METAD(POSITION(0, "x"), sigma=0.2, height=w0, pace=1, biasfactor=gamma, temperature=t)
    m.deposit(s, 1)
    m.deposit(s, 2)
    # second hill on the same spot: w0 exp(-w0 / (kB T (gamma - 1)))
    assert m.heights[2:].tolist() == pytest.approx([w0 * math.exp(-w0 / (KB * t * (gamma - 1)))] * 2, rel=1e-12)
    # per-replica hills: replica 1 does not feel replica 0's hills
    probe = State(positions=[[0.0, 0, 0], [0.0, 0, 0]], atomic_numbers=[1, 1], system_index=[0, 1])
    e = m.energy(probe)
    far = sum(float(h) * math.exp(-0.5 * (3.0 / 0.2) ** 2) for h in m.heights[2:])
    assert float(e[0]) == pytest.approx(float(m.heights[0] + m.heights[2]), rel=1e-12)
    assert float(e[1]) == pytest.approx(far, rel=1e-9)


def test_hills_roundtrip_and_plumed_header(tmp_path):
    m = METAD([POSITION(0, "x"), TORSION([0, 1, 2, 3])], sigma=[0.1, 0.35], height=0.01, pace=100,
              biasfactor=8.0, temperature=300.0, timestep=0.5, labels=["p.x", "phi"], shared=True)
    rng = np.random.default_rng(0)
    m.add_hills(rng.normal(size=(5, 2)), rng.uniform(0.001, 0.01, 5), np.zeros(5), np.arange(1, 6) * 100)
    (path,) = m.write_hills(tmp_path / "HILLS")
    lines = Path(path).read_text().splitlines()
    assert lines[0] == "#! FIELDS time p.x phi sigma_p.x sigma_phi height biasf"
    assert lines[1] == "#! SET multivariate false" and "#! SET min_phi -pi" in lines and "#! SET max_phi pi" in lines
    data = np.loadtxt(path, comments="#")
    # PLUMED units: time ps, x in nm, heights kJ/mol scaled by gamma/(gamma-1)
    assert data[0, 0] == pytest.approx(100 * 0.5e-3)
    assert data[:, 1] == pytest.approx(m.centers[:, 0].numpy() / 10)
    assert data[:, 5] == pytest.approx(m.heights.numpy() * convert(1.0, "eV", "kJ/mol") * 8 / 7)
    back = METAD([POSITION(0, "x"), TORSION([0, 1, 2, 3])], sigma=[0.1, 0.35], height=0.01, pace=100,
                 biasfactor=8.0, temperature=300.0, timestep=0.5, shared=True)
    back.read_hills(path)
    assert torch.allclose(back.centers, m.centers, atol=1e-12) and torch.allclose(back.heights, m.heights, rtol=1e-12)
    assert back.steps.tolist() == m.steps.tolist()


@pytest.mark.skipif(not (SAMPLES / "metad" / "HILLS").exists(), reason="PLUMED sample files not available")
def test_free_energy_from_real_plumed_hills():
    """HILLS from a real PLUMED WT-metad run on U = 5 (x^2 - 1)^2 kJ/mol (x in nm), T = 300 K, gamma = 8.

    F(x) = -gamma/(gamma-1) V(x) must reproduce the exact PMF to the
    convergence of that finite run (2000 hills): its bias still wanders by
    ~0.4 kT around the exact curve (final hills are 0.1 kJ/mol high but the
    bias shape moves by a few hill widths). We ask RMS < 0.25 kT and
    max < 0.5 kT; a wrong length unit (nm vs A) or energy unit (kJ/mol vs eV)
    errs by several kT, and the gamma/(gamma-1) height scaling is checked
    exactly on the first hill.
    """
    m = METAD(POSITION(0, "x"), sigma=1.0, height=0.01, pace=100, biasfactor=8.0, temperature=300.0,
              timestep=5.0, shared=True)
    m.read_hills(SAMPLES / "metad" / "HILLS")  # sigma 0.1 nm is read as hill widths in the file
    assert m.heights[0] * convert(1.0, "eV", "kJ/mol") == pytest.approx(1.0, rel=1e-9)  # HEIGHT=1.0 in plumed.dat
    m.sigma = torch.tensor([[1.0]], dtype=torch.float64)  # 0.1 nm = 1 Angstrom
    x_nm = np.linspace(-1.2, 1.2, 121)
    f = convert(m.free_energy(x_nm[:, None] * 10.0), "eV", "kJ/mol")
    exact = 5.0 * (x_nm**2 - 1.0) ** 2
    err = (f - f.min()) - (exact - exact.min())
    err -= err.mean()
    kt = 300.0 * 8.314462618e-3
    assert np.sqrt(np.mean(err**2)) < 0.25 * kt and np.abs(err).max() < 0.5 * kt


def test_ct_matches_direct_quadrature():
    """c(t) = kT ln[int exp(g/(g-1) bV) / int exp(bV/(g-1))] against a direct numpy evaluation."""
    t, gamma = 300.0, 4.0
    m = METAD(POSITION(0, "x"), sigma=0.2, height=0.01, pace=1, biasfactor=gamma, temperature=t, shared=True)
    s = State(positions=[[0.0, 0, 0]], atomic_numbers=[1])
    for step in range(1, 6):
        m.deposit(s.replace(positions=torch.tensor([[0.1 * step, 0, 0]], dtype=torch.float64)), step)
    grid = np.linspace(-2, 3, 501)[:, None]
    steps, c = m.ct(grid)
    kt = KB * t
    for k in range(5):
        v = np.sum(m.heights[:k + 1].numpy() * np.exp(-0.5 * ((grid - m.centers[:k + 1, 0].numpy()) / 0.2) ** 2), axis=1)
        num = np.log(np.sum(np.exp(gamma / (gamma - 1) * v / kt)))
        den = np.log(np.sum(np.exp(v / ((gamma - 1) * kt))))
        assert c[k] == pytest.approx(kt * (num - den), rel=1e-10)
    assert np.all(np.diff(c) > 0) and steps.tolist() == [1, 2, 3, 4, 5]


def test_bias_bad_input():
    with pytest.raises(InputError, match="RESTRAINT kappa must be >= 0"):
        RESTRAINT(DISTANCE([0, 1]), at=1.0, kappa=-1.0)
    with pytest.raises(InputError, match="3 centres but 2 force constants"):
        RESTRAINT(DISTANCE([0, 1]), at=[1.0, 2.0, 3.0], kappa=[1.0, 2.0])
    with pytest.raises(InputError, match="4 windows but the State has 3 systems"):
        RESTRAINT(DISTANCE([0, 1]), at=[1.0, 1.1, 1.2, 1.3], kappa=1.0).energy(_molecules())
    with pytest.raises(InputError, match="atom index 4"):
        RESTRAINT(DISTANCE([0, 4]), at=1.0, kappa=1.0).energy(_molecules())
    with pytest.raises(InputError, match="biasfactor"):
        METAD(DISTANCE([0, 1]), sigma=0.1, height=0.01, pace=10, biasfactor=0.5, temperature=300)
    with pytest.raises(InputError, match="mixes units"):
        m = METAD(distance_difference([0, 1], [2, 1]).__class__([POSITION(0, "x"), TORSION([0, 1, 2, 3])]),
                  sigma=0.1, height=0.01, pace=10)
        m.write_hills("/tmp/never-written-HILLS")
