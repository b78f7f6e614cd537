"""Tutorial 13: a surrogate for the Cl- + CH3Cl SN2 exchange (not stored in the repository) from nothing,
by active learning with GFN2-xTB, then corrected with sparse GFN2 labels and compared with direct GFN2
umbrella sampling of the same windows.

Quick mode (FESURF_TUTORIAL_QUICK=1, ~30 s of CPU): 3 short loop rounds (~250 GFN2 calls), 800 production steps,
150 correction labels over 13 bins, a direct run of 14 windows x 200 steps. Its barriers carry sigmas of
1.2-1.7 kcal/mol (surrogate route and direct run), so the comparison allows 3 combined sigma and the direct
barrier is only bracketed (GFN2: ~10 kcal/mol; one quick run gave 9.7 +- 1.7).
"""
import re

from notebooks import outputs_text, run_notebook


def test_tutorial_13_active_learning():
    text = outputs_text(run_notebook("13_active_learning.ipynb"))
    # every reference call is counted, the loop's purposes add up to its total
    m = re.search(r"reference calls: relaxation (\d+) \+ loop (\d+) \+ correction (\d+) = (\d+); direct run (\d+)", text)
    assert m, text[-2000:]
    relax, loop, corr, total, direct = map(int, m.groups())
    assert relax + loop + corr == total and total < direct
    purposes = re.search(r"loop reference calls by purpose: \{(.*)\}", text).group(1)
    parts = dict((k.strip(" '"), int(v)) for k, v in (p.split(":") for p in purposes.split(",")))
    assert sum(v for k, v in parts.items() if k not in ("total", "failed")) == parts["total"] == loop
    # the calibrated spread per CV bin falls over the rounds
    worst = [float(x) for x in re.search(r"max predicted beta\*sigma\(dU\) per round: \[(.*)\]", text).group(1).split(",")]
    assert worst[-1] < worst[0] and worst[-1] <= 1.0
    # the corrected barrier agrees with direct GFN2 sampling
    b = re.search(r"corrected ([\d.]+) \+- ([\d.]+) \| direct GFN2 ([\d.]+) \+- ([\d.]+) \| z = ([+-][\d.]+)", text)
    assert b, text[-2000:]
    assert abs(float(b.group(5))) <= 3.0
    assert 5.0 < float(b.group(3)) < 15.0  # GFN2's barrier of this exchange: ~10 kcal/mol (10.6 potential)
