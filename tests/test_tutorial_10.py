"""Tutorial 10: when to reweight and when to sample exactly (quick mode, ~10 s of CPU).

Checked against closed forms: the reweighting route's Kish cost is exp((beta sigma)^2) for Gaussian dU; the
exact route's measured acceptance equals the Gaussian prediction from the spread of its own log acceptance
ratio; the exact estimate of <x>_ref is unbiased; with quarter-period trajectories the acceptance follows
erfc(sqrt(N) beta sigma_1 / 2) across system sizes; the 50% cap at 2 meV/atom and 300 K is 152 atoms.
"""
import math
import re

from notebooks import outputs_text, run_notebook


def test_tutorial_10_exact_sampling():
    text = outputs_text(run_notebook("10_exact_sampling.ipynb"))
    rows = re.findall(r"beta\*sigma ([0-9.]+): reweight calls per ESS ([0-9.]+), exact calls per ESS ([0-9.]+), "
                      r"exact acceptance ([0-9.]+) \(Gaussian prediction ([0-9.]+)\), bias of the exact estimate "
                      r"([-+0-9.]+) sd", text)
    assert len(rows) == 3
    table = {float(r[0]): list(map(float, r[1:])) for r in rows}
    kish = dict((float(m[0]), float(m[1])) for m in re.findall(r"^\s+([0-9.]+) \|\s+[0-9.]+\s+([0-9.]+)\s", text, re.M))
    for bs in (0.5, 1.0):
        # Kish cost of 200 labels: N / ESS_Kish -> exp(b^2) up to O(1/N) (about 3 % here; 100 repeats)
        assert abs(kish[bs] / math.exp(bs * bs) - 1) < 0.1
    for bs, (rw, ex, acc, pred, bias) in table.items():
        assert abs(acc - pred) < 0.03  # measured vs erfc(beta sigma_measured / 2) on the same proposals
        # 32 walkers x 200 moves: the sd of the mean over walkers is sqrt(g / 6400) ~ 0.04-0.08 of sd(x)
        assert abs(bias) < 0.25
        assert rw > 1 and ex > 1
    # at beta sigma = 2 reweighting has lost most of its labels: >= 10x the cost at 0.5 kT
    assert table[2.0][0] > 10 * table[0.5][0]

    sizes = re.findall(r"size (\d+): acceptance ([0-9.]+) \+- ([0-9.]+), erfc\(beta sigma/2\) ([0-9.]+), z = ([-+0-9.]+)",
                       text)
    assert [int(s[0]) for s in sizes] == [1, 64, 512]
    for _, acc, se, pred, z in sizes:
        assert abs(float(z)) < 3  # independent walkers: an honest SE
    assert "caps the system at 152 atoms" in text
