"""External ML potentials: MACE (mace-torch) directly, through TorchSim, in committees and from configs.

No weights are downloaded: a small MACE is trained here for a few epochs on the stored malonaldehyde
GFN2-xTB data, and the contract checks use randomly initialised (seeded) ones.
"""
import importlib.util
import os
import shutil

import numpy as np
import pytest
import torch

if importlib.util.find_spec("mace") is None or importlib.util.find_spec("torch_sim") is None:
    pytest.skip("mace-torch and torch-sim-atomistic are not installed", allow_module_level=True)

from fesurf.data import load_malonaldehyde_dataset, malonaldehyde  # noqa: E402
from fesurf.errors import InputError  # noqa: E402
from fesurf.potentials import check_potential  # noqa: E402
from fesurf.state import State  # noqa: E402
from fesurf.surrogates.external import (ExternalCommittee, MACEPotential, TorchSimPotential,  # noqa: E402
                                        convert_mace_model, fit_mace, load_mace, load_model, mace_from_dataset,
                                        save_mace, small_mace)


def _displaced(n, scale=0.05, seed=1):
    s = State.from_atoms(malonaldehyde()).replicate(n)
    g = torch.Generator().manual_seed(seed)
    return s.replace(positions=s.positions + scale * torch.randn(s.positions.shape, generator=g, dtype=torch.float64))


