"""The README's "Python API" snippets run as written (with a shorter umbrella run) and give its numbers.

The ```python blocks of the section are executed in order in one namespace. Only the umbrella run's
length is shortened (12000 -> 2000 steps per window); the substitution is asserted, so a README edit
that removes it fails here instead of silently running the long version.
"""
import contextlib
import io
import math
import re
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Python API in a few lines"
SMALL = {"n_production=12000": "n_production=2000"}   # 16 windows x 2000 steps: ~10 s on one core

# the README's demo (make demo: same windows and settings, 12000 steps per window) reports
DEMO_BARRIER, DEMO_SIGMA = 3.78, 0.27   # kcal/mol, surrogate barrier


def python_blocks(text: str) -> list:
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end > 0 else None]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_has_the_python_api_snippets():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 2
    assert all(old in "".join(blocks) for old in SMALL), "README changed: update SMALL in tests/test_readme.py"


@pytest.fixture(scope="module")
def executed():
    namespace, out = {"__name__": "__readme__"}, io.StringIO()
    blocks = python_blocks(README.read_text())
    from fesurf.estimators import CorrelationWarning, EquilibrationWarning

    # the shortened run is known to be short: its correlation notes are expected, not news
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore", CorrelationWarning)
        warnings.simplefilter("ignore", EquilibrationWarning)
        for block in blocks:
            for old, new in SMALL.items():
                block = block.replace(old, new)
            exec(compile(block, str(README), "exec"), namespace)
    return namespace, out.getvalue()


def test_readme_umbrella_snippet_gives_the_demo_barrier(executed):
    ns, printed = executed
    assert "kcal/mol" in printed
    b = ns["barrier"](ns["pmf"]).to("kcal/mol").activation
    # same model, windows and temperature as the demo with 1/6 of its steps: MBAR's sigma of this run
    # (about 0.5-0.7 kcal/mol) and the demo's 0.27 combined; 4 sigma
    assert math.isfinite(b.value) and b.error > 0
    assert abs(b.value - DEMO_BARRIER) < 4 * math.hypot(b.error, DEMO_SIGMA), (b.value, b.error)
    frames, p = ns["frames"], ns["p"]
    assert len(frames) == 240 and len(set(frames.tolist())) == 240 and ((p > 0) & (p <= 1)).all()


def test_readme_md_snippet_is_canonical(executed):
    ns, printed = executed
    check = ns["canonical_check"](ns["energies"].arrays()["kinetic_energy"], 30.0, n_dof=39)
    assert check.passed(), printed
