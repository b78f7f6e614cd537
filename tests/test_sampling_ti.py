"""TI (Gauss-Legendre and trapezoid) and MBAR on harmonic -> harmonic against the analytic Delta A."""
import numpy as np
import pytest

from fesurf.errors import InputError
from fesurf.estimators import delta_f, integrate_ti, ti
from fesurf.potentials import Harmonic
from fesurf.sampling import fep_sampling, lambda_from_configurations, lambda_nodes, thermodynamic_integration
from fesurf.state import State
from fesurf.md.integrators import ACCELERATION

from _sampling_models import KT, T

KA = 1.0  # eV/A^2


def _start(lambdas, ratio):
    """One system per window; masses scaled with k(lambda) so every window has omega = 0.5/fs
    (configurational averages do not depend on masses; this keeps every window equally fast)."""
    k_lam = (1 - lambdas) * KA + lambdas * KA * ratio
    masses = k_lam * ACCELERATION / 0.5**2
    n = len(lambdas)
    return State(positions=np.zeros((n, 3)), atomic_numbers=[1] * n, masses=masses, system_index=np.arange(n))


def _mean_dudl_exact(lam, ratio):
    # <dU/dlambda> = 3/2 kT (kb - ka) / k(lambda) for an isotropic 3D oscillator, in kT
    return 1.5 * (ratio - 1.0) / (1.0 + lam * (ratio - 1.0))


@pytest.mark.parametrize("ratio", [10.0, 100.0])
def test_ti_gauss_legendre_beats_trapezoid_and_mbar(ratio):
    """Statistical basis: ~2000 decorrelated frames per window (omega dt = 0.5, friction 0.5/fs,
    stride 5); each window mean of dU/dlambda has relative sigma sqrt(2/3/n) ~ 2%, propagated
    by the estimators into sigma(Delta A) ~ 0.05-0.1 kT. Each TI estimate must equal the
    analytic Delta A plus its own (deterministic) quadrature error within 4 sigma; MBAR
    must equal the analytic value within 4 sigma."""
    n = 11
    exact = 1.5 * np.log(ratio)  # kT: 3 dimensions x 1/2 ln(kb/ka)
    b = Harmonic(k=KA * ratio)
    runs = {}
    for quad in ("gauss-legendre", "trapezoid"):
        lam = lambda_nodes(n, quad)
        runs[quad] = thermodynamic_integration(Harmonic(k=KA), b, _start(lam, ratio), n_lambdas=n, quadrature=quad,
                                               temperature=T, timestep=1.0, friction=0.5, n_equilibration=200,
                                               n_production=10000, stride=5, seed=3, store_positions=False)
    errors = {}
    for quad, ss in runs.items():
        fe = ti(ss, method=quad)
        lam = np.array([p["lambda"] for p in ss.state_parameters])
        quad_bias = integrate_ti(lam, _mean_dudl_exact(lam, ratio), method=quad).value - exact
        assert abs(fe.value - (exact + quad_bias)) <= 4 * fe.error + 1e-9, (quad, fe.value, exact, quad_bias)
        errors[quad] = abs(fe.value - exact)
    assert errors["gauss-legendre"] < errors["trapezoid"]
    mb = delta_f(runs["trapezoid"], "MBAR", from_state=0, to_state=-1)
    assert abs(mb.value - exact) <= 4 * mb.error


def test_fep_user_configurations_and_bad_input():
    ss = lambda_from_configurations([0, 0, 1, 1], [0.0, 0.01, 0.02, 0.0], [0.01, 0.0, 0.0, 0.02], [0.0, 1.0],
                                    temperature=T)
    assert np.allclose(ss.dudl, np.array([0.01, -0.01, -0.02, 0.02]) / KT)
    assert np.allclose(ss.u_kn[1], np.array([0.01, 0.0, 0.0, 0.02]) / KT)
    with pytest.raises(InputError, match="empty window"):
        lambda_from_configurations([0, 0], [0.0, 0.0], [0.0, 0.0], [0.0, 1.0], temperature=T)
    with pytest.raises(InputError, match="mismatched temperatures"):
        fep_sampling(Harmonic(k=1.0), Harmonic(k=2.0), _start(np.array([0.0, 1.0]), 2.0), n_lambdas=2,
                     temperature=[300.0, 310.0])
    with pytest.raises(InputError, match="empty list"):
        fep_sampling(Harmonic(k=1.0), Harmonic(k=2.0), _start(np.array([0.0]), 2.0), lambdas=[], temperature=T)
