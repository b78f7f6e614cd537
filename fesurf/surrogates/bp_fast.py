"""Autograd-free energies and forces of :class:`~fesurf.surrogates.bp.BehlerParrinello` (the MD hot path).

Same model, same stored weights, same numbers to float rounding as the autograd
path (float64: ~1e-15 relative), for batches of equal non-periodic molecules
(MD replicas, one molecule), for single networks and committees (independent
members or a shared trunk with per-member heads, ``shared_layers``); per-member
forces for the committee spread come from the same pass with ``L = M`` gradient
seeds (the committee mean needs one). Timings: ``benchmarks/surrogate_cost.py``,
``docs/notes/committee.md``. How:

- no autograd graph: input gradients of the element MLPs by explicit matrix
  products with SiLU' (no weight gradients), then the chain rule through the
  ACSF radial and angular terms written out;
- feature standardisation folded into the first layer and ``energy_scale``
  into the last (cached until a weight or buffer changes: tensor version
  counters and storage pointers are the key);
- the MLP runs transposed (features x rows) on atoms laid out per element in
  padded blocks ``[n_elements, n_max]`` with the replica index innermost: a layer
  is one ``baddbmm`` for all elements (and all members of a per-member layer);
  shared layers run once, and backwards once for all seeds; descriptors enter
  and gradients leave the MLP by single row gathers (rows of ``B`` replicas);
- a dense per-centre layout (all ``n - 1`` neighbours, all ``(n-1)(n-2)/2``
  triplets of every centre; the smooth cutoff zeroes far ones, as in the
  template graph) with feature dimensions outermost and (neighbour, replica)
  innermost, so elementwise work runs over long contiguous blocks; element and
  channel sums are ``index_add_`` over (centre, element/channel) rows, their
  backward passes gathers; index lists cached per State (replicas share them);
  the descriptor backward runs seed by seed (small working set, no per-call
  page faults from large temporaries);
- the core is compiled with TorchScript when available (fewer Python round
  trips), else run eagerly.

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


# kinds of MLP layers in the fast path
_SHARED, _FAN_OUT, _PER_MEMBER = 0, 1, 2


@torch.no_grad()
def _folded(model):
    """Per-layer weights with standardisation and energy scale folded in (cached), for the
    transposed MLP of :func:`_mlp_core` (features x rows: ``z = W^T h + b``).

    Returns ``(kinds, fw, fb, bw, pm, seeds, m, e_ref)``. Layer ``k`` is of kind ``_SHARED``
    (one network per element for all members: forward ``W^T [E, b, a]``, backward ``W [E, a, b]``),
    ``_FAN_OUT`` (the first per-member layer, on a shared input: members' weights stacked,
    ``W^T [E, M*b, a]`` and ``W [E, a, M*b]``; ``pm[k]`` the per-member ``W [E*M, a, b]``) or
    ``_PER_MEMBER`` (``[E*M, ...]``); biases ``[E or E*M, b or M*b, 1]``. Layer 0 takes raw
    descriptors (standardisation folded in), the last one outputs ``scale * eps`` (eV).
    ``seeds``: the gradient of the output with respect to the last hidden layer for the
    committee mean and per member (layouts in :func:`_mlp_core`).
    """
    tensors = _weight_tensors(model)
    key = tuple((t.data_ptr(), t._version, t.dtype) for t in tensors)  # changes on optimiser steps, .to()
    cache = model.__dict__.get("_fast_weights")
    if cache is not None and cache[0] == key:
        return cache[1]
    ws0, bs0 = list(model.mlp.weights), list(model.mlp.biases)
    m = model.n_members
    e = ws0[0].shape[1]
    inv_std = 1.0 / model.feature_std  # [E, D]
    scale = model.energy_scale
    n_layers = len(ws0)
    kinds: List[int] = []
    fw_, fb_, bw_, pm_ = [], [], [], []
    empty = ws0[0].new_zeros(0)
    for k in range(n_layers):
        w, b = ws0[k], bs0[k]  # [M or 1, E, a, b], [M or 1, E, 1, b]
        if k == 0:
            b = b - (model.feature_mean * inv_std)[None, :, None, :] @ w
            w = w * inv_std[None, :, :, None]
        if k == n_layers - 1:  # eps = scale * out + e_ref[element]
            w, b = w[..., :1] * scale, b[..., :1] * scale
        mk, a_, b_ = w.shape[0], w.shape[2], w.shape[3]
        pm = empty
        if mk == 1 or m == 1:
            kind = _SHARED
            fw, fb, bw = w[0].transpose(-1, -2), b[0].transpose(-1, -2), w[0]
        elif _FAN_OUT not in kinds:
            kind = _FAN_OUT
            fw = w.permute(1, 0, 3, 2).reshape(e, mk * b_, a_)  # rows (member, output)
            fb = b.permute(1, 0, 3, 2).reshape(e, mk * b_, 1)
            bw = w.permute(1, 2, 0, 3).reshape(e, a_, mk * b_)  # columns (member, output)
            pm = w.transpose(0, 1).reshape(e * mk, a_, b_)
        else:
            kind = _PER_MEMBER
            fw = w.transpose(0, 1).transpose(-1, -2).reshape(e * mk, b_, a_)
            fb = b.transpose(0, 1).transpose(-1, -2).reshape(e * mk, b_, 1)
            bw = w.transpose(0, 1).reshape(e * mk, a_, b_)
        kinds.append(kind)
        for lst, t in ((fw_, fw), (fb_, fb), (bw_, bw), (pm_, pm)):
            lst.append(t.detach().contiguous().clone())  # own copies, no grad
    last, w_last = kinds[-1], ws0[-1][..., :1] * scale  # [M or 1, E, H, 1]
    h = w_last.shape[2]
    if last == _PER_MEMBER:  # per-member layout [E*M, H, 1]
        seed_members = w_last.transpose(0, 1).reshape(e * m, h, 1)
        seed_mean = seed_members * (1.0 / m)
    elif last == _FAN_OUT:  # shared layout [E, H, L, 1]
        seed_members = w_last[..., 0].permute(1, 2, 0).unsqueeze(-1)
        seed_mean = w_last[..., 0].mean(0).view(e, h, 1, 1)
    else:
        seed_mean = seed_members = w_last[0].view(e, h, 1, 1)
    seeds = [seed_mean.detach().contiguous().clone(), seed_members.detach().contiguous().clone()]
    out = (kinds, fw_, fb_, bw_, pm_, seeds, m, model.element_energy.detach().clone())
    model.__dict__["_fast_weights"] = (key, out)
    return out


def _mlp_core(g: torch.Tensor, kinds: List[int], fw: List[torch.Tensor], fb: List[torch.Tensor],
              bw: List[torch.Tensor], pm: List[torch.Tensor], seeds: List[torch.Tensor], m: int,
              members: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Element MLPs, transposed (features x rows), on ``g [E, D, n_max]``: ``(scale * eps [E, M, n_max],
    dE/dg)`` with ``L = M`` seeds (``members``: one per member) or 1 (the gradient of the committee mean).

    The input gradient is ``[E, D, L, n_max]`` (shared layout), or ``[E, M, D, n_max]`` when the first
    layer is already per member and ``members`` is set. Shared layers run once for all members, and
    backwards once for all ``L`` seeds (one ``bmm`` over ``L * n_max`` columns per element).
    """
    ne = fw[0].shape[0]
    n_layers = len(fw)
    h = g
    dhs: List[torch.Tensor] = []  # silu' of each hidden layer, [E, b, 1, n_max] (shared) or [E*M, b, n_max]
    z = h
    for k in range(n_layers):
        z = torch.baddbmm(fb[k], fw[k], h)
        if k < n_layers - 1:
            if kinds[k] == _FAN_OUT:  # [E, M*b, n_max] -> [E*M, b, n_max]
                z = z.view(ne * m, -1, z.shape[-1])
            h, dh = _silu_and_grad(z)
            dhs.append(dh.unsqueeze(2) if kinds[k] == _SHARED else dh)
    atom_e = z.view(ne, m, -1)
    lead = m if members else 1
    per_member = kinds[n_layers - 1] == _PER_MEMBER
    grad = seeds[1] if members else seeds[0]  # gradient with respect to the last hidden layer
    for k in range(n_layers - 2, -1, -1):
        kind = kinds[k]
        if per_member:  # grad [E*M, b, n_max or 1]
            gz = grad * dhs[k]
            if kind == _PER_MEMBER:
                grad = torch.bmm(bw[k], gz)
            elif members:  # fan-out, seeds kept apart
                grad = torch.bmm(pm[k], gz).view(ne, m, -1, gz.shape[-1])  # [E, M, a, n_max]
                if k > 0:
                    grad = grad.permute(0, 2, 1, 3).contiguous()  # shared layout [E, a, M, n_max]
                per_member = False
            else:  # fan-out, committee mean: members' contributions summed by one matmul
                grad = torch.bmm(bw[k], gz.view(ne, -1, gz.shape[-1])).unsqueeze(2)  # [E, a, 1, n_max]
                per_member = False
        else:  # shared layer, all seeds in one bmm: grad [E, b, L, n_max or 1]
            gz = grad * dhs[k]
            grad = torch.bmm(bw[k], gz.view(ne, gz.shape[1], -1)).view(ne, -1, lead, gz.shape[-1])
    return atom_e, grad


