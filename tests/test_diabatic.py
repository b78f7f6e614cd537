"""Diabatic-matrix model: the analytic E x e (linear vibronic coupling) acceptance
and the mechanics (Hellmann-Feynman forces, NACs, NaN safety, CVs, persistence)."""
import math

import pytest
import torch

from fesurf.errors import InputError
from fesurf.multistate.models import DisplacedHarmonic, LinearVibronicCoupling
from fesurf.potentials import check_potential
from fesurf.state import State
from fesurf.surrogates.diabatic import (AdiabaticPotential, CartesianFeatures, DiabaticCV, DiabaticModel,
                                        PairDistanceFeatures, eigen_free_targets, fit_diabatic,
                                        load_diabatic_model, nac_loss)
from fesurf.multistate.crossing import find_meci

K, G = 2.0, 0.5  # eV/A^2, eV/A: E = rho^2 -+ rho/2


def _points(xy):
    xy = torch.as_tensor(xy, dtype=torch.float64)
    pos = torch.cat([xy, torch.zeros(len(xy), 1, dtype=torch.float64)], dim=1)
    return State(positions=pos, atomic_numbers=[1] * len(xy), system_index=torch.arange(len(xy)))


def _disc(n, radius, seed):
    g = torch.Generator().manual_seed(seed)
    r = radius * torch.sqrt(torch.rand(n, generator=g, dtype=torch.float64))
    th = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    return _points(torch.stack([r * torch.cos(th), r * torch.sin(th)], 1))


@pytest.fixture(scope="module")
def exe_fit():
    torch.set_num_threads(1)
    ref = LinearVibronicCoupling(k=K, g=G)
    train = _disc(200, 0.6, seed=0)
    energies, forces = ref.adiabatic_energies_and_forces(train)
    model = DiabaticModel(CartesianFeatures((0, 1)), 2, hidden=(16, 16))
    fit_diabatic(model, train, energies, forces, epochs=300, lr=1e-2, lbfgs_steps=300, smoothness=1e-4, seed=0)
    return ref, model, train, energies, forces


def test_analytic_lvc_exact_and_contract():
    ref = LinearVibronicCoupling(k=K, g=G)
    s = _points([[0.3, 0.1], [-0.2, 0.25], [0.05, -0.4]])
    e = ref.adiabatic_energies(s)
    rho = s.positions[:, :2].norm(dim=1)
    assert torch.allclose(e, ref.exact_energies(rho), atol=1e-13)
    c = ref.couplings(s)
    assert torch.allclose(c["nac"].norm(dim=1), 1 / (2 * rho), rtol=1e-10)
    for i in (0, 1):  # away from the seam, HF forces equal finite differences
        check_potential(AdiabaticPotential(ref, i), s)
    check_potential(AdiabaticPotential(DisplacedHarmonic(), 0), s)


def test_nan_safe_at_exact_degeneracy():
    ref = LinearVibronicCoupling(k=K, g=G)
    s = _points([[0.0, 0.0]])
    e, f = ref.adiabatic_energies_and_forces(s)
    assert torch.isfinite(e).all() and torch.isfinite(f).all()
    assert float((e[0, 1] - e[0, 0]).abs()) == 0.0
    # the force there is one branch's: |dE/dR| equals the cone slope g in the chosen direction
    assert abs(float(f[0, :2, 0].norm()) - G) < 1e-12
    c = ref.couplings(s)
    assert torch.isfinite(c["nac"]).all()
    # autograd through the Potential's energy at the seam stays finite too
    pos = s.positions.clone().requires_grad_(True)
    AdiabaticPotential(ref, 0).energy(s.replace(positions=pos)).sum().backward()
    assert torch.isfinite(pos.grad).all()


def test_eigen_free_targets_two_states():
    e = torch.tensor([[1.0, 3.0], [0.5, 0.5]], dtype=torch.float64)
    v, _ = eigen_free_targets(e)
    # column 1 is gap^2/4 for two states
    assert torch.allclose(v, torch.tensor([[2.0, 1.0], [0.5, 0.0]], dtype=torch.float64))


def test_exe_cone_gap_and_slope(exe_fit):
    ref, model, *_ = exe_fit
    # locate the model's own intersection (MECI search) and check the gap there
    res = find_meci(model, _points([[0.05, -0.03]]), coordinates_mask=torch.tensor([[True, True, False]]))
    assert res.converged
    assert res.gap < 1e-3  # eV (acceptance: < 1 meV at the intersection)
    assert float(res.state.positions[0, :2].norm()) < 0.01  # at the true apex (origin)
    # linear slope of the cone: (E1 - E0) / (2 rho) = g within 5 %, in several directions
    rho = torch.tensor([0.02, 0.05, 0.1, 0.2], dtype=torch.float64)
    for ang in (0.3, 1.9, 4.0):
        s = _points(torch.stack([rho * math.cos(ang), rho * math.sin(ang)], 1))
        e = model.adiabatic_energies(s)
        slope = (e[:, 1] - e[:, 0]) / (2 * rho)
        assert ((slope - G).abs() / G).max() < 0.05


