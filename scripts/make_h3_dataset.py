"""Generate the small H3 two-state dataset shipped in fesurf/data/h3/.

Method: FCI/cc-pVDZ (pyscf CASCI over all orbitals with 3 electrons = FCI),
the two lowest doublet roots (spin fixed to S=1/2). Energies only: pyscf has no
analytic gradients for open-shell FCI/CASCI on ROHF orbitals, and the diabatic
model is trained with eigen-free energy losses.

Geometries: triangles near the D3h seam, r_ij = R0 + delta_ij with
R0 ~ U(0.95, 1.25) A and delta ~ U(-0.12, 0.12) A (seeded), plus an
equilateral scan that locates the reference seam minimum by a parabola fit.

Output: fesurf/data/h3/h3_fci_ccpvdz.npz with
  positions [n, 3, 3] (A), energies [n, 2] (eV, absolute), plus
  seam_R [m], seam_E [m] (equilateral scan, eV) and meta (json string).
Run (about 5-10 min on one core):
  nice -n 10 .venv/bin/python scripts/make_h3_dataset.py --n 420 --seed 7
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from ase.units import Hartree
from pyscf import gto, mcscf, scf

log = logging.getLogger("make_h3_dataset")


def triangle(r12, r13, r23):
    """Cartesian coordinates (A) of a triangle with the given side lengths, in the xy plane."""
    x3 = (r12**2 + r13**2 - r23**2) / (2 * r12)
    y3 = np.sqrt(max(r13**2 - x3**2, 0.0))
    return np.array([[0.0, 0.0, 0.0], [r12, 0.0, 0.0], [x3, y3, 0.0]])


def fci_two_roots(pos):
    """The two lowest doublet FCI/cc-pVDZ energies (eV) at positions ``pos`` (A)."""
    mol = gto.M(atom=[["H", tuple(p)] for p in pos], basis="cc-pvdz", spin=1, verbose=0, unit="Angstrom")
    mf = scf.ROHF(mol)
    mf.kernel()
    mc = mcscf.CASCI(mf, mol.nao, 3)
    mc.fcisolver.nroots = 3
    mc.fix_spin_(ss=0.75)
    e = np.sort(np.asarray(mc.kernel()[0]))[:2]
    return e * Hartree


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=420)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "fesurf/data/h3/h3_fci_ccpvdz.npz"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    rng = np.random.default_rng(args.seed)
    seam_R = np.round(np.arange(1.04, 1.1401, 0.01), 4)
    seam_E = []
    t0 = time.time()
    for R in seam_R:
        seam_E.append(fci_two_roots(triangle(R, R, R)))
    seam_E = np.array(seam_E)
    log.info("seam scan done in %.0f s; root splitting max %.2e eV", time.time() - t0, np.abs(np.diff(seam_E, axis=1)).max())
    pos, ene = [], []
    while len(pos) < args.n:
        R0 = rng.uniform(0.95, 1.25)
        r = R0 + rng.uniform(-0.12, 0.12, size=3)
        if r[0] + r[1] <= r[2] + 0.05 or r[0] + r[2] <= r[1] + 0.05 or r[1] + r[2] <= r[0] + 0.05:
            continue
        p = triangle(*r)
        pos.append(p)
        ene.append(fci_two_roots(p))
        if len(pos) % 50 == 0:
            log.info("%d points, %.0f s", len(pos), time.time() - t0)
    c = np.polyfit(seam_R, seam_E[:, 0], 4)
    fine = np.linspace(seam_R[0], seam_R[-1], 10001)
    r_min = float(fine[np.argmin(np.polyval(c, fine))])
    meta = {"method": "FCI/cc-pVDZ (pyscf CASCI full space, fix_spin ss=0.75)", "units": {"positions": "Angstrom", "energies": "eV"},
            "seed": args.seed, "seam_minimum_R": r_min}
    np.savez_compressed(args.out, positions=np.array(pos), energies=np.array(ene), seam_R=seam_R, seam_E=seam_E,
                        meta=json.dumps(meta))
    log.info("wrote %s; reference D3h seam minimum at R = %.4f A", args.out, r_min)


if __name__ == "__main__":
    main()
