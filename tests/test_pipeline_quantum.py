"""The pipeline on ring polymers: [pimd] beads and [isotopes] substitute run the whole route on quantum
nuclei, correct bead-wise, and report the kinetic isotope effect."""
import json

import pytest

QUANTUM = """
[run]
output = "{out}"
seed = 2
[system]
structure = "builtin:malonaldehyde"
[surrogate]
model = "builtin:malonaldehyde_committee"
[cv]
type = "distance_difference"
pairs = [[0, 5], [4, 5]]
[umbrella]
range = [-0.8, 0.8]
n_windows = 8
kappa = 3.0
timestep = 0.25
n_equilibration = 200
n_production = 1200
stride = 10
checkpoint_every = 200
[pimd]
beads = 4
tau_centroid = 50.0
[isotopes]
substitute = [[5, "D"]]
[pmf]
bins = 10
range = [-0.7, 0.7]
[reweight]
n_labels = 70
"""


def test_quantum_pipeline_with_isotopes_reports_a_kie(tmp_path):
    from fesurf.pipeline import run_pipeline
    from fesurf.sampling import SampleSet

    cfg = tmp_path / "q.toml"
    cfg.write_text(QUANTUM.format(out=tmp_path / "run"))
    r = run_pipeline(cfg)
    out = tmp_path / "run"
    stages = json.loads((out / "stages.json").read_text())
    for name in ("sample", "qm", "reweight", "sample_heavy", "qm_heavy", "reweight_heavy", "analysis"):
        assert name in stages
    # bead-wise correction: P reference calls per labelled frame, for each isotopologue
    assert r["qm_calls"]["sparse_labels"] == 4 * 70 and r["qm_calls"]["sparse_labels_heavy"] == 4 * 70
    assert r["pimd"]["beads"] == 4
    with SampleSet.open(out / "samples_heavy.h5") as heavy, SampleSet.open(out / "samples.h5") as light:
        assert heavy.attrs["n_beads"] == 4 and light.attrs["n_beads"] == 4
        # the heavy branch carries the deuterium mass on atom 5, the light one the proton's
        assert heavy.attrs["masses_amu"][5] == pytest.approx(2.0141, abs=1e-3)
        assert light.attrs["masses_amu"][5] == pytest.approx(1.0078, abs=1e-3)
    kie = r["kie"]
    assert kie["kie"] > 0 and kie["kie_sigma"] > 0 and kie["effective_mass_heavy_amu"] > kie["effective_mass_light_amu"]
    # the centroid-velocity factor alone is sqrt(m_s,D / m_s,H) (between 1 and sqrt(2))
    assert 1.0 < kie["prefactor_ratio"] < 2 ** 0.5 + 1e-9
    for name in ("pmf_corrected.csv", "pmf_corrected_heavy.csv", "samples_heavy.h5", "qm_labels_heavy.npz"):
        assert (out / name).exists()
