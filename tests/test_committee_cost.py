"""Cheap committees: shared-trunk BP committees (shared_layers), their autograd-free fast path
(mean, per-member forces, spread) against autograd, training with fesurf.training.train, and the
spread calibration (factors stored in the model file, curves, stale-factor guard)."""
import json

import numpy as np
import pytest
import torch
from ase.build import molecule

from fesurf.data import load_malonaldehyde_dataset, malonaldehyde
from fesurf.errors import InputError
from fesurf.state import State
from fesurf.surrogates import BehlerParrinello, load_model, model_from_config, save_model
from fesurf.surrogates.bp_fast import fast_committee, fast_supported
from fesurf.training import TrainConfig, calibrate, calibration_curves, spread_and_errors, train

# float64 throughout; the fast path differs from autograd by summation order only (observed ~1e-15
# relative), so 1e-12 leaves three orders of magnitude for rounding
TOL = 1e-12


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _randomise(model, seed=0):
    """Untrained models have unit feature scaling and equal weights scales; randomise the buffers and
    give the per-member layers distinct values so every path is exercised."""
    gen = torch.Generator().manual_seed(seed)
    model.feature_std.copy_(0.5 + torch.rand(model.feature_std.shape, generator=gen, dtype=torch.float64))
    model.feature_mean.copy_(torch.randn(model.feature_mean.shape, generator=gen, dtype=torch.float64))
    model.element_energy.copy_(torch.randn(model.element_energy.shape, generator=gen, dtype=torch.float64))
    model.energy_scale.fill_(0.3)
    with torch.no_grad():
        for b in model.mlp.biases:
            b.copy_(0.1 * torch.randn(b.shape, generator=gen, dtype=torch.float64))
    return model


def _states():
    gen = torch.Generator().manual_seed(11)
    one = State.from_atoms(malonaldehyde())
    batch = one.replicate(3)
    batch = batch.replace(positions=batch.positions + 0.1 * torch.randn(batch.positions.shape, generator=gen,
                                                                       dtype=torch.float64))
    no_oxygen = State.from_atoms([molecule("C2H6"), molecule("C2H6")])  # O known to the model, absent here
    no_oxygen = no_oxygen.replace(positions=no_oxygen.positions + 0.05 * torch.randn(
        no_oxygen.positions.shape, generator=gen, dtype=torch.float64))
    return {"single": one, "batched": batch, "oxygen_absent": no_oxygen}


def _autograd_member_forces(model, state):
    """Per-member energies and forces, one autograd backward pass per member (independent reference)."""
    pos = state.positions.clone().requires_grad_(True)
    e = model._member_outputs(pos, state)[0]
    forces = []
    for k in range(model.n_members):
        (g,) = torch.autograd.grad(e[k].sum(), pos, retain_graph=True)
        forces.append(-g)
    return e.detach(), torch.stack(forces)


def _dpgen_deviation(forces, system_index, n_systems):
    """max over atoms of sqrt(mean_m |F_m - <F>|^2), per system (numpy, from the definition)."""
    f = forces.numpy()
    dev = np.sqrt(((f - f.mean(0)) ** 2).sum(-1).mean(0))
    return np.array([dev[system_index.numpy() == s].max() for s in range(n_systems)])


MODELS = [((8,), 1, 0), ((8,), 1, 1), ((8,), 3, 0), ((8,), 3, 1),
          ((16, 12), 3, 0), ((16, 12), 3, 1), ((16, 12), 3, 2), ((8, 6, 5), 4, 1), ((8, 6, 5), 4, 3)]


