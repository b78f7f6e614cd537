"""The end-to-end workflow: from a structure and a CV to a reference-level barrier and rate.

A run is a route of stages (:mod:`fesurf.pipeline.stages`) chosen from the config; each is cached
in the run folder and skipped when already done, so rerunning the same command after a kill
continues where it stopped. The default route:

1. the surrogate: ``surrogate`` (a stored model) or ``generate`` (oracle MD), ``label`` (reference
   energies and forces) and ``train`` (a Behler–Parrinello committee);
2. ``sample``: umbrella sampling along the CV with the surrogate, all windows in one batch,
   checkpointed into ``samples.h5``;
3. ``pmf``: the surrogate's MBAR PMF;
4. ``qm``: reference labels on a stratified sparse subset of frames (``qm_cache/``);
5. ``reweight``: the corrected PMF (wTP, or a two-stage delta-learned correction) with per-bin
   ESS and sigma(dU);
6. ``analysis``: surrogate and corrected barriers, rate and its error factor.

Reference calls run where ``run.executor`` says (:mod:`fesurf.execution`): in this process for
ms-scale methods (xTB), a local pool of ``run.workers`` persistent workers for DFT, or a Dask cluster.
The run folder holds ``results.json``, ``pmf_surrogate.csv``, ``pmf_corrected.csv``, ``pmf.png``,
``stages.json`` (with each stage's wall time) and ``fesurf.log`` (with the thread layout).

Example
-------
>>> # from fesurf.pipeline import run_pipeline
>>> # results = run_pipeline("examples/malonaldehyde.toml")
>>> # results["corrected"]["activation"], results["rate"]["error_factor"]
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from ..config import load_config
from ..errors import InputError
from .builders import build_cv, build_execution, build_oracle, build_structure
from .run import Run
from .stages import Products, depends, reweight_labels, route, science_config

log = logging.getLogger(__name__)

__all__ = ["run_pipeline", "format_results", "route", "build_structure", "build_cv", "build_oracle",
           "stored_model_calls", "reweight_labels", "Run"]


def run_pipeline(config, progress=None, announce=None) -> dict:
    """Run (or resume) the whole workflow; returns the results dict also written to ``results.json``.

    ``announce``: optional callable receiving one line with the stage list when the run starts.
    """
    from ..execution import shutdown

    t0 = time.perf_counter()
    cfg = load_config(config)
    cfg["surrogate"]["model_sha256"] = _model_digest(cfg)  # a changed model file reruns the stages after it
    stages = route(cfg)
    run = Run(cfg, depends(stages), hash_view=science_config(cfg))
    executor, owned = None, False
    try:
        log.info("config %s, run folder %s", cfg.get("_path") or "(dict)", run.dir)
        atoms = build_structure(cfg)
        cv = build_cv(cfg, len(atoms), symbols=atoms.get_chemical_symbols())
        oracle = build_oracle(cfg)
        layout, executor, owned = build_execution(cfg, oracle, len(atoms))
        plan = "stages: " + " -> ".join(("(done) " if run.done(s.name) else "") + s.name for s in stages)
        log.info(plan)
        if announce is not None:
            announce(plan)
        p = Products(atoms=atoms, cv=cv, oracle=oracle, executor=executor, layout=layout)
        for stage in stages:
            log.info("stage %s", stage.name)
            stage.run(run, p)
        results = p.results
        results["wall_time_s"] = time.perf_counter() - t0
        (run.dir / "results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
        if p.samples is not None:
            p.samples.close()
        return results
    finally:
        shutdown(executor, owned)
        run.close()


def _builtin_level(cfg):
    """The xTB level of a builtin surrogate named in ``surrogate.model``, or None."""
    from .. import data

    spec = cfg["surrogate"]["model"]
    return data.BUILTIN_COMMITTEES.get(spec.split(":", 1)[1]) if spec.startswith("builtin:") else None


def _model_digest(cfg) -> str:
    """SHA-256 of the surrogate model file ('' when the run trains its own, or for an unknown builtin,
    whose loader raises the error that names the key)."""
    from .. import data

    spec = cfg["surrogate"]["model"]
    if not spec:
        return ""
    level = _builtin_level(cfg)
    if spec.startswith("builtin:") and level is None:
        return ""
    path = data.MALONALDEHYDE_FILES[level]["committee"] if level else Path(spec)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def stored_model_calls(cfg) -> int:
    """Reference-level calls that went into a reused builtin surrogate (0 when it was trained at another
    level, as in the cross-level setting, or for a user's model file, whose history is unknown)."""
    from .. import data

    level = _builtin_level(cfg)
    return data.generation_calls(level) if level == cfg["oracle"]["method"] else 0


def format_results(r: dict) -> str:
    """The lines ``fesurf run`` prints."""
    if r.get("sampling") == "hybrid_mc":  # the exact-sampling route: a reference-level PMF, no correction
        from .hybrid_mc_stage import format_hybrid_mc_results

        return format_hybrid_mc_results(r)
    u = r["unit"]
    s, c = r["surrogate"], r["corrected"]
    return "\n".join([
        f"surrogate barrier:  {s['activation']:.2f} ± {s['activation_sigma']:.2f} {u}",
        f"corrected barrier:  {c['activation']:.2f} ± {c['activation_sigma']:.2f} {u}  (reference level)",
        f"reaction free energy (corrected): {c['reaction']:.2f} ± {c['reaction_sigma']:.2f} {u}",
        f"rate (Eyring, {r['temperature_K']:.0f} K): {r['rate']['eyring_per_s']:.3e} 1/s, "
        f"error factor x{r['rate']['error_factor_1sigma']:.2f} (1 sigma)",
        f"reference (QM) calls: {r['qm_calls']['sparse_labels']} sparse labels"
        + (f" + {r['qm_calls']['sparse_labels_heavy']} for the heavy isotopologue"
           if "sparse_labels_heavy" in r['qm_calls'] else "")
        + f" + {r['qm_calls']['training']} "
        f"for training = {r['qm_calls']['total']}"
        + (f" (+ {r['qm_calls']['stored_model']} that made the reused surrogate)" if r['qm_calls'].get('stored_model')
           else ""),
        f"bins flagged for poor overlap: {r['reweighting']['flagged_bins']}; "
        f"max beta*sigma(dU{' - model' if r.get('reweight_estimator') == 'delta' else ''}) "
        f"{r['reweighting']['max_beta_sigma']:.2f}",
        *([f"quantum nuclei: {r['pimd']['beads']} beads per atom (centroid PMF, bead-averaged correction)"]
          if r.get("pimd") else []),
        *([f"heavy isotopologue {r['kie']['substitute']}: corrected barrier "
           f"{r['kie']['corrected_heavy']['activation']:.2f} ± {r['kie']['corrected_heavy']['activation_sigma']:.2f} {u}",
           f"kinetic isotope effect k_light/k_heavy (centroid QTST): {r['kie']['kie']:.2f} ± {r['kie']['kie_sigma']:.2f}"]
          if r.get("kie") else []),
        f"wall time: {r['wall_time_s']:.0f} s",
    ])


def _run_command(args):
    from ..cli import say

    return 0, format_results(run_pipeline(args.config, progress=None, announce=say))


def register(subparsers):
    p = subparsers.add_parser("run", help="run the pipeline from a TOML config (resumable)",
                              description="Run (or resume) the workflow of a TOML config: surrogate, sampling, "
                                          "sparse reference labels, corrected PMF, barrier and rate.",
                              epilog="example: fesurf run examples/malonaldehyde.toml")
    p.add_argument("config", help="path to the TOML config")
    p.set_defaults(func=_run_command)
