"""The pipeline's exact-sampling route, [sampling] method = "hybrid_mc": the stored GFN1-xTB committee proposes,
GFN2-xTB (the run's [oracle]) accepts. Tiny settings (8 windows x 50 moves); the barrier against the direct GFN2
reference is benchmarks/hybrid_mc.py's job. Checked exactly: the route skips the labelling and reweighting stages,
the reference calls are counted one per window per move plus the start, the PMF written is the MBAR PMF of the
reference-level samples, and a rerun recomputes nothing."""
import json

import numpy as np
import pytest

from fesurf.config import load_config
from fesurf.errors import InputError

pytest.importorskip("tblite")

TINY = {
    "run": {"output": "", "temperature": 300.0, "seed": 2, "workers": 1},
    "system": {"structure": "builtin:malonaldehyde"},
    "oracle": {"method": "GFN2-xTB"},
    "surrogate": {"model": "builtin:malonaldehyde_gfn1_committee"},
    "cv": {"type": "distance_difference", "pairs": [[0, 5], [4, 5]]},
    "umbrella": {"range": [-0.7, 0.7], "n_windows": 8, "kappa": 3.0},
    "sampling": {"method": "hybrid_mc"},
    "hybrid_mc": {"timestep": 0.5, "n_steps": 8, "n_equilibration": 10, "n_production": 40, "stride": 2,
                  "checkpoint_every": 25},
    "pmf": {"bins": 8, "range": [-0.6, 0.6]},
    "analysis": {"unit": "kcal/mol"},
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # 20 frames a window: the PMF's sample-size warnings are expected
def test_hybrid_mc_route_samples_the_reference_and_skips_reweighting(tmp_path):
    from fesurf.estimators import compute_pmf
    from fesurf.pipeline import format_results, route, run_pipeline
    from fesurf.sampling import SampleSet

    cfg = json.loads(json.dumps(TINY))
    cfg["run"]["output"] = str(tmp_path / "run")
    names = [s.name for s in route(load_config(cfg))]
    assert names == ["surrogate", "sample_hybrid_mc", "analysis"]
    res = run_pipeline(cfg)
    out = tmp_path / "run"
    assert res["sampling"] == "hybrid_mc" and res["corrected"] == res["reference"]
    # one GFN2 call per window at the start, then one per move (md proposals, no delayed acceptance)
    assert res["qm_calls"]["hybrid_mc"] == 8 * (1 + 10 + 40) and res["qm_calls"]["sparse_labels"] == 0
    assert res["qm_calls"]["total"] == res["qm_calls"]["hybrid_mc"]  # a stored surrogate: no training calls
    assert res["qm_calls"]["stored_model"] == 0  # the committee was trained at GFN1, not at the reference level
    h = res["hybrid_mc"]
    assert h["reference"] == "tblite:GFN2-xTB" and len(h["acceptance"]) == 8 and 0 < h["acceptance_median"] <= 1
    assert np.all(np.isfinite(h["beta_sigma"]))
    stages = json.loads((out / "stages.json").read_text())
    assert stages["sample_hybrid_mc"]["qm_calls"] == res["qm_calls"]["hybrid_mc"]
    assert not any(s in stages for s in ("sample", "qm", "reweight"))  # no labelling or reweighting stage ran
    with SampleSet.open(out / "samples_hybrid_mc.h5") as ss:
        assert ss.attrs["energy_level"] == "reference" and ss.N_k.tolist() == [20] * 8
        # the PMF on disk is MBAR on the reference-level u_kn, with no reweighting step
        pmf = compute_pmf(ss, bins=8, range=(-0.6, 0.6), warn=False).to("kcal/mol")
    table = np.loadtxt(out / "pmf_reference.csv", delimiter=",", skiprows=2)  # CV, F, sigma (kcal/mol)
    np.testing.assert_allclose(table[:, 1], pmf.values, rtol=0, atol=1e-9)
    assert 0 < res["reference"]["activation"] < 10
    for name in ("pmf.png", "fesurf.log", "results.json"):
        assert (out / name).exists()
    text = format_results(res)
    assert "reference barrier:" in text and f"{res['qm_calls']['hybrid_mc']} by the chains" in text
    # a rerun reuses the finished chains: the same numbers, no new reference calls
    again = run_pipeline(cfg)
    assert again["reference"] == res["reference"] and again["qm_calls"] == res["qm_calls"]


def test_hybrid_mc_config_is_checked():
    cfg = json.loads(json.dumps(TINY))
    cfg["run"]["output"] = "x"
    assert load_config(cfg)["hybrid_mc"]["proposal"] == "md"
    for section, key, value, match in (("sampling", "method", "exact", "sampling.method"),
                                       ("hybrid_mc", "n_steps", 0, "hybrid_mc.n_steps"),
                                       ("hybrid_mc", "stride", 50, "no frame would be recorded"),
                                       ("hybrid_mc", "max_steps", 4, "exceeds"),
                                       ("hybrid_mc", "correction", "linear", "n_equilibration"),
                                       ("pimd", "beads", 4, "classical nuclei")):
        bad = json.loads(json.dumps(cfg))
        bad.setdefault(section, {})[key] = value
        with pytest.raises(InputError, match=match):
            load_config(bad)
