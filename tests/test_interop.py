"""alchemlyb in and out, trajectory export, CSV files that pandas reads back, CV labels and units."""
import importlib.util

import numpy as np
import pytest

from fesurf.errors import InputError
from fesurf.sampling import SampleSet

needs_alchemlyb = pytest.mark.skipif(importlib.util.find_spec("alchemlyb") is None
                                     or importlib.util.find_spec("alchemtest") is None,
                                     reason="alchemlyb and alchemtest are not installed")


@pytest.fixture(scope="module")
def benzene():
    """alchemtest's GROMACS benzene Coulomb decoupling: 5 lambda windows x 4001 frames, parsed by alchemlyb."""
    pytest.importorskip("alchemtest")
    import alchemlyb
    import alchemtest.gmx
    from alchemlyb.parsing.gmx import extract_dHdl, extract_u_nk

    files = alchemtest.gmx.load_benzene()["data"]["Coulomb"]
    u_nk = alchemlyb.concat([extract_u_nk(f, T=300) for f in files])
    dhdl = alchemlyb.concat([extract_dHdl(f, T=300) for f in files])
    return u_nk, dhdl


@needs_alchemlyb
def test_fesurf_mbar_bar_and_ti_equal_alchemlyb_on_an_alchemtest_dataset(benzene):
    from alchemlyb.estimators import BAR, MBAR, TI

    from fesurf.estimators import delta_f, ti

    u_nk, dhdl = benzene
    ss = SampleSet.from_alchemlyb(u_nk, dhdl)
    assert ss.n_states == 5 and ss.N_k.tolist() == [4001] * 5 and ss.temperature == 300.0
    kw = dict(equilibrate=False, decorrelate=False)  # alchemlyb's estimators use every frame they are given
    mbar = MBAR().fit(u_nk)
    fe = delta_f(ss, "MBAR", **kw)
    assert abs(fe.value - mbar.delta_f_.iloc[0, -1]) < 1e-6  # kT; both pymbar, robust solver from BAR
    assert abs(fe.error - mbar.d_delta_f_.iloc[0, -1]) < 1e-6
    bar = BAR().fit(u_nk)
    fe_bar = delta_f(ss, "BAR", **kw)
    steps = [bar.delta_f_.iloc[k, k + 1] for k in range(4)]
    assert abs(fe_bar.value - sum(steps)) < 1e-6
    ref = TI().fit(dhdl)
    fe_ti = ti(ss, method="trapezoid", **kw)
    assert abs(fe_ti.value - ref.delta_f_.iloc[0, -1]) < 1e-6
    # errors: alchemlyb takes sem = std/sqrt(n); fesurf also divides n by the statistical inefficiency
    assert fe_ti.error >= ref.d_delta_f_.iloc[0, -1] - 1e-12


@needs_alchemlyb
def test_alchemlyb_frames_round_trip_with_reference_state_and_units(benzene):
    u_nk, dhdl = benzene
    ss = SampleSet.from_alchemlyb(u_nk, dhdl, reference_state=0.0)
    back_u, back_d = ss.to_alchemlyb()
    assert list(back_u.index.names) == ["time", "fep-lambda"] and list(back_d.columns) == ["fep"]
    assert back_u.attrs == {"temperature": 300.0, "energy_unit": "kT"}
    np.testing.assert_array_equal(back_u.to_numpy(), u_nk.to_numpy())
    np.testing.assert_array_equal(back_d.to_numpy(), dhdl.to_numpy())
    for level in range(2):
        np.testing.assert_array_equal(back_u.index.get_level_values(level).to_numpy(dtype=float),
                                      u_nk.index.get_level_values(level).to_numpy(dtype=float))
    np.testing.assert_array_equal(ss.u_ref, u_nk[0.0].to_numpy())
    # the same data in kJ/mol becomes the same reduced potentials
    from fesurf.units import convert

    kj = u_nk * float(convert(1.0, "kT", "kJ/mol", temperature=300.0))
    kj.attrs = {"temperature": 300, "energy_unit": "kJ/mol"}
    np.testing.assert_allclose(SampleSet.from_alchemlyb(kj).u_kn, ss.u_kn, rtol=1e-12, atol=1e-10)


