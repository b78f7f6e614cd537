"""PMFs from synthetic umbrella data drawn exactly from the biased Boltzmann distributions.

Samples are exact (inverse CDF over a fine grid of cells, uniform within a
cell), so the only errors are statistical, and the exact answer is -ln of the
Boltzmann density integrated by quadrature over each bin (kT units throughout).
"""
import numpy as np
import pytest

from fesurf.errors import InputError
from fesurf.estimators import compute_pmf
from fesurf.sampling import SampleSet

# 1D double well, barrier 6 kT, tilted by 1 kT per unit x (kT units, x in A)
H, TILT = 6.0, 1.0
KAPPA_1D = 40.0  # umbrella force constant, kT/A^2 (> |U''| = 24 kT/A^2 at the barrier top)
CENTRES_1D = np.linspace(-1.5, 1.5, 15)
DX = 1e-3
GRID_1D = np.arange(-2.5, 2.5, DX) + DX / 2


def u_double_well(x):
    return H * (x**2 - 1.0) ** 2 + TILT * x


def draw_cells(log_p, cells, n, rng, half_width):
    """Exact draws from a density that is constant on small cells (centres ``cells`` [M, d])."""
    p = np.exp(log_p - log_p.max())
    i = rng.choice(p.size, n, p=p / p.sum())
    return cells[i] + rng.uniform(-half_width, half_width, size=(n, cells.shape[1]))


def umbrella_1d(n_per_window, seed):
    rng = np.random.default_rng(seed)
    cells = GRID_1D[:, None]
    x = np.concatenate([draw_cells(-u_double_well(GRID_1D) - 0.5 * KAPPA_1D * (GRID_1D - c) ** 2, cells,
                                   n_per_window, rng, DX / 2)[:, 0] for c in CENTRES_1D])
    u_kn = 0.5 * KAPPA_1D * (x[None, :] - CENTRES_1D[:, None]) ** 2  # reduced bias of every frame in every window
    return SampleSet.from_arrays(
        state_index=np.repeat(np.arange(CENTRES_1D.size), n_per_window), u_kn=u_kn,
        u_ref=np.zeros_like(x),  # the unbiased state differs from every window by its bias only
        cv=x, temperature=300.0, cv_definitions=[{"name": "x"}],
        state_parameters=[{"center": float(c), "kappa": KAPPA_1D} for c in CENTRES_1D])


def exact_bin_pmf(edges):
    idx = np.digitize(GRID_1D, edges) - 1
    w = np.exp(-u_double_well(GRID_1D)) * DX
    return np.array([-np.log(w[idx == b].sum()) for b in range(edges.size - 1)])


@pytest.fixture(scope="module")
def umbrella_big():
    return umbrella_1d(16000, seed=11)


def test_double_well_umbrella_mbar_pmf(umbrella_big):
    pmf = compute_pmf(umbrella_big, cv=0, bins=28, range=(-1.4, 1.4))
    edges = pmf.diagnostics["bin_edges"][0]
    ref = pmf.diagnostics["reference_index"][0]  # pymbar reports values and σ relative to the lowest bin
    exact = exact_bin_pmf(edges)
    exact -= exact[ref]
    err = pmf.values - exact
    # Statistics: the reported σ grows from 0 at the reference bin to 0.04 kT at the far end (the MBAR
    # chain across 15 windows); 0.1 kT is 2.5σ at the worst bin and >4σ over most of the range.
    assert np.all(np.isfinite(pmf.values)) and pmf.uncertainties.max() < 0.05
    assert np.abs(err).max() <= 0.1, np.round(err, 3)
    # A correct 1σ gives 95% coverage of a 2σ band per bin; 26 of the 28 bins is the 90% bound.
    assert np.mean(np.abs(err) <= 2 * pmf.uncertainties) >= 0.9
    assert pmf.cv_names == ["x"] and pmf.unit == "kT" and pmf.method == "MBAR-histogram"
    assert abs(pmf.grid[0][ref] - (-1.0)) < 0.15  # the deeper (left) well


def test_double_well_kde_pmf(umbrella_big):
    pmf = compute_pmf(umbrella_big, cv=0, bins=28, range=(-1.4, 1.4), method="kde", bandwidth=0.03,
                      uncertainty="none")
    h = float(np.sqrt(pmf.diagnostics["kde_covariance"][0, 0]))
    x = pmf.grid[0]
    # The exact expectation of a KDE is the Boltzmann density convolved with the kernel (quadrature).
    p = np.exp(-u_double_well(GRID_1D)) * DX
    smooth = -np.log([np.sum(p * np.exp(-0.5 * ((xi - GRID_1D) / h) ** 2)) for xi in x])
    ref = int(np.argmin(pmf.values))
    err = pmf.values - (smooth - smooth[ref])
    # The KDE uses the same 240k frames as the histogram test with a kernel narrower than its bins
    # (h ~ 0.03 A vs 0.1 A), so its noise is ~1.5x the histogram's (σ <= 0.06 kT); 0.15 kT is 2.5σ.
    assert 0.01 < h < 0.05
    assert np.abs(err).max() <= 0.15, np.round(err, 3)


