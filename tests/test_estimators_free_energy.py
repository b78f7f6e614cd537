"""FreeEnergy (units, export, display), convergence, diagnostics warnings and plots."""
import json
import warnings

import numpy as np
import pytest
from ase import units as ase_units

from fesurf.errors import InputError
from fesurf.estimators import (CorrelationWarning, EquilibrationWarning, FreeEnergy, compute_pmf, convergence,
                               delta_f, plot_overlap, plot_window_histograms, prepare)
from fesurf.sampling import SampleSet

T = 300.0


def test_unit_conversion_round_trips():
    fe = FreeEnergy(2.0, 0.25, unit="kT", temperature=T, method="MBAR")
    kT_ev = ase_units.kB * T  # exact definitions: kT in eV, 1 eV in kJ/mol and kcal/mol from ase.units
    assert fe.to("eV").value == pytest.approx(2.0 * kT_ev, rel=1e-14)
    assert fe.to("kJ/mol").value == pytest.approx(2.0 * kT_ev * ase_units.mol / ase_units.kJ, rel=1e-14)
    assert fe.to("kcal/mol").error == pytest.approx(0.25 * kT_ev * ase_units.mol / ase_units.kcal, rel=1e-14)
    assert fe.to("kJ/mol").value / fe.to("kcal/mol").value == pytest.approx(4.184, rel=1e-12)
    for path in (("eV", "kcal/mol", "kT"), ("kJ/mol", "meV", "eV", "kT")):
        out = fe
        for u in path:
            out = out.to(u)
        assert out.unit == "kT" and out.value == pytest.approx(2.0, rel=1e-14) and out.error == pytest.approx(0.25)
    with pytest.raises(InputError, match="unknown unit"):
        fe.to("hartree")
    with pytest.raises(InputError, match="temperature"):
        FreeEnergy(1.0, unit="kT").to("eV")
    with pytest.raises(InputError, match="profile"):
        FreeEnergy(np.zeros(3)).value


def test_scalar_and_profile_export(tmp_path):
    fe = FreeEnergy(1.5, 0.1, unit="kcal/mol", temperature=T, method="BAR", diagnostics={"kish_ess": np.array([3.0])})
    assert str(fe) == "ΔA = 1.500 ± 0.100 kcal/mol (T = 300 K, BAR)"
    assert "FreeEnergy" in repr(fe)
    back = FreeEnergy.from_json(fe.to_json(tmp_path / "fe.json"))
    assert back.value == 1.5 and back.error == 0.1 and back.unit == "kcal/mol" and back.method == "BAR"
    assert FreeEnergy.from_json(str(tmp_path / "fe.json")).diagnostics == {"kish_ess": [3.0]}

    grid = [np.linspace(0.0, 1.0, 3), np.array([-1.0, 1.0])]
    vals = np.array([[0.0, 1.0], [2.0, np.nan], [3.0, 4.0]])
    pmf = FreeEnergy(vals, 0.1 * np.nan_to_num(vals), unit="kT", temperature=T, grid=grid, cv_names=["a", "b"],
                     method="MBAR-histogram")
    text = pmf.to_csv(tmp_path / "pmf.csv")
    rows = [line.split(",") for line in text.splitlines()[2:]]
    assert text.splitlines()[1] == "a,b,value_kT,sigma_kT" and len(rows) == 6
    assert [float(v) for v in rows[1]] == [0.0, 1.0, 1.0, 0.1]  # C order: a varies slowest
    assert rows[3][2] == "nan"
    df = pmf.to_dataframe()
    assert list(df.columns) == ["a", "b", "value_kT", "sigma_kT"] and df["value_kT"].isna().sum() == 1
    js = json.loads(pmf.to_json())
    assert js["values"][1][1] is None  # NaN (no data) is null in JSON, never a fake number
    back = FreeEnergy.from_json(pmf.to_json())
    np.testing.assert_array_equal(back.values, vals)
    assert "PMF over a[3] x b[2]" in str(pmf) and "5/6 points" in str(pmf)
    assert "<table" in pmf._repr_html_()
    with pytest.raises(InputError, match="grid"):
        FreeEnergy(np.zeros(4), grid=[np.zeros(3)])