def test_exe_nac_magnitude(exe_fit):
    _, model, *_ = exe_fit
    rho = torch.tensor([0.05, 0.1, 0.2, 0.3, 0.4, 0.5], dtype=torch.float64)
    for ang in (0.3, 1.9, 4.0):
        s = _points(torch.stack([rho * math.cos(ang), rho * math.sin(ang)], 1))
        nac = model.couplings(s, 0, 1)["nac"].norm(dim=1)
        assert ((nac * 2 * rho - 1.0).abs()).max() < 0.05  # |d01| within 5 % of 1/(2 rho)


def _fit_single_surface(train, energy, forces, seed=0):
    """A smooth direct fit of one adiabat (same width/activation as the diabatic nets)."""
    torch.manual_seed(seed)
    feat = CartesianFeatures((0, 1))
    net = torch.nn.Sequential(torch.nn.Linear(2, 16, dtype=torch.float64), torch.nn.SiLU(),
                              torch.nn.Linear(16, 16, dtype=torch.float64), torch.nn.SiLU(),
                              torch.nn.Linear(16, 1, dtype=torch.float64))
    pos = train.positions.clone().requires_grad_(True)

    def loss_fn():
        e = net(feat(train.replace(positions=pos)))[:, 0]
        (g,) = torch.autograd.grad(e.sum(), pos, create_graph=True)
        return ((e - energy) ** 2).mean() / energy.var() + ((g + forces) ** 2).mean() / forces.var()

    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad(); loss = loss_fn(); loss.backward(); opt.step()
    lb = torch.optim.LBFGS(net.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        lb.zero_grad(); loss = loss_fn(); loss.backward(); return loss

    lb.step(closure)
    return lambda s: net(feat(s))[:, 0].detach()


def test_single_surface_fit_rounds_the_cusp(exe_fit):
    ref, model, train, energies, forces = exe_fit
    single = _fit_single_surface(train, energies[:, 0], forces[..., 0])
    near = _disc(200, 0.05, seed=3)  # within 0.05 A of the apex
    exact = ref.adiabatic_energies(near)[:, 0]
    err_single = float(((single(near) - exact) ** 2).mean().sqrt())
    err_diab = float(((model.adiabatic_energies(near)[:, 0] - exact) ** 2).mean().sqrt())
    assert err_diab * 3 <= err_single, (err_diab, err_single)


def test_learned_model_potential_contract_and_cvs(exe_fit, tmp_path):
    _, model, *_ = exe_fit
    s = _points([[0.3, 0.1], [-0.2, 0.25]])
    check_potential(AdiabaticPotential(model, 0), s, force_rtol=1e-6)
    cv_d, cv_c = DiabaticCV(model, "difference"), DiabaticCV(model, "coupling")
    h = model.diabatic_matrix(s)
    assert torch.allclose(cv_d(s), h[:, 0, 0] - h[:, 1, 1])
    assert torch.allclose(cv_c(s), h[:, 0, 1].abs(), atol=1e-9)
    path = tmp_path / "m.pt"
    model.save(path)
    again = load_diabatic_model(path)
    assert torch.equal(again.diabatic_matrix(s), model.diabatic_matrix(s))


def test_pair_distance_features_invariant_and_errors():
    model = DiabaticModel(PairDistanceFeatures(3), 2, hidden=(8,))
    pos = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0.4, 0.9, 0], [0.1, 0, 0.1], [1.1, 0, 0], [0.5, 1.0, 0.2]],
                       dtype=torch.float64)
    s = State(positions=pos, atomic_numbers=[1] * 6, system_index=[0, 0, 0, 1, 1, 1])
    check_potential(AdiabaticPotential(model, 1), s)
    with pytest.raises(InputError):
        AdiabaticPotential(model, 2)
    with pytest.raises(InputError):
        fit_diabatic(model, s, torch.zeros(3, 2))


def test_nac_loss_sign_insensitive():
    idx = torch.tensor([0, 0, 1])
    r = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    flipped = r.clone(); flipped[2] *= -1
    assert float(nac_loss(flipped, r, idx)) == 0.0
    assert float(nac_loss(r * 1.1, r, idx)) > 0.0
