"""Run-folder report: diagnostic plots and a summary of a finished or partial run.

:func:`write_run_report` (called by the pipeline's analysis stage, and by ``fesurf report``) saves, next
to the run's other files:

* ``overlap.png`` — the MBAR overlap matrix of the umbrella windows;
* ``histograms.png`` — the CV histogram of every window (gaps mean missing overlap);
* ``convergence.png`` — forward/reverse convergence of the surrogate PMF (max |PMF - final|);
* ``reweight_bins.png`` and ``reweight_bins.csv`` — per-bin reweighting diagnostics: labels, Kish ESS,
  beta*sigma(dU) against their thresholds, surrogate and corrected PMF with the flagged bins marked;
* ``report.json`` — the numbers behind the plots.

Every CV axis carries the CV's human-readable label and unit (``d(O1–H) − d(O2–H) (Å)``).

:func:`report_run_folder` rebuilds what it can from a run folder alone (``samples.h5``,
``pmf_surrogate.csv``, ``qm_labels.npz``, ``stages.json``), so a run killed half way still gets its
window histograms and overlap matrix.

Example
-------
>>> # paths = write_run_report(run.dir, samples, pmf_surrogate, reweighted, symbols=atoms.get_chemical_symbols())
>>> # text = report_run_folder("runs/malonaldehyde")
"""
from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError, SimulationError

log = logging.getLogger(__name__)

PLOTS = ("overlap", "histograms", "convergence", "reweight_bins")


@dataclass(frozen=True)
class ReportSettings:
    """What a run report computes: ``fractions`` of the data for the convergence plot, the PNG ``dpi``,
    and the energy ``unit`` of the plots (kT, kJ/mol, kcal/mol, eV)."""

    fractions: tuple = (0.25, 0.5, 0.75, 1.0)
    dpi: int = 120
    unit: str = "kcal/mol"


def _labels(samples, symbols):
    from ..cv import cv_axis_labels

    if symbols is not None:
        return cv_axis_labels(samples.cv_definitions, list(symbols))
    return samples.cv_labels


def _save(fig, path, dpi):
    fig.savefig(path, dpi=dpi)
    return Path(path)


def _overlap_matrix(samples, pmf):
    if pmf is not None and "overlap_matrix" in pmf.diagnostics:
        return np.asarray(pmf.diagnostics["overlap_matrix"], dtype=np.float64)
    from ..estimators.deltaf import delta_f

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(delta_f(samples, "MBAR", warn=False).diagnostics["overlap_matrix"])


def plot_reweight_bins(result, cv_label: str = "CV", path=None, dpi: int = 120):
    """Three panels over the PMF bins: labels and Kish ESS, beta*sigma(dU), surrogate vs corrected PMF;
    flagged bins shaded. ``result``: a :class:`~fesurf.estimators.reweight.ReweightResult`."""
    from matplotlib.figure import Figure

    from ..estimators.reweight import MAX_BETA_SIGMA, MIN_ESS

    pb = result.per_bin
    x = np.asarray(result.surrogate.grid[0])
    width = float(np.median(np.diff(x))) if x.size > 1 else 1.0
    fig = Figure(figsize=(6.0, 7.0), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True)
    flagged = np.asarray(result.flagged, dtype=bool)
    for ax in axes:
        for xb in x[flagged]:
            ax.axvspan(xb - width / 2, xb + width / 2, color="tab:red", alpha=0.12, lw=0)
    axes[0].bar(x, pb["n_labels"], width=0.9 * width, color="0.7", label="labels")
    axes[0].plot(x, pb["kish_ess"], "o-", color="tab:blue", label="Kish ESS")
    axes[0].axhline(MIN_ESS, color="tab:blue", ls=":", lw=1, label=f"min ESS {MIN_ESS:g}")
    axes[0].set_ylabel("labels / ESS")
    axes[0].legend(frameon=False, fontsize=8)
    axes[1].plot(x, pb["beta_sigma"], "o-", color="tab:orange")
    axes[1].axhline(MAX_BETA_SIGMA, color="tab:orange", ls=":", lw=1, label=f"max {MAX_BETA_SIGMA:g}")
    axes[1].set_ylabel("β·σ(ΔU)")
    axes[1].legend(frameon=False, fontsize=8)
    unit = result.surrogate.unit
    axes[2].plot(x, result.surrogate.values, label="surrogate")
    axes[2].plot(x, result.corrected.values, "o-", ms=3, label="corrected")
    axes[2].set_ylabel(f"PMF / {unit}")
    axes[2].set_xlabel(cv_label)
    axes[2].legend(frameon=False, fontsize=8)
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def reweight_bins_frame(result, cv_name: str = "cv"):
    """The per-bin diagnostics as a pandas DataFrame (one row per bin; PMFs in the result's unit)."""
    import pandas as pd

    unit = result.surrogate.unit
    cols = {cv_name: np.asarray(result.surrogate.grid[0])}
    for key, val in result.per_bin.items():
        arr = np.asarray(val)
        if arr.ndim == 1 and arr.size == cols[cv_name].size:
            cols[key] = arr
    cols[f"pmf_surrogate_{unit}"] = result.surrogate.values
    cols[f"pmf_corrected_{unit}"] = result.corrected.values
    cols["flagged"] = np.asarray(result.flagged, dtype=bool)
    return pd.DataFrame(cols)


