"""Live coupling through a real PLUMED kernel (skipped with the reason when none is found).

Point fesurf at a kernel with PLUMED_KERNEL=/path/to/lib/libplumedKernel.so.
"""
import numpy as np
import pytest
import torch
from ase import Atoms, units

from fesurf.bias import RESTRAINT
from fesurf.cv import ANGLE, COORDINATION, DISTANCE, POSITION, TORSION
from fesurf.errors import InputError
from fesurf.estimators import compute_pmf
from fesurf.md import Langevin, maxwell_boltzmann
from fesurf.plumed import (PlumedBias, PlumedUmbrellaRecorder, find_kernel, kernel_status, plumed_ase_calculator,
                           read_colvar, read_hills, reweight_metad, sum_hills, umbrella_window_input)
from fesurf.potentials import DoubleWell1D, Sum, check_potential
from fesurf.sampling.sampleset import SampleSet
from fesurf.state import State
from fesurf.units import convert
from plumed_data import exact_bin_pmf, exact_pmf

HAS_KERNEL, REASON = kernel_status()
needs_kernel = pytest.mark.skipif(not HAS_KERNEL, reason=f"no PLUMED kernel: {REASON}")
KJ = convert(1.0, "kJ/mol", "eV")
KT = units.kB * 300.0 * units.mol / units.kJ  # kJ/mol


def test_missing_kernel_error_says_what_to_install(monkeypatch):
    import fesurf.plumed.live as live

    monkeypatch.delenv("PLUMED_KERNEL", raising=False)
    monkeypatch.setattr(live, "_kernel_candidates", lambda: [("conda ($CONDA_PREFIX/lib)", "/no/conda/lib/libplumedKernel.so"),
                                                              ("the hillclimber wheel", "/no/wheel/libplumedKernel.so")])
    with pytest.raises(InputError, match=r"PLUMED_KERNEL \(not set\).*/no/conda/lib.*/no/wheel.*conda install"):
        find_kernel()
    with pytest.raises(InputError, match="does not exist"):
        PlumedBias("d: DISTANCE ATOMS=1,2", timestep=1.0, temperature=300.0, kernel="/no/libplumedKernel.so")
    monkeypatch.setenv("PLUMED_KERNEL", "/no/env/libplumedKernel.so")
    with pytest.raises(InputError, match=r"\$PLUMED_KERNEL\) does not exist"):
        find_kernel()


def test_kernel_lookup_order(monkeypatch, tmp_path):
    import fesurf.plumed.live as live

    first, second = tmp_path / "a" / "libplumedKernel.so", tmp_path / "b" / "libplumedKernel.so"
    for f in (first, second):
        f.parent.mkdir()
        f.write_bytes(b"")
    monkeypatch.setattr(live, "_kernel_candidates", lambda: [("one", str(tmp_path / "none.so")), ("two", str(first)),
                                                              ("three", str(second))])
    monkeypatch.setenv("PLUMED_KERNEL", str(second))
    assert find_kernel(str(first)) == str(first)  # kernel= wins
    assert find_kernel() == str(second)  # then $PLUMED_KERNEL
    monkeypatch.delenv("PLUMED_KERNEL")
    assert find_kernel() == str(first)  # then the first candidate that exists


def _molecule(n_systems, gen):
    base = torch.tensor([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [2.0, 1.4, 0.0], [3.4, 1.5, 0.6]], dtype=torch.float64)
    pos = torch.cat([base + 0.15 * torch.randn(4, 3, generator=gen, dtype=torch.float64) for _ in range(n_systems)])
    return State(positions=pos, atomic_numbers=[6, 6, 6, 1] * n_systems, system_index=np.repeat(np.arange(n_systems), 4))


