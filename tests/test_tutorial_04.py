import re

import numpy as np

from notebooks import outputs_text, run_notebook


def test_tutorial_04_reweighting_overlap_and_switching():
    text = outputs_text(run_notebook("04_reweight_to_qm.ipynb"))
    rows = {float(m.group(1)): [float(v) for v in m.groups()[1:]]
            for m in re.finditer(r"^\s+([0-9.]+)\s+([0-9.e-]+)\s+([0-9.e-]+)\s+([0-9.-]+)\s+([0-9.-]+)$", text, re.M)}
    # Kish fraction tracks exp(-(beta sigma)^2); EXP is biased upward at 3 kT, the cumulant is not
    assert abs(rows[1.0][0] - np.exp(-1.0)) < 0.05
    assert rows[3.0][2] > 0.2 and abs(rows[3.0][3]) < 0.1
    assert "flagged bins: 30 of 30" in text
    exact = float(re.search(r"exact dA = ([0-9.]+) kT", text).group(1))
    bar, err = map(float, re.search(r"BAR \(Crooks\)\s+: ΔA = ([0-9.]+) ± ([0-9.]+) kT", text).groups())
    assert abs(bar - exact) < 3 * err  # 3 sigma of pymbar's BAR uncertainty
