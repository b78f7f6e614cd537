"""Tutorial 9: the xTB surrogate's barrier corrected to B3LYP/def2-SVP with PySCF single points.

The notebook runs in quick mode (10 density-fitted single points through a 2-process spawn pool,
about 1-2 min on a shared 2-core machine). With 2 labels per bin every bin must be flagged (the
Kish ESS of a bin cannot exceed its number of labels, and the flag threshold is 5), so the test
checks that the flags and the warning fire rather than a corrected barrier.
"""
import math
import re

import numpy as np
import pytest
from ase.build import molecule
from ase.units import Hartree

from fesurf.errors import InputError
from fesurf.oracles import PySCFOracle
from notebooks import outputs_text, run_notebook


def test_density_fitting_matches_conventional_b3lyp():
    # RI-JK with PySCF's default def2-universal-jkfit auxiliary basis: the total energy error of small
    # molecules is ~1e-5 Ha (1.2e-5 Ha measured for malonaldehyde); 1e-4 Ha (0.1 kT at 300 K) bounds it.
    water = molecule("H2O")
    exact = PySCFOracle(xc="B3LYP", basis="def2-SVP").compute(water)
    df = PySCFOracle(xc="B3LYP", basis="def2-SVP", density_fit=True).compute(water)
    assert exact.ok and df.ok
    assert df.method == "pyscf:KS:B3LYP/def2-SVP:grid3:df(default)" != exact.method  # separate cache entries
    assert 0 < abs(df.energy - exact.energy) / Hartree < 1e-4  # DF is really on, and close
    assert np.abs(df.forces - exact.forces).max() < 1e-3  # eV/A; 2.2e-4 measured
    # PySCF's default auxiliary basis for def2-SVP is def2-universal-jkfit (as the docstring says)
    named = PySCFOracle(xc="B3LYP", basis="def2-SVP", density_fit=True, auxbasis="def2-universal-jkfit")
    assert abs(named.compute(water).energy - df.energy) < 1e-8
    with pytest.raises(InputError, match="density_fit=True"):
        PySCFOracle(auxbasis="def2-universal-jkfit")


def test_tutorial_09_reweight_to_dft():
    text = outputs_text(run_notebook("09_reweight_to_dft.ipynb"))
    assert "pyscf:KS:B3LYP/def2-SVP:grid3:df(default)" in text

    # every requested single point went to a PySCF worker; failures are counted, not hidden
    req, done, failed = map(int, re.search(r"PySCF single points: requested (\d+), computed (\d+), failed (\d+)",
                                           text).groups())
    assert req == done == 10 and 0 <= failed < req

    # the labels' dU reproduces a direct serial PySCF call and a direct committee evaluation
    # (same method and geometry: the DFT part agrees to SCF precision; the committee's float32 arithmetic
    # differs by up to ~2e-5 eV between the batched run and one structure, hence 1e-4 eV = 0.004 kT)
    checks = re.findall(r"check frame \d+: dU labelled (-?[0-9.]+) eV, direct (-?[0-9.]+) eV", text)
    assert len(checks) == 1
    for lab, direct in checks:
        assert abs(float(lab) - float(direct)) < 1e-4
        assert -7500 < float(lab) < -6000  # B3LYP minus the xTB-trained surrogate: about -6814 eV

    # removing the constant offset (about -2.6e5 kT) changes no bin correction beyond round-off
    assert float(re.search(r"max \|change of the bin corrections\| = ([0-9.e+-]+) kT", text).group(1)) < 1e-6

    surrogate = float(re.search(r"surrogate barrier \(5 bins\): ([0-9.]+) ±", text).group(1))
    assert 1.0 < surrogate < 6.0  # kcal/mol; the demo's 30-bin value is 3.4

    # one table per estimator (wTP, delta-learning), each with ESS and beta*sigma for all 5 bins
    tables = re.findall(r"bin centre\s+labels\s+ESS\s+beta\*sigma\s+F_sur\s+F_ref\s+flag\n((?:.*\n?){5})", text)
    assert len(tables) == 2
    for name, table in zip(("wTP", "delta-learning"), tables):
        rows = [line.split() for line in table.strip().splitlines()]
        assert len(rows) == 5
        labels = [int(r[1]) for r in rows]
        ess = [float(r[2]) for r in rows]
        beta_sigma = [float(r[3]) for r in rows]
        assert sum(labels) == done - failed
        assert all(0 < e <= n for e, n in zip(ess, labels))  # Kish ESS never exceeds the labels
        assert all(math.isfinite(s) and s >= 0 for s in beta_sigma)
        # the flag rule (fewer than 3 labels, ESS < 5, beta*sigma > 3) recomputed from the printed table
        rule = sum(n < 3 or e < 5 or s > 3 for n, e, s in zip(labels, ess, beta_sigma))
        assert f"flagged bins ({name}): {rule} of 5" in text
        assert rule == 5  # quick mode: 2 labels per bin, so ESS < 5 everywhere

    for name in ("wTP", "delta-learning"):
        flagged, total = map(int, re.search(rf"flagged bins \({name}\): (\d+) of (\d+)", text).groups())
        barrier = re.search(rf"corrected barrier \({name}\): ([0-9.]+) ± ([0-9.]+) kcal/mol", text)
        if barrier is None:  # no number without the flags having fired, loudly
            assert flagged > 0
            assert f"corrected barrier ({name}): not reported: {flagged} flagged bin(s)" in text
        else:
            assert flagged == 0 and all(math.isfinite(float(v)) for v in barrier.groups())
    assert "warning:" in text and "cannot be corrected reliably" in text
    assert re.search(r"delta model: held-out RMSE [0-9.]+ kT on \d+ labels", text)
