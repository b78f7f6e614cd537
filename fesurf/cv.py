"""Differentiable collective variables (CVs) on the batched State.

Every CV is a ``torch.nn.Module`` that maps a :class:`~fesurf.state.State` to a
``[n_systems]`` tensor (one value per replica), differentiable by autograd. The
names follow PLUMED: :class:`DISTANCE`, :class:`ANGLE`, :class:`TORSION`,
:class:`COORDINATION`, :class:`POSITION` (a Cartesian component, for model
potentials) and :class:`COMBINE` (a linear combination with optional powers).
Differences and sums of distances are COMBINEs of DISTANCEs
(:func:`distance_difference`, :func:`distance_sum`).

Atom indices are 0-based and per system: index ``i`` means atom ``i`` of every
replica. Units: distances and positions in Angstrom, angles in radians.
Distances use the minimum image where the State has a cell and pbc.

Each CV declares ``periodic`` and ``period`` (``(lower, upper)`` or None) and
writes itself as a JSON-able dict with :meth:`CV.to_spec`;
:func:`cv_from_spec` builds it back (also used by PLUMED input writers).

Example
-------
>>> import torch
>>> from fesurf.state import State
>>> from fesurf.cv import DISTANCE, cv_from_spec
>>> s = State(positions=[[0.0, 0, 0], [1.5, 0, 0]], atomic_numbers=[8, 1]).replicate(2)
>>> d = DISTANCE([0, 1])
>>> d(s).tolist()
[1.5, 1.5]
>>> cv_from_spec(d.to_spec()).to_spec() == {"type": "DISTANCE", "atoms": [0, 1]}
True
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .errors import InputError
from .state import State, system_layout

__all__ = [
    "CV", "DISTANCE", "ANGLE", "TORSION", "COORDINATION", "POSITION", "COMBINE",
    "distance_difference", "distance_sum", "cv_from_spec", "as_cv_list", "evaluate_cvs",
    "periodic_difference", "cv_axis_labels",
]


def periodic_difference(a: torch.Tensor, b: torch.Tensor, period) -> torch.Tensor:
    """``a - b`` wrapped to the minimum image for a periodic CV (period = (lower, upper)).

    >>> import math, torch
    >>> round(float(periodic_difference(torch.tensor(3.0), torch.tensor(-3.0), (-math.pi, math.pi))), 4)
    -0.2832
    """
    d = a - b
    if period is None:
        return d
    width = float(period[1]) - float(period[0])
    return d - width * torch.round(d / width)


def _check_indices(name, indices):
    try:
        idx = [int(i) for i in indices]
        if any(float(i) != float(j) for i, j in zip(idx, indices)):
            raise ValueError
    except (TypeError, ValueError):
        raise InputError(f"{name}: atom indices must be integers, got {indices!r}") from None
    for i in idx:
        if i < 0:
            raise InputError(f"{name}: atom index {i} is negative; indices are 0-based per system")
    return idx


class CV(torch.nn.Module):
    """Base class of collective variables.

    Subclasses implement :meth:`compute` (``[n_systems]`` from a State) and
    :meth:`to_spec`. Class attributes: ``periodic``, ``period`` (``(lower,
    upper)`` or None), ``translation_invariant``, ``rotation_invariant`` (used
    by biases for the Potential contract), ``length_power`` (the CV's unit is
    Angstrom**length_power; None when mixed, used to convert HILLS files).
    """

    periodic: bool = False
    period = None
    translation_invariant: bool = True
    rotation_invariant: bool = True
    length_power = 0

    def atom_indices(self) -> list[int]:
        """All per-system atom indices this CV reads."""
        return []

    def compute(self, state: State) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, state: State) -> torch.Tensor:
        """CV values ``[n_systems]``; raises InputError when an atom index is out of range."""
        self.validate(state)
        return self.compute(state)

    def value_and_jacobian(self, state: State):
        """``(s [n_systems], atoms [n_systems, m], ds/dx [n_systems, m, 3])``, or None.

        A CV with a closed-form gradient returns its values, the flat indices of the ``m`` atoms of each
        system it depends on, and the gradient (CV unit per Angstrom) with respect to each of them; a
        bias then gets its forces without autograd. An atom may appear more than once (the gradients
        add). The base class returns None: the bias falls back to autograd through :meth:`compute`.

        >>> from fesurf.state import State
        >>> s, atoms, jac = DISTANCE([0, 1]).value_and_jacobian(
        ...     State(positions=[[0.0, 0, 0], [0, 3.0, 4.0]], atomic_numbers=[1, 1]))
        >>> s.tolist(), atoms.tolist(), jac[0, 1].tolist()
        ([5.0], [[0, 1]], [0.0, 0.6, 0.8])
        """
        return None

    def validate(self, state: State) -> None:
        """Raise :class:`InputError` when the CV reads an atom that a system of ``state`` lacks."""
        idx = self.atom_indices()
        if not idx:
            return
        key = (state.system_index.data_ptr(), state.n_atoms)
        if getattr(self, "_validated_key", None) == key:
            return
        n_min = int(state.atoms_per_system.min())
        bad = [i for i in idx if i >= n_min]
        if bad:
            raise InputError(f"{self.label()}: atom index {bad[0]} is out of range: the State's systems have "
                             f"{n_min} atoms (indices 0..{n_min - 1}, per system, 0-based); fix the CV's atoms")
        self._validated_key = key

    def label(self) -> str:
        """A short human-readable description, e.g. ``DISTANCE(0,1)``."""
        spec = self.to_spec()
        atoms = spec.get("atoms", spec.get("atom", ""))
        if isinstance(atoms, list):
            atoms = ",".join(str(a) for a in atoms)
        return f"{spec['type']}({atoms})"

    def to_spec(self) -> dict:
        """JSON-able dict, e.g. ``{"type": "DISTANCE", "atoms": [0, 1]}``."""
        raise NotImplementedError

    # ---------------------------------------------------------------- human-readable labels and units
    @property
    def unit(self) -> str:
        """The CV's unit for axis labels: ``"Å"`` (distances), ``"rad"`` (angles), ``""`` (dimensionless),
        or the one given to :meth:`set_label`."""
        if getattr(self, "_unit", None) is not None:
            return self._unit
        return _length_unit(self.length_power)

    def set_label(self, text: str | None = None, unit: str | None = None) -> "CV":
        """Give the CV a short human-readable label (and unit) for axes and tables; returns the CV.

        The label and unit travel with :meth:`to_spec` (keys ``label``/``unit``) into SampleSets.

        >>> DISTANCE([0, 1]).set_label("r(O–H)").axis_label()
        'r(O–H) (Å)'
        """
        if text is not None and not str(text).strip():
            raise InputError("a CV label must not be empty")
        self._label_text = None if text is None else str(text)
        self._unit = None if unit is None else str(unit)
        return self

    def describe(self, symbols: Sequence[str] | None = None) -> str:
        """A short human-readable label without unit, e.g. ``d(O1–H) − d(O2–H)``.

        ``symbols``: chemical symbols of one system's atoms; an element that occurs more than once among
        the CV's atoms is numbered in order of atom index (O1, O2). Without symbols atoms are shown by
        their 0-based index.

        >>> distance_difference([0, 5], [4, 5]).describe(list("OCCCOHHHH"))
        'd(O1–H) − d(O2–H)'
        >>> distance_difference([0, 5], [4, 5]).describe()
        'd(0–5) − d(4–5)'
        """
        if getattr(self, "_label_text", None):
            return self._label_text
        return self._describe(_atom_names(self.atom_indices(), symbols))

    def axis_label(self, symbols: Sequence[str] | None = None) -> str:
        """:meth:`describe` with the unit in brackets, e.g. ``d(O1–H) − d(O2–H) (Å)``."""
        text, unit = self.describe(symbols), self.unit
        return f"{text} ({unit})" if unit else text

    def _describe(self, names: dict) -> str:
        return self.label()

    def _with_label_keys(self, spec: dict) -> dict:
        if getattr(self, "_label_text", None):
            spec["label"] = self._label_text
        if getattr(self, "_unit", None) is not None:
            spec["unit"] = self._unit
        return spec

    def difference(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a - b`` in this CV's space (minimum image when periodic)."""
        return periodic_difference(a, b, self.period if self.periodic else None)

    def extra_repr(self) -> str:
        return repr(self.to_spec())


