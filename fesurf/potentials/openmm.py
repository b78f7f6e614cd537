"""MM through OpenMM: an OpenMM System as a batched fesurf Potential, and solvated systems.

* :class:`OpenMMPotential`: energies (eV) and forces (eV/A) of an ``openmm.System`` for every replica of a
  State. Each replica has its own ``openmm.Context`` (positions in, energy and forces out; the periodic
  box comes from the State's cell), so a neighbour list is kept per replica. Periodic electrostatics is
  OpenMM's PME. On the CPU platform every Context runs ``threads`` threads (default: the main-process
  threads of :func:`fesurf.execution.decide_threads`, one).
* :class:`OpenMMDriver`: the other route, OpenMM integrating the System plus a fesurf potential (an
  ML core) as an ``openmm.PythonForce``, as openmm-ml's ASE route does.
* :func:`solvate`: a solute (``ase.Atoms``) in a box of TIP3P water from OpenMM's ``Modeller`` and the
  ``amber14/tip3p.xml`` force field, as a :class:`SolvatedSystem` (OpenMM System and topology, positions,
  cell, the solute and water atom indices, the MM charges). The solute's nonbonded parameters come from
  named force-field files whose residue templates match it, or from given charges and LJ parameters
  (:class:`SoluteParameters`). The solute gets no bonded terms, and its intramolecular nonbonded pairs are
  excluded: in a multi-level potential the core potential (an ML model, QM) computes the solute itself,
  and the System holds water-water plus solute-water (openmm-ml's mechanical-embedding layout).

Units: eV, Angstrom, e, amu (OpenMM's kJ/mol and nm are converted at the boundary).

Example
-------
>>> from ase import Atoms
>>> sol = solvate(Atoms("Cl", positions=[[0, 0, 0]], info={"charge": -1}), box=16.0,
...               forcefield=("amber14/tip3p.xml",), residue_names=("CL",))     # doctest: +SKIP
>>> pot = sol.potential(platform="Reference")                                  # doctest: +SKIP
>>> e, f = pot.energy_and_forces(sol.state().replicate(2))                     # doctest: +SKIP
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
from ase import units as _units

from ..errors import InputError
from ..state import State
from .base import Potential

log = logging.getLogger(__name__)

#: eV per kJ/mol
KJMOL = _units.kJ / _units.mol
#: Angstrom per nm
NM = 10.0


def _openmm():
    try:
        import openmm  # noqa: F401
        import openmm.app  # noqa: F401
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise InputError("OpenMM is not installed: pip install openmm (8.6.1 is tested)") from exc
    import openmm

    return openmm


def _reduced_box(cell: np.ndarray) -> np.ndarray:
    """Check OpenMM's reduced box form (a along x, b in the xy plane, |b_x| <= a_x/2, ...); cell rows in A."""
    a, b, c = cell
    ok = (abs(a[1]) < 1e-9 and abs(a[2]) < 1e-9 and abs(b[2]) < 1e-9 and a[0] > 0 and b[1] > 0 and c[2] > 0
          and abs(b[0]) <= 0.5 * a[0] + 1e-9 and abs(c[0]) <= 0.5 * a[0] + 1e-9 and abs(c[1]) <= 0.5 * b[1] + 1e-9)
    if not ok:
        raise InputError(f"OpenMM needs a box in reduced form (a = (ax, 0, 0), b = (bx, by, 0), c with cz > 0, "
                         f"|bx|, |cx| <= ax/2, |cy| <= by/2); got cell rows {cell.tolist()} (Angstrom)")
    return cell


