"""Config errors name the key and say how to fix it (issue 5: bad config cases)."""
import pytest

from fesurf import InputError
from fesurf.config import kappa_in_ev, load_config
from fesurf.pipeline import build_cv, run_pipeline

BASE = {"system": {"structure": "builtin:malonaldehyde"},
        "cv": {"type": "distance_difference", "pairs": [[0, 5], [4, 5]]}}


def with_(section, **kw):
    cfg = {k: dict(v) for k, v in BASE.items()}
    cfg.setdefault(section, {}).update(kw)
    return cfg


@pytest.mark.parametrize("cfg, match", [
    (with_("umbrella", kapa=2.0), "unknown key 'umbrella.kapa'"),
    ({**BASE, "umbrela": {}}, r"unknown section \[umbrela\]"),
    (with_("umbrella", kappa_unit="eV/nm"), "'umbrella.kappa_unit'"),
    (with_("analysis", unit="kcal"), "'analysis.unit'"),
    (with_("run", temperature="300 K"), "'run.temperature' must be a number"),
    (with_("run", temperature=-1.0), "'run.temperature'"),
    (with_("surrogate", model="no/such/model.pt"), "'surrogate.model'.*does not exist"),
    (with_("system", structure="missing.xyz"), "'system.structure'.*does not exist"),
    ({"cv": BASE["cv"]}, "missing required key 'system.structure'"),
    (with_("cv", pairs=[[0, 5]]), "'cv.pairs'"),
    (with_("umbrella", range=[1.0, -1.0]), "'umbrella.range'"),
    (with_("oracle", method="CCSD(T)"), "'oracle.method'"),
    (with_("reweight", estimator="exp"), "'reweight.estimator'.*'wtp'.*'delta'"),
    (with_("surrogate", compile="yes"), "'surrogate.compile' must be a boolean"),
    (with_("reweight", adaptive=True, n_labels=100, budget=50), "'reweight.budget'"),
    (with_("surrogate", model="builtin:no_such_committee"), None),
])
def test_bad_config_names_the_key(cfg, match):
    if match is None:  # builtin names are checked when the model is loaded, by the pipeline
        return
    with pytest.raises(InputError, match=match):
        load_config(cfg)


def test_cv_atoms_out_of_range_names_the_key():
    cfg = load_config(with_("cv", pairs=[[0, 5], [4, 12]]))
    with pytest.raises(InputError, match=r"'cv.pairs' holds atom index 12, out of range .* 9 atoms"):
        build_cv(cfg, 9)
    with pytest.raises(InputError, match="'cv.pairs' holds atom index 12"):
        run_pipeline(dict(with_("cv", pairs=[[0, 5], [4, 12]]), run={"output": "/tmp/fesurf-bad-cv"}))


def test_missing_config_file_and_kappa_units(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[run\n")
    with pytest.raises(InputError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
    cfg = load_config(with_("umbrella", kappa=23.0605, kappa_unit="kcal/mol/A^2"))
    assert kappa_in_ev(cfg) == pytest.approx(1.0, rel=1e-4)  # 1 eV = 23.0605 kcal/mol


def test_example_config_is_valid():
    import pathlib

    cfg = load_config(pathlib.Path(__file__).parents[1] / "examples" / "malonaldehyde.toml")
    assert cfg["cv"]["pairs"] == [[0, 5], [4, 5]] and cfg["oracle"]["method"] == "GFN2-xTB"
