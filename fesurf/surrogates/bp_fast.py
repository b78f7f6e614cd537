"""Autograd-free energies and forces of :class:`~fesurf.surrogates.bp.BehlerParrinello` (the MD hot path).

Same model, same stored weights, same numbers to float rounding as the autograd
path (float64: ~1e-15 relative), for batches of equal non-periodic molecules
(MD replicas, one molecule): on malonaldehyde, 1 thread, float32, about 2.5x
faster for one replica and 4x for 64 (``benchmarks/surrogate_cost.py``). How:

- no autograd graph: input gradients of the element MLPs by explicit matrix
  products with SiLU' (no weight gradients), then the chain rule through the
  ACSF radial and angular terms written out;
- feature standardisation folded into the first layer and ``energy_scale``
  into the last (cached until a weight or buffer changes: tensor version
  counters and storage pointers are the key);
- atoms laid out per element in padded blocks ``[n_elements, n_max]``: a layer
  is one ``baddbmm`` for all elements (the first one for all committee members);
- a dense per-centre layout (all ``n - 1`` neighbours, all ``(n-1)(n-2)/2``
  triplets of every centre; the smooth cutoff zeroes far ones, as in the
  template graph) with feature dimensions outermost and (neighbour, replica)
  innermost, so elementwise work runs over long contiguous blocks; element and
  channel sums are ``index_add_`` over (centre, element/channel) rows, their
  backward passes gathers; index lists cached per State (replicas share them);
- the core is compiled with TorchScript when available (fewer Python round
  trips; ~15% for one replica), else run eagerly.

Periodic cells, molecules of unequal size or composition, ``create_graph=True``
(training) and heteroscedastic heads use autograd:
:meth:`BehlerParrinello.energy_and_forces` dispatches by :func:`fast_supported`.
(An earlier CSR-scatter version for general graphs was no faster than autograd
there and was dropped.)

Example
-------
>>> import torch
>>> from ase.build import molecule
>>> from fesurf.state import State
>>> from fesurf.surrogates import BehlerParrinello
>>> from fesurf.surrogates.bp_fast import fast_energy_and_forces
>>> model = BehlerParrinello(elements=[1, 8], hidden=(8,), seed=0)
>>> s = State.from_atoms(molecule("H2O"))
>>> e, f = fast_energy_and_forces(model, s)
>>> e_ref, f_ref = model.energy_and_forces(s, fast=False)
>>> bool(torch.allclose(e[0], e_ref[0])) and bool(torch.allclose(f[0], f_ref))
True
"""
from __future__ import annotations

import math
import warnings
from typing import List, Tuple

import torch

from ..errors import InputError
from ..neighbors import ALL_PAIRS_MAX_ATOMS
from ..state import State


def fast_supported(model, state: State, create_graph: bool) -> bool:
    """Whether :func:`fast_energy_and_forces` covers this call (else use autograd)."""
    return (not create_graph and not model.heteroscedastic and len(model.hidden) > 0
            and not state.positions.requires_grad and state.positions.device.type == "cpu"
            and model.feature_std.device.type == "cpu" and _template_plan(model.acsf, state) is not None)


def _weight_tensors(model):
    buf = model._buffers  # direct dict access: Module.__getattr__ is slow on the hot path
    mlp = model._modules["mlp"]._modules
    return (*mlp["weights"]._parameters.values(), *mlp["biases"]._parameters.values(),
            buf["feature_mean"], buf["feature_std"], buf["energy_scale"], buf["element_energy"])