class OpenMMPotential(Potential):
    """An OpenMM System as a fesurf Potential, one Context per replica.

    Parameters
    ----------
    system : ``openmm.System`` (copied: later changes to it do not reach this potential).
    platform : "CPU" (default) or "Reference" (double precision, slow; for exact checks).
    threads : CPU threads per Context (default :func:`fesurf.execution.decide_threads`'s
        ``main_threads``, i.e. one).
    properties : further platform properties (strings), e.g. ``{"DeterministicForces": "true"}``.
    max_contexts : at most this many Contexts; replica k uses Context ``k % max_contexts`` (a
        finite-difference batch of hundreds of copies does not build hundreds of Contexts).

    Energies and forces are exact for the System (no autograd: ``differentiable = False``). States
    must have ``system.getNumParticles()`` atoms per replica and, for a periodic System, a cell per
    replica in OpenMM's reduced form.

    >>> import openmm
    >>> sys = openmm.System(); _ = [sys.addParticle(1.0) for _ in range(2)]
    >>> bond = openmm.HarmonicBondForce(); _ = bond.addBond(0, 1, 0.1, 1000.0); _ = sys.addForce(bond)
    >>> s = State(positions=[[0.0, 0, 0], [1.2, 0, 0]], atomic_numbers=[1, 1])
    >>> round(float(OpenMMPotential(sys, platform="Reference").energy(s)[0]) / KJMOL, 6)   # 1/2 k (0.02 nm)^2
    0.2
    """

    differentiable = False
    translation_invariant = False  # PME's mesh error moves with the atoms; the box fixes the orientation
    rotation_invariant = False

    def __init__(self, system, *, platform: str = "CPU", threads: Optional[int] = None,
                 properties: Optional[dict] = None, max_contexts: int = 64):
        super().__init__()
        openmm = _openmm()
        if not isinstance(system, openmm.System):
            raise InputError(f"OpenMMPotential needs an openmm.System, got {type(system).__name__}")
        names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
        if platform not in names:
            raise InputError(f"OpenMM platform {platform!r} is not available here; choose one of {names}")
        if int(max_contexts) < 1:
            raise InputError(f"max_contexts must be >= 1, got {max_contexts}")
        if threads is None:
            from ..execution import decide_threads

            threads = decide_threads(0).main_threads
        if isinstance(threads, bool) or int(threads) < 1:
            raise InputError(f"threads must be >= 1, got {threads!r}")
        self.threads = int(threads)
        self.platform_name = platform
        self.properties = dict(properties or {})
        if platform == "CPU":
            self.properties.setdefault("Threads", str(self.threads))
        self.max_contexts = int(max_contexts)
        self._xml = openmm.XmlSerializer.serialize(system)
        self.n_particles = system.getNumParticles()
        self.periodic = bool(system.usesPeriodicBoundaryConditions())
        self._contexts: dict = {}
        self.n_calls = 0

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_contexts"] = {}
        return state

    @property
    def system(self):
        """A fresh copy of the ``openmm.System``."""
        return _openmm().XmlSerializer.deserialize(self._xml)

    def _context(self, k: int):
        slot = k % self.max_contexts
        ctx = self._contexts.get(slot)
        if ctx is None:
            openmm = _openmm()
            platform = openmm.Platform.getPlatformByName(self.platform_name)
            ctx = openmm.Context(self.system, openmm.VerletIntegrator(0.001), platform, self.properties)
            self._contexts[slot] = ctx
        return ctx

    def _validate(self, state: State):
        counts = state.atoms_per_system
        if bool((counts != self.n_particles).any()):
            raise InputError(f"the OpenMM System has {self.n_particles} particles but the State's systems have "
                             f"{sorted(set(counts.tolist()))} atoms; give one full copy of the system per replica")
        if self.periodic and (state.cell is None or not bool(state.pbc.all())):
            raise InputError("the OpenMM System is periodic: the State needs a cell (Angstrom) and pbc=True")

    def energy(self, state: State) -> torch.Tensor:
        return self.energy_and_forces(state)[0]

    def energy_and_forces(self, state: State, create_graph: bool = False):
        if create_graph:
            raise InputError("an OpenMM System is not differentiable by autograd")
        self._validate(state)
        pos = state.positions.detach().cpu().double().numpy() / NM
        energies = np.empty(state.n_systems)
        forces = np.empty((state.n_atoms, 3))
        for k, (a, b) in enumerate(state.atom_slices()):
            ctx = self._context(k)
            if self.periodic:
                box = _reduced_box(state.cell[k].detach().cpu().double().numpy()) / NM
                ctx.setPeriodicBoxVectors(*box)
            ctx.setPositions(pos[a:b])
            st = ctx.getState(getEnergy=True, getForces=True)
            energies[k] = st.getPotentialEnergy()._value
            forces[a:b] = st.getForces(asNumpy=True)._value
        self.n_calls += state.n_systems
        return (torch.as_tensor(energies * KJMOL, dtype=state.dtype),
                torch.as_tensor(forces * (KJMOL / NM), dtype=state.dtype))


