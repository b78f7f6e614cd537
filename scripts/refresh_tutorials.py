"""Execute tutorial notebooks and store their outputs (text and PNG plots) in the .ipynb files.

The documentation site renders the stored outputs (``make docs`` never executes a notebook); the
test suite executes every tutorial separately with small settings and checks its numbers. Run this
script after changing a tutorial, so that what a reader sees is what the notebook computes::

    python scripts/refresh_tutorials.py                      # every tutorial, full settings
    python scripts/refresh_tutorials.py 01 04                # by number or file name
    python scripts/refresh_tutorials.py --missing            # only those with no stored image
    python scripts/refresh_tutorials.py --quick 09           # small settings (FESURF_TUTORIAL_QUICK=1)
    python scripts/refresh_tutorials.py --full-limit 300 01  # full settings, quick ones if full take > 300 s

Figures are stored as PNG: the kernel runs matplotlib's inline backend, so a pyplot figure made in a
cell, a ``matplotlib.figure.Figure`` left as a cell's last expression, and ``display(fig)`` all become
``image/png`` outputs. What settings made the outputs is recorded in the notebook's metadata
(``metadata.fesurf.outputs``: "full" or "quick", with the wall time), and the docs page says so.
"""
from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
INLINE = "module://matplotlib_inline.backend_inline"
log = logging.getLogger("refresh_tutorials")


class TooSlow(RuntimeError):
    """Full settings ran past the limit given with --full-limit."""


def n_images(nb) -> int:
    """Number of PNG/SVG outputs stored in a notebook."""
    return sum(1 for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
               if "image/png" in out.get("data", {}) or "image/svg+xml" in out.get("data", {}))


def select(names) -> list[Path]:
    """Tutorial paths for numbers ("01"), stems or file names; every tutorial when ``names`` is empty."""
    every = sorted(TUTORIALS.glob("[0-9][0-9]_*.ipynb"))
    if not names:
        return every
    chosen = []
    for name in names:
        hits = [p for p in every if p.name == name or p.stem == name or p.name.split("_")[0] == name.zfill(2)]
        if not hits:
            raise SystemExit(f"refresh_tutorials: no tutorial matches {name!r}; have: {', '.join(p.name for p in every)}")
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def execute(path: Path, quick: bool, limit: float | None = None, cell_timeout: int = 3600):
    """Execute ``path`` in a fresh kernel of this interpreter; return the executed notebook and wall seconds.

    ``quick`` sets ``FESURF_TUTORIAL_QUICK=1`` (and the older ``FESURF_TUTORIAL_SMALL=1``) for the
    kernel; ``limit`` (seconds) raises :class:`TooSlow` once a cell finishes past it.
    """
    nb = nbformat.read(path, as_version=4)
    env_before = dict(os.environ)
    for key in ("FESURF_TUTORIAL_QUICK", "FESURF_TUTORIAL_SMALL"):
        os.environ.pop(key, None)
        if quick:
            os.environ[key] = "1"
    os.environ["MPLBACKEND"] = INLINE        # figures become image/png outputs
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # tqdm's "IProgress not found" (no ipywidgets in the kernel) says nothing about the tutorial
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"),
                                                          "ignore:IProgress not found"]))
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME

    t0 = time.perf_counter()

    def check_time(**_):
        if limit is not None and time.perf_counter() - t0 > limit:
            raise TooSlow(f"{path.name}: full settings took more than {limit:.0f} s")

    # --matplotlib=inline registers the PNG formatter at start-up, so a bare matplotlib.figure.Figure
    # (no pyplot import in the notebook) displays as an image too
    client = NotebookClient(nb, timeout=int(min(cell_timeout, limit or cell_timeout)),
                            kernel_name=NATIVE_KERNEL_NAME, on_cell_executed=check_time,
                            extra_arguments=["--matplotlib=inline"],
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except CellTimeoutError:
        if limit is None:
            raise
        raise TooSlow(f"{path.name}: a cell of the full settings ran past {limit:.0f} s") from None
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    return nb, time.perf_counter() - t0


def refresh(path: Path, quick: bool, full_limit: float | None = None) -> dict:
    """Execute one tutorial and write it back with its outputs; return what was done."""
    settings = "quick" if quick else "full"
    try:
        nb, wall = execute(path, quick, limit=None if quick else full_limit)
    except TooSlow as exc:
        log.warning("%s; storing quick-settings outputs instead", exc)
        settings = "quick"
        nb, wall = execute(path, True)
    nb.metadata["fesurf"] = {"outputs": settings, "wall_s": round(wall, 1),
                             "refreshed": datetime.date.today().isoformat(),
                             "by": "scripts/refresh_tutorials.py"}
    images = n_images(nb)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    if images == 0:
        log.warning("%s stores no image: make its plots display (plt.show(), display(fig) or fig as the "
                    "last expression of a cell)", path.name)
    return {"notebook": path.name, "settings": settings, "wall_s": round(wall, 1), "images": images}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="tutorial numbers or file names (default: all)")
    parser.add_argument("--quick", action="store_true", help="small settings (FESURF_TUTORIAL_QUICK=1)")
    parser.add_argument("--missing", action="store_true", help="only notebooks that store no image yet")
    parser.add_argument("--full-limit", type=float, default=None, metavar="SECONDS",
                        help="store quick-settings outputs when full settings take longer than this")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = select(args.names)
    if args.missing:
        paths = [p for p in paths if n_images(nbformat.read(p, as_version=4)) == 0]
    failed = 0
    for path in paths:
        log.info("executing %s (%s settings)", path.name, "quick" if args.quick else "full")
        try:
            done = refresh(path, args.quick, args.full_limit)
        except Exception as exc:  # report every notebook, then fail
            failed += 1
            log.error("%s failed: %s", path.name, str(exc).strip().splitlines()[-1] if str(exc).strip() else exc)
            continue
        log.info("%s: %s settings, %.0f s, %d image(s) stored", done["notebook"], done["settings"],
                 done["wall_s"], done["images"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
