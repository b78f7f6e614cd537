import re

from notebooks import outputs_text, run_notebook


def test_tutorial_05_rate_error_law_and_precision():
    text = outputs_text(run_notebook("05_barriers_and_rate_errors.ipynb"))
    assert "barrier error 1.364 kcal/mol -> rate off by x  10.0" in text
    assert "needs the barrier to 0.109 kcal/mol" in text
    reaction = float(re.search(r"reaction ([0-9.-]+) ±", text).group(1))
    by_minima = float(re.search(r"reading minima instead: ([0-9.-]+) kT", text).group(1))
    # the wide product well's entropy (ln sqrt(14 / 0.6) = 1.58 kT for the bare Gaussian wells, a bit
    # less once the barrier bump trims them) separates the integrated and the read-off numbers
    assert 1.2 < by_minima - reaction < 1.6
