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
import os
from pathlib import Path

from .errors import InputError

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REQUIRED = object()

#: section -> key -> (type or tuple of types, default)
SCHEMA = {
    "run": {
        "output": (str, "runs/fesurf"),
        "temperature": ((int, float), 300.0),  # K
        "seed": (int, 0),
        "workers": (int, 1),  # processes for reference (QM) calls
    },
    "system": {
        "structure": (str, REQUIRED),  # "builtin:malonaldehyde" or a file ase.io can read
        "charge": ((int, float), 0),
        "multiplicity": (int, 1),
    },
    "oracle": {
        "method": (str, "GFN2-xTB"),  # GFN2-xTB, GFN1-xTB, or DFT (PySCF)
        "xc": (str, "B3LYP"),
        "basis": (str, "def2-SVP"),
    },
    "surrogate": {
        "model": (str, ""),  # "builtin:malonaldehyde_committee", a .pt file, or "" to train
        "n_members": (int, 4),
        "hidden": (list, [32, 32]),
        "dtype": (str, "float64"),
        "compile": (bool, False),  # torch.compile the BP MD path (needs a C++ compiler; pays off in long runs)
    },
    "generate": {
        "temperatures": (list, [300.0, 600.0, 1000.0]),  # K
        "frames_per_temperature": (int, 200),
        "biased_frames_per_window": (int, 20),
        "biased_windows": (int, 8),
        "stride": (int, 10),
        "timestep": ((int, float), 0.5),  # fs
    },
    "train": {
        "epochs": (int, 200),
        "max_time": ((int, float), 600.0),  # s
        "force_weight": ((int, float), 0.005),
        "validation_fraction": ((int, float), 0.1),
    },
    "cv": {
        "type": (str, REQUIRED),  # distance_difference, or a PLUMED name (DISTANCE, ANGLE, TORSION, ...)
        "pairs": (list, None),
        "atoms": (list, None),
    },
    "umbrella": {
        "range": (list, [-0.8, 0.8]),  # CV units
        "n_windows": (int, 16),
        "kappa": ((int, float), 2.0),
        "kappa_unit": (str, "eV/A^2"),
        "timestep": ((int, float), 0.5),  # fs
        "friction": ((int, float), 0.02),  # 1/fs
        "n_equilibration": (int, 1000),
        "n_production": (int, 10000),
        "stride": (int, 20),
        "checkpoint_every": (int, 1000),
    },
    "pmf": {
        "bins": (int, 30),
        "range": (list, None),
    },
    "reweight": {
        "n_labels": (int, 200),  # labels (the first round's, when adaptive)
        "estimator": (str, "wtp"),  # "wtp" (per-bin wTP) or "delta" (delta-learned dU + residual wTP)
        "adaptive": (bool, False),
        "target_sigma": ((int, float), 0.2),  # in analysis.unit
        "budget": (int, 500),
        "min_ess": ((int, float), 5.0),
        "max_beta_sigma": ((int, float), 3.0),
    },
    "analysis": {
        "unit": (str, "kcal/mol"),
        "transmission": ((int, float), 1.0),
        "rate_tolerance": ((int, float), 0.2),
    },
}

KAPPA_UNITS = {"eV/A^2": 1.0, "kJ/mol/A^2": None, "kcal/mol/A^2": None, "kT/A^2": None}


def _read(source):
    if isinstance(source, dict):
        return copy.deepcopy(source), None
    path = Path(os.fspath(source))
    if not path.exists():
        raise InputError(f"config file {path} does not exist")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh), path
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
        for key, (typ, default) in keys.items():
            if key in given:
                value = given[key]
                if isinstance(value, bool) and typ is not bool:
                    raise InputError(f"'{section}.{key}'{where} must be {_name(typ)}, got a boolean")
                if not isinstance(value, typ):
                    raise InputError(f"'{section}.{key}'{where} must be {_name(typ)}, got {value!r}")
                cfg[section][key] = float(value) if typ == (int, float) else value
            elif default is REQUIRED:
                raise InputError(f"missing required key '{section}.{key}'{where}")
            else:
                cfg[section][key] = copy.deepcopy(default)
    _check_values(cfg, where, path)
    cfg["_path"] = None if path is None else str(path)
    return cfg


def _name(typ):
    if isinstance(typ, tuple):
        return "a number"
    return {str: "a string", int: "an integer", list: "a list", bool: "true or false"}.get(typ, typ.__name__)


def _check_values(cfg, where, path):
    from .units import ENERGY_UNITS

    if cfg["run"]["temperature"] <= 0:
        raise InputError(f"'run.temperature'{where} must be positive (K)")
    if cfg["umbrella"]["kappa_unit"] not in KAPPA_UNITS:
        raise InputError(f"'umbrella.kappa_unit'{where} is {cfg['umbrella']['kappa_unit']!r}; "
                         f"use one of {', '.join(KAPPA_UNITS)}")
    if cfg["umbrella"]["kappa"] <= 0:
        raise InputError(f"'umbrella.kappa'{where} must be positive")
    if cfg["analysis"]["unit"] not in ENERGY_UNITS:
        raise InputError(f"'analysis.unit'{where} is {cfg['analysis']['unit']!r}; use one of {', '.join(ENERGY_UNITS)}")
    rng = cfg["umbrella"]["range"]
    if len(rng) != 2 or not all(isinstance(v, (int, float)) for v in rng) or rng[0] >= rng[1]:
        raise InputError(f"'umbrella.range'{where} must be [low, high] in CV units with low < high")
    if cfg["umbrella"]["n_windows"] < 2:
        raise InputError(f"'umbrella.n_windows'{where} must be >= 2")
    if cfg["reweight"]["estimator"] not in ("wtp", "delta"):
        raise InputError(f"'reweight.estimator'{where} is {cfg['reweight']['estimator']!r}; use 'wtp' (per-bin "
                         "weighted thermodynamic perturbation) or 'delta' (delta-learned correction + residual wTP)")
    if cfg["reweight"]["adaptive"] and cfg["reweight"]["budget"] < cfg["reweight"]["n_labels"]:
        raise InputError(f"'reweight.budget'{where} must be at least 'reweight.n_labels' (the first round)")
    if cfg["oracle"]["method"] not in ("GFN2-xTB", "GFN1-xTB", "DFT"):
        raise InputError(f"'oracle.method'{where} is {cfg['oracle']['method']!r}; use GFN2-xTB, GFN1-xTB or DFT")
    for section, key, hint in (("surrogate", "model", " (leave it empty to train)"), ("system", "structure", "")):
        value = cfg[section][key]
        if value and not value.startswith("builtin:"):
            p = Path(value)
            if not p.is_absolute() and path is not None:
                p = path.parent / p  # relative paths are relative to the config file
            if not p.exists():
                raise InputError(f"'{section}.{key}'{where}: file {value} does not exist{hint}")
            cfg[section][key] = str(p)
    if cfg["cv"]["type"] == "distance_difference":
        pairs = cfg["cv"]["pairs"]
        if not (isinstance(pairs, list) and len(pairs) == 2 and all(isinstance(p, list) and len(p) == 2 for p in pairs)):
            raise InputError(f"'cv.pairs'{where} must be two atom pairs, e.g. [[0, 5], [4, 5]]")


def kappa_in_ev(cfg) -> float:
    """Umbrella force constant in eV per CV unit^2 from ``umbrella.kappa`` and ``umbrella.kappa_unit``."""
    from .units import convert

    unit = cfg["umbrella"]["kappa_unit"].split("/A^2")[0]
    return float(convert(cfg["umbrella"]["kappa"], unit, "eV", temperature=cfg["run"]["temperature"]))
