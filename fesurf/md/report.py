"""The MD validation report (``fesurf validate-md``; ``fesurf demo`` is its deprecated old name).

On an embedded 13-atom argon Lennard-Jones cluster it:

1. scans the time step by NVE drift and picks the largest one under
   0.1 meV/atom/ps;
2. checks the integrator's order (halving dt divides the energy fluctuation
   by ~4);
3. checks that Langevin (BAOAB) and Bussi sampling give the canonical <KE>
   and Var(KE) within 3 standard errors.

Example
-------
>>> from fesurf.md.report import md_validation_report
>>> # rows = md_validation_report(quick=True); print(format_report(rows))
"""
from __future__ import annotations

import time


from ..state import State
from ..potentials import LennardJones
from .integrators import Bussi, Langevin, maxwell_boltzmann
from .reporters import EnergyReporter
from .stability import canonical_check, nve_drift, timestep_scan


def argon_cluster(n_replicas: int = 1) -> State:
    """The embedded system: a 13-atom argon icosahedron (LJ epsilon 0.0104 eV, sigma 3.40 A)."""
    from ase.cluster import Icosahedron

    return State.from_atoms(Icosahedron("Ar", 2)).replicate(n_replicas)


def md_validation_report(quick: bool = False, temperature: float = 30.0, seed: int = 0) -> dict:
    """Run the checks and return a dict of results (times in fs, drift in meV/atom/ps)."""
    lj = LennardJones()
    cluster = argon_cluster()
    t0 = time.perf_counter()
    scan = timestep_scan(lj, cluster, [2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0],
                         duration_fs=2000.0 if quick else 5000.0, threshold=0.1, temperature=temperature, seed=seed)
    dt = scan.best_timestep
    start = maxwell_boltzmann(cluster, temperature, seed=seed + 1, remove_com=True)
    coarse = nve_drift(lj, start, 2 * 5.0, duration_fs=10000.0)
    fine = nve_drift(lj, start, 5.0, duration_fs=10000.0)
    checks = {}
    n_steps = 4000 if quick else 20000
    for name, md, n_dof in [
        ("Langevin (BAOAB)", Langevin(lj, 10.0, temperature=temperature, friction=0.01, seed=seed + 2), 39),
        ("Bussi (CSVR)", Bussi(lj, 10.0, temperature=temperature, tau=100.0, seed=seed + 2), 36),
    ]:
        rep = EnergyReporter(stride=5)
        md.run(maxwell_boltzmann(argon_cluster(8), temperature, seed=seed + 3, remove_com=True), n_steps, [rep])
        checks[name] = canonical_check(rep.arrays()["kinetic_energy"], temperature, n_dof, discard=50)
    return {
        "system": "Ar13 Lennard-Jones cluster",
        "temperature_K": temperature,
        "scan": scan,
        "chosen_timestep_fs": dt,
        "fluctuation_ratio_10_vs_5_fs": coarse.fluctuation_meV_per_atom / fine.fluctuation_meV_per_atom,
        "canonical": checks,
        "wall_time_s": time.perf_counter() - t0,
    }


def format_report(r: dict) -> str:
    lines = [f"MD validation report: {r['system']} at {r['temperature_K']:.0f} K", "",
             "NVE time-step scan (threshold 0.1 meV/atom/ps):", r["scan"].table(), "",
             f"chosen time step: {r['chosen_timestep_fs']} fs",
             f"energy fluctuation ratio dt=10 fs / dt=5 fs: {r['fluctuation_ratio_10_vs_5_fs']:.2f} (velocity Verlet: ~4)",
             "", f"{'thermostat':<18}{'<KE> (eV)':>12}{'canonical':>12}{'z':>7}{'Var KE (eV^2)':>15}{'canonical':>12}{'z':>7}  pass"]
    for name, c in r["canonical"].items():
        lines.append(f"{name:<18}{c.mean:>12.5f}{c.expected_mean:>12.5f}{c.z_mean:>7.2f}"
                     f"{c.variance:>15.3e}{c.expected_variance:>12.3e}{c.z_variance:>7.2f}  {'yes' if c.passed() else 'NO'}")
    lines += ["", f"wall time: {r['wall_time_s']:.1f} s"]
    return "\n".join(lines)


def _run_demo(args) -> int:
    report = md_validation_report(quick=args.quick)
    return (0 if all(c.passed() for c in report["canonical"].values()) else 1), format_report(report)


def _run_demo_alias(args) -> int:
    import sys

    sys.stderr.write("fesurf: note: 'fesurf demo' is deprecated and will be removed; it is 'fesurf validate-md' "
                     "(the MD validation report). The full demonstration is 'make demo' "
                     "(fesurf run examples/malonaldehyde.toml)\n")
    return _run_demo(args)


def register(subparsers):
    import argparse

    description = ("Validate the MD engine on a 13-atom argon Lennard-Jones cluster: NVE time-step scan, "
                   "integrator order, and canonical <KE> and Var(KE) for Langevin (BAOAB) and Bussi.")
    example = "example:\n  fesurf validate-md --quick"
    p = subparsers.add_parser("validate-md", help="MD validation report (time step, integrator order, thermostats)",
                              description=description, epilog=example,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="shorter runs")
    p.set_defaults(func=_run_demo)
    d = subparsers.add_parser("demo", help="deprecated name of validate-md",
                              description=description + " Deprecated: use 'fesurf validate-md'.",
                              epilog="example:\n  fesurf validate-md --quick   (was: fesurf demo --quick)",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--quick", action="store_true", help="shorter runs")
    d.set_defaults(func=_run_demo_alias)

