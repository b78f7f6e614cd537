"""Well-tempered metadynamics: Gaussian hills on CVs, PLUMED HILLS files, reweighting.

:class:`METAD` is a bias Potential. Call :meth:`METAD.deposit` every ``pace``
steps (the metadynamics protocol in :mod:`fesurf.sampling.metadynamics` does
it): each replica drops a Gaussian of width ``sigma`` at its current CV value
with height ``height * exp(-V(s) / (kB * (biasfactor - 1) * T))``
(Barducci, Bussi, Parrinello 2008). Hills are per replica (independent runs)
or shared by all replicas (multiple walkers). The bias is a vectorised sum
over hills (no grid), fine for ~1e4 hills.

Reweighting: :meth:`METAD.ct` gives the Tiwary–Parrinello c(t) on a grid and
:meth:`METAD.log_weights` the frame log-weights ``beta (V(s, t) - c(t))``; or
reweight by the final bias, ``beta V_final(s)``; or read the free energy from
the bias directly, ``F(s) = -gamma/(gamma - 1) V(s)`` (:meth:`METAD.free_energy`).

Units: sigma in CV units, height in eV, temperature in K, pace in steps,
timestep in fs. HILLS files are written in PLUMED's native units (kJ/mol,
nm, ps) by default so ``plumed sum_hills`` reads them; heights there are
scaled by gamma/(gamma-1) as PLUMED does for well-tempered runs.

Example
-------
>>> from fesurf.state import State
>>> from fesurf.cv import POSITION
>>> s = State(positions=[[0.0, 0, 0]], atomic_numbers=[1])
>>> m = METAD(POSITION(0, "x"), sigma=0.1, height=0.01, pace=10, biasfactor=5.0, temperature=300.0)
>>> m.deposit(s, step=10)
>>> round(float(m.energy(s)[0]), 6), m.n_hills
(0.01, 1)
"""
from __future__ import annotations

import logging
import math
import os

import numpy as np
import torch

from ..errors import InputError
from ..units import KB, convert
from .base import CVBias, per_window

log = logging.getLogger(__name__)


