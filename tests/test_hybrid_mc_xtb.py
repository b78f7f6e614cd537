"""Hybrid MC across levels on a real molecule: the stored GFN1-xTB committee proposes, GFN2-xTB (tblite) accepts.

Malonaldehyde, all 16 windows of examples/malonaldehyde_gfn1_to_gfn2.toml at 300 K, a short chain (the
barrier against the direct GFN2 reference is benchmarks/hybrid_mc.py's job). Checked exactly: every stored
frame's u_ref kT is the GFN2-xTB energy of its configuration (labels for free), the reference calls are
counted one per replica per move plus the start, and the oracle's executor path gives the same chain.
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fesurf.config import kappa_in_ev, load_config
from fesurf.data import load_malonaldehyde_gfn1_committee
from fesurf.oracles import XTBOracle
from fesurf.pipeline import build_cv, build_structure
from fesurf.sampling.hybrid_mc import HybridMCDynamics, hybrid_mc_sampling
from fesurf.sampling.protocol import Schedule
from fesurf.state import State
from fesurf.units import kT

pytest.importorskip("tblite")

EXAMPLE = "examples/malonaldehyde_gfn1_to_gfn2.toml"


@pytest.fixture(scope="module")
def setup():
    import pathlib

    cfg = load_config(pathlib.Path(__file__).resolve().parents[1] / EXAMPLE)
    atoms = build_structure(cfg)
    u = cfg["umbrella"]
    centers = np.linspace(u["range"][0], u["range"][1], u["n_windows"])
    return dict(cfg=cfg, atoms=atoms, cv=build_cv(cfg, len(atoms)), centers=centers, kappa=kappa_in_ev(cfg),
                model=load_malonaldehyde_gfn1_committee(), T=cfg["run"]["temperature"])


def _run(setup, n_eq, n_prod, executor=None):
    return hybrid_mc_sampling(setup["model"], XTBOracle(), State.from_atoms(setup["atoms"]), setup["cv"],
                              setup["centers"], setup["kappa"], temperature=setup["T"], executor=executor,
                              dynamics=HybridMCDynamics(timestep=0.5, n_steps=12, seed=0),
                              schedule=Schedule(n_equilibration=n_eq, n_production=n_prod, stride=5),
                              check_overlap=False)


def test_gfn1_committee_proposes_gfn2_accepts_all_16_windows(setup):
    ss = _run(setup, n_eq=10, n_prod=20)
    rep = ss.attrs["hybrid_mc"]
    assert ss.n_states == 16 and ss.N_k.tolist() == [4] * 16
    assert ss.attrs["reference"] == "tblite:GFN2-xTB" and ss.attrs["energy_level"] == "reference"
    # one GFN2 call per window at the start and one per move (md proposals, no failures)
    assert rep["reference_calls_total"] == 16 * (1 + 10 + 20) and sum(rep["failed_reference_calls"]) == 0
    # the two levels differ, so the end-point difference has a spread; some proposals are accepted everywhere
    assert np.all(np.asarray(rep["sd_beta_endpoint_difference"]) > 0)
    assert np.mean(rep["acceptance"]) > 0.2
    # labels for free: u_ref kT of stored frames is the GFN2-xTB energy of their configuration
    # (tolerance 1e-4 eV: tblite's SCF convergence at accuracy 1, a fresh guess vs the chain's restarts)
    frames = [0, 17, 40, 63]
    configs = []
    for p in ss.read_positions(frames):
        a = setup["atoms"].copy()
        a.positions = p
        configs.append(a)
    fresh = np.array([lab.energy for lab in XTBOracle().label(configs)])
    np.testing.assert_allclose(ss.u_ref[frames] * kT(ss.temperature), fresh, rtol=0, atol=1e-4)
    # u_kn = beta (U_ref + bias_k): bias-only energies are u_kn - u_ref, zero in no state below 0
    assert np.all(ss.u_kn - ss.u_ref[None, :] >= 0)


def test_reference_calls_through_an_executor_give_the_same_chain(setup):
    serial = _run(setup, n_eq=0, n_prod=5)
    with ThreadPoolExecutor(2) as ex:
        pooled = _run(setup, n_eq=0, n_prod=5, executor=ex)
    # each executor task builds its own calculator (a fresh SCF guess): energies agree to the SCF tolerance
    np.testing.assert_allclose(pooled.u_ref, serial.u_ref, rtol=0, atol=1e-4 / kT(300.0))
    np.testing.assert_allclose(pooled.positions, serial.positions, rtol=0, atol=1e-12)
    assert pooled.attrs["hybrid_mc"]["reference_calls_total"] == 16 * 6