def _silu_and_grad(z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    s = torch.sigmoid(z)
    h = z * s
    return h, s + h * (1.0 - s)  # silu'(z) = s (1 + z (1 - s))


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
    passes gathers; the triplet-to-pair sums are ``index_add_`` and the pair-to-atom sum a
    product with a 0/1 matrix. MLP columns: atom ``k`` of element ``e`` in the molecule,
    replica ``b`` is column ``k * B + b`` of element block ``e`` (``n_max = max_e n_e * B``).
    """

    def __init__(self, acsf, numbers: torch.Tensor, n: int, n_systems: int):
        ne, nc, nr = acsf.n_elements, acsf.n_pair_channels, acsf.n_radial
        s_ang, zl = len(acsf.config["angular_shifts"]), len(acsf._zl)
        d = acsf.n_features
        species = acsf.species(numbers[:n])
        ar = torch.arange(n)
        self.J = torch.stack([torch.cat([ar[:c], ar[c + 1:]]) for c in range(n)])  # [n, n-1]
        ta, tb = torch.triu_indices(n - 1, n - 1, offset=1)
        self.ta, self.tb, self.n, self.B = ta, tb, n, n_systems
        nt = ta.numel()
        sj = species[self.J]  # [n, n-1]
        ch = acsf.pair_channel[sj[:, ta] * ne + sj[:, tb]]  # [n, nt]
        fmat = torch.zeros(n, n, n - 1, dtype=torch.float64)  # F_k = sum_(i,l) fmat[k,i,l] dE/dvec_il
        fmat[ar[:, None].expand(n, n - 1), ar[:, None].expand(n, n - 1), torch.arange(n - 1)[None].expand(n, n - 1)] += 1.0
        fmat[self.J, ar[:, None].expand(n, n - 1), torch.arange(n - 1)[None].expand(n, n - 1)] -= 1.0
        self.J_flat = self.J.reshape(-1)
        # constants of _template_core, in its order
        col = (-1, 1, 1, 1)  # per-feature constants broadcast over [feature, n, n-1, B]
        # rows (centre, neighbour element) of each pair and (centre, channel) of each triplet
        self.rad_src = (ar[:, None] * ne + sj).view(-1)
        self.ang_src = (ar[:, None] * nc + ch).view(-1)
        self._f64 = [fmat.view(n, -1), acsf.cutoffs.view(col), acsf.basis_shift.view(col), -acsf.basis_eta.view(col),
                     2.0 * acsf.basis_eta.view(col), acsf.lambdas.view(col)]
        self._mats = {}
        # MLP columns: rank k of each atom among the molecule's atoms of its element
        counts = torch.bincount(species, minlength=ne)
        self.n_e_max = n_e_max = int(counts.max())
        self.n_max = n_e_max * n_systems
        rank = torch.zeros(n, dtype=torch.long)
        for e in range(ne):
            idx = (species == e).nonzero().view(-1)
            rank[idx] = torch.arange(idx.numel())
        self.species, self.rank = species, rank
        atom_of = torch.zeros(ne, n_e_max, dtype=torch.long)  # padding columns copy atom 0 (finite, unused)
        atom_of[species, rank] = ar
        self.mask = torch.zeros(ne, 1, n_e_max, 1, dtype=torch.float64)
        self.mask[species, 0, rank, 0] = 1.0
        # descriptor rows (feature, centre, element or channel) of the buffer that the forward pass
        # fills (radial block [R, n*E], then angular [S, ZL, n*C], each row B replicas) -> MLP rows (e, d, k)
        feat = torch.arange(d)
        rad_row = (feat[:ne * nr] % nr)[None, :, None] * (n * ne) + atom_of[:, None, :] * ne \
            + (feat[:ne * nr] // nr)[None, :, None]
        fa = feat[ne * nr:] - ne * nr  # c * S * ZL + s * ZL + zl
        ang_row = nr * n * ne + ((fa % (s_ang * zl)))[None, :, None] * (n * nc) + atom_of[:, None, :] * nc \
            + (fa // (s_ang * zl))[None, :, None]
        self.g_rows = torch.cat([rad_row, ang_row], 1).reshape(-1)  # [E * D * n_e_max]
        self.n_buffer_rows = nr * n * ne + s_ang * zl * n * nc
        # gradient rows of the MLP output, per (feature, centre, pair or triplet) of the backward
        e_i, k_i = species, rank
        self._seed_parts = dict(
            rad_feat=((sj * nr)[None] + torch.arange(nr)[:, None, None]),  # [R, n, n-1]: feature of pair (i, l)
            ang_feat=(ne * nr + ch * (s_ang * zl))[None, None] + (torch.arange(s_ang)[:, None, None, None] * zl
                                                                  + torch.arange(zl)[None, :, None, None]),
            e_i=e_i, k_i=k_i, d=d)
        self._seed_rows = {}

    def seed_rows(self, m: int) -> List[torch.Tensor]:
        """Row indices into the MLP's input gradient viewed as ``[-1, B]``: ``[radial, angular]`` for one
        seed (shared layout ``[E, D, 1, n_e_max]``), then for ``m`` seeds in the shared layout
        ``[E, D, m, n_e_max]`` and in the member-major layout ``[E, m, D, n_e_max]``; each lists
        (seed, feature, centre, pair or triplet)."""
        if m not in self._seed_rows:
            p = self._seed_parts
            e_i, k_i, d, nk = p["e_i"], p["k_i"], p["d"], self.n_e_max
            out = []
            for lead, member_major in ((1, False), (m, False), (m, True)):
                for feat in (p["rad_feat"], p["ang_feat"]):
                    ei = e_i.view((1,) * (feat.dim() - 2) + (self.n, 1))
                    ki = k_i.view((1,) * (feat.dim() - 2) + (self.n, 1))
                    rows = []
                    for l in range(lead):
                        if member_major:
                            r = ((ei * lead + l) * d + feat) * nk + ki
                        else:
                            r = ((ei * d + feat) * lead + l) * nk + ki
                        rows.append(r.reshape(-1))
                    out.append(torch.cat(rows))
            self._seed_rows[m] = out
        return self._seed_rows[m]

    def mats(self, dtype, device):
        key = (dtype, device)
        if key not in self._mats:
            mats = [v.to(dtype=dtype, device=device) for v in self._f64]
            self._mats[key] = mats + [math.pi / mats[1]]  # pi / rc as the autograd path computes it
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


def _seed_backward(rows: torch.Tensor, rad_rows: torch.Tensor, ang_rows: torch.Tensor, ta: torch.Tensor,
                   tb: torch.Tensor, fmat: torch.Tensor, dbasis_all: torch.Tensor, angular: torch.Tensor,
                   dcos_weight: torch.Tensor, a1: torch.Tensor, a2: torch.Tensor, u: torch.Tensor, u1: torch.Tensor,
                   u2: torch.Tensor, inv_r: torch.Tensor, dims: List[int]) -> torch.Tensor:
    """``dE/dvec`` summed to atoms, ``[3, n, B]`` (the forces), for one gradient seed: the rows
    ``rad_rows`` / ``ang_rows`` of the MLP's input gradient ``rows [-1, B]`` (see
    :meth:`_TemplatePlan.seed_rows`); arrays ``[feature, n, n-1 or nt, B]`` of the forward pass."""
    n, B, nr = dims[0], dims[1], dims[3]
    nt = ta.shape[0]
    s_ang, zl = dcos_weight.shape[0], dcos_weight.shape[1]
    d_basis = rows.index_select(0, rad_rows).view(nr, n, n - 1, B)
    d_r = (d_basis * dbasis_all[:nr]).sum(0)  # [n, n-1, B]
    d_y = rows.index_select(0, ang_rows).view(s_ang, zl, n, nt, B)
    d_radial = (d_y * angular).sum(1)  # [S, n, nt, B]
    # dE/dcos = sum_(s, zl) d_y radial_s dangular_zl, with the seed-free product
    d_cos = (d_y * dcos_weight).sum([0, 1]).unsqueeze(0)  # [1, n, nt, B]
    # triplet -> pair sums: radial shells (times the other pair's shell) and the cos gradient
    acc = d_cos.new_zeros(s_ang + 3, n, n - 1, B)
    acc[:s_ang].index_add_(2, ta, d_radial * a2).index_add_(2, tb, d_radial * a1)
    acc[s_ang:].index_add_(2, ta, d_cos * u2).index_add_(2, tb, d_cos * u1)
    d_r = d_r + (acc[:s_ang] * dbasis_all[nr:]).sum(0)
    d_u = acc[s_ang:]  # [3, n, n-1, B]
    d_vec = (d_r - (d_u * u).sum(0, keepdim=True) * inv_r) * u + d_u * inv_r
    # F = -dE/dpos: pair vector r_j - r_i, so F_i += dE/dvec, F_j -= dE/dvec
    return torch.matmul(fmat, d_vec.view(3, n * (n - 1), B))  # [3, n, B]


def _template_core(positions: torch.Tensor, members: bool, J: torch.Tensor, ta: torch.Tensor, tb: torch.Tensor,
                   rad_src: torch.Tensor, ang_src: torch.Tensor, g_rows: torch.Tensor, seed_rows: List[torch.Tensor],
                   mask: torch.Tensor, eref_total: torch.Tensor, basis_cutoff: torch.Tensor, c: List[torch.Tensor],
                   zetas: List[int], kinds: List[int], fw: List[torch.Tensor], fb: List[torch.Tensor],
                   bw: List[torch.Tensor], pm: List[torch.Tensor], seeds: List[torch.Tensor],
                   dims: List[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-member energies ``[M, B]`` and forces ``[L, B*n, 3]`` of ``positions [B*n, 3]`` (see
    :class:`_TemplatePlan`), with ``L = M`` per-member force sets (``members``) or 1 (the forces of
    the committee mean). ``c``: constant matrices, ``g_rows`` / ``seed_rows``: row
    gathers into and out of the MLP (:meth:`_TemplatePlan.seed_rows`), ``dims``:
    (n, B, E, R, C, n_angular, n_e_max, M, buffer rows).

    Layout: feature dimensions outermost, then centre, neighbour or triplet, replica:
    elementwise work broadcasts over outer dimensions and runs over long contiguous
    (neighbour, replica) blocks. The MLP handles all L seeds at once; the descriptor
    backward (:func:`_seed_backward`) one seed at a time.
    """
    n, B, ne, nr, nc, na, n_e_max, m, n_buf = dims
    x = positions.view(B, n, 3).permute(2, 1, 0).contiguous()  # [3, n, B]
    fmat, rc, shift, neg_eta, two_eta, lam, pi_rc = c
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
    buf = gauss.new_zeros(n_buf, B)  # descriptor rows: radial [R, n*E], then angular [S, ZL, n*C]
    # sum over the neighbours of each element: rows (centre, element)
    buf[:nr * n * ne].view(nr, n * ne, B).index_add_(1, rad_src, basis_all[:nr].view(nr, n * (n - 1), B))
    # ---- triplets [feature, n, nt, B]
    a1, a2 = shell.index_select(2, ta), shell.index_select(2, tb)
    u1, u2 = u.index_select(2, ta), u.index_select(2, tb)
    radial = a1 * a2  # [S, n, nt, B]
    cos = (u1 * u2).sum(0, keepdim=True)  # [1, n, nt, B]
    angular, dangular = _angular_terms(cos, lam, zetas)  # [ZL, n, nt, B]
    zl = angular.shape[0]
    g5 = radial.unsqueeze(1) * angular.unsqueeze(0)  # [S, ZL, n, nt, B]
    dcos_weight = radial.unsqueeze(1) * dangular.unsqueeze(0)  # d g5 / d cos, [S, ZL, n, nt, B]
    # sum over the triplets of each channel: rows (centre, channel)
    buf[nr * n * ne:].view(s_ang, zl, n * nc, B).index_add_(2, ang_src, g5.view(s_ang, zl, n * nt, B))
    # ---- MLP columns: (atom of each element, replica), padded per element; one gather
    g = buf.index_select(0, g_rows).view(ne, -1, n_e_max * B)  # [E, D, n_max]
    atom_e, gx = _mlp_core(g, kinds, fw, fb, bw, pm, seeds, m, members)
    # energies: sum over the real atoms of each replica, plus the reference energies
    energies = (atom_e.view(ne, m, n_e_max, B) * mask).sum([0, 2]) + eref_total
    lead = m if members else 1
    pick = 0  # which gather of seed_rows: one seed, M seeds (shared layout), M seeds (member-major)
    if members:
        pick = 4 if kinds[0] == _FAN_OUT else 2
    rows = gx.reshape(-1, B)
    # ---- backward to pairs, one seed at a time: the arrays of one seed stay in cache (all seeds at
    # once, a few MB of temporaries per call, were slower on a loaded machine)
    rad_rows, ang_rows = seed_rows[pick].view(lead, -1), seed_rows[pick + 1].view(lead, -1)
    if lead == 1:
        forces = _seed_backward(rows, rad_rows[0], ang_rows[0], ta, tb, fmat, dbasis_all, angular, dcos_weight,
                                a1, a2, u, u1, u2, inv_r, dims).unsqueeze(0)
    else:
        forces = torch.stack([_seed_backward(rows, rad_rows[l], ang_rows[l], ta, tb, fmat, dbasis_all, angular,
                                             dcos_weight, a1, a2, u, u1, u2, inv_r, dims) for l in range(lead)])
    return energies, forces.permute(0, 3, 2, 1).reshape(lead, B * n, 3)


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
        kinds, fw, fb, bw, pm, seeds, m, eref = folded
        acsf = model.acsf
        dtype, device = fw[0].dtype, fw[0].device
        dims = [plan.n, plan.B, acsf.n_elements, acsf.n_radial, acsf.n_pair_channels, acsf.n_angular, plan.n_e_max,
                m, plan.n_buffer_rows]
        eref_total = eref.index_select(0, plan.species).sum().to(dtype)
        args = (plan.J_flat, plan.ta, plan.tb, plan.rad_src, plan.ang_src, plan.g_rows, plan.seed_rows(m),
                plan.mask.to(dtype), eref_total, acsf.basis_cutoff, plan.mats(dtype, device), acsf._zetas, kinds,
                fw, fb, bw, pm, seeds, dims)
        bundle = plan.__dict__["_bundle"] = (folded, args)
    energies, forces = _run_core(model, state.positions.to(folded[1][0].dtype), members, bundle[1], script)
    return energies.to(state.dtype), forces.to(state.dtype)