def _umbrella(n, rng, correlated=False, drift=False):
    centres = np.array([-1.0, 0.0, 1.0])
    kappa = 4.0
    x = []
    for c in centres:  # harmonic U = x^2/2 plus bias: each window is Gaussian, var 1/(1 + kappa)
        mean, sd = kappa * c / (1 + kappa), 1 / np.sqrt(1 + kappa)
        if correlated:  # AR(1) with correlation 0.98 per frame: statistical inefficiency ~ 99
            e = np.empty(n)
            e[0] = rng.normal()
            for t in range(1, n):
                e[t] = 0.98 * e[t - 1] + np.sqrt(1 - 0.98**2) * rng.normal()
            x.append(mean + sd * e)
        else:
            x.append(mean + sd * rng.normal(size=n) + (np.linspace(3, 0, n) ** 4 * sd if drift else 0))
    x = np.concatenate(x)
    return SampleSet.from_arrays(state_index=np.repeat([0, 1, 2], n),
                                 u_kn=0.5 * kappa * (x[None] - centres[:, None]) ** 2,
                                 u_ref=0.5 * x**2, cv=x, temperature=T)


def test_decorrelation_and_equilibration_warnings():
    rng = np.random.default_rng(5)
    with pytest.warns(CorrelationWarning, match="statistically independent"):
        prep = prepare(_umbrella(1000, rng, correlated=True), equilibrate=False)
    # AR(1) with phi = 0.98 has g = (1 + phi) / (1 - phi) = 99 for x and ~50 for the bias energy (x - c)^2
    # (correlation phi^2); estimated from 1000 frames it is noisy, hence the wide bounds.
    assert np.all((prep.g_k > 15) & (prep.g_k < 300)) and np.all(prep.N_k < 50)
    drifting = _umbrella(400, rng, drift=True)
    with pytest.warns(EquilibrationWarning, match="discarded"):
        prep = prepare(drifting, equilibration_fraction=0.2)
    assert np.all(prep.t0_k > 0)
    with warnings.catch_warnings():  # the same samples prepared again (estimators do): warned once only
        warnings.simplefilter("error")
        prepare(drifting, equilibration_fraction=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prep = prepare(_umbrella(400, rng))  # iid and well-behaved: silent
    assert np.all(prep.N_k > 300)


def test_convergence_and_plots(tmp_path):
    rng = np.random.default_rng(8)
    ss = _umbrella(600, rng)
    conv = convergence(ss, fractions=[0.25, 0.5, 1.0], to_state=2)
    full = delta_f(ss, to_state=2)
    assert conv.forward[-1].value == pytest.approx(full.value) and conv.reverse[-1].value == pytest.approx(full.value)
    # errors shrink roughly as 1/sqrt(fraction): 4x the data halves σ (±25% for the estimate's own noise)
    ratio = conv.errors()[0] / conv.errors()[-1]
    assert 1.5 < ratio < 2.5
    df = conv.to_dataframe()
    assert list(df["fraction"]) == [0.25, 0.5, 1.0]
    conv.plot(path=tmp_path / "conv.png")
    pmf = compute_pmf(ss, cv=0, bins=15, range=(-1.5, 1.5))
    pmf.plot(path=tmp_path / "pmf.png")
    plot_overlap(pmf, path=tmp_path / "overlap.png")
    plot_window_histograms(ss, cv=0, path=tmp_path / "hist.png")
    pconv = convergence(ss, compute_pmf, fractions=[0.5, 1.0], cv=0, bins=15, range=(-1.5, 1.5))
    assert pconv.values().shape == (2, 15)
    pconv.plot(path=tmp_path / "pconv.png")
    for name in ("conv", "pmf", "overlap", "hist", "pconv"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(InputError, match="fractions"):
        convergence(ss, fractions=[0.0, 1.0])
