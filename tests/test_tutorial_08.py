import re

from notebooks import outputs_text, run_notebook

from fesurf.plumed import kernel_status


def test_tutorial_08_plumed_runs_and_shows_its_points():
    text = outputs_text(run_notebook("08_plumed.ipynb"))
    assert "segments: 2" in text and "InputError:" in text and "line 11" in text
    barrier = float(re.search(r"barrier from PLUMED umbrella COLVARs: ([0-9.]+)", text).group(1))
    assert abs(barrier - 5.0) < 1.5  # exact 5 kJ/mol; sigma ~0.4 kJ/mol plus bin averaging at the wells
    rms = [float(v) for v in re.search(r"sum_hills RMS error: ([0-9.]+) kT;  reweighted RMS error: ([0-9.]+)",
                                       text).groups()]
    assert max(rms) < 0.3
    assert "window 3 read back: at = -0.2 A, kappa = 10.0 eV/A^2" in text
    t = re.search(r"TorchScript torsion ([-0-9.]+) rad, fesurf ([-0-9.]+) rad", text)
    assert abs(float(t.group(1)) - float(t.group(2))) < 1e-5
    if kernel_status()[0]:
        de = float(re.search(r"max \|dE\| = ([0-9.e+-]+) eV", text).group(1))
        assert de < 1e-8
        assert "ASE + PLUMED energy" in text
    else:
        assert "live coupling: skipped" in text