@needs_alchemlyb
def test_a_fesurf_lambda_run_exported_to_alchemlyb_gives_fesurf_numbers_and_the_exact_answer():
    from alchemlyb.estimators import MBAR, TI

    from fesurf.estimators import delta_f, ti
    from fesurf.potentials import Harmonic
    from fesurf.sampling.ti import thermodynamic_integration
    from fesurf.state import State

    ss = thermodynamic_integration(Harmonic(k=1.0), Harmonic(k=4.0), State(positions=[[0.0, 0, 0]], atomic_numbers=[1]),
                                   n_lambdas=5, quadrature="trapezoid", temperature=300.0, n_equilibration=200,
                                   n_production=8000, stride=20, timestep=1.0, seed=3)
    u_nk, dhdl = ss.to_alchemlyb()
    assert list(u_nk.columns) == [0.0, 0.25, 0.5, 0.75, 1.0]
    t = u_nk.index.get_level_values("time").to_numpy()
    np.testing.assert_allclose(t, ss.step * ss.attrs["timestep_fs"] / 1000.0)  # ps
    kw = dict(equilibrate=False, decorrelate=False)
    assert abs(MBAR().fit(u_nk).delta_f_.iloc[0, -1] - delta_f(ss, "MBAR", **kw).value) < 1e-6
    assert abs(TI().fit(dhdl).delta_f_.iloc[0, -1] - ti(ss, method="trapezoid", **kw).value) < 1e-6
    exact = 1.5 * np.log(4.0)  # 3D harmonic, k: 1 -> 4 eV/A^2: dA = (3/2) kT ln 4
    fe = delta_f(ss, "MBAR")
    assert abs(fe.value - exact) < 4 * fe.error  # fe.error ~ 0.02 kT (measured), decorrelated frames
    back = SampleSet.from_alchemlyb(u_nk, dhdl)  # attrs differ, every frame and state is the same
    np.testing.assert_array_equal(back.u_kn, ss.u_kn)
    np.testing.assert_array_equal(back.dudl, ss.dudl)
    np.testing.assert_array_equal(back.state_index, ss.state_index)
    np.testing.assert_allclose(back.to_alchemlyb()[0].index.get_level_values("time").to_numpy(), t, rtol=1e-12)


@needs_alchemlyb
def test_umbrella_windows_and_multi_lambda_states_map_to_alchemlyb_levels():
    import pandas as pd
    from alchemlyb.estimators import MBAR

    from fesurf.estimators import delta_f

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, 500), rng.normal(0, 0.5, 500)])
    ss = SampleSet.from_arrays(state_index=np.repeat([0, 1], 500), u_kn=np.stack([0.5 * x**2, 2.0 * x**2]),
                               temperature=300.0)
    u_nk, dhdl = ss.to_alchemlyb()
    assert list(u_nk.index.names) == ["time", "state"] and dhdl is None
    mbar = MBAR().fit(u_nk)
    assert abs(mbar.delta_f_.iloc[0, 1] - delta_f(ss, "MBAR", equilibrate=False, decorrelate=False).value) < 1e-6
    # two lambda components: tuples as columns, one index level per component
    states = [(0.0, 0.0), (0.5, 0.0), (1.0, 0.0), (1.0, 1.0)]
    n = 50
    rows = pd.MultiIndex.from_tuples([(float(t), *s) for s in states for t in range(n)],
                                     names=["time", "coul-lambda", "vdw-lambda"])
    u = pd.DataFrame(rng.normal(size=(len(rows), 4)), index=rows, columns=pd.Index(states, tupleize_cols=False))
    u.attrs = {"temperature": 298.0, "energy_unit": "kT"}
    multi = SampleSet.from_alchemlyb(u)
    assert multi.state_parameters[1] == {"lambdas": {"coul-lambda": 0.5, "vdw-lambda": 0.0}}
    back, _ = multi.to_alchemlyb()
    assert list(back.index.names) == ["time", "coul-lambda", "vdw-lambda"] and list(back.columns) == states
    np.testing.assert_array_equal(back.to_numpy(), u.to_numpy())
    assert abs(MBAR().fit(back).delta_f_.iloc[0, -1] - MBAR().fit(u).delta_f_.iloc[0, -1]) < 1e-9


