"""Quantum nuclei in the sampling protocols: centroid umbrella sampling, bead-wise reference
correction, and isotope free energies.

:func:`quantum_umbrella_sampling` is umbrella sampling on the *centroid* CV of ring polymers
(:mod:`fesurf.md.ring_polymer`): every window (and walker) is a ring polymer of P beads, all beads of
all windows are systems of one State evaluated in one potential call, and the run goes through the
shared driver (:func:`~fesurf.sampling._engine.drive`: segments, checkpoints, resume) with
:class:`~fesurf.md.ring_polymer.PILEDynamics`. The restraint acts on the centroid through
:class:`~fesurf.md.ring_polymer.CentroidPotential`, so the ring polymer of window k samples
exp(-beta [ (1/P) sum_j V(q_j) + springs + b_k(s(c)) ]). The SampleSet holds per frame

- ``cv``: the centroid CV s(c);
- ``u_kn[k] = beta ( Vbar + b_k(s(c)) )`` and ``u_ref = beta Vbar`` with Vbar = (1/P) sum_j V(q_j), the
  bead-averaged potential (the spring energy is the same in every window and cancels in MBAR);
- ``positions``: all beads, ``[P * n_atoms, 3]`` bead-major (bead j holds atoms j*n .. j*n+n-1);

so :func:`~fesurf.estimators.compute_pmf` gives the centroid PMF (the quantum free-energy profile of
Gillan; Voth, Chandler, Miller) unchanged.

Sparse reference correction, bead-wise: the ring polymer's weight is exp(-beta Vbar), so the reference
correction of a frame is exp(-beta dUbar) with dUbar = (1/P) sum_j [U_ref(q_j) - U_sur(q_j)], the
bead average. :func:`bead_labeller` computes it (P reference calls per frame) in the
``label(frames) -> (dU, ok, reasons)`` form that :func:`~fesurf.estimators.reweight_pmf`,
:func:`~fesurf.estimators.adaptive_reweight` and :func:`~fesurf.estimators.delta_learning.delta_two_stage`
take; :func:`reweight_quantum_pmf` chooses frames, labels them and calls
:func:`~fesurf.estimators.reweight_pmf`.

Isotopes: :func:`isotope_mass_ti` (Gauss-Legendre mass TI, all nodes as ring polymers of one batch)
and :func:`isotope_scaled_coordinates` (scaled-coordinates FEP from one simulation).

Units: CV units (Angstrom, rad), kappa eV/unit^2, temperature K, timestep fs, masses amu, energies eV.

Example
-------
>>> import numpy as np
>>> from fesurf.cv import POSITION
>>> from fesurf.md.ring_polymer import PILEDynamics
>>> from fesurf.potentials import DoubleWell1D
>>> from fesurf.sampling.protocol import Schedule
>>> from fesurf.state import State
>>> ss = quantum_umbrella_sampling(DoubleWell1D(barrier=0.05), State(positions=[[0.0, 0, 0]], atomic_numbers=[1]),
...                                POSITION(0, "x"), centers=[-0.5, 0.5], kappa=1.0, temperature=300.0,
...                                dynamics=PILEDynamics(n_beads=4, timestep=0.5, seed=1),
...                                schedule=Schedule(n_equilibration=20, n_production=40, stride=10))
>>> ss.N_k.tolist(), ss.positions.shape
([4, 4], (8, 4, 3))
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from ..cv import as_cv_list
from ..errors import InputError
from ..md.ring_polymer import (CentroidPotential, PILEDynamics, RingPolymer, RingPolymerReporter, bead_map,
                               ring_polymer_state, substitute_isotopes)
from ..state import State
from ..units import KB
from ._engine import check_temperature, drive, open_samples, replicate_start
from .protocol import resolve
from .sampleset import SampleSet
from .umbrella import _cv_definitions, _restraint, check_window_overlap

log = logging.getLogger(__name__)

__all__ = ["quantum_umbrella_sampling", "bead_positions", "centroid_positions", "bead_labeller",
           "reweight_quantum_pmf", "centroid_effective_mass", "isotope_mass_ti", "isotope_scaled_coordinates",
           "IsotopeResult"]


# ----------------------------------------------------------------------------- umbrella
def quantum_umbrella_sampling(potential, state: State, cvs, centers, kappa, *, temperature, dynamics=None,
                              schedule=None, storage=None, replicas_per_window: int = 1, check_overlap: bool = True,
                              spread_start: bool = True, on_checkpoint=None, progress=None, **settings) -> SampleSet:
    """Umbrella sampling on the centroid CV of ring polymers; returns the SampleSet (see the module doc).

    Parameters
    ----------
    potential : Potential
        The physical potential U0 of one bead (the surrogate).
    state : State
        One classical system (copied to every window) or one per window; its masses are the isotopes
        (see :func:`~fesurf.md.ring_polymer.substitute_isotopes`).
    cvs, centers, kappa : as in :func:`~fesurf.sampling.umbrella_sampling` (the CVs of the centroid)
    temperature : K
    dynamics : :class:`~fesurf.md.ring_polymer.PILEDynamics` (``n_beads``, ``timestep``, ``tau_centroid``,
        ``seed``, ...); required
    schedule, storage : :class:`~fesurf.sampling.protocol.Schedule` / ``Storage`` or their keywords
    replicas_per_window : independent ring polymers per window (ring ``k * replicas_per_window + r``)
    spread_start : start the beads from the free ring polymer around the given structure (else collapsed)

    Returns the SampleSet (open; ``close()`` it when it is backed by a file). Its attrs hold
    ``n_beads``, ``masses_amu`` and the dynamics settings.
    """
    if dynamics is None or not isinstance(dynamics, PILEDynamics):
        raise InputError("quantum_umbrella_sampling needs dynamics=PILEDynamics(n_beads=P, ...) "
                         f"(got {type(dynamics).__name__ if dynamics is not None else None})")
    dynamics, schedule, storage = resolve(dynamics=dynamics, schedule=schedule, storage=storage, **settings)
    cvs = as_cv_list(cvs)
    bias = _restraint(cvs, centers, kappa)
    k = bias.n_windows
    temperature = check_temperature(temperature, k)
    reps = int(replicas_per_window)
    if reps < 1:
        raise InputError(f"replicas_per_window must be >= 1, got {replicas_per_window}")
    P = int(dynamics.n_beads)
    n_rings = k * reps
    window_of_ring = np.repeat(np.arange(k), reps)
    ring_bias = bias if reps == 1 else bias.select_systems(window_of_ring.tolist())
    classical = replicate_start(state, n_rings)
    for c in cvs:
        c.validate(classical)
    n_atoms = int(classical.atoms_per_system[0])
    seeds = [int(s) for s in np.random.SeedSequence([int(dynamics.seed), 3]).generate_state(n_rings, dtype=np.uint32)]
    start = ring_polymer_state(classical, P, temperature, seed=seeds, spread=spread_start)
    rmap = bead_map(start.n_systems, P)
    centroid_bias = CentroidPotential(ring_bias, P, rmap)
    beta = 1.0 / (KB * temperature)
    params = [{"type": "RESTRAINT", "at": bias.at[min(i, bias.at.shape[0] - 1)].tolist(),
               "kappa": bias.kappa[min(i, bias.kappa.shape[0] - 1)].tolist(), "on": "centroid"} for i in range(k)]
    attrs = {"protocol": "pimd-umbrella", **dynamics.attrs(), **schedule.attrs(), "replicas_per_window": reps,
             "potential": type(potential).__name__, "n_atoms_per_bead": n_atoms,
             "masses_amu": classical.masses[:n_atoms].tolist(),
             "atomic_numbers": classical.atomic_numbers[:n_atoms].tolist(),
             "replica_map": [["window", k], ["walker", reps], ["bead", P]],
             "positions_layout": "all beads of the ring polymer, bead-major: [n_beads * n_atoms, 3]",
             "energy_convention": "u_kn = beta (Vbar + bias_k(s(centroid))); u_ref = beta Vbar; "
                                  "Vbar = bead-averaged potential"}
    samples = open_samples(storage.path, resume=storage.resume, overwrite=storage.overwrite, create_kwargs=dict(
        n_states=k, temperature=temperature, n_cv=len(cvs), n_atoms=P * n_atoms if storage.store_positions else None,
        store_u_ref=True, cv_definitions=_cv_definitions(cvs), state_parameters=params, attrs=attrs))
    columns = np.arange(n_rings)

    def frame(work, info, step):
        with torch.no_grad():
            cstate = centroid_bias.centroid_state(work)
            s = ring_bias.cv_values(cstate)
            w = bias.window_energies(s).numpy()
            vbar = rmap.reduce(info["potential_energy"], "bead").numpy()  # bead mean of U0 + own bias
        u0 = vbar - w[window_of_ring, columns]
        out = {"state_index": window_of_ring, "u_kn": beta * (u0[None, :] + w), "u_ref": beta * u0,
               "cv": s.numpy().copy(), "step": np.full(n_rings, step, dtype=np.int64)}
        if storage.store_positions:
            out["positions"] = work.positions.numpy().reshape(n_rings, P * n_atoms, 3).copy()
        return out

    drive(physical=potential, bias=centroid_bias, start=start, temperature=temperature, dynamics=dynamics,
          schedule=schedule, samples=samples, frame_fn=frame, on_checkpoint=on_checkpoint, progress=progress)
    if check_overlap and k > 1:
        check_window_overlap(samples)
    return samples


def _pimd_layout(samples: SampleSet):
    attrs = samples.attrs
    if attrs.get("protocol") != "pimd-umbrella":
        raise InputError("this SampleSet was not written by quantum_umbrella_sampling (no bead layout)")
    return int(attrs["n_beads"]), int(attrs["n_atoms_per_bead"])


def bead_positions(samples: SampleSet, frames) -> np.ndarray:
    """[n_frames, P, n_atoms, 3] bead positions (Angstrom) of SampleSet frames of a PIMD run."""
    P, n_atoms = _pimd_layout(samples)
    pos = samples.read_positions(np.asarray(frames, dtype=np.int64))
    return pos.reshape(len(pos), P, n_atoms, 3)


def centroid_positions(samples: SampleSet, frames) -> np.ndarray:
    """[n_frames, n_atoms, 3] centroid positions (Angstrom) of SampleSet frames of a PIMD run."""
    return bead_positions(samples, frames).mean(axis=1)


# ----------------------------------------------------------------------------- reference correction
def bead_labeller(samples: SampleSet, oracle, template, executor=None, cache=None):
    """``label(frames) -> (dUbar eV, ok, reasons)`` for the sparse reference correction of a PIMD SampleSet.

    Every bead of every frame is labelled with ``oracle`` (P reference calls per frame; ``template``:
    an ``ase.Atoms`` with the molecule's numbers, charge and multiplicity), and
    dUbar = (1/P) sum_j U_ref(q_j) - Vbar_sur, the bead-averaged reference minus surrogate energy (the
    surrogate's Vbar is ``u_ref kT``). A frame with any failed bead fails (its reason says which bead).
    ``label.n_calls`` counts the reference calls made.

    >>> # label = bead_labeller(samples, XTBOracle(), malonaldehyde())
    >>> # res = reweight_pmf(samples, frames, label(frames)[0])
    """
    P, n_atoms = _pimd_layout(samples)
    if len(template) != n_atoms:
        raise InputError(f"template has {len(template)} atoms but the ring polymer beads have {n_atoms}")
    kT = KB * samples.temperature

    def label(frames):
        frames = np.asarray(frames, dtype=np.int64)
        beads = bead_positions(samples, frames)
        configs = []
        for f in beads:
            for q in f:
                a = template.copy()
                a.positions = q
                configs.append(a)
        labels = oracle.label(configs, executor=executor, cache=cache)
        label.n_calls += len(labels)
        e = np.array([lab.energy if lab.ok else np.nan for lab in labels]).reshape(len(frames), P)
        ok = np.isfinite(e).all(axis=1)
        reasons = []
        for i in range(len(frames)):
            bad = [j for j in range(P) if not labels[i * P + j].ok]
            reasons.append("" if not bad else f"bead {bad[0]}: {labels[i * P + bad[0]].reason}")
        du = e.mean(axis=1) - samples.u_ref[frames] * kT
        return du, ok, reasons

    label.n_calls = 0
    return label


def reweight_quantum_pmf(samples: SampleSet, label, n_labels: int, *, cv: int = 0, bins=30, range=None,
                         seed: int = 0, **reweight_kwargs):
    """Correct a centroid PMF to the reference: stratified frame choice
    (:func:`~fesurf.estimators.choose_frames`), bead-wise labels (``label`` from :func:`bead_labeller`)
    and :func:`~fesurf.estimators.reweight_pmf` on the bead-averaged dU. Failed frames are left out.
    Returns ``(ReweightResult, frames, delta_u)``."""
    from ..estimators.reweight import choose_frames, reweight_pmf

    frames, pi = choose_frames(samples, n_labels, cv=cv, bins=bins, range=range, seed=seed)
    order = np.argsort(frames)
    frames, pi = frames[order], pi[order]
    du, ok, reasons = label(frames)
    for f, good, why in zip(frames, ok, reasons):
        if not good:
            log.warning("reference label of frame %d failed and is left out: %s", f, why)
    res = reweight_pmf(samples, frames[ok], du[ok], inclusion_probability=pi[ok], cv=cv, bins=bins, range=range,
                       seed=seed, **reweight_kwargs)
    return res, frames[ok], du[ok]


def centroid_effective_mass(samples: SampleSet, cv, near: float, width: float, cv_index: int = 0) -> float:
    """Effective mass (amu) of ``cv`` at the transition state: 1 / <|grad s|_M>^2 over frames whose centroid
    CV lies within ``width`` of ``near``, with |grad s|_M^2 = sum_i |ds/dx_i|^2 / m_i at the centroid
    (the masses are the run's isotopes). This is the m_s that makes sqrt(kT/(2 pi m_s)) the mean
    forward centroid flux factor of quantum TST."""
    P, n_atoms = _pimd_layout(samples)
    (cv_obj,) = as_cv_list(cv)
    x = samples.cv[:, cv_index]
    frames = np.where(np.abs(x - near) <= width)[0]
    if frames.size == 0:
        raise InputError(f"no frame has its centroid CV within {width} of {near}; widen width=")
    frames = frames[:: max(1, frames.size // 400)]
    cen = torch.as_tensor(centroid_positions(samples, frames).reshape(-1, 3), dtype=torch.float64)
    z = torch.as_tensor(samples.attrs["atomic_numbers"] * len(frames))
    m = torch.as_tensor(samples.attrs["masses_amu"], dtype=torch.float64)
    st = State(positions=cen.requires_grad_(True), atomic_numbers=z, masses=m.repeat(len(frames)),
               system_index=torch.arange(len(frames)).repeat_interleave(n_atoms))
    s = cv_obj(st)
    (g,) = torch.autograd.grad(s.sum(), cen)
    g2 = ((g.view(len(frames), n_atoms, 3) ** 2).sum(dim=2) / m[None, :]).sum(dim=1)
    return float(1.0 / torch.sqrt(g2).mean() ** 2)


# ----------------------------------------------------------------------------- isotopes
@dataclass
class IsotopeResult:
    """An isotope free energy A(heavy) - A(light) (eV, with 1σ) and what went into it."""

    free_energy: "object"  # fesurf.estimators.FreeEnergy, eV
    method: str
    masses: list  # amu, light and heavy (or the TI nodes)
    kinetic: list = field(default_factory=list)  # per node <K> (eV) of the substituted atoms
    kinetic_error: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"free_energy_eV": self.free_energy.value, "free_energy_sigma_eV": self.free_energy.error,
                "method": self.method, "masses_amu": list(map(float, self.masses)),
                "kinetic_eV": list(map(float, self.kinetic)), "kinetic_sigma_eV": list(map(float, self.kinetic_error)),
                "settings": self.settings, "diagnostics": self.free_energy.diagnostics}


def _isotope_target(state, atoms, isotope):
    atoms = [int(a) for a in np.atleast_1d(atoms)]
    heavy = substitute_isotopes(state, {a: isotope for a in atoms})
    m_light = state.masses[atoms].double().numpy()
    m_heavy = heavy.masses[atoms].double().numpy()
    if not np.allclose(m_light, m_light[0]) or not np.allclose(m_heavy, m_heavy[0]):
        raise InputError("substituted atoms must share one light and one heavy mass (one element)")
    return atoms, float(m_light[0]), float(m_heavy[0])


def _run_rings(potential, classical, n_beads, temperature, *, timestep, n_steps, n_equilibration, stride, seed,
               tau_centroid, isotopes=None, progress=None):
    beads = ring_polymer_state(classical, n_beads, temperature, seed=seed)
    rp = RingPolymer(potential, n_beads, timestep, temperature, seed=seed + 10_000, tau_centroid=tau_centroid)
    rec = RingPolymerReporter(rp, stride=stride, isotopes=isotopes, after_step=n_equilibration)
    rp.run(beads, n_equilibration + n_steps, reporters=[rec], progress=progress)
    return rec.arrays()


def _check_single(state):
    if not isinstance(state, State) or state.n_systems != 1:
        raise InputError("give the molecule as a State with one system")


def isotope_mass_ti(potential, state: State, atoms, isotope, *, n_beads: int, temperature: float, n_nodes: int = 5,
                    walkers: int = 4, timestep: float = 0.5, n_steps: int = 10000, n_equilibration: int = 1000,
                    stride: int = 5, seed: int = 0, tau_centroid: float = 100.0,
                    parametrization: str = "inverse_sqrt", progress=None) -> IsotopeResult:
    """A(heavy) - A(light) (eV) by mass thermodynamic integration, dA/dm = -<K>/m.

    The substituted ``atoms`` (indices; e.g. ``[5]``) go from their mass in ``state`` to ``isotope`` (a
    name such as "D" or a mass in amu) along a Gauss-Legendre path (:func:`~fesurf.estimators.quantum.mass_ti_nodes`);
    every node x walker is one ring polymer of a single batched run, and <K> is their centroid-virial
    kinetic energy. ``n_steps`` production steps after ``n_equilibration``, a frame every ``stride``.
    """
    from ..estimators.quantum import mass_ti_free_energy, mass_ti_nodes, quantum_estimates

    _check_single(state)
    atoms, m0, m1 = _isotope_target(state, atoms, isotope)
    nodes = mass_ti_nodes(m0, m1, n_nodes, parametrization)
    W = int(walkers)
    if W < 1:
        raise InputError(f"walkers must be >= 1, got {walkers}")
    systems = []
    for m in nodes.masses:
        systems.append(substitute_isotopes(state, {a: float(m) for a in atoms}))
    classical = State.concatenate([s for s in systems for _ in range(W)])
    rec = _run_rings(potential, classical, n_beads, temperature, timestep=timestep, n_steps=n_steps,
                     n_equilibration=n_equilibration, stride=stride, seed=seed, tau_centroid=tau_centroid,
                     progress=progress)
    k_mean, k_err = [], []
    for i in range(nodes.lam.size):
        est = quantum_estimates(rec, n_beads, rings=range(i * W, (i + 1) * W), atoms=atoms)
        k_mean.append(est.kinetic_virial.value)
        k_err.append(est.kinetic_virial.error)
    fe = mass_ti_free_energy(nodes, k_mean, k_err, temperature=temperature)
    settings = dict(n_beads=int(n_beads), temperature_K=float(temperature), n_nodes=int(n_nodes), walkers=W,
                    timestep_fs=float(timestep), n_steps=int(n_steps), n_equilibration=int(n_equilibration),
                    stride=int(stride), seed=int(seed), tau_centroid_fs=float(tau_centroid), atoms=atoms,
                    parametrization=parametrization)
    return IsotopeResult(fe, "mass-ti", nodes.masses.tolist(), k_mean, k_err, settings)


def isotope_scaled_coordinates(potential, state: State, atoms, isotope, *, n_beads: int, temperature: float,
                               walkers: int = 4, timestep: float = 0.5, n_steps: int = 10000,
                               n_equilibration: int = 1000, stride: int = 5, seed: int = 0,
                               tau_centroid: float = 100.0, progress=None) -> IsotopeResult:
    """A(heavy) - A(light) (eV) by scaled-coordinates FEP from one simulation of the light isotopologue
    (:func:`~fesurf.estimators.quantum.scaled_coordinates_free_energy`; one extra potential call per frame)."""
    from ..estimators.quantum import quantum_estimates, scaled_coordinates_free_energy

    _check_single(state)
    atoms, m0, m1 = _isotope_target(state, atoms, isotope)
    W = int(walkers)
    if W < 1:
        raise InputError(f"walkers must be >= 1, got {walkers}")
    classical = state.replicate(W)
    rec = _run_rings(potential, classical, n_beads, temperature, timestep=timestep, n_steps=n_steps,
                     n_equilibration=n_equilibration, stride=stride, seed=seed, tau_centroid=tau_centroid,
                     isotopes={"heavy": (atoms, m1 / m0)}, progress=progress)
    fe = scaled_coordinates_free_energy(rec["scaled:heavy"], temperature, m1 / m0, n_atoms=len(atoms))
    est = quantum_estimates(rec, n_beads, atoms=atoms)
    settings = dict(n_beads=int(n_beads), temperature_K=float(temperature), walkers=W, timestep_fs=float(timestep),
                    n_steps=int(n_steps), n_equilibration=int(n_equilibration), stride=int(stride), seed=int(seed),
                    tau_centroid_fs=float(tau_centroid), atoms=atoms)
    return IsotopeResult(fe, "scaled-coordinates-fep", [m0, m1], [est.kinetic_virial.value],
                         [est.kinetic_virial.error], settings)