class METAD(CVBias):
    """(Well-tempered) metadynamics bias.

    Parameters
    ----------
    cvs : CV, spec dict or list (1 or 2 CVs typical)
    sigma : Gaussian widths, CV units (number or one per CV)
    height : initial hill height, eV
    pace : deposition stride in MD steps
    biasfactor : gamma > 1 for well-tempered; None for plain metadynamics
    temperature : K (needed for well-tempering and reweighting)
    shared : True: all replicas add to and feel one set of hills (multiple
        walkers); False (default): each replica has its own hills.
    timestep : fs, only used for the time column of HILLS files
    labels : CV names for HILLS headers (default cv0, cv1, ...)

    >>> from fesurf.cv import TORSION
    >>> METAD(TORSION([0, 1, 2, 3]), sigma=0.3, height=0.005, pace=100, biasfactor=10, temperature=300).gamma
    10.0
    """

    def __init__(self, cvs, sigma, height, pace, biasfactor=None, temperature=None, shared=False,
                 timestep=1.0, labels=None):
        super().__init__(cvs)
        self.register_buffer("sigma", per_window(sigma, self.n_cvs, "METAD sigma", positive=True, allow_zero=False))
        if self.sigma.shape[0] != 1:
            raise InputError("METAD sigma is one value per CV (shared by all replicas)")
        if not (height > 0 and math.isfinite(height)):
            raise InputError(f"METAD height must be a positive energy in eV, got {height}")
        if int(pace) < 1:
            raise InputError(f"METAD pace must be >= 1 MD steps, got {pace}")
        if biasfactor is not None and not biasfactor > 1:
            raise InputError(f"METAD biasfactor must be > 1 (well-tempered) or None (plain), got {biasfactor}")
        if biasfactor is not None and not (temperature and temperature > 0):
            raise InputError("well-tempered METAD needs temperature= in K")
        self.height, self.pace = float(height), int(pace)
        self.gamma = None if biasfactor is None else float(biasfactor)
        self.temperature = None if temperature is None else float(temperature)
        self.shared = bool(shared)
        self.timestep = float(timestep)
        self.labels = list(labels) if labels is not None else [f"cv{j}" for j in range(self.n_cvs)]
        if len(self.labels) != self.n_cvs:
            raise InputError(f"METAD got {len(self.labels)} labels for {self.n_cvs} CVs")
        self.register_buffer("centers", torch.zeros(0, self.n_cvs, dtype=torch.float64))
        self.register_buffer("heights", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("owners", torch.zeros(0, dtype=torch.long))
        self.register_buffer("steps", torch.zeros(0, dtype=torch.long))
        self.replica_map = None  # row i of a State uses the hills of replica replica_map[i]

    # ------------------------------------------------------------ energy
    @property
    def n_hills(self) -> int:
        return int(self.heights.shape[0])

    def _map(self, n):
        if self.replica_map is None:
            return torch.arange(n)
        if self.replica_map.numel() != n:
            raise InputError(f"METAD was used with {self.replica_map.numel()} replicas but now sees {n}; "
                             "use one METAD object per batch layout")
        return self.replica_map

    def _hills_at(self, s, replicas=None):
        """``(d [n, H, n_cvs], g [n, H])``: scaled distances (s - c) / sigma to every hill and the hill
        energies (eV) felt by each row (zero for another replica's hills)."""
        d = self.difference(s[:, None, :], self.centers[None, :, :].to(s.dtype)) / self.sigma.to(s.dtype)
        g = torch.exp(-0.5 * (d * d).sum(dim=-1)) * self.heights.to(s.dtype)
        if not self.shared:
            rep = self._map(s.shape[0]) if replicas is None else torch.as_tensor(replicas)
            g = g * (self.owners[None, :] == rep[:, None])
        return d, g

    def energy_from_cv(self, s, replicas=None):
        """Bias (eV) at CV values ``s [n, n_cvs]``; row i feels the hills of replica ``replicas[i]``."""
        if self.n_hills == 0:
            return s.sum(dim=-1) * 0.0
        return self._hills_at(s, replicas)[1].sum(dim=-1)

    def energy_and_cv_gradient(self, s):
        """``(V, dV/ds)``: ``dV/ds_j = -sum_h g_h (s_j - c_hj) / sigma_j^2`` (the minimum-image difference
        has unit derivative)."""
        if self.n_hills == 0:
            return s.sum(dim=-1) * 0.0, torch.zeros_like(s)
        d, g = self._hills_at(s)
        return g.sum(dim=-1), -(g[:, :, None] * d).sum(dim=1) / self.sigma.to(s.dtype)

    def select_systems(self, systems):
        new = self._copy()
        new.replica_map = self._map(max(systems) + 1 if self.replica_map is None else self.replica_map.numel())[
            torch.as_tensor(systems, dtype=torch.long)] if not self.shared else None
        return new

    # -------------------------------------------------------- deposition
    def hill_heights(self, s, replicas=None):
        """Heights (eV) of hills deposited now at ``s [n, n_cvs]`` (well-tempered rescaling)."""
        if self.gamma is None:
            return torch.full((s.shape[0],), self.height, dtype=torch.float64)
        v = self.energy_from_cv(s, replicas)
        return self.height * torch.exp(-v / (KB * self.temperature * (self.gamma - 1.0)))

    def deposit(self, state, step: int):
        """Add one hill per replica at the current CV values; ``step`` is the MD step (for HILLS time)."""
        with torch.no_grad():
            s = self.cv_values(state).detach().to(torch.float64)
            reps = self._map(state.n_systems)
            w = self.hill_heights(s, reps)
        self.add_hills(s, w, reps, torch.full((s.shape[0],), int(step), dtype=torch.long))

    def add_hills(self, centers, heights, owners, steps):
        """Append hills (true heights in eV, not PLUMED-scaled)."""
        self.centers = torch.cat([self.centers, torch.as_tensor(centers, dtype=torch.float64).reshape(-1, self.n_cvs)])
        self.heights = torch.cat([self.heights, torch.as_tensor(heights, dtype=torch.float64).reshape(-1)])
        self.owners = torch.cat([self.owners, torch.as_tensor(owners, dtype=torch.long).reshape(-1)])
        self.steps = torch.cat([self.steps, torch.as_tensor(steps, dtype=torch.long).reshape(-1)])

    def truncate(self, n_hills: int):
        """Keep only the first ``n_hills`` hills (used when resuming from a checkpoint)."""
        self.centers, self.heights = self.centers[:n_hills].clone(), self.heights[:n_hills].clone()
        self.owners, self.steps = self.owners[:n_hills].clone(), self.steps[:n_hills].clone()

    def hills(self) -> dict:
        """The hills as numpy arrays: centers [H, n_cvs], heights (eV), owners, steps."""
        return {"centers": self.centers.numpy().copy(), "heights": self.heights.numpy().copy(),
                "owners": self.owners.numpy().copy(), "steps": self.steps.numpy().copy()}

    def parameters_spec(self) -> dict:
        return {"type": "METAD", "cvs": [c.to_spec() for c in self.cvs], "sigma": self.sigma[0].tolist(),
                "height": self.height, "pace": self.pace, "biasfactor": self.gamma, "temperature": self.temperature,
                "shared": self.shared, "labels": self.labels}

    # ------------------------------------------------------------ analysis
    def _owner_list(self, owner):
        return None if self.shared else int(owner)

    def grid_energy(self, grid: np.ndarray, owner: int = 0, upto: int | None = None) -> np.ndarray:
        """Bias (eV) on grid points ``[G, n_cvs]`` from the first ``upto`` hills of replica ``owner``."""
        pts = torch.as_tensor(np.asarray(grid, dtype=np.float64).reshape(-1, self.n_cvs))
        sel = slice(None) if upto is None else slice(0, upto)
        c, h, o = self.centers[sel], self.heights[sel], self.owners[sel]
        if not self.shared:
            keep = o == int(owner)
            c, h = c[keep], h[keep]
        out = torch.zeros(pts.shape[0], dtype=torch.float64)
        for a in range(0, c.shape[0], 2048):
            d = self.difference(pts[:, None, :], c[None, a:a + 2048]) / self.sigma
            out += (torch.exp(-0.5 * (d * d).sum(-1)) * h[a:a + 2048]).sum(-1)
        return out.numpy()

    def free_energy(self, grid, owner: int = 0) -> np.ndarray:
        """Free energy (eV, up to a constant) on ``grid [G, n_cvs]``: -gamma/(gamma-1) V (WT) or -V (plain)."""
        factor = 1.0 if self.gamma is None else self.gamma / (self.gamma - 1.0)
        return -factor * self.grid_energy(grid, owner)

    def ct(self, grid, owner: int = 0):
        """Tiwary–Parrinello c(t) (eV) after every deposition of replica ``owner``.

        ``c(t) = kT ln[ sum_s exp(gamma/(gamma-1) V(s,t)/kT) / sum_s exp(V(s,t)/((gamma-1) kT)) ]``
        over ``grid [G, n_cvs]`` (uniform spacing; it cancels). Returns
        ``(steps [n_events], c [n_events])``; before the first deposition c = 0.
        """
        if self.gamma is None or self.temperature is None:
            raise InputError("c(t) reweighting needs a well-tempered METAD (biasfactor and temperature)")
        kt = KB * self.temperature
        g = self.gamma
        pts = torch.as_tensor(np.asarray(grid, dtype=np.float64).reshape(-1, self.n_cvs))
        keep = torch.ones(self.n_hills, dtype=torch.bool) if self.shared else self.owners == int(owner)
        c, h, st = self.centers[keep], self.heights[keep], self.steps[keep]
        if c.shape[0] == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        uniq, inverse = torch.unique(st, return_inverse=True)
        v = torch.zeros(pts.shape[0], dtype=torch.float64)
        out = np.empty(len(uniq))
        for e in range(len(uniq)):
            idx = torch.nonzero(inverse == e).flatten()
            d = self.difference(pts[:, None, :], c[idx][None]) / self.sigma
            v += (torch.exp(-0.5 * (d * d).sum(-1)) * h[idx]).sum(-1)
            a = torch.logsumexp(g / (g - 1.0) * v / kt, 0) - torch.logsumexp(v / ((g - 1.0) * kt), 0)
            out[e] = float(kt * a)
        return uniq.numpy(), out

    def log_weights(self, bias_energy, frame_steps, grid=None, method: str = "ct", s=None, owner: int = 0):
        """Log reweighting factors (in kT units) of frames of a metadynamics run.

        ``method="ct"``: ``beta (V(s_n, t_n) - c(t_n))`` with ``bias_energy`` the
        bias (eV) each frame felt when recorded and ``frame_steps`` its MD step
        (c is the value after the last deposition before that step; needs
        ``grid``). ``method="final"``: ``beta V_final(s_n)``, needs the frames'
        CV values ``s [n, n_cvs]``.
        """
        if self.temperature is None:
            raise InputError("reweighting needs temperature= on the METAD bias")
        beta = 1.0 / (KB * self.temperature)
        if method == "final":
            if s is None:
                raise InputError("method='final' needs the frames' CV values s=")
            return beta * self.grid_energy(np.asarray(s), owner)
        if method != "ct":
            raise InputError(f"unknown reweighting method {method!r}; use 'ct' or 'final'")
        if grid is None:
            raise InputError("method='ct' needs grid= (points [G, n_cvs] covering the explored CV range)")
        steps, c = self.ct(grid, owner)
        frame_steps = np.asarray(frame_steps)
        pos = np.searchsorted(steps, frame_steps, side="left") - 1  # hills deposited before the frame
        c_frame = np.where(pos >= 0, c[np.clip(pos, 0, None)] if len(c) else 0.0, 0.0)
        return beta * (np.asarray(bias_energy, dtype=np.float64) - c_frame)

    # --------------------------------------------------------- HILLS files
    def write_hills(self, path, units: str = "plumed") -> list[str]:
        """Write the hills in PLUMED's HILLS format; returns the paths written.

        One file ``path`` for shared hills or a single replica, else
        ``path.0``, ``path.1``, ... (one per replica, as PLUMED's multiple
        walkers). ``units="plumed"``: kJ/mol, nm, ps (PLUMED's defaults);
        ``units="fesurf"``: eV, Angstrom, fs.
        """
        if units not in ("plumed", "fesurf"):
            raise InputError(f"units must be 'plumed' or 'fesurf', got {units!r}")
        e_fac = convert(1.0, "eV", "kJ/mol") if units == "plumed" else 1.0
        t_fac = 1e-3 if units == "plumed" else 1.0
        cv_fac = []
        for cv in self.cvs:
            p = cv.length_power
            if p is None and units == "plumed":
                raise InputError(f"{cv.label()} mixes units, so it cannot be converted to PLUMED units; "
                                 "write the HILLS with units='fesurf'")
            cv_fac.append(0.1 ** p if units == "plumed" else 1.0)
        cv_fac = np.asarray(cv_fac)
        scale = 1.0 if self.gamma is None else self.gamma / (self.gamma - 1.0)
        biasf = 1.0 if self.gamma is None else self.gamma
        owners = [0] if self.shared else sorted(set(self.owners.tolist())) or [0]
        header = ["#! FIELDS time " + " ".join(self.labels) + " " + " ".join(f"sigma_{lab}" for lab in self.labels)
                  + " height biasf", "#! SET multivariate false", "#! SET kerneltype stretched-gaussian"]
        for lab, cv, fac in zip(self.labels, self.cvs, cv_fac):
            if cv.periodic:
                lo, hi = cv.period
                header += [f"#! SET min_{lab} {_fmt_bound(lo * fac)}", f"#! SET max_{lab} {_fmt_bound(hi * fac)}"]
        paths = []
        for o in owners:
            p = str(path) if len(owners) == 1 else f"{path}.{o}"
            keep = torch.ones(self.n_hills, dtype=torch.bool) if self.shared else self.owners == o
            c = self.centers[keep].numpy() * cv_fac
            h = self.heights[keep].numpy() * e_fac * scale
            t = self.steps[keep].numpy() * self.timestep * t_fac
            sig = np.broadcast_to(self.sigma.numpy()[0] * cv_fac, c.shape)
            data = np.column_stack([t, c, sig, h, np.full(len(h), biasf)])
            tmp = p + ".tmp"
            with open(tmp, "w") as fh:
                fh.write("\n".join(header) + "\n")
                np.savetxt(fh, data, fmt="%24.16g")
            os.replace(tmp, p)
            paths.append(p)
        return paths

    def read_hills(self, path, units: str = "plumed", owner: int = 0, timestep: float | None = None):
        """Append the hills of a HILLS file written by PLUMED or :meth:`write_hills` (as replica ``owner``)."""
        data = np.loadtxt(path, comments="#", ndmin=2)
        d = self.n_cvs
        if data.shape[1] != 2 * d + 3:
            raise InputError(f"{path} has {data.shape[1]} columns; a {d}-CV HILLS file has {2 * d + 3}")
        e_fac = convert(1.0, "eV", "kJ/mol") if units == "plumed" else 1.0
        t_fac = 1e-3 if units == "plumed" else 1.0
        cv_fac = np.asarray([0.1 ** (c.length_power or 0) if units == "plumed" else 1.0 for c in self.cvs])
        biasf = data[:, -1]
        scale = np.where(biasf > 1, biasf / np.where(biasf > 1, biasf - 1.0, 1.0), 1.0)
        dt = self.timestep if timestep is None else timestep
        steps = np.rint(data[:, 0] / (t_fac * dt)).astype(np.int64)
        self.add_hills(data[:, 1:1 + d] / cv_fac, data[:, -2] / e_fac / scale, np.full(len(data), owner), steps)


def _fmt_bound(x):
    if abs(abs(x) - math.pi) < 1e-12:
        return "-pi" if x < 0 else "pi"
    return repr(float(x))
