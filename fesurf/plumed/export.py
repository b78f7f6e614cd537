"""TorchScript export of fesurf CVs and surrogates in the form PLUMED's PYTORCH_MODEL loads.

PLUMED's ``PYTORCH_MODEL FILE=model.ptc ARG=a1,a2,...`` feeds a float32
tensor of shape ``(1, n_args)`` (CPU) to a TorchScript module and reads a
float32 ``(1, n_out)`` output as components ``node-0``, ``node-1``...; it
takes derivatives by autograd. A float64 model fails to load there.

For a CV or a potential of atomic positions, the PLUMED arguments are the
Cartesian components of ``POSITION ATOM=i NOPBC`` actions, in nm. The exported
module converts nm -> Angstrom, evaluates the fesurf model in float64 on a
fixed molecule (atomic numbers and masses baked in), and converts the result
to PLUMED units (CV: nm**length_power or rad; energy: kJ/mol). The module is
traced (``torch.jit.trace``), so models with data-dependent branches (e.g. a
neighbour cutoff that changes the pair list) are checked on perturbed
geometries and refused if the trace disagrees with the eager model.

Example
-------
>>> import tempfile, os, torch
>>> from fesurf.cv import DISTANCE
>>> from fesurf.state import State
>>> s = State(positions=[[0.0, 0, 0], [1.5, 0, 0]], atomic_numbers=[8, 1])
>>> path = os.path.join(tempfile.mkdtemp(), "d.ptc")
>>> lines = export_cv(DISTANCE([0, 1]), s, path)
>>> m = torch.jit.load(path)
>>> round(float(m(torch.tensor([[0.0, 0, 0, 0.15, 0, 0]]))[0, 0]), 6)   # nm in, nm out
0.15
>>> lines[-1].startswith("cv: PYTORCH_MODEL FILE=")
True
"""
from __future__ import annotations

import copy
import logging
import warnings
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..state import State
from ..units import convert

__all__ = ["export_cv", "export_potential", "export_module", "position_lines"]

log = logging.getLogger(__name__)

NM_TO_A = 10.0
EV_TO_KJMOL = convert(1.0, "eV", "kJ/mol")


class _PositionsModel(torch.nn.Module):
    def __init__(self, fn: torch.nn.Module, template: State, out_scale: float, method: str = "forward"):
        super().__init__()
        self.fn = fn
        self.method = method
        self.template = template
        self.out_scale = float(out_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = x.reshape(-1, 3).to(torch.float64) * NM_TO_A
        value = getattr(self.fn, self.method)(self.template.replace(positions=pos))
        return (value.reshape(1, -1) * self.out_scale).to(torch.float32)


class _FloatModel(torch.nn.Module):
    def __init__(self, module, dtype):
        super().__init__()
        self.module = module
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.to(self.dtype)).reshape(1, -1).to(torch.float32)


def position_lines(n_atoms: int, atoms: Optional[Sequence[int]] = None, prefix: str = "pos"):
    """PLUMED ``POSITION`` lines for atoms (0-based; default all) and the ARG list (x, y, z per atom).

    >>> position_lines(2)
    (['pos1: POSITION ATOM=1 NOPBC', 'pos2: POSITION ATOM=2 NOPBC'], ['pos1.x', 'pos1.y', 'pos1.z', 'pos2.x', 'pos2.y', 'pos2.z'])
    """
    atoms = list(range(n_atoms)) if atoms is None else [int(a) for a in atoms]
    lines, args = [], []
    for a in atoms:
        lines.append(f"{prefix}{a + 1}: POSITION ATOM={a + 1} NOPBC")
        args += [f"{prefix}{a + 1}.{c}" for c in "xyz"]
    return lines, args


def _single(state: State) -> State:
    if not isinstance(state, State):
        raise InputError("give a fesurf State of one molecule (e.g. State.from_atoms(atoms)) as the template")
    if state.n_systems != 1:
        state = state.select(0)
    if state.is_periodic:
        raise InputError("export of periodic systems is not supported: PLUMED POSITION NOPBC gives unwrapped "
                         "coordinates but the box is not passed to PYTORCH_MODEL")
    return state.to(dtype=torch.float64)


def _trace_and_check(wrapper, example, path, n_check, seed, jitter):
    # PLUMED differentiates with respect to the input only: trace a frozen copy (weights as constants)
    wrapper = copy.deepcopy(wrapper).eval()
    for p in wrapper.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        eager0 = wrapper(example)
    if not torch.isfinite(eager0).all():
        raise InputError("the model is not finite at the template geometry; give a sensible template")
    with warnings.catch_warnings():
        # the tracer warns about every Python-level constant; the trace is checked below instead
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(wrapper, example, check_trace=False)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n_check):
        x = example + jitter * torch.randn(example.shape, generator=gen, dtype=example.dtype)
        with torch.no_grad():
            a, b = wrapper(x), traced(x)
        if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-5, atol=1e-6):
            raise InputError("the traced TorchScript model disagrees with the model on a perturbed geometry "
                             "(data-dependent control flow, e.g. a cutoff changing the pair list); export a model "
                             "without such branches")
    traced.save(str(path))
    return traced