@needs_kernel
def test_plumed_restraints_equal_native_energies_and_forces(tmp_path, gen):
    cvs = [DISTANCE([0, 3]), ANGLE([0, 1, 2]), TORSION([0, 1, 2, 3]), COORDINATION([0], [2, 3], r0=2.0)]
    at = np.array([[3.0, 1.9, 0.4, 0.5], [3.6, 2.1, -0.8, 0.2], [4.0, 1.7, 2.9, 0.9]])
    kappa = np.array([2.0, 0.7, 0.3, 1.5])
    inputs = [umbrella_window_input(cvs, at[k], kappa, colvar_file=f"COLVAR.{k}", stride=1) for k in range(3)]
    bias = PlumedBias(inputs, timestep=1.0, temperature=300.0, work_dir=tmp_path, log_file="log.{replica}")
    native = RESTRAINT(cvs, at=at, kappa=kappa)
    try:
        for _ in range(3):
            s = _molecule(3, gen)
            e, f = bias.energy_and_forces(s)
            e_ref, f_ref = native.energy_and_forces(s)
            assert e.abs().max() > 0.01  # the restraints are active
            np.testing.assert_allclose(e.numpy(), e_ref.numpy(), rtol=0, atol=1e-8)
            np.testing.assert_allclose(f.numpy(), f_ref.numpy(), rtol=0, atol=1e-8)
            np.testing.assert_allclose(bias.energy(s).numpy(), e_ref.numpy(), atol=1e-8)
            # every window's PLUMED at every configuration = the native window energies
            s_cv = torch.stack([c(s) for c in cvs], dim=1)
            np.testing.assert_allclose(bias.cross_energies(s).numpy(), native.window_energies(s_cv).numpy(), atol=1e-8)
        assert bias.step == 3  # energy() and cross_energies() do not advance PLUMED
        check_potential(bias, _molecule(3, gen))
    finally:
        bias.close()
    c = read_colvar(tmp_path / "COLVAR.0")
    np.testing.assert_allclose(c["time"][:3], [0.0, 0.001, 0.002])  # ps: steps 0, 1, 2 of 1 fs


@needs_kernel
def test_box_is_passed_and_virial_is_minus_sum_r_outer_f(tmp_path):
    # two atoms 1.6 A apart through the periodic boundary of a 6 A box (5.4 A apart without it)
    s = State(positions=[[0.3, 0.2, 0.1], [4.7, 0.5, -0.4]], atomic_numbers=[1, 1], cell=np.eye(3) * 6.0,
              pbc=[True] * 3)
    bias = PlumedBias(umbrella_window_input(DISTANCE([0, 1]), 1.0, 2.0, colvar_file="COLVAR"), timestep=1.0,
                      temperature=300.0, work_dir=tmp_path)
    try:
        e, f = bias.energy_and_forces(s)
        e_ref, f_ref = RESTRAINT(DISTANCE([0, 1]), at=1.0, kappa=2.0).energy_and_forces(s)
        d = np.array([-1.6, 0.3, -0.5])  # minimum-image vector from atom 0 to atom 1
        assert float(e[0]) == pytest.approx(0.5 * 2.0 * (np.linalg.norm(d) - 1.0) ** 2, abs=1e-12)
        np.testing.assert_allclose(f.numpy(), f_ref.numpy(), atol=1e-8)
        # PLUMED's virial = -sum_i r_i (x) f_i with the minimum-image pair vector = -d (x) f_1
        np.testing.assert_allclose(bias.last_virial[0].numpy(), -np.outer(d, f.numpy()[1]), atol=1e-10)
        np.testing.assert_allclose(bias.stress(s)[0].numpy(), -np.outer(d, f.numpy()[1]) / 216.0, atol=1e-12)
    finally:
        bias.close()


def _double_well_setup(n=13):
    pot = DoubleWell1D(barrier=5 * KJ, x0=10.0, confine=50 * KJ / 100)
    at = np.linspace(-15.0, 15.0, n)
    s = State(positions=np.c_[at, np.zeros(n), np.zeros(n)], atomic_numbers=[1] * n, masses=[1.0] * n,
              system_index=list(range(n)))
    return pot, at, maxwell_boltzmann(s, 300.0, seed=5)