@torch.no_grad()
def _folded(model):
    """Per-layer weights with standardisation and energy scale folded in (cached).

    Returns ``W1 [E, D, M*H1]``, ``b1 [E, 1, M*H1]``, then for the other layers
    ``W [E*M, a, b]``, ``b [E*M, 1, b]``; the last layer's output is
    ``scale * eps`` (eV); and transposed copies for the backward pass.
    """
    tensors = _weight_tensors(model)
    key = tuple((t.data_ptr(), t._version, t.dtype) for t in tensors)  # changes on optimiser steps, .to()
    cache = model.__dict__.get("_fast_weights")
    if cache is not None and cache[0] == key:
        return cache[1]
    ws, bs = list(model.mlp.weights), list(model.mlp.biases)
    m, e, d, h1 = ws[0].shape
    inv_std = 1.0 / model.feature_std  # [E, D]
    w1 = ws[0] * inv_std[None, :, :, None]  # [M, E, D, H]
    b1 = bs[0] - (model.feature_mean * inv_std)[None, :, None, :] @ ws[0]  # [M, E, 1, H]
    ws_, bs_, wts_ = [], [], []
    w1c = w1.permute(1, 2, 0, 3).reshape(e, d, m * h1).contiguous()
    b1c = b1.permute(1, 2, 0, 3).reshape(e, 1, m * h1).contiguous()
    w1t = w1.permute(1, 0, 3, 2).reshape(e, m * h1, d).contiguous()  # rows (member, hidden)
    scale = model.energy_scale
    for k in range(1, len(ws)):
        w, b = ws[k], bs[k]
        if k == len(ws) - 1:  # eps = scale * out + e_ref[element]
            w, b = w[..., :1] * scale, b[..., :1] * scale
        wt = w.transpose(-1, -2)
        ws_.append(w.transpose(0, 1).reshape(e * m, *w.shape[2:]).detach().clone())  # own copies, no grad
        bs_.append(b.transpose(0, 1).reshape(e * m, *b.shape[2:]).detach().clone())
        wts_.append(wt.transpose(0, 1).reshape(e * m, *wt.shape[2:]).detach().clone())
    out = (w1c, b1c, w1t, ws_, bs_, wts_, m, h1, model.element_energy.clone())
    model.__dict__["_fast_weights"] = (key, out)
    return out


def _energy_rows(row: torch.Tensor, species: torch.Tensor, system_index: torch.Tensor, n_systems: int) -> dict:
    """Real MLP rows in increasing order with their element and system: the energy sum then
    runs over atoms in the same order as :meth:`BehlerParrinello._member_outputs` (element-sorted)."""
    rows, perm = torch.sort(row)
    return {"rows": rows, "species": species[perm], "system": system_index[perm], "n_systems": n_systems}


