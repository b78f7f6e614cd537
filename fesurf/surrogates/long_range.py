"""Long-range physics for atomistic surrogates: learned charges, electrostatics, damped dispersion.

A local model (ACSF + networks, cutoff ``r_c``) is blind beyond its cutoff. :class:`LongRangeModel`
is the hybrid used in the field (PhysNet, SpookyNet, 4G-HDNNP):

``E = E_short(G_i, q_i) + E_elec(q) [+ E_self(q)] + E_disp``

* **Charges** ``q_i`` come from per-element networks on the same standardised ACSF descriptors, with
  the total charge of every system (``state.charge``) enforced exactly, by one of two schemes
  (:class:`ChargeSettings`):

  - ``"neutralize"`` (PhysNet/SpookyNet): a network predicts ``q~_i`` and
    ``q_i = q~_i - (sum_j q~_j - Q) / N``;
  - ``"qeq"`` (4G-HDNNP): a network predicts electronegativities ``chi_i``; learned per-element
    hardnesses ``J_Z > 0`` and Gaussian charge widths ``sigma_Z`` define the charge-equilibration
    energy ``E_QEq = sum_i (chi_i q_i + 1/2 J_i q_i^2) + 1/2 sum_ij q_i q_j A_ij`` (Gaussian-charge
    Coulomb matrix ``A``), minimised over the whole system subject to ``sum q = Q`` (one bordered
    linear solve per system). Charge flows across the whole system, so distant fragments polarise.

* **Electrostatics** (:class:`ElectrostaticsSettings`): ``E_elec = k_e sum_{i<j} q_i q_j v(r_ij)``,
  by direct sum for molecules and by Ewald or PME through ``torch-pme`` for periodic cells. The pair
  kernel ``v`` is settable: bare ``1/r`` (``"coulomb"``), torch-pme's exclusion
  ``(1 - f_cut(r)) / r`` that switches Coulomb off smoothly inside ``switch_radius``
  (``"exclusion"``: the guard against counting the local environment twice), PhysNet's shielded
  ``phi(r)/sqrt(r^2 + a^2) + (1 - phi(r))/r`` (``"shielded"``) or Gaussian charges
  ``erf(r / sqrt(2 (s_i^2 + s_j^2))) / r`` (``"gaussian"``, 4G-HDNNP). The short-range network is
  trained on what remains.

* **Dispersion** (:class:`DispersionSettings`): DFT-D3 through ``torch-dftd`` (reference C6
  table, coordination numbers and C6 interpolation from that package), with Becke-Johnson or zero
  damping, an optional switch-off inside ``switch_radius``, on the same neighbour lists as
  everything else (periodic images included). Dispersion has no learned parameters: training fits
  the rest to ``E_ref - E_disp`` (:mod:`fesurf.training.long_range_fit`), so it is counted once.

The long-range terms are deterministic functions of the charges and positions and are shared by
committee members: a committee (``n_members > 1``) holds independent short-range and charge
networks (stacked, evaluated in one pass); the dispersion energy is computed once, and the
electrostatics of all members' charges in one torch-pme call (members are its charge channels).

Standalone pieces that other modules build on (materials, QM/MM embedding):
:class:`PointChargeElectrostatics` (fixed charges per element, a Potential with stress),
:class:`D3Dispersion` (a Potential with stress), :func:`electrostatic_energy`,
:func:`qeq_charges`, :func:`neutralize`.

Units: eV, Angstrom, e; ``k_e = Hartree * Bohr`` (``ase.units``) = 14.3996 eV A / e^2.

Example
-------
>>> from ase.build import molecule
>>> from fesurf.state import State
>>> model = LongRangeModel(elements=[1, 8], hidden=(8,), seed=0)
>>> s = State.from_atoms(molecule("H2O"))
>>> q = model.charges(s)                     # [n_members, n_atoms], e
>>> abs(float(q.sum())) < 1e-12
True
>>> sorted(model.energy_terms(s))
['dispersion', 'electrostatic', 'self_energy', 'short_range']
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .. import units
from ..errors import InputError
from ..neighbors import neighbor_pairs
from ..potentials.base import Potential
from ..state import State
from .base import AtomisticModel
from .bp import StackedMLP, element_groups
from .descriptors import ACSF
from .graph import Graph, build_graph, triplets_from_pairs

log = logging.getLogger(__name__)

#: Coulomb constant e^2 / (4 pi eps0) in eV * Angstrom / e^2.
COULOMB = units._ase.Hartree * units._ase.Bohr
BOHR = units._ase.Bohr
HARTREE = units._ase.Hartree

__all__ = ["ChargeSettings", "ElectrostaticsSettings", "DispersionSettings", "LongRangeModel",
           "PointChargeElectrostatics", "D3Dispersion", "electrostatic_energy", "qeq_charges", "neutralize",
           "pair_kernel", "COULOMB"]


# ----------------------------------------------------------------------------------------- settings
def _settings_from(cls, value, name):
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise InputError(f"unknown {name} setting(s) {unknown}; known: {sorted(known)}")
        return cls(**value)
    raise InputError(f"{name} must be a {cls.__name__} or a dict of its fields, got {type(value).__name__}")


@dataclass(frozen=True)
class ChargeSettings:
    """How atomic charges are predicted.

    Parameters
    ----------
    scheme : ``"qeq"`` (4G-HDNNP charge equilibration with learned electronegativity and
        hardness) or ``"neutralize"`` (PhysNet: predicted charges, excess spread evenly).
    hidden : hidden widths of the per-element charge (``neutralize``) or electronegativity
        (``qeq``) networks.
    charge_input : the short-range network also sees each atom's charge (as in 4G-HDNNP), so
        two charge states at one geometry get different short-range energies.
    self_energy : ``qeq`` only: add the on-site part of the QEq functional,
        ``sum_i chi_i q_i + 1/2 (J_i + k_e / (sigma_i sqrt(pi))) q_i^2`` (eV), to the energy.
    hardness_init : initial hardness J_Z, eV/e^2 (learned, kept positive by a softplus).
    output_scale : charges (e) or electronegativities (eV) per unit network output; a small value
        keeps the untrained model's electrostatics moderate.

    >>> ChargeSettings(scheme="neutralize").scheme
    'neutralize'
    """

    scheme: str = "qeq"
    hidden: tuple = (16,)
    charge_input: bool = True
    self_energy: bool = True
    hardness_init: float = 10.0
    output_scale: float = 0.2

    def __post_init__(self):
        if self.scheme not in ("qeq", "neutralize"):
            raise InputError(f"charge scheme must be 'qeq' or 'neutralize', got {self.scheme!r}")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if any(h < 1 for h in self.hidden):
            raise InputError(f"charge network widths must be >= 1, got {list(self.hidden)}")
        if not self.hardness_init > 0 or not self.output_scale > 0:
            raise InputError("hardness_init (eV/e^2) and output_scale must be positive")


@dataclass(frozen=True)
class ElectrostaticsSettings:
    """Pair kernel and summation of the electrostatic energy.

    Parameters
    ----------
    enabled : include the electrostatic energy (the charges are still predicted).
    kernel : ``"coulomb"`` (1/r), ``"exclusion"`` (torch-pme's ``(1 - f_cut)/r``, zero inside the
        local environment), ``"shielded"`` (PhysNet) or ``"gaussian"`` (Gaussian charges of widths
        ``width_scale`` x covalent radius).
    switch_radius : Angstrom; ``exclusion``: radius of the switch-off (set it to the local cutoff to
        leave the inside to the short-range network); ``shielded``: where bare Coulomb takes over.
    exclusion_degree : exponent of torch-pme's raised-cosine exclusion function.
    shielding : Angstrom, the ``a`` of the shielded kernel.
    width_scale : Gaussian widths ``sigma_Z = width_scale * covalent_radius(Z)`` (Angstrom), used by
        the ``gaussian`` kernel and by charge equilibration.
    periodic_method : ``"auto"`` (Ewald below :data:`PME_MIN_ATOMS` atoms per cell, PME above),
        ``"ewald"`` or ``"pme"`` (torch-pme) for periodic cells. Ewald with the defaults is exact to
        about 1e-9 relative; PME with the defaults to about 1e-5 relative and, as every mesh method,
        only approximately invariant under translation (its error moves with the mesh).
    real_space_cutoff : Angstrom, real-space part of Ewald/PME (neighbour list).
    smearing : Angstrom, Ewald splitting width (default ``real_space_cutoff / 6``: the real-space
        part left out beyond the cutoff is ``erfc(3 sqrt 2) = 2e-9`` of the pair term, so the energy
        has no visible jump when a pair crosses the cutoff).
    lr_wavelength : Angstrom, Ewald k-space resolution (default ``smearing / 2``, torch-pme's: its
        k-vectors reach ``pi / lr_wavelength``; measured 6e-10 relative on a rattled 64-ion NaCl cell).
    mesh_spacing : Angstrom, PME mesh (default ``smearing / 3``; torch-pme rounds the mesh up to a
        power of two per axis).
    interpolation_nodes : PME interpolation order (3..7; default 5: 4e-8 relative on the same cell,
        4 nodes give 2e-6).

    >>> ElectrostaticsSettings(kernel="exclusion", switch_radius=5.0).kernel
    'exclusion'
    """

    enabled: bool = True
    kernel: str = "coulomb"
    switch_radius: float = 5.0
    exclusion_degree: int = 1
    shielding: float = 1.0
    width_scale: float = 1.0
    periodic_method: str = "auto"
    real_space_cutoff: float = 10.0
    smearing: float | None = None
    lr_wavelength: float | None = None
    mesh_spacing: float | None = None
    interpolation_nodes: int = 5

    def __post_init__(self):
        if self.kernel not in ("coulomb", "exclusion", "shielded", "gaussian"):
            raise InputError(f"electrostatic kernel must be 'coulomb', 'exclusion', 'shielded' or 'gaussian', "
                             f"got {self.kernel!r}")
        if self.periodic_method not in ("auto", "ewald", "pme"):
            raise InputError(f"periodic_method must be 'auto', 'ewald' or 'pme', got {self.periodic_method!r}")
        for name in ("switch_radius", "shielding", "width_scale", "real_space_cutoff"):
            if not float(getattr(self, name)) > 0:
                raise InputError(f"{name} must be positive (Angstrom), got {getattr(self, name)}")
        for name in ("smearing", "lr_wavelength", "mesh_spacing"):
            v = getattr(self, name)
            if v is not None and not float(v) > 0:
                raise InputError(f"{name} must be positive (Angstrom) or None, got {v}")
        if int(self.exclusion_degree) < 1 or int(self.interpolation_nodes) not in (3, 4, 5, 6, 7):
            raise InputError("exclusion_degree must be >= 1 and interpolation_nodes one of 3..7")

    def method_for(self, n_atoms: int) -> str:
        """``"ewald"`` or ``"pme"`` for a periodic cell of ``n_atoms``."""
        if self.periodic_method != "auto":
            return self.periodic_method
        return "pme" if n_atoms >= PME_MIN_ATOMS else "ewald"

    @property
    def ewald_smearing(self) -> float:
        return float(self.smearing) if self.smearing is not None else self.real_space_cutoff / 6.0


#: periodic cells with at least this many atoms use PME under ``periodic_method="auto"``.
PME_MIN_ATOMS = 1000

#: GFN2-xTB's own D4 rational-damping parameters (s6, s8, a1, a2 / bohr), the default here, so that a
#: surrogate of GFN2-xTB subtracts a dispersion close to the reference's.
GFN2_BJ = dict(s6=1.0, s8=2.7, a1=0.52, a2=5.0)


@dataclass(frozen=True)
class DispersionSettings:
    """DFT-D3 dispersion (torch-dftd) with Becke-Johnson or zero damping.

    Parameters
    ----------
    enabled : include dispersion.
    damping : ``"bj"`` (rational: ``E = -sum s_n C_n / (r^n + (a1 R0 + a2)^n)``) or ``"zero"``
        (``f = 1 / (1 + 6 (r / (s_r,n R0))^-alpha_n)``).
    s6, s8, a1, a2 : BJ parameters (a2 in bohr, D3's convention); default GFN2-xTB's.
    rs6, rs8, alpha : zero-damping parameters (default PBE-D3(0)).
    cutoff : Angstrom, pair cutoff; the energy is switched off smoothly over the last bohr.
    cn_cutoff : Angstrom, cutoff of the coordination numbers.
    switch_radius : Angstrom; > 0 multiplies each pair energy by ``1 - f_cut(r)`` (torch-pme's
        raised cosine, ``exclusion_degree``), switching dispersion off inside the local environment.

    >>> DispersionSettings(damping="zero").damping
    'zero'
    """

    enabled: bool = True
    damping: str = "bj"
    s6: float = GFN2_BJ["s6"]
    s8: float = GFN2_BJ["s8"]
    a1: float = GFN2_BJ["a1"]
    a2: float = GFN2_BJ["a2"]
    rs6: float = 1.217
    rs8: float = 1.0
    alpha: float = 14.0
    cutoff: float = 20.0
    cn_cutoff: float = 20.0
    switch_radius: float = 0.0
    exclusion_degree: int = 1

    def __post_init__(self):
        if self.damping not in ("bj", "zero"):
            raise InputError(f"dispersion damping must be 'bj' or 'zero', got {self.damping!r}")
        if not self.cutoff > BOHR or not self.cn_cutoff > 0:
            raise InputError(f"dispersion cutoff must exceed 1 bohr and cn_cutoff be positive (Angstrom)")
        if self.switch_radius < 0:
            raise InputError("switch_radius must be >= 0 (Angstrom; 0 switches nothing off)")


# ------------------------------------------------------------------------------------ pair kernels
def _raised_cosine(r, radius, degree):
    """torch-pme's exclusion function ``f_cut`` (1 at r = 0, 0 beyond ``radius``)."""
    from torchpme import CoulombPotential

    return CoulombPotential(exclusion_radius=float(radius), exclusion_degree=int(degree)).f_cutoff(r)


def _switch_poly(x):
    """``1 - 6x^5 + 15x^4 - 10x^3`` on [0, 1] and 0 beyond (PhysNet's switch)."""
    x = x.clamp(0.0, 1.0)
    return 1.0 - x ** 3 * (10.0 - 15.0 * x + 6.0 * x * x)


def pair_kernel(r: torch.Tensor, settings: ElectrostaticsSettings, gamma: torch.Tensor | None = None) -> torch.Tensor:
    """Electrostatic pair kernel ``v(r)`` in 1/Angstrom (multiply by ``k_e q_i q_j``).

    ``gamma`` (Angstrom, broadcasting against ``r``) is ``sqrt(sigma_i^2 + sigma_j^2)`` for the
    Gaussian kernel.

    >>> s = ElectrostaticsSettings(kernel="exclusion", switch_radius=4.0)
    >>> float(pair_kernel(torch.tensor([6.0], dtype=torch.float64), s)[0]) == 1 / 6
    True
    """
    inv = 1.0 / r
    if settings.kernel == "coulomb":
        return inv
    return inv + pair_kernel_correction(r, settings, gamma)


def pair_kernel_correction(r, settings: ElectrostaticsSettings, gamma=None):
    """``v(r) - 1/r``: short ranged (zero beyond ``switch_radius``; Gaussian: erfc-small)."""
    if settings.kernel == "coulomb":
        return torch.zeros_like(r)
    if settings.kernel == "exclusion":
        return -_raised_cosine(r, settings.switch_radius, settings.exclusion_degree) / r
    if settings.kernel == "shielded":
        phi = _switch_poly(r / settings.switch_radius)
        return phi * (1.0 / torch.sqrt(r * r + settings.shielding ** 2) - 1.0 / r)
    if gamma is None:
        raise InputError("the gaussian kernel needs the pair widths gamma")
    return -torch.erfc(r / (math.sqrt(2.0) * gamma)) / r


def _sigma_table(width_scale, dtype=torch.float64):
    from ase.data import covalent_radii

    return torch.as_tensor(covalent_radii, dtype=dtype) * float(width_scale)


# --------------------------------------------------------------------------- dense per-system layout
class _Dense:
    """Scatter flat atoms [n] into a zero-padded [S, n_max] layout (molecules)."""

    def __init__(self, state: State):
        counts = state.atoms_per_system
        self.n_systems, self.n_max = state.n_systems, int(counts.max())
        start = torch.cumsum(counts, 0) - counts
        self.local = torch.arange(state.n_atoms) - start[state.system_index]
        self.flat = state.system_index * self.n_max + self.local
        self.valid = torch.zeros(self.n_systems * self.n_max, dtype=torch.bool)
        self.valid[self.flat] = True
        self.valid = self.valid.view(self.n_systems, self.n_max)

    def scatter(self, x, fill=0.0):
        """``x [B, n, ...]`` -> ``[B, S, n_max, ...]``."""
        shape = (x.shape[0], self.n_systems * self.n_max) + tuple(x.shape[2:])
        out = torch.full(shape, fill, dtype=x.dtype, device=x.device).index_copy(1, self.flat, x)
        return out.view((x.shape[0], self.n_systems, self.n_max) + tuple(x.shape[2:]))

    def gather(self, x):
        """``x [B, S, n_max]`` -> ``[B, n]``."""
        return x.reshape(x.shape[0], -1)[:, self.flat]

    def distances(self, positions):
        """``positions [B, n, 3]`` -> (r [B, S, n_max, n_max] with 1 on invalid entries, pair mask)."""
        p = self.scatter(positions)
        diff = p[:, :, :, None, :] - p[:, :, None, :, :]
        pair = self.valid[:, :, None] & self.valid[:, None, :]
        pair = pair & ~torch.eye(self.n_max, dtype=torch.bool)[None]
        r2 = (diff * diff).sum(-1)
        r = torch.sqrt(torch.where(pair[None], r2, torch.ones_like(r2)))
        return r, pair


def _as_batched(positions):
    return positions if positions.dim() == 3 else positions.unsqueeze(0)


# --------------------------------------------------------------------------------- periodic pieces
def _periodic_pairs(state: State, positions, cutoff):
    """Half neighbour list with pair vectors [B, P, 3] differentiable in positions and cell."""
    pairs = neighbor_pairs(state, cutoff, method="vesin")
    vec = positions[:, pairs.j] - positions[:, pairs.i]
    if state.cell is not None and pairs.cell_shifts.numel():
        shift = torch.einsum("pk,pkl->pl", pairs.cell_shifts.to(positions.dtype), state.cell[state.system_index[pairs.i]])
        vec = vec + shift
    return pairs, vec


def _torchpme_calculator(settings: ElectrostaticsSettings, dtype, cache: dict, n_atoms: int):
    method = settings.method_for(n_atoms)
    key = (settings, dtype, method)
    calc = cache.get(key)
    if calc is None:
        from torchpme import CoulombPotential, EwaldCalculator, PMECalculator

        smearing = settings.ewald_smearing
        potential = CoulombPotential(smearing=smearing).to(dtype)
        if method == "ewald":
            lr = settings.lr_wavelength if settings.lr_wavelength is not None else smearing / 2.0
            calc = EwaldCalculator(potential, lr_wavelength=float(lr))
        else:
            spacing = settings.mesh_spacing if settings.mesh_spacing is not None else smearing / 3.0
            calc = PMECalculator(potential, mesh_spacing=float(spacing),
                                 interpolation_nodes=int(settings.interpolation_nodes))
        calc = calc.to(dtype)
        if len(cache) > 4:
            cache.clear()
        cache[key] = calc
    return calc


def _periodic_short_range_cutoff(settings: ElectrostaticsSettings, sigma_max: float) -> float:
    if settings.kernel in ("exclusion", "shielded"):
        return settings.switch_radius
    if settings.kernel == "gaussian":
        return 9.0 * sigma_max  # r / (sqrt(2) gamma) >= 4.5 with gamma <= sqrt(2) sigma_max: erfc(4.5) = 2e-10
    return 0.0


def electrostatic_energy(charges: torch.Tensor, positions: torch.Tensor, state: State,
                         settings: ElectrostaticsSettings | None = None, sigma: torch.Tensor | None = None,
                         _cache: dict | None = None) -> torch.Tensor:
    """Electrostatic energy ``[M, n_systems]`` (eV) of charges ``[M, n_atoms]`` (e).

    Molecules: direct sum over all pairs of each system. Periodic systems: torch-pme Ewald or PME
    for the ``1/r`` part (with its neutralising background for charged cells) plus the kernel's
    short-range correction on a neighbour list. ``positions`` is ``[n_atoms, 3]`` or
    ``[B, n_atoms, 3]`` with ``B`` = 1 or M (one copy per member); ``sigma`` ``[n_atoms]`` Gaussian
    widths (Angstrom) for the gaussian kernel.

    >>> s = State(positions=[[0.0, 0, 0], [2.0, 0, 0]], atomic_numbers=[11, 17])
    >>> e = electrostatic_energy(torch.tensor([[1.0, -1.0]], dtype=torch.float64), s.positions, s)
    >>> round(float(e[0, 0]), 4)   # -k_e / 2 A
    -7.1998
    """
    settings = settings or ElectrostaticsSettings()
    cache = {} if _cache is None else _cache
    pos = _as_batched(positions)
    q = charges if charges.dim() == 2 else charges.unsqueeze(0)
    m = q.shape[0]
    if not state.is_periodic:
        dense = _Dense(state)
        r, pair = dense.distances(pos)
        gamma = None
        if settings.kernel == "gaussian":
            s = dense.scatter(sigma.unsqueeze(0).unsqueeze(-1), 1.0)[0, ..., 0]
            gamma = torch.sqrt(s[:, :, None] ** 2 + s[:, None, :] ** 2)
        v = torch.where(pair[None], pair_kernel(r, settings, gamma), torch.zeros_like(r))
        qd = dense.scatter(q.unsqueeze(-1))[..., 0]  # [M, S, n]
        return 0.5 * COULOMB * torch.einsum("msi,msij,msj->ms", qd, v.expand(m, -1, -1, -1), qd)
    if not bool(state.pbc.all()):
        raise InputError("electrostatics needs each system fully periodic or not periodic at all (pbc all True "
                         "or all False); slabs are not supported")
    sigma_max = float(sigma.max()) if sigma is not None else 0.0
    r_sr = _periodic_short_range_cutoff(settings, sigma_max)
    cutoff = max(settings.real_space_cutoff, r_sr)
    pairs, vec = _periodic_pairs(state, pos, cutoff)
    dist = torch.sqrt((vec * vec).sum(-1))  # [B, P]
    out = []
    sys_of_pair = state.system_index[pairs.i]
    for k, (a, b) in enumerate(state.atom_slices()):
        sel = torch.nonzero(sys_of_pair == k).flatten()
        idx = torch.stack([pairs.i[sel] - a, pairs.j[sel] - a], 1)
        calc = _torchpme_calculator(settings, pos.dtype, cache, b - a)
        e_members = []
        for bb in range(pos.shape[0]):
            qk = q[:, a:b] if pos.shape[0] == 1 else q[bb:bb + 1, a:b]
            d = dist[bb, sel]
            pot = calc(charges=qk.T.contiguous(), cell=state.cell[k], positions=pos[bb, a:b],
                       neighbor_indices=idx, neighbor_distances=d)
            e = (qk.T * pot).sum(0)
            if settings.kernel != "coulomb":
                near = d < r_sr
                ii, jj, dn = idx[near, 0], idx[near, 1], d[near]
                gamma = None
                if settings.kernel == "gaussian":
                    gamma = torch.sqrt(sigma[a:b][ii] ** 2 + sigma[a:b][jj] ** 2)
                dv = pair_kernel_correction(dn, settings, gamma)
                e = e + (qk[:, ii] * qk[:, jj] * dv).sum(-1)
            e_members.append(e)
        out.append(torch.cat(e_members) if pos.shape[0] > 1 else e_members[0])
    return COULOMB * torch.stack(out, 1).reshape(m, state.n_systems)


# ------------------------------------------------------------------------------------------ charges
def neutralize(raw: torch.Tensor, state: State) -> torch.Tensor:
    """PhysNet correction ``q_i = q~_i - (sum_sys q~ - Q) / N_sys``; ``raw`` is ``[M, n_atoms]`` (e).

    >>> s = State(positions=[[0.0, 0, 0], [1.0, 0, 0]], atomic_numbers=[1, 1], charge=1.0)
    >>> neutralize(torch.tensor([[0.2, 0.4]], dtype=torch.float64), s).round(decimals=12).tolist()
    [[0.4, 0.6]]
    """
    n = state.atoms_per_system.to(raw.dtype)
    total = torch.zeros(raw.shape[0], state.n_systems, dtype=raw.dtype, device=raw.device).index_add(
        1, state.system_index, raw)
    excess = (total - state.charge.to(raw.dtype)) / n
    return raw - excess[:, state.system_index]


def _qeq_matrix_molecules(positions, state, sigma):
    """Gaussian-charge Coulomb matrix [B, S, n_max, n_max] (eV/e^2) and the dense layout."""
    dense = _Dense(state)
    r, pair = dense.distances(positions)
    s = dense.scatter(sigma.unsqueeze(0).unsqueeze(-1), 1.0)[0, ..., 0]  # [S, n]
    gamma = torch.sqrt(s[:, :, None] ** 2 + s[:, None, :] ** 2)
    off = torch.where(pair[None], torch.erf(r / (math.sqrt(2.0) * gamma)) / r, torch.zeros_like(r))
    diag = torch.where(dense.valid, 1.0 / (s * math.sqrt(math.pi)), torch.zeros_like(s))
    return COULOMB * (off + torch.diag_embed(diag)[None]), dense


def _qeq_matrix_periodic(positions, state, sigma, settings, cache, k):
    """Gaussian-charge Ewald matrix of periodic system ``k`` [B, n_k, n_k] (eV/e^2) via torch-pme
    (unit charges as channels) plus the Gaussian real-space correction."""
    a, b = state.atom_slices()[k]
    n = b - a
    if n > QEQ_MAX_PERIODIC_ATOMS:
        raise InputError(f"charge equilibration in a periodic cell of {n} atoms needs a dense {n}x{n} Ewald "
                         f"matrix (limit {QEQ_MAX_PERIODIC_ATOMS} atoms); use ChargeSettings(scheme='neutralize') "
                         "for large cells")
    one = state.select(k)
    gauss = ElectrostaticsSettings(**{**asdict(settings), "kernel": "gaussian"})
    r_g = _periodic_short_range_cutoff(gauss, float(sigma[a:b].max()))
    cutoff = max(settings.real_space_cutoff, r_g)
    pairs, vec = _periodic_pairs(one, positions[:, a:b], cutoff)
    dist = torch.sqrt((vec * vec).sum(-1))
    calc = _torchpme_calculator(settings, positions.dtype, cache, n)
    eye = torch.eye(n, dtype=positions.dtype)
    idx = torch.stack([pairs.i, pairs.j], 1)
    sk = sigma[a:b]
    gamma = torch.sqrt(sk[pairs.i] ** 2 + sk[pairs.j] ** 2)
    mats = []
    for bb in range(positions.shape[0]):
        pot = calc(charges=eye, cell=state.cell[k], positions=positions[bb, a:b], neighbor_indices=idx,
                   neighbor_distances=dist[bb])
        mat = 2.0 * pot  # E = 1/2 q^T A q and torch-pme returns V_i = 1/2 sum_j q_j v_ij
        mat = 0.5 * (mat + mat.T)
        dv = -torch.erfc(dist[bb] / (math.sqrt(2.0) * gamma)) / dist[bb]
        corr = torch.zeros(n, n, dtype=positions.dtype).index_put((pairs.i, pairs.j), dv, accumulate=True)
        corr = corr + corr.T
        mats.append(mat + corr + torch.diag(1.0 / (sk * math.sqrt(math.pi))))
    return COULOMB * torch.stack(mats)


#: largest periodic cell (atoms) for which charge equilibration builds its dense Ewald matrix.
QEQ_MAX_PERIODIC_ATOMS = 600


def _bordered_solve(A, chi, valid, total):
    """Solve ``[[A, 1], [1^T, 0]] [q, lambda] = [-chi, Q]`` batched; padded atoms get q = 0.

    ``A`` [..., n, n], ``chi`` [..., n], ``valid`` [..., n] bool, ``total`` [...] -> q [..., n].
    """
    n = A.shape[-1]
    lead = torch.broadcast_shapes(A.shape[:-2], chi.shape[:-1])
    vf = valid.to(A.dtype).expand(lead + (n,))
    A = torch.where(valid[..., :, None] & valid[..., None, :], A, torch.zeros_like(A))
    A = A + torch.diag_embed(1.0 - valid.to(A.dtype))  # identity rows for padding
    K = torch.zeros(lead + (n + 1, n + 1), dtype=A.dtype, device=A.device)
    K[..., :n, :n] = A.expand(lead + (n, n))
    K[..., :n, n] = vf
    K[..., n, :n] = vf
    rhs = torch.cat([-(chi * vf), total.expand(lead).unsqueeze(-1).to(A.dtype)], -1)
    sol = torch.linalg.solve(K, rhs.unsqueeze(-1))[..., 0]
    return sol[..., :n]


def qeq_charges(chi: torch.Tensor, hardness: torch.Tensor, positions: torch.Tensor, state: State,
                sigma: torch.Tensor, settings: ElectrostaticsSettings | None = None,
                _cache: dict | None = None) -> torch.Tensor:
    """Charge equilibration (4G-HDNNP): charges ``[M, n_atoms]`` (e) minimising
    ``sum_i (chi_i q_i + 1/2 J_i q_i^2) + 1/2 q^T A q`` with ``sum_sys q = state.charge`` exactly.

    ``chi`` [M, n] (eV/e), ``hardness`` J [M, n] (eV/e^2, > 0), ``sigma`` [n] Gaussian widths
    (Angstrom); ``A`` is the Coulomb matrix of Gaussian charges (direct for molecules, torch-pme
    Ewald/PME for periodic cells). Differentiable in everything (training goes through the solve).

    >>> s = State(positions=[[0.0, 0, 0], [10.0, 0, 0]], atomic_numbers=[11, 17])
    >>> q = qeq_charges(torch.tensor([[0.0, 2.0]], dtype=torch.float64), torch.full((1, 2), 5.0,
    ...                 dtype=torch.float64), s.positions, s, torch.tensor([1.0, 1.0], dtype=torch.float64))
    >>> bool(q[0, 0] > 0 > q[0, 1]), abs(float(q.sum())) < 1e-12
    (True, True)
    """
    settings = settings or ElectrostaticsSettings()
    cache = {} if _cache is None else _cache
    pos = _as_batched(positions)
    total = state.charge.to(chi.dtype)
    if not state.is_periodic:
        A, dense = _qeq_matrix_molecules(pos, state, sigma)  # [B, S, n, n]
        chi_d = dense.scatter(chi.unsqueeze(-1))[..., 0]  # [M, S, n]
        J_d = dense.scatter(hardness.unsqueeze(-1))[..., 0]
        A = A + torch.diag_embed(J_d)  # [M, S, n, n]
        q = _bordered_solve(A, chi_d, dense.valid[None], total[None])
        return dense.gather(q)
    out = torch.zeros_like(chi)
    for k, (a, b) in enumerate(state.atom_slices()):
        A = _qeq_matrix_periodic(pos, state, sigma, settings, cache, k)  # [B, n, n]
        A = A + torch.diag_embed(hardness[:, a:b])
        valid = torch.ones(b - a, dtype=torch.bool)
        qk = _bordered_solve(A, chi[:, a:b], valid, total[k])
        out = out.index_copy(1, torch.arange(a, b), qk)
    return out


# --------------------------------------------------------------------------------------- dispersion
def _torch_dftd_tables(dtype=torch.float64):
    """D3 reference tables of torch-dftd (C6 references, R0, covalent radii, <r4>/<r2>), bohr units."""
    import torch_dftd.nn.dftd3_module as mod

    path = Path(mod.__file__).parent / "params" / "dftd3_params.npz"
    with np.load(path) as d:
        return {k: torch.as_tensor(d[k], dtype=dtype) for k in ("c6ab", "r0ab", "rcov", "r2r4")}


class D3Dispersion(Potential):
    """DFT-D3 two-body dispersion (eV) through torch-dftd: a Potential (batched, periodic, stress).

    Coordination numbers, reference-C6 interpolation and tables are torch-dftd's
    (``torch_dftd.functions.dftd3``); the damped pair sum runs on fesurf's neighbour lists (all
    pairs within ``cutoff`` for molecules, vesin with cell shifts for periodic systems), so
    periodic images, batching and stress come for free. No three-body (ATM) term.

    >>> from ase.build import molecule
    >>> e = D3Dispersion().energy(State.from_atoms(molecule("CH4")))
    >>> bool(e[0] < 0)
    True
    """

    supports_stress = True

    def __init__(self, settings: DispersionSettings | dict | None = None):
        super().__init__()
        self.settings = _settings_from(DispersionSettings, settings, "dispersion")
        for k, v in _torch_dftd_tables().items():
            self.register_buffer(k, v, persistent=False)  # 5 MB table: rebuilt from torch-dftd, never stored

    def pair_energies(self, state: State, positions=None):
        """(per-pair energies [B, P] eV, first atom index [P]) on ``positions`` [B, n, 3]."""
        from torch_dftd.functions.dftd3 import _getc6, _ncoord
        from torch_dftd.functions.smoothing import poly_smoothing

        s = self.settings
        pos = _as_batched(state.positions if positions is None else positions)
        if state.is_periodic:
            pairs, vec = _periodic_pairs(state, pos, s.cutoff)
        else:
            pairs = neighbor_pairs(state, s.cutoff)
            vec = pos[:, pairs.j] - pos[:, pairs.i]
        z = state.atomic_numbers
        if bool((z >= self.rcov.shape[0]).any()):
            raise InputError(f"D3 has parameters up to Z = {self.rcov.shape[0] - 1}")
        tab = {k: getattr(self, k).to(pos.dtype) for k in ("c6ab", "r0ab", "rcov", "r2r4")}
        zi, zj = z[pairs.i], z[pairs.j]
        out = []
        for bb in range(pos.shape[0]):
            r = torch.sqrt((vec[bb] * vec[bb]).sum(-1)) / BOHR
            cn = _ncoord(z, r, pairs.i, pairs.j, rcov=tab["rcov"], cutoff=s.cn_cutoff / BOHR, bidirectional=False)
            c6 = _getc6(zi, zj, cn[pairs.i], cn[pairs.j], c6ab=tab["c6ab"])
            qq = 3.0 * tab["r2r4"][zi] * tab["r2r4"][zj]
            c8 = c6 * qq
            r2 = r * r
            r6 = r2 ** 3
            r8 = r6 * r2
            if s.damping == "bj":
                r0 = s.a1 * torch.sqrt(qq) + s.a2
                e6 = 1.0 / (r6 + r0 ** 6)
                e8 = 1.0 / (r8 + r0 ** 8)
            else:
                rr = tab["r0ab"][zi, zj] / r
                e6 = 1.0 / (1.0 + 6.0 * (s.rs6 * rr) ** s.alpha) / r6
                e8 = 1.0 / (1.0 + 6.0 * (s.rs8 * rr) ** (s.alpha + 2.0)) / r8
            e = -(s.s6 * c6 * e6 + s.s8 * c8 * e8) * poly_smoothing(r, s.cutoff / BOHR)
            if s.switch_radius > 0:
                e = e * (1.0 - _raised_cosine(r * BOHR, s.switch_radius, s.exclusion_degree))
            out.append(e * HARTREE)
        return torch.stack(out), pairs.i

    def energy_batched(self, state: State, positions=None) -> torch.Tensor:
        """``[B, n_systems]`` dispersion energies (eV) on ``positions`` [B, n, 3]."""
        e, i = self.pair_energies(state, positions)
        return torch.zeros(e.shape[0], state.n_systems, dtype=e.dtype).index_add(1, state.system_index[i], e)

    def energy(self, state: State) -> torch.Tensor:
        return self.energy_batched(state)[0]


# ------------------------------------------------------------------------ fixed-charge electrostatics
class PointChargeElectrostatics(Potential):
    """Electrostatic energy (eV) of fixed charges per element: a Potential (batched, periodic, stress).

    The charge of every atom comes from ``charges`` (a dict atomic number -> e). Direct sum for
    molecules, torch-pme Ewald/PME for periodic cells; the kernel is settable as in
    :class:`ElectrostaticsSettings`. Used for Madelung checks and as the point-charge environment of
    an embedding.

    >>> s = State(positions=[[0.0, 0, 0], [2.0, 0, 0]], atomic_numbers=[11, 17])
    >>> round(float(PointChargeElectrostatics({11: 1.0, 17: -1.0}).energy(s)[0]), 4)
    -7.1998
    """

    supports_stress = True

    def __init__(self, charges: dict, settings: ElectrostaticsSettings | dict | None = None):
        super().__init__()
        if not isinstance(charges, dict) or not charges:
            raise InputError("charges must be a dict atomic number -> charge (e)")
        table = torch.zeros(119, dtype=torch.float64)
        known = torch.zeros(119, dtype=torch.bool)
        for z, q in charges.items():
            if not 1 <= int(z) <= 118 or not math.isfinite(float(q)):
                raise InputError(f"bad charge entry {z}: {q}; give atomic numbers 1..118 and finite charges (e)")
            table[int(z)], known[int(z)] = float(q), True
        self.register_buffer("table", table)
        self.register_buffer("known", known)
        self.settings = _settings_from(ElectrostaticsSettings, settings, "electrostatics")
        self._cache = {}

    def charges(self, state: State) -> torch.Tensor:
        """Per-atom charges [n_atoms] (e)."""
        if not bool(self.known[state.atomic_numbers].all()):
            bad = sorted(set(state.atomic_numbers[~self.known[state.atomic_numbers]].tolist()))
            raise InputError(f"no charge given for atomic number(s) {bad}")
        return self.table[state.atomic_numbers].to(state.dtype)

    def energy(self, state: State) -> torch.Tensor:
        sigma = _sigma_table(self.settings.width_scale, state.dtype)[state.atomic_numbers]
        return electrostatic_energy(self.charges(state).unsqueeze(0), state.positions, state, self.settings,
                                    sigma, self._cache)[0]


# ----------------------------------------------------------------------------------------- the model
def _graph(state: State, cutoff, triplet_cutoff):
    """ACSF graph; periodic shifts stay differentiable in the cell (stress by autograd)."""
    if not state.is_periodic:
        return build_graph(state, cutoff, triplets=True, triplet_cutoff=triplet_cutoff)
    pairs = neighbor_pairs(state, cutoff, method="vesin")
    i = torch.cat([pairs.i, pairs.j])
    j = torch.cat([pairs.j, pairs.i])
    cart = torch.einsum("pk,pkl->pl", pairs.cell_shifts.to(state.dtype), state.cell[state.system_index[pairs.i]])
    shifts = torch.cat([cart, -cart])
    order = torch.argsort(i, stable=True)
    i, j, shifts = i[order], j[order], shifts[order]
    g = Graph(i, j, shifts)
    with torch.no_grad():
        vec = state.positions[j] - state.positions[i] + shifts
        keep = (vec * vec).sum(1) < triplet_cutoff ** 2
    sub = torch.nonzero(keep).flatten()
    p1, p2 = triplets_from_pairs(i[sub], state.n_atoms)
    g.t_p1, g.t_p2 = sub[p1], sub[p2]
    return g


class LongRangeModel(AtomisticModel):
    """Hybrid surrogate: learned short range + electrostatics of learned charges + D3 dispersion.

    Parameters
    ----------
    elements : atomic numbers.
    hidden : hidden widths of the short-range element networks.
    n_members : committee size (independent short-range and charge networks, shared long-range terms).
    acsf : dict of :class:`~fesurf.surrogates.descriptors.ACSF` settings (local cutoff in Angstrom).
    charges, electrostatics, dispersion : :class:`ChargeSettings`, :class:`ElectrostaticsSettings`,
        :class:`DispersionSettings` (or dicts of their fields).
    seed : initialisation.

    The energy (eV) is ``sum`` of :meth:`energy_terms`; :meth:`charges` gives the charges (e),
    :meth:`dipoles` the dipole moments (e A, about the coordinate origin) of molecules. Train with
    :func:`fesurf.training.long_range_fit.train_long_range`; save/load with
    :func:`fesurf.surrogates.save_model` / :func:`~fesurf.surrogates.load_model`.

    >>> m = LongRangeModel(elements=[1, 8], n_members=3, charges={"scheme": "neutralize"})
    >>> m.n_members, m.charge_settings.scheme
    (3, 'neutralize')
    """

    supports_stress = True

    def __init__(self, elements: Sequence[int], hidden: Sequence[int] = (32, 32), n_members: int = 1,
                 acsf: dict | None = None, charges=None, electrostatics=None, dispersion=None, seed: int = 0):
        super().__init__()
        if int(n_members) < 1:
            raise InputError("n_members must be >= 1")
        if any(int(h) < 1 for h in hidden):
            raise InputError(f"hidden layer widths must be >= 1, got {list(hidden)}")
        self.charge_settings = _settings_from(ChargeSettings, charges, "charges")
        self.electrostatics_settings = _settings_from(ElectrostaticsSettings, electrostatics, "electrostatics")
        self.dispersion_settings = _settings_from(DispersionSettings, dispersion, "dispersion")
        self.acsf = ACSF(elements, **(acsf or {}))
        self.elements = self.acsf.elements
        self.n_members = int(n_members)
        self.hidden = [int(h) for h in hidden]
        self.seed = int(seed)
        self.heteroscedastic = False
        ne, d = self.acsf.n_elements, self.acsf.n_features
        gen = torch.Generator().manual_seed(self.seed)
        cs = self.charge_settings
        self.mlp = StackedMLP(self.n_members, ne, d + (1 if cs.charge_input else 0), self.hidden, 1, gen)
        self.charge_mlp = StackedMLP(self.n_members, ne, d, list(cs.hidden), 1, gen)
        if cs.scheme == "qeq":
            raw = math.log(math.expm1(cs.hardness_init))
            self.raw_hardness = torch.nn.Parameter(torch.full((self.n_members, ne), raw, dtype=torch.float64))
        self.register_buffer("feature_mean", torch.zeros(ne, d, dtype=torch.float64))
        self.register_buffer("feature_std", torch.ones(ne, d, dtype=torch.float64))
        self.register_buffer("element_energy", torch.zeros(ne, dtype=torch.float64))
        self.register_buffer("energy_scale", torch.ones((), dtype=torch.float64))
        self.register_buffer("sigma_table", _sigma_table(self.electrostatics_settings.width_scale), persistent=False)
        self.dispersion = D3Dispersion(self.dispersion_settings) if self.dispersion_settings.enabled else None
        self._pme_cache = {}

    # ------------------------------------------------------------------ config and committee views
    def config(self) -> dict:
        cfg = dict(self.acsf.config)
        elements = cfg.pop("elements")
        charge = asdict(self.charge_settings)
        charge["hidden"] = list(charge["hidden"])
        return {"type": "LongRangeModel", "elements": elements, "hidden": self.hidden, "n_members": self.n_members,
                "acsf": cfg, "charges": charge, "electrostatics": asdict(self.electrostatics_settings),
                "dispersion": asdict(self.dispersion_settings), "seed": self.seed}

    def with_settings(self, electrostatics=None, dispersion=None) -> "LongRangeModel":
        """An untrained model of the same architecture with other long-range settings (for retraining)."""
        cfg = self.config()
        cfg.pop("type")
        if electrostatics is not None:
            cfg["electrostatics"] = asdict(_settings_from(ElectrostaticsSettings, electrostatics, "electrostatics"))
        if dispersion is not None:
            cfg["dispersion"] = asdict(_settings_from(DispersionSettings, dispersion, "dispersion"))
        return LongRangeModel(**cfg).to(self.model_dtype)

    def select_members(self, members) -> "LongRangeModel":
        """A new model holding only the given committee members."""
        members = [int(m) for m in members]
        if not members or any(not 0 <= m < self.n_members for m in members):
            raise InputError(f"members must be indices in 0..{self.n_members - 1}")
        cfg = self.config()
        cfg.pop("type")
        cfg["n_members"] = len(members)
        new = LongRangeModel(**cfg).to(self.model_dtype)
        sd = {k: (v[members] if k.startswith(("mlp.", "charge_mlp.", "raw_hardness")) else v)
              for k, v in self.state_dict().items()}
        new.load_state_dict(sd)
        return new

    # ------------------------------------------------------------------------------- building blocks
    def descriptors(self, positions: torch.Tensor, state: State) -> torch.Tensor:
        """Raw ACSF ``[..., n_atoms, n_features]`` (used for the standardisation statistics)."""
        graph = _graph(state, self.acsf.cutoff, self.acsf.angular_cutoff)
        return self.acsf(positions, self.acsf.species(state.atomic_numbers), graph)

    def hardness(self) -> torch.Tensor:
        """Per-member, per-element hardness J ``[M, n_elements]`` (eV/e^2); QEq only."""
        return torch.nn.functional.softplus(self.raw_hardness)

    def _features(self, positions, state):
        graph = _graph(state, self.acsf.cutoff, self.acsf.angular_cutoff)
        species, order, counts, index = element_groups(self.acsf, state.atomic_numbers, graph)
        g = self.acsf(positions, species, graph, index)
        x = (g - self.feature_mean[species]) / self.feature_std[species]
        return x if x.dim() == 3 else x.unsqueeze(0), species, order, counts

    @staticmethod
    def _unsort(out, order):
        """Rows of ``out [M, n]`` (in ``order``) back to atom order."""
        inv = torch.empty_like(order)
        inv[order] = torch.arange(order.numel())
        return out[:, inv]

    def _sigma(self, state, dtype):
        return self.sigma_table.to(dtype)[state.atomic_numbers]

    def _charges_from(self, x, species, order, counts, positions, state):
        """(charges [M, n], chi [M, n] or None)."""
        cs = self.charge_settings
        raw = self._unsort(self.charge_mlp(x, order, counts)[..., 0], order) * cs.output_scale
        if raw.shape[0] != self.n_members:
            raw = raw.expand(self.n_members, -1)
        if cs.scheme == "neutralize":
            return neutralize(raw, state), None
        hard = self.hardness().to(raw.dtype)[:, species]
        q = qeq_charges(raw, hard, positions, state, self._sigma(state, raw.dtype), self.electrostatics_settings,
                        self._pme_cache)
        return q, raw

    def _terms(self, positions, state, dispersion: bool = True) -> dict:
        """Energy terms ``[M, S]`` (dispersion ``[1, S]``) and the charges ``[M, n]``."""
        pos = _as_batched(positions)
        x, species, order, counts = self._features(pos, state)
        q, chi = self._charges_from(x, species, order, counts, pos, state)
        cs = self.charge_settings
        if cs.charge_input:  # features are in atom order; StackedMLP sorts rows by element itself
            x = torch.cat([x.expand(self.n_members, -1, -1), q.unsqueeze(-1)], -1)
        out = self.mlp(x, order, counts)[..., 0]  # [M, n] in order
        eps = out * self.energy_scale + self.element_energy[species[order]]
        m, ns = self.n_members, state.n_systems
        sys = state.system_index[order]
        terms = {"short_range": torch.zeros(m, ns, dtype=eps.dtype).index_add(1, sys, eps)}
        es = self.electrostatics_settings
        if es.enabled:
            terms["electrostatic"] = electrostatic_energy(q, pos, state, es, self._sigma(state, q.dtype),
                                                          self._pme_cache)
        else:
            terms["electrostatic"] = torch.zeros(m, ns, dtype=eps.dtype)
        if cs.scheme == "qeq" and cs.self_energy:
            hard = self.hardness().to(q.dtype)[:, species] + COULOMB / (self._sigma(state, q.dtype) * math.sqrt(math.pi))
            site = chi * q + 0.5 * hard * q * q
            terms["self_energy"] = torch.zeros(m, ns, dtype=eps.dtype).index_add(1, state.system_index, site)
        else:
            terms["self_energy"] = torch.zeros(m, ns, dtype=eps.dtype)
        if dispersion and self.dispersion is not None:
            # shared by all members; on the member-mean positions so per-member forces get it once each
            mean_pos = pos.mean(0, keepdim=True)
            terms["dispersion"] = self.dispersion.energy_batched(state, mean_pos)
        else:
            terms["dispersion"] = torch.zeros(1, ns, dtype=eps.dtype)
        terms["_charges"] = q
        return terms

    def _member_outputs(self, positions, state):
        t = self._terms(positions, state)
        return t["short_range"] + t["electrostatic"] + t["self_energy"] + t["dispersion"], None

    # ------------------------------------------------------------------------------------ public API
    def charges(self, state: State) -> torch.Tensor:
        """Per-member atomic charges ``[n_members, n_atoms]`` (e); each system sums to ``state.charge``."""
        pos = state.positions.to(self.model_dtype).unsqueeze(0)
        with torch.no_grad():
            x, species, order, counts = self._features(pos, state)
            return self._charges_from(x, species, order, counts, pos, state)[0].to(state.dtype)

    def dipoles(self, state: State) -> torch.Tensor:
        """Per-member dipole moments ``[n_members, n_systems, 3]`` (e A) about the coordinate origin
        (tblite's convention); molecules only."""
        if state.is_periodic:
            raise InputError("a dipole moment is not defined for a periodic cell")
        q = self.charges(state)
        return torch.zeros(q.shape[0], state.n_systems, 3, dtype=q.dtype).index_add(
            1, state.system_index, q[..., None] * state.positions[None])

    def energy_terms(self, state: State) -> dict:
        """Committee-mean energy terms ``[n_systems]`` (eV): ``short_range``, ``electrostatic``,
        ``self_energy`` (QEq on-site energy; zero otherwise) and ``dispersion``; they sum to
        :meth:`energy`."""
        with torch.no_grad():
            t = self._terms(state.positions.to(self.model_dtype), state)
        return {k: v.mean(0).to(state.dtype) for k, v in t.items() if not k.startswith("_")}

    def member_terms(self, positions: torch.Tensor, state: State, dispersion: bool = True) -> dict:
        """Per-member terms with gradients (for training): ``[M, S]`` energies and ``charges`` [M, n]."""
        t = self._terms(positions.to(self.model_dtype), state, dispersion=dispersion)
        t["charges"] = t.pop("_charges")
        return t