@needs_alchemlyb
def test_bad_alchemlyb_inputs_say_what_to_fix(benzene):
    import pandas as pd

    u_nk, dhdl = benzene
    with pytest.raises(InputError, match="u_nk and/or dHdl"):
        SampleSet.from_alchemlyb()
    with pytest.raises(InputError, match="pandas DataFrame"):
        SampleSet.from_alchemlyb(u_nk.to_numpy())
    with pytest.raises(InputError, match="indexed by"):
        SampleSet.from_alchemlyb(u_nk.reset_index(drop=True))
    bad = u_nk.copy()
    bad.iloc[3, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        SampleSet.from_alchemlyb(bad)
    with pytest.raises(InputError, match="same frames"):
        SampleSet.from_alchemlyb(u_nk, dhdl.iloc[::-1])
    two = pd.concat([dhdl, dhdl.rename(columns={"fep": "vdw"})], axis=1)
    with pytest.raises(InputError, match="lambda components"):
        SampleSet.from_alchemlyb(dHdl=two)
    no_t = u_nk.copy()
    no_t.attrs = {}
    with pytest.raises(InputError, match="temperature"):
        SampleSet.from_alchemlyb(no_t)
    with pytest.raises(InputError, match="not among the u_nk columns"):
        SampleSet.from_alchemlyb(u_nk.drop(columns=[0.5]))
    with pytest.raises(InputError, match="reference_state"):
        SampleSet.from_alchemlyb(u_nk, reference_state=0.3)


# ---------------------------------------------------------------------------------------- trajectories
def _umbrella_set():
    from fesurf.cv import DISTANCE
    from fesurf.potentials import Harmonic
    from fesurf.sampling.umbrella import umbrella_sampling
    from fesurf.state import State

    start = State(positions=[[0.0, 0, 0], [1.0, 0, 0]], atomic_numbers=[8, 1])
    return umbrella_sampling(Harmonic(k=0.5), start, DISTANCE([0, 1]), centers=[1.0, 1.3, 1.6], kappa=2.0,
                             temperature=300.0, timestep=1.0, seed=0, n_equilibration=20, n_production=200,
                             stride=20, store_positions=True, check_overlap=False)


@pytest.mark.parametrize("fmt", ["extxyz", "traj"])
def test_trajectory_export_is_read_back_by_ase(tmp_path, fmt):
    import ase.io

    from fesurf.sampling.interop import export_trajectory
    from fesurf.units import kT

    ss = _umbrella_set()
    path = tmp_path / f"frames.{fmt}"
    assert export_trajectory(ss, path, [8, 1]) == ss.n_frames
    frames = ase.io.read(path, ":")
    assert len(frames) == ss.n_frames
    for n in (0, 7, ss.n_frames - 1):
        a = frames[n]
        k = int(ss.state_index[n])
        assert int(a.info["window"]) == k and int(a.info["step"]) == int(ss.step[n])
        assert a.info["cv0"] == pytest.approx(ss.cv[n, 0], abs=1e-12)
        assert a.info["cv0"] == pytest.approx(a.get_distance(0, 1), abs=1e-7)  # stored positions (extxyz: 8 decimals)
        assert a.get_potential_energy() == pytest.approx(ss.u_ref[n] * kT(300.0), abs=1e-10)
        assert a.info["bias_eV"] == pytest.approx((ss.u_kn[k, n] - ss.u_ref[n]) * kT(300.0), abs=1e-10)
        assert a.get_chemical_symbols() == ["O", "H"]
    some = tmp_path / f"some.{fmt}"
    n = export_trajectory(ss, some, [8, 1], every=2, windows=[1])
    got = ase.io.read(some, ":")
    assert n == len(got) == len(np.where(ss.state_index == 1)[0][::2])
    assert {int(a.info["window"]) for a in got} == {1}
    with pytest.raises(InputError, match="format"):
        export_trajectory(ss, tmp_path / "x.pdb", [8, 1])
    with pytest.raises(InputError, match="atomic numbers"):
        export_trajectory(ss, tmp_path / "x.traj", [8])
    with pytest.raises(InputError, match="window 5"):
        export_trajectory(ss, tmp_path / "x.traj", [8, 1], windows=[5])


# ---------------------------------------------------------------------------------------- files and labels
@pytest.mark.parametrize("name", ['COMBINE(+1*DISTANCE(0,5) -1*DISTANCE(4,5))', 'a "quoted", name', "d[O1,H]",
                                  "d(O1–H) − d(O2–H) (Å)"])
def test_pmf_csv_round_trips_through_pandas_for_awkward_cv_names(tmp_path, name):
    import pandas as pd

    from fesurf.estimators import FreeEnergy

    grid = np.linspace(-0.8, 0.8, 5)
    vals = np.array([0.0, 1.25, np.nan, 0.5, 2.0])
    fe = FreeEnergy(vals, 0.1 * np.ones(5), unit="kcal/mol", temperature=300.0, grid=[grid], cv_names=[name],
                    method="MBAR-histogram")
    fe.to_csv(tmp_path / "pmf.csv")
    df = pd.read_csv(tmp_path / "pmf.csv", comment="#")
    assert list(df.columns) == [name, "value_kcal/mol", "sigma_kcal/mol"]
    np.testing.assert_array_equal(df[name].to_numpy(), grid)
    np.testing.assert_array_equal(df["value_kcal/mol"].to_numpy(), vals)  # NaN stays NaN
    from fesurf.analysis.report import read_pmf_csv

    back = read_pmf_csv(tmp_path / "pmf.csv")
    assert back.cv_names == [name] and back.unit == "kcal/mol" and back.temperature == 300.0
    np.testing.assert_array_equal(back.values, vals)


def test_cv_labels_and_units_reach_the_axes():
    from fesurf.cv import ANGLE, DISTANCE, TORSION, cv_axis_labels, cv_from_spec, distance_difference
    from fesurf.estimators.plots import plot_window_histograms

    cv = distance_difference([0, 5], [4, 5])
    symbols = list("OCCCOHHHH")
    assert cv.axis_label(symbols) == "d(O1–H) − d(O2–H) (Å)"
    assert cv.axis_label() == "d(0–5) − d(4–5) (Å)"
    labelled = distance_difference([0, 5], [4, 5], symbols=symbols)
    spec = labelled.to_spec()
    assert spec["label"] == "d(O1–H) − d(O2–H)" and cv_from_spec(spec).axis_label() == "d(O1–H) − d(O2–H) (Å)"
    assert cv_from_spec(spec).to_spec() == spec
    assert ANGLE([1, 0, 2]).axis_label(["O", "H", "H"]) == "θ(H1–O–H2) (rad)"
    assert TORSION([0, 1, 2, 3]).unit == "rad" and DISTANCE([0, 1]).set_label("r", unit="nm").axis_label() == "r (nm)"
    defs = [dict(name=cv.label(), **cv.to_spec())]
    assert cv_axis_labels(defs, symbols) == ["d(O1–H) − d(O2–H) (Å)"]
    ss = SampleSet.from_arrays(state_index=[0, 0, 1, 1], u_kn=np.zeros((2, 4)), temperature=300.0,
                               cv=[-0.5, -0.4, 0.4, 0.5], cv_definitions=defs,
                               attrs={"atomic_numbers": [8, 6, 6, 6, 8, 1, 1, 1, 1]})
    assert ss.cv_labels == ["d(O1–H) − d(O2–H) (Å)"]
    fig = plot_window_histograms(ss)
    assert fig.axes[0].get_xlabel() == "d(O1–H) − d(O2–H) (Å)"
    from fesurf.estimators import FreeEnergy

    fe = FreeEnergy(np.zeros(3), grid=[np.arange(3.0)], cv_names=[cv.label()], cv_labels=ss.cv_labels)
    assert fe.plot().axes[0].get_xlabel() == "d(O1–H) − d(O2–H) (Å)"
    assert FreeEnergy.from_json(fe.to_json()).cv_labels == ss.cv_labels