class OpenMMDriver:
    """OpenMM drives the MD: an OpenMM System plus a fesurf potential (an ML core) as an ``openmm.PythonForce``.

    OpenMM calls the fesurf potential at every force evaluation with its current positions (and box),
    the way openmm-ml's ``MLPotential("ase")`` embeds an ASE calculator (its ``createMixedSystem`` route),
    without needing openmm-ml: any fesurf Potential works, evaluated on a one-system State built from
    OpenMM's positions. The Context's energies and forces are then the System's plus the potential's.

    Parameters
    ----------
    system : ``openmm.System`` (copied; e.g. :attr:`SolvatedSystem.system`, the MM part).
    potential : fesurf Potential over the whole system (e.g. a
        :class:`~fesurf.potentials.multilevel.MultiLevelPotential` holding only the ML core term).
    template : a one-system State with the atoms, masses, cell and charge (positions are replaced).
    integrator : an ``openmm`` integrator (OpenMM units: ps).
    platform, properties : OpenMM platform name and properties.

    :meth:`potential_energy` (eV) and :meth:`forces` (eV/A) come from the Context; :meth:`positions` in A.
    """

    def __init__(self, system, potential: Potential, template: State, integrator, *, platform: str = "Reference",
                 properties: Optional[dict] = None):
        openmm = _openmm()
        if not hasattr(openmm, "PythonForce"):  # pragma: no cover - OpenMM < 8.4
            raise InputError("OpenMMDriver needs openmm.PythonForce (OpenMM >= 8.4; 8.6.1 is tested)")
        if template.n_systems != 1 or template.n_atoms != system.getNumParticles():
            raise InputError(f"template must be one system of {system.getNumParticles()} atoms")
        sys = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
        self.potential, self.template, self.integrator = potential, template, integrator
        self.n_calls = 0
        force = openmm.PythonForce(self._compute)
        force.setUsesPeriodicBoundaryConditions(bool(sys.usesPeriodicBoundaryConditions()))
        sys.addForce(force)
        self.context = openmm.Context(sys, integrator, openmm.Platform.getPlatformByName(platform),
                                      dict(properties or {}))
        if template.cell is not None and sys.usesPeriodicBoundaryConditions():
            self.context.setPeriodicBoxVectors(*(template.cell[0].detach().double().numpy() / NM))
        self.context.setPositions(template.positions.detach().double().numpy() / NM)

    def _compute(self, omm_state):
        pos = omm_state.getPositions(asNumpy=True)._value * NM
        kw = {}
        if self.template.cell is not None:
            kw["cell"] = torch.as_tensor(omm_state.getPeriodicBoxVectors(asNumpy=True)._value * NM,
                                         dtype=self.template.dtype)[None]
        state = self.template.replace(positions=torch.as_tensor(pos, dtype=self.template.dtype), **kw)
        e, f = self.potential.energy_and_forces(state)
        self.n_calls += 1
        return float(e[0]) / KJMOL, f.detach().double().numpy() / (KJMOL / NM)

    def positions(self) -> np.ndarray:
        """Current positions (A)."""
        return self.context.getState(getPositions=True).getPositions(asNumpy=True)._value * NM

    def set_velocities(self, velocities_A_per_fs) -> None:
        """Velocities in A/fs (OpenMM's leapfrog reads them as v(t - dt/2))."""
        self.context.setVelocities(np.asarray(velocities_A_per_fs, dtype=float) * 100.0)  # A/fs -> nm/ps

    def step(self, n_steps: int = 1) -> None:
        """``n_steps`` steps of the OpenMM integrator."""
        self.integrator.step(int(n_steps))

    def forces(self) -> np.ndarray:
        """Total forces (eV/A) at the current positions: the System's plus the fesurf potential's."""
        return self.context.getState(getForces=True).getForces(asNumpy=True)._value * (KJMOL / NM)

    def potential_energy(self) -> float:
        """The System's energy plus the fesurf potential's at the current positions (eV)."""
        return self.context.getState(getEnergy=True).getPotentialEnergy()._value * KJMOL


# ------------------------------------------------------------------------- solvated systems
@dataclass(frozen=True)
class SoluteParameters:
    """Nonbonded parameters of a solute, one entry per atom: ``charges`` (e), ``sigma`` (A), ``epsilon`` (eV).

    >>> SoluteParameters(charges=[-1.0], sigma=[4.4777], epsilon=[0.001543]).n_atoms
    1
    """

    charges: tuple
    sigma: tuple
    epsilon: tuple

    def __post_init__(self):
        for name in ("charges", "sigma", "epsilon"):
            v = tuple(float(x) for x in np.asarray(getattr(self, name), dtype=float).reshape(-1))
            if not all(np.isfinite(v)):
                raise InputError(f"SoluteParameters.{name} must be finite numbers")
            object.__setattr__(self, name, v)
        if not len(self.charges) == len(self.sigma) == len(self.epsilon):
            raise InputError("SoluteParameters needs one charge, sigma and epsilon per atom")
        if any(s <= 0 for s in self.sigma) or any(e < 0 for e in self.epsilon):
            raise InputError("sigma must be > 0 (Angstrom) and epsilon >= 0 (eV)")

    @property
    def n_atoms(self) -> int:
        return len(self.charges)


