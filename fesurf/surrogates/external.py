"""Bring-your-own ML potentials: MACE models and TorchSim models as batched fesurf Potentials.

Three adapters, each evaluating every system of a batched :class:`~fesurf.state.State` (all umbrella
windows, beads, walkers) in one model call:

* :class:`MACEPotential` wraps a ``mace-torch`` model (``ScaleShiftMACE``/``MACE``) directly: fesurf
  builds the graph (``fesurf.neighbors`` pairs, both directions, cell shifts differentiable in the cell),
  MACE returns the energy, and forces (and stress) come from autograd, so a MACE model trains, mixes
  and biases like any fesurf surrogate.
* :class:`TorchSimPotential` wraps any TorchSim ``ModelInterface`` (package ``torch-sim-atomistic``:
  MACE, SevenNet, Orb, Fairchem, MatterSim, metatomic, ...). TorchSim models return detached forces,
  so this adapter supplies exact forces (``differentiable = False``): fine for sampling, not for
  force matching.
* :class:`ExternalCommittee` averages several such Potentials and reports their spread
  (:meth:`ExternalCommittee.predict` has the keys of :meth:`fesurf.surrogates.base.AtomisticModel.predict`).

Model files. :func:`save_mace` writes a MACE model as a JSON config plus a state dict, read back by
:func:`load_mace` with ``torch.load(..., weights_only=True)``, like every fesurf model file. MACE's own
``.model`` files are pickled modules; fesurf does not unpickle them implicitly:
:func:`convert_mace_model` converts one once (it unpickles: use it only for a file you trust).
TorchScript archives (MACE's ``*_compiled.model``) load with ``torch.jit.load``. Nothing is downloaded.

Config specs (``surrogate.model``), resolved by :func:`load_model`:

* ``"mace:PATH"`` — a MACE file; ``"mace:A.pt,B.pt,C.pt"`` — a committee of MACE models;
* ``"torchsim:mace:PATH"`` — the same file through TorchSim's ``MaceModel``;
* ``"torchsim:package.module:factory"`` — ``factory()`` returns a TorchSim ``ModelInterface``;
* anything else: a fesurf model file (:func:`fesurf.surrogates.io.load_model`).

Importing ``mace`` sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for the whole process (MACE needs it
to read e3nn's constants); :func:`import_mace` imports it and restores the variable afterwards.

Units: eV, Angstrom (fesurf's, which are MACE's and TorchSim's).

Example
-------
>>> from fesurf.surrogates.external import small_mace, MACEPotential        # doctest: +SKIP
>>> pot = MACEPotential(small_mace([1, 6, 8], seed=0))                       # doctest: +SKIP
>>> pot.energy(State.from_atoms(malonaldehyde()).replicate(16)).shape        # doctest: +SKIP
torch.Size([16])
"""
from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import InputError
from ..potentials.base import Potential
from ..state import State

log = logging.getLogger(__name__)

MACE_FORMAT = "fesurf-mace-v1"
#: modules from which a MACE config may name classes and functions (nothing else is imported)
_ALLOWED_MODULES = ("mace.", "e3nn.", "torch.nn.functional", "torch.nn.modules.activation", "torch")
SPEC_PREFIXES = ("mace:", "torchsim:")


# ---------------------------------------------------------------------------------------- imports
@contextlib.contextmanager
def _restored_env(name: str):
    before = os.environ.get(name)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def import_mace():
    """``(mace.modules, e3nn.o3)``, imported without leaving MACE's process-wide
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` behind; InputError when ``mace-torch`` is missing."""
    with _restored_env("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"):
        try:
            import mace  # noqa: F401  (sets the variable, then e3nn reads its constants)
            from e3nn import o3
            from mace import modules
        except ImportError as exc:
            raise InputError(f"MACE models need the package mace-torch (pip install mace-torch): {exc}") from None
    return modules, o3


def import_torch_sim(with_mace: bool = False):
    """The ``torch_sim`` module (and, with ``with_mace``, its ``torch_sim.models.mace``), imported with MACE's
    environment side effect contained; InputError when ``torch-sim-atomistic`` is missing."""
    if with_mace:
        import_mace()
    with _restored_env("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"):
        try:
            import torch_sim
            if with_mace:
                import torch_sim.models.mace  # noqa: F401  (imports mace's converters, which set the variable)
        except ImportError as exc:
            raise InputError("TorchSim models need the package torch-sim-atomistic "
                             f"(pip install torch-sim-atomistic): {exc}") from None
    return torch_sim


