"""Multi-level potentials over atom subsets: additive and subtractive (ONIOM) embedding, link atoms.

A :class:`MultiLevelPotential` is a signed sum of terms, each a Potential evaluated on one region of
every system (or on the whole system):

``E = sum_t sign_t * U_t(region_t(x))``

Two layouts cover the field's practice:

* **additive** (:meth:`MultiLevelPotential.additive`): ``E = E_core(core) + E_env(environment) +
  E_int(all)``. The interaction term sees every atom and must hold *only* the terms between the
  regions (e.g. LJ + Coulomb between solute and solvent: :class:`PointChargeCoupling`, or an OpenMM
  System whose core-core pairs are excluded, which holds environment and interaction in one call as
  openmm-ml's mechanical embedding does). Nothing is counted twice as long as each term keeps to its
  part; with the interaction switched off the total is the sum of the regions' energies.
* **subtractive** (:meth:`MultiLevelPotential.subtractive`, ONIOM2, ASE's ``SimpleQMMM``):
  ``E = E_low(all) + E_high(core) - E_low(core)``. With ``high`` equal to ``low`` the total is
  ``E_low(all)`` exactly.

**Link atoms** cap a core cut through covalent bonds (``LinkAtom``): a hydrogen placed on the cut bond
at ``r_L = r_in + g (r_out - r_in)``, with the usual scale factor ``g`` (ONIOM: the ratio of the
capping bond length to the cut bond length; default ``(R_in + R_H) / (R_in + R_out)`` from ASE's
covalent radii, 0.704 for C-C). The link atom exists only in the region's sub-system; its force goes
back to the real atoms by the chain rule, ``F_in += (1 - g) F_L`` and ``F_out += g F_L``.

Every replica of the State is one system with the same atom layout (``n_atoms`` atoms each); region
indices are per system. One call of each term evaluates all replicas.

Units: eV, Angstrom, e.

Example
-------
>>> from ase.build import molecule
>>> from fesurf.potentials import LennardJones, Morse
>>> from fesurf.state import State
>>> s = State.from_atoms(molecule("CH3CH2OH")).replicate(2)
>>> core = Region(atoms=(1, 2, 3, 4, 5), links=(LinkAtom(inner=1, outer=0),))   # CH2OH, C-C bond capped
>>> oniom = MultiLevelPotential.subtractive(core, high=Morse(), low=LennardJones(), n_atoms=9)
>>> e, f = oniom.energy_and_forces(s)
>>> tuple(e.shape), tuple(f.shape)
((2,), (18, 3))
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from ase.units import Bohr as _BOHR, Hartree as _HARTREE

from ..errors import InputError
from ..state import State
from .base import Potential

#: Coulomb constant k_e in eV A / e^2 (ase.units: Hartree * Bohr)
COULOMB = _HARTREE * _BOHR


@dataclass(frozen=True)
class LinkAtom:
    """A capping atom on the cut bond ``inner`` (in the region) -- ``outer`` (outside it).

    Parameters
    ----------
    inner, outer : atom indices within one system.
    g : scale factor; the link atom sits at ``r_in + g (r_out - r_in)``. None: the ratio of covalent
        radii sums ``(R_in + R_link) / (R_in + R_out)`` (ASE's table), the usual ONIOM choice.
    element : atomic number of the link atom (1: hydrogen).

    >>> round(LinkAtom(inner=1, outer=0).scale([6, 6]), 3)
    0.704
    """

    inner: int
    outer: int
    g: Optional[float] = None
    element: int = 1

    def scale(self, numbers) -> float:
        """The scale factor ``g`` for a system with these atomic numbers."""
        if self.g is not None:
            return float(self.g)
        from ase.data import covalent_radii

        zi, zo = int(numbers[self.inner]), int(numbers[self.outer])
        return float((covalent_radii[zi] + covalent_radii[self.element]) / (covalent_radii[zi] + covalent_radii[zo]))


@dataclass(frozen=True)
class Region:
    """A subset of every system's atoms, with the charge and multiplicity of that subsystem.

    Parameters
    ----------
    atoms : indices within one system (order kept: the sub-system lists them in this order, then links).
    charge : total charge of the sub-system (e).
    multiplicity : 2S+1 of the sub-system.
    links : :class:`LinkAtom` caps appended after the real atoms.
    periodic : keep the State's cell and pbc for this region (False: evaluate it as a molecule;
        the region's atoms must then be whole, i.e. unwrapped, as fesurf's integrators keep them).
    """

    atoms: tuple
    charge: float = 0.0
    multiplicity: int = 1
    links: tuple = ()
    periodic: bool = False

    def __post_init__(self):
        atoms = tuple(int(a) for a in self.atoms)
        object.__setattr__(self, "atoms", atoms)
        object.__setattr__(self, "links", tuple(self.links))
        if not atoms:
            raise InputError("a Region needs at least one atom")
        if len(set(atoms)) != len(atoms) or min(atoms) < 0:
            raise InputError(f"Region atoms must be distinct non-negative indices, got {list(atoms)}")
        for link in self.links:
            if not isinstance(link, LinkAtom):
                raise InputError("Region links must be LinkAtom objects")
            if link.inner not in atoms or link.outer in atoms:
                raise InputError(f"a link atom caps a bond from a region atom to an atom outside it; got inner "
                                 f"{link.inner}, outer {link.outer} for region atoms {list(atoms)}")
            if link.g is not None and not 0.0 < float(link.g) < 1.5:
                raise InputError(f"link-atom scale factor g must lie in (0, 1.5), got {link.g}")
        if not math.isfinite(float(self.charge)):
            raise InputError(f"Region charge must be finite, got {self.charge}")
        if int(self.multiplicity) < 1:
            raise InputError(f"Region multiplicity is 2S+1 >= 1, got {self.multiplicity}")

    def complement(self, n_atoms: int, charge: float = 0.0) -> "Region":
        """The other atoms of an ``n_atoms`` system, as a region of the given charge."""
        rest = tuple(i for i in range(int(n_atoms)) if i not in set(self.atoms))
        if not rest:
            raise InputError("the region holds every atom: there is no environment")
        return Region(atoms=rest, charge=charge, periodic=True)


@dataclass
class Term:
    """One signed term: ``sign * potential(region)`` (``region=None``: the whole system)."""

    potential: Potential
    region: Optional[Region] = None
    sign: float = 1.0
    name: str = ""


class _RegionMap:
    """Index arithmetic of one region for a batch of ``n_systems`` systems of ``n_atoms`` atoms."""

    def __init__(self, region: Region, n_atoms: int, n_systems: int, numbers: torch.Tensor):
        self.region = region
        s = n_systems
        atoms = torch.as_tensor(region.atoms, dtype=torch.long)
        base = (torch.arange(s) * n_atoms)[:, None]
        self.real = (base + atoms[None]).reshape(-1)  # [S*k] global indices
        self.k, self.n_links, self.n_systems = len(region.atoms), len(region.links), s
        if region.links:
            first = numbers[:n_atoms]
            self.inner = (base + torch.as_tensor([ln.inner for ln in region.links])[None]).reshape(-1)
            self.outer = (base + torch.as_tensor([ln.outer for ln in region.links])[None]).reshape(-1)
            g = torch.as_tensor([ln.scale(first.tolist()) for ln in region.links], dtype=torch.float64)
            self.g = g.repeat(s)
            self.link_z = torch.as_tensor([ln.element for ln in region.links], dtype=torch.long)
        per = self.k + self.n_links
        self.system_index = torch.arange(s).repeat_interleave(per)

    def sub_state(self, state: State) -> State:
        s, k, nl = self.n_systems, self.k, self.n_links
        pos = state.positions[self.real].reshape(s, k, 3)
        z = state.atomic_numbers[self.real].reshape(s, k)
        m = state.masses[self.real].reshape(s, k)
        if nl:
            from ase.data import atomic_masses

            g = self.g.to(state.dtype)[:, None]
            ri, ro = state.positions[self.inner], state.positions[self.outer]
            link = (ri + g * (ro - ri)).reshape(s, nl, 3)
            pos = torch.cat([pos, link], 1)
            z = torch.cat([z, self.link_z.expand(s, nl)], 1)
            lm = torch.as_tensor(atomic_masses[self.link_z.numpy()], dtype=state.dtype)
            m = torch.cat([m, lm.expand(s, nl)], 1)
        periodic = self.region.periodic and state.cell is not None
        return State(positions=pos.reshape(-1, 3), atomic_numbers=z.reshape(-1), masses=m.reshape(-1),
                     system_index=self.system_index, cell=state.cell if periodic else None,
                     pbc=state.pbc if periodic else torch.zeros(s, 3, dtype=torch.bool),
                     charge=torch.full((s,), float(self.region.charge), dtype=state.dtype),
                     multiplicity=torch.full((s,), int(self.region.multiplicity), dtype=torch.long), validate=False)

    def scatter_forces(self, forces_sub: torch.Tensor, n_total: int) -> torch.Tensor:
        """Forces on the sub-system's atoms (links included) as forces on the real atoms [n_total, 3]."""
        s, k, nl = self.n_systems, self.k, self.n_links
        f = forces_sub.reshape(s, k + nl, 3)
        out = torch.zeros(n_total, 3, dtype=forces_sub.dtype).index_add(0, self.real, f[:, :k].reshape(-1, 3))
        if nl:
            fl = f[:, k:].reshape(-1, 3)
            g = self.g.to(forces_sub.dtype)[:, None]
            out = out.index_add(0, self.inner, (1.0 - g) * fl).index_add(0, self.outer, g * fl)
        return out


