"""The pipeline's active-learning stage: ``surrogate.model = ""`` with ``surrogate.strategy = "active"``.

:class:`ActiveLearn` builds the surrogate with :func:`fesurf.training.active.active_learning` under
the run's own production bias (the ``[umbrella]`` windows, the ``[pmf]`` bins), counts every
reference call, and leaves in the run folder

- ``committee.pt`` (+ ``.json``): the committee with its held-out spread calibration attached;
- ``active/``: the loop's checkpoint (model, labels, walkers, round records) and ``active/labels/``,
  the label cache; a killed run resumes after the last completed round and reuses every label;
- ``active_learning.json``: calls by purpose and per round, spread per CV bin per round, validation
  errors, the stop reason; ``active_rounds.txt``: the same as a table.

:func:`production_guard` gives the guard the ``sample`` stage passes to ``umbrella_sampling``
(``umbrella.guard = "warn" | "stop" | "off"``, trust level ``umbrella.guard_upper`` or
``active.upper``). The old fixed generation stays available as ``surrogate.strategy = "fixed"``.

Config keys read (see :data:`ACTIVE_DEFAULTS`; the schema in :mod:`fesurf.config` validates them):
``[active]`` lower, upper (eV/A), per_round, walkers, steps, check_every (MD steps), budget
(reference calls), max_rounds, max_beta_sigma (kT), max_candidate_fraction, selection, validation_fraction,
normal_modes, scan_points, scan_steps, seed_epochs, epochs, optimizer, free_energy_tolerance (kT or
none), confirm_steps (MD steps; none: the production length, 0: off); ``[umbrella]`` guard, guard_upper (eV/A or none); ``[surrogate]`` strategy, n_members, hidden,
dtype.

Example
-------
>>> ACTIVE_DEFAULTS["upper"], ACTIVE_DEFAULTS["budget"]
(0.6, 3000)
"""
from __future__ import annotations

import json
import logging
import shutil
import time

import numpy as np

from ..config import SCHEMA, kappa_in_ev
from ..errors import InputError
from .stages import Stage, _timed, pmf_range

log = logging.getLogger(__name__)

#: defaults of the ``[active]`` keys, from the config schema (units: lower/upper eV/A, steps MD steps, budget
#: reference calls, max_beta_sigma and free_energy_tolerance kT)
ACTIVE_DEFAULTS = {k: spec.default for k, spec in SCHEMA["active"].items()}
#: defaults of the ``[umbrella]`` guard keys and of ``surrogate.strategy``
UMBRELLA_DEFAULTS = {k: SCHEMA["umbrella"][k].default for k in ("guard", "guard_upper")}
SURROGATE_DEFAULTS = {"strategy": SCHEMA["surrogate"]["strategy"].default}


def _section(cfg, name, defaults):
    given = dict(cfg.get(name) or {})
    return {k: given.get(k, v) for k, v in defaults.items()}


def active_settings(cfg):
    """``(ActiveLearningSettings, ProductionBias)`` from a loaded config."""
    from ..training.active import (ActiveLearningSettings, ExploreSettings, ProductionBias, SeedSettings,
                                   SelectSettings, StopSettings, TrustLevels)
    from ..training.refit import RefitSettings
    from .builders import build_cv, build_structure

    a = _section(cfg, "active", ACTIVE_DEFAULTS)
    u = cfg["umbrella"]
    # by default the stopping test is confirmed on an exploration as long as production (0: no confirmation)
    confirm = u["n_equilibration"] + u["n_production"] if a["confirm_steps"] is None else (int(a["confirm_steps"])
                                                                                           or None)
    atoms = build_structure(cfg)
    bias = ProductionBias(build_cv(cfg, len(atoms)), centers=np.linspace(u["range"][0], u["range"][1], u["n_windows"]),
                          kappa=kappa_in_ev(cfg), temperature=cfg["run"]["temperature"],
                          pmf_range=tuple(pmf_range(cfg)), pmf_bins=cfg["pmf"]["bins"])
    try:
        settings = ActiveLearningSettings(
            trust=TrustLevels(lower=a["lower"], upper=a["upper"]),
            seed_data=SeedSettings(normal_modes=a["normal_modes"], scan_points=a["scan_points"],
                                   scan_steps=a["scan_steps"]),
            explore=ExploreSettings(walkers_per_window=a["walkers"], steps=a["steps"], check_every=a["check_every"],
                                    timestep=u["timestep"], friction=u["friction"]),
            select=SelectSettings(per_round=a["per_round"], strategy=a["selection"],
                                  validation_fraction=a["validation_fraction"]),
            refit=RefitSettings(seed_epochs=a["seed_epochs"], epochs=a["epochs"], optimizer=a["optimizer"],
                                bootstrap=True, dtype=cfg["surrogate"]["dtype"],
                                force_weight=cfg.get("train", {}).get("force_weight", 0.005), seed=cfg["run"]["seed"]),
            stop=StopSettings(budget=a["budget"], max_rounds=a["max_rounds"], max_beta_sigma=a["max_beta_sigma"],
                              max_candidate_fraction=a["max_candidate_fraction"],
                              free_energy_tolerance=a["free_energy_tolerance"], confirm_steps=confirm),
            seed=cfg["run"]["seed"])
    except InputError as exc:
        raise InputError(f"[active]: {exc}") from None
    return settings, bias


