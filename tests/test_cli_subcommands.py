"""The CLI subcommands of issue 19: report, export, analyze hills, validate-md (and the demo alias), --help examples."""
import argparse
import json

import numpy as np
import pytest

from fesurf.cli import build_parser, main
from fesurf.units import kT

T = 300.0
SLOPE = 0.01  # eV/A: the synthetic reference differs from the surrogate by dU = SLOPE * (d - 1.3 A)


def _walk(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,), sub
                yield from _walk(sub, prefix + (name,))


def test_every_subcommand_has_help_with_an_example():
    commands = dict(_walk(build_parser()))
    for needed in (("report",), ("export",), ("analyze", "hills"), ("validate-md",), ("demo",), ("run",)):
        assert needed in commands
    for name, parser in commands.items():
        text = parser.format_help()
        assert "example" in text.lower() and "fesurf " in text.split("xample", 1)[1], f"{' '.join(name)}: no example"


def test_demo_is_a_deprecated_alias_of_validate_md(monkeypatch, capsys):
    import fesurf.md.report as md_report

    ran = []
    monkeypatch.setattr(md_report, "_run_demo", lambda args: (ran.append(args.quick), (0, "MD validation report"))[1])
    assert main(["validate-md", "--quick"]) == 0
    assert main(["demo", "--quick"]) == 0
    out = capsys.readouterr()
    assert ran == [True, True] and out.out.count("MD validation report") == 2
    assert "deprecated" in out.err and "validate-md" in out.err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A small run folder: 8 umbrella windows along an O-H distance, the surrogate PMF, reference labels with
    a known dU, stages.json and a label store (as the pipeline leaves them)."""
    from fesurf.cv import DISTANCE
    from fesurf.estimators import compute_pmf
    from fesurf.estimators.reweight import choose_frames
    from fesurf.oracles.base import Label
    from fesurf.oracles.store import LabelStore
    from fesurf.potentials import Harmonic
    from fesurf.sampling.umbrella import umbrella_sampling
    from fesurf.state import State

    d = tmp_path_factory.mktemp("run")
    start = State(positions=[[0.0, 0, 0], [1.0, 0, 0]], atomic_numbers=[8, 1])
    ss = umbrella_sampling(Harmonic(k=0.5), start, DISTANCE([0, 1]), centers=np.linspace(0.9, 1.7, 8), kappa=3.0,
                           temperature=T, timestep=1.0, seed=0, n_equilibration=200, n_production=3000, stride=10,
                           store_positions=True, check_overlap=False, path=str(d / "samples.h5"))
    edges = np.linspace(1.0, 1.6, 16)
    compute_pmf(ss, bins=edges, unit="kcal/mol", warn=False).to_csv(d / "pmf_surrogate.csv")
    frames, pi = choose_frames(ss, 240, bins=edges, seed=1)
    order = np.argsort(frames)
    frames, pi = frames[order], pi[order]
    du = SLOPE * (ss.cv[frames, 0] - 1.3)
    np.savez(d / "qm_labels.npz", frames=frames, delta_u=du, inclusion_probability=pi, qm_calls=np.array(frames.size),
             failed_frames=np.zeros(0, np.int64))
    store = LabelStore(d / "qm_cache")
    store.put("k0", Label(numbers=np.array([8, 1]), positions=ss.read_positions([0])[0], charge=0.0, multiplicity=2,
                          method="ref", ok=True, energy=0.0, forces=np.zeros((2, 3))))
    (d / "stages.json").write_text(json.dumps({"sample": {"hash": "x", "seconds": 1.5}}))
    ss.close()
    return d


def test_report_of_a_run_folder_writes_plots_and_per_bin_diagnostics(run_dir, capsys):
    import pandas as pd

    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "frames: 2400 in 8 windows" in out and "CV: d(O–H) (Å)" in out and "reference labels: 240" in out
    for name in ("overlap.png", "histograms.png", "convergence.png", "reweight_bins.png", "reweight_bins.csv",
                 "report.json"):
        assert (run_dir / name).stat().st_size > 0, name
    df = pd.read_csv(run_dir / "reweight_bins.csv")
    assert len(df) == 15 and df.columns[0] == "DISTANCE(0,1)" and "flagged" in df.columns
    # dU depends on the CV only, so the corrected PMF is the surrogate's plus dU(bin centre) up to a constant:
    # within a 0.04 A bin dU varies by 4e-4 eV (0.016 kT), far below the 0.1 kT allowed
    diff = (df["pmf_corrected_kcal/mol"] - df["pmf_surrogate_kcal/mol"]).to_numpy()
    expect = SLOPE * (df["DISTANCE(0,1)"].to_numpy() - 1.3) / kT(T)  # kT
    from fesurf.units import convert

    diff_kt = diff * float(convert(1.0, "kcal/mol", "kT", temperature=T))
    ok = np.isfinite(diff_kt) & ~df["flagged"].to_numpy()
    assert ok.sum() >= 12
    resid = (diff_kt - expect)[ok]
    assert np.abs(resid - resid.mean()).max() < 0.1
    report = json.loads((run_dir / "report.json").read_text())
    assert report["n_frames"] == 2400 and report["reweight"]["n_labels"] == 240
    assert 0 < report["min_neighbour_overlap"] < 1


def test_report_of_a_partial_run_and_of_a_folder_that_is_not_a_run(run_dir, tmp_path, capsys):
    import shutil

    part = tmp_path / "partial"
    part.mkdir()
    shutil.copy(run_dir / "samples.h5", part / "samples.h5")
    (part / "stages.json").write_text("{}")
    assert main(["report", str(part)]) == 0
    out = capsys.readouterr().out
    assert "frames: 2400" in out and "CV: d(0–1) (Å)" in out  # no label store here: atoms by index
    assert (part / "histograms.png").exists() and not (part / "reweight_bins.png").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fesurf: error:") and "run folder" in err[0]


def test_export_of_a_run_folder_is_read_by_ase(run_dir, tmp_path, capsys):
    import ase.io

    from fesurf.sampling import SampleSet

    assert main(["export", str(run_dir), "--format", "traj", "--every", "5", "--output", str(tmp_path / "f.traj")]) == 0
    assert "wrote 480 frames" in capsys.readouterr().out
    frames = ase.io.read(tmp_path / "f.traj", ":")
    ss = SampleSet.open(run_dir / "samples.h5")
    first = np.where(ss.state_index == 0)[0][0]
    assert frames[0].get_chemical_symbols() == ["O", "H"]
    np.testing.assert_allclose(frames[0].positions, ss.read_positions([first])[0], atol=1e-12)
    assert frames[0].get_potential_energy() == pytest.approx(ss.u_ref[first] * kT(T), abs=1e-10)
    ss.close()
    (tmp_path / "bare").mkdir()
    import shutil

    shutil.copy(run_dir / "samples.h5", tmp_path / "bare" / "samples.h5")
    assert main(["export", str(tmp_path / "bare")]) == 2
    assert "--structure" in capsys.readouterr().err
    from ase import Atoms

    ase.io.write(tmp_path / "oh.xyz", Atoms("OH", positions=[[0, 0, 0], [1, 0, 0]]))
    assert main(["export", str(tmp_path / "bare"), "--structure", str(tmp_path / "oh.xyz")]) == 0
    assert len(ase.io.read(tmp_path / "bare" / "frames.extxyz", ":")) == 2400


def test_analyze_hills_gives_the_library_fes_and_the_double_well(tmp_path, capsys):
    import pandas as pd

    from fesurf.plumed import reweight_metad, sum_hills
    from plumed_data import DATA, exact_pmf

    hills = DATA / "metad" / "HILLS"
    assert main(["analyze", "hills", str(hills), "--temperature", "300", "--bins", "53", "--range", "-1.3", "1.3",
                 "--output", str(tmp_path / "fes.csv")]) == 0
    capsys.readouterr()
    df = pd.read_csv(tmp_path / "fes.csv", comment="#")
    lib = sum_hills(hills, bins=53, range=(-1.3, 1.3), temperature=300.0)
    np.testing.assert_array_equal(df["value_kJ/mol"].to_numpy(), lib.values)
    # the well-tempered bias fluctuates by about a hill height around -F: RMS < 0.3 kT (tests/test_plumed_analysis)
    kt = 2.494  # kJ/mol at 300 K
    d = df["value_kJ/mol"].to_numpy() - exact_pmf(df["p.x"].to_numpy())
    assert np.sqrt(np.mean((d - d.mean()) ** 2)) < 0.3 * kt
    assert main(["analyze", "hills", str(hills), "--temperature", "300", "--colvar", str(DATA / "metad" / "COLVAR"),
                 "--bins", "26", "--range", "-1.3", "1.3", "--skip-time", "100", "--unit", "kT"]) == 0
    text = capsys.readouterr().out
    rw = reweight_metad(DATA / "metad" / "COLVAR", hills, 300.0, "p.x", bins=26, range=(-1.3, 1.3), skip_time=100.0)
    rw.temperature = rw.temperature or 300.0
    got = [float(line.split(",")[1]) for line in text.splitlines()[2:]]
    np.testing.assert_allclose(got, rw.to("kT").values, rtol=1e-12, atol=1e-12)
    assert main(["analyze", "hills", str(hills), "--temperature", "300", "--cv-field", "p.x"]) == 2
