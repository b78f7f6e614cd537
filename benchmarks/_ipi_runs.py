"""Run i-PI in process (its Python API, ``ipi.scripting``) on a fesurf potential, and fesurf's own
ring-polymer MD with the same settings, for the side-by-side benchmarks and the peer test.

i-PI is an optional peer (PyPI ``ipi``): import this module only where i-PI is installed.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PES_FILE = HERE / "_ipi_fesurf_pes.py"


@contextlib.contextmanager
def _cwd(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def ipi_xml(beads, *, temperature, timestep_fs, tau_fs, seed, forcefield, splitting="baoab", stride=1,
            properties=("step", "kinetic_cv{electronvolt}", "potential{electronvolt}")):
    """The i-PI input: PIMD NVT with PILE-L (pile_lambda 1), ``splitting``, COM not fixed."""
    from ase import units
    from ipi.scripting.templates import simulation_xml

    thermostat = (f"<thermostat mode='pile_l'><tau units='ase'> {tau_fs * units.fs} </tau>"
                  "<pile_lambda> 1.0 </pile_lambda></thermostat>")
    motion = f"""
<motion mode="dynamics">
<fixcom> False </fixcom>
<dynamics mode="nvt" splitting="{splitting}">
<timestep units="ase"> {timestep_fs * units.fs} </timestep>
{thermostat}
</dynamics>
</motion>"""
    output = (f"<output prefix='ipi'><properties stride='{stride}' filename='out' flush='1'> "
              f"[ {', '.join(properties)} ] </properties></output>")
    xml = simulation_xml(beads, forcefield, motion, temperature=temperature, output=output, safe_stride=10 ** 9)
    return xml.replace("<simulation verbosity='quiet' safe_stride='1000000000'>",
                       f"<simulation verbosity='quiet' safe_stride='1000000000'>\n<prng><seed> {int(seed)} </seed></prng>", 1)


def fesurf_forcefield(model: str, template: str, batch_size: int) -> str:
    return (f"<ffdirect name='fesurf'><pes>custom</pes><pes_path>{PES_FILE}</pes_path>"
            f"<parameters>{{template: {template}, model: {model}}}</parameters>"
            f"<batch_size>{int(batch_size)}</batch_size></ffdirect>")


def harmonic_forcefield(k_atomic_units: float) -> str:
    return f"<ffdirect name='harm'><pes>harmonic</pes><parameters>{{k1: {k_atomic_units}}}</parameters></ffdirect>"


def build_ipi(beads, forcefield, workdir, **kw):
    """An i-PI InteractiveSimulation in ``workdir`` (its output files go there)."""
    from ipi.scripting.interactive import InteractiveSimulation

    with _cwd(workdir):
        return InteractiveSimulation(ipi_xml(beads, forcefield=forcefield, **kw))


def run_ipi(sim, workdir, n_steps: int):
    """Advance ``sim`` by ``n_steps``; returns wall seconds."""
    with _cwd(workdir):
        t = time.perf_counter()
        sim.run(n_steps)
        return time.perf_counter() - t


def read_ipi_properties(workdir, names=("step", "kinetic_cv", "potential")) -> dict:
    data = np.loadtxt(Path(workdir) / "ipi.out", ndmin=2)
    return {n: data[:, i] for i, n in enumerate(names)}


def temporary_dir():
    return tempfile.TemporaryDirectory(prefix="fesurf-ipi-")