# ---------------------------------------------------------------------- helpers
def _global_index(state: State, idx: Sequence[int]) -> torch.Tensor:
    """[n_systems, len(idx)] flat atom indices of per-system indices ``idx``."""
    return system_layout(state.system_index).flat_indices(idx)


def _minimum_image(state: State, vec: torch.Tensor) -> torch.Tensor:
    """Apply the minimum-image convention to displacement vectors ``vec [n_systems, ..., 3]``."""
    if state.cell is None or not state.is_periodic:
        return vec
    cell = state.cell  # rows are lattice vectors
    shape = vec.shape
    v = vec.reshape(shape[0], -1, 3)
    frac = torch.linalg.solve(cell.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)  # v = frac @ cell
    pbc = state.pbc[:, None, :].to(frac.dtype)
    v = (frac - torch.round(frac) * pbc) @ cell
    off_diagonal = cell - torch.diag_embed(torch.diagonal(cell, dim1=1, dim2=2))
    if bool((off_diagonal != 0).any()):
        # skewed cell: rounding fractions is not enough; pick the shortest of the 27 neighbouring images
        grid = torch.tensor([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)],
                            dtype=frac.dtype, device=frac.device)
        shifts = (grid[None, :, :] * pbc) @ cell  # [n_systems, 27, 3]
        cand = v[:, :, None, :] + shifts[:, None, :, :]
        best = (cand * cand).sum(-1).argmin(dim=-1)
        v = torch.gather(cand, 2, best[..., None, None].expand(-1, -1, 1, 3))[:, :, 0, :]
    return v.reshape(shape)


