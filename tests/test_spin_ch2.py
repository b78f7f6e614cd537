"""CH2 singlet/triplet with spin-polarised GFN2-xTB (tblite): one spin-conditioned
model reproduces the adiabatic S-T gap; an MECP is found on it."""
import warnings

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.optimize import BFGS
from ase.units import kcal, mol

from fesurf.errors import InputError
from fesurf.multistate.crossing import find_mecp
from fesurf.potentials import FesurfCalculator, check_potential
from fesurf.state import State
from fesurf.surrogates.diabatic import PairDistanceFeatures
from fesurf.surrogates.spin import SpinConditionedModel, SpinStatePotential, fit_spin_model

tblite_ase = pytest.importorskip("tblite.ase")


def _calc(m):
    return tblite_ase.TBLite(method="GFN2-xTB", multiplicity=m, spin_polarization=1.0, verbosity=0)


def _geom(r1, r2, ang):
    a = np.radians(ang)
    return np.array([[0, 0, 0], [r1, 0, 0], [r2 * np.cos(a), r2 * np.sin(a), 0]])


def test_ch2_spin_model_gap_and_mecp():
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    opt = {}
    for m in (1, 3):
        at = Atoms("CHH", _geom(1.1, 1.1, 110 if m == 1 else 135))
        at.calc = _calc(m)
        BFGS(at, logfile=None).run(fmax=1e-3)
        opt[m] = (at.get_potential_energy(), at.get_positions().copy())
    gap_xtb = (opt[1][0] - opt[3][0]) * mol / kcal
    assert abs(gap_xtb - 13.3) < 0.2  # docs/REFERENCE.md: spin-polarised GFN2 gives 13.3 kcal/mol
    rng = np.random.default_rng(0)
    pos, ene, frc, mult = [], [], [], []
    for i in range(240):  # alternate singlet/triplet labels on random geometries around both minima
        m = 1 if i % 2 == 0 else 3
        g = _geom(rng.uniform(1.0, 1.25), rng.uniform(1.0, 1.25), rng.uniform(95, 150))
        at = Atoms("CHH", g)
        at.calc = _calc(m)
        pos.append(g); ene.append(at.get_potential_energy()); frc.append(at.get_forces()); mult.append(m)
    n = len(pos)
    st = State(positions=torch.as_tensor(np.concatenate(pos)), atomic_numbers=[6, 1, 1] * n,
               system_index=torch.arange(n).repeat_interleave(3), multiplicity=torch.as_tensor(mult))
    model = SpinConditionedModel(PairDistanceFeatures(3, r0=1.5, width=0.3), (1, 3), hidden=(32, 32))
    fit_spin_model(model, st, ene, np.concatenate(frc), epochs=500, lbfgs_steps=500, seed=0)
    # both states in one batch, and the Potential contract
    two = st.select([0, 1])
    both = model.energies_of_states(two)
    assert both.shape == (2, 2)
    assert torch.allclose(model.vertical_gap(two, 1, 3), both[:, 1] - both[:, 0])
    check_potential(SpinStatePotential(model, 3), two)
    with pytest.raises(InputError):
        model.energy(two.replace(multiplicity=torch.tensor([5, 5])))
    em = {}
    for m in (1, 3):
        at = Atoms("CHH", opt[m][1])
        at.calc = FesurfCalculator(SpinStatePotential(model, m))
        BFGS(at, logfile=None).run(fmax=1e-3, steps=500)
        em[m] = at.get_potential_energy()
    gap_model = (em[1] - em[3]) * mol / kcal
    assert abs(gap_model - gap_xtb) < 0.5, (gap_model, gap_xtb)  # measured 0.02 kcal/mol
    res = find_mecp(SpinStatePotential(model, 1), SpinStatePotential(model, 3),
                    State(positions=torch.as_tensor(_geom(1.1, 1.1, 120)), atomic_numbers=[6, 1, 1]), max_steps=2000)
    assert res.converged and res.gap < 1e-3 and res.projected_gradient < 5e-3
