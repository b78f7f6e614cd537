"""Committee spread per spin state (SpinCommittee.predict_states): against the members
evaluated one by one at each multiplicity, numpy's population std, and finite differences."""
import numpy as np
import pytest
import torch

from fesurf.errors import InputError
from fesurf.potentials import check_potential
from fesurf.state import State
from fesurf.surrogates.diabatic import PairDistanceFeatures
from fesurf.surrogates.spin import SpinCommittee, SpinConditionedModel, SpinStatePotential


def _members(n, mults=(1, 3, 5)):
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        out.append(SpinConditionedModel(PairDistanceFeatures(3, r0=1.5, width=0.3), mults, hidden=(8,)))
    return out


def _batch():
    rng = np.random.default_rng(0)
    pos = np.concatenate([[[0, 0, 0], [1.1, 0, 0], [-0.4, 1.0, 0]] + rng.normal(0, 0.05, (3, 3)) for _ in range(4)])
    return State(positions=torch.as_tensor(pos), atomic_numbers=[6, 1, 1] * 4,
                 system_index=torch.arange(4).repeat_interleave(3), multiplicity=torch.tensor([1, 3, 1, 3]))


def test_spread_per_state_matches_members_and_numpy():
    torch.set_num_threads(1)
    st = _batch()
    members = _members(4)
    com = SpinCommittee(members)
    out = com.predict_states(st, (1, 3, 5), forces=True)
    assert out["energy"].shape == (4, 3) and out["energy_std"].shape == (4, 3)
    # reference: every member separately, every multiplicity separately
    ref = np.array([[m.energy(st.replace(multiplicity=torch.full((4,), mult))).detach().numpy() for mult in (1, 3, 5)]
                    for m in members])  # [M, K, S]
    assert np.allclose(out["energy"].numpy(), ref.mean(0).T, rtol=0, atol=1e-12)
    assert np.allclose(out["energy_std"].numpy(), ref.std(0).T, rtol=0, atol=1e-12)
    # the spread is per state: it differs between multiplicities of the same geometry
    assert (out["energy_std"].std(1) > 1e-4).all()
    # energies_of_states gives the same in one call; the Potential energy is the mean at each system's own state
    mean, std = com.energies_of_states(st, (1, 3, 5), return_std=True)
    assert torch.equal(mean, out["energy"]) and torch.equal(std, out["energy_std"])
    own = torch.stack([out["energy"][i, (1, 3, 5).index(int(m))] for i, m in enumerate(st.multiplicity)])
    assert torch.allclose(com.energy(st), own, atol=1e-12)
    # per-state forces and force deviation against the members' own forces
    for k, mult in enumerate((1, 3, 5)):
        s_k = st.replace(multiplicity=torch.full((4,), mult))
        f = np.stack([m.energy_and_forces(s_k)[1].numpy() for m in members])  # [M, n_atoms, 3]
        assert np.allclose(out["forces"][k].numpy(), f.mean(0), atol=1e-12)
        dev = np.sqrt(((f - f.mean(0)) ** 2).sum(-1).mean(0)).reshape(4, 3).max(1)
        assert np.allclose(out["force_deviation_max"][:, k].numpy(), dev, atol=1e-12)
    check_potential(SpinStatePotential(com, 5), st)  # forces = -grad E (finite differences) on one state


def test_single_member_has_zero_spread():
    st = _batch()
    model = _members(1)[0]
    for p in (SpinCommittee([model]).predict_states(st), model.predict_states(st, forces=True)):
        assert torch.all(p["energy_std"] == 0) and p["multiplicities"] == [1, 3, 5]
        assert torch.allclose(p["energy"], model.energies_of_states(st), atol=1e-12)
    assert torch.all(model.predict_states(st, forces=True)["force_deviation_max"] == 0)
    _, std = model.energies_of_states(st, (3,), return_std=True)
    assert std.shape == (4, 1) and torch.all(std == 0)


def test_committee_members_must_agree_on_states():
    with pytest.raises(InputError):
        SpinCommittee(_members(1, (1, 3)) + _members(1, (1, 3, 5)))
    with pytest.raises(InputError):
        SpinCommittee([])
