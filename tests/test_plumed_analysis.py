"""Analysis of PLUMED runs made elsewhere: MBAR PMF from umbrella COLVARs, sum_hills, METAD reweighting, CLI.

All compared with the exact PMF of the sampled model, F(x) = 5 (x^2 - 1)^2 kJ/mol (see plumed_data.py).
"""
import argparse
import json

import numpy as np
import pytest
import torch
from ase import units

from fesurf.bias import RESTRAINT
from fesurf.cv import POSITION
from fesurf.errors import InputError
from fesurf.estimators import compute_pmf
from fesurf.md import Langevin, maxwell_boltzmann
from fesurf.plumed import read_windows_table, reweight_metad, sampleset_from_colvar, sum_hills
from fesurf.plumed.cli import register
from fesurf.potentials import DoubleWell1D, Sum
from fesurf.sampling.sampleset import SampleSet
from fesurf.state import State
from fesurf.units import convert
from plumed_data import DATA, exact_bin_pmf, exact_pmf

KT = units.kB * 300.0 * units.mol / units.kJ  # kJ/mol
EDGES = np.linspace(-1.5, 1.5, 16)  # 15 bins of 0.2 nm, centres at -1.4 ... 1.4 (one at the barrier top)


@pytest.fixture(scope="module")
def plumed_umbrella_pmf():
    w = read_windows_table(DATA / "umbrella" / "windows.dat")
    ss = sampleset_from_colvar(w["colvar_files"], w["at"], w["kappa"], 300.0, cv_fields=["p.x"])
    return ss, compute_pmf(ss, bins=EDGES, unit="kJ/mol")


def _z_vs_exact(pmf):
    """|F_i - (F_exact,i - F_exact,ref)| / sigma_i, the reference being the bin where sigma = 0 (the minimum)."""
    ex = exact_bin_pmf(EDGES)
    ref = int(np.nanargmin(pmf.values))
    ok = pmf.uncertainties > 0
    return np.abs(pmf.values - (ex - ex[ref]))[ok] / pmf.uncertainties[ok]


def test_sampleset_from_plumed_umbrella_windows(plumed_umbrella_pmf):
    ss, _ = plumed_umbrella_pmf
    assert ss.n_states == 13 and ss.N_k.tolist() == [3001] * 13
    # u_kn is the restraint of window k in kT: window 0 (AT=-1.5, KAPPA=200) at its own frames equals the
    # printed r.bias / kT (printed with 8 decimals)
    from fesurf.plumed import read_colvar
    c = read_colvar(DATA / "umbrella" / "COLVAR.0")
    np.testing.assert_allclose(ss.u_kn[0, :3001] * KT, c["r.bias"], atol=2e-6)
    np.testing.assert_array_equal(ss.u_ref, 0.0)


def test_mbar_pmf_from_plumed_colvars_matches_exact_pmf(plumed_umbrella_pmf):
    # Basis: the exact bin-averaged PMF. sigma_i is pymbar's analytical 1-sigma of F_i - F_min after
    # decorrelation (statistical inefficiency per window), so |z| < 4 in all 14 bins fails by chance with
    # probability ~1e-3 if the estimate is unbiased.
    _, pmf = plumed_umbrella_pmf
    assert np.isfinite(pmf.values).all()
    z = _z_vs_exact(pmf)
    assert z.max() < 4.0, z
    barrier = pmf.values[7] - pmf.values[[2, 12]].min()  # bin at 0 minus the lower well bin
    assert barrier == pytest.approx(5.0, abs=4 * pmf.uncertainties[7] + 0.3)  # 0.3: bin averaging at x=+-1


def test_plumed_pmf_matches_fesurf_native_umbrella_of_the_same_model(plumed_umbrella_pmf):
    # fesurf's own umbrella sampling of the same model and windows (MD engine + native RESTRAINT), same units
    # conversions as the PLUMED run: 1 nm = 10 A, energies kJ/mol -> eV, dt 5 fs, friction 5/ps.
    kj = convert(1.0, "kJ/mol", "eV")
    pot = DoubleWell1D(barrier=5 * kj, x0=10.0, confine=50 * kj / 100)
    at = np.linspace(-15.0, 15.0, 13)
    bias = RESTRAINT(POSITION(0, "x"), at=at, kappa=200 * kj / 100)
    s = State(positions=np.c_[at, np.zeros(13), np.zeros(13)], atomic_numbers=[1] * 13, masses=[1.0] * 13,
              system_index=list(range(13)))
    md = Langevin(Sum([pot, bias]), timestep=5.0, temperature=300.0, friction=0.005, seed=11)

    class Rec:
        stride = 10

        def __init__(self):
            self.x = []

        def report(self, step, state, info):
            if step >= 1000:
                self.x.append(state.positions[:, 0].numpy().copy())

    rec = Rec()
    md.run(maxwell_boltzmann(s, 300.0, seed=12), 16000, reporters=[rec])
    x = np.array(rec.x).T.reshape(-1)
    u = bias.window_energies(torch.tensor(x)[:, None]).numpy() / (units.kB * 300.0)
    native = SampleSet.from_arrays(state_index=np.repeat(np.arange(13), len(rec.x)), u_kn=u, temperature=300.0,
                                   cv=x / 10.0, u_ref=np.zeros(x.size))
    pmf_native = compute_pmf(native, bins=EDGES, unit="kJ/mol")
    assert _z_vs_exact(pmf_native).max() < 4.0
    # the two estimates agree within their combined error. Both are relative to the minimum bin r of the
    # PLUMED-file PMF; the native sigma_i is relative to its own minimum, so sigma of F2_i - F2_r is bounded
    # by sigma2_i + sigma2_r. |d_i| < 3 * combined sigma in every bin.
    _, pmf = plumed_umbrella_pmf
    r = int(np.nanargmin(pmf.values))
    d = pmf.values - (pmf_native.values - pmf_native.values[r])
    sig = np.sqrt(pmf.uncertainties**2 + (pmf_native.uncertainties + pmf_native.uncertainties[r]) ** 2)
    keep = np.arange(d.size) != r
    assert np.all(np.abs(d[keep]) < 3 * sig[keep]), (d, sig)