class MultiLevelPotential(Potential):
    """A signed sum of potentials on regions of every system (see the module docstring).

    Parameters
    ----------
    terms : list of :class:`Term`.
    n_atoms : atoms per system (every replica has the same layout).

    Use :meth:`additive` or :meth:`subtractive` for the two usual layouts; :meth:`energies_by_term`
    gives each term's energy (eV) for diagnostics.
    """

    def __init__(self, terms: Sequence[Term], n_atoms: int):
        super().__init__()
        terms = list(terms)
        if not terms or not all(isinstance(t, Term) and isinstance(t.potential, Potential) for t in terms):
            raise InputError("MultiLevelPotential needs a non-empty list of Term(potential=<fesurf Potential>, ...)")
        self.n_atoms = int(n_atoms)
        if self.n_atoms < 1:
            raise InputError(f"n_atoms must be >= 1, got {n_atoms}")
        for t in terms:
            if t.region is not None:
                top = max(list(t.region.atoms) + [ln.outer for ln in t.region.links])
                if top >= self.n_atoms:
                    raise InputError(f"term {t.name or type(t.potential).__name__}: region index {top} is out of "
                                     f"range for systems of {self.n_atoms} atoms")
            if not math.isfinite(float(t.sign)):
                raise InputError("term signs must be finite numbers")
        self.terms = terms
        self.potentials = torch.nn.ModuleList([t.potential for t in terms])
        self.translation_invariant = all(t.potential.translation_invariant for t in terms)
        self.rotation_invariant = all(t.potential.rotation_invariant for t in terms)
        self.differentiable = all(getattr(t.potential, "differentiable", True) for t in terms)
        self._maps = {}

    # ------------------------------------------------------------------ layouts
    @classmethod
    def additive(cls, core: Region, core_potential: Potential, *, n_atoms: int,
                 environment_potential: Optional[Potential] = None, interaction_potential: Optional[Potential] = None,
                 environment: Optional[Region] = None) -> "MultiLevelPotential":
        """``E = E_core(core) + E_env(environment) + E_int(all atoms)``.

        ``environment`` defaults to every atom outside ``core`` (charge 0, periodic). The interaction
        potential sees the whole system and must hold only terms between the regions; leave a term out
        (None) to switch it off.
        """
        terms = [Term(core_potential, core, 1.0, "core")]
        if environment_potential is not None:
            env = environment if environment is not None else core.complement(n_atoms)
            terms.append(Term(environment_potential, env, 1.0, "environment"))
        if interaction_potential is not None:
            terms.append(Term(interaction_potential, None, 1.0, "interaction"))
        return cls(terms, n_atoms)

    @classmethod
    def subtractive(cls, core: Region, high: Potential, low: Potential, *, n_atoms: int) -> "MultiLevelPotential":
        """ONIOM2: ``E = E_low(all) + E_high(core) - E_low(core)`` (core with its link atoms)."""
        return cls([Term(low, None, 1.0, "low(all)"), Term(high, core, 1.0, "high(core)"),
                    Term(low, core, -1.0, "low(core)")], n_atoms)

    # ------------------------------------------------------------------ plumbing
    def select_systems(self, systems):
        new = MultiLevelPotential([Term(t.potential.select_systems(systems), t.region, t.sign, t.name)
                                   for t in self.terms], self.n_atoms)
        return new

    def _check(self, state: State):
        counts = state.atoms_per_system
        if bool((counts != self.n_atoms).any()):
            raise InputError(f"every system must have {self.n_atoms} atoms (the multi-level layout); got "
                             f"{sorted(set(counts.tolist()))}")

    def _map(self, region: Region, state: State) -> _RegionMap:
        key = (id(region), state.n_systems)
        m = self._maps.get(key)
        if m is None:
            m = self._maps[key] = _RegionMap(region, self.n_atoms, state.n_systems, state.atomic_numbers)
        return m

    def _sub(self, term: Term, state: State):
        if term.region is None:
            return state, None
        m = self._map(term.region, state)
        return m.sub_state(state), m

    # ------------------------------------------------------------------ energies
    def energy(self, state: State) -> torch.Tensor:
        self._check(state)
        total = 0.0
        for t in self.terms:
            sub, _ = self._sub(t, state)
            total = total + float(t.sign) * t.potential.energy(sub)
        return total

    def energies_by_term(self, state: State) -> dict:
        """Each term's energy ``[n_systems]`` (eV, without its sign), keyed by the term's name."""
        self._check(state)
        out = {}
        with torch.no_grad():
            for i, t in enumerate(self.terms):
                sub, _ = self._sub(t, state)
                out[t.name or f"term{i}"] = t.potential.energy_and_forces(sub)[0].detach()
        return out

    def energy_and_forces(self, state: State, create_graph: bool = False):
        self._check(state)
        energy = torch.zeros(state.n_systems, dtype=state.dtype)
        forces = torch.zeros(state.n_atoms, 3, dtype=state.dtype)
        for t in self.terms:
            sub, m = self._sub(t, state)
            if m is not None:  # forces of the sub-system, then back to the real atoms (links by the chain rule)
                sub = sub.replace(positions=sub.positions.detach())
            e, f = t.potential.energy_and_forces(sub, create_graph)
            if m is not None:
                f = m.scatter_forces(f, state.n_atoms)
            energy = energy + float(t.sign) * e
            forces = forces + float(t.sign) * f
        if not create_graph:
            energy, forces = energy.detach(), forces.detach()
        return energy, forces