@pytest.mark.parametrize("hidden,n_members,shared", MODELS)
def test_fast_path_equals_autograd_for_every_sharing(hidden, n_members, shared):
    """Independent members (shared_layers=0), shared trunks of every depth and the last-layer ensemble:
    the fast path's mean energy and forces, per-member energies and forces, energy spread and DP-GEN force
    deviation equal autograd (per-member backward passes) to float64 rounding."""
    model = _randomise(BehlerParrinello([1, 6, 8], hidden=hidden, n_members=n_members, shared_layers=shared,
                                        seed=3), seed=shared)
    for name, state in _states().items():
        assert fast_supported(model, state, create_graph=False)
        e_fast, f_fast = model.energy_and_forces(state)
        e_ref, f_ref = model.energy_and_forces(state, fast=False)
        assert _rel(e_fast, e_ref) < TOL and _rel(f_fast, f_ref) < TOL, name
        em_ref, fm_ref = _autograd_member_forces(model, state)
        em, fm, _ = model.member_energies_and_forces(state)
        assert _rel(em, em_ref) < TOL and _rel(fm, fm_ref) < TOL, name
        p = model.predict(state)
        assert _rel(p["member_forces"], fm_ref) < TOL and _rel(p["forces"], fm_ref.mean(0)) < TOL
        assert _rel(p["energy"], em_ref.mean(0)) < TOL
        if n_members > 1:
            assert _rel(p["energy_std"], em_ref.std(0, unbiased=False)) < 1e-10  # a difference of close numbers
            dev = _dpgen_deviation(fm_ref, state.system_index, state.n_systems)
            assert np.allclose(p["force_deviation_max"].numpy(), dev, rtol=1e-10, atol=0)
        # one gradient seed (the mean's) instead of M: same mean forces and energy spread
        q = model.predict(state, force_deviation=False)
        assert "force_deviation_max" not in q and "member_forces" not in q
        assert _rel(q["forces"], f_ref) < TOL and torch.equal(q["energy_std"], p["energy_std"])


@pytest.mark.parametrize("acsf", [dict(angular_shifts=()), dict(zetas=(1.0, 2.0, 4.0), lambdas=(1.0,)),
                                  dict(n_radial=1, angular_shifts=(1.5,))])
def test_fast_committee_for_other_descriptor_settings(acsf):
    """No angular terms, zeta 2 (a squared term) and a single lambda, one radial shell: per-member
    forces of a shared-trunk committee equal autograd."""
    model = _randomise(BehlerParrinello([1, 6, 8], hidden=(6,), n_members=3, shared_layers=1, acsf=acsf, seed=8))
    state = _states()["batched"]
    _, fm_ref = _autograd_member_forces(model, state)
    assert _rel(model.predict(state)["member_forces"], fm_ref) < TOL


def test_heteroscedastic_shared_trunk_uses_autograd():
    """Heteroscedastic heads are outside the fast path: predict falls back to autograd and still gives
    per-member forces (checked member by member) and the aleatoric spread."""
    model = _randomise(BehlerParrinello([1, 6, 8], hidden=(8, 8), n_members=3, shared_layers=1,
                                        heteroscedastic=True, seed=6))
    state = _states()["batched"]
    assert not fast_supported(model, state, create_graph=False)
    p = model.predict(state)
    _, fm_ref = _autograd_member_forces(model, state)
    assert _rel(p["member_forces"], fm_ref) < TOL and p["aleatoric_std"].shape == (state.n_systems,)


def test_fast_committee_float32_matches_float64():
    state = _states()["batched"]
    model = _randomise(BehlerParrinello([1, 6, 8], hidden=(16, 16), n_members=4, shared_layers=2, seed=5))
    e64, f64, fm64 = fast_committee(model, state)
    e32, f32, fm32 = fast_committee(model.to(torch.float32), state.to(torch.float32))
    assert e32.dtype == f32.dtype == fm32.dtype == torch.float32
    # float32 rounding: ~1e-7 relative per operation, a few hundred operations deep
    assert _rel(e32.double(), e64) < 1e-5 and _rel(f32.double(), f64) < 1e-4 and _rel(fm32.double(), fm64) < 1e-4


def test_shared_layers_structure_config_and_members():
    model = _randomise(BehlerParrinello([1, 6, 8], hidden=(8, 6), n_members=3, shared_layers=1, seed=2))
    ws = [tuple(w.shape) for w in model.mlp.weights]
    assert ws == [(1, 3, model.acsf.n_features, 8), (3, 3, 8, 6), (3, 3, 6, 1)]
    cfg = model.config()
    assert cfg["shared_layers"] == 1
    assert "shared_layers" not in BehlerParrinello([1, 8], hidden=(4,)).config()  # old configs stay as they were
    clone = model_from_config(cfg)
    clone.load_state_dict(model.state_dict())
    state = _states()["batched"]
    assert torch.equal(clone.energy(state), model.energy(state))
    # a sub-committee keeps the trunk and its members' heads
    sub = model.select_members([2, 0])
    em, fm, _ = model.member_energies_and_forces(state)
    es, fs, _ = sub.member_energies_and_forces(state)
    assert _rel(es, em[[2, 0]]) < TOL and _rel(fs, fm[[2, 0]]) < TOL
    with pytest.raises(InputError, match="shared_layers"):
        BehlerParrinello([1, 8], hidden=(4, 4), n_members=2, shared_layers=3)
    for bad in (1.5, None, "1", True, -1):
        with pytest.raises(InputError, match="shared_layers"):
            BehlerParrinello([1, 8], hidden=(4, 4), n_members=2, shared_layers=bad)