@dataclass
class SolvatedSystem:
    """A solute in a TIP3P box (from :func:`solvate`).

    Attributes
    ----------
    system : the ``openmm.System`` (water-water + solute-water; solute-solute pairs excluded, no solute
        bonded terms).
    topology : ``openmm.app.Topology``.
    numbers, masses : [n_atoms] atomic numbers and masses (amu).
    positions : [n_atoms, 3] Angstrom.
    cell : [3, 3] Angstrom (rows).
    solute, water : atom indices (the solute first, in the order of the input Atoms).
    charges : [n_atoms] MM charges (e) as in the System's NonbondedForce.
    solute_charge : total charge of the solute (e).
    """

    system: object
    topology: object
    numbers: np.ndarray
    masses: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    solute: tuple
    water: tuple
    charges: np.ndarray
    solute_charge: float
    settings: dict = field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    @property
    def n_waters(self) -> int:
        return len(self.water) // 3

    def state(self, positions=None, masses=None) -> State:
        """A periodic fesurf State of the solvated system (charge = the solute's)."""
        pos = self.positions if positions is None else np.asarray(positions, dtype=float)
        return State(positions=torch.as_tensor(pos, dtype=torch.float64), atomic_numbers=torch.as_tensor(self.numbers),
                     masses=torch.as_tensor(self.masses if masses is None else masses, dtype=torch.float64),
                     cell=torch.as_tensor(self.cell, dtype=torch.float64), pbc=True, charge=self.solute_charge)

    def potential(self, **kwargs) -> OpenMMPotential:
        """:class:`OpenMMPotential` of :attr:`system` (keywords go to it)."""
        return OpenMMPotential(self.system, **kwargs)

    def without_solute_charges(self):
        """A copy of :attr:`system` whose solute charges are zero (its solute-water Coulomb then comes from
        elsewhere, e.g. :class:`~fesurf.potentials.multilevel.PointChargeCoupling` with learned charges)."""
        openmm = _openmm()
        sys = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(self.system))
        nb = _nonbonded(sys)
        for i in self.solute:
            _, sig, eps = nb.getParticleParameters(i)
            nb.setParticleParameters(i, 0.0, sig, eps)
        return sys

    def embedding(self, cutoff: Optional[float] = 12.0):
        """The solute as a QM core in the field of the water's MM charges, whole waters entering together:
        a :class:`~fesurf.oracles.embedding.PointChargeEmbedding` for
        :class:`~fesurf.oracles.embedding.EmbeddedPySCFOracle` (cutoff in Angstrom)."""
        from ..oracles.embedding import PointChargeEmbedding, water_groups

        return PointChargeEmbedding(core=self.solute, charges=self.charges, cutoff=cutoff,
                                    groups=water_groups(len(self.solute), self.n_waters))

    def to_atoms(self):
        """The solvated system as ``ase.Atoms`` (periodic; ``info['charge']`` = the solute's charge)."""
        from ase import Atoms

        a = Atoms(numbers=self.numbers, positions=self.positions, masses=self.masses, cell=self.cell, pbc=True)
        a.info.update(charge=self.solute_charge, multiplicity=1)
        return a


def _nonbonded(system):
    openmm = _openmm()
    found = [f for f in system.getForces() if isinstance(f, openmm.NonbondedForce)]
    if len(found) != 1:
        raise InputError(f"expected one NonbondedForce in the System, found {len(found)}")
    return found[0]