def _vectors(state: State, idx_from: Sequence[int], idx_to: Sequence[int]) -> torch.Tensor:
    """Minimum-image vectors ``r[to] - r[from]``, shape [n_systems, n_pairs, 3]."""
    a = _global_index(state, idx_from)
    b = _global_index(state, idx_to)
    vec = state.positions[b] - state.positions[a]
    return _minimum_image(state, vec)


def _pair_distances_and_jacobian(state: State, pairs):
    """Distances ``[n, p]`` of the atom pairs ``(i, j)`` in every system, the flat atoms ``[n, 2p]`` (all
    the i, then all the j) and ``d d_pair / d x`` for them, ``[n, 2p, 3]`` (-unit for i, +unit for j)."""
    first, second = [int(i) for i, _ in pairs], [int(j) for _, j in pairs]
    atoms = _global_index(state, first + second)
    pos = state.positions[atoms]  # [n, 2p, 3]
    p = len(pairs)
    vec = _minimum_image(state, pos[:, p:] - pos[:, :p])
    d = _safe_norm(vec)
    unit = vec / d[..., None]
    return d, atoms, torch.cat([-unit, unit], dim=1)


def _safe_norm(v: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((v * v).sum(-1).clamp_min(1e-300))


def _length_unit(power) -> str:
    if power is None or power == 0:
        return ""
    if power == 1:
        return "Å"
    return f"Å^{power:g}"


def _atom_names(indices: Sequence[int], symbols: Sequence[str] | None) -> dict:
    """Index -> display name: ``O1``, ``O2`` for repeated elements (by atom index), ``H`` for a unique
    one; the index itself without symbols."""
    idx = sorted(set(int(i) for i in indices))
    if symbols is None:
        return {i: str(i) for i in idx}
    symbols = list(symbols)
    if idx and idx[-1] >= len(symbols):
        raise InputError(f"a CV reads atom {idx[-1]} but only {len(symbols)} symbols were given")
    names, seen = {}, {}
    counts = {}
    for i in idx:
        counts[symbols[i]] = counts.get(symbols[i], 0) + 1
    for i in idx:
        sym = symbols[i]
        seen[sym] = seen.get(sym, 0) + 1
        names[i] = f"{sym}{seen[sym]}" if counts[sym] > 1 else sym
    return names


# --------------------------------------------------------------------------- CVs
class DISTANCE(CV):
    """Distance between two atoms, Angstrom (PLUMED ``DISTANCE ATOMS=i,j``).

    >>> from fesurf.state import State
    >>> s = State(positions=[[0.0, 0, 0], [0, 3.0, 4.0]], atomic_numbers=[1, 1])
    >>> DISTANCE([0, 1])(s).tolist()
    [5.0]
    """

    length_power = 1

    def __init__(self, atoms: Sequence[int]):
        super().__init__()
        atoms = _check_indices("DISTANCE", atoms)
        if len(atoms) != 2 or atoms[0] == atoms[1]:
            raise InputError(f"DISTANCE needs two different atoms, got {atoms}; e.g. DISTANCE([0, 1])")
        self.atoms = atoms

    def atom_indices(self):
        return list(self.atoms)

    def compute(self, state):
        return _safe_norm(_vectors(state, [self.atoms[0]], [self.atoms[1]]))[:, 0]

    def value_and_jacobian(self, state):
        self.validate(state)
        d, atoms, jac = _pair_distances_and_jacobian(state, [self.atoms])
        return d[:, 0], atoms, jac

    def to_spec(self):
        return self._with_label_keys({"type": "DISTANCE", "atoms": list(self.atoms)})

    def _describe(self, names):
        return f"d({names[self.atoms[0]]}–{names[self.atoms[1]]})"


class ANGLE(CV):
    """Angle i-j-k at atom j, radians in [0, pi] (PLUMED ``ANGLE ATOMS=i,j,k``).

    >>> from fesurf.state import State
    >>> s = State(positions=[[1.0, 0, 0], [0, 0, 0], [0, 2.0, 0]], atomic_numbers=[1, 8, 1])
    >>> round(float(ANGLE([0, 1, 2])(s)[0]), 6) == round(3.141592653589793 / 2, 6)
    True
    """

    def __init__(self, atoms: Sequence[int]):
        super().__init__()
        atoms = _check_indices("ANGLE", atoms)
        if len(atoms) != 3 or len(set(atoms)) != 3:
            raise InputError(f"ANGLE needs three different atoms i, j, k (angle at j), got {atoms}")
        self.atoms = atoms

    def atom_indices(self):
        return list(self.atoms)

    def compute(self, state):
        i, j, k = self.atoms
        v = _vectors(state, [j, j], [i, k])
        a, b = v[:, 0], v[:, 1]
        cross = _safe_norm(torch.linalg.cross(a, b))
        return torch.atan2(cross, (a * b).sum(-1))

    def to_spec(self):
        return self._with_label_keys({"type": "ANGLE", "atoms": list(self.atoms)})

    @property
    def unit(self):
        return self._unit if getattr(self, "_unit", None) is not None else "rad"

    def _describe(self, names):
        return "θ(" + "–".join(names[a] for a in self.atoms) + ")"


class TORSION(CV):
    """Dihedral angle i-j-k-l, radians in (-pi, pi], periodic (PLUMED ``TORSION ATOMS=i,j,k,l``).

    Sign convention as PLUMED (IUPAC): positive for a clockwise rotation of
    the far bond looking along j->k.

    >>> from fesurf.state import State
    >>> s = State(positions=[[1.0, 0, 0], [0, 0, 0], [0, 0, 1.0], [0, 1.0, 1.0]], atomic_numbers=[1, 6, 6, 1])
    >>> round(float(TORSION([0, 1, 2, 3])(s)[0]), 6) == round(3.141592653589793 / 2, 6)
    True
    """

    periodic = True
    period = (-math.pi, math.pi)

    def __init__(self, atoms: Sequence[int]):
        super().__init__()
        atoms = _check_indices("TORSION", atoms)
        if len(atoms) != 4 or len(set(atoms)) != 4:
            raise InputError(f"TORSION needs four different atoms, got {atoms}")
        self.atoms = atoms

    def atom_indices(self):
        return list(self.atoms)

    def compute(self, state):
        i, j, k, l = self.atoms
        v = _vectors(state, [i, j, k], [j, k, l])
        b1, b2, b3 = v[:, 0], v[:, 1], v[:, 2]
        n1 = torch.linalg.cross(b1, b2)
        n2 = torch.linalg.cross(b2, b3)
        b2n = b2 / _safe_norm(b2)[:, None]
        m1 = torch.linalg.cross(n1, b2n)
        x = (n1 * n2).sum(-1)
        y = (m1 * n2).sum(-1)
        return -torch.atan2(y, x)

    def to_spec(self):
        return self._with_label_keys({"type": "TORSION", "atoms": list(self.atoms)})

    @property
    def unit(self):
        return self._unit if getattr(self, "_unit", None) is not None else "rad"

    def _describe(self, names):
        return "φ(" + "–".join(names[a] for a in self.atoms) + ")"


class POSITION(CV):
    """One Cartesian component of one atom, Angstrom (PLUMED ``POSITION ATOM=i NOPBC``, component x/y/z).

    Not translation or rotation invariant; meant for model potentials (a
    particle on a double well or on Muller-Brown).

    >>> from fesurf.state import State
    >>> s = State(positions=[[0.5, -1.0, 0.0]], atomic_numbers=[1])
    >>> POSITION(0, "y")(s).tolist()
    [-1.0]
    """

    translation_invariant = False
    rotation_invariant = False
    length_power = 1

    def __init__(self, atom: int = 0, component: str = "x"):
        super().__init__()
        (atom,) = _check_indices("POSITION", [atom])
        if component not in ("x", "y", "z"):
            raise InputError(f"POSITION component must be 'x', 'y' or 'z', got {component!r}")
        self.atom = atom
        self.component = component

    def atom_indices(self):
        return [self.atom]

    def compute(self, state):
        g = _global_index(state, [self.atom])[:, 0]
        return state.positions[g, "xyz".index(self.component)]

    def value_and_jacobian(self, state):
        self.validate(state)
        g = _global_index(state, [self.atom])
        axis = "xyz".index(self.component)
        jac = torch.zeros(g.shape[0], 1, 3, dtype=state.dtype, device=state.device)
        jac[:, 0, axis] = 1.0
        return state.positions[g[:, 0], axis], g, jac

    def to_spec(self):
        return self._with_label_keys({"type": "POSITION", "atom": self.atom, "component": self.component})

    def _describe(self, names):
        return f"{self.component}({names[self.atom]})"

    def label(self):
        return f"POSITION({self.atom}.{self.component})"


class COORDINATION(CV):
    """Coordination number with PLUMED's rational switching function.

    ``s = sum_pairs (1 - x^nn) / (1 - x^mm)``, ``x = (r - d0) / r0`` (0 when
    r < d0), over pairs between ``groupa`` and ``groupb`` (or all pairs within
    ``groupa`` when ``groupb`` is None). Same atom pairs are skipped. r0, d0 in
    Angstrom; defaults nn=6, mm=12 (PLUMED ``COORDINATION GROUPA=.. GROUPB=..
    R_0=.. NN=6 MM=12``). Dimensionless.

    >>> from fesurf.state import State
    >>> s = State(positions=[[0.0, 0, 0], [1.0, 0, 0], [9.0, 0, 0]], atomic_numbers=[8, 1, 1])
    >>> round(float(COORDINATION([0], [1, 2], r0=2.0)(s)[0]), 6)   # 1/(1+0.5^6) + 1/(1+4.5^6)
    0.984736
    """

    def __init__(self, groupa: Sequence[int], groupb: Sequence[int] | None = None, r0: float = 1.0,
                 nn: int = 6, mm: int = 12, d0: float = 0.0):
        super().__init__()
        ga = _check_indices("COORDINATION", groupa)
        gb = None if groupb is None else _check_indices("COORDINATION", groupb)
        if not ga or (gb is not None and not gb):
            raise InputError("COORDINATION needs non-empty groups of atoms")
        if not (r0 > 0):
            raise InputError(f"COORDINATION r0 must be positive (Angstrom), got {r0}")
        nn, mm = int(nn), int(mm)
        if nn <= 0 or mm <= 0 or nn == mm:
            raise InputError(f"COORDINATION needs positive nn != mm, got nn={nn}, mm={mm} (PLUMED default 6, 12)")
        self.groupa, self.groupb = ga, gb
        self.r0, self.nn, self.mm, self.d0 = float(r0), nn, mm, float(d0)
        if gb is None:
            pairs = [(a, b) for n, a in enumerate(ga) for b in ga[n + 1:] if a != b]
        else:
            pairs = [(a, b) for a in ga for b in gb if a != b]
        if not pairs:
            raise InputError("COORDINATION has no atom pairs; give two different atoms at least")
        self._pairs = pairs

    def atom_indices(self):
        return sorted(set(self.groupa) | set(self.groupb or []))

    def compute(self, state):
        a, b = zip(*self._pairs)
        r = _safe_norm(_vectors(state, a, b))
        x = ((r - self.d0) / self.r0).clamp_min(0.0)
        near = (x - 1.0).abs() < 1e-5
        xs = torch.where(near, torch.full_like(x, 0.5), x)
        s = (1.0 - xs**self.nn) / (1.0 - xs**self.mm)
        # second-order expansion around x = 1, where the ratio is 0/0
        n, m = self.nn, self.mm
        t = x - 1.0
        s_near = n / m + n * (n - m) / (2.0 * m) * t
        return torch.where(near, s_near, s).sum(-1)

    def to_spec(self):
        spec = {"type": "COORDINATION", "groupa": list(self.groupa), "r0": self.r0, "nn": self.nn, "mm": self.mm,
                "d0": self.d0}
        if self.groupb is not None:
            spec["groupb"] = list(self.groupb)
        return self._with_label_keys(spec)

    def _describe(self, names):
        ga = ",".join(names[a] for a in self.groupa)
        return f"CN({ga})" if self.groupb is None else f"CN({ga} | {','.join(names[b] for b in self.groupb)})"

    def label(self):
        return f"COORDINATION({len(self._pairs)} pairs)"


class COMBINE(CV):
    """``sum_i c_i (s_i - p_i)^pow_i`` of other CVs (PLUMED ``COMBINE ARG=.. COEFFICIENTS=.. PARAMETERS=.. POWERS=..``).

    Periodic arguments enter through the minimum-image difference
    ``s_i - p_i``. The result is not periodic unless ``period=(lower, upper)``
    is given (PLUMED ``PERIODIC=lower,upper``).

    >>> from fesurf.state import State
    >>> s = State(positions=[[0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0]], atomic_numbers=[8, 1, 8])
    >>> COMBINE([DISTANCE([0, 1]), DISTANCE([2, 1])], coefficients=[1, -1])(s).tolist()
    [-1.0]
    """

    def __init__(self, args: Sequence[CV], coefficients: Sequence[float] | None = None,
                 parameters: Sequence[float] | None = None, powers: Sequence[float] | None = None,
                 period: tuple | None = None):
        super().__init__()
        args = list(args)
        if not args or not all(isinstance(a, CV) for a in args):
            raise InputError("COMBINE needs a non-empty list of CVs as args")
        n = len(args)

        def vec(v, default, name):
            v = [default] * n if v is None else [float(x) for x in v]
            if len(v) != n:
                raise InputError(f"COMBINE {name} has {len(v)} entries but there are {n} args")
            return v

        self.args = torch.nn.ModuleList(args)
        self.coefficients = vec(coefficients, 1.0, "coefficients")
        self.parameters = vec(parameters, 0.0, "parameters")
        self.powers = vec(powers, 1.0, "powers")
        if period is not None:
            period = (float(period[0]), float(period[1]))
            if not period[1] > period[0]:
                raise InputError(f"COMBINE period must be (lower, upper) with upper > lower, got {period}")
            self.periodic, self.period = True, period
        self.translation_invariant = all(a.translation_invariant for a in args)
        self.rotation_invariant = all(a.rotation_invariant for a in args)
        lp = {a.length_power * p if a.length_power is not None else None for a, p in zip(args, self.powers)}
        self.length_power = lp.pop() if len(lp) == 1 else None

    def atom_indices(self):
        return sorted({i for a in self.args for i in a.atom_indices()})

    def validate(self, state):
        for a in self.args:
            a.validate(state)

    def compute(self, state):
        out = 0.0
        for a, c, p, w in zip(self.args, self.coefficients, self.parameters, self.powers):
            d = a.difference(a.compute(state), torch.as_tensor(p, dtype=state.dtype))
            out = out + c * (d if w == 1.0 else d**w)
        return out

    def value_and_jacobian(self, state):
        # sum of c (s_a - p)^w: closed form when every argument has one (the minimum-image
        # difference of a periodic argument has slope 1)
        if all(type(a) is DISTANCE for a in self.args) and self.powers == [1.0] * len(self.args):
            # a linear combination of distances (distance_difference, distance_sum): all pairs at once
            for a in self.args:
                a.validate(state)
            d, atoms, jac = _pair_distances_and_jacobian(state, [a.atoms for a in self.args])
            c = torch.tensor(self.coefficients, dtype=d.dtype, device=d.device)
            out = ((d - torch.tensor(self.parameters, dtype=d.dtype, device=d.device)) * c).sum(dim=1)
            return out, atoms, jac * c.repeat(2)[None, :, None]
        parts = [a.value_and_jacobian(state) for a in self.args]
        if any(part is None for part in parts):
            return None
        out, atoms, jacs = 0.0, [], []
        for (v, at, jac), a, c, p, w in zip(parts, self.args, self.coefficients, self.parameters, self.powers):
            d = a.difference(v, torch.as_tensor(p, dtype=state.dtype))
            out = out + c * (d if w == 1.0 else d**w)
            slope = torch.full_like(d, c) if w == 1.0 else c * w * d ** (w - 1)
            atoms.append(at)
            jacs.append(slope[:, None, None] * jac)
        return out, torch.cat(atoms, dim=1), torch.cat(jacs, dim=1)

    def to_spec(self):
        spec = {"type": "COMBINE", "args": [a.to_spec() for a in self.args], "coefficients": list(self.coefficients),
                "parameters": list(self.parameters), "powers": list(self.powers)}
        if self.periodic:
            spec["period"] = list(self.period)
        return self._with_label_keys(spec)

    @property
    def unit(self):
        if getattr(self, "_unit", None) is not None:
            return self._unit
        units = {a.unit if w == 1 else (f"{a.unit}^{w:g}" if a.unit else "") for a, w in zip(self.args, self.powers)}
        return units.pop() if len(units) == 1 else ""

    def _describe(self, names):
        parts = []
        for k, (a, c, p, w) in enumerate(zip(self.args, self.coefficients, self.parameters, self.powers)):
            term = a.describe() if getattr(a, "_label_text", None) else a._describe(names)
            if p:
                term = f"({term} − {p:g})" if p > 0 else f"({term} + {-p:g})"
            if w != 1:
                term = f"{term}^{w:g}"
            mag = abs(c)
            if mag != 1:
                term = f"{mag:g}·{term}"
            sign = "−" if c < 0 else "+"
            parts.append(term if k == 0 and c >= 0 else (f"−{term}" if k == 0 else f" {sign} {term}"))
        return "".join(parts)

    def label(self):
        terms = [f"{c:+g}*{a.label()}" + ("" if w == 1 else f"^{w:g}") for a, c, w in
                 zip(self.args, self.coefficients, self.powers)]
        return "COMBINE(" + " ".join(terms) + ")"


def distance_difference(pair1: Sequence[int], pair2: Sequence[int], symbols: Sequence[str] | None = None) -> COMBINE:
    """``d(pair1) - d(pair2)`` in Angstrom, e.g. a proton-transfer coordinate d(O1-H) - d(O2-H).

    ``symbols`` (chemical symbols of the molecule's atoms) give the CV its label, e.g.
    ``d(O1–H) − d(O2–H) (Å)`` (:meth:`CV.axis_label`), carried in its spec.

    >>> distance_difference([0, 1], [2, 1]).to_spec()["coefficients"]
    [1.0, -1.0]
    >>> distance_difference([0, 5], [4, 5], symbols="OCCCOHHHH").axis_label()
    'd(O1–H) − d(O2–H) (Å)'
    """
    cv = COMBINE([DISTANCE(pair1), DISTANCE(pair2)], coefficients=[1.0, -1.0])
    return cv if symbols is None else cv.set_label(cv.describe(list(symbols)))


def distance_sum(pair1: Sequence[int], pair2: Sequence[int], symbols: Sequence[str] | None = None) -> COMBINE:
    """``d(pair1) + d(pair2)`` in Angstrom (``symbols`` as :func:`distance_difference`).

    >>> distance_sum([0, 1], [2, 1]).to_spec()["coefficients"]
    [1.0, 1.0]
    """
    cv = COMBINE([DISTANCE(pair1), DISTANCE(pair2)], coefficients=[1.0, 1.0])
    return cv if symbols is None else cv.set_label(cv.describe(list(symbols)))


_REGISTRY = {"DISTANCE": DISTANCE, "ANGLE": ANGLE, "TORSION": TORSION, "POSITION": POSITION,
             "COORDINATION": COORDINATION, "COMBINE": COMBINE}


def cv_from_spec(spec: dict) -> CV:
    """Build a CV from its :meth:`CV.to_spec` dict (PLUMED names as ``type``).

    >>> cv_from_spec({"type": "TORSION", "atoms": [0, 1, 2, 3]}).periodic
    True
    """
    if isinstance(spec, CV):
        return spec
    if not isinstance(spec, dict) or "type" not in spec:
        raise InputError(f"a CV spec is a dict with a 'type' key, e.g. {{'type': 'DISTANCE', 'atoms': [0, 1]}}; "
                         f"got {spec!r}")
    kind = str(spec["type"]).upper()
    if kind not in _REGISTRY:
        raise InputError(f"unknown CV type {spec['type']!r}; use one of {', '.join(_REGISTRY)}")
    kw = {k: v for k, v in spec.items() if k not in ("type", "label", "unit")}
    try:
        if kind == "COMBINE":
            kw["args"] = [cv_from_spec(a) for a in kw.get("args", [])]
            if kw.get("period") is not None:
                kw["period"] = tuple(kw["period"])
        cv = _REGISTRY[kind](**kw)
    except TypeError as exc:
        raise InputError(f"bad keys in the {kind} spec {spec!r}: {exc}") from None
    if spec.get("label") is not None or spec.get("unit") is not None:
        cv.set_label(spec.get("label"), spec.get("unit"))
    return cv


def cv_axis_labels(definitions: Sequence[dict], symbols: Sequence[str] | None = None) -> list[str]:
    """Axis labels (with units) for stored CV definitions (a SampleSet's ``cv_definitions``).

    A definition with ``label`` uses it; one that rebuilds as a fesurf CV is described from its atoms
    (``symbols`` of one system, optional); anything else (a PLUMED field) shows its name.

    >>> cv_axis_labels([{"name": "d", "type": "DISTANCE", "atoms": [0, 1]}], ["O", "H"])
    ['d(O–H) (Å)']
    >>> cv_axis_labels([{"name": "p.x", "type": "PLUMED"}])
    ['p.x']
    """
    out = []
    for i, d in enumerate(definitions):
        d = d if isinstance(d, dict) else {}
        name = str(d.get("name", f"cv{i}"))
        try:
            cv = cv_from_spec({k: v for k, v in d.items() if k != "name"})
        except InputError:
            text, unit = d.get("label") or name, d.get("unit") or ""
            out.append(f"{text} ({unit})" if unit else str(text))
            continue
        try:
            out.append(cv.axis_label(symbols))
        except InputError:
            out.append(cv.axis_label(None))
    return out


def as_cv_list(cvs) -> list[CV]:
    """Normalise one CV, a spec dict or a list of them to a list of CVs."""
    if isinstance(cvs, (CV, dict)):
        cvs = [cvs]
    try:
        out = [cv_from_spec(c) for c in cvs]
    except TypeError:
        raise InputError(f"expected a CV, a CV spec dict or a list of them, got {cvs!r}") from None
    if not out:
        raise InputError("at least one CV is needed")
    return out


def evaluate_cvs(cvs, state: State) -> torch.Tensor:
    """Values of several CVs, ``[n_systems, n_cvs]``.

    >>> from fesurf.state import State
    >>> s = State(positions=[[0.5, -1.0, 0.0]], atomic_numbers=[1])
    >>> evaluate_cvs([POSITION(0, "x"), POSITION(0, "y")], s).tolist()
    [[0.5, -1.0]]
    """
    return torch.stack([c(state) for c in as_cv_list(cvs)], dim=-1)