@pytest.fixture(scope="module")
def random_mace():
    return MACEPotential(small_mace([1, 6, 8], seed=0))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small MACE fitted for 4 epochs to 200 stored GFN2-xTB frames (force matching, seeded)."""
    ds = load_malonaldehyde_dataset()
    train = ds.where("split", lambda s: s == "train")
    val = ds.where("split", lambda s: s == "val")[:64]
    train = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:200]]
    pot = MACEPotential(mace_from_dataset(ds, train_frames=train, seed=0, channels=16, max_ell=1))
    history = fit_mace(pot, ds, train, val, epochs=4, batch_size=8, lr=2e-2, energy_weight=0.1, seed=0)
    path = tmp_path_factory.mktemp("mace") / "mace_small.pt"
    save_mace(pot, path, metadata={"trained_on": "stored malonaldehyde GFN2-xTB frames"})
    return pot, history, path


def test_random_mace_passes_the_potential_contract(random_mace):
    report = check_potential(random_mace, _displaced(2), max_fd_coords=60)
    assert report["max_force_error"] < 1e-6 and report["batch_energy_error"] < 1e-10


def test_mace_stress_equals_finite_differences_of_a_strain():
    """Periodic water box (r_max 4 A > half the 5 A cell: several images): stress by autograd equals
    the central difference of E under a symmetric strain, to 1e-6 relative (FD error ~h^2 = 1e-8)."""
    from ase.build import molecule

    a = molecule("H2O")
    a.cell, a.pbc = np.diag([5.0, 5.2, 4.8]), True
    a.center()
    pot = MACEPotential(small_mace([1, 8], seed=3))
    st = State.from_atoms(a)
    sigma = pot.stress(st)[0]
    vol = float(torch.linalg.det(st.cell[0]))
    h = 1e-4
    for i, j in ((0, 0), (1, 2)):
        eps = torch.zeros(3, 3, dtype=torch.float64)
        eps[i, j] = eps[j, i] = 0.5 * h if i != j else h
        es = []
        for sign in (1.0, -1.0):
            deform = torch.eye(3, dtype=torch.float64) + sign * eps
            es.append(float(pot.energy(st.replace(positions=st.positions @ deform, cell=st.cell @ deform))[0]))
        fd = (es[0] - es[1]) / (2 * h) / vol
        assert float(sigma[i, j]) == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_torchsim_adapter_gives_the_same_energies_as_mace_directly(random_mace):
    ts_pot = TorchSimPotential.from_mace(random_mace)
    state = _displaced(5)
    e_direct, f_direct = random_mace.energy_and_forces(state)
    e_ts, f_ts = ts_pot.energy_and_forces(state)
    assert float((e_ts - e_direct).abs().max()) < 1e-6  # eV (measured: 0 to float64 round-off)
    assert float((f_ts - f_direct).abs().max()) < 1e-6  # eV/A
    # TorchSim's MaceModel caches its batch layout by atomic numbers: one 18-atom system must not reuse 2 x 9
    two = _displaced(2)
    one = State(positions=two.positions, atomic_numbers=two.atomic_numbers, check_distances=False)
    assert ts_pot.energy(two).shape == (2,) and ts_pot.energy(one).shape == (1,)
    assert float(ts_pot.energy(one)[0]) == pytest.approx(float(random_mace.energy(one)[0]), abs=1e-6)
    check_potential(ts_pot, _displaced(2, seed=4), max_fd_coords=30)
    with pytest.raises(InputError, match="detached forces"):
        ts_pot.energy_and_forces(state, create_graph=True)


def test_trained_mace_drives_a_16_window_umbrella_run_in_one_batched_call_per_step(trained):
    from fesurf.cv import distance_difference
    from fesurf.sampling.protocol import LangevinDynamics, Schedule
    from fesurf.sampling.umbrella import umbrella_sampling
    from fesurf.units import kT

    pot, history, _ = trained
    rmse = history["val_force_rmse"]
    assert rmse[-1] < 0.5 * rmse[0]  # measured 0.88 -> ~0.3 eV/A on 64 held-out frames: it learned forces
    calls = []
    original = pot.energy_and_forces

    def counted(state, create_graph=False):
        calls.append(state.n_systems)
        return original(state, create_graph)

    pot.energy_and_forces = counted
    try:
        centers = np.linspace(-0.6, 0.6, 16)
        n_eq, n_prod, stride = 20, 100, 10
        ss = umbrella_sampling(pot, State.from_atoms(malonaldehyde()), distance_difference([0, 5], [4, 5]),
                               centers=centers, kappa=5.0, temperature=300.0,
                               dynamics=LangevinDynamics(timestep=0.5, friction=0.02, seed=0),
                               schedule=Schedule(n_equilibration=n_eq, n_production=n_prod, stride=stride),
                               check_overlap=False)
    finally:
        del pot.energy_and_forces
    assert set(calls) == {16}  # every force call evaluated all 16 windows at once
    assert len(calls) <= n_eq + n_prod + 2  # one call per MD step (+ the start)
    assert ss.N_k.tolist() == [n_prod // stride] * 16
    # the stored unbiased energies are the MACE energies of the stored frames (to float64 round-off)
    frames = np.arange(0, ss.n_frames, 7)
    st = State.from_atoms(malonaldehyde()).replicate(frames.size)
    st = st.replace(positions=torch.as_tensor(ss.read_positions(frames).reshape(-1, 3)))
    e = pot.energy(st).detach().numpy()
    np.testing.assert_allclose(ss.u_ref[frames] * kT(300.0), e, rtol=0, atol=1e-8)
    # the windows follow their restraints: per-window mean CV increases with the centre
    means = np.array([ss.cv[ss.state_index == k, 0].mean() for k in range(16)])
    assert np.all(np.diff(means) > 0)
    ss.close()


def test_committee_of_external_models_reports_member_spread(random_mace):
    members = [random_mace, MACEPotential(small_mace([1, 6, 8], seed=1)), MACEPotential(small_mace([1, 6, 8], seed=2))]
    com = ExternalCommittee(members)
    state = _displaced(3)
    out = com.predict(state)
    one = np.stack([m.energy(state).detach().numpy() for m in members])
    np.testing.assert_allclose(out["energy"].numpy(), one.mean(0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(out["energy_std"].numpy(), one.std(0), rtol=0, atol=1e-10)
    f = np.stack([m.forces(state).numpy() for m in members])
    dev = np.sqrt(((f - f.mean(0)) ** 2).sum(-1).mean(0)).reshape(3, 9).max(1)
    np.testing.assert_allclose(out["force_deviation_max"].numpy(), dev, rtol=0, atol=1e-10)
    assert float(out["energy_std"].min()) > 0
    check_potential(com, state.select([0, 1]), max_fd_coords=24)


def test_mace_files_and_config_specs(trained, tmp_path):
    from fesurf.config import load_config

    pot, _, path = trained
    state = _displaced(2, seed=7)
    e = pot.energy(state).detach()
    for spec in (f"mace:{path}", str(path)):
        back = load_model(spec)
        assert isinstance(back, MACEPotential)
        assert torch.equal(back.energy(state).detach(), e)
    com = load_model(f"mace:{path},{path}")
    assert isinstance(com, ExternalCommittee) and com.n_members == 2
    ts = load_model(f"torchsim:mace:{path}")
    assert isinstance(ts, TorchSimPotential)
    assert float((ts.energy(state) - e).abs().max()) < 1e-6
    # a config names the model relative to its own folder
    (tmp_path / "models").mkdir()
    shutil.copy(path, tmp_path / "models" / "m.pt")
    cfg_text = ('[run]\noutput = "out"\n[system]\nstructure = "builtin:malonaldehyde"\n'
                '[surrogate]\nmodel = "mace:models/m.pt"\n[cv]\ntype = "distance_difference"\n'
                'pairs = [[0, 5], [4, 5]]\n')
    (tmp_path / "run.toml").write_text(cfg_text)
    cfg = load_config(tmp_path / "run.toml")
    assert cfg["surrogate"]["model"] == f"mace:{tmp_path / 'models' / 'm.pt'}"
    (tmp_path / "bad.toml").write_text(cfg_text.replace("models/m.pt", "models/missing.pt"))
    with pytest.raises(InputError, match="missing.pt does not exist"):
        load_config(tmp_path / "bad.toml")


def test_pickled_mace_files_are_refused_and_convertible(random_mace, tmp_path):
    pickled = tmp_path / "native.model"
    torch.save(random_mace.model, pickled)  # what MACE's own training writes
    with pytest.raises(InputError, match="convert_mace_model"):
        load_mace(pickled)
    convert_mace_model(pickled, tmp_path / "safe.pt")
    state = _displaced(2)
    assert torch.equal(load_mace(tmp_path / "safe.pt").energy(state).detach(), random_mace.energy(state).detach())


def test_bad_inputs_to_external_models(random_mace, tmp_path):
    from ase.build import molecule

    with pytest.raises(InputError, match="not trained on"):
        random_mace.energy(State.from_atoms(molecule("NaCl")))
    with pytest.raises(InputError, match="needs a mace-torch model"):
        MACEPotential(torch.nn.Linear(2, 2))
    with pytest.raises(InputError, match="ModelInterface"):
        TorchSimPotential(random_mace)
    with pytest.raises(InputError, match="no MACE model file"):
        load_mace(tmp_path / "nothing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(InputError):
        load_mace(tmp_path / "junk.pt")
    with pytest.raises(InputError, match="non-empty list"):
        ExternalCommittee([])
    with pytest.raises(InputError, match="torchsim:mace:PATH"):
        load_model("torchsim:nocolon")


def test_importing_mace_leaves_the_weights_only_default_alone():
    """mace sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 on import; fesurf's import restores the environment."""
    from fesurf.surrogates.external import import_mace

    import_mace()
    assert os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD") in (None, "0")