# ---------------------------------------------------------------------------------------- MACE
def _element_lookup(atomic_numbers: Sequence[int]) -> torch.Tensor:
    zs = [int(z) for z in atomic_numbers]
    table = torch.full((max(zs) + 1,), -1, dtype=torch.long)
    table[torch.as_tensor(zs)] = torch.arange(len(zs))
    return table


def _full_edges(state: State, cutoff: float, dtype):
    """MACE's directed edges (both directions) with Cartesian shifts (differentiable in the cell)."""
    from ..neighbors import neighbor_pairs

    pairs = neighbor_pairs(state, cutoff)
    sender = torch.cat([pairs.i, pairs.j])
    receiver = torch.cat([pairs.j, pairs.i])
    unit = torch.cat([pairs.cell_shifts, -pairs.cell_shifts]).to(dtype)
    if state.cell is not None and state.is_periodic and unit.numel():
        shifts = torch.einsum("pk,pkl->pl", unit, state.cell.to(dtype)[state.system_index[sender]])
    else:
        shifts = torch.zeros_like(unit)
    return torch.stack([sender, receiver]), shifts, unit


class MACEPotential(Potential):
    """A MACE model as a fesurf Potential: one model call for all systems of a State.

    Parameters
    ----------
    model : torch.nn.Module
        A ``mace.modules.ScaleShiftMACE`` / ``MACE`` (or its TorchScript form) with ``r_max`` and
        ``atomic_numbers`` buffers.
    head : int
        Output head of a multi-head model (0 for single-head models).

    Energies in eV, forces in eV/A by autograd through MACE's edge vectors; stress by autograd
    through a strain of positions and cell (periodic systems). The model computes in its own dtype
    (keep float64 for MD); results come back in the State's dtype.

    Example
    -------
    >>> from fesurf.data import malonaldehyde                                  # doctest: +SKIP
    >>> pot = MACEPotential(small_mace([1, 6, 8], seed=0))                      # doctest: +SKIP
    >>> e, f = pot.energy_and_forces(State.from_atoms(malonaldehyde()).replicate(4))   # doctest: +SKIP
    >>> tuple(e.shape), tuple(f.shape)                                          # doctest: +SKIP
    ((4,), (36, 3))
    """

    translation_invariant = True
    rotation_invariant = True
    supports_stress = True
    n_members = 1

    def __init__(self, model: torch.nn.Module, *, head: int = 0):
        super().__init__()
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "r_max") or not hasattr(model, "atomic_numbers"):
            raise InputError("MACEPotential needs a mace-torch model (a torch.nn.Module with r_max and "
                             f"atomic_numbers), got {type(model).__name__}; load one with load_mace(path)")
        self.model = model
        self.r_max = float(model.r_max)
        self.elements = [int(z) for z in torch.as_tensor(model.atomic_numbers).tolist()]
        self.head = int(head)
        self.register_buffer("_lookup", _element_lookup(self.elements), persistent=False)

    @property
    def model_dtype(self) -> torch.dtype:
        for p in self.model.parameters():
            return p.dtype
        return torch.get_default_dtype()

    def _node_attrs(self, state: State, dtype) -> torch.Tensor:
        z = state.atomic_numbers
        bad = (z >= self._lookup.numel()) | (z < 0)
        idx = torch.where(bad, torch.full_like(z, -1), self._lookup[z.clamp(0, self._lookup.numel() - 1)])
        if bool((idx < 0).any()):
            missing = sorted({int(v) for v in z[idx < 0].tolist()})
            raise InputError(f"this MACE model knows elements {self.elements}; the State holds element(s) "
                             f"{missing} it was not trained on")
        return torch.nn.functional.one_hot(idx, len(self.elements)).to(dtype)

    def graph(self, state: State, positions: torch.Tensor) -> dict:
        """MACE's input dict for ``state`` with the given positions (model dtype)."""
        dtype = positions.dtype
        edge_index, shifts, unit = _full_edges(state, self.r_max, dtype)
        counts = state.atoms_per_system
        ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])
        cell = state.cell.to(dtype) if state.cell is not None else torch.zeros(state.n_systems, 3, 3, dtype=dtype)
        data = {"positions": positions, "node_attrs": self._node_attrs(state, dtype), "edge_index": edge_index,
                "shifts": shifts, "unit_shifts": unit, "batch": state.system_index, "ptr": ptr, "cell": cell}
        if self.head:
            data["head"] = torch.full((state.n_systems,), self.head, dtype=torch.long)
        return data

    def energy(self, state: State) -> torch.Tensor:
        """[n_systems] energies, eV (differentiable in positions and cell)."""
        pos = state.positions.to(self.model_dtype)
        if not pos.requires_grad:
            pos = pos.detach()  # MACE sets requires_grad on its input: never on the caller's tensor
        # compute_force=False: MACE returns the energy only; fesurf takes forces (and stress) by autograd
        out = self.model(self.graph(state, pos), training=False, compute_force=False)
        return out["energy"].to(state.dtype)