def write_run_report(run_dir, samples, pmf_surrogate=None, reweight_result=None, *,
                     symbols: Sequence[str] | None = None, settings: ReportSettings | None = None) -> dict:
    """Save the run folder's diagnostic plots (see the module doc) and ``report.json``; returns
    ``{name: path}`` of what was written.

    Parameters
    ----------
    run_dir : folder to write into.
    samples : the run's SampleSet (umbrella windows with CV values).
    pmf_surrogate : its MBAR PMF (FreeEnergy), optional: gives the bins of the convergence plot and the
        overlap matrix (else both are computed here).
    reweight_result : :class:`~fesurf.estimators.reweight.ReweightResult`, optional (the per-bin plot).
    symbols : chemical symbols of one system, for CV labels such as ``d(O1–H) − d(O2–H) (Å)``.
    settings : :class:`ReportSettings`.

    Example
    -------
    >>> write_run_report(run.dir, p.samples, p.pmf_surrogate, p.reweighted,
    ...                  symbols=p.atoms.get_chemical_symbols())        # doctest: +SKIP
    """
    from ..estimators.convergence import convergence
    from ..estimators.plots import plot_convergence, plot_overlap, plot_window_histograms
    from ..estimators.pmf import compute_pmf

    st = settings or ReportSettings()
    out_dir = Path(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if samples is None or samples.n_frames == 0:
        raise InputError("the run has no sampled frames yet; nothing to plot")
    labels = _labels(samples, symbols)
    written, numbers = {}, {"n_frames": int(samples.n_frames), "N_k": samples.N_k.tolist(),
                            "cv_labels": labels, "unit": st.unit}

    skipped = numbers["skipped"] = {}

    def attempt(name, make):
        """Make one plot; an estimator that cannot run on this data (a partial run) skips it, with the reason."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                make()
        except (InputError, SimulationError) as exc:
            skipped[name] = " ".join(str(exc).split())
            log.warning("run report: no %s plot: %s", name, skipped[name])

    def overlap_plot():
        overlap = _overlap_matrix(samples, pmf_surrogate)
        fig = plot_overlap(overlap)
        fig.axes[0].set_title("MBAR overlap of the windows")
        written["overlap"] = _save(fig, out_dir / "overlap.png", st.dpi)
        neighbour = [float(overlap[k, k + 1]) for k in range(overlap.shape[0] - 1)]
        numbers["min_neighbour_overlap"] = min(neighbour) if neighbour else None

    def histogram_plot():
        fig = plot_window_histograms(samples, cv=0)
        fig.axes[0].set_xlabel(labels[0])
        written["histograms"] = _save(fig, out_dir / "histograms.png", st.dpi)

    def convergence_plot():
        if pmf_surrogate is not None and "bin_edges" in pmf_surrogate.diagnostics:
            edges = np.asarray(pmf_surrogate.diagnostics["bin_edges"][0], dtype=np.float64)
        else:
            edges = default_edges(samples)
        conv = convergence(samples, compute_pmf, fractions=list(st.fractions), bins=edges, unit=st.unit, warn=False)
        fig = plot_convergence(conv)
        fig.axes[0].set_title(f"surrogate PMF along {labels[0]}", fontsize=9)
        written["convergence"] = _save(fig, out_dir / "convergence.png", st.dpi)
        final = conv.forward[-1].values
        numbers["convergence_max_abs_dev"] = {
            d: [float(np.nanmax(np.abs(v - np.nanmean(v - final) - final))) for v in conv.values(d)]
            for d in ("forward", "reverse")}
        numbers["convergence_fractions"] = list(map(float, st.fractions))

    def reweight_plot():
        res = reweight_result
        fig = plot_reweight_bins(res, cv_label=labels[0] if labels else "CV")
        written["reweight_bins"] = _save(fig, out_dir / "reweight_bins.png", st.dpi)
        df = reweight_bins_frame(res, cv_name=samples.cv_names[0] if samples.n_cv else "cv")
        df.to_csv(out_dir / "reweight_bins.csv", index=False)
        written["reweight_bins_csv"] = out_dir / "reweight_bins.csv"
        numbers["reweight"] = {"n_labels": int(res.n_labels), "flagged_bins": int(np.sum(res.flagged)),
                               "n_bins": int(np.size(res.flagged))}

    attempt("overlap", overlap_plot)
    if samples.cv is not None:
        attempt("histograms", histogram_plot)
        attempt("convergence", convergence_plot)
    if reweight_result is not None:
        attempt("reweight_bins", reweight_plot)
    (out_dir / "report.json").write_text(json.dumps(numbers, indent=1, default=float) + "\n")
    written["report"] = out_dir / "report.json"
    log.info("run report: wrote %s", ", ".join(p.name for p in written.values()))
    return written


# ---------------------------------------------------------------------------------------- from a folder
def read_pmf_csv(path):
    """A 1D PMF written by :meth:`FreeEnergy.to_csv` (``pandas.read_csv(path, comment="#")``) as a
    FreeEnergy; its unit and method come from the comment line."""
    import pandas as pd

    from ..estimators.free_energy import FreeEnergy

    path = Path(path)
    head = path.read_text(encoding="utf-8").splitlines()[0]
    meta = dict(part.split("=", 1) for part in head.lstrip("# ").split() if "=" in part)
    df = pd.read_csv(path, comment="#")
    value = [c for c in df.columns if str(c).startswith("value_")]
    if len(df.columns) < 2 or not value:
        raise InputError(f"{path} is not a PMF written by fesurf (no value_<unit> column)")
    unit = value[0][len("value_"):]
    sigma = f"sigma_{unit}"
    temperature = float(meta["T"]) if meta.get("T") not in (None, "None") else None
    return FreeEnergy(df[value[0]].to_numpy(), df[sigma].to_numpy() if sigma in df else None, unit=unit,
                      temperature=temperature, grid=[df[df.columns[0]].to_numpy()], cv_names=[str(df.columns[0])],
                      method=head.lstrip("# ").split()[0] if head.startswith("#") else "")


def default_edges(samples, bins: int = 25, cv: int = 0) -> np.ndarray:
    """Equal bins over the central 98% of the sampled CV values (no nearly empty edge bins)."""
    lo, hi = np.quantile(samples.cv[:, cv], [0.01, 0.99])
    return np.linspace(lo, hi, int(bins) + 1)


def _edges_from_centres(c):
    c = np.asarray(c, dtype=np.float64)
    if c.size < 2:
        raise InputError("a PMF grid needs at least two bins")
    w = np.diff(c)
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[c[0] - w[0] / 2], mid, [c[-1] + w[-1] / 2]])


def _reweight_from_labels(samples, labels: dict, edges, unit):
    from ..estimators.reweight import reweight_pmf

    if "model_frames" in labels:
        from ..estimators.delta_learning import TwoStageLabels, reweight_two_stage

        two = TwoStageLabels(labels["model_frames"], labels["model_delta_u"], labels["frames"], labels["delta_u"],
                             labels["inclusion_probability"], {}, int(labels["qm_calls"]))
        return reweight_two_stage(samples, two, bins=edges, unit=unit, warn=False)
    pi = labels["inclusion_probability"]
    return reweight_pmf(samples, labels["frames"], labels["delta_u"],
                        inclusion_probability=pi if pi.size else None, bins=edges, unit=unit, warn=False)


def report_run_folder(run_dir, *, settings: ReportSettings | None = None, bins: int | None = None,
                      plots: bool = True) -> str:
    """Summary text (and, with ``plots``, the report files) of a run folder, finished or not.

    Reads ``stages.json`` (stages done, wall times), ``samples.h5`` (committed frames), ``pmf_surrogate.csv``
    (the PMF grid and unit; else ``bins`` equal bins, default 30), ``qm_labels.npz`` (reference labels)
    and ``results.json`` (barriers, when the run finished).
    """
    from ..estimators.pmf import compute_pmf
    from ..sampling import SampleSet
    from ..sampling.interop import run_atomic_numbers

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"no run folder at {run_dir}")
    lines = [f"run folder: {run_dir}"]
    stages_file = run_dir / "stages.json"
    stages = json.loads(stages_file.read_text()) if stages_file.exists() else {}
    done = [(k, v) for k, v in stages.items() if isinstance(v, dict) and "hash" in v]
    if done:
        lines.append("stages done: " + ", ".join(f"{k} ({v.get('seconds', float('nan')):.1f} s)" for k, v in done))
    elif not (run_dir / "samples.h5").exists():
        raise InputError(f"{run_dir} holds neither stages.json nor samples.h5; is it a fesurf run folder?")
    results = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").exists() else None
    st = settings or ReportSettings(unit=(results or {}).get("unit", "kcal/mol"))
    samples_path = run_dir / "samples.h5"
    if not samples_path.exists():
        lines.append("no samples.h5 yet: sampling has not started")
        return "\n".join(lines)
    samples = SampleSet.open(samples_path)
    try:
        if samples.n_frames == 0:
            lines.append("samples.h5 holds no committed frames yet")
            return "\n".join(lines)
        lines.append(f"frames: {samples.n_frames} in {samples.n_states} windows (per window "
                     f"{samples.N_k.min()}..{samples.N_k.max()}), T = {samples.temperature:g} K")
        numbers = run_atomic_numbers(run_dir, samples)
        symbols = None
        if numbers is not None:
            from ase.data import chemical_symbols

            symbols = [chemical_symbols[int(z)] for z in numbers]
        labels = _labels(samples, symbols)
        if labels:
            lines.append(f"CV: {labels[0]}")
        csv_path = run_dir / "pmf_surrogate.csv"
        edges = None
        if csv_path.exists() and bins is None:
            grid = read_pmf_csv(csv_path).grid[0]
            edges = _edges_from_centres(grid)
        if edges is None and samples.cv is not None:
            edges = default_edges(samples, bins or 25)
        pmf = None
        if samples.cv is not None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pmf = compute_pmf(samples, bins=edges, unit=st.unit, warn=False)
            except (InputError, SimulationError) as exc:
                lines.append(f"surrogate PMF: not available yet ({' '.join(str(exc).split())[:200]})")
        if pmf is not None:
            from .barriers import barrier

            try:
                b = barrier(pmf)
                lines.append(f"surrogate barrier (from the frames so far): {b.activation.value:.2f} ± "
                             f"{b.activation.error or 0.0:.2f} {pmf.unit}")
            except InputError as exc:
                lines.append(f"surrogate barrier: not yet defined ({exc})")
        reweighted = None
        labels_path = run_dir / "qm_labels.npz"
        if labels_path.exists() and pmf is not None:
            with np.load(labels_path, allow_pickle=False) as d:
                qm = {k: d[k] for k in d.files}
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    reweighted = _reweight_from_labels(samples, qm, np.asarray(pmf.diagnostics["bin_edges"][0]),
                                                       st.unit)
                lines.append(f"reference labels: {int(reweighted.n_labels)}; bins flagged for poor overlap: "
                             f"{int(np.sum(reweighted.flagged))} of {np.size(reweighted.flagged)}")
            except (InputError, SimulationError) as exc:
                lines.append(f"reference labels: cannot reweight yet ({' '.join(str(exc).split())[:200]})")
        if results is not None:
            c = results["corrected"]
            lines.append(f"corrected barrier: {c['activation']:.2f} ± {c['activation_sigma']:.2f} {results['unit']} "
                         "(results.json)")
        if plots:
            written = write_run_report(run_dir, samples, pmf, reweighted, symbols=symbols, settings=st)
            lines.append("wrote " + ", ".join(p.name for p in written.values()))
            skipped = json.loads((run_dir / "report.json").read_text()).get("skipped", {})
            lines += [f"no {name} plot: {why[:200]}" for name, why in skipped.items()]
    finally:
        samples.close()
    return "\n".join(lines)


__all__ = ["write_run_report", "report_run_folder", "ReportSettings", "plot_reweight_bins", "reweight_bins_frame",
           "read_pmf_csv", "PLOTS"]
