"""Save/load surrogates as a state dict plus a JSON config, and TorchScript export.

The file is ``torch.save({"format": ..., "config": <JSON string>, "state_dict": ...})``
and is read with ``torch.load(..., weights_only=True)``: only tensors and
plain containers are accepted, so a crafted pickle is refused. A readable
copy of the config is written next to it (``<name>.json``). A committee's
spread calibration (``model.calibration``, from :func:`fesurf.training.calibrate`)
is stored as the JSON key ``calibration`` with the SHA-1 of the weights it
belongs to, and restored (and checked) on loading.

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
    if kind == "LongRangeModel":
        from .long_range import LongRangeModel

        return LongRangeModel(**cfg)
    raise InputError(f"unknown model type {kind!r} in the config")


def save_model(model, path, metadata: dict | None = None) -> None:
    """Write ``model`` (state dict + JSON config; optional JSON-able ``metadata``) to ``path``.

    A calibrated committee (``model.calibration``, see :func:`fesurf.training.calibrate`) keeps
    its spread calibration factors in the file (key ``calibration``, JSON, with the SHA-1 of the
    weights they belong to); :func:`load_model` restores them."""
    path = Path(path)
    config = model.config()
    check = getattr(model, "checked_calibration", None)
    calibration = check() if check is not None else None  # refuses factors of older weights
    payload = {"format": FORMAT, "config": json.dumps(config), "metadata": json.dumps(metadata or {}),
               "dtype": str(model.model_dtype).replace("torch.", ""),
               "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
    readable = {"config": config, "metadata": metadata or {}}
    if calibration is not None:
        payload["calibration"] = json.dumps(calibration)
        readable["calibration"] = calibration
    torch.save(payload, path)
    path.with_suffix(".json").write_text(json.dumps(readable, indent=1))


def _restore_calibration(model, payload: dict, path) -> None:
    """Attach the stored spread calibration (if any) after checking it belongs to the loaded weights."""
    raw = payload.get("calibration")
    if raw is None:
        return
    try:
        cal = json.loads(raw)
    except (TypeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: its calibration entry is not valid JSON ({exc}); the file is damaged") from None
    if not isinstance(cal, dict) or not hasattr(model, "set_calibration"):
        raise InputError(f"{path}: its calibration entry is not a dict of factors; the file is damaged")
    try:
        fingerprint = cal.pop("weights_sha1")
        factors = cal.pop("energy_std_factor"), cal.pop("force_deviation_factor")
    except KeyError as exc:
        raise InputError(f"{path}: its calibration entry lacks {exc}; the file is damaged") from None
    try:
        model.set_calibration(*factors, **cal)
    except InputError as exc:
        raise InputError(f"{path}: its calibration entry is invalid ({exc}); the file is damaged") from None
    if model.calibration["weights_sha1"] != fingerprint:
        raise InputError(f"{path}: its spread calibration belongs to other weights than the stored ones (the file "
                         "was edited); recalibrate with fesurf.training.calibrate and save again")


def read_weights_file(path, what: str = "model file") -> dict:
    """``torch.load(path, weights_only=True)`` with errors that say what is wrong with the file.

    A missing, truncated, foreign or pickle-carrying file is an InputError naming it.
    """
    import zipfile

    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        if "Weights only load failed" in first or "GLOBAL" in str(exc):
            raise InputError(f"refused to load {path}: it holds objects other than tensors and plain data, so it "
                             "is not a fesurf model file. Only load files written by fesurf.surrogates.save_model "
                             "from a source you trust.") from None
        raise InputError(f"{path} is not a fesurf {what} (not a torch file: {first[:120]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError) as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path} is not a readable fesurf {what}: it is truncated, damaged or of another kind "
                         f"({reason})") from None
    if not isinstance(payload, dict):
        raise InputError(f"{path} is not a fesurf {what} (it holds a {type(payload).__name__}, not a dict)")
    return payload


def check_finite_parameters(model, path) -> None:
    """InputError when any parameter or buffer of ``model`` (loaded from ``path``) is NaN or inf."""
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise InputError(f"{path}: the weights hold non-finite values (NaN or inf) in {name}; the model was "
                             "saved after a diverged training run. Retrain it or use an earlier checkpoint")


def load_model(path, return_metadata: bool = False):
    """Load a model written by :func:`save_model` (``weights_only=True``; pickled objects are refused).

    A truncated or foreign file, a config that does not match the stored weights, or non-finite weights
    raise :class:`~fesurf.errors.InputError` naming the file.

    >>> # model = load_model("committee.pt")
    """
    payload = read_weights_file(path)
    if payload.get("format") != FORMAT:
        raise InputError(f"{path} is not a fesurf surrogate file (format {FORMAT}; found "
                         f"{payload.get('format', 'no format key')!r})")
    try:
        config = json.loads(payload["config"])
        metadata = json.loads(payload.get("metadata", "{}"))
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: its config is missing or not valid JSON ({exc}); the file is damaged") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: its config is not a JSON object; the file is damaged")
    try:
        model = model_from_config(config)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: its config cannot build a model ({type(exc).__name__}: {exc})") from None
    dtype = payload.get("dtype", "float64")
    if dtype not in ("float64", "float32"):
        raise InputError(f"{path}: unknown dtype {dtype!r} (float64 or float32)")
    model = model.to(getattr(torch, dtype))
    state_dict = payload.get("state_dict")
    if not isinstance(state_dict, dict):
        raise InputError(f"{path} holds no state_dict; the file is damaged")
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:4] or lines[:1])[:300]
        raise InputError(f"{path}: the stored weights do not match its config ({detail}); the file was edited or "
                         "written by an incompatible version") from None
    check_finite_parameters(model, path)
    _restore_calibration(model, payload, path)
    model.eval()
    if return_metadata:
        return model, metadata
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