@needs_kernel
def test_plumed_umbrella_pmf_equals_native_umbrella_pmf(tmp_path):
    pot, at, s0 = _double_well_setup()
    kappa = 200 * KJ / 100  # 200 kJ/mol/nm^2 in eV/A^2
    cv = POSITION(0, "x")
    inputs = [umbrella_window_input(cv, a, kappa, colvar_file=f"COLVAR.{k}", stride=20) for k, a in enumerate(at)]
    bias = PlumedBias(inputs, timestep=5.0, temperature=300.0, work_dir=tmp_path)
    rec = PlumedUmbrellaRecorder(bias, cv, temperature=300.0, stride=20, skip_steps=500)
    n_steps = 4000
    try:
        Langevin(Sum([pot, bias]), timestep=5.0, temperature=300.0, friction=0.005, seed=21).run(
            s0, n_steps, reporters=[rec])
    finally:
        bias.close()
    ss_plumed = rec.sampleset()
    native = RESTRAINT(cv, at=at, kappa=kappa)
    # u_kn recorded through PLUMED equals the native window energies of the same frames (1e-8 eV)
    u_native = native.window_energies(torch.as_tensor(ss_plumed.cv)).numpy() / (units.kB * 300.0)
    np.testing.assert_allclose(ss_plumed.u_kn * units.kB * 300.0, u_native * units.kB * 300.0, atol=1e-8)
    # PLUMED printed p.x in nm every 20 steps from step 0: the COLVAR holds n_steps / 20 + 1 rows
    c = read_colvar(tmp_path / "COLVAR.4")
    assert len(c) == n_steps // 20 + 1
    np.testing.assert_allclose(c["time"][-1], n_steps * 0.005)  # ps

    xs = []

    class Rec:
        stride = 20

        def report(self, step, state, info):
            if step >= 500:
                xs.append(state.positions[:, 0].numpy().copy())

    Langevin(Sum([pot, native]), timestep=5.0, temperature=300.0, friction=0.005, seed=21).run(
        s0, n_steps, reporters=[Rec()])
    x = np.array(xs).T.reshape(-1)
    ss_native = SampleSet.from_arrays(state_index=np.repeat(np.arange(13), len(xs)), temperature=300.0,
                                      u_kn=native.window_energies(torch.tensor(x)[:, None]).numpy() / (units.kB * 300.0),
                                      cv=x, u_ref=np.zeros(x.size))
    edges = np.linspace(-15.0, 15.0, 11)
    p1 = compute_pmf(ss_plumed, bins=edges, unit="kJ/mol")
    p2 = compute_pmf(ss_native, bins=edges, unit="kJ/mol")
    # same model, same seed, bias forces equal to 1e-13: the PMFs agree within 2 sigma of either estimate
    # (sigma relative to the common minimum bin; both are pymbar's analytical 1-sigma)
    assert int(np.nanargmin(p1.values)) == int(np.nanargmin(p2.values))
    sig = np.maximum(p1.uncertainties, p2.uncertainties)
    assert np.all(np.abs(p1.values - p2.values) <= 2 * sig + 1e-9)
    # and both are the double well (4 sigma + 0.3 kJ/mol for bin averaging)
    xc = p1.grid[0] / 10.0
    ex = exact_pmf(xc) - exact_pmf(xc)[int(np.nanargmin(p1.values))]
    assert np.all(np.abs(p1.values - ex) < 4 * p1.uncertainties + 0.3 + 0.2 * (p1.uncertainties == 0))


