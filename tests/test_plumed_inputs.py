"""PLUMED input writing for umbrella windows, and parsing back to the same parameters."""
import math

import numpy as np
import pytest

from fesurf.cv import ANGLE, COMBINE, COORDINATION, DISTANCE, POSITION, TORSION, cv_from_spec
from fesurf.errors import InputError
from fesurf.plumed import (parse_plumed_input, read_window_input, read_windows_table, umbrella_window_input,
                           write_umbrella_inputs)
from fesurf.units import convert
from plumed_data import DATA

CVS = [
    DISTANCE([0, 3]),
    ANGLE([0, 1, 2]),
    TORSION([0, 1, 2, 3]),
    POSITION(2, "z"),
    COORDINATION([0], [1, 2, 3], r0=1.3, nn=8, mm=14, d0=0.2),
    COORDINATION([0, 1, 2], r0=1.1),
    COMBINE([DISTANCE([0, 1]), DISTANCE([2, 1])], coefficients=[1.0, -1.0], parameters=[0.3, 0.1]),
    COMBINE([TORSION([0, 1, 2, 3])], coefficients=[2.0], period=(-2 * math.pi, 2 * math.pi)),
]


@pytest.mark.parametrize("units", ["plumed", "fesurf"])
@pytest.mark.parametrize("cv", CVS, ids=lambda c: c.to_spec()["type"])
def test_window_input_parses_back_to_the_same_parameters(cv, units):
    at, kappa = 0.73, 2.5
    text = umbrella_window_input(cv, at=at, kappa=kappa, colvar_file="COLVAR.3", stride=7, units=units)
    w = read_window_input(text)
    assert w["units"] == units and w["colvar_file"] == "COLVAR.3" and w["stride"] == 7
    back = cv_from_spec(w["cvs"][0]).to_spec()
    ref = cv.to_spec()
    assert back.keys() == ref.keys()
    for key in ref:
        if isinstance(ref[key], float):
            assert back[key] == pytest.approx(ref[key], rel=1e-13)
        elif key == "args":
            assert [a["type"] for a in back[key]] == [a["type"] for a in ref[key]]
        elif isinstance(ref[key], list) and ref[key] and isinstance(ref[key][0], float):
            np.testing.assert_allclose(back[key], ref[key], rtol=1e-13)
        else:
            assert back[key] == ref[key]
    assert w["at"] == [pytest.approx(at, rel=1e-13)]
    assert w["kappa"] == [pytest.approx(kappa, rel=1e-13)]


def test_several_cvs_in_one_window_and_plumed_units():
    text = umbrella_window_input([DISTANCE([0, 1]), TORSION([0, 1, 2, 3])], at=[1.5, -1.0], kappa=[2.0, 0.5])
    acts = {a.label: a for a in parse_plumed_input(text)}
    r = acts["restraint"]
    # 1.5 A = 0.15 nm; 2 eV/A^2 = 2 * 96.485 kJ/mol / (0.1 nm)^2; angles stay in rad
    assert [float(x) for x in r.keywords["AT"].split(",")] == pytest.approx([0.15, -1.0], rel=1e-14)
    assert [float(x) for x in r.keywords["KAPPA"].split(",")] == pytest.approx(
        [2.0 * convert(1.0, "eV", "kJ/mol") * 100.0, 0.5 * convert(1.0, "eV", "kJ/mol")], rel=1e-14)
    assert acts["d1"].keywords["ATOMS"] == "1,2"  # 1-based in PLUMED
    w = read_window_input(text)
    assert w["at"] == pytest.approx([1.5, -1.0], rel=1e-14) and w["kappa"] == pytest.approx([2.0, 0.5], rel=1e-14)


def test_reads_the_inputs_plumed_ran():
    w = read_window_input(str(DATA / "umbrella" / "plumed.0.dat"))
    assert w["cvs"] == [{"type": "POSITION", "atom": 0, "component": "x"}]
    assert w["at_written"] == [-1.5] and w["kappa_written"] == [200.0]
    assert w["at"] == pytest.approx([-15.0])  # Angstrom
    assert w["kappa"][0] == pytest.approx(200.0 / convert(1.0, "eV", "kJ/mol") / 100.0, rel=1e-14)
    assert w["colvar_file"] == "COLVAR.0" and w["stride"] == 10
    table = read_windows_table(DATA / "umbrella" / "windows.dat")
    np.testing.assert_allclose(table["at"][:, 0], np.linspace(-1.5, 1.5, 13))
    assert table["colvar_files"][12].endswith("COLVAR.12") and table["inputs"][0].endswith("plumed.0.dat")


