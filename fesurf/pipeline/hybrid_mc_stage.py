"""The pipeline's exact-sampling route (``[sampling] method = "hybrid_mc"``, issue 14).

The surrogate proposes, the run's reference method (``[oracle]``) accepts, so every umbrella window
samples the *reference* ensemble exactly (:func:`fesurf.sampling.hybrid_mc.hybrid_mc_sampling`). The MBAR
PMF of those samples is already at the reference level: the sparse-label (``qm``) and ``reweight`` stages
of the umbrella route are skipped. The route is::

    surrogate (stored, or generate/label/train, or active) -> sample_hybrid_mc -> analysis

``sample_hybrid_mc`` writes ``samples_hybrid_mc.h5`` (checkpointed, resumable; every frame carries its
reference energy); ``analysis`` writes ``pmf_reference.csv``, ``pmf.png``, the run report and
``results.json`` with the reference-level barrier, the rate, the reference calls the chains made and the
acceptance diagnostics (measured against erfc(beta sigma / 2), beta*sigma per window).

Example
-------
>>> # [sampling]
>>> # method = "hybrid_mc"
>>> # [hybrid_mc]
>>> # timestep = 0.5          # fs
>>> # n_steps = 12            # velocity-Verlet steps per proposal (tuned in equilibration, then frozen)
>>> # n_production = 2000     # Monte Carlo moves per window
"""
from __future__ import annotations

import logging
import time

import numpy as np
import torch

from ..config import kappa_in_ev
from ..state import State
from .stages import Stage, _timed, pmf_range

log = logging.getLogger(__name__)

__all__ = ["HybridMCSample", "HybridMCAnalysis", "hybrid_mc_dynamics", "format_hybrid_mc_results"]


def hybrid_mc_dynamics(cfg):
    """:class:`~fesurf.sampling.hybrid_mc.HybridMCDynamics` from the ``[hybrid_mc]`` keys (seed: ``run.seed``)."""
    from ..sampling.hybrid_mc import HybridMCDynamics

    h = cfg["hybrid_mc"]
    return HybridMCDynamics(proposal=h["proposal"], timestep=h["timestep"], n_steps=h["n_steps"],
                            step_size=h["step_size"], target_acceptance=h["target_acceptance"],
                            max_steps=h["max_steps"], delayed_acceptance=h["delayed_acceptance"],
                            correction=h["correction"], seed=cfg["run"]["seed"])


class HybridMCSample(Stage):
    """Exact umbrella sampling: surrogate proposals, reference (``[oracle]``) acceptance, all windows in one
    batch; ``samples_hybrid_mc.h5``, resumable."""

    base = "sample_hybrid_mc"
    reads = ("umbrella", "sampling", "hybrid_mc")

    def run(self, run, p):
        from ..sampling import SampleSet
        from ..sampling.hybrid_mc import hybrid_mc_sampling
        from ..sampling.protocol import Schedule, Storage

        cfg, u, h = run.cfg, run.cfg["umbrella"], run.cfg["hybrid_mc"]
        path = self.file(run, "samples_hybrid_mc", ".h5")
        if run.done(self.name) and path.exists():
            p.samples = SampleSet.open(path)
            return
        t0 = time.perf_counter()
        centers = np.linspace(u["range"][0], u["range"][1], u["n_windows"])
        start = State.from_atoms(p.atoms, dtype=torch.float64)
        current = run.hash(self.name)  # resume only a run started with this very configuration
        started = f"{self.name}_started"
        resume = path.exists() and run.stages.get(started) == current
        run.stages[started] = current
        run.save()
        schedule = Schedule(n_equilibration=h["n_equilibration"], n_production=h["n_production"], stride=h["stride"],
                            checkpoint_every=h["checkpoint_every"])
        storage = Storage(path=str(path), resume=resume, overwrite=not resume)
        p.samples = hybrid_mc_sampling(p.model, p.oracle, start, p.cv, centers, kappa_in_ev(cfg),
                                       temperature=cfg["run"]["temperature"], dynamics=hybrid_mc_dynamics(cfg),
                                       schedule=schedule, storage=storage, executor=p.executor,
                                       replicas_per_window=h["replicas_per_window"], progress=None)
        p.samples.set_attrs(atomic_numbers=[int(z) for z in p.atoms.numbers])
        rep = p.samples.attrs["hybrid_mc"]
        _timed(run, self.name, t0, n_frames=p.samples.n_frames, qm_calls=int(rep["reference_calls_total"]),
               acceptance_median=float(np.nanmedian(rep["acceptance"])))


