"""The run configuration: a TOML file, validated with errors that name the key.

Every key has a type, a default (or is required) and, where it carries a
unit, a unit key beside it. Unknown keys are refused (a typo must not be
silently ignored). See ``examples/malonaldehyde.toml`` for a complete file.

Example
-------
>>> cfg = load_config({"system": {"structure": "builtin:malonaldehyde"},
...                    "cv": {"type": "distance_difference", "pairs": [[0, 5], [4, 5]]}})
>>> cfg["umbrella"]["n_windows"], cfg["run"]["temperature"]
(16, 300.0)
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .errors import InputError

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REQUIRED = object()
NUMBER = (int, float)


@dataclass(frozen=True)
class Key:
    """One config key: its type, default, unit, allowed values and what it means.

    ``low``/``high`` bound numbers (and list items when ``item`` is a number type); ``low_open``
    excludes ``low`` itself. ``choices`` lists the allowed strings. ``length`` fixes a list's length.
    """

    type: Any
    default: Any
    doc: str
    unit: Optional[str] = None
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    choices: Optional[tuple] = None
    item: Any = None
    length: Optional[int] = None
    nullable: bool = False

    def type_name(self) -> str:
        names = {str: "string", int: "integer", list: "list", bool: "boolean (true or false)", NUMBER: "number"}
        base = names.get(self.type, getattr(self.type, "__name__", str(self.type)))
        if self.type is list and self.item is not None:
            base = f"list of {names.get(self.item, 'values')}s"
        return base + (" or none" if self.nullable else "")

    def range_text(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.low is None and self.high is None:
            return ""
        lo = "" if self.low is None else (f"> {self.low:g}" if self.low_open else f">= {self.low:g}")
        hi = "" if self.high is None else f"<= {self.high:g}"
        return " and ".join(t for t in (lo, hi) if t)


def _positive(doc, unit=None, default=REQUIRED, typ=NUMBER):
    return Key(typ, default, doc, unit=unit, low=0, low_open=True)


#: section -> key -> Key. The single source of truth: load_config checks it, the docs are generated from it.
SCHEMA = {
    "run": {
        "output": Key(str, "runs/fesurf", "run folder (relative to the config file)"),
        "temperature": _positive("simulation temperature", "K", 300.0),
        "seed": Key(int, 0, "seed of every stochastic step (MD noise, frame choice, training)", low=0),
        "workers": Key(int, 1, "worker processes for reference (QM) calls (executor = processes, or auto with a "
                       "slow oracle)", low=1, high=4096),
        "executor": Key(str, "auto", 'where reference calls run: "auto" (in this process for ms-scale methods such '
                        'as xTB, a pool of run.workers for DFT), "serial", "processes", or a Dask scheduler address '
                        '("tcp://host:8786")'),
        "threads": Key(int, None, "torch threads of the main process (default 1: batched small-system sampling is "
                       "fastest on one thread)", low=1, high=4096, nullable=True),
    },
    "system": {
        "structure": Key(str, REQUIRED, '"builtin:malonaldehyde" or a structure file ase.io can read'),
        "charge": Key(NUMBER, 0, "total charge", unit="e", low=-100, high=100),
        "multiplicity": Key(int, 1, "spin multiplicity 2S+1", low=1, high=50),
    },
    "oracle": {
        "method": Key(str, "GFN2-xTB", "reference method", choices=("GFN2-xTB", "GFN1-xTB", "DFT")),
        "xc": Key(str, "B3LYP", "exchange-correlation functional (method = DFT, PySCF)"),
        "basis": Key(str, "def2-SVP", "basis set (method = DFT, PySCF)"),
    },
    "surrogate": {
        "model": Key(str, "", '"builtin:malonaldehyde_committee", a .pt model file, "mace:PATH[,PATH...]", '
                     '"torchsim:mace:PATH", "torchsim:module:factory", or "" to generate, label and train'),
        "n_members": Key(int, 4, "committee members (trained surrogate)", low=1, high=64),
        "hidden": Key(list, [32, 32], "hidden layer widths of each member", item=int, low=1, high=4096),
        "dtype": Key(str, "float64", "surrogate precision", choices=("float64", "float32")),
        "compile": Key(bool, False, "torch.compile the BP MD path (needs a C++ compiler; pays off in long runs)"),
        "strategy": Key(str, "active", 'how model = "" builds the surrogate: "active" (on-the-fly active learning '
                        'under the production bias, keys in [active]) or "fixed" (reference MD at the [generate] '
                        "temperatures plus restrained frames, all labelled, then [train])", choices=("active", "fixed")),
    },
    "generate": {
        "temperatures": Key(list, [300.0, 600.0, 1000.0], "temperatures of the reference MD that generates data",
                            unit="K", item=NUMBER, low=0, low_open=True),
        "frames_per_temperature": Key(int, 200, "frames kept per temperature", low=1),
        "biased_frames_per_window": Key(int, 20, "frames kept per restrained window along the CV", low=0),
        "biased_windows": Key(int, 8, "restrained windows along the CV", low=0),
        "stride": Key(int, 10, "MD steps between kept frames", low=1),
        "timestep": _positive("reference MD time step", "fs", 0.5),
    },
    "train": {
        "epochs": Key(int, 200, "training epochs", low=1),
        "max_time": Key(NUMBER, None, "optional wall-clock limit on training; when it stops training the model "
                        "depends on the machine's speed (a warning says so). Default: none, epochs decide",
                        unit="s", low=0, low_open=True, nullable=True),
        "force_weight": Key(NUMBER, 0.005, "weight of the force loss relative to the energy loss", unit="A^2", low=0),
        "validation_fraction": Key(NUMBER, 0.1, "fraction of frames held out for validation", low=0, low_open=True,
                                   high=0.5),
    },
    "active": {  # surrogate.model = "" with surrogate.strategy = "active" (fesurf.training.active)
        "lower": _positive("lower trust level on the calibrated max atomic force deviation: frames above it are "
                           "candidates for labels", "eV/A", 0.3),
        "upper": _positive("upper trust level: above it a walker restarts from its last trusted frame (and, in "
                           "production, frames are flagged)", "eV/A", 0.6),
        "per_round": Key(int, 150, "most training labels a round", low=1),
        "walkers": Key(int, 4, "surrogate walkers per umbrella window in the exploration", low=1, high=4096),
        "steps": Key(int, 400, "exploration MD steps per round", unit="steps", low=1),
        "check_every": Key(int, 20, "MD steps between spread checks of the walkers", unit="steps", low=1),
        "budget": Key(int, 3000, "most reference calls of the whole loop (seed included)", low=1),
        "max_rounds": Key(int, 15, "most exploration rounds", low=0),
        "max_beta_sigma": _positive("stop when every PMF bin predicts beta*sigma(dU) at most this", "kT", 1.0),
        "max_candidate_fraction": Key(NUMBER, 0.1, "stop only when, besides max_beta_sigma, candidate plus untrusted "
                                      "frames are at most this share of the checked frames", low=0, high=1),
        "selection": Key(str, "qbc", '"qbc" (query by committee between the trust levels) or "random" (uniform '
                         "over explored frames, the baseline)", choices=("qbc", "random")),
        "validation_fraction": Key(NUMBER, 0.1, "extra random held-out labels a round, as a share of per_round "
                                   "(validation and spread calibration)", low=0, high=1),
        "normal_modes": Key(int, 64, "seed: normal-mode samples around the start structure", low=0),
        "scan_points": Key(int, 8, "seed: restrained reference relaxations along the CV", low=0),
        "scan_steps": Key(int, 6, "seed: reference steps per scan point (each one a label)", low=0),
        "seed_epochs": Key(int, 200, "epochs (L-BFGS iterations) of the first fit", low=1),
        "epochs": Key(int, 40, "epochs of every warm-started refit", low=1),
        "optimizer": Key(str, "lbfgs", "refit optimizer", choices=("lbfgs", "adam")),
        "free_energy_tolerance": Key(NUMBER, None, "also stop when the sparse correction to the barrier and its "
                                     "2-sigma interval lie within this (none: off)", unit="kT", low=0,
                                     low_open=True, nullable=True),
        "confirm_steps": Key(int, None, "MD steps of the exploration that confirms the stopping test (none: "
                             "umbrella.n_equilibration + umbrella.n_production; 0: no confirmation)", unit="steps",
                             low=0, nullable=True),
    },
    "cv": {
        "type": Key(str, REQUIRED, "distance_difference, or a PLUMED name (DISTANCE, ANGLE, TORSION, ...)"),
        "pairs": Key(list, None, "for distance_difference: two atom pairs [[i, j], [k, l]] (0-based), "
                     "CV = d(i, j) - d(k, l)", nullable=True),
        "atoms": Key(list, None, "atom indices of a PLUMED-named CV (0-based)", item=int, low=0, nullable=True),
    },
    "umbrella": {
        "range": Key(list, [-0.8, 0.8], "[low, high] of the window centres", unit="CV units", item=NUMBER, length=2),
        "n_windows": Key(int, 16, "umbrella windows (all run in one batch)", low=2, high=100000),
        "kappa": _positive("restraint force constant (0.5 kappa (s - s0)^2)", "kappa_unit", 2.0),
        "kappa_unit": Key(str, "eV/A^2", "unit of kappa", choices=("eV/A^2", "kJ/mol/A^2", "kcal/mol/A^2", "kT/A^2")),
        "timestep": _positive("MD time step", "fs", 0.5),
        "friction": _positive("Langevin friction", "1/fs", 0.02),
        "n_equilibration": Key(int, 1000, "MD steps discarded at the start of each window", unit="steps", low=0),
        "n_production": Key(int, 10000, "MD steps recorded per window", unit="steps", low=1),
        "stride": Key(int, 20, "MD steps between recorded frames", unit="steps", low=1),
        "checkpoint_every": Key(int, 1000, "MD steps between checkpoints of samples.h5", unit="steps", low=1),
        "guard": Key(str, "warn", "production guard of a committee surrogate: every recorded frame stores its "
                     'calibrated max force deviation; frames above guard_upper are flagged and "warn" warns, '
                     '"stop" stops the run, "off" records nothing', choices=("warn", "stop", "off")),
        "guard_upper": Key(NUMBER, None, "trust level of the guard (none: active.upper)", unit="eV/A", low=0,
                           low_open=True, nullable=True),
    },
    "sampling": {
        "method": Key(str, "umbrella", '"umbrella" (surrogate umbrella sampling, then sparse reference labels and '
                      'reweighting) or "hybrid_mc" (exact reference-level sampling: the surrogate proposes, the '
                      "[oracle] method accepts every move; no reweighting; keys in [hybrid_mc])",
                      choices=("umbrella", "hybrid_mc")),
    },
    "hybrid_mc": {  # sampling.method = "hybrid_mc" (fesurf.sampling.hybrid_mc); windows from [umbrella]
        "proposal": Key(str, "md", '"md" (velocity-Verlet trajectory on the surrogate with fresh Maxwell-Boltzmann '
                        'momenta) or "mc" (inner Metropolis chain on the surrogate)', choices=("md", "mc")),
        "timestep": _positive("initial velocity-Verlet timestep of a proposal (md; tuned in equilibration)", "fs",
                              0.5),
        "n_steps": Key(int, 12, "initial proposal length: velocity-Verlet steps (md) or inner Metropolis steps "
                       "(mc); tuned in equilibration, then frozen", unit="steps", low=1),
        "max_steps": Key(int, None, "cap on the tuned proposal length (none: 4 x n_steps)", unit="steps", low=1,
                         nullable=True),
        "step_size": _positive("initial Gaussian displacement per coordinate of the inner chain (mc)", "A", 0.05),
        "target_acceptance": Key(NUMBER, 0.6, "reference acceptance the tuner aims at", low=0, low_open=True,
                                 high=0.99),
        "replicas_per_window": Key(int, 1, "independent chains per umbrella window", low=1, high=4096),
        "n_equilibration": Key(int, 200, "Monte Carlo moves discarded per chain (tuning in the first half)",
                               unit="moves", low=0),
        "n_production": Key(int, 2000, "Monte Carlo moves recorded per chain", unit="moves", low=1),
        "stride": Key(int, 5, "moves between recorded frames", unit="moves", low=1),
        "checkpoint_every": Key(int, 100, "moves between checkpoints of samples_hybrid_mc.h5", unit="moves", low=1),
        "delayed_acceptance": Key(bool, False, "screen md proposals with the surrogate first (Christen-Fox); only "
                                  "those that pass cost a reference call"),
        "correction": Key(str, "none", '"none", or "linear": a pair-feature model of U_ref - U_sur fitted to the '
                          "chain's own reference labels in equilibration is added to the proposal surrogate",
                          choices=("none", "linear")),
    },
    "pimd": {
        "beads": Key(int, 1, "ring-polymer beads per atom (1: classical nuclei); with P > 1 every umbrella window "
                     "is a ring polymer restrained on its centroid CV and the correction is bead-averaged",
                     low=1, high=1024),
        "tau_centroid": _positive("PILE-L centroid thermostat time constant", "fs", 100.0),
        "propagator": Key(str, "exact", "free ring-polymer propagator", choices=("exact", "cayley")),
    },
    "isotopes": {
        "substitute": Key(list, None, 'atoms to substitute, e.g. [[5, "D"]] (0-based index, isotope name: D, T, '
                          "13C, 18O, ...); runs the substituted molecule too and reports k_light/k_heavy",
                          nullable=True),
        "ts_width": _positive("CV window around the transition state for the centroid effective mass",
                              "CV units", 0.05),
    },
    "pmf": {
        "bins": Key(int, 30, "bins of the PMF along the CV", low=2, high=100000),
        "range": Key(list, None, "[low, high] of the PMF (default: umbrella.range)", unit="CV units", item=NUMBER,
                     length=2, nullable=True),
    },
    "reweight": {
        "n_labels": Key(int, 200, "reference labels on sampled frames (the first round's, when adaptive)", low=2),
        "estimator": Key(str, "wtp", '"wtp" (per-bin weighted thermodynamic perturbation) or "delta" '
                         "(delta-learned correction + residual wTP)", choices=("wtp", "delta")),
        "adaptive": Key(bool, False, "add labels in rounds until the barrier sigma reaches target_sigma"),
        "target_sigma": _positive("barrier uncertainty to stop at (adaptive)", "analysis.unit", 0.2),
        "budget": Key(int, 500, "most labels the adaptive rounds may use", low=2),
        "min_ess": Key(NUMBER, 5.0, "bins with a smaller Kish effective sample size are flagged", low=1),
        "max_beta_sigma": _positive("bins with a larger beta*sigma(dU) are flagged", "kT", 3.0),
    },
    "analysis": {
        "unit": Key(str, "kcal/mol", "energy unit of the results"),
        "transmission": Key(NUMBER, 1.0, "transmission coefficient of the Eyring rate", low=0, low_open=True, high=1),
        "rate_tolerance": _positive("relative rate tolerance for the barrier-precision estimate", None, 0.2),
    },
}

KAPPA_UNITS = SCHEMA["umbrella"]["kappa_unit"].choices


def _read(source):
    if isinstance(source, dict):
        return copy.deepcopy(source), None
    path = Path(os.fspath(source))
    if not path.exists():
        raise InputError(f"config file {path} does not exist")
    from .io_checks import read_text

    text = read_text(path, "config file")
    try:
        return tomllib.loads(text), path
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path} is not valid TOML: {exc}") from None


def load_config(source) -> dict:
    """Read and validate a config (TOML path or dict); return it with defaults filled in.

    Raises :class:`~fesurf.errors.InputError` naming the offending key.
    """
    raw, path = _read(source)
    where = f" in {path}" if path else ""
    unknown = sorted(set(raw) - set(SCHEMA))
    if unknown:
        raise InputError(f"unknown section [{unknown[0]}]{where}; known sections: {', '.join(SCHEMA)}")
    cfg = {}
    for section, keys in SCHEMA.items():
        given = raw.get(section, {})
        if not isinstance(given, dict):
            raise InputError(f"[{section}]{where} must be a table of keys")
        bad = sorted(set(given) - set(keys))
        if bad:
            raise InputError(f"unknown key '{section}.{bad[0]}'{where}; known keys in [{section}]: {', '.join(keys)}")
        cfg[section] = {}
        for key, spec in keys.items():
            if key in given:
                cfg[section][key] = _check_key(section, key, spec, given[key], where)
            elif spec.default is REQUIRED:
                raise InputError(f"missing required key '{section}.{key}'{where}")
            else:
                cfg[section][key] = copy.deepcopy(spec.default)
    _check_values(cfg, where, path)
    cfg["_path"] = None if path is None else str(path)
    return cfg


def _is(value, typ) -> bool:
    if isinstance(value, bool):
        return typ is bool
    return isinstance(value, typ)


def _check_key(section, key, spec: Key, value, where):
    """The value of one key, checked against its Key (type, range, choices); InputError naming it."""
    name = f"'{section}.{key}'{where}"
    if value is None or (spec.nullable and value == []):
        if spec.nullable:
            return None
        raise InputError(f"{name} must be a {spec.type_name()}, got nothing")
    if not _is(value, spec.type):
        got = "a boolean" if isinstance(value, bool) else repr(value)
        raise InputError(f"{name} must be a {spec.type_name()}, got {got}")
    if spec.type is list:
        if spec.length is not None and len(value) != spec.length:
            raise InputError(f"{name} must hold {spec.length} values, got {len(value)}")
        if spec.item is not None:
            for i, v in enumerate(value):
                if not _is(v, spec.item):
                    raise InputError(f"{name}[{i}] must be a {Key(spec.item, None, '').type_name()}, got {v!r}")
                _check_range(f"{name}[{i}]", spec, v)
            if spec.item == NUMBER:
                value = [float(v) for v in value]
        elif not value and not spec.nullable:
            raise InputError(f"{name} must not be empty")
        return value
    if spec.type == NUMBER:
        value = float(value)
    if spec.choices is not None and value not in spec.choices:
        raise InputError(f"{name} is {value!r}; use {spec.range_text()}")
    if isinstance(value, (int, float)):
        _check_range(name, spec, value)
    return value


def _check_range(name, spec: Key, value):
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    bad = ((spec.low is not None and (value < spec.low or (spec.low_open and value == spec.low)))
           or (spec.high is not None and value > spec.high))
    if bad:
        unit = f" ({spec.unit})" if spec.unit else ""
        raise InputError(f"{name} must be {spec.range_text()}{unit}, got {value!r}")


def _check_values(cfg, where, path):
    from .units import ENERGY_UNITS

    ex = cfg["run"]["executor"]
    if ex not in ("auto", "serial", "processes") and not ex.startswith(("tcp://", "tls://", "dask://", "ucx://")):
        raise InputError(f"'run.executor'{where} is {ex!r}; use \"auto\", \"serial\", \"processes\" or a Dask "
                         "scheduler address such as \"tcp://scheduler:8786\"")
    if cfg["analysis"]["unit"] not in ENERGY_UNITS:
        raise InputError(f"'analysis.unit'{where} is {cfg['analysis']['unit']!r}; use one of {', '.join(ENERGY_UNITS)}")
    for section in ("umbrella", "pmf"):
        rng = cfg[section]["range"]
        if rng is not None and not rng[0] < rng[1]:
            raise InputError(f"'{section}.range'{where} must be [low, high] in CV units with low < high, got {rng}")
    u = cfg["umbrella"]
    if u["n_production"] < u["stride"]:
        raise InputError(f"'umbrella.n_production'{where} ({u['n_production']}) is shorter than 'umbrella.stride' "
                         f"({u['stride']}): no frame would be recorded")
    if cfg["cv"]["type"] != "distance_difference" and not cfg["cv"]["atoms"]:
        raise InputError(f"'cv.atoms'{where} is needed for cv.type = {cfg['cv']['type']!r} (0-based atom indices)")
    subs = cfg["isotopes"]["substitute"]
    if subs is not None:
        from .md.ring_polymer import ISOTOPES

        ok = isinstance(subs, list) and subs and all(
            isinstance(x, list) and len(x) == 2 and _is(x[0], int) and x[0] >= 0 and isinstance(x[1], str)
            for x in subs)
        if not ok:
            raise InputError(f"'isotopes.substitute'{where} must be a list of [atom index, isotope] pairs, e.g. "
                             f'[[5, "D"]]; got {subs!r}')
        bad = [x[1] for x in subs if x[1] not in ISOTOPES]
        if bad:
            raise InputError(f"'isotopes.substitute'{where}: unknown isotope {bad[0]!r}; known: {', '.join(ISOTOPES)}")
        if cfg["pimd"]["beads"] < 2:
            raise InputError(f"'isotopes.substitute'{where} needs quantum nuclei: classical PMFs do not depend on "
                             "masses. Set 'pimd.beads' (e.g. 16)")
    if cfg["sampling"]["method"] == "hybrid_mc":
        h = cfg["hybrid_mc"]
        if cfg["pimd"]["beads"] > 1 or cfg["isotopes"]["substitute"]:
            raise InputError(f"'sampling.method'{where} = \"hybrid_mc\" samples classical nuclei; set 'pimd.beads' = 1 "
                             "and drop 'isotopes.substitute', or use sampling.method = \"umbrella\"")
        if h["n_production"] < h["stride"]:
            raise InputError(f"'hybrid_mc.n_production'{where} ({h['n_production']}) is shorter than "
                             f"'hybrid_mc.stride' ({h['stride']}): no frame would be recorded")
        if h["max_steps"] is not None and h["n_steps"] > h["max_steps"]:
            raise InputError(f"'hybrid_mc.n_steps'{where} ({h['n_steps']}) exceeds 'hybrid_mc.max_steps' "
                             f"({h['max_steps']})")
        if h["delayed_acceptance"] and h["proposal"] == "mc":
            raise InputError(f"'hybrid_mc.delayed_acceptance'{where} applies to proposal = \"md\"")
        if h["correction"] != "none" and h["n_equilibration"] < 30:
            raise InputError(f"'hybrid_mc.correction'{where} is fitted on the labels of the first third of "
                             "equilibration; set 'hybrid_mc.n_equilibration' >= 30 moves")
    if cfg["reweight"]["adaptive"] and cfg["reweight"]["budget"] < cfg["reweight"]["n_labels"]:
        raise InputError(f"'reweight.budget'{where} must be at least 'reweight.n_labels' (the first round)")
    if not cfg["active"]["lower"] < cfg["active"]["upper"]:
        raise InputError(f"'active.lower'{where} ({cfg['active']['lower']:g}) must be below 'active.upper' "
                         f"({cfg['active']['upper']:g}) (eV/A)")
    if cfg["active"]["check_every"] > cfg["active"]["steps"]:
        raise InputError(f"'active.check_every'{where} ({cfg['active']['check_every']}) exceeds 'active.steps' "
                         f"({cfg['active']['steps']}): no frame would be checked")
    for section, key, hint in (("surrogate", "model", " (leave it empty to train)"), ("system", "structure", "")):
        value = cfg[section][key]
        if section == "surrogate" and value.startswith(("mace:", "torchsim:")):  # external models (issue 19)
            from .surrogates.external import resolve_spec

            cfg[section][key] = resolve_spec(value, None if path is None else path.parent)
            continue
        if value and not value.startswith("builtin:"):
            p = Path(value)
            if not p.is_absolute() and path is not None:
                p = path.parent / p  # relative paths are relative to the config file
            if not p.exists():
                raise InputError(f"'{section}.{key}'{where}: file {value} does not exist{hint}")
            cfg[section][key] = str(p)
    if cfg["cv"]["type"] == "distance_difference":
        pairs = cfg["cv"]["pairs"]
        ok = (isinstance(pairs, list) and len(pairs) == 2
              and all(isinstance(p, list) and len(p) == 2 and all(_is(i, int) and i >= 0 for i in p) for p in pairs))
        if not ok:
            raise InputError(f"'cv.pairs'{where} must be two pairs of 0-based atom indices, e.g. [[0, 5], [4, 5]]; "
                             f"got {pairs!r}")


def kappa_in_ev(cfg) -> float:
    """Umbrella force constant in eV per CV unit^2 from ``umbrella.kappa`` and ``umbrella.kappa_unit``."""
    from .units import convert

    unit = cfg["umbrella"]["kappa_unit"].split("/A^2")[0]
    return float(convert(cfg["umbrella"]["kappa"], unit, "eV", temperature=cfg["run"]["temperature"]))