def test_write_umbrella_inputs_round_trip(tmp_path):
    at = np.column_stack([np.linspace(1.0, 2.0, 4), np.full(4, 0.5)])
    paths = write_umbrella_inputs(tmp_path, [DISTANCE([0, 1]), ANGLE([0, 1, 2])], at, kappa=[3.0, 0.2], stride=5)
    table = read_windows_table(tmp_path / "windows.dat")
    for k, p in enumerate(paths):
        w = read_window_input(p)
        np.testing.assert_allclose(w["at"], at[k], rtol=1e-13)
        np.testing.assert_allclose(w["kappa"], [3.0, 0.2], rtol=1e-13)
        np.testing.assert_allclose(table["at"][k], w["at_written"], rtol=1e-9)
        np.testing.assert_allclose(table["kappa"][k], w["kappa_written"], rtol=1e-9)
        assert table["colvar_files"][k].endswith(w["colvar_file"])


def test_parser_handles_continuation_comments_and_label_keyword():
    acts = parse_plumed_input("# header\nRESTRAINT ...\n  LABEL=r ARG=d  # comment\n  AT=1 KAPPA=2\n...\n"
                              "d: DISTANCE ATOMS={1,2} NOPBC\n")
    assert (acts[0].name, acts[0].label, acts[0].keywords) == ("RESTRAINT", "r", {"ARG": "d", "AT": "1", "KAPPA": "2"})
    assert acts[1].keywords == {"ATOMS": "1,2"} and acts[1].flags == ["NOPBC"]


def test_coordination_switch_forms():
    text = "c: COORDINATION GROUPA=1 GROUPB=2,3 SWITCH={RATIONAL R_0=0.2 NN=8}\nr: RESTRAINT ARG=c AT=1 KAPPA=5\n"
    assert read_window_input(text)["cvs"][0] == {"type": "COORDINATION", "groupa": [0], "groupb": [1, 2], "r0": 2.0,
                                                 "nn": 8, "mm": 16, "d0": 0.0}
    short = "c: COORDINATION GROUPA=1,2,3 R_0=0.1 NN=6 MM=0\nr: RESTRAINT ARG=c AT=1 KAPPA=5\n"
    assert read_window_input(short)["cvs"][0]["mm"] == 12
    with pytest.raises(InputError, match="RATIONAL"):
        read_window_input("c: COORDINATION GROUPA=1,2 SWITCH={EXP R_0=0.1}\nr: RESTRAINT ARG=c AT=1 KAPPA=5\n")


def test_bad_inputs_give_clear_errors():
    with pytest.raises(InputError, match="no RESTRAINT"):
        read_window_input("d: DISTANCE ATOMS=1,2\nPRINT ARG=d\n")
    with pytest.raises(InputError, match="no CV for action GYRATION"):
        read_window_input("g: GYRATION ATOMS=1-10\nr: RESTRAINT ARG=g AT=1 KAPPA=1\n")
    with pytest.raises(InputError, match="never closed"):
        parse_plumed_input("RESTRAINT ...\nARG=d\n")
    with pytest.raises(InputError, match="2 ARG, 1 AT"):
        read_window_input("d: DISTANCE ATOMS=1,2\ne: DISTANCE ATOMS=1,3\nr: RESTRAINT ARG=d,e AT=1 KAPPA=1,1\n")
    mixed = COMBINE([DISTANCE([0, 1]), ANGLE([0, 1, 2])])
    with pytest.raises(InputError, match="units='fesurf'"):
        umbrella_window_input(mixed, at=0.0, kappa=1.0)
    assert read_window_input(umbrella_window_input(mixed, at=0.5, kappa=1.0, units="fesurf"))["at"] == [0.5]