def test_shared_trunk_from_a_member_starts_equal_to_it():
    source = _randomise(BehlerParrinello([1, 6, 8], hidden=(8, 8), n_members=3, seed=7))
    state = _states()["batched"]
    e1, f1 = source.select_members([1]).energy_and_forces(state)
    ll = source.shared_trunk_from(1, n_members=4)
    assert ll.shared_layers == 2 and ll.n_members == 4
    em, fm, _ = ll.member_energies_and_forces(state)
    assert all(_rel(em[k], e1) < TOL and _rel(fm[k], f1) < TOL for k in range(4))
    noisy = source.shared_trunk_from(1, n_members=4, head_noise=0.1, seed=1)
    assert float(noisy.predict(state)["energy_std"].min()) > 0
    with pytest.raises(InputError, match="member"):
        source.shared_trunk_from(3)


@pytest.fixture(scope="module")
def mal():
    return load_malonaldehyde_dataset()


@pytest.fixture(scope="module")
def trained(mal):
    """A last-layer ensemble trained by fesurf.training.train with bootstrap weights on 60 frames."""
    tr, va = torch.arange(0, 60), torch.arange(60, 100)
    model = BehlerParrinello([1, 6, 8], hidden=(8, 8), n_members=4, shared_layers=2, seed=4,
                             acsf=dict(n_radial=6, angular_shifts=(1.5, 2.5), zetas=(1,)))
    cfg = TrainConfig(epochs=15, batch_size=10, lr=3e-2, seed=4, bootstrap=True)
    hist = train(model, mal, tr, va, cfg)
    return model, hist


def test_training_a_shared_trunk_committee(trained, mal):
    from fesurf.training import evaluate
    from fesurf.training.fit import _prepare

    model, hist = trained
    untrained = BehlerParrinello([1, 6, 8], hidden=(8, 8), n_members=4, shared_layers=2, seed=4,
                                 acsf=dict(n_radial=6, angular_shifts=(1.5, 2.5), zetas=(1,)))
    _prepare(untrained, mal, torch.arange(0, 60), TrainConfig(seed=4))
    va = torch.arange(60, 100)
    # deterministic run (seeded); observed: val loss x0.58, force MAE 0.60 -> 0.44 eV/A
    assert min(hist["val_loss"]) < 0.7 * hist["val_loss"][0]
    assert evaluate(model, mal, va)["force_mae_eV_A"] < 0.8 * evaluate(untrained, mal, va)["force_mae_eV_A"]
    assert [w.shape[0] for w in model.mlp.weights] == [1, 1, 4]  # the trunk stays shared
    # bootstrap weights make the heads differ: a nonzero spread on held-out frames
    d = spread_and_errors(model, mal, torch.arange(100, 140))
    assert d["energy_std"].min() > 0 and d["force_deviation_max"].min() > 0