def test_window_table_that_does_not_match_the_runs_is_refused():
    w = read_windows_table(DATA / "umbrella" / "windows.dat")
    with pytest.raises(InputError, match="differs from the printed r.bias"):
        sampleset_from_colvar(w["colvar_files"][::-1], w["at"], w["kappa"], 300.0)
    with pytest.raises(InputError, match="no field 'q'"):
        sampleset_from_colvar(w["colvar_files"][:2], w["at"][:2], w["kappa"][:2], 300.0, cv_fields=["q"])


def test_sum_hills_reproduces_the_double_well():
    # Well-tempered METAD (gamma = 8, 2000 hills): F = -sum(stored heights). Not a purely statistical error:
    # the final bias still fluctuates by about a hill height (<= 1.14 kJ/mol, 0.46 kT) around -F (1-1/gamma),
    # so we require RMS < 0.3 kT and max < 0.6 kT over the sampled range |x| <= 1.3 nm.
    fes = sum_hills(DATA / "metad" / "HILLS", grid=[np.linspace(-1.3, 1.3, 53)], temperature=300.0)
    x = fes.grid[0]
    d = fes.values - exact_pmf(x)
    d -= d.mean()
    assert np.sqrt(np.mean(d**2)) < 0.3 * KT and np.abs(d).max() < 0.6 * KT


def test_metad_reweighting_reproduces_the_double_well():
    # c(t) reweighting of the COLVAR frames after the first 100 ps (3600 frames, Kish ESS ~ 2300).
    # The block error per 0.1 nm bin is ~0.3 kJ/mol (0.12 kT); RMS over the 26 bins < 0.25 kT is ~2 sigma.
    fes = reweight_metad(DATA / "metad" / "COLVAR", DATA / "metad" / "HILLS", 300.0, "p.x",
                         bins=np.linspace(-1.3, 1.3, 27), skip_time=100.0)
    x = fes.grid[0]
    d = fes.values - exact_pmf(x)
    assert np.isfinite(d).all()
    d -= d.mean()
    assert np.sqrt(np.mean(d**2)) < 0.25 * KT and np.abs(d).max() < 0.5 * KT
    assert fes.diagnostics["kish_ess"] > 1000
    assert np.all(fes.uncertainties > 0)


def _parser():
    p = argparse.ArgumentParser(prog="fesurf")
    register(p.add_subparsers(dest="command"))
    return p


def test_cli_analyze_colvar_from_table_and_from_inputs(tmp_path, capsys):
    out = tmp_path / "pmf.json"
    from fesurf.cli import main

    assert main(["analyze", "colvar", "--windows", str(DATA / "umbrella" / "windows.dat"), "--temperature", "300",
                 "--bins", "15", "--range", "-1.5", "1.5", "--output", str(out)]) == 0
    pmf = json.loads(out.read_text())
    assert "p.x" in capsys.readouterr().out
    inputs = [str(DATA / "umbrella" / f"plumed.{k}.dat") for k in range(13)]
    assert main(["analyze", "colvar", "--inputs", *inputs, "--temperature", "300", "--bins", "15",
                 "--range", "-1.5", "1.5", "--output", str(tmp_path / "p.csv")]) == 0
    text = (tmp_path / "p.csv").read_text().splitlines()
    vals = [float(r.split(",")[1]) for r in text if r and not r.startswith("#") and not r.startswith("p.x")]
    np.testing.assert_allclose(vals, pmf["values"], rtol=1e-10, atol=1e-10)
    ex = exact_bin_pmf(EDGES)
    assert vals[7] - min(vals) == pytest.approx(ex[7] - ex.min(), abs=1.5)  # 1.5 kJ/mol: ~3 sigma at 0


def test_cli_plumed_input_writes_windows_that_parse_back(tmp_path, capsys):
    from fesurf.cli import main

    assert main(["plumed-input", "--cv", '{"type": "DISTANCE", "atoms": [0, 1]}', "--cv",
                 '{"type": "TORSION", "atoms": [0, 1, 2, 3]}', "--at", "1.0,0.5", "1.5,0.5", "--kappa", "4.0,0.3",
                 "--out", str(tmp_path)]) == 0
    assert "wrote 2 PLUMED inputs" in capsys.readouterr().out
    from fesurf.plumed import read_window_input
    w = read_window_input(str(tmp_path / "plumed.1.dat"))
    assert w["at"] == pytest.approx([1.5, 0.5], rel=1e-13) and w["kappa"] == pytest.approx([4.0, 0.3], rel=1e-13)
    bad = _parser().parse_args(["plumed-input", "--cv", '{"type": "DISTANCE", "atoms": [0, 1]}', "--at", "1,2",
                                "--kappa", "1", "--out", str(tmp_path)])
    with pytest.raises(InputError, match="2 value"):
        bad.func(bad)
