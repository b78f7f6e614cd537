import re

from notebooks import outputs_text, run_notebook


def test_tutorial_01_md_stability_runs_and_shows_its_points():
    text = outputs_text(run_notebook("01_md_stability.ipynb"))
    assert "chosen time step:" in text
    ratio = float(re.search(r"10/5 fs: ([0-9.]+)", text).group(1))
    assert 3.5 < ratio < 4.5
    # the inconsistent-force model drifts far more than the consistent ones, at both steps
    drifts = {(m.group(1).strip(), float(m.group(2))): float(m.group(3))
              for m in re.finditer(r"^(.+?)\s+dt=\s*([0-9.]+) fs\s+drift =\s+([0-9.eE+-]+)", text, re.M)}
    assert drifts[("forces != -dE/dx", 5.0)] > 20 * drifts[("LJ, sigma +10% (wrong model)", 5.0)]
    assert "all canonical checks pass: True" in text
