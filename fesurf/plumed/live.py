"""PLUMED as the bias engine inside fesurf's batched MD, through the official ``plumed`` wrapper.

:class:`PlumedBias` is a :class:`~fesurf.potentials.Potential` whose energy
and forces come from PLUMED: one ``plumed.Plumed()`` instance per replica,
so umbrella windows with different RESTRAINTs (or walkers with their own
METAD) run batched. Add it to the physical potential with
``Sum([physical, PlumedBias(...)])`` and run any fesurf integrator.

The PyPI ``plumed`` package is only the wrapper: it needs the PLUMED kernel
``libplumedKernel.so``, found through ``kernel=``, the ``PLUMED_KERNEL``
environment variable, a conda or system PLUMED, or the kernel of the PyPI
``hillclimber`` wheel (see :func:`find_kernel` for the order).

Units: fesurf's (eV, Angstrom, fs, amu, e) are declared to PLUMED with
``setMDEnergyUnits`` (kJ/mol per eV), ``setMDLengthUnits`` (nm per Angstrom),
``setMDTimeUnits`` (ps per fs), mass and charge factors 1, so the PLUMED input
and its output files stay in PLUMED's usual nm / kJ/mol / ps.

Steps. Each call of :meth:`PlumedBias.energy_and_forces` on new positions is
one MD step (``setStep``, ``prepareCalc``, ``performCalcNoUpdate``,
``update``): PRINT writes and METAD deposits then. A repeated call on the
same positions returns the cached result (an integrator restarting
``run()`` does not deposit twice). :meth:`PlumedBias.energy` and
:meth:`PlumedBias.cross_energies` never update (``performCalcNoUpdate`` only),
so extra evaluations (reporters, contract checks, u_kn for MBAR) change
nothing in PLUMED.

Example
-------
>>> from fesurf.plumed.live import kernel_status
>>> ok, reason = kernel_status()
>>> isinstance(ok, bool) and isinstance(reason, str)
True
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import InputError
from ..potentials.base import Potential
from ..state import State
from ..units import KB, convert

__all__ = ["PlumedBias", "PlumedUmbrellaRecorder", "find_kernel", "kernel_status", "plumed_ase_calculator",
           "plumed_tool", "PLUMED_INSTALL_HINT"]

log = logging.getLogger(__name__)

PLUMED_INSTALL_HINT = (
    "The `plumed` Python package is only the wrapper; it needs the PLUMED kernel library libplumedKernel.so. "
    "Install PLUMED (e.g. `conda install -c conda-forge plumed`; or the PLUMED 2.11 kernel inside the PyPI "
    "`hillclimber` wheel: `pip install --no-deps --target $VIRTUAL_ENV/plumed-kernel hillclimber`; or build it: "
    "./configure --prefix=$HOME/plumed && make && make install) and point fesurf at it with `export PLUMED_KERNEL=/path/to/lib/libplumedKernel.so` "
    "or pass kernel='/path/to/lib/libplumedKernel.so'.")

#: PLUMED's MD-unit factors for fesurf's units (Angstrom, eV, fs, amu, e)
LENGTH_UNIT_NM = 0.1
ENERGY_UNIT_KJMOL = convert(1.0, "eV", "kJ/mol")
TIME_UNIT_PS = 1e-3


#: where the make-test install puts the kernel of the PyPI ``hillclimber`` wheel (inside the venv)
WHEEL_KERNEL_FOLDER = "plumed-kernel"
_WHEEL_KERNEL = os.path.join("plumed", "_lib", "lib", "libplumedKernel.so")
_SYSTEM_LIB_DIRS = ("/usr/local/lib", "/usr/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/opt/plumed/lib")


def _kernel_candidates():
    """``(where, path)`` pairs in lookup order after ``kernel=`` and ``$PLUMED_KERNEL``."""
    import shutil
    import sys

    out = []
    conda = os.environ.get("CONDA_PREFIX")
    if conda:
        out.append(("conda ($CONDA_PREFIX/lib)", os.path.join(conda, "lib", "libplumedKernel.so")))
    tool = shutil.which("plumed")
    if tool:  # a system install: <prefix>/bin/plumed next to <prefix>/lib/libplumedKernel.so
        prefix = os.path.dirname(os.path.dirname(os.path.realpath(tool)))
        out.append((f"the plumed on PATH ({tool})", os.path.join(prefix, "lib", "libplumedKernel.so")))
    out += [("system library folder", os.path.join(d, "libplumedKernel.so")) for d in _SYSTEM_LIB_DIRS]
    out.append(("the hillclimber wheel installed by `make test`",
                os.path.join(sys.prefix, WHEEL_KERNEL_FOLDER, _WHEEL_KERNEL)))
    try:
        import importlib.util

        spec = importlib.util.find_spec("hillclimber")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        site = os.path.dirname(list(spec.submodule_search_locations)[0])
        out.append(("the installed hillclimber wheel", os.path.join(site, _WHEEL_KERNEL)))
    return out


def find_kernel(kernel: Optional[str] = None) -> str:
    """Path of the PLUMED kernel ``libplumedKernel.so``.

    Lookup order: ``kernel`` if given; ``$PLUMED_KERNEL``; a conda PLUMED (``$CONDA_PREFIX/lib``); the
    PLUMED whose ``plumed`` tool is on ``PATH``; the system library folders; the kernel of the PyPI
    ``hillclimber`` wheel (PLUMED 2.11), either in ``<venv>/plumed-kernel`` where ``make test`` puts it or
    installed as a package. Raises InputError naming everything it tried when none exists.

    >>> try:
    ...     find_kernel("/nonexistent/libplumedKernel.so")
    ... except InputError as e:
    ...     "does not exist" in str(e)
    True
    """
    if kernel:
        if not os.path.exists(kernel):
            raise InputError(f"the PLUMED kernel {kernel!r} (kernel=) does not exist. " + PLUMED_INSTALL_HINT)
        return str(kernel)
    env = os.environ.get("PLUMED_KERNEL")
    if env:
        if not os.path.exists(env):
            raise InputError(f"the PLUMED kernel {env!r} ($PLUMED_KERNEL) does not exist. " + PLUMED_INSTALL_HINT)
        return env
    tried = ["kernel= (not given)", "$PLUMED_KERNEL (not set)"]
    for where, path in _kernel_candidates():
        if os.path.exists(path):
            return path
        tried.append(f"{where}: {path}")
    raise InputError("no PLUMED kernel found; tried " + "; ".join(tried) + ". " + PLUMED_INSTALL_HINT)


def plumed_tool(kernel: Optional[str] = None):
    """The ``plumed`` command-line tool of the same install as the kernel, with the environment it needs.

    Returns ``(argv0, env)``: the path of the ``plumed`` executable and a copy of ``os.environ``
    with ``PLUMED_ROOT`` and ``LD_LIBRARY_PATH`` set for it (the hillclimber wheel's tool needs both).
    Raises InputError when the install has no tool.

    >>> # exe, env = plumed_tool(); subprocess.run([exe, "sum_hills", "--hills", "HILLS"], env=env)
    """
    lib = os.path.dirname(os.path.realpath(find_kernel(kernel)))
    env = dict(os.environ)
    exe = os.path.join(os.path.dirname(lib), "bin", "plumed")  # <prefix>/lib/libplumedKernel.so, <prefix>/bin/plumed
    if os.path.exists(exe):
        root = os.path.join(lib, "plumed")
        if os.path.isdir(root):
            env["PLUMED_ROOT"] = root
        env["LD_LIBRARY_PATH"] = lib + (os.pathsep + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        return exe, env
    raise InputError(f"the PLUMED install of kernel {lib} has no `plumed` tool next to it (looked for {exe})")


def kernel_status(kernel: Optional[str] = None):
    """``(True, path)`` when a PLUMED kernel loads, else ``(False, reason)`` (for skips and checks)."""
    try:
        path = find_kernel(kernel)
        import plumed

        p = plumed.Plumed(kernel=path)
        p.finalize()
        return True, path
    except ImportError:
        return False, "the `plumed` Python wrapper is not installed (pip install plumed)"
    except (InputError, RuntimeError) as exc:
        return False, str(exc)


def _new_plumed(kernel_path):
    try:
        import plumed
    except ImportError:
        raise InputError("the `plumed` Python wrapper is not installed: pip install plumed. "
                         + PLUMED_INSTALL_HINT) from None
    try:
        return plumed.Plumed(kernel=kernel_path)
    except RuntimeError as exc:
        raise InputError(f"the PLUMED kernel {kernel_path!r} could not be loaded ({exc}). "
                         + PLUMED_INSTALL_HINT) from None


def _input_lines(inp) -> list:
    text = str(inp)
    if "\n" not in text and os.path.exists(text):
        text = Path(text).read_text()
    lines = [ln.strip() for ln in text.split("\n")]
    return [ln for ln in lines if ln and not ln.startswith("#")]


class _Replica:
    """One PLUMED instance with persistent contiguous float64 buffers."""

    def __init__(self, kernel, lines, n_atoms, timestep, kT, log_file, restart, work_dir):
        self.n_atoms = n_atoms
        self.positions = np.zeros((n_atoms, 3), dtype=np.float64)
        self.masses = np.zeros(n_atoms, dtype=np.float64)
        self.charges = np.zeros(n_atoms, dtype=np.float64)
        self.forces = np.zeros((n_atoms, 3), dtype=np.float64)
        self.scratch_forces = np.zeros((n_atoms, 3), dtype=np.float64)
        self.virial = np.zeros((3, 3), dtype=np.float64)
        self.scratch_virial = np.zeros((3, 3), dtype=np.float64)
        self.box = np.zeros((3, 3), dtype=np.float64)
        self.bias = np.zeros(1, dtype=np.float64)
        self.work_dir = None if work_dir is None else os.path.abspath(work_dir)
        p = _new_plumed(kernel)
        cwd = os.getcwd()
        try:
            if work_dir is not None:
                os.chdir(work_dir)  # PLUMED opens its files relative to the working directory
            p.cmd("setMDEngine", "fesurf")
            p.cmd("setNatoms", int(n_atoms))
            p.cmd("setMDLengthUnits", LENGTH_UNIT_NM)
            p.cmd("setMDEnergyUnits", ENERGY_UNIT_KJMOL)
            p.cmd("setMDTimeUnits", TIME_UNIT_PS)
            p.cmd("setMDMassUnits", 1.0)
            p.cmd("setMDChargeUnits", 1.0)
            p.cmd("setTimestep", float(timestep))
            p.cmd("setKbT", float(kT))
            p.cmd("setLogFile", log_file)
            p.cmd("setRestart", int(bool(restart)))
            p.cmd("init")
            for ln in lines:
                p.cmd("readInputLine", ln)
        except Exception as exc:
            p.finalize()
            raise InputError(f"PLUMED rejected the input: {exc}") from None
        finally:
            os.chdir(cwd)
        self.plumed = p

    def evaluate(self, step, pos, masses, charges, box, update):
        if self.work_dir is None:
            return self._evaluate(step, pos, masses, charges, box, update)
        # PLUMED resolves file names against the process's working directory at every write (METAD
        # re-opens HILLS), so it runs inside work_dir
        cwd = os.getcwd()
        os.chdir(self.work_dir)
        try:
            return self._evaluate(step, pos, masses, charges, box, update)
        finally:
            os.chdir(cwd)

    def _evaluate(self, step, pos, masses, charges, box, update):
        p = self.plumed
        self.positions[...] = pos
        self.masses[...] = masses
        self.charges[...] = charges
        forces = self.forces if update else self.scratch_forces
        virial = self.virial if update else self.scratch_virial
        forces.fill(0.0)
        virial.fill(0.0)
        p.cmd("setStep", int(step))
        self.box[...] = 0.0 if box is None else box  # a zero box: no periodicity
        p.cmd("setBox", self.box)
        p.cmd("setMasses", self.masses)
        p.cmd("setCharges", self.charges)
        p.cmd("setPositions", self.positions)
        p.cmd("setForces", forces)
        p.cmd("setVirial", virial)
        p.cmd("prepareCalc")
        p.cmd("performCalcNoUpdate")
        if update:
            p.cmd("update")
        p.cmd("getBias", self.bias)
        return float(self.bias[0]), forces.copy(), virial.copy()

    def finalize(self):
        if self.plumed is not None:
            cwd = os.getcwd()
            try:
                if self.work_dir is not None:
                    os.chdir(self.work_dir)
                self.plumed.finalize()
            finally:
                os.chdir(cwd)
            self.plumed = None


class PlumedBias(Potential):
    """A bias computed by PLUMED, one instance per replica (system) of the batch.

    Parameters
    ----------
    plumed_input : str, path, or list of them (one per replica)
        PLUMED input text or file. A single input is used for every replica
        with ``{replica}`` replaced by the replica index (e.g.
        ``FILE=COLVAR.{replica}``); PLUMED's own ``{...}`` braces are left alone.
    timestep : float, fs (the MD timestep; PLUMED's time and PACE use it)
    temperature : float or list, K (``setKbT``; needed by well-tempered METAD)
    kernel : path of ``libplumedKernel.so`` (default ``$PLUMED_KERNEL``)
    n_replicas : number of replicas when one input is shared (default: from the
        first State; fixed afterwards)
    log_file : PLUMED log file name (default: none, os.devnull; "" = stdout; ``{replica}`` allowed)
    restart : start PLUMED with RESTART (append to existing files, read HILLS)
    work_dir : folder where PLUMED reads and writes its files (default: current)

    Attributes after a call: ``last_bias`` [n_systems] (eV), ``last_virial``
    [n_systems, 3, 3] (eV), ``step`` (the next PLUMED step).

    Example (needs a kernel)::

        bias = PlumedBias([window_input(k) for k in range(13)], timestep=2.0, temperature=300.0)
        md = Langevin(Sum([physical, bias]), timestep=2.0, temperature=300.0, friction=0.01, seed=1)
        md.run(state.replicate(13), 1000)

    A growing METAD bias makes the integrator's conserved energy drift by design: raise
    ``max_energy_change`` of the integrator (eV/atom) for metadynamics runs.
        bias.close()
    """

    differentiable = False
    supports_stress = True
    translation_invariant = False  # depends on the PLUMED input; not checked
    rotation_invariant = False

    def __init__(self, plumed_input, timestep: float, temperature, kernel: Optional[str] = None,
                 n_replicas: Optional[int] = None, log_file: Optional[str] = None, restart: bool = False,
                 work_dir=None, _shared=None, _rows=None):
        super().__init__()
        self.last_bias = None
        self.last_virial = None
        if _shared is not None:  # a view on some replicas of another PlumedBias (select_systems)
            self._shared, self._rows = _shared, list(_rows)
            return
        if not (isinstance(timestep, (int, float)) and timestep > 0):
            raise InputError(f"timestep must be a positive number of fs, got {timestep!r}")
        kernel_path = find_kernel(kernel)
        if isinstance(plumed_input, (list, tuple)):
            inputs = [_input_lines(x) for x in plumed_input]
            if not inputs:
                raise InputError("plumed_input is an empty list; give one input per replica")
            if n_replicas is not None and int(n_replicas) != len(inputs):
                raise InputError(f"n_replicas={n_replicas} but {len(inputs)} inputs were given")
        else:
            inputs = _input_lines(plumed_input)
            if not inputs:
                raise InputError("plumed_input is empty; give PLUMED input text or a file path")
        if work_dir is not None:
            Path(work_dir).mkdir(parents=True, exist_ok=True)
        self._shared = {"kernel": kernel_path, "inputs": inputs, "timestep": float(timestep),
                        "temperature": temperature, "log_file": os.devnull if log_file is None else str(log_file), "restart": bool(restart),
                        "work_dir": None if work_dir is None else str(work_dir), "replicas": None,
                        "n_replicas": None if n_replicas is None else int(n_replicas), "step": 0,
                        "cache": None}
        self._rows = None

    # ----------------------------------------------------------- set-up
    def _ensure(self, state: State):
        sh = self._shared
        counts = state.atoms_per_system.tolist()
        if sh["replicas"] is None:
            n = len(sh["inputs"]) if isinstance(sh["inputs"][0], list) else (sh["n_replicas"] or len(counts))
            if len(counts) != n or self._rows is not None:
                raise InputError(f"the PLUMED bias has {n} replicas but the State has {len(counts)} systems; "
                                 "give one PLUMED input per system")
            temps = np.broadcast_to(np.asarray(sh["temperature"], dtype=np.float64), (n,))
            if not np.all(temps > 0):
                raise InputError(f"temperature must be positive (K), got {sh['temperature']!r}")
            reps = []
            try:
                for i in range(n):
                    lines = sh["inputs"][i] if isinstance(sh["inputs"][0], list) else \
                        [ln.replace("{replica}", str(i)) for ln in sh["inputs"]]
                    reps.append(_Replica(sh["kernel"], lines, counts[i], sh["timestep"], KB * temps[i],
                                         sh["log_file"].replace("{replica}", str(i)), sh["restart"], sh["work_dir"]))
            except Exception:
                for r in reps:
                    r.finalize()
                raise
            sh["replicas"] = reps
        rows = self._rows if self._rows is not None else list(range(len(sh["replicas"])))
        if len(rows) != len(counts):
            raise InputError(f"the PLUMED bias has {len(rows)} replicas but the State has {len(counts)} systems")
        for r, c in zip(rows, counts):
            if sh["replicas"][r].n_atoms != c:
                raise InputError(f"PLUMED replica {r} was set up for {sh['replicas'][r].n_atoms} atoms, "
                                 f"the State's system has {c}")
        return rows

    @property
    def step(self) -> int:
        """The PLUMED step the next MD-step evaluation will use."""
        return self._shared["step"]

    def select_systems(self, systems) -> "PlumedBias":
        rows = self._rows if self._rows is not None else None
        systems = [int(i) for i in torch.as_tensor(systems).reshape(-1).tolist()]
        if rows is None:
            reps = self._shared["replicas"]
            n = len(reps) if reps is not None else (len(self._shared["inputs"]) if isinstance(
                self._shared["inputs"][0], list) else self._shared["n_replicas"])
            if n is None:
                raise InputError("select_systems needs the PLUMED bias set up first (call it on the full State once)")
            rows = list(range(n))
        return PlumedBias(None, 1.0, None, _shared=self._shared, _rows=[rows[i] for i in systems])

    # ----------------------------------------------------------- evaluation
    def _run(self, state: State, update: bool, rows_override=None):
        rows = self._ensure(state)
        if rows_override is not None:
            rows = rows_override
        pos = state.positions.detach().cpu().double().numpy()
        masses = state.masses.detach().cpu().double().numpy()
        charges = np.zeros(state.n_atoms)
        cells = None if state.cell is None else state.cell.detach().cpu().double().numpy()
        step = self._shared["step"]
        energies = np.zeros(len(rows))
        forces = np.zeros_like(pos)
        virials = np.zeros((len(rows), 3, 3))
        for i, ((a, b), r) in enumerate(zip(state.atom_slices(), rows)):
            box = None if cells is None or not bool(state.pbc[i].any()) else cells[i]
            e, f, v = self._shared["replicas"][r].evaluate(step, pos[a:b], masses[a:b], charges[a:b], box, update)
            energies[i] = e
            forces[a:b] = f
            virials[i] = v
        return energies, forces, virials

    def energy_and_forces(self, state: State, create_graph: bool = False):
        """One MD step of PLUMED: bias energy [n_systems] (eV) and forces [n_atoms, 3] (eV/A).

        Updates PLUMED (PRINT, METAD deposition) and advances its step, unless
        the positions equal those of the previous call, whose result is returned.
        """
        if create_graph:
            raise InputError("a PLUMED bias is not differentiable by autograd (create_graph=True)")
        sh = self._shared
        key = state.positions.detach().cpu().double().numpy()
        cache = sh["cache"]
        if cache is not None and cache[0] == self._rows and cache[1].shape == key.shape and np.array_equal(cache[1], key):
            e, f, v = cache[2]
        else:
            e, f, v = self._run(state, update=True)
            sh["step"] += 1
            sh["cache"] = (self._rows, key.copy(), (e, f, v))
        self.last_bias = torch.as_tensor(e, dtype=state.dtype)
        self.last_virial = torch.as_tensor(v, dtype=state.dtype)
        return (torch.as_tensor(e, dtype=state.dtype, device=state.device),
                torch.as_tensor(f, dtype=state.dtype, device=state.device))

    def energy(self, state: State) -> torch.Tensor:
        """Bias energies [n_systems] (eV) without updating PLUMED (no PRINT, no hill)."""
        e, _, _ = self._run(state, update=False)
        return torch.as_tensor(e, dtype=state.dtype, device=state.device)

    def forces_no_update(self, state: State) -> torch.Tensor:
        """Bias forces [n_atoms, 3] (eV/A) without updating PLUMED."""
        _, f, _ = self._run(state, update=False)
        return torch.as_tensor(f, dtype=state.dtype, device=state.device)

    def virial(self, state: State) -> torch.Tensor:
        """PLUMED's bias virial [n_systems, 3, 3] (eV) without updating; stress = virial / volume (ASE sign)."""
        _, _, v = self._run(state, update=False)
        return torch.as_tensor(v, dtype=state.dtype)

    def stress(self, state: State) -> torch.Tensor:
        """Bias stress [n_systems, 3, 3] (eV/A^3, ASE sign): PLUMED's virial / cell volume. Needs a cell."""
        if state.cell is None:
            raise InputError("stress needs a cell; PLUMED's virial alone is available from virial()")
        volume = torch.linalg.det(state.cell).abs()
        return self.virial(state) / volume[:, None, None]

    def cross_energies(self, state: State) -> torch.Tensor:
        """``[n_replicas, n_systems]``: bias of every replica's PLUMED at every system's configuration (eV).

        No update. This is what u_kn needs for MBAR over PLUMED-biased windows.
        All systems must have the same number of atoms.
        """
        rows = self._ensure(state) if self._rows is None else self._rows
        n_rep = len(self._shared["replicas"]) if self._rows is None else len(self._rows)
        out = np.zeros((n_rep, state.n_systems))
        for k in range(n_rep):
            r = rows[k] if self._rows is not None else k
            out[k], _, _ = self._run(state, update=False, rows_override=[r] * state.n_systems)
        return torch.as_tensor(out, dtype=state.dtype)

    def close(self):
        """Finalize every PLUMED instance (flushes and closes COLVAR/HILLS files)."""
        reps = self._shared.get("replicas")
        if reps:
            for r in reps:
                r.finalize()
        self._shared["replicas"] = None

    def __del__(self):
        try:
            if getattr(self, "_rows", 0) is None:
                self.close()
        except Exception:
            pass


class PlumedUmbrellaRecorder:
    """A reporter recording PLUMED-biased umbrella frames into a SampleSet.

    Every ``stride`` steps: CV values (fesurf ``cvs``, their units), and
    ``u_kn = beta * cross_energies`` (the bias of every window's PLUMED at
    every replica's configuration, kT), with ``u_ref = 0`` (the unbiased state).

    >>> rec = PlumedUmbrellaRecorder.__doc__ is not None
    """

    def __init__(self, bias: PlumedBias, cvs, temperature: float, stride: int = 10, skip_steps: int = 0):
        from ..cv import as_cv_list

        self.bias, self.cvs = bias, as_cv_list(cvs)
        self.beta = 1.0 / (KB * float(temperature))
        self.temperature = float(temperature)
        self.stride, self.skip_steps = int(stride), int(skip_steps)
        self._si, self._u, self._cv, self._step, self._ebias = [], [], [], [], []

    def report(self, step, state, info):
        if step < self.skip_steps:
            return
        from ..cv import evaluate_cvs

        u = self.bias.cross_energies(state).numpy() * self.beta
        self._u.append(u)
        self._si.append(np.arange(state.n_systems))
        self._cv.append(evaluate_cvs(self.cvs, state).detach().numpy())
        self._step.append(np.full(state.n_systems, step))
        self._ebias.append(np.diag(u) / self.beta)

    def sampleset(self, path=None):
        """The recorded frames as a SampleSet (frames grouped by window)."""
        from ..sampling.sampleset import SampleSet

        if not self._u:
            raise InputError("no frames recorded; run the integrator with this reporter first")
        si = np.concatenate(self._si)
        order = np.argsort(si, kind="stable")
        u = np.concatenate(self._u, axis=1)[:, order]
        return SampleSet.from_arrays(
            state_index=si[order], u_kn=u, temperature=self.temperature, cv=np.concatenate(self._cv)[order],
            u_ref=np.zeros(si.size), step=np.concatenate(self._step)[order],
            cv_definitions=[dict(c.to_spec(), name=c.label()) for c in self.cvs],
            attrs={"source": "PlumedBias", "bias_energy_eV": np.concatenate(self._ebias)[order].tolist()}, path=path)


def plumed_ase_calculator(potential, plumed_input, atoms, timestep: float, temperature: float,
                          log: str = "", restart: bool = False, kernel: Optional[str] = None):
    """A fesurf Potential inside ASE's ``ase.calculators.plumed.Plumed`` calculator.

    Parameters
    ----------
    potential : fesurf Potential (a surrogate, an analytic model...), wrapped by
        :class:`fesurf.potentials.ase_bridge.FesurfCalculator`
    plumed_input : PLUMED input text, file or list of lines (PLUMED units: nm, kJ/mol, ps)
    atoms : ase.Atoms the calculator is attached to (``atoms.calc`` is set)
    timestep : fs (ASE's Plumed wants ASE time units; converted here)
    temperature : K; passed as ``kT = temperature * ase.units.kB`` (ASE's default kT is 1 eV, ~11600 K)
    kernel : path of libplumedKernel.so (default ``$PLUMED_KERNEL``); set into the environment
        because ASE creates ``plumed.Plumed()`` itself

    Note: ASE's calculator advances PLUMED's step on every evaluation, so use
    one evaluation per MD step (ASE's dynamics do).
    """
    from ase import units as ase_units
    from ase.calculators.plumed import Plumed

    from ..potentials.ase_bridge import FesurfCalculator

    path = find_kernel(kernel)
    os.environ["PLUMED_KERNEL"] = path
    lines = plumed_input if isinstance(plumed_input, (list, tuple)) else _input_lines(plumed_input)
    calc = Plumed(calc=FesurfCalculator(potential), input=list(lines), timestep=float(timestep) * ase_units.fs,
                  atoms=atoms, kT=float(temperature) * ase_units.kB, log=log, restart=restart)
    atoms.calc = calc
    return calc