def _solute_template(atoms, params: SoluteParameters) -> str:
    from ase.data import chemical_symbols

    types, residue, nonbonded = [], [], []
    for i, (z, m) in enumerate(zip(atoms.numbers, atoms.get_masses())):
        name = f"fesurf-solute-{i}"
        types.append(f'<Type name="{name}" class="{name}" element="{chemical_symbols[z]}" mass="{m:.6f}"/>')
        residue.append(f'<Atom name="A{i}" type="{name}"/>')
        nonbonded.append(f'<Atom type="{name}" charge="{params.charges[i]:.10f}" sigma="{params.sigma[i] / NM:.10f}" '
                         f'epsilon="{params.epsilon[i] / KJMOL:.10f}"/>')
    return ("<ForceField><AtomTypes>" + "".join(types) + "</AtomTypes><Residues><Residue name=\"SOL\">"
            + "".join(residue) + "</Residue></Residues>"
            + '<NonbondedForce coulomb14scale="0.8333333333333334" lj14scale="0.5">' + "".join(nonbonded)
            + "</NonbondedForce></ForceField>")


def _relax_water(system, positions_A: np.ndarray, n_solute: int, box) -> np.ndarray:
    """Positions (A) after a local energy minimisation of ``system`` with the first ``n_solute`` atoms fixed
    (zero mass in a copy of the System: OpenMM's minimiser does not move massless particles)."""
    openmm = _openmm()
    sys = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    for i in range(n_solute):
        sys.setParticleMass(i, 0.0)
    ctx = openmm.Context(sys, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"),
                         {"Threads": "1"})
    ctx.setPeriodicBoxVectors(*box)
    ctx.setPositions(positions_A / NM)
    openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, 300)  # clashes go in the first steps; 300 L-BFGS steps at most
    out = ctx.getState(getPositions=True).getPositions(asNumpy=True)._value * NM
    if np.abs(out[:n_solute] - positions_A[:n_solute]).max() > 1e-6:  # pragma: no cover - OpenMM's contract
        raise RuntimeError("OpenMM's minimiser moved the fixed solute")
    out[:n_solute] = positions_A[:n_solute]
    return out


