"""PLUMED COLVAR/HILLS readers on files written by a real PLUMED 2.10.1, and on damaged copies."""
import math

import numpy as np
import pytest

from fesurf.errors import InputError
from fesurf.plumed import hills_bias, read_colvar, read_hills
from plumed_data import DATA, SHARED


def test_repo_copy_of_the_plumed_samples_is_intact():
    """The copies in tests/data/plumed are byte-identical to what PLUMED wrote: their SHA-256 sums were
    taken from ../shared/plumed-samples, and are checked against it too when that folder is present."""
    import hashlib

    sums = dict(reversed(line.split()) for line in (DATA / "SHA256SUMS").read_text().splitlines() if line.strip())
    assert len(sums) >= 10
    for name, digest in sums.items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest, name
        if SHARED.exists() and (SHARED / name).exists():
            assert (SHARED / name).read_bytes() == (DATA / name).read_bytes(), name


def test_umbrella_colvar_equals_numpy_loadtxt():
    c = read_colvar(DATA / "umbrella" / "COLVAR.0")
    ref = np.loadtxt(DATA / "umbrella" / "COLVAR.0", comments="#")
    assert c.fields == ["time", "p.x", "r.bias"]
    assert c.n_segments == 1 and c.dropped_rows == 0
    np.testing.assert_array_equal(c.data, ref)
    np.testing.assert_allclose(np.diff(c["time"]), 0.05, atol=1e-9)  # STRIDE=10 x 0.005 ps
    # the printed bias is 0.5 * 200 * (x + 1.5)^2 kJ/mol to the 8 printed decimals
    np.testing.assert_allclose(c["r.bias"], 100.0 * (c["p.x"] + 1.5) ** 2, atol=2e-6)


def test_restarted_run_has_two_headers_and_no_duplicate_frame():
    c = read_colvar(DATA / "restart" / "COLVAR")
    raw = np.loadtxt(DATA / "restart" / "COLVAR", comments="#")
    assert c.n_segments == 2
    assert len(c) == len(raw) - 1 and c.dropped_rows == 1  # the frame at t = 10 ps is printed twice
    assert np.all(np.diff(c["time"]) > 0)
    np.testing.assert_allclose(c["time"][[0, -1]], [0.0, 20.0])
    assert len(read_colvar(DATA / "restart" / "COLVAR", restart="append")) == len(raw)


def test_periodic_torsion_has_min_max_from_set_lines():
    c = read_colvar(DATA / "torsion" / "COLVAR")
    assert c.period("phi") == (-math.pi, math.pi)
    assert c.period("d") is None
    assert np.all(np.abs(c["phi"]) <= math.pi)


def test_hills_file_fields_and_well_tempered_heights():
    h = read_hills(DATA / "metad" / "HILLS")
    assert h.cv_names == ["p.x"] and h.n_hills == 2000
    assert h.biasfactor == 8.0 and h.kernel == "stretched-gaussian" and h.periods == [None]
    # HEIGHT=1 deposited when the bias is still zero, stored times gamma/(gamma-1) = 8/7
    assert h.heights[0] == pytest.approx(8.0 / 7.0, rel=1e-12)
    assert h.bias_scale == pytest.approx(7.0 / 8.0)
    np.testing.assert_allclose(h.sigmas, 0.1)
    np.testing.assert_allclose(np.diff(h.time), 0.5, atol=1e-9)  # PACE=100 x 0.005 ps


def test_hills_bias_reproduces_the_bias_plumed_printed():
    # PLUMED printed mtd.bias in COLVAR: the sum of the hills deposited before each frame. PLUMED evaluated
    # it on a 300-bin spline grid over [-3, 3] nm, whose interpolation error for sigma = 0.1 nm is ~1e-4 kJ/mol;
    # we sum the stretched Gaussians directly, so agreement to 1e-3 kJ/mol checks kernel, cutoff and scaling.
    h = read_hills(DATA / "metad" / "HILLS")
    c = read_colvar(DATA / "metad" / "COLVAR")
    rows = np.arange(0, len(c), 37)
    counts = np.searchsorted(h.time, c["time"][rows], side="left")
    ours = np.array([hills_bias(h, c["p.x"][i:i + 1], upto=int(n))[0] for i, n in zip(rows, counts)])
    assert np.abs(ours - c["mtd.bias"][rows]).max() < 1e-3
    assert c["mtd.bias"][rows].max() > 30.0  # a non-trivial bias was compared


# ------------------------------------------------------------------ damaged files
def _write(tmp_path, text, name="COLVAR"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _lines():
    return (DATA / "umbrella" / "COLVAR.0").read_text().splitlines(keepends=True)


def test_truncated_last_line_is_dropped(tmp_path):
    lines = _lines()
    cut = "".join(lines[:-1]) + lines[-1][:12]  # killed while writing: no newline, a partial row
    c = read_colvar(_write(tmp_path, cut))
    assert len(c) == len(lines) - 2 and c.dropped_rows == 1
    # a partial row followed by a restart header is also a truncated last line (of its segment)
    again = "".join(lines[:-1]) + lines[-1][:12] + "\n" + lines[0] + lines[-1]
    c2 = read_colvar(_write(tmp_path, again, "COLVAR2"))
    assert c2.n_segments == 2 and c2["time"][-1] == pytest.approx(150.0)


def test_truncated_line_in_the_middle_is_an_error(tmp_path):
    lines = _lines()
    lines[100] = lines[100][:15] + "\n"
    with pytest.raises(InputError, match=r"line 101.*middle"):
        read_colvar(_write(tmp_path, "".join(lines)))


def test_mismatched_column_count_is_an_error(tmp_path):
    lines = _lines()
    lines[50] = lines[50].rstrip("\n") + " 1.0\n"
    with pytest.raises(InputError, match=r"line 51: 4 columns where the header at FIELDS has 3"):
        read_colvar(_write(tmp_path, "".join(lines)))


def test_missing_fields_header_is_an_error(tmp_path):
    with pytest.raises(InputError, match="FIELDS"):
        read_colvar(_write(tmp_path, "".join(_lines()[1:])))
    with pytest.raises(InputError, match="no '#! FIELDS' header"):
        read_colvar(_write(tmp_path, "", "empty"))


def test_nan_is_an_error(tmp_path):
    lines = _lines()
    lines[10] = " 0.450000 nan 0.1\n"
    with pytest.raises(InputError, match=r"line 11: non-finite value .* p\.x"):
        read_colvar(_write(tmp_path, "".join(lines)))


def test_changed_fields_at_restart_and_missing_file_are_errors(tmp_path):
    lines = _lines()
    text = "".join(lines[:5]) + "#! FIELDS time p.x\n 1.0 0.5\n"
    with pytest.raises(InputError, match="restart header has fields"):
        read_colvar(_write(tmp_path, text))
    with pytest.raises(InputError, match="does not exist"):
        read_colvar(tmp_path / "nope")


def test_hills_with_missing_sigma_or_multivariate_are_errors(tmp_path):
    with pytest.raises(InputError, match="no sigma_x"):
        read_hills(_write(tmp_path, "#! FIELDS time x height biasf\n 1 0 1 10\n", "H1"))
    with pytest.raises(InputError, match="multivariate"):
        read_hills(_write(tmp_path, "#! FIELDS time x sigma_x height biasf\n#! SET multivariate true\n"
                                    " 1 0 0.1 1 10\n", "H2"))