def test_calibration_factors_make_the_mean_square_spread_equal_the_mean_square_error(trained, mal):
    """On the calibration frames, k^2 <std^2> = <err^2> by construction; checked against errors computed
    here from predict() and the reference labels (energies in eV, max atomic force errors in eV/A)."""
    model, _ = trained
    frames = torch.arange(100, 160)
    report = calibrate(model, mal, frames, n_bins=6)
    assert model.calibration["energy_std_factor"] == report["energy_std_factor"] > 0
    state, e_ref, f_ref = mal.batch(frames)
    p = model.predict(state)
    err_e = (p["energy"] - e_ref).numpy()
    err_f = (p["forces"] - f_ref).norm(dim=1).numpy()
    err_f_max = np.array([err_f[state.system_index.numpy() == s].max() for s in range(state.n_systems)])
    assert np.isclose(np.mean(p["energy_std_calibrated"].numpy() ** 2), np.mean(err_e ** 2), rtol=1e-9)
    assert np.isclose(np.mean(p["force_deviation_max_calibrated"].numpy() ** 2), np.mean(err_f_max ** 2), rtol=1e-9)
    assert torch.equal(p["energy_std_calibrated"], p["energy_std"] * report["energy_std_factor"])
    # curves: equal-count bins that cover every frame; the calibrated curve's bin-weighted mean squares agree
    for key in ("energy", "forces"):
        c = report["curves_calibrated"][key]
        assert sum(c["n_per_bin"]) == len(frames) and len(c["n_per_bin"]) == 6
        assert np.all(np.diff(c["spread"]) >= 0)
        lhs = np.dot(c["n_per_bin"], np.square(c["spread_rms"]))
        assert np.isclose(lhs, np.dot(c["n_per_bin"], np.square(c["error_rms"])), rtol=1e-9)
    # curves on other frames use the stored factors
    other = calibration_curves(model, mal, torch.arange(160, 200), n_bins=4)
    assert other["factors"]["force_deviation_factor"] == report["force_deviation_factor"]


def test_calibration_travels_with_the_model_file(trained, mal, tmp_path):
    model, _ = trained
    calibrate(model, mal, torch.arange(100, 160))
    path = tmp_path / "ll.pt"
    save_model(model, path)
    assert json.loads(path.with_suffix(".json").read_text())["calibration"]["n_frames"] == 60
    back = load_model(path)  # weights_only loading
    assert back.calibration["energy_std_factor"] == model.calibration["energy_std_factor"]
    state = _states()["batched"]
    p, q = model.predict(state), back.predict(state)
    assert torch.equal(p["force_deviation_max_calibrated"], q["force_deviation_max_calibrated"])
    # float32 copy: same float32-rounded weights, the factors still apply
    assert "energy_std_calibrated" in back.to(torch.float32).predict(state.to(torch.float32))
    # a file whose weights were edited after calibration is refused at load time
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["mlp.weights.2"] = payload["state_dict"]["mlp.weights.2"] * 1.01
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(InputError, match="calibration belongs to other weights"):
        load_model(tmp_path / "edited.pt")
    payload = torch.load(path, weights_only=True)
    payload["calibration"] = "{not json"
    torch.save(payload, tmp_path / "damaged.pt")
    with pytest.raises(InputError, match="calibration entry is not valid JSON"):
        load_model(tmp_path / "damaged.pt")


def test_training_after_calibration_invalidates_the_factors(mal):
    model = _randomise(BehlerParrinello([1, 6, 8], hidden=(6,), n_members=3, shared_layers=1, seed=1))
    frames = torch.arange(0, 20)
    calibrate(model, mal, frames)
    state = _states()["single"]
    assert "energy_std_calibrated" in model.predict(state)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.energy(state).sum().backward()
    opt.step()
    with pytest.raises(InputError, match="weights changed since its spread was calibrated"):
        model.predict(state)
    # raw spreads stay available (and accuracy metrics, which use them) without recalibrating
    assert "energy_std_calibrated" not in model.predict(state, calibrated=False)
    from fesurf.training import evaluate
    assert evaluate(model, mal, frames)["n_frames"] == 20
    with pytest.raises(InputError, match="weights changed"):
        save_model(model, "/nonexistent/never_written.pt")
    calibrate(model, mal, frames)  # recalibration on the new weights
    assert "force_deviation_max_calibrated" in model.predict(state)
    model.clear_calibration()
    assert "energy_std_calibrated" not in model.predict(state)


def test_calibration_bad_inputs(mal):
    model = BehlerParrinello([1, 6, 8], hidden=(4,), n_members=2, shared_layers=1)
    for bad in (0.0, -1.0, float("nan"), float("inf"), "2", True):
        with pytest.raises(InputError, match="finite positive"):
            model.set_calibration(bad, 1.0)
    with pytest.raises(InputError, match="at least 2 held-out frames"):
        calibrate(model, mal, [3])
    with pytest.raises(InputError, match="n_members >= 2"):
        calibrate(BehlerParrinello([1, 6, 8], hidden=(4,)), mal, [1, 2, 3])
    same = BehlerParrinello([1, 6, 8], hidden=(4,), n_members=1).shared_trunk_from(0, n_members=3)
    with pytest.raises(InputError, match="spread is zero"):
        calibrate(same, mal, [1, 2, 3])
