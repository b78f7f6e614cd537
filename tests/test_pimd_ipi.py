"""Peer agreement with i-PI (PyPI ``ipi``, pure Python, run in process).

- fesurf's normal-mode matrix and free ring-polymer frequencies are i-PI's;
- the stored malonaldehyde surrogate driven by i-PI (its Python driver interface, a ``custom`` direct
  forcefield) and by fesurf gives the same centroid-virial kinetic energy and <V> within 2 combined
  sigma. This is the cheap version of ``benchmarks/pimd_ipi_malonaldehyde.py`` (P = 8 instead of 16,
  1,500 production steps instead of 20,000); a convention error (spring constants, bead temperature,
  estimator normalisation) moves K_cv by far more than its sigma (about 6 meV).
"""
import sys
from pathlib import Path

import numpy as np
import pytest

ipi = pytest.importorskip("ipi", reason="i-PI (PyPI 'ipi') is the peer code of these tests; pip install ipi")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from fesurf.md.ring_polymer import free_ring_frequencies, normal_mode_matrix  # noqa: E402


def test_normal_modes_and_frequencies_are_ipis():
    from ipi.utils.nmtransform import mk_nm_matrix, nm_eva

    for P in (1, 2, 3, 4, 7, 16):
        assert np.allclose(normal_mode_matrix(P).numpy(), mk_nm_matrix(P).T, atol=1e-14)
        assert np.allclose(free_ring_frequencies(P), nm_eva(P), atol=1e-14)


def test_malonaldehyde_kinetic_and_potential_agree_with_ipi():
    from pimd_ipi_malonaldehyde import compare

    res = compare(n_steps=1500, n_equilibration=300, stride=5, n_beads=8, seed=1)
    for key in ("kinetic_cv_eV", "potential_eV"):
        r = res[key]
        assert abs(r["z"]) < 2.0, (key, r)
        assert r["fesurf"]["n_frames"] == r["ipi"]["n_frames"] == 300
    # the quantum kinetic energy is far above the classical 27/2 kT = 0.35 eV (zero-point motion)
    assert res["kinetic_cv_eV"]["fesurf"]["value"] > 0.7
