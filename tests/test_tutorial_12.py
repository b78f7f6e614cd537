"""Tutorial 12 (long-range physics) in quick mode: the local model is flat beyond its cutoff, the
hybrid follows GFN2-xTB there, and the PMF section runs end to end."""
import re

from notebooks import outputs_text, run_notebook


def test_tutorial_12_local_fails_hybrid_does_not():
    text = outputs_text(run_notebook("12_long_range.ipynb"))
    local = float(re.search(r"local: max \|error\| from 6 to 15 A = ([0-9.]+) meV", text).group(1))
    hybrid = float(re.search(r"hybrid: max \|error\| from 6 to 15 A = ([0-9.]+) meV", text).group(1))
    # the local model misses the whole tail (137 meV of binding at 6 A); the hybrid carries it
    assert local > 100.0
    assert hybrid < 10.0
    spread = float(re.search(r"local energy spread beyond 6 A: ([0-9.e+-]+) eV", text).group(1))
    assert spread < 1e-9  # exactly flat: no atom pair within the 5 A cutoff crosses the molecule-ion gap
    exponent = re.search(r"force decay exponent 6-15 A: hybrid (-?[0-9.]+), GFN2-xTB (-?[0-9.]+)", text)
    assert abs(float(exponent.group(1)) - float(exponent.group(2))) < 0.3
    sums = [float(x) for x in re.findall(r"   -?[0-9.]+  (-?[0-9.]+)\n", text)]
    assert sums and all(abs(s + 1.0) < 1e-9 for s in sums)
    assert "local:" in text and "bins flagged" in text
