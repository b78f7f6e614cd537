"""Save/load surrogates as a state dict plus a JSON config, and TorchScript export.

The file is ``torch.save({"format": ..., "config": <JSON string>, "state_dict": ...})``
and is read with ``torch.load(..., weights_only=True)``: only tensors and
plain containers are accepted, so a crafted pickle is refused. A readable
copy of the config is written next to it (``<name>.json``).

Example
-------
>>> import tempfile, os
>>> from fesurf.surrogates import BehlerParrinello, save_model, load_model
>>> path = os.path.join(tempfile.mkdtemp(), "bp.pt")
>>> save_model(BehlerParrinello([1, 8], hidden=(8,)), path)
>>> type(load_model(path)).__name__
'BehlerParrinello'
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch

from ..errors import InputError

FORMAT = "fesurf-surrogate-v1"


def model_from_config(config: dict):
    """Build an untrained model from its JSON config."""
    from .bp import BehlerParrinello
    from .schnet import Committee, SchNet

    cfg = dict(config)
    kind = cfg.pop("type", None)
    if kind == "BehlerParrinello":
        return BehlerParrinello(**cfg)
    if kind == "SchNet":
        return SchNet(**cfg)
    if kind == "Committee":
        return Committee([model_from_config(c) for c in cfg["members"]])
    raise InputError(f"unknown model type {kind!r} in the config")


def save_model(model, path, metadata: dict | None = None) -> None:
    """Write ``model`` (state dict + JSON config; optional JSON-able ``metadata``) to ``path``."""
    path = Path(path)
    config = model.config()
    payload = {"format": FORMAT, "config": json.dumps(config), "metadata": json.dumps(metadata or {}),
               "dtype": str(model.model_dtype).replace("torch.", ""),
               "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
    torch.save(payload, path)
    path.with_suffix(".json").write_text(json.dumps({"config": config, "metadata": metadata or {}}, indent=1))


def load_model(path, return_metadata: bool = False):
    """Load a model written by :func:`save_model` (``weights_only=True``; pickled objects are refused)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"model file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(f"refused to load {path}: it holds objects other than tensors and plain data "
                         f"(weights_only loading failed: {str(exc).splitlines()[0]}). Only load model files "
                         "written by fesurf.surrogates.save_model from a source you trust.") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path} is not a fesurf surrogate file (format {FORMAT})")
    model = model_from_config(json.loads(payload["config"]))
    model = model.to(getattr(torch, payload.get("dtype", "float64")))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    if return_metadata:
        return model, json.loads(payload["metadata"])
    return model


class _ScriptableEnergy(torch.nn.Module):
    """Energy of one non-periodic molecule from positions [n, 3] (all pairs), for TorchScript."""

    def __init__(self, model, numbers):
        super().__init__()
        from ..state import State

        self.model = model
        self.register_buffer("numbers", torch.as_tensor(numbers, dtype=torch.long))
        self._state_cls = State

    def forward(self, positions):
        state = self._state_cls(positions=positions, atomic_numbers=self.numbers, validate=False)
        state.system_index = torch.zeros(positions.shape[0], dtype=torch.long)
        state.pbc = torch.zeros(1, 3, dtype=torch.bool)
        return self.model.energy(state)


def export_torchscript(model, numbers, path, example_positions=None) -> None:
    """Export energy(positions) of a molecule with the given atomic numbers to TorchScript.

    The traced module takes positions ``[n_atoms, 3]`` (Angstrom, model dtype)
    and returns ``[1]`` energy (eV); forces follow by autograd in the host
    engine (``torch.jit.load(path)``). Traced for this atom count and element
    order.
    """
    numbers = torch.as_tensor(numbers, dtype=torch.long)
    if example_positions is None:
        example_positions = torch.randn(len(numbers), 3, generator=torch.Generator().manual_seed(0),
                                        dtype=model.model_dtype) * 1.5
    wrapper = _ScriptableEnergy(model, numbers).eval()
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, (example_positions.to(model.model_dtype),), check_trace=False)
    traced.save(str(path))
