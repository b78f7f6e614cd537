"""TorchScript export for PLUMED's PYTORCH_MODEL: float32 (1, n) in, float32 (1, n_out) out; loaded back
through torch.jit.load and compared with the fesurf model (values and autograd derivatives)."""

import numpy as np
import pytest
import torch
from ase.build import molecule

from fesurf.cv import ANGLE, COMBINE, DISTANCE, TORSION
from fesurf.errors import InputError
from fesurf.plumed import export_cv, export_module, export_potential
from fesurf.state import State
from fesurf.units import convert

# float32 model input/output: relative precision ~6e-8 per operation; 1e-5 relative leaves room for the
# nm -> A conversion and a few dozen operations (and is 1000x below any physically relevant difference).
RTOL = 1e-5


def _butane_like():
    pos = [[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [2.0, 1.4, 0.0], [3.4, 1.5, 0.6], [4.0, 0.0, 1.0]]
    return State(positions=pos, atomic_numbers=[6, 6, 6, 6, 1])


@pytest.mark.parametrize("cv", [DISTANCE([0, 3]), ANGLE([0, 1, 2]), TORSION([0, 1, 2, 3]),
                                COMBINE([DISTANCE([0, 1]), DISTANCE([2, 1])], coefficients=[1.0, -1.0])],
                         ids=lambda c: c.to_spec()["type"])
def test_exported_cv_loads_back_and_matches(cv, tmp_path, gen):
    s = _butane_like()
    path = tmp_path / "cv.ptc"
    lines = export_cv(cv, s, path)
    assert lines[-1] == f"cv: PYTORCH_MODEL FILE={path} ARG=" + ",".join(
        f"pos{i}.{c}" for i in range(1, 6) for c in "xyz")
    model = torch.jit.load(str(path))
    scale = 0.1 ** cv.length_power  # A -> nm for lengths, 1 for angles
    for _ in range(4):
        pos = s.positions + 0.2 * torch.randn(s.positions.shape, generator=gen, dtype=torch.float64)
        x = (pos / 10.0).reshape(1, -1).to(torch.float32).requires_grad_(True)
        out = model(x)
        assert out.dtype == torch.float32 and out.shape == (1, 1)
        ref_state = s.replace(positions=pos.clone().requires_grad_(True))
        ref = cv(ref_state)
        assert float(out[0, 0]) == pytest.approx(float(ref[0]) * scale, rel=RTOL, abs=1e-6)
        # derivatives PLUMED takes by autograd: d(cv_nm)/d(x_nm) = scale * 10 * d(cv)/d(x_A)
        (g,) = torch.autograd.grad(out[0, 0], x)
        (gref,) = torch.autograd.grad(ref[0], ref_state.positions)
        np.testing.assert_allclose(g.reshape(-1, 3).numpy(), (gref * scale * 10.0).numpy(), rtol=1e-3, atol=2e-4)


def test_exported_cv_on_a_subset_of_atoms(tmp_path):
    s = _butane_like()
    lines = export_cv(TORSION([0, 1, 2, 3]), s, tmp_path / "t.ptc", atoms=[0, 1, 2, 3], label="phi")
    assert lines[-1].startswith("phi: PYTORCH_MODEL") and "pos5" not in lines[-1]
    model = torch.jit.load(str(tmp_path / "t.ptc"))
    x = (s.positions[:4] / 10).reshape(1, -1).float()
    assert float(model(x)[0, 0]) == pytest.approx(float(TORSION([0, 1, 2, 3])(s)[0]), rel=RTOL)
    with pytest.raises(InputError, match="not in atoms"):
        export_cv(TORSION([0, 1, 2, 4]), s, tmp_path / "x.ptc", atoms=[0, 1, 2, 3])


def test_exported_surrogate_energy_in_kj_per_mol(tmp_path, gen):
    # a Behler-Parrinello surrogate (fesurf.surrogates) on water; untrained weights are as good as trained ones
    # for checking the export: the traced model must equal the eager one on new geometries
    from fesurf.surrogates.bp import BehlerParrinello

    water = State.from_atoms(molecule("H2O"))
    model = BehlerParrinello(elements=[1, 8], hidden=(8, 8), seed=3).double()
    lines = export_potential(model, water, tmp_path / "e.ptc", as_bias=True)
    assert lines[-1] == "BIASVALUE ARG=model.node-0"
    ts = torch.jit.load(str(tmp_path / "e.ptc"))
    for _ in range(3):
        pos = water.positions + 0.05 * torch.randn(water.positions.shape, generator=gen, dtype=torch.float64)
        e = model.energy(water.replace(positions=pos))
        out = ts((pos / 10).reshape(1, -1).float())
        assert out.dtype == torch.float32 and out.shape == (1, 1)
        assert float(out[0, 0]) == pytest.approx(convert(float(e[0]), "eV", "kJ/mol"), rel=RTOL, abs=1e-4)


def test_export_generic_module_and_refusals(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    ts = export_module(net, 3, tmp_path / "m.ptc")
    loaded = torch.jit.load(str(tmp_path / "m.ptc"))
    x = torch.tensor([[0.1, -0.2, 0.3]])
    out = loaded(x)
    assert out.dtype == torch.float32 and out.shape == (1, 2)
    np.testing.assert_allclose(out.detach().numpy(), net.double()(x.double()).detach().numpy(), rtol=RTOL)
    # a model whose trace depends on the data (a branch on the value) is refused
    class Branchy(torch.nn.Module):
        def forward(self, x):
            return x.sum(1, keepdim=True) if float(x.sum()) > 0 else -x.sum(1, keepdim=True)

    with pytest.raises(InputError, match="disagrees"):
        export_module(Branchy(), 2, tmp_path / "b.ptc", example=[[0.0001, 0.0]])
    periodic = State(positions=[[0.0, 0, 0], [1.0, 0, 0]], atomic_numbers=[1, 1], cell=np.eye(3) * 5, pbc=[True] * 3)
    with pytest.raises(InputError, match="periodic"):
        export_cv(DISTANCE([0, 1]), periodic, tmp_path / "p.ptc")
