"""Common machinery of the atomistic surrogates: committee outputs, dtype handling.

Every model is a :class:`~fesurf.potentials.Potential` whose members give
energies ``[n_members, n_systems]`` (eV); the Potential energy is their mean.
:meth:`AtomisticModel.predict` returns mean energy and forces, the energy
standard deviation and the maximum atomic force deviation over members.

Example
-------
>>> from ase.build import molecule
>>> from fesurf.state import State
>>> from fesurf.surrogates import BehlerParrinello
>>> model = BehlerParrinello(elements=[1, 8], n_members=3, seed=0)
>>> out = model.predict(State.from_atoms(molecule("H2O")))
>>> sorted(out)[:3], tuple(out["member_forces"].shape)
(['energy', 'energy_std', 'force_deviation_max'], (3, 3, 3))
"""
from __future__ import annotations

import torch

from ..potentials.base import Potential
from ..state import State


class AtomisticModel(Potential):
    """Base class: subclasses implement ``_member_energies(positions, state, per_member_positions)``.

    ``positions`` is ``[n_atoms, 3]`` (shared by members) or ``[M, n_atoms, 3]``
    (one differentiable copy per member, to get per-member forces in one
    backward pass). Models compute in their parameter dtype and return
    results in the State's dtype.
    """

    translation_invariant = True
    rotation_invariant = True
    n_members: int = 1
    heteroscedastic: bool = False

    @property
    def model_dtype(self):
        return next(self.parameters()).dtype

    def config(self) -> dict:
        raise NotImplementedError

    def _member_outputs(self, positions: torch.Tensor, state: State):
        """Return (energies [M, S], log-variance [M, S] or None) in the model dtype."""
        raise NotImplementedError

    def member_energies(self, state: State) -> torch.Tensor:
        """[n_members, n_systems] energies, eV."""
        pos = state.positions.to(self.model_dtype)
        return self._member_outputs(pos, state)[0].to(state.dtype)

    def energy(self, state: State) -> torch.Tensor:
        """[n_systems] committee-mean energy, eV."""
        return self.member_energies(state).mean(0)

    def energy_and_forces(self, state: State, create_graph: bool = False):
        with torch.enable_grad():
            pos = state.positions
            if not pos.requires_grad:
                pos = pos.detach().requires_grad_(True)
            energy = self._member_outputs(pos.to(self.model_dtype), state)[0].mean(0)
            (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=create_graph)
        energy = energy.to(state.dtype)
        forces = -grad
        if not create_graph:
            energy, forces = energy.detach(), forces.detach()
        return energy, forces

    def member_energies_and_forces(self, state: State, create_graph: bool = False):
        """Per-member ``(energies [M, S], forces [M, n_atoms, 3], log_var [M, S] or None)``
        in one backward pass (members get their own copy of the positions)."""
        m = self.n_members
        with torch.enable_grad():
            pos = state.positions.detach().to(self.model_dtype).unsqueeze(0).repeat(m, 1, 1).requires_grad_(True)
            energies, log_var = self._member_outputs(pos, state)
            (grad,) = torch.autograd.grad(energies.sum(), pos, create_graph=create_graph)
        forces = -grad
        if not create_graph:
            energies, forces = energies.detach(), forces.detach()
            log_var = None if log_var is None else log_var.detach()
        return energies, forces, log_var

    def _committee_outputs(self, state: State, member_forces: bool):
        """``(member energies [M, S], mean forces [n, 3], member forces [M, n, 3] or None, log_var or None)``;
        models with a cheaper path for the mean forces override this."""
        e, f, log_var = self.member_energies_and_forces(state)
        return e, f.mean(0), (f if member_forces else None), log_var

    def predict(self, state: State, force_deviation: bool = True, calibrated: bool = True) -> dict:
        """Committee prediction (eV, eV/A).

        Keys: ``energy`` [S] mean, ``forces`` [n_atoms, 3] mean, ``energy_std`` [S]
        (member spread, epistemic), ``member_energies`` [M, S], and with ``force_deviation``
        (the default) ``force_deviation_max`` [S] (max over atoms of the member spread of the
        force vector, sqrt(mean_m |F_m - F|^2), DP-GEN's trigger) and ``member_forces``
        [M, n_atoms, 3]; ``aleatoric_std`` [S] when the model has a heteroscedastic head.
        ``force_deviation=False`` skips the per-member forces (one gradient pass for the
        mean instead of M on the fast path of :class:`~fesurf.surrogates.BehlerParrinello`).

        A calibrated model (:attr:`calibration`, set by :func:`fesurf.training.calibrate` and
        stored in the model file) also gives ``energy_std_calibrated`` (eV, an estimate of the
        RMS energy error) and ``force_deviation_max_calibrated`` (eV/A, of the RMS maximum
        atomic force error): the raw spreads times the stored factors. The raw keys are
        always the uncalibrated member spreads; ``calibrated=False`` leaves the calibrated keys (and
        the check that the factors belong to the current weights) out.

        >>> from ase.build import molecule
        >>> from fesurf.surrogates import BehlerParrinello
        >>> m = BehlerParrinello([1, 8], hidden=(8,), n_members=3, shared_layers=1)
        >>> m.set_calibration(energy_std_factor=2.0, force_deviation_factor=1.5)
        >>> out = m.predict(State.from_atoms(molecule("H2O")))
        >>> bool((out["energy_std_calibrated"] == 2.0 * out["energy_std"]).all())
        True
        """
        e, mean_f, f, log_var = self._committee_outputs(state, bool(force_deviation))
        e, mean_f = e.to(state.dtype), mean_f.to(state.dtype)
        out = {"energy": e.mean(0), "forces": mean_f,
               "energy_std": e.std(0, unbiased=False) if e.shape[0] > 1 else torch.zeros_like(e[0]),
               "member_energies": e}
        if force_deviation:
            f = f.to(state.dtype)
            dev = ((f - mean_f) ** 2).sum(-1).mean(0).sqrt()  # [n_atoms]
            out["force_deviation_max"] = torch.zeros(state.n_systems, dtype=state.dtype).scatter_reduce(
                0, state.system_index, dev, reduce="amax", include_self=True)
            out["member_forces"] = f
        if log_var is not None:
            out["aleatoric_std"] = log_var.to(state.dtype).exp().mean(0).sqrt()
        cal = self.checked_calibration() if calibrated else None
        if cal is not None:
            out["energy_std_calibrated"] = out["energy_std"] * cal["energy_std_factor"]
            if force_deviation:
                out["force_deviation_max_calibrated"] = out["force_deviation_max"] * cal["force_deviation_factor"]
        return out

    # ---- calibration of the committee spread (factors travel with the model file)

    #: ``{"energy_std_factor", "force_deviation_factor", "weights_sha1", ...}`` or None (uncalibrated)
    calibration = None

    def weights_fingerprint(self) -> str:
        """SHA-1 of all floating-point parameters and buffers rounded to float32 (equal for a float64
        model and its float32 copy; changed by any training step)."""
        import hashlib

        h = hashlib.sha1()
        for name, t in sorted(self.state_dict().items()):
            if t.is_floating_point():
                h.update(name.encode())
                h.update(t.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
        return h.hexdigest()

    def _weights_key(self):
        """Cheap identity of the current weights (storage and version counters; any in-place update,
        optimiser step, ``load_state_dict`` or ``.to()`` changes it). The (module, slot) list is
        cached; the tensors are read from the slots each time, so replaced buffers are seen."""
        slots = self.__dict__.get("_weight_slots")
        if slots is None:
            slots = [(mod._parameters, k) for mod in self.modules() for k in mod._parameters] \
                + [(mod._buffers, k) for mod in self.modules() for k in mod._buffers]
            self.__dict__["_weight_slots"] = slots
        return tuple((t.data_ptr(), t._version) for t in (d[k] for d, k in slots) if t is not None)

    def set_calibration(self, energy_std_factor: float, force_deviation_factor: float, **info) -> None:
        """Attach spread calibration factors (dimensionless, > 0) for the current weights; ``info``
        (JSON-able) is stored with them. Training the model afterwards invalidates them
        (:meth:`predict` then raises until :func:`fesurf.training.calibrate` is run again)."""
        import math

        from ..errors import InputError

        for name, v in (("energy_std_factor", energy_std_factor), ("force_deviation_factor", force_deviation_factor)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise InputError(f"{name} must be a finite positive number, got {v!r}")
        cal = dict(info, energy_std_factor=float(energy_std_factor),
                   force_deviation_factor=float(force_deviation_factor), weights_sha1=self.weights_fingerprint())
        self.calibration = cal
        self._calibration_key = self._weights_key()

    def clear_calibration(self) -> None:
        """Drop the calibration factors (e.g. before retraining)."""
        self.calibration = None

    def checked_calibration(self):
        """The calibration dict if it belongs to the current weights, None if uncalibrated; InputError
        if the weights changed since (retrained without recalibrating)."""
        cal = self.calibration
        if cal is None:
            return None
        key = self._weights_key()
        if self.__dict__.get("_calibration_key") != key:
            if self.weights_fingerprint() != cal.get("weights_sha1"):
                from ..errors import InputError

                raise InputError("the model's weights changed since its spread was calibrated (retrained?): "
                                 "call fesurf.training.calibrate(model, dataset, frames) again, or "
                                 "model.clear_calibration()")
            self._calibration_key = key
        return cal
