"""Tutorial 11 (quantum nuclei) runs in quick mode and prints numbers that agree with closed forms and with
the stored full benchmark."""
import json
import re
from pathlib import Path

from notebooks import outputs_text, run_notebook

STORED = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "quantum_malonaldehyde.json"


def test_tutorial_11_quantum_nuclei():
    text = outputs_text(run_notebook("11_quantum_nuclei.ipynb"))
    m = re.search(r"virial ([0-9.]+) ± ([0-9.]+), primitive ([0-9.]+) ± ([0-9.]+); exact \(P=16\) ([0-9.]+)", text)
    ev, sv, ep, sp, exact = map(float, m.groups())
    assert abs(ev - exact) < 3 * sv and abs(ep - exact) < 3 * sp  # sigma ~0.6 % of hbar w at quick settings
    for name in ("classical", "quantum H", "quantum D"):
        b = float(re.search(rf"{name}: barrier GFN2-corrected ([0-9.]+) ±", text).group(1))
        assert 0.0 < b < 6.0  # kcal/mol: quick runs are noisy (sigma ~0.5), the full run is in the JSON
    kie = float(re.search(r"KIE \(centroid QTST, GFN2-corrected\) = ([0-9.]+) ±", text).group(1))
    assert kie > 0
    ti, sti, sc, ssc, ex = map(float, re.search(
        r"mass TI ([-0-9.]+) ± ([0-9.]+) meV, scaled coordinates ([-0-9.]+) ± ([0-9.]+) meV, exact ([-0-9.]+) meV",
        text).groups())
    assert abs(ti - ex) < 3 * sti and abs(sc - ex) < 3 * ssc
    if STORED.exists():
        full = json.loads(STORED.read_text())
        shown = float(re.search(r"stored KIE \(GFN2-corrected centroid QTST\) = ([0-9.]+)", text).group(1))
        assert abs(shown - full["kie_corrected"]["kie"]) < 0.005