def export_cv(cv, template: State, path, atoms: Optional[Sequence[int]] = None, label: str = "cv",
              n_check: int = 5, seed: int = 0):
    """Export a fesurf CV as a PYTORCH_MODEL file taking atomic positions (nm) and returning the CV.

    Parameters
    ----------
    cv : fesurf CV (or spec dict)
    template : State of one molecule (atomic numbers, masses; its positions are the trace example)
    path : output ``.ptc`` file
    atoms : 0-based atoms fed to the model (default: all atoms of the template)
    label : PLUMED label of the PYTORCH_MODEL action (its value is ``label.node-0``)
    n_check, seed : perturbed geometries on which trace and model must agree

    Returns
    -------
    list of PLUMED input lines (POSITION actions and the PYTORCH_MODEL line).
    Output unit: nm**cv.length_power (distances in nm) or rad.
    """
    from ..cv import cv_from_spec

    cv = cv_from_spec(cv)
    state = _single(template)
    p = cv.length_power
    if p is None:
        raise InputError(f"{cv.label()} mixes units; export its parts separately")
    fn = _subset(cv, state, atoms)
    wrapper = _PositionsModel(fn, state, 0.1 ** p)
    lines, args = position_lines(state.n_atoms, atoms)
    example = _example(state, atoms)
    _trace_and_check(wrapper, example, path, n_check, seed, jitter=0.002)
    return lines + [f"{label}: PYTORCH_MODEL FILE={path} ARG={','.join(args)}"]


def export_potential(potential, template: State, path, label: str = "model", as_bias: bool = False,
                     n_check: int = 5, seed: int = 0):
    """Export a fesurf Potential (a trained surrogate) as a PYTORCH_MODEL: positions (nm) -> energy (kJ/mol).

    ``as_bias=True`` adds ``BIASVALUE ARG=label.node-0`` so PLUMED applies it as a
    bias (e.g. a correction surface added to an MD engine's force field).
    Returns the PLUMED input lines.
    """
    from ..potentials.base import Potential

    if not isinstance(potential, Potential):
        raise InputError("export_potential needs a fesurf Potential")
    if not potential.differentiable:
        raise InputError(f"{type(potential).__name__} is not differentiable by autograd; PLUMED needs derivatives")
    state = _single(template)
    wrapper = _PositionsModel(potential, state, EV_TO_KJMOL, method="energy")
    lines, args = position_lines(state.n_atoms)
    _trace_and_check(wrapper, _example(state, None), path, n_check, seed, jitter=0.002)
    lines = lines + [f"{label}: PYTORCH_MODEL FILE={path} ARG={','.join(args)}"]
    if as_bias:
        lines.append(f"BIASVALUE ARG={label}.node-0")
    return lines


def export_module(module: torch.nn.Module, n_inputs: int, path, example=None, dtype=torch.float64,
                  n_check: int = 5, seed: int = 0):
    """Export any torch module f: (1, n_inputs) -> (1, n_out) of CV values (a learned CV, mlcolvar style).

    Inputs arrive as float32 (PLUMED's arguments, in PLUMED units); the module
    runs in ``dtype`` and the output is cast to float32. Returns the traced module.
    """
    n_inputs = int(n_inputs)
    if n_inputs < 1:
        raise InputError("n_inputs must be >= 1")
    wrapper = _FloatModel(module.to(dtype), dtype)
    ex = torch.zeros(1, n_inputs, dtype=torch.float32) if example is None else \
        torch.as_tensor(example, dtype=torch.float32).reshape(1, n_inputs)
    return _trace_and_check(wrapper, ex, path, n_check, seed, jitter=0.01)


def _example(state, atoms):
    pos = state.positions if atoms is None else state.positions[list(atoms)]
    return (pos.reshape(1, -1) / NM_TO_A).to(torch.float32)


def _subset(cv, state, atoms):
    """The CV as a function of a State holding only ``atoms`` (indices renumbered)."""
    if atoms is None:
        return cv
    atoms = [int(a) for a in atoms]
    missing = sorted(set(cv.atom_indices()) - set(atoms))
    if missing:
        raise InputError(f"the CV uses atoms {missing} that are not in atoms={atoms}")
    full = state.positions.detach().clone()
    idx = torch.as_tensor(atoms)

    class _Sub(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cv = cv

        def forward(self, sub_state):
            pos = full.to(sub_state.positions.dtype).index_put((idx,), sub_state.positions)
            return self.cv(state.replace(positions=pos))

    return _Sub()