def solvate(solute, *, box: Optional[float] = None, n_waters: Optional[int] = None,
            parameters: Optional[SoluteParameters] = None, forcefield: Sequence[str] = (),
            residue_names: Optional[Sequence[str]] = None, cutoff: float = 9.0, ewald_tolerance: float = 5e-4,
            rigid_water: bool = False, dispersion_correction: bool = True,
            switch_distance: Optional[float] = None, minimize: bool = True,
            solute_pairs: bool = False) -> SolvatedSystem:
    """Put ``solute`` (``ase.Atoms``, charge in ``info['charge']``) in a cubic box of TIP3P water.

    Parameters
    ----------
    solute : ase.Atoms (kept in its order, as atoms 0..n-1; centred in the box by OpenMM's Modeller).
    box : cube edge (A); or ``n_waters``: that many waters, the box sized by Modeller.
    parameters : the solute's charges and LJ parameters; or ``forcefield`` (OpenMM force-field files
        whose residue templates match the solute, e.g. ``("amber14/tip3p.xml",)`` for ions) with
        ``residue_names`` splitting the solute into residues (one residue per name, atoms in order;
        default one residue per atom).
    cutoff : nonbonded cutoff (A); PME beyond it with ``ewald_tolerance``.
    rigid_water : False (flexible TIP3P, for fesurf's integrators, which have no constraints) or True.
    switch_distance : start of OpenMM's LJ switching function (A; None: LJ truncated at the cutoff, as
        amber usually runs). The real-space Coulomb is truncated at the cutoff where erfc has decayed to
        about ``ewald_tolerance``: energies jump by that much when pairs cross it, which finite
        differences see; a switch and a tight tolerance make the surface smooth for exact checks.

    solute_pairs : keep the solute's intramolecular nonbonded pairs in the System (a complete MM model of
        the solvated solute, for references); default False: they are excluded, because the core potential
        of a multi-level model computes the solute itself.
    minimize : relax the water by OpenMM's ``LocalEnergyMinimizer`` with the solute held fixed (Modeller
        tiles a pre-equilibrated box and leaves O-O contacts of ~1.8 A across the periodic faces of
        small boxes: tens of eV above a relaxed box).

    No counter-ions are added (the box carries the solute's net charge; PME's neutralising background
    handles it).
    """
    openmm = _openmm()
    from openmm import app, unit

    if (box is None) == (n_waters is None):
        raise InputError("give exactly one of box (cube edge, Angstrom) and n_waters")
    if box is not None and not float(box) > 2 * float(cutoff):
        raise InputError(f"box {box} A must exceed twice the cutoff ({cutoff} A)")
    if n_waters is not None and int(n_waters) < 1:
        raise InputError(f"n_waters must be >= 1, got {n_waters}")
    if (parameters is None) == (not forcefield):
        raise InputError("give the solute's nonbonded parameters either as parameters=SoluteParameters(...) or "
                         "as forcefield=(named OpenMM force-field files with templates for its residues)")
    n_sol = len(solute)
    top = app.Topology()
    chain = top.addChain()
    if parameters is not None:
        if parameters.n_atoms != n_sol:
            raise InputError(f"parameters has {parameters.n_atoms} atoms, the solute {n_sol}")
        res = top.addResidue("SOL", chain)
        for i, z in enumerate(solute.numbers):
            top.addAtom(f"A{i}", app.Element.getByAtomicNumber(int(z)), res)
        ff = app.ForceField("amber14/tip3p.xml", io.StringIO(_solute_template(solute, parameters)))
    else:
        names = list(residue_names) if residue_names is not None else None
        groups = [[i] for i in range(n_sol)] if names is None or len(names) == n_sol else None
        if groups is None:
            raise InputError("residue_names needs one name per residue; only one-atom residues are supported here "
                             "(give one name per atom), or pass parameters=")
        names = names or [solute.get_chemical_symbols()[i].upper() for i in range(n_sol)]
        for name, g in zip(names, groups):
            res = top.addResidue(name, chain)
            for i in g:
                top.addAtom(solute.get_chemical_symbols()[i], app.Element.getByAtomicNumber(int(solute.numbers[i])), res)
        ff = app.ForceField(*dict.fromkeys(["amber14/tip3p.xml", *forcefield]))
    modeller = app.Modeller(top, [openmm.Vec3(*p) for p in solute.positions / NM] * unit.nanometer)
    kw = dict(model="tip3p", neutralize=False)
    if box is not None:
        kw["boxSize"] = openmm.Vec3(box / NM, box / NM, box / NM) * unit.nanometer
    else:
        kw["numAdded"] = int(n_waters)
    try:
        modeller.addSolvent(ff, **kw)
        system = ff.createSystem(modeller.topology, nonbondedMethod=app.PME, nonbondedCutoff=cutoff / NM * unit.nanometer,
                                 ewaldErrorTolerance=ewald_tolerance, rigidWater=rigid_water, constraints=None,
                                 removeCMMotion=False)
    except ValueError as exc:
        raise InputError(f"OpenMM could not parametrise the solvated system: {exc}") from None
    nb = _nonbonded(system)
    nb.setUseDispersionCorrection(bool(dispersion_correction))
    if switch_distance is not None:
        if not 0 < float(switch_distance) < float(cutoff):
            raise InputError(f"switch_distance must lie between 0 and the cutoff ({cutoff} A), got {switch_distance}")
        nb.setUseSwitchingFunction(True)
        nb.setSwitchingDistance(float(switch_distance) / NM)
    for i in range(n_sol if not solute_pairs else 0):  # the core potential computes the solute itself
        for j in range(i):
            nb.addException(i, j, 0.0, 1.0, 0.0, True)
    pos = np.array(modeller.positions.value_in_unit(unit.nanometer)) * NM
    if minimize:
        pos = _relax_water(system, pos, n_sol, modeller.topology.getPeriodicBoxVectors())
    vecs = modeller.topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer)
    cell = np.array([[v[0], v[1], v[2]] for v in vecs]) * NM
    numbers = np.array([a.element.atomic_number for a in modeller.topology.atoms()])
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())])
    charges = np.array([nb.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge)
                        for i in range(system.getNumParticles())])
    q_sol = float(solute.info.get("charge", 0.0))
    if abs(charges[:n_sol].sum() - q_sol) > 1e-6:
        log.warning("the solute's MM charges sum to %.4f e, its charge is %.4f e", charges[:n_sol].sum(), q_sol)
    return SolvatedSystem(system=system, topology=modeller.topology, numbers=numbers, masses=masses, positions=pos,
                          cell=cell, solute=tuple(range(n_sol)), water=tuple(range(n_sol, len(numbers))),
                          charges=charges, solute_charge=q_sol,
                          settings=dict(cutoff_A=float(cutoff), ewald_tolerance=float(ewald_tolerance),
                                        rigid_water=bool(rigid_water), water_model="tip3p (amber14/tip3p.xml)",
                                        solute_pairs=bool(solute_pairs),
                                        n_waters=(len(numbers) - n_sol) // 3, box_A=float(cell[0, 0])))


__all__ = ["OpenMMPotential", "OpenMMDriver", "SoluteParameters", "SolvatedSystem", "solvate", "KJMOL", "NM"]