def test_bootstrap_over_decorrelated_blocks_matches_analytical():
    ss = umbrella_1d(500, seed=5)
    ana = compute_pmf(ss, cv=0, bins=10, range=(-1.4, 1.4))
    boot = compute_pmf(ss, cv=0, bins=10, range=(-1.4, 1.4), uncertainty="bootstrap", n_bootstrap=20, seed=3)
    np.testing.assert_allclose(boot.values, ana.values)  # same point estimate
    keep = ana.uncertainties > 0
    ratio = np.median(boot.uncertainties[keep] / ana.uncertainties[keep])
    # 20 bootstrap replicates estimate each σ to 16% (1/sqrt(2*19)); the median over 9 bins is tighter
    # (~8%), and for independent samples bootstrap and asymptotic MBAR variances agree: [0.7, 1.4] is > 4
    # standard errors wide.
    assert 0.7 < ratio < 1.4, ratio
    runs = [compute_pmf(ss, cv=0, bins=10, range=(-1.4, 1.4), uncertainty="bootstrap", n_bootstrap=2, seed=s)
            for s in (8, 8, 9)]
    # seeded: same replicates (to rounding: a repeated MBAR solve of the same data reuses the converged f_k)
    np.testing.assert_allclose(runs[0].uncertainties, runs[1].uncertainties, rtol=1e-10, atol=1e-12)
    assert not np.array_equal(runs[0].uncertainties, runs[2].uncertainties)


# 2D four-well surface (kT units): barriers 4 kT along x, 2 kT along y, coupled by 0.8 x y
D2 = 0.01
G2 = np.arange(-2.2, 2.2, D2) + D2 / 2
X2, Y2 = np.meshgrid(G2, G2, indexing="ij")


def u_2d(x, y):
    return 4.0 * (x**2 - 1.0) ** 2 + 2.0 * (y**2 - 1.0) ** 2 + 0.8 * x * y


def test_2d_pmf_from_2d_umbrella_windows_and_1d_projection():
    rng = np.random.default_rng(21)
    kappa, n = 6.0, 8000
    c1 = np.linspace(-1.4, 1.4, 3)
    centres = np.array([(a, b) for a in c1 for b in c1])  # 3 x 3 grid of 2D windows
    cells = np.stack([X2.ravel(), Y2.ravel()], axis=1)
    u0 = u_2d(X2, Y2).ravel()
    xy = np.concatenate([draw_cells(-u0 - 0.5 * kappa * ((cells - c) ** 2).sum(1), cells, n, rng, D2 / 2)
                         for c in centres])
    u_kn = 0.5 * kappa * ((xy[None, :, :] - centres[:, None, :]) ** 2).sum(-1)
    ss = SampleSet.from_arrays(state_index=np.repeat(np.arange(len(centres)), n), u_kn=u_kn,
                               u_ref=np.zeros(len(xy)), cv=xy, temperature=300.0,
                               cv_definitions=[{"name": "x"}, {"name": "y"}])
    pmf = compute_pmf(ss, cv=(0, 1), bins=10, range=[(-1.4, 1.4), (-1.4, 1.4)])
    assert pmf.values.shape == (10, 10) and pmf.cv_names == ["x", "y"]
    ex_edges, ey_edges = pmf.diagnostics["bin_edges"]
    ix, iy = np.digitize(X2, ex_edges) - 1, np.digitize(Y2, ey_edges) - 1
    w = np.exp(-u_2d(X2, Y2)) * D2 * D2
    exact = np.array([[-np.log(w[(ix == a) & (iy == b)].sum()) for b in range(10)] for a in range(10)])
    exact -= exact[tuple(pmf.diagnostics["reference_index"])]
    populated = exact - exact.min() <= 3.0  # 48 of 100 bins, >= 400 frames each
    err = (pmf.values - exact)[populated]
    # Reported σ <= 0.06 kT in the populated region: 0.2 kT is > 3σ at every bin there.
    assert pmf.uncertainties[populated].max() < 0.07
    assert np.abs(err).max() <= 0.2, np.round(err, 3)
    assert np.mean(np.abs(err) <= 2 * pmf.uncertainties[populated]) >= 0.9

    # A wider grid with more bins along x than y (pymbar then gets the axes swapped): the bins beyond
    # |x| = 2.2, where no sample can fall, are NaN, and the others agree with the exact PMF as above.
    wide = compute_pmf(ss, cv=(0, 1), bins=[np.linspace(-2.6, 2.6, 14), np.linspace(-1.4, 1.4, 8)])
    wx, wy = wide.diagnostics["bin_edges"]
    counts = np.histogram2d(xy[:, 0], xy[:, 1], bins=[wx, wy])[0]
    assert counts[0].sum() == counts[-1].sum() == 0 and np.all(np.isnan(wide.values[[0, -1]]))
    np.testing.assert_array_equal(np.isnan(wide.values), counts == 0)
    jx, jy = np.digitize(X2, wx) - 1, np.digitize(Y2, wy) - 1
    wexact = np.array([[-np.log(w[(jx == a) & (jy == b)].sum()) if counts[a, b] else np.nan for b in range(7)]
                       for a in range(13)])
    wexact -= wexact[tuple(wide.diagnostics["reference_index"])]
    near = wexact - np.nanmin(wexact) <= 3.0
    assert np.abs((wide.values - wexact)[near]).max() <= 0.2

    # 1D PMF along x from the same 2D windows vs the exact projection -ln ∫ exp(-U) dy.
    px = compute_pmf(ss, cv=0, bins=14, range=(-1.4, 1.4))
    ix1 = np.digitize(G2, px.diagnostics["bin_edges"][0]) - 1
    marg = np.exp(-u_2d(X2, Y2)).sum(1) * D2 * D2
    ex1 = np.array([-np.log(marg[ix1 == b].sum()) for b in range(14)])
    ex1 -= ex1[px.diagnostics["reference_index"][0]]
    # σ <= 0.05 kT along the projection; 0.15 kT is 3σ.
    assert np.abs(px.values - ex1).max() <= 0.15, np.round(px.values - ex1, 3)


