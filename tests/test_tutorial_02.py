import re

from notebooks import outputs_text, run_notebook


def test_tutorial_02_trains_and_shows_the_cautionary_examples():
    text = outputs_text(run_notebook("02_train_surrogate.ipynb"))
    assert "FAILED atoms 0 and 5" in text  # the impossible frame is recorded, the rest labelled
    assert text.count("\nok ") + text.startswith("ok ") >= 3
    e_mae = float(re.search(r"stored committee: energy MAE ([0-9.]+) kcal/mol", text).group(1))
    f_mae = float(re.search(r"force MAE ([0-9.]+) eV/A\n", text.split("stored committee:")[1]).group(1))
    assert e_mae <= 0.3 and f_mae <= 0.05  # the acceptance thresholds on the stored test set
    rho = float(re.search(r"Spearman\(spread, \|error\|\) on test \+ 1500 K: energy ([-0-9.]+)", text).group(1))
    assert rho > 0.3
    barrier = float(re.search(r"xTB torsion barrier \(rigid scan\): ([0-9.]+)", text).group(1))
    assert 2.0 < barrier < 20.0  # rigid scan: syn-eclipsed butane lies several kcal/mol above anti
    assert "count-descriptor barrier: 0.000 kcal/mol" in text
    ratio = float(re.search(r"ratio ([0-9.]+)\n", text).group(1))
    fine = float(re.search(r"smaller step: change ([0-9.]+)", text).group(1))
    assert ratio > 100 and fine > 0.1  # a jump that does not shrink with the step
    morse = float(re.search(r"cubic Taylor maximum / D = ([0-9.]+)", text).group(1))
    assert abs(morse - 4 / 27) < 1e-5  # grid spacing 1e-5 A around a quadratic maximum
