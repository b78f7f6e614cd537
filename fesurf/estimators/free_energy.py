"""FreeEnergy: a free-energy result (scalar difference or profile) with uncertainty and unit.

Example
-------
>>> fe = FreeEnergy(2.0, 0.1, unit="kT", temperature=300.0, method="MBAR")
>>> round(fe.to("kJ/mol").value, 3)
4.989
>>> print(fe)
ΔA = 2.000 ± 0.100 kT (T = 300 K, MBAR)
"""
from __future__ import annotations

import json
import math
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..units import convert

_UNITS = ("kT", "kJ/mol", "kcal/mol", "eV", "meV")


def _jsonable(obj):
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()] if obj.ndim else _jsonable(obj.item())
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


class FreeEnergy:
    """Free-energy values with 1σ uncertainties, unit and (for a profile) the CV grid.

    Parameters
    ----------
    values : float or array
        A scalar ΔA (shape ``()``) or a profile: ``[n]`` along one CV or
        ``[nx, ny]`` on a 2D grid. NaN marks grid points with no data.
    uncertainties : float or array like ``values``, optional
        One standard deviation, same unit.
    unit : {"kT", "kJ/mol", "kcal/mol", "eV", "meV"}
    temperature : float, K
        Needed to convert to or from kT.
    grid : sequence of 1D arrays, optional
        Bin centres along each CV (one array per CV) for a profile.
    cv_names : sequence of str, optional
        Column names of the CVs (the CV expressions); CSV headers use them.
    cv_labels : sequence of str, optional
        Short human-readable axis labels with units, e.g. ``"d(O1–H) − d(O2–H) (Å)"``; plots use them
        (default: the names).
    method : str
        Estimator that produced it (e.g. "MBAR", "TI-gauss-legendre").
    diagnostics : dict, optional
        Overlap matrix, Kish ESS, statistical inefficiencies... (JSON-able).

    Example
    -------
    >>> import numpy as np
    >>> pmf = FreeEnergy(np.array([0.0, 1.0]), np.array([0.0, 0.1]), unit="kT", temperature=300.0,
    ...                  grid=[np.array([0.0, 0.5])], cv_names=["x"], method="MBAR-histogram")
    >>> pmf.is_profile, pmf.to("kcal/mol").unit
    (True, 'kcal/mol')
    """

    def __init__(self, values, uncertainties=None, *, unit: str = "kT", temperature: float | None = None,
                 grid: Sequence | None = None, cv_names: Sequence[str] | None = None, method: str = "",
                 diagnostics: dict | None = None, cv_labels: Sequence[str] | None = None):
        if unit not in _UNITS:
            raise InputError(f"unknown unit {unit!r}; use one of {', '.join(_UNITS)}")
        if unit == "kT" and temperature is None:
            pass  # allowed: stays in kT, cannot convert
        self.values = np.asarray(values, dtype=np.float64)
        self.uncertainties = None if uncertainties is None else np.asarray(uncertainties, dtype=np.float64)
        if self.uncertainties is not None and self.uncertainties.shape != self.values.shape:
            raise InputError(f"uncertainties shape {self.uncertainties.shape} != values shape {self.values.shape}")
        self.unit = unit
        self.temperature = None if temperature is None else float(temperature)
        self.grid = None if grid is None else [np.asarray(g, dtype=np.float64) for g in grid]
        if self.grid is not None:
            shape = tuple(g.size for g in self.grid)
            if shape != self.values.shape:
                raise InputError(f"grid sizes {shape} do not match values shape {self.values.shape}")
        n_cv = 0 if self.grid is None else len(self.grid)
        self.cv_names = list(cv_names) if cv_names is not None else [f"cv{i}" for i in range(n_cv)]
        self.cv_labels = list(cv_labels) if cv_labels is not None else None
        if self.cv_labels is not None and len(self.cv_labels) != len(self.cv_names):
            raise InputError(f"cv_labels has {len(self.cv_labels)} entries for {len(self.cv_names)} CVs")
        self.method = method
        self.diagnostics = dict(diagnostics or {})

    # ------------------------------------------------------------------ access
    @property
    def is_profile(self) -> bool:
        """True for a PMF / profile on a grid, False for a scalar ΔA."""
        return self.values.ndim > 0

    @property
    def value(self) -> float:
        """The scalar ΔA (InputError for a profile)."""
        if self.is_profile:
            raise InputError("this FreeEnergy is a profile; use .values")
        return float(self.values)

    @property
    def error(self) -> float | None:
        """1σ uncertainty of the scalar ΔA."""
        if self.is_profile:
            raise InputError("this FreeEnergy is a profile; use .uncertainties")
        return None if self.uncertainties is None else float(self.uncertainties)

    def to(self, unit: str) -> "FreeEnergy":
        """The same result in another unit (kT, kJ/mol, kcal/mol, eV, meV).

        Example
        -------
        >>> round(FreeEnergy(1.0, unit="kcal/mol").to("kJ/mol").value, 3)
        4.184
        """
        if unit not in _UNITS:
            raise InputError(f"unknown unit {unit!r}; use one of {', '.join(_UNITS)}")
        if "kT" in (unit, self.unit) and unit != self.unit and self.temperature is None:
            raise InputError("converting to or from kT needs the temperature; set FreeEnergy(temperature=...)")
        factor = 1.0 if unit == self.unit else convert(1.0, self.unit, unit, temperature=self.temperature)
        return FreeEnergy(self.values * factor,
                          None if self.uncertainties is None else self.uncertainties * factor,
                          unit=unit, temperature=self.temperature, grid=self.grid, cv_names=self.cv_names,
                          method=self.method, diagnostics=self.diagnostics, cv_labels=self.cv_labels)

    def shifted(self, offset: float) -> "FreeEnergy":
        """Values minus ``offset`` (same unit); e.g. ``pmf.shifted(np.nanmin(pmf.values))``."""
        out = self.to(self.unit)
        out.values = self.values - offset
        return out

    # ------------------------------------------------------------------ export
    def to_dict(self) -> dict:
        """JSON-able dict (NaN written as null)."""
        return _jsonable({
            "values": self.values, "uncertainties": self.uncertainties, "unit": self.unit,
            "temperature": self.temperature, "grid": self.grid, "cv_names": self.cv_names,
            "cv_labels": self.cv_labels, "method": self.method, "diagnostics": self.diagnostics,
        })

    def to_json(self, path=None) -> str:
        """JSON text (written to ``path`` when given); read back with :meth:`from_json`."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            with open(path, "w") as fh:
                fh.write(text)
        return text

    @classmethod
    def from_json(cls, text_or_path) -> "FreeEnergy":
        """Rebuild a FreeEnergy from :meth:`to_json` text or a file path."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            with open(text) as fh:
                text = fh.read()
        d = json.loads(text)

        def arr(v):
            return None if v is None else np.array(v, dtype=np.float64)  # None -> nan inside lists

        return cls(arr(d["values"]), arr(d["uncertainties"]), unit=d["unit"], temperature=d["temperature"],
                   grid=None if d["grid"] is None else [arr(g) for g in d["grid"]], cv_names=d["cv_names"],
                   method=d["method"], diagnostics=d.get("diagnostics"), cv_labels=d.get("cv_labels"))

    def _columns(self) -> dict:
        cols = {}
        if self.is_profile:
            if self.grid is None:
                cols["index"] = np.arange(self.values.size)
            else:
                mesh = np.meshgrid(*self.grid, indexing="ij")
                for name, m in zip(self.cv_names, mesh):
                    cols[name] = m.reshape(-1)
        cols[f"value_{self.unit}"] = self.values.reshape(-1)
        if self.uncertainties is not None:
            cols[f"sigma_{self.unit}"] = self.uncertainties.reshape(-1)
        return cols

    def to_dataframe(self):
        """A pandas DataFrame: CV columns (profiles), ``value_<unit>``, ``sigma_<unit>``."""
        import pandas as pd  # lazily: pandas is an optional dependency

        return pd.DataFrame(self._columns())

    def to_csv(self, path=None) -> str:
        """CSV text (written to ``path`` when given, UTF-8): a ``#`` comment line (method, T, unit), the header
        and one row per grid point, written by the ``csv`` module so CV names with commas, brackets or
        quotes are quoted. Read it back with ``pandas.read_csv(path, comment="#")``."""
        import csv
        import io

        cols = self._columns()
        names = list(cols)
        buf = io.StringIO()
        buf.write(f"# {self.method} T={self.temperature} K unit={self.unit}\n")
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(names)
        for row in zip(*(np.atleast_1d(cols[n]) for n in names)):
            writer.writerow([repr(float(v)) for v in row])
        text = buf.getvalue()
        if path is not None:
            with open(path, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
        return text

    def plot(self, ax=None, sigma: float = 2.0, path=None, **kwargs):
        """Plot the profile with a ±``sigma``·σ band (1D) or a filled contour (2D); returns the Figure."""
        from .plots import plot_free_energy

        return plot_free_energy(self, ax=ax, sigma=sigma, path=path, **kwargs)

    # ------------------------------------------------------------------ display
    def __str__(self):
        t = "" if self.temperature is None else f"T = {self.temperature:g} K"
        tail = ", ".join(x for x in (t, self.method) if x)
        tail = f" ({tail})" if tail else ""
        if not self.is_profile:
            err = "" if self.uncertainties is None else f" ± {float(self.uncertainties):.3f}"
            return f"ΔA = {float(self.values):.3f}{err} {self.unit}{tail}"
        finite = np.isfinite(self.values)
        rng = (f"range {np.nanmin(self.values):.3f} .. {np.nanmax(self.values):.3f} {self.unit}"
               if finite.any() else "no finite values")
        cvs = " x ".join(f"{n}[{g.size}]" for n, g in zip(self.cv_names, self.grid or []))
        return f"PMF over {cvs or self.values.shape}: {rng}, {int(finite.sum())}/{self.values.size} points with data{tail}"

    def __repr__(self):
        return f"<FreeEnergy {self}>"

    def _repr_html_(self):
        if not self.is_profile:
            return f"<pre>{self}</pre>"
        return f"<pre>{self}</pre>" + self.to_dataframe().head(10).to_html()
