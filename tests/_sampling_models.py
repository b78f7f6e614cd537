"""Shared exact references for the sampling tests (quadrature of Boltzmann densities)."""
import numpy as np
from scipy.integrate import quad

from fesurf.units import KB

T = 300.0
KT = KB * T


def exact_binned_pmf_1d(u_of_x, edges, kt=KT):
    """-ln of the Boltzmann weight of each bin, in kT (bin averages, like a histogram estimate)."""
    return np.array([-np.log(quad(lambda x: np.exp(-u_of_x(x) / kt), a, b, epsabs=0, epsrel=1e-12)[0])
                     for a, b in zip(edges[:-1], edges[1:])])


def exact_binned_pmf_2d(surface, ex, ey, kt=KT, sub=24):
    """-ln of the Boltzmann weight of each 2D bin (midpoint rule with sub x sub points per bin), kT."""
    out = np.empty((ex.size - 1, ey.size - 1))
    for i in range(ex.size - 1):
        xs = ex[i] + (np.arange(sub) + 0.5) / sub * (ex[i + 1] - ex[i])
        for j in range(ey.size - 1):
            ys = ey[j] + (np.arange(sub) + 0.5) / sub * (ey[j + 1] - ey[j])
            X, Y = np.meshgrid(xs, ys, indexing="ij")
            e = surface(X, Y) / kt
            m = e.min()
            out[i, j] = m - np.log(np.mean(np.exp(-(e - m))) * (ex[i + 1] - ex[i]) * (ey[j + 1] - ey[j]))
    return out