def _silu_and_grad(z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    s = torch.sigmoid(z)
    h = z * s
    return h, s + h * (1.0 - s)  # silu'(z) = s (1 + z (1 - s))


def _mlp_core(g: torch.Tensor, w1c: torch.Tensor, b1c: torch.Tensor, w1t: torch.Tensor, ws: List[torch.Tensor],
              bs: List[torch.Tensor], wts: List[torch.Tensor], n_max: int, m: int, h1: int,
              members: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Element MLPs on padded rows ``g [E * n_max, D]``: ``(scale * eps [rows, M], dE/dg [rows, L, D])``
    with ``L = M`` (``members``) or 1 (gradient of the committee mean)."""
    ne = w1c.shape[0]
    n_rows = ne * n_max
    z = torch.baddbmm(b1c, g.view(ne, n_max, -1), w1c)  # [E, n_max, M*H1]
    h, dh = _silu_and_grad(z)
    hs = [dh]
    if m > 1:
        h = h.view(ne, n_max, m, h1).transpose(1, 2).reshape(ne * m, n_max, h1)
    n_layers = len(ws)
    for k in range(n_layers):
        z = torch.baddbmm(bs[k], h, ws[k])
        if k < n_layers - 1:
            h, dh = _silu_and_grad(z)
            hs.append(dh)
    atom_e = z.view(ne, m, n_max).transpose(1, 2).reshape(n_rows, m)
    # backward: seed d(out)/d(out) = 1 (per member) or 1/M (mean)
    grad = wts[n_layers - 1]  # [E*M, 1, H]
    if not members:
        if m > 1:
            grad = grad * (1.0 / m)
    for k in range(n_layers - 1, 0, -1):
        grad = torch.bmm(grad * hs[k], wts[k - 1])
    if grad.shape[1] != n_max:
        grad = grad.expand(-1, n_max, -1)
    if members:
        gz = grad.reshape(ne, m, n_max, h1) * hs[0].view(ne, n_max, m, h1).transpose(1, 2)
        gx = torch.matmul(gz, w1t.view(ne, m, h1, -1))  # [E, M, n_max, D]
        gx = gx.permute(0, 2, 1, 3).reshape(n_rows, m, -1)
    else:
        if m > 1:
            grad = grad.reshape(ne, m, n_max, h1).transpose(1, 2).reshape(ne, n_max, m * h1)
        gx = torch.bmm(grad * hs[0], w1t).view(n_rows, 1, -1)
    return atom_e, gx


def _cutoff(r: torch.Tensor, rc: torch.Tensor, pi_rc: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Cosine cutoff and its derivative (same expression as :func:`~.descriptors.cosine_cutoff`);
    ``rc`` (Angstrom) and ``pi_rc = pi / rc`` are tensors broadcasting against ``r``."""
    inside = r < rc
    arg = r * pi_rc
    fc = torch.where(inside, 0.5 * torch.cos(arg) + 0.5, 0.0)
    dfc = torch.where(inside, torch.sin(arg) * pi_rc * -0.5, 0.0)
    return fc, dfc


def _angular_terms(cos: torch.Tensor, lam: torch.Tensor, zetas: List[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(angular, d angular / d cos)`` stacked over (zeta, lambda) on dimension 0
    (``cos`` has a singleton there); ``lam``: the lambdas shaped ``[L, 1, ...]``."""
    base = 1.0 + cos * lam
    terms: List[torch.Tensor] = []
    dterms: List[torch.Tensor] = []
    for zeta in zetas:
        if zeta == 1:
            terms.append(base)
            dterms.append(lam.expand_as(base))
        else:
            c = 2.0 ** (1 - zeta)
            pm1 = base if zeta == 2 else base ** (zeta - 1)
            terms.append(c * pm1 * base)
            dterms.append((c * zeta) * pm1 * lam)
    if len(terms) == 1:
        return terms[0], dterms[0]
    return torch.cat(terms, 0), torch.cat(dterms, 0)


class _TemplatePlan:
    """Dense per-centre layout for ``B`` equal molecules of ``n`` atoms (same atomic numbers).

    Pair ``(i, l)`` is centre ``i`` and its ``l``-th other atom ``J[i, l]``; triplet ``t`` of a
    centre pairs its local neighbours ``ta[t] < tb[t]``. Element (radial) and channel
    (angular) sums are ``index_add_`` over (centre, element/channel) rows, their backward
    passes gathers; the triplet-to-pair and pair-to-atom sums are products with 0/1 matrices.
    """

    def __init__(self, acsf, numbers: torch.Tensor, n: int, n_systems: int):
        ne, nc = acsf.n_elements, acsf.n_pair_channels
        species = acsf.species(numbers[:n])
        ar = torch.arange(n)
        self.J = torch.stack([torch.cat([ar[:c], ar[c + 1:]]) for c in range(n)])  # [n, n-1]
        ta, tb = torch.triu_indices(n - 1, n - 1, offset=1)
        self.ta, self.tb, self.n, self.B = ta, tb, n, n_systems
        nt = ta.numel()
        sj = species[self.J]  # [n, n-1]
        ch = acsf.pair_channel[sj[:, ta] * ne + sj[:, tb]]  # [n, nt]
        tab = torch.zeros(n - 1, 2 * nt, dtype=torch.float64)
        tab[ta, torch.arange(nt)] = 1.0
        tab[tb, nt + torch.arange(nt)] = 1.0
        fmat = torch.zeros(n, n, n - 1, dtype=torch.float64)  # F_k = sum_(i,l) fmat[k,i,l] dE/dvec_il
        fmat[ar[:, None].expand(n, n - 1), ar[:, None].expand(n, n - 1), torch.arange(n - 1)[None].expand(n, n - 1)] += 1.0
        fmat[self.J, ar[:, None].expand(n, n - 1), torch.arange(n - 1)[None].expand(n, n - 1)] -= 1.0
        self.J_flat = self.J.reshape(-1)
        # constants of _template_core, in its order
        col = (-1, 1, 1, 1)  # per-feature constants broadcast over [feature, n, n-1, B]
        # rows (centre, neighbour element) of each pair and (centre, channel) of each triplet
        self.rad_src = (ar[:, None] * ne + sj).view(-1)
        self.ang_src = (ar[:, None] * nc + ch).view(-1)
        self._f64 = [tab, fmat.view(n, -1), acsf.cutoffs.view(col), acsf.basis_shift.view(col), -acsf.basis_eta.view(col),
                     2.0 * acsf.basis_eta.view(col), acsf.lambdas.view(col)]
        self._mats = {}
        # padded element rows of the MLP (all atoms of all replicas)
        all_species = species.repeat(n_systems)
        counts = torch.bincount(all_species, minlength=ne)
        self.n_max = n_max = int(counts.max())
        order = torch.argsort(all_species, stable=True)
        start = torch.cumsum(counts, 0) - counts
        rank = torch.empty(order.numel(), dtype=torch.long)
        rank[order] = torch.arange(order.numel()) - start[all_species[order]]
        self.row = all_species * n_max + rank  # row of atom b*n + i
        src = torch.zeros(ne * n_max, dtype=torch.long)  # padding rows copy atom 0 (finite, results unused)
        src[self.row] = torch.arange(order.numel())
        self.row_src, self.species = src, all_species
        self.energy_rows = _energy_rows(self.row, all_species, torch.arange(n_systems).repeat_interleave(n), n_systems)

    def mats(self, dtype, device):
        key = (dtype, device)
        if key not in self._mats:
            mats = [v.to(dtype=dtype, device=device) for v in self._f64]
            self._mats[key] = mats + [math.pi / mats[2]]  # pi / rc as the autograd path computes it
        return self._mats[key]


_MAX_TRIPLET_ELEMENTS = 2 ** 26


def _template_plan(acsf, state: State):
    """Cached :class:`_TemplatePlan` when ``state`` is ``B`` equal non-periodic molecules (same
    atomic numbers, 3 to ``ALL_PAIRS_MAX_ATOMS`` atoms, at most ``_MAX_TRIPLET_ELEMENTS`` angular
    terms in all), else None. The cache holds the State's index tensors themselves, so a hit
    (same objects, unchanged version counters) is exact."""
    cache = acsf.__dict__.setdefault("_fast_template_cache", {})
    ts = (state.system_index, state.atomic_numbers, state.pbc)
    hit = cache.get(id(ts[0]))
    if hit is not None and all(a is b and a._version == v for a, (b, v) in zip(ts, hit[0])):
        return hit[1]
    plan = None
    counts = state.atoms_per_system
    n = int(counts[0])
    b = state.n_systems
    # every centre keeps all (n-1)(n-2)/2 triplets: cap the largest array (~4 bytes x this in float32)
    small = n * (n - 1) * (n - 2) // 2 * b * acsf.n_angular <= _MAX_TRIPLET_ELEMENTS
    if not state.is_periodic and 3 <= n <= ALL_PAIRS_MAX_ATOMS and small and bool((counts == n).all()):
        numbers = state.atomic_numbers
        if bool((numbers.view(b, n) == numbers[:n]).all()):
            plan = _TemplatePlan(acsf, numbers, n, b)
    if len(cache) > 32:
        cache.clear()
    cache[id(ts[0])] = (tuple((t, t._version) for t in ts), plan)
    return plan


def _template_core(positions: torch.Tensor, members: bool, J: torch.Tensor, ta: torch.Tensor, tb: torch.Tensor,
                   rad_src: torch.Tensor, ang_src: torch.Tensor, row_src: torch.Tensor, row: torch.Tensor,
                   e_rows: torch.Tensor, eref_rows: torch.Tensor, e_system: torch.Tensor, basis_cutoff: torch.Tensor,
                   c: List[torch.Tensor], zetas: List[int], w1c: torch.Tensor, b1c: torch.Tensor, w1t: torch.Tensor,
                   ws: List[torch.Tensor], bs: List[torch.Tensor], wts: List[torch.Tensor],
                   dims: List[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Energies ``[M or 1, B]`` and forces ``[M or 1, B*n, 3]`` of ``positions [B*n, 3]`` (see
    :class:`_TemplatePlan`): per member (``members``) or of the committee mean. ``c``: constant
    matrices, ``dims``: (n, B, E, R, C, n_angular, n_max, M, H1).

    Layout: feature dimensions outermost, then (committee member L in the backward), centre,
    neighbour or triplet, replica: elementwise work broadcasts over outer dimensions and runs
    over long contiguous (neighbour, replica) blocks.
    """
    n, B, ne, nr, nc, na, n_max, m, h1 = dims
    x = positions.view(B, n, 3).permute(2, 1, 0).contiguous()  # [3, n, B]
    tab, fmat, rc, shift, neg_eta, two_eta, lam, pi_rc = c
    nt = ta.shape[0]
    # ---- pairs [feature, n, n-1, B]
    vec = x.index_select(1, J).view(3, n, n - 1, B) - x.unsqueeze(2)
    r = (vec * vec).sum(0, keepdim=True).sqrt_()  # [1, n, n-1, B]
    inv_r = 1.0 / r
    u = vec * inv_r
    # all Gaussian shells (radial G2, then angular) in one pass, each with its own cutoff
    fc, dfc = _cutoff(r, rc, pi_rc)  # [2, n, n-1, B]
    fcb, dfcb = fc.index_select(0, basis_cutoff), dfc.index_select(0, basis_cutoff)
    diff = r - shift  # [R+S, n, n-1, B]
    gauss = torch.exp(diff * diff * neg_eta)
    basis_all = gauss * fcb
    dbasis_all = gauss * (dfcb - two_eta * diff * fcb)  # d basis / d r
    shell = basis_all[nr:]
    s_ang = shell.shape[0]
    # sum over the neighbours of each element: rows (centre, element)
    g_rad = gauss.new_zeros(nr, n * ne, B).index_add_(1, rad_src, basis_all[:nr].view(nr, n * (n - 1), B))
    # ---- triplets [feature, n, nt, B]
    a1, a2 = shell.index_select(2, ta), shell.index_select(2, tb)
    u1, u2 = u.index_select(2, ta), u.index_select(2, tb)
    radial = a1 * a2  # [S, n, nt, B]
    cos = (u1 * u2).sum(0, keepdim=True)  # [1, n, nt, B]
    angular, dangular = _angular_terms(cos, lam, zetas)  # [ZL, n, nt, B]
    zl = angular.shape[0]
    g5 = radial.unsqueeze(1) * angular.unsqueeze(0)  # [S, ZL, n, nt, B]
    # sum over the triplets of each channel: rows (centre, channel)
    g_ang = g5.new_zeros(s_ang, zl, n * nc, B).index_add_(2, ang_src, g5.view(s_ang, zl, n * nt, B))
    # ---- MLP rows: atoms (b, i) padded per element (padding rows copy atom 0; results unused)
    g = g_rad.new_empty(B, n, ne * nr + nc * na)
    g[:, :, :ne * nr].unflatten(2, (ne, nr)).copy_(g_rad.view(nr, n, ne, B).permute(3, 1, 2, 0))
    g[:, :, ne * nr:].unflatten(2, (nc, s_ang, zl)).copy_(g_ang.view(s_ang, zl, n, nc, B).permute(4, 2, 3, 0, 1))
    atom_e, gx = _mlp_core(g.view(B * n, -1).index_select(0, row_src), w1c, b1c, w1t, ws, bs, wts, n_max, m, h1,
                           members)
    # energies: sum_i (scale * eps_i + e_ref[Z_i]) over atoms in element order, as the autograd path
    e = atom_e.index_select(0, e_rows) + eref_rows.unsqueeze(1)
    energies = e.new_zeros(B, m).index_add_(0, e_system, e).t()
    if not members:
        energies = energies.mean(0, keepdim=True)
    lead = gx.shape[1]
    gx = gx.index_select(0, row).view(B, n, lead, -1)  # atoms (b, i)
    # ---- backward to pairs: arrays [feature, L, n, n-1 or nt, B]
    d_g_rad = gx[:, :, :, :ne * nr].unflatten(3, (ne, nr)).permute(4, 2, 1, 3, 0)  # [R, L, n, E, B]
    d_basis = d_g_rad.reshape(nr, lead, n * ne, B).index_select(2, rad_src).view(nr, lead, n, n - 1, B)
    d_r = (d_basis * dbasis_all[:nr].unsqueeze(1)).sum(0)  # [L, n, n-1, B]
    d_g_ang = gx[:, :, :, ne * nr:].unflatten(3, (nc, s_ang, zl)).permute(4, 5, 2, 1, 3, 0)  # [S, ZL, L, n, C, B]
    d_y = d_g_ang.reshape(s_ang, zl, lead, n * nc, B).index_select(3, ang_src).view(s_ang, zl, lead, n, nt, B)
    d_radial = (d_y * angular.unsqueeze(1).unsqueeze(0)).sum(1)  # [S, L, n, nt, B]
    d_ang = (d_y * radial.unsqueeze(1).unsqueeze(2)).sum(0)  # [ZL, L, n, nt, B]
    d_cos = (d_ang * dangular.unsqueeze(1)).sum(0)  # [L, n, nt, B]
    v = d_cos.new_empty(s_ang + 3, lead, n, 2, nt, B)  # [:, :, :, 0] to pair ta, [:, :, :, 1] to pair tb
    torch.mul(d_radial, a2.unsqueeze(1), out=v[:s_ang, :, :, 0])
    torch.mul(d_cos, u2.unsqueeze(1), out=v[s_ang:, :, :, 0])
    torch.mul(d_radial, a1.unsqueeze(1), out=v[:s_ang, :, :, 1])
    torch.mul(d_cos, u1.unsqueeze(1), out=v[s_ang:, :, :, 1])
    acc = torch.matmul(tab, v.view(s_ang + 3, lead, n, 2 * nt, B))  # [S+3, L, n, n-1, B]
    d_r = d_r + (acc[:s_ang] * dbasis_all[nr:].unsqueeze(1)).sum(0)
    d_u = acc[s_ang:]  # [3, L, n, n-1, B]
    uu, ir = u.unsqueeze(1), inv_r.unsqueeze(1)
    d_vec = (d_r - (d_u * uu).sum(0, keepdim=True) * ir) * uu + d_u * ir
    # F = -dE/dpos: pair vector r_j - r_i, so F_i += dE/dvec, F_j -= dE/dvec
    forces = torch.matmul(fmat, d_vec.reshape(3, lead, n * (n - 1), B))  # [3, L, n, B]
    return energies, forces.permute(1, 3, 2, 0).reshape(lead, B * n, 3)


_SCRIPTED = {}


def _scripted_core():
    """TorchScript of :func:`_template_core` (fewer Python round trips for small molecules);
    the plain function if scripting is unavailable."""
    if "core" not in _SCRIPTED:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.9 marks TorchScript deprecated
                _SCRIPTED["core"] = torch.jit.script(_template_core)
        except Exception:  # pragma: no cover - TorchScript missing or unsupported construct
            _SCRIPTED["core"] = _template_core
    return _SCRIPTED["core"]


def _compiled_core():
    """``torch.compile`` of :func:`_template_core` (inductor fuses the elementwise descriptor work;
    needs a C++ compiler; compiles once per input shape, a few seconds each). On any failure it
    warns once and returns the TorchScript core."""
    if "compiled" not in _SCRIPTED:
        try:
            _SCRIPTED["compiled"] = torch.compile(_template_core, dynamic=False)
        except Exception as exc:  # pragma: no cover - no dynamo on this platform
            warnings.warn(f"torch.compile is unavailable ({exc}); using the TorchScript fast path", stacklevel=3)
            _SCRIPTED["compiled"] = _scripted_core()
    return _SCRIPTED["compiled"]


def _run_core(model, positions, members, args, script):
    if script and model.__dict__.get("_compiled_path", False):
        try:
            return _compiled_core()(positions, members, *args)
        except Exception as exc:  # a missing compiler surfaces at the first call
            warnings.warn(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); falling back to the "
                          "TorchScript fast path for this model", stacklevel=4)
            model._compiled_path = False
    core = _scripted_core() if script else _template_core
    return core(positions, members, *args)


def _template_energy_and_forces(model, state: State, plan: _TemplatePlan, members: bool, script: bool = True):
    folded = _folded(model)
    bundle = plan.__dict__.get("_bundle")
    if bundle is None or bundle[0] is not folded:  # arguments of the core after (positions, members)
        w1c, b1c, w1t, ws, bs, wts, m, h1, eref = folded
        acsf = model.acsf
        er = plan.energy_rows
        dims = [plan.n, plan.B, acsf.n_elements, acsf.n_radial, acsf.n_pair_channels, acsf.n_angular, plan.n_max,
                m, h1]
        args = (plan.J_flat, plan.ta, plan.tb, plan.rad_src, plan.ang_src, plan.row_src, plan.row, er["rows"],
                eref.index_select(0, er["species"]), er["system"], acsf.basis_cutoff,
                plan.mats(w1c.dtype, w1c.device), acsf._zetas, w1c, b1c, w1t, ws, bs, wts, dims)
        bundle = plan.__dict__["_bundle"] = (folded, args)
    energies, forces = _run_core(model, state.positions.to(folded[0].dtype), members, bundle[1], script)
    return energies.to(state.dtype), forces.to(state.dtype)


@torch.no_grad()
def fast_energy_and_forces(model, state: State, members: bool = False):
    """``(energies, forces)`` in the State's dtype without autograd (``state`` must satisfy
    :func:`fast_supported`).

    ``members=False``: committee-mean energy ``[1, S]`` and forces ``[1, n_atoms, 3]``;
    ``members=True``: per-member ``[M, S]`` and ``[M, n_atoms, 3]``.
    """
    plan = _template_plan(model.acsf, state)
    if plan is None:
        raise InputError("the fast path needs equal non-periodic molecules (same atomic numbers, 3 to "
                         f"{ALL_PAIRS_MAX_ATOMS} atoms each); use model.energy_and_forces, which falls back to autograd")
    return _template_energy_and_forces(model, state, plan, members)