# ---------------------------------------------------------------------------------------- building
def small_mace(elements: Sequence[int], *, r_max: float = 4.0, channels: int = 16, max_ell: int = 1,
               num_interactions: int = 1, correlation: int = 2, num_bessel: int = 6, mlp: int = 8,
               atomic_energies: Sequence[float] | None = None, scale: float = 1.0, shift: float = 0.0,
               avg_num_neighbors: float = 8.0, seed: int = 0, dtype=torch.float64):
    """A small ``ScaleShiftMACE`` (randomly initialised, seeded) for ``elements`` (atomic numbers).

    ``channels`` x (0e + 1o) hidden features up to ``max_ell``; ``atomic_energies`` (eV, one per
    element in ascending Z) and ``scale``/``shift`` (eV per atom) set MACE's E0s and output scaling
    (:func:`mace_from_dataset` fits them to data).

    >>> model = small_mace([1, 6, 8], seed=0)                                   # doctest: +SKIP
    >>> float(model.r_max)                                                      # doctest: +SKIP
    4.0
    """
    modules, o3 = import_mace()
    zs = sorted(int(z) for z in elements)
    if not zs or len(set(zs)) != len(zs):
        raise InputError(f"elements must be distinct atomic numbers, got {list(elements)}")
    e0 = np.zeros(len(zs)) if atomic_energies is None else np.asarray(atomic_energies, dtype=np.float64)
    if e0.shape != (len(zs),):
        raise InputError(f"atomic_energies needs one value per element {zs}, got {len(e0)}")
    if not r_max > 0 or channels < 1 or max_ell < 0 or num_interactions < 1:
        raise InputError("small_mace needs r_max > 0 (A), channels >= 1, max_ell >= 0, num_interactions >= 1")
    hidden = f"{channels}x0e" + "".join(f"+{channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(1, max_ell + 1))
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    previous = torch.get_default_dtype()
    torch.manual_seed(int(seed))
    try:
        torch.set_default_dtype(dtype)
        model = modules.ScaleShiftMACE(
            r_max=float(r_max), num_bessel=int(num_bessel), num_polynomial_cutoff=5, max_ell=int(max_ell),
            interaction_cls=block, interaction_cls_first=block, num_interactions=int(num_interactions),
            num_elements=len(zs), hidden_irreps=o3.Irreps(hidden), MLP_irreps=o3.Irreps(f"{mlp}x0e"),
            atomic_energies=e0, avg_num_neighbors=float(avg_num_neighbors), atomic_numbers=zs,
            correlation=int(correlation), gate=torch.nn.functional.silu, atomic_inter_scale=float(scale),
            atomic_inter_shift=float(shift))
    finally:
        torch.set_default_dtype(previous)
    return model.to(dtype).eval()


def mace_from_dataset(dataset, *, elements: Sequence[int] | None = None, train_frames=None, seed: int = 0,
                      **kwargs):
    """A :func:`small_mace` whose E0s (least squares per element), output scale (eV per atom) and
    average neighbour count come from ``dataset`` (frames ``train_frames``, default all)."""
    from ..training.fit import fit_element_energies

    sub = dataset if train_frames is None else dataset.subset(train_frames)
    zs = sorted({int(z) for z in sub.numbers.tolist()} if elements is None else {int(z) for z in elements})
    e0 = fit_element_energies(sub, zs).numpy()
    counts = np.zeros((len(sub), len(zs)))
    frame = torch.repeat_interleave(torch.arange(len(sub)), sub.n_atoms).numpy()
    np.add.at(counts, (frame, np.searchsorted(zs, sub.numbers.numpy())), 1)
    resid = sub.energy.numpy() - counts @ e0
    n_mean = float(sub.n_atoms.double().mean())
    scale = max(float(resid.std() / np.sqrt(n_mean)) if len(sub) > 1 else 1.0,
                float(sub.forces.abs().mean()) * 0.1, 1e-3)
    r_max = float(kwargs.get("r_max", 4.0))
    state, _, _ = sub.batch(torch.arange(min(len(sub), 64)))
    from ..neighbors import neighbor_pairs

    avg = 2.0 * neighbor_pairs(state, r_max).i.numel() / state.n_atoms
    return small_mace(zs, atomic_energies=e0, scale=scale, avg_num_neighbors=max(avg, 1.0), seed=seed, **kwargs)


def fit_mace(potential: "MACEPotential", dataset, train_frames, val_frames=None, *, epochs: int = 5,
             batch_size: int = 16, lr: float = 5e-3, force_weight: float = 1.0, energy_weight: float = 1.0,
             seed: int = 0) -> dict:
    """Force-matching fit of a :class:`MACEPotential` (Adam, seeded shuffles; deterministic).

    Loss per batch: ``energy_weight * mean(((E - E_ref)/n_atoms)^2) + force_weight * mean((F - F_ref)^2)``
    (eV^2/atom^2 and (eV/A)^2). Returns ``{"train_loss": [...], "val_force_rmse": [...]}`` per epoch
    (the first ``val_force_rmse`` entry is before training), eV/A.
    """
    if epochs < 0 or batch_size < 1:
        raise InputError(f"epochs must be >= 0 and batch_size >= 1, got {epochs}, {batch_size}")
    train_frames = torch.as_tensor(train_frames, dtype=torch.long)
    gen = torch.Generator().manual_seed(int(seed))
    dtype = potential.model_dtype
    opt = torch.optim.Adam(potential.model.parameters(), lr=lr)
    history = {"train_loss": [], "val_force_rmse": []}

    def val_rmse():
        if val_frames is None:
            return float("nan")
        st, _, f_ref = dataset.batch(torch.as_tensor(val_frames, dtype=torch.long), dtype=dtype)
        _, f = potential.energy_and_forces(st)
        return float(((f - f_ref) ** 2).mean().sqrt())

    history["val_force_rmse"].append(val_rmse())
    for _ in range(int(epochs)):
        order = train_frames[torch.randperm(train_frames.numel(), generator=gen)]
        total, n = 0.0, 0
        for start in range(0, order.numel(), batch_size):
            idx = order[start:start + batch_size]
            st, e_ref, f_ref = dataset.batch(idx, dtype=dtype)
            e, f = potential.energy_and_forces(st, create_graph=True)
            n_at = st.atoms_per_system.to(dtype)
            loss = energy_weight * (((e - e_ref) / n_at) ** 2).mean() + force_weight * ((f - f_ref) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
            n += idx.numel()
        history["train_loss"].append(total / max(n, 1))
        history["val_force_rmse"].append(val_rmse())
        log.info("MACE epoch %d: train loss %.4g, val force RMSE %.4g eV/A", len(history["train_loss"]),
                 history["train_loss"][-1], history["val_force_rmse"][-1])
    potential.model.eval()
    return history


# ---------------------------------------------------------------------------------------- MACE files
def _encode(value):
    """JSON form of a MACE config value: Irreps, classes/functions by import path, arrays as lists."""
    _, o3 = import_mace()
    if isinstance(value, o3.Irreps):
        return {"__irreps__": str(value)}
    if isinstance(value, (np.ndarray, torch.Tensor)):
        arr = value.detach().cpu().numpy() if torch.is_tensor(value) else value
        return {"__array__": arr.tolist(), "dtype": str(arr.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, type) or callable(value):
        module, name = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
        if module is None or name is None:
            raise InputError(f"cannot store the MACE config value {value!r} (no import path)")
        return {"__ref__": f"{module}:{name}"}
    raise InputError(f"cannot store the MACE config value {value!r} of type {type(value).__name__} as JSON")


def _decode(value):
    _, o3 = import_mace()
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__irreps__" in value:
        return o3.Irreps(value["__irreps__"])
    if "__array__" in value:
        return np.asarray(value["__array__"], dtype=value.get("dtype", "float64"))
    if "__ref__" in value:
        module, _, name = str(value["__ref__"]).partition(":")
        if not any(module == m.rstrip(".") or module.startswith(m) for m in _ALLOWED_MODULES):
            raise InputError(f"the MACE config names {module}:{name}; only mace, e3nn and torch names are allowed")
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj
    return {k: _decode(v) for k, v in value.items()}


def mace_config(model) -> dict:
    """The JSON-able constructor arguments of a ``ScaleShiftMACE`` model (from MACE's own
    ``extract_config_mace_model``), with its class name under ``"class"``."""
    import_mace()
    from mace.tools.scripts_utils import extract_config_mace_model

    cfg = extract_config_mace_model(model)
    if "error" in cfg:
        raise InputError(f"cannot store this MACE model: {cfg['error']}")
    return {"class": type(model).__name__, "kwargs": _encode(cfg)}


def mace_from_config(config: dict, dtype=torch.float64):
    """Build an (untrained) MACE model from :func:`mace_config` output."""
    modules, _ = import_mace()
    cls = getattr(modules, str(config.get("class", "")), None)
    if cls is None or not isinstance(cls, type):
        raise InputError(f"unknown MACE model class {config.get('class')!r}")
    kwargs = _decode(config["kwargs"])
    for key in ("atomic_inter_scale", "atomic_inter_shift"):
        if isinstance(kwargs.get(key), np.ndarray):
            kwargs[key] = kwargs[key].tolist()
    previous = torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype)
        model = cls(**kwargs)
    finally:
        torch.set_default_dtype(previous)
    return model.to(dtype)


def save_mace(model, path, metadata: dict | None = None) -> None:
    """Write a MACE model (or :class:`MACEPotential`) as JSON config + state dict (weights-only loadable).

    >>> save_mace(small_mace([1, 8]), "water_mace.pt")                         # doctest: +SKIP
    """
    head = 0
    if isinstance(model, MACEPotential):
        model, head = model.model, model.head
    dtype = next(model.parameters()).dtype
    payload = {"format": MACE_FORMAT, "config": json.dumps(mace_config(model)), "head": head,
               "metadata": json.dumps(metadata or {}), "dtype": str(dtype).replace("torch.", ""),
               "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
    torch.save(payload, Path(path))


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_mace(path, *, head: int | None = None) -> MACEPotential:
    """A :class:`MACEPotential` from a file written by :func:`save_mace` (``weights_only=True``) or a
    TorchScript MACE archive. A pickled MACE ``.model`` file is refused with the way to convert it.

    >>> pot = load_mace("water_mace.pt")                                       # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no MACE model file at {path}")
    import_mace()
    if _is_torchscript(path):
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as exc:
            raise InputError(f"{path}: cannot load as TorchScript ({str(exc).splitlines()[0]})") from None
        return MACEPotential(model, head=head or 0)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a pickle the weights-only loader refuses, or a damaged file
        text = str(exc)
        if "Weights only load failed" in text or "Unsupported global" in text:
            raise InputError(
                f"{path} is a pickled MACE model (torch.save of the whole module); fesurf loads weights only. "
                "Convert it once with fesurf.surrogates.external.convert_mace_model(src, dst) (this unpickles the "
                "file: do it only for a file you trust), then use the converted file") from None
        raise InputError(f"{path}: not a readable model file ({type(exc).__name__}: {text.splitlines()[0][:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != MACE_FORMAT:
        raise InputError(f"{path} is not a fesurf MACE file (format {MACE_FORMAT}); write one with save_mace")
    dtype = getattr(torch, str(payload.get("dtype", "float64")))
    try:
        model = mace_from_config(json.loads(payload["config"]), dtype=dtype)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: its config and weights do not build a MACE model ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200]})") from None
    for name, p in model.state_dict().items():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            raise InputError(f"{path}: weight {name} holds non-finite values; the file is damaged")
    return MACEPotential(model.eval(), head=int(payload.get("head", 0)) if head is None else head)


def convert_mace_model(src, dst) -> None:
    """Convert a pickled MACE ``.model`` file (``torch.save`` of the module) into a weights-only file.

    This unpickles ``src`` (``weights_only=False``), which can run code stored in it: use it only for a
    file you trust (your own training run). The result loads with :func:`load_mace`.
    """
    import_mace()
    try:
        model = torch.load(Path(src), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{src}: cannot read as a MACE model ({type(exc).__name__}: {exc})") from None
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"{src} does not hold a MACE model (found {type(model).__name__})")
    save_mace(model, dst, metadata={"converted_from": str(src)})


# ---------------------------------------------------------------------------------------- TorchSim
class TorchSimPotential(Potential):
    """Any TorchSim ``ModelInterface`` as a fesurf Potential (all systems in one model call).

    TorchSim returns energies [S], forces [n_atoms, 3] and optionally stress [S, 3, 3] (eV, eV/A,
    eV/A^3) and detaches them, so this adapter uses the model's forces (``differentiable = False``;
    ``create_graph=True`` is refused). One pbc flag for the whole batch, as TorchSim's state has.

    >>> from torch_sim.models.mace import MaceModel                             # doctest: +SKIP
    >>> pot = TorchSimPotential(MaceModel(small_mace([1, 6, 8]), compute_stress=False))   # doctest: +SKIP
    >>> pot = TorchSimPotential.from_mace(small_mace([1, 6, 8]))                # the same  # doctest: +SKIP
    """

    differentiable = False
    translation_invariant = True
    rotation_invariant = True

    def __init__(self, model):
        super().__init__()
        ts = import_torch_sim()
        from torch_sim.models.interface import ModelInterface

        if not isinstance(model, ModelInterface):
            raise InputError(f"TorchSimPotential needs a torch_sim ModelInterface, got {type(model).__name__}")
        if not model.compute_forces:
            raise InputError("the TorchSim model was built with compute_forces=False; fesurf needs forces")
        self._ts = ts
        self.model = model
        self.supports_stress = bool(model.compute_stress)

    @classmethod
    def from_mace(cls, model, *, dtype=None, device=None) -> "TorchSimPotential":
        """A MACE model (module or :class:`MACEPotential`) through TorchSim's ``MaceModel`` (no stress).

        >>> pot = TorchSimPotential.from_mace(small_mace([1, 6, 8]))            # doctest: +SKIP
        """
        import_torch_sim(with_mace=True)
        from torch_sim.models.mace import MaceModel

        module = model.model if isinstance(model, MACEPotential) else model
        dtype = dtype or next(module.parameters()).dtype
        return cls(MaceModel(module, device=torch.device(device or "cpu"), dtype=dtype, compute_stress=False))

    def _sim_state(self, state: State):
        dtype, device = self.model.dtype, self.model.device
        if state.pbc is not None and state.pbc.numel():
            flags = state.pbc.to(torch.bool)
            if bool(flags.any()) and not bool(flags.all()):
                raise InputError("TorchSim models take one pbc flag for a whole batch; this State mixes periodic "
                                 "and non-periodic directions or systems")
            pbc = bool(flags.all())
        else:
            pbc = False
        cell = (state.cell.detach().to(dtype) if state.cell is not None
                else torch.zeros(state.n_systems, 3, 3, dtype=dtype))
        masses = state.masses if state.masses is not None else torch.ones(state.n_atoms, dtype=dtype)
        sim = self._ts.SimState(positions=state.positions.detach().to(device=device, dtype=dtype).clone(),
                                masses=masses.detach().to(device=device, dtype=dtype),
                                cell=cell.transpose(1, 2).contiguous().to(device),  # TorchSim: column vectors
                                pbc=pbc, atomic_numbers=state.atomic_numbers.to(device),
                                system_idx=state.system_index.to(device))
        m = self.model
        # TorchSim's MaceModel caches its batch layout keyed on the atomic numbers alone: refresh it when the
        # layout changes with the same numbers (e.g. 2 x 9 atoms after 1 x 18)
        if hasattr(m, "setup_from_system_idx") and hasattr(m, "system_idx") and not getattr(m, "atomic_numbers_in_init", False):
            if m.system_idx.shape != sim.system_idx.shape or not torch.equal(m.system_idx, sim.system_idx):
                m.setup_from_system_idx(sim.atomic_numbers, sim.system_idx)
        return sim

    def _outputs(self, state: State) -> dict:
        out = self.model(self._sim_state(state))
        if "energy" not in out or "forces" not in out:
            raise InputError(f"the TorchSim model returned {sorted(out)}; fesurf needs 'energy' and 'forces'")
        return out

    def energy(self, state: State) -> torch.Tensor:
        """[n_systems] energies, eV."""
        return self._outputs(state)["energy"].to(device=state.device, dtype=state.dtype).reshape(state.n_systems)

    def energy_and_forces(self, state: State, create_graph: bool = False):
        if create_graph:
            raise InputError("TorchSim models return detached forces, so they cannot be trained through fesurf; "
                             "train the model with its own code, or use MACEPotential for a MACE model")
        out = self._outputs(state)
        return (out["energy"].to(device=state.device, dtype=state.dtype).reshape(state.n_systems),
                out["forces"].to(device=state.device, dtype=state.dtype))

    def stress(self, state: State) -> torch.Tensor:
        """[n_systems, 3, 3] stress, eV/A^3, from the TorchSim model (built with compute_stress=True)."""
        if not self.supports_stress or state.cell is None:
            raise InputError("this TorchSim model gives no stress here: build it with compute_stress=True and "
                             "use a State with a cell")
        return self._outputs(state)["stress"].to(device=state.device, dtype=state.dtype)


# ---------------------------------------------------------------------------------------- committees
class ExternalCommittee(Potential):
    """A committee of external Potentials (MACE, TorchSim, any fesurf Potential): mean energy and forces,
    member spread. Each member sees the whole batch once.

    >>> com = ExternalCommittee([MACEPotential(small_mace([1, 8], seed=s)) for s in range(3)])   # doctest: +SKIP
    >>> com.predict(state)["energy_std"]                                        # doctest: +SKIP
    """

    def __init__(self, members: Sequence[Potential]):
        super().__init__()
        members = list(members)
        if len(members) < 1 or not all(isinstance(m, Potential) for m in members):
            raise InputError("ExternalCommittee needs a non-empty list of fesurf Potentials")
        self.members = torch.nn.ModuleList(members)
        self.n_members = len(members)
        self.differentiable = all(getattr(m, "differentiable", True) for m in members)
        self.translation_invariant = all(m.translation_invariant for m in members)
        self.rotation_invariant = all(m.rotation_invariant for m in members)
        self.supports_stress = all(m.supports_stress for m in members)

    def member_energies(self, state: State) -> torch.Tensor:
        """[n_members, n_systems] energies, eV."""
        return torch.stack([m.energy(state) for m in self.members])

    def energy(self, state: State) -> torch.Tensor:
        """[n_systems] committee-mean energy, eV."""
        return self.member_energies(state).mean(0)

    def member_energies_and_forces(self, state: State, create_graph: bool = False):
        """``(energies [M, S], forces [M, n_atoms, 3])``."""
        outs = [m.energy_and_forces(state, create_graph) for m in self.members]
        return torch.stack([e for e, _ in outs]), torch.stack([f for _, f in outs])

    def energy_and_forces(self, state: State, create_graph: bool = False):
        e, f = self.member_energies_and_forces(state, create_graph)
        return e.mean(0), f.mean(0)

    def stress(self, state: State) -> torch.Tensor:
        return torch.stack([m.stress(state) for m in self.members]).mean(0)

    def predict(self, state: State) -> dict:
        """Mean and spread, with the keys of :meth:`fesurf.surrogates.base.AtomisticModel.predict`:
        ``energy``, ``forces``, ``energy_std`` (population std over members, eV), ``force_deviation_max``
        (max over atoms of sqrt(mean_m |F_m - F|^2), eV/A), ``member_energies``, ``member_forces``."""
        e, f = self.member_energies_and_forces(state)
        mean_f = f.mean(0)
        dev = ((f - mean_f) ** 2).sum(-1).mean(0).sqrt()
        dev_max = torch.zeros(state.n_systems, dtype=state.dtype).scatter_reduce(
            0, state.system_index, dev, reduce="amax", include_self=True)
        return {"energy": e.mean(0), "forces": mean_f,
                "energy_std": e.std(0, unbiased=False) if e.shape[0] > 1 else torch.zeros_like(e[0]),
                "force_deviation_max": dev_max, "member_energies": e, "member_forces": f}


# ---------------------------------------------------------------------------------------- specs
def is_external_spec(spec: str) -> bool:
    """True for ``"mace:..."`` and ``"torchsim:..."`` model specs."""
    return isinstance(spec, str) and spec.startswith(SPEC_PREFIXES)


def _paths(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise InputError("a 'mace:' model spec needs a file, e.g. \"mace:models/mace.pt\"")
    return parts


def resolve_spec(spec: str, base_dir=None, key: str = "surrogate.model") -> str:
    """``spec`` with relative file paths made relative to ``base_dir`` (the config's folder); checks that
    the files exist (InputError naming ``key``)."""
    def fix(p):
        path = Path(p)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if not path.exists():
            raise InputError(f"'{key}': file {p} does not exist")
        return str(path)

    if spec.startswith("mace:"):
        return "mace:" + ",".join(fix(p) for p in _paths(spec[5:]))
    if spec.startswith("torchsim:mace:"):
        return "torchsim:mace:" + ",".join(fix(p) for p in _paths(spec[14:]))
    if spec.startswith("torchsim:"):
        target = spec[9:]
        if ":" not in target:
            raise InputError(f"'{key}': {spec!r}; use \"torchsim:mace:PATH\" or \"torchsim:package.module:factory\"")
        return spec
    raise InputError(f"'{key}': {spec!r} is not an external model spec (mace:... or torchsim:...)")


def load_external(spec: str) -> Potential:
    """The Potential named by a ``mace:`` / ``torchsim:`` spec (see the module doc)."""
    if spec.startswith("mace:"):
        members = [load_mace(p) for p in _paths(spec[5:])]
        return members[0] if len(members) == 1 else ExternalCommittee(members)
    if spec.startswith("torchsim:mace:"):
        members = [TorchSimPotential.from_mace(load_mace(p)) for p in _paths(spec[14:])]
        return members[0] if len(members) == 1 else ExternalCommittee(members)
    if spec.startswith("torchsim:"):
        module, _, name = spec[9:].partition(":")
        if not module or not name:
            raise InputError(f"{spec!r}: use \"torchsim:mace:PATH\" or \"torchsim:package.module:factory\"")
        import_torch_sim()
        try:
            with _restored_env("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"):
                factory = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise InputError(f"'surrogate.model' {spec!r}: cannot import {module}:{name} ({exc})") from None
        return TorchSimPotential(factory())
    raise InputError(f"{spec!r} is not an external model spec (mace:... or torchsim:...)")


def load_model(spec, return_metadata: bool = False):
    """Load any surrogate: a ``mace:`` / ``torchsim:`` spec (:func:`load_external`) or a fesurf model file
    (:func:`fesurf.surrogates.io.load_model`).

    >>> model = load_model("mace:models/mace.pt")                              # doctest: +SKIP
    """
    from .io import load_model as load_fesurf_model
    from .io import read_weights_file

    if is_external_spec(str(spec)):
        model = load_external(str(spec))
        return (model, {}) if return_metadata else model
    if Path(spec).is_file() and not _is_torchscript(Path(spec)):
        payload = read_weights_file(spec)
        if isinstance(payload, dict) and payload.get("format") == MACE_FORMAT:  # a MACE file named without "mace:"
            model = load_mace(spec)
            return (model, json.loads(payload.get("metadata", "{}"))) if return_metadata else model
    return load_fesurf_model(spec, return_metadata=return_metadata)


__all__ = ["MACEPotential", "TorchSimPotential", "ExternalCommittee", "small_mace", "mace_from_dataset", "fit_mace",
           "save_mace", "load_mace", "convert_mace_model", "mace_config", "mace_from_config", "load_external",
           "load_model", "resolve_spec", "is_external_spec", "import_mace", "import_torch_sim"]