def _plan_or_raise(model, state: State) -> _TemplatePlan:
    plan = _template_plan(model.acsf, state)
    if plan is None:
        raise InputError("the fast path needs equal non-periodic molecules (same atomic numbers, 3 to "
                         f"{ALL_PAIRS_MAX_ATOMS} atoms each); use model.energy_and_forces, which falls back to autograd")
    return plan


@torch.no_grad()
def fast_energy_and_forces(model, state: State, members: bool = False):
    """``(energies, forces)`` in the State's dtype without autograd (``state`` must satisfy
    :func:`fast_supported`).

    ``members=False``: committee-mean energy ``[1, S]`` and forces ``[1, n_atoms, 3]``;
    ``members=True``: per-member ``[M, S]`` and ``[M, n_atoms, 3]``.
    """
    energies, forces = _template_energy_and_forces(model, state, _plan_or_raise(model, state), members)
    return (energies, forces) if members else (energies.mean(0, keepdim=True), forces)


@torch.no_grad()
def fast_committee(model, state: State, member_forces: bool = True):
    """Committee outputs in one autograd-free pass: ``(member energies [M, S] eV, mean forces
    [n_atoms, 3] eV/A, member forces [M, n_atoms, 3] or None)``.

    ``member_forces=False`` pushes one gradient seed (the mean's) through the network and the
    descriptors instead of ``M``: the energy spread for about the price of one network when the
    members share their hidden layers (``shared_layers = len(hidden)``).

    >>> import torch
    >>> from ase.build import molecule
    >>> from fesurf.state import State
    >>> from fesurf.surrogates import BehlerParrinello
    >>> m = BehlerParrinello([1, 8], hidden=(8,), n_members=3, shared_layers=1)
    >>> e, f, fm = fast_committee(m, State.from_atoms(molecule("H2O")), member_forces=False)
    >>> tuple(e.shape), tuple(f.shape), fm is None
    ((3, 1), (3, 3), True)
    """
    energies, forces = _template_energy_and_forces(model, state, _plan_or_raise(model, state), member_forces)
    if member_forces:
        return energies, forces.mean(0), forces
    return energies, forces[0], None