# ---------------------------------------------------------------------- interaction terms
def minimum_image(vectors: torch.Tensor, cell: Optional[torch.Tensor]) -> torch.Tensor:
    """Minimum-image pair vectors ``[S, ..., 3]`` for per-system cells ``[S, 3, 3]`` (rows = lattice vectors).

    Exact for orthorhombic cells and for pairs closer than half the shortest perpendicular cell width.
    """
    if cell is None:
        return vectors
    shape = vectors.shape
    v = vectors.reshape(shape[0], -1, 3)
    frac = torch.linalg.solve(cell.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    frac = frac - torch.round(frac)
    return torch.bmm(frac, cell).reshape(shape)


def dsf_kernel(r: torch.Tensor, alpha: float, cutoff: float) -> torch.Tensor:
    """Damped shifted-force Coulomb kernel (Fennell and Gezelter, J. Chem. Phys. 124, 234104 (2006)), 1/A.

    ``v(r) = erfc(a r)/r - erfc(a R)/R + (erfc(a R)/R^2 + 2a/sqrt(pi) exp(-a^2 R^2)/R)(r - R)`` for
    ``r < R``, else 0: energy and force go to zero at the cutoff ``R``, and for water it reproduces
    Ewald energies and forces closely at ``a = 0.2 / A``, ``R = 12 A``.
    """
    a, rc = float(alpha), float(cutoff)
    erfc_rc = math.erfc(a * rc)
    shift = erfc_rc / rc
    slope = erfc_rc / rc ** 2 + 2.0 * a / math.sqrt(math.pi) * math.exp(-(a * rc) ** 2) / rc
    inside = r < rc
    rs = torch.where(inside, r, torch.full_like(r, rc))
    v = torch.erfc(a * rs) / rs - shift + slope * (rs - rc)
    return torch.where(inside, v, torch.zeros_like(v))


class PointChargeCoupling(Potential):
    """Coulomb energy between the charges of two regions only (an additive-scheme interaction term).

    ``E = k_e sum_{i in A} sum_{j in B} q_i q_j v(|r_ij|)`` with the minimum image in periodic cells and the
    damped shifted-force kernel :func:`dsf_kernel` (smooth at the cutoff), or bare ``1/r`` without a cutoff
    (``cutoff=None``, molecules only). Charges of region A are fixed (``charges_a``, e) or come from
    ``charge_model(sub_state_of_A) -> [S * n_A]`` (e, differentiable in the positions: e.g. the charges of a
    :class:`~fesurf.surrogates.long_range.LongRangeModel`), so the forces include the ``dq/dx`` term.

    Parameters
    ----------
    region_a, region_b : :class:`Region` (A: the core; B: e.g. the water atoms).
    charges_b : [n_B] charges of region B (e).
    charges_a : [n_A] fixed charges of region A, or None with ``charge_model``.
    charge_model : callable(State) -> [S * n_A] charges (e).
    cutoff : A (DSF kernel) or None (bare Coulomb, no periodic images).
    alpha : DSF damping, 1/A.

    >>> import torch
    >>> from fesurf.state import State
    >>> s = State(positions=[[0.0, 0, 0], [3.0, 0, 0]], atomic_numbers=[11, 17])
    >>> c = PointChargeCoupling(Region((0,)), Region((1,)), charges_b=[-1.0], charges_a=[1.0], cutoff=None)
    >>> round(float(c.energy(s)[0]), 4)   # -k_e / 3 A
    -4.7999
    """

    def __init__(self, region_a: Region, region_b: Region, charges_b, *, charges_a=None,
                 charge_model: Optional[Callable] = None, cutoff: Optional[float] = 12.0, alpha: float = 0.2):
        super().__init__()
        if (charges_a is None) == (charge_model is None):
            raise InputError("give exactly one of charges_a (fixed charges of region A) and charge_model")
        self.region_a, self.region_b = region_a, region_b
        qb = torch.as_tensor(charges_b, dtype=torch.float64).reshape(-1)
        if qb.numel() != len(region_b.atoms) or not torch.isfinite(qb).all():
            raise InputError(f"charges_b needs {len(region_b.atoms)} finite charges (one per atom of region B)")
        self.register_buffer("charges_b", qb)
        if charges_a is not None:
            qa = torch.as_tensor(charges_a, dtype=torch.float64).reshape(-1)
            if qa.numel() != len(region_a.atoms) or not torch.isfinite(qa).all():
                raise InputError(f"charges_a needs {len(region_a.atoms)} finite charges (one per atom of region A)")
            self.register_buffer("charges_a", qa)
        else:
            self.charges_a = None
        self.charge_model = charge_model
        if cutoff is not None and not float(cutoff) > 0:
            raise InputError(f"cutoff must be positive (Angstrom) or None, got {cutoff}")
        if not float(alpha) >= 0:
            raise InputError(f"alpha must be >= 0 (1/Angstrom), got {alpha}")
        self.cutoff = None if cutoff is None else float(cutoff)
        self.alpha = float(alpha)
        self.translation_invariant = True
        self.rotation_invariant = True
        self.differentiable = True

    def _charges_a(self, state: State, idx_a: torch.Tensor, s: int) -> torch.Tensor:
        if self.charges_a is not None:
            return self.charges_a.to(state.dtype).expand(s, -1)
        sub = _RegionMap(self.region_a, state.n_atoms // s, s, state.atomic_numbers).sub_state(state)
        q = self.charge_model(sub)
        return q.reshape(s, -1)[:, :len(self.region_a.atoms)].to(state.dtype)

    def pair_potential(self, state: State) -> tuple:
        """(charges of A [S, n_A] (e), electrostatic potential of B at A's atoms [S, n_A] (V = eV/e))."""
        s = state.n_systems
        n = state.n_atoms // s
        pos = state.positions.reshape(s, n, 3)
        ia = torch.as_tensor(self.region_a.atoms)
        ib = torch.as_tensor(self.region_b.atoms)
        d = pos[:, ib][:, None, :, :] - pos[:, ia][:, :, None, :]  # [S, nA, nB, 3]
        periodic = self.cutoff is not None and state.cell is not None and bool(state.pbc.any())
        if periodic:
            self._check_cutoff(state)
            d = minimum_image(d, state.cell)
        r = torch.sqrt((d * d).sum(-1))
        v = dsf_kernel(r, self.alpha, self.cutoff) if self.cutoff is not None else 1.0 / r
        phi = COULOMB * (v * self.charges_b.to(state.dtype)).sum(-1)
        return self._charges_a(state, ia, s), phi

    def _check_cutoff(self, state):
        cell = state.cell
        vol = torch.linalg.det(cell).abs()
        widths = torch.stack([vol / torch.linalg.cross(cell[:, 1], cell[:, 2]).norm(dim=-1),
                              vol / torch.linalg.cross(cell[:, 2], cell[:, 0]).norm(dim=-1),
                              vol / torch.linalg.cross(cell[:, 0], cell[:, 1]).norm(dim=-1)], 1)
        if float(widths.min()) < 2.0 * self.cutoff:
            raise InputError(f"the coupling cutoff {self.cutoff} A exceeds half the cell width "
                             f"({float(widths.min()) / 2:.2f} A); use a smaller cutoff or a larger box")

    def energy(self, state: State) -> torch.Tensor:
        if state.n_atoms % state.n_systems:
            raise InputError("PointChargeCoupling needs systems of equal size")
        q, phi = self.pair_potential(state)
        return (q * phi).sum(-1)


def learned_charges(model) -> Callable:
    """The committee-mean atomic charges of a :class:`~fesurf.surrogates.long_range.LongRangeModel` as a
    differentiable ``charge_model`` for :class:`PointChargeCoupling` (e; the forces then hold ``dq/dx``).

    ``model.charges`` runs without gradients (for analysis); this keeps them, so the mechanically embedded
    solute-solvent Coulomb can use the charges the long-range model predicts for each configuration.

    >>> from fesurf.data import long_range
    >>> q = learned_charges(long_range.load("hybrid"))                            # doctest: +SKIP
    """
    if not (hasattr(model, "_features") and hasattr(model, "_charges_from") and hasattr(model, "model_dtype")):
        raise InputError(f"learned_charges needs a LongRangeModel (with learned charges), got {type(model).__name__}")

    def charges(state: State) -> torch.Tensor:
        pos = state.positions.to(model.model_dtype).unsqueeze(0)
        x, species, order, counts = model._features(pos, state)
        return model._charges_from(x, species, order, counts, pos, state)[0].mean(0).to(state.dtype)

    return charges


__all__ = ["LinkAtom", "Region", "Term", "MultiLevelPotential", "PointChargeCoupling", "dsf_kernel",
           "minimum_image", "learned_charges", "COULOMB"]
