"""Execute tutorials/03_umbrella_ti_mbar.ipynb with small settings (FESURF_TUTORIAL_SMALL=1)."""
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NB = Path(__file__).resolve().parents[1] / "tutorials" / "03_umbrella_ti_mbar.ipynb"


def test_tutorial_03_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("FESURF_TUTORIAL_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NB, as_version=4)
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip("no python3 kernel spec installed")
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "gauss-legendre" in outputs and "#! FIELDS time p.x" in outputs