def test_pmf_bad_input():
    ss = umbrella_1d(200, seed=1)
    with pytest.raises(InputError, match="CV index 1 is out of range"):
        compute_pmf(ss, cv=1)
    with pytest.raises(InputError, match="out of range"):
        compute_pmf(ss, cv=(0, 3))
    no_ref = SampleSet.from_arrays(state_index=ss.state_index, u_kn=ss.u_kn, cv=ss.cv, temperature=300.0)
    with pytest.raises(InputError, match="u_ref"):
        compute_pmf(no_ref, cv=0)
    with pytest.raises(InputError, match="method"):
        compute_pmf(ss, cv=0, method="spline")
    with pytest.raises(InputError, match="analytical"):
        compute_pmf(ss, cv=0, method="kde", uncertainty="analytical")
    empty = ss.select(np.where(ss.state_index != 7)[0])
    with pytest.raises(InputError, match="empty window"):
        compute_pmf(empty, cv=0)


def test_empty_bin_inside_the_range_is_nan_and_leaves_the_others_alone():
    """A bin that no frame reaches (here: frames with 0 <= x < 0.2 removed) is NaN with a NaN sigma; pymbar's
    FES knows only occupied bins. The other bins are those of the same data on a range without the gap."""
    ss = umbrella_1d(300, seed=2)
    gapped = ss.select(np.where((ss.cv[:, 0] < 0.0) | (ss.cv[:, 0] >= 0.2))[0])
    full = compute_pmf(gapped, cv=0, bins=14, range=(-1.4, 1.4), warn=False)
    assert np.isnan(full.values[7]) and np.isnan(full.uncertainties[7])
    assert np.isfinite(np.delete(full.values, 7)).all()
    right = compute_pmf(gapped, cv=0, bins=6, range=(0.2, 1.4), warn=False)
    np.testing.assert_allclose(right.values, full.values[8:] - full.values[8:].min(), atol=1e-5)


def test_pmf_range_excluding_the_deepest_well_is_referred_to_its_own_minimum():
    ss = umbrella_1d(300, seed=2)
    full = compute_pmf(ss, cv=0, bins=14, range=(-1.4, 1.4), warn=False)
    right = compute_pmf(ss, cv=0, bins=6, range=(0.2, 1.4), warn=False)  # the same bins as full[8:]
    # Same frames and MBAR solution, so the sub-range PMF is the full one re-referenced (solver tolerance).
    np.testing.assert_allclose(right.values, full.values[8:] - full.values[8:].min(), atol=1e-5)
    ref = right.diagnostics["reference_index"][0]
    assert right.values[ref] == 0.0 and right.uncertainties[ref] == 0.0
