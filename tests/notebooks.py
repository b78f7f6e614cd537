"""Execute a tutorial notebook in a fresh kernel of the current interpreter, with small settings.

Tutorials read ``FESURF_TUTORIAL_QUICK=1`` to shrink their runs.
"""
import os
import pathlib
import sys

import nbformat
from nbclient import NotebookClient

TUTORIALS = pathlib.Path(__file__).resolve().parents[1] / "tutorials"


def run_notebook(name: str, timeout: int = 600):
    path = TUTORIALS / name
    nb = nbformat.read(path, as_version=4)
    os.environ["FESURF_TUTORIAL_QUICK"] = "1"
    os.environ.setdefault("MPLBACKEND", "Agg")
    # the kernel is the interpreter running the tests (the project's virtual environment)
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME

    client = NotebookClient(nb, timeout=timeout, kernel_name=NATIVE_KERNEL_NAME,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    assert sys.executable  # the native kernel spec launches sys.executable's ipykernel
    return nb


def outputs_text(nb) -> str:
    """All text outputs of a notebook, joined (for asserting on printed results)."""
    chunks = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                chunks.append(out["text"])
            elif "data" in out and "text/plain" in out["data"]:
                chunks.append(out["data"]["text/plain"])
    return "\n".join(chunks)