class HybridMCAnalysis(Stage):
    """The reference-level MBAR PMF of the exact chains, barriers, rate, reference calls; ``results.json``."""

    base = "analysis"
    reads = ("pmf", "analysis")

    def run(self, run, p):
        from ..analysis import barrier, barrier_precision_for_rate, eyring_rate, rate_error_factor
        from ..analysis.report import ReportSettings, write_run_report
        from ..estimators import compute_pmf
        from ..sampling.hybrid_mc import sparse_bins
        from ..units import convert
        from . import stored_model_calls

        t0 = time.perf_counter()
        cfg = run.cfg
        unit, T = cfg["analysis"]["unit"], cfg["run"]["temperature"]
        pmf = compute_pmf(p.samples, bins=cfg["pmf"]["bins"], range=pmf_range(cfg))  # reference level: no reweighting
        p.pmf_surrogate = None
        p.extra["pmf_reference"] = pmf
        pmf.to(unit).to_csv(run.dir / "pmf_reference.csv")
        b = barrier(pmf).to(unit)
        dg, sig = b.activation.value, b.activation.error
        k = float(eyring_rate(dg, T, unit=unit, transmission=cfg["analysis"]["transmission"]))
        flagged = sparse_bins(pmf)
        _plot(run.dir / "pmf.png", pmf, unit)
        write_run_report(run.dir, p.samples, pmf, None, symbols=p.atoms.get_chemical_symbols(),
                         settings=ReportSettings(fractions=(0.5, 1.0), unit=unit))
        rep = p.samples.attrs["hybrid_mc"]
        calls = int(rep["reference_calls_total"])
        stored_calls = stored_model_calls(cfg)
        acc = np.asarray(rep["acceptance"], dtype=np.float64)
        per_eff = np.asarray(rep.get("reference_calls_per_effective_sample_cv", [np.nan]), dtype=np.float64)
        p.results = {
            "unit": unit, "temperature_K": T, "cv": p.cv.to_spec(), "sampling": "hybrid_mc",
            "reference": b.to_dict(),
            # the same reference-level barrier under the umbrella route's key, so tools reading results["corrected"]
            # work for both routes; nothing was corrected here
            "corrected": b.to_dict(),
            "rate": {"eyring_per_s": k, "transmission": cfg["analysis"]["transmission"],
                     "error_factor_1sigma": float(rate_error_factor(sig, T, unit=unit)),
                     "barrier_precision_for_tolerance": float(barrier_precision_for_rate(
                         cfg["analysis"]["rate_tolerance"], T, unit=unit)),
                     "rate_tolerance": cfg["analysis"]["rate_tolerance"]},
            "qm_calls": {"hybrid_mc": calls, "sparse_labels": 0, "training": int(p.training_calls),
                         "total": calls + int(p.training_calls), "stored_model": stored_calls,
                         "total_with_stored_model": calls + int(p.training_calls) + stored_calls},
            "hybrid_mc": {"reference": p.samples.attrs.get("reference"),
                          "acceptance": acc.tolist(), "acceptance_median": float(np.nanmedian(acc)),
                          "predicted_acceptance": rep["predicted_acceptance"], "beta_sigma": rep["beta_sigma"],
                          "beta_sigma_median": float(np.nanmedian(rep["beta_sigma"])),
                          "reference_calls_per_window": rep["reference_calls"],
                          "reference_calls_per_effective_sample_median": float(np.nanmedian(per_eff)),
                          "flagged_bins": int(flagged.sum()), "tuned": rep.get("tuned")},
            "n_frames": int(p.samples.n_frames),
            "threads": p.layout.to_dict() if p.layout is not None else None,
            "kT_in_unit": float(convert(1.0, "kT", unit, temperature=T)),
        }
        _timed(run, self.name, t0)
        p.results["stage_seconds"] = {name: run.stages[name].get("seconds") for name in run.stages
                                      if isinstance(run.stages[name], dict) and "seconds" in run.stages[name]}


def format_hybrid_mc_results(r: dict) -> str:
    """The lines ``fesurf run`` prints for the exact-sampling route."""
    u, b, h = r["unit"], r["reference"], r["hybrid_mc"]
    return "\n".join([
        f"reference barrier:  {b['activation']:.2f} ± {b['activation_sigma']:.2f} {u}  (exact sampling with "
        f"{h['reference']} acceptance; no reweighting)",
        f"reaction free energy: {b['reaction']:.2f} ± {b['reaction_sigma']:.2f} {u}",
        f"rate (Eyring, {r['temperature_K']:.0f} K): {r['rate']['eyring_per_s']:.3e} 1/s, "
        f"error factor x{r['rate']['error_factor_1sigma']:.2f} (1 sigma)",
        f"reference (QM) calls: {r['qm_calls']['hybrid_mc']} by the chains + {r['qm_calls']['training']} for "
        f"training = {r['qm_calls']['total']}"
        + (f" (+ {r['qm_calls']['stored_model']} that made the reused surrogate)" if r["qm_calls"].get("stored_model")
           else ""),
        f"acceptance: median {h['acceptance_median']:.2f} (beta*sigma median {h['beta_sigma_median']:.2f} kT); "
        f"reference calls per effective sample: median {h['reference_calls_per_effective_sample_median']:.1f}",
        f"bins flagged (fewer than 10 frames): {h['flagged_bins']}",
        f"wall time: {r['wall_time_s']:.0f} s",
    ])


def _plot(path, pmf, unit):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    pmf.to(unit).plot(ax=ax, label="reference (exact sampling)")
    ax.set_ylabel(f"F ({unit})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
