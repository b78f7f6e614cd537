"""Execute tutorials 06 and 07 in a kernel of the current interpreter (small settings)."""
import re

from notebooks import outputs_text, run_notebook


def test_tutorial_06_spin_states():
    text = outputs_text(run_notebook("06_spin_states.ipynb", timeout=120))
    t_half, exact = re.search(r"T1/2 = ([0-9.]+) \+- [0-9.]+ K; exact ([0-9.]+)", text).groups()
    assert abs(float(t_half) - float(exact)) < 10.0  # short run: sigma ~2-3 K
    gap = float(re.search(r"S-T gap: ([0-9.-]+) kcal/mol", text).group(1))
    assert abs(gap - 13.3) < 1.0
    assert "MECP converged True" in text


def test_tutorial_07_conical_intersections():
    text = outputs_text(run_notebook("07_conical_intersections.ipynb", timeout=120))
    assert "converged True" in text
    gap = float(re.search(r"gap \(meV\) ([0-9.eE+-]+)", text).group(1))
    assert gap < 1.0