@needs_kernel
def test_plumed_metad_hills_reweight_to_the_pmf(tmp_path):
    pot, _, s0 = _double_well_setup(4)
    s0 = s0.replace(positions=s0.positions * 0 + torch.tensor([-10.0, 0.0, 0.0], dtype=torch.float64))
    metad = ("p: POSITION ATOM=1 NOPBC\n"
             "mtd: METAD ARG=p.x SIGMA=0.1 HEIGHT=1.2 PACE=50 BIASFACTOR=8 FILE=HILLS.{replica} "
             "GRID_MIN=-3 GRID_MAX=3 GRID_BIN=300\n"
             "PRINT ARG=p.x,mtd.bias STRIDE=50 FILE=COLVAR.{replica} FMT=%.8f\n")
    bias = PlumedBias(metad, timestep=5.0, temperature=300.0, work_dir=tmp_path)
    n_steps = 15000
    # the growing bias moves the "conserved" energy by design: allow it (tens of kJ/mol = ~0.5 eV per walker)
    md = Langevin(Sum([pot, bias]), timestep=5.0, temperature=300.0, friction=0.005, seed=3, max_energy_change=10.0)
    try:
        state = md.run(s0, n_steps // 2)
        bias.energy(state)  # extra evaluations and a repeated MD-step call must not deposit
        bias.energy_and_forces(state)
        md.run(state, n_steps - n_steps // 2)
    finally:
        bias.close()
    grid = np.linspace(-1.3, 1.3, 27)
    fes, rws = [], []
    for k in range(4):
        h = read_hills(tmp_path / f"HILLS.{k}")
        # one hill every 50 steps (PLUMED deposits at steps 50, 100, ...); the restart of run() re-evaluates
        # step 7500 from the cache and the extra energy() deposits nothing
        assert h.n_hills == n_steps // 50
        np.testing.assert_allclose(h.time[[0, -1]], [0.25, n_steps * 0.005])
        assert h.biasfactor == 8.0
        fes.append(sum_hills(h, grid=[grid]).values)
        rw = reweight_metad(tmp_path / f"COLVAR.{k}", h, 300.0, "p.x", bins=np.linspace(-1.4, 1.4, 15),
                            skip_time=10.0, n_blocks=4)
        rws.append(rw.values)
    # reweighted (c(t)) FES of the 4 walkers, averaged, against the exact bin-averaged PMF; per-walker block
    # errors are ~0.3-0.4 kT per 0.2 nm bin, ~0.2 kT for the mean of 4: RMS < 0.5 kT is ~2.5 sigma (0.28 seen)
    rwm = np.nanmean(rws, axis=0)
    ex = exact_bin_pmf(np.linspace(-1.4, 1.4, 15))
    dr = rwm - ex
    dr -= np.nanmean(dr)
    assert np.isfinite(rwm).sum() >= 12 and np.sqrt(np.nanmean(dr**2)) < 0.5 * KT
    f = np.mean(fes, axis=0)
    d = f - exact_pmf(grid)
    d -= d.mean()
    # 4 independent walkers of 75 ps; the walker-to-walker spread of F is ~0.43 kT per bin, so the mean's
    # error is ~0.22 kT: require RMS < 0.5 kT (~2.3 sigma; 0.34 seen, partly the unconverged filling)
    spread = np.std(fes - np.mean(fes, axis=1, keepdims=True), axis=0).mean() / KT
    assert np.sqrt(np.mean(d**2)) < 0.5 * KT, (np.sqrt(np.mean(d**2)) / KT, spread)


@needs_kernel
def test_fesurf_potential_inside_ase_plumed_calculator(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pot = DoubleWell1D(barrier=5 * KJ, x0=10.0, confine=50 * KJ / 100)
    atoms = Atoms("H", positions=[[3.0, 0.5, -0.2]], masses=[1.0])
    calc = plumed_ase_calculator(pot, "p: POSITION ATOM=1 NOPBC\nr: RESTRAINT ARG=p.x AT=0.5 KAPPA=200\n"
                                      "PRINT ARG=p.x,r.bias FILE=COLVAR STRIDE=1",
                                 atoms, timestep=5.0, temperature=300.0, log="plumed.log")
    assert calc.plumed is not None
    native = Sum([pot, RESTRAINT(POSITION(0, "x"), at=5.0, kappa=200 * KJ / 100)])
    try:
        for x in (3.0, -7.5, 12.0):
            atoms.positions[0, 0] = x
            e = atoms.get_potential_energy()
            f = atoms.get_forces()
            e_ref, f_ref = native.energy_and_forces(State.from_atoms(atoms))
            assert e == pytest.approx(float(e_ref[0]), abs=1e-8)
            np.testing.assert_allclose(f, f_ref.numpy(), atol=1e-8)
    finally:
        calc.plumed.finalize()
    assert len(read_colvar(tmp_path / "COLVAR")) == 3


@needs_kernel
def test_surrogate_inside_ase_plumed_runs_md(tmp_path, monkeypatch):
    # a fesurf surrogate (Behler-Parrinello network) as the unbiased calculator of ASE's Plumed calculator,
    # with a PLUMED RESTRAINT on the O-H distance, driven by ASE's own Langevin dynamics
    from ase.build import molecule
    from ase.md.langevin import Langevin as AseLangevin

    from fesurf.surrogates.bp import BehlerParrinello

    monkeypatch.chdir(tmp_path)
    model = BehlerParrinello(elements=[1, 8], hidden=(8, 8), seed=1).double()
    atoms = molecule("H2O")
    calc = plumed_ase_calculator(model, "d: DISTANCE ATOMS=1,2\nr: RESTRAINT ARG=d AT=0.1 KAPPA=5000\n"
                                        "PRINT ARG=d,r.bias FILE=COLVAR STRIDE=1 FMT=%.8f",
                                 atoms, timestep=0.5, temperature=300.0)
    native = Sum([model, RESTRAINT(DISTANCE([0, 1]), at=1.0, kappa=5000 * KJ / 100)])
    try:
        e_ref, f_ref = native.energy_and_forces(State.from_atoms(atoms))
        assert atoms.get_potential_energy() == pytest.approx(float(e_ref[0]), abs=1e-8)
        np.testing.assert_allclose(atoms.get_forces(), f_ref.numpy(), atol=1e-8)
        AseLangevin(atoms, 0.5 * units.fs, temperature_K=300.0, friction=0.01, rng=np.random.default_rng(0)).run(5)
    finally:
        calc.plumed.finalize()
    c = read_colvar(tmp_path / "COLVAR")
    assert len(c) >= 6  # one PLUMED step per force evaluation (initial + 5 steps)
    np.testing.assert_allclose(c["r.bias"], 2500.0 * (c["d"] - 0.1) ** 2, atol=1e-6)


_PYTORCH_SCRIPT = r'''
import sys, numpy as np, plumed
pos = np.array(eval(sys.argv[2]), dtype=np.float64)
p = plumed.Plumed()
p.cmd("setMDEngine", "python"); p.cmd("setNatoms", len(pos)); p.cmd("setMDLengthUnits", 0.1)
p.cmd("setMDEnergyUnits", float(sys.argv[3])); p.cmd("setTimestep", 1.0); p.cmd("setLogFile", "log")
p.cmd("init")
for line in open(sys.argv[1]).read().splitlines():
    p.cmd("readInputLine", line)
f = np.zeros_like(pos); v = np.zeros((3, 3)); m = np.ones(len(pos)); b = np.zeros(1)
p.cmd("setStep", 0); p.cmd("setBox", np.zeros((3, 3))); p.cmd("setMasses", m); p.cmd("setCharges", np.zeros(len(pos)))
p.cmd("setPositions", pos); p.cmd("setForces", f); p.cmd("setVirial", v)
p.cmd("prepareCalc"); p.cmd("performCalcNoUpdate"); p.cmd("update"); p.cmd("getBias", b)
p.finalize()
print(repr(float(b[0]))); print(repr(f.tolist()))
'''


@needs_kernel
def test_exported_cv_runs_in_plumed_pytorch_model(tmp_path):
    # PLUMED's PYTORCH_MODEL needs a kernel built with libtorch. The PyPI plumed 2.10.0 wrapper never releases
    # the GIL, so a process that imported torch cannot run it (REFERENCE.md): PLUMED runs in a subprocess
    # that imports only plumed and numpy.
    import subprocess
    import sys

    from fesurf.plumed import export_cv

    pos = [[0.0, 0.0, 0.0], [1.5, 0.2, -0.1], [2.0, 1.4, 0.0]]
    s = State(positions=pos, atomic_numbers=[6, 1, 8])
    lines = export_cv(DISTANCE([0, 2]), s, tmp_path / "d.ptc", label="ml")
    # bias 0.5 * 100 kJ/mol/nm^2 * (d - 0.2 nm)^2 through the exported CV
    (tmp_path / "plumed.dat").write_text("\n".join(lines + ["r: RESTRAINT ARG=ml.node-0 AT=0.2 KAPPA=100"]) + "\n")
    res = subprocess.run([sys.executable, "-c", _PYTORCH_SCRIPT, "plumed.dat", repr(pos),
                          repr(convert(1.0, "eV", "kJ/mol"))], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    log = (tmp_path / "log").read_text() if (tmp_path / "log").exists() else ""
    if res.returncode != 0 and 'Action "PYTORCH_MODEL" is not known' in res.stderr + log:
        pytest.skip("this PLUMED kernel has no PYTORCH_MODEL (build PLUMED with --enable-libtorch)")
    assert res.returncode == 0, res.stderr[-2000:] + log[-2000:]
    out = res.stdout.strip().splitlines()
    bias, forces = float(out[-2]), np.array(eval(out[-1]))
    native = RESTRAINT(DISTANCE([0, 2]), at=2.0, kappa=100 * KJ / 100)
    e_ref, f_ref = native.energy_and_forces(s)
    # float32 inside the model: relative precision ~1e-7 on d, so ~1e-6 relative on the bias and forces
    assert bias == pytest.approx(float(e_ref[0]), rel=1e-5)
    np.testing.assert_allclose(forces, f_ref.numpy(), rtol=1e-4, atol=1e-6)


@needs_kernel
def test_plumed_sum_hills_tool_equals_fesurf_sum_hills(tmp_path):
    # a fesurf-driven well-tempered METAD run through the kernel writes HILLS; the `plumed sum_hills` tool of
    # the same install and fesurf's sum_hills must give the same FES on the same grid
    import subprocess

    from fesurf.plumed import plumed_tool

    pot, _, s0 = _double_well_setup(1)
    s0 = s0.replace(positions=s0.positions * 0 + torch.tensor([-10.0, 0.0, 0.0], dtype=torch.float64))
    metad = ("p: POSITION ATOM=1 NOPBC\n"
             "mtd: METAD ARG=p.x SIGMA=0.1 HEIGHT=1.2 PACE=50 BIASFACTOR=8 FILE=HILLS.{replica}\n")
    bias = PlumedBias(metad, timestep=5.0, temperature=300.0, work_dir=tmp_path)
    md = Langevin(Sum([pot, bias]), timestep=5.0, temperature=300.0, friction=0.005, seed=5, max_energy_change=10.0)
    try:
        md.run(s0, 4000)
    finally:
        bias.close()
    exe, env = plumed_tool()
    res = subprocess.run([exe, "sum_hills", "--hills", "HILLS.0", "--min", "-1.5", "--max", "1.5", "--bin", "300",
                          "--outfile", "fes.dat"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    table = read_colvar(tmp_path / "fes.dat")
    grid = np.asarray(table["p.x"])
    assert grid.size == 301 and grid[0] == pytest.approx(-1.5) and grid[-1] == pytest.approx(1.5)
    h = read_hills(tmp_path / "HILLS.0")
    assert h.n_hills == 4000 // 50
    ours = sum_hills(h, grid=[grid]).values
    theirs = np.asarray(table["file.free"])
    # both are -gamma/(gamma-1) V on the same points; PLUMED prints %f-ish precision (1e-6 kJ/mol here):
    # compare after removing each one's constant
    np.testing.assert_allclose(theirs - theirs.min(), ours - ours.min(), atol=1e-5)
