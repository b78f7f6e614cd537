"""Ring-polymer MD overhead: fesurf vs i-PI per step, 21 atoms, trivial potential, 8 and 32 beads;
and the surrogate-driven cost per bead-step at 16 beads against the classical step.

Side by side in one run, interleaved, best of several repeats (robust to load spikes on a shared
machine; ratios are what matter):

- i-PI 3.x in process (``ipi.scripting.InteractiveSimulation``), PIMD NVT with PILE-L, BAOAB, its own
  vectorised ``harmonic`` direct PES (numpy), no trajectory output;
- fesurf :class:`fesurf.md.ring_polymer.RingPolymer` (PILE-L, BAOAB, exact normal-mode propagation)
  with :class:`fesurf.potentials.Harmonic` (the library's analytic potential); the keys ``*_minimal``
  use a three-line harmonic potential instead, to show what is integrator and what is potential.

Keys ``ratio_vs_ipi_8_beads`` (goal >= 10) and ``ratio_vs_ipi_32_beads`` (goal >= 20) are i-PI time /
fesurf time per step. The surrogate part times the stored malonaldehyde BP committee: one 16-bead
ring-polymer step (all beads in one batched call) per bead, against one classical Langevin step.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pimd_overhead.py``; writes
``benchmarks/results/pimd_overhead.json``.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "pimd_overhead.json"
N_ATOMS = 21
K = 1.0  # eV/A^2


def minimal_harmonic():
    from fesurf.potentials import Potential

    class MinimalHarmonic(Potential):
        """U = 1/2 K |x|^2 per system with exact forces (equal atom counts per system)."""

        translation_invariant = rotation_invariant = False

        def energy(self, state):
            x = state.positions
            return 0.5 * K * (x * x).reshape(state.n_systems, -1).sum(dim=1)

        def energy_and_forces(self, state, create_graph=False):
            if create_graph or state.positions.requires_grad:
                return super().energy_and_forces(state, create_graph)
            x = state.positions
            return 0.5 * K * (x * x).view(-1, 3 * N_ATOMS).sum(dim=1), -K * x

    return MinimalHarmonic()


def best(fn, repeats):
    return min(fn() for _ in range(repeats))


def fesurf_step_time(potential, P, n_steps, start):
    from fesurf.md.ring_polymer import RingPolymer

    rp = RingPolymer(potential, P, 0.5, 300.0, seed=1, tau_centroid=100.0)
    rp.run(start, 50)

    def once():
        t = time.perf_counter()
        rp.run(start, n_steps)
        return (time.perf_counter() - t) / n_steps

    return once


def ipi_step_time(P, n_steps, beads, workdir):
    import _ipi_runs as ipi
    from ipi.utils.units import unit_to_internal

    k_au = unit_to_internal("energy", "electronvolt", K) / unit_to_internal("length", "angstrom", 1.0) ** 2
    sim = ipi.build_ipi(beads, ipi.harmonic_forcefield(k_au), workdir, temperature=300.0, timestep_fs=0.5,
                        tau_fs=100.0, seed=1, stride=10 ** 6, properties=("step",))
    ipi.run_ipi(sim, workdir, 50)

    def once():
        return ipi.run_ipi(sim, workdir, n_steps) / n_steps

    return once


def surrogate_costs(repeats):
    from fesurf.data import load_malonaldehyde_committee, malonaldehyde
    from fesurf.md import Langevin, maxwell_boltzmann
    from fesurf.md.ring_polymer import RingPolymer, ring_polymer_state
    from fesurf.state import State

    model = load_malonaldehyde_committee()
    classical = maxwell_boltzmann(State.from_atoms(malonaldehyde()), 300.0, seed=0)
    lang = Langevin(model, timestep=0.5, temperature=300.0, friction=0.01, seed=1)
    lang.run(classical, 20)
    beads = ring_polymer_state(State.from_atoms(malonaldehyde()), 16, 300.0, seed=0)
    rp = RingPolymer(model, 16, 0.5, 300.0, seed=1, tau_centroid=100.0)
    rp.run(beads, 20)
    n = 200

    def t_classical():
        t = time.perf_counter()
        lang.run(classical, n)
        return (time.perf_counter() - t) / n

    def t_rp():
        t = time.perf_counter()
        rp.run(beads, n)
        return (time.perf_counter() - t) / n

    tc, tr = best(t_classical, repeats), best(t_rp, repeats)
    return {"classical_step_ms": 1e3 * tc, "ring_polymer_step_16_beads_ms": 1e3 * tr,
            "per_bead_step_ms": 1e3 * tr / 16, "per_bead_step_over_classical_step": tr / 16 / tc,
            "ring_polymer_step_over_classical_step": tr / tc}


def main():
    import _ipi_runs as ipi
    from ase import Atoms
    from importlib.metadata import version

    from fesurf.md.ring_polymer import ring_polymer_state
    from fesurf.potentials import Harmonic, check_potential
    from fesurf.state import State

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    pos = rng.normal(scale=2.0, size=(N_ATOMS, 3))
    classical = State(positions=pos, atomic_numbers=[6] * N_ATOMS)
    check_potential(minimal_harmonic(), classical.replicate(2))
    repeats = 5
    out = {"n_atoms": N_ATOMS, "potential": f"harmonic, K = {K} eV/A^2 on every coordinate",
           "settings": {"timestep_fs": 0.5, "temperature_K": 300.0, "thermostat": "PILE-L, tau 100 fs",
                        "splitting": "baoab", "repeats": repeats, "torch_threads": 1},
           "ipi_version": version("ipi"), "torch": torch.__version__, "python": platform.python_version(),
           "load_average_start": os.getloadavg()}
    for P in (1, 8, 32):
        start = ring_polymer_state(classical, P, 300.0, seed=0)
        beads = []
        for j in range(P):
            beads.append(Atoms(f"C{N_ATOMS}", positions=start.positions[j * N_ATOMS:(j + 1) * N_ATOMS].numpy(),
                               cell=[50.0, 50.0, 50.0]))
        n = 400 if P < 32 else 300
        with ipi.temporary_dir() as d:
            t_ipi_fn = ipi_step_time(P, n, beads, d)
            t_fes_fn = fesurf_step_time(Harmonic(k=K), P, 2000, start)
            t_min_fn = fesurf_step_time(minimal_harmonic(), P, 2000, start)
            t_ipi = t_fes = t_min = float("inf")
            for _ in range(repeats):  # interleaved, so load drifts hit all three alike
                t_ipi = min(t_ipi, t_ipi_fn())
                t_fes = min(t_fes, t_fes_fn())
                t_min = min(t_min, t_min_fn())
        out[f"ipi_ms_per_step_{P}_beads"] = 1e3 * t_ipi
        out[f"fesurf_ms_per_step_{P}_beads"] = 1e3 * t_fes
        out[f"fesurf_ms_per_step_{P}_beads_minimal"] = 1e3 * t_min
        out[f"ratio_vs_ipi_{P}_beads"] = t_ipi / t_fes
        out[f"ratio_vs_ipi_{P}_beads_minimal"] = t_ipi / t_min
        print(f"P = {P:2d}: i-PI {1e3 * t_ipi:.3f} ms, fesurf {1e3 * t_fes:.3f} ms (x{t_ipi / t_fes:.1f}), "
              f"fesurf minimal potential {1e3 * t_min:.3f} ms (x{t_ipi / t_min:.1f})", flush=True)
    out["goals"] = {"ratio_vs_ipi_8_beads": 10, "ratio_vs_ipi_32_beads": 20}
    out["surrogate_16_beads"] = surrogate_costs(repeats)
    s = out["surrogate_16_beads"]
    print(f"surrogate (malonaldehyde BP committee): classical step {s['classical_step_ms']:.2f} ms, 16-bead step "
          f"{s['ring_polymer_step_16_beads_ms']:.2f} ms = {s['per_bead_step_ms']:.3f} ms per bead-step "
          f"({s['per_bead_step_over_classical_step']:.2f} x the classical step)")
    out["load_average_end"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
