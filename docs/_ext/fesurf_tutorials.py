"""Tutorials on the site: the notebooks of ``tutorials/`` with the outputs stored in them.

At build time every ``tutorials/NN_*.ipynb`` is copied into ``docs/tutorials/`` (not committed;
rewritten only when it changes) with one note cell added at the top saying which settings made the
stored outputs (``metadata.fesurf`` written by ``scripts/refresh_tutorials.py``), and without the
environment noise of ``NOISE`` in their stderr outputs. myst-nb renders
them with ``nb_execution_mode = "off"``: the docs build never executes a notebook.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat
from sphinx.application import Sphinx

REPO = Path(__file__).resolve().parents[2]


def note(nb) -> str:
    meta = nb.metadata.get("fesurf", {})
    settings = meta.get("outputs")
    if settings == "full":
        how = "a run with the notebook's full settings"
    elif settings == "quick":
        how = ("a run with its small settings (`FESURF_TUTORIAL_QUICK=1`; the full run takes too long "
               "for a refresh), so the numbers are noisier than the text describes")
    else:
        how = "a run whose settings were not recorded"
    when = f" on {meta['refreshed']}" if meta.get("refreshed") else ""
    return (f"*The outputs below are stored in the notebook from {how}{when} "
            f"(`python scripts/refresh_tutorials.py`); the test suite executes it again with small settings "
            f"and checks its numbers. Source: `tutorials/{{name}}`.*")


# What the kernel's environment printed, not the tutorial: tqdm's warning that ipywidgets is missing
# (two lines: the warning and the source line). scripts/refresh_tutorials.py no longer stores it.
NOISE = re.compile(r"^.*TqdmWarning: IProgress not found.*\n(  from \.autonotebook import .*\n)?", re.M)


def drop_noise(nb) -> None:
    """Remove environment noise from the stderr outputs (the notebook file itself is not changed)."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                out["text"] = NOISE.sub("", out["text"])
                if not out["text"]:
                    continue
            kept.append(out)
        cell["outputs"] = kept


def copy_tutorials(app: Sphinx) -> None:
    out = Path(app.srcdir) / "tutorials"
    out.mkdir(exist_ok=True)
    wanted = set()
    for path in sorted((REPO / "tutorials").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        shown = copy.deepcopy(nb)
        drop_noise(shown)
        cell = nbformat.v4.new_markdown_cell(note(nb).replace("{name}", path.name))
        if (shown.nbformat, shown.nbformat_minor) < (4, 5):
            cell.pop("id", None)  # cell ids exist from nbformat 4.5 on
        first = 1 if shown.cells and shown.cells[0].cell_type == "markdown" else 0
        shown.cells.insert(first, cell)
        text = nbformat.writes(shown)
        target = out / path.name
        wanted.add(target.name)
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
    for stale in out.glob("*.ipynb"):
        if stale.name not in wanted:
            stale.unlink()


def setup(app: Sphinx) -> dict:
    app.connect("builder-inited", copy_tutorials)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