def production_guard(cfg, model):
    """The production guard of ``umbrella.guard`` for ``model`` (None when "off" or the model has no committee)."""
    from ..training.active import ProductionGuard

    u = _section(cfg, "umbrella", UMBRELLA_DEFAULTS)
    if u["guard"] == "off" or int(getattr(model, "n_members", 1)) < 2:
        return None
    if u["guard"] not in ("warn", "stop"):
        raise InputError(f"'umbrella.guard' is {u['guard']!r}; use \"warn\", \"stop\" or \"off\"")
    upper = u["guard_upper"] if u["guard_upper"] is not None else _section(cfg, "active", ACTIVE_DEFAULTS)["upper"]
    return ProductionGuard(model, upper=float(upper), action=u["guard"])


class ActiveLearn(Stage):
    """The surrogate by on-the-fly active learning (``committee.pt``); resumable through ``active/``."""

    base = "active"
    reads = ("run", "system", "oracle", "surrogate", "active", "cv", "umbrella", "pmf", "train")
    replaces = ("generate", "label", "train")

    def run(self, run, p):
        from ..surrogates import BehlerParrinello, load_model, save_model
        from ..training.active import active_learning

        path = run.dir / "committee.pt"
        if run.done(self.name) and path.exists():
            p.model = load_model(path)
            p.training_calls = int(run.stages[self.name].get("qm_calls", 0))
            return
        t0 = time.perf_counter()
        cfg = run.cfg
        settings, bias = active_settings(cfg)
        work = run.dir / "active"
        # continue only a loop started with this very configuration; otherwise start afresh, keeping the
        # label cache (labels are keyed by configuration and method, so they stay valid)
        current = run.hash(self.name)
        if work.exists() and run.stages.get("active_started") != current:
            for item in work.iterdir():
                if item.name != "labels":
                    shutil.rmtree(item) if item.is_dir() else item.unlink()
        run.stages["active_started"] = current
        run.save()
        elements = sorted(set(int(z) for z in p.atoms.numbers))
        model = BehlerParrinello(elements=elements, hidden=tuple(cfg["surrogate"]["hidden"]),
                                 n_members=max(2, int(cfg["surrogate"]["n_members"])),
                                 acsf=dict(n_radial=8, angular_shifts=[1.2, 2.6]), seed=cfg["run"]["seed"])
        result = active_learning(p.oracle, p.atoms, bias, settings, model=model, executor=p.executor,
                                 workdir=work)
        save_model(result.model, path, metadata={"source": "fesurf.training.active", "calls": result.calls})
        (run.dir / "active_learning.json").write_text(json.dumps(result.to_dict(), indent=1, default=float) + "\n")
        (run.dir / "active_rounds.txt").write_text(result.table() + "\n")
        p.model, p.training_calls = result.model, int(result.calls["total"])
        log.info("active learning: %d reference calls, %s after %d rounds", result.calls["total"],
                 result.stop_reason, result.rounds[-1]["round"])
        _timed(run, self.name, t0, qm_calls=int(result.calls["total"]), rounds=int(result.rounds[-1]["round"]),
               converged=bool(result.converged), stop_reason=result.stop_reason,
               n_train=int(result.train_idx.size), n_validation=int(result.val_idx.size))


__all__ = ["ActiveLearn", "active_settings", "production_guard", "ACTIVE_DEFAULTS", "UMBRELLA_DEFAULTS",
           "SURROGATE_DEFAULTS"]
