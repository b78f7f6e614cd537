"""The end-to-end workflow: from a structure and a CV to a reference-level barrier and rate.

Stages (each cached in the run folder and skipped when already done, so
rerunning the same command after a kill continues where it stopped):

1. ``generate``: configurations by oracle MD at several temperatures and
   umbrella-restrained oracle MD along the CV (only when no model is given);
2. ``label``: reference energies and forces (oracle cache in ``labels/``);
3. ``train``: a Behler–Parrinello committee (force matching);
4. ``sample``: umbrella sampling along the CV with the surrogate, all windows
   in one batch, checkpointed into ``samples.h5``;
5. ``pmf``: the surrogate's MBAR PMF;
6. ``qm``: reference labels on a stratified sparse subset of frames
   (``qm_cache/``), through a process pool when ``run.workers > 1``;
7. ``reweight``: the corrected PMF (wTP, or a two-stage delta-learned correction) with per-bin
   ESS and sigma(dU);
8. ``analysis``: surrogate and corrected barriers, rate and its error factor.

The run folder holds ``results.json``, ``pmf_surrogate.csv``,
``pmf_corrected.csv``, ``pmf.png``, ``stages.json`` and ``fesurf.log``.

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
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .config import kappa_in_ev, load_config
from .errors import InputError
from .state import State

log = logging.getLogger(__name__)

STAGES = ("generate", "label", "train", "sample", "pmf", "qm", "reweight", "analysis")


# --------------------------------------------------------------------------- builders
def build_structure(cfg):
    """The starting structure (ase.Atoms) with charge and multiplicity set."""
    from ase.io import read

    spec = cfg["system"]["structure"]
    if spec.startswith("builtin:"):
        from . import data

        name = spec.split(":", 1)[1]
        if not hasattr(data, name):
            raise InputError(f"'system.structure': unknown builtin {name!r}; available: builtin:malonaldehyde")
        atoms = getattr(data, name)()
    else:
        atoms = read(spec)
    atoms.info["charge"] = float(cfg["system"]["charge"])
    atoms.info["multiplicity"] = int(cfg["system"]["multiplicity"])
    return atoms


def build_cv(cfg, n_atoms: int):
    """The CV from ``[cv]``; atom indices are checked against the structure (error names the key)."""
    from .cv import cv_from_spec, distance_difference

    c = cfg["cv"]
    if c["type"] == "distance_difference":
        key, indices = "cv.pairs", [i for p in c["pairs"] for i in p]
        cv = None
    else:
        key, indices = "cv.atoms", list(c["atoms"] or [])
    bad = [i for i in indices if not isinstance(i, int) or not 0 <= i < n_atoms]
    if bad:
        raise InputError(f"'{key}' holds atom index {bad[0]}, out of range for a structure of {n_atoms} atoms "
                         f"(indices are 0-based: 0..{n_atoms - 1})")
    if c["type"] == "distance_difference":
        cv = distance_difference(c["pairs"][0], c["pairs"][1])
    else:
        spec = {"type": c["type"], "atoms": c["atoms"]}
        cv = cv_from_spec(spec)
    return cv


def build_oracle(cfg):
    from .oracles import PySCFOracle, XTBOracle

    method = cfg["oracle"]["method"]
    if method == "DFT":
        return PySCFOracle(xc=cfg["oracle"]["xc"], basis=cfg["oracle"]["basis"])
    return XTBOracle(method=method)


def _config_hash(cfg, sections):
    blob = json.dumps({s: cfg[s] for s in sections}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


#: config sections read by each stage, in stage order; a stage depends on its own and every
#: earlier stage's sections, so a change there reruns it and everything after
_READS = {
    "generate": ("run", "system", "oracle", "surrogate", "generate", "cv"),
    "label": (),
    "train": ("train",),
    "sample": ("umbrella",),
    "pmf": ("pmf",),
    "qm": ("reweight",),
    "reweight": (),
    "analysis": ("analysis",),
}
_DEPENDS = {stage: tuple(sec for earlier in STAGES[:i + 1] for sec in _READS[earlier])
            for i, stage in enumerate(STAGES)}


class Run:
    """A run folder: stage bookkeeping, the log file and the QM call counter."""

    def __init__(self, cfg):
        self.cfg = cfg
        out = Path(cfg["run"]["output"])
        if not out.is_absolute() and cfg.get("_path"):
            out = Path(cfg["_path"]).parent / out
        self.dir = out
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stages_file = self.dir / "stages.json"
        self.stages = json.loads(self.stages_file.read_text()) if self.stages_file.exists() else {}
        self._handler = logging.FileHandler(self.dir / "fesurf.log")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("fesurf").addHandler(self._handler)
        logging.getLogger("fesurf").setLevel(logging.INFO)

    def close(self):
        logging.getLogger("fesurf").removeHandler(self._handler)
        self._handler.close()

    def done(self, stage) -> bool:
        entry = self.stages.get(stage)
        return bool(entry) and entry.get("hash") == _config_hash(self.cfg, _DEPENDS[stage])

    def mark(self, stage, **info):
        self.stages[stage] = {"hash": _config_hash(self.cfg, _DEPENDS[stage]), "finished": time.time(), **info}
        self.save()

    def save(self):
        tmp = self.stages_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.stages, indent=1, default=str))
        tmp.replace(self.stages_file)


# --------------------------------------------------------------------------- stages
def _executor(cfg):
    # spawn, not fork: forking a process that holds torch or tblite threads can deadlock the workers
    import multiprocessing

    workers = int(cfg["run"]["workers"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) \
        if workers > 1 else None


def stage_generate_label_train(run: Run, atoms, cv, oracle):
    """Stages 1-3. Returns the surrogate Potential and the number of reference calls this run made
    to build it (every oracle MD step of the generation plus every label)."""
    from .surrogates import load_model

    cfg = run.cfg
    model_spec = cfg["surrogate"]["model"]
    if model_spec:
        if model_spec.startswith("builtin:"):
            from . import data

            name = model_spec.split(":", 1)[1]
            if name not in data.BUILTIN_COMMITTEES:
                raise InputError(f"'surrogate.model': unknown builtin {name!r}; available: "
                                 + ", ".join(f"builtin:{n}" for n in data.BUILTIN_COMMITTEES))
            model = getattr(data, f"load_{name}")()
        else:
            model = load_model(model_spec)
        for s in ("generate", "label", "train"):
            if not run.done(s):
                run.mark(s, skipped="surrogate.model given", qm_calls=0)
        log.info("surrogate: reusing %s", model_spec)
        return model, 0
    generated = run.stages.get("generate", {})
    model_path = run.dir / "committee.pt"
    if run.done("train") and model_path.exists():
        return load_model(model_path), int(generated.get("qm_calls", 0)) + int(run.stages["label"].get("qm_calls", 0))
    from .training import Dataset, TrainConfig, train
    from .training.generate import biased_md, oracle_md
    from .surrogates import BehlerParrinello, save_model
    from ase.io import read, write

    gen = cfg["generate"]
    gen_path = run.dir / "generated.extxyz"
    if not (run.done("generate") and gen_path.exists()):
        md_potential = oracle.as_potential()  # counts the reference calls the MD makes
        frames = oracle_md(md_potential, atoms, gen["temperatures"], gen["frames_per_temperature"], stride=gen["stride"],
                           timestep=gen["timestep"], seed=cfg["run"]["seed"])
        lo, hi = cfg["umbrella"]["range"]
        frames += biased_md(md_potential, atoms, cv, np.linspace(lo, hi, gen["biased_windows"]).tolist(),
                            kappa=kappa_in_ev(cfg), temperature=cfg["run"]["temperature"],
                            n_frames=gen["biased_frames_per_window"], stride=gen["stride"], timestep=gen["timestep"],
                            seed=cfg["run"]["seed"] + 1000)
        write(gen_path, frames, format="extxyz")
        run.mark("generate", n_frames=len(frames), qm_calls=md_potential.n_calls)
    frames = read(gen_path, index=":")
    labels = oracle.label(frames, executor=_executor(cfg), cache=run.dir / "labels")
    good = [lab.to_atoms() for lab in labels if lab.ok]
    failed = [lab.reason for lab in labels if not lab.ok]
    run.mark("label", qm_calls=len(labels), failed=len(failed))
    if len(good) < 20:
        raise InputError(f"only {len(good)} configurations were labelled successfully; cannot train")
    dataset = Dataset.from_atoms(good)
    vf = cfg["train"]["validation_fraction"]
    split = dataset.split(seed=cfg["run"]["seed"], fractions=(1.0 - vf, vf, 0.0))
    elements = sorted(set(int(z) for a in good for z in a.numbers))
    model = BehlerParrinello(elements=elements, hidden=tuple(cfg["surrogate"]["hidden"]),
                             n_members=cfg["surrogate"]["n_members"], seed=cfg["run"]["seed"])
    tc = TrainConfig(epochs=cfg["train"]["epochs"], max_time=cfg["train"]["max_time"],
                     force_weight=cfg["train"]["force_weight"], seed=cfg["run"]["seed"], dtype=cfg["surrogate"]["dtype"])
    train(model, dataset, split["train"], split["val"], tc)
    save_model(model, model_path)
    run.mark("train", n_train=len(split["train"]))
    return model, int(run.stages["generate"].get("qm_calls", 0)) + len(labels)


def stage_sample(run: Run, model, atoms, cv, progress=None):
    """Stage 4: umbrella sampling with the surrogate, resumable from ``samples.h5``."""
    from .sampling import SampleSet
    from .sampling.umbrella import umbrella_sampling

    cfg, u = run.cfg, run.cfg["umbrella"]
    path = run.dir / "samples.h5"
    if run.done("sample") and path.exists():
        return SampleSet.open(path)
    centers = np.linspace(u["range"][0], u["range"][1], u["n_windows"])
    start = State.from_atoms(atoms, dtype=torch.float64)
    if cfg["surrogate"]["compile"] and hasattr(model, "use_compiled_path"):
        model.use_compiled_path()
    # resume only a run started with this very configuration; anything else starts afresh
    current = _config_hash(cfg, _DEPENDS["sample"])
    resume = path.exists() and run.stages.get("sample_started") == current
    run.stages["sample_started"] = current
    run.save()
    samples = umbrella_sampling(model, start, cv, centers=centers, kappa=kappa_in_ev(cfg),
                                temperature=cfg["run"]["temperature"], timestep=u["timestep"], friction=u["friction"],
                                seed=cfg["run"]["seed"], n_equilibration=u["n_equilibration"],
                                n_production=u["n_production"], stride=u["stride"],
                                checkpoint_every=u["checkpoint_every"], path=path, resume=resume,
                                overwrite=not resume, progress=progress)
    run.mark("sample", n_frames=samples.n_frames)
    return samples


def _pmf_range(cfg):
    return cfg["pmf"]["range"] or [cfg["umbrella"]["range"][0], cfg["umbrella"]["range"][1]]


def _labeller(run: Run, samples, oracle):
    """``label(frames) -> (dU eV, ok, reasons)``: reference single points on SampleSet frames,
    through the run's executor and the ``qm_cache/`` folder; dU = U_ref - U_surrogate."""
    from .units import kT

    atoms0 = build_structure(run.cfg)

    def label(frames):
        configs = []
        for p in samples.read_positions(frames):
            a = atoms0.copy()
            a.positions = p
            configs.append(a)
        labels = oracle.label(configs, executor=_executor(run.cfg), cache=run.dir / "qm_cache")
        ok = np.array([lab.ok for lab in labels], dtype=bool)
        u_sur = samples.u_ref[frames] * kT(samples.temperature)  # surrogate energy of each frame, eV
        du = np.array([lab.energy if lab.ok else np.nan for lab in labels]) - u_sur
        return du, ok, [lab.reason for lab in labels]

    return label


def _reweight_function(cfg):
    """The configured estimator: plain wTP per bin, or a delta-learned correction plus residual wTP."""
    from .estimators.delta_learning import reweight_pmf_delta
    from .estimators.reweight import reweight_pmf

    return {"wtp": reweight_pmf, "delta": reweight_pmf_delta}[cfg["reweight"]["estimator"]]


def stage_qm(run: Run, samples, model, oracle) -> dict:
    """Stage 6: reference labels (dU = U_ref - U_surrogate, eV) on sampled frames.

    ``estimator = "wtp"``: one stratified uniform draw. ``"delta"``: the two-stage design of
    :func:`~fesurf.estimators.delta_learning.delta_two_stage` (a quarter of the labels train the dU
    model, the rest are drawn by model-corrected weight). ``adaptive``: rounds until the barrier sigma
    is below ``target_sigma`` or ``budget`` is spent. Returns the arrays saved in ``qm_labels.npz``.
    """
    from .estimators.delta_learning import delta_two_stage
    from .estimators.reweight import adaptive_reweight, choose_frames

    cfg, rw = run.cfg, run.cfg["reweight"]
    out = run.dir / "qm_labels.npz"
    if run.done("qm") and out.exists():
        with np.load(out, allow_pickle=False) as d:
            return {k: d[k] for k in d.files}
    label = _labeller(run, samples, oracle)
    bins, prange, seed = cfg["pmf"]["bins"], _pmf_range(cfg), cfg["run"]["seed"] + 7
    empty = np.zeros(0)
    extra = {}
    if rw["adaptive"]:
        from .units import convert

        target = float(convert(rw["target_sigma"], cfg["analysis"]["unit"], "kT", temperature=samples.temperature))
        ad = adaptive_reweight(samples, label, target_sigma=target, budget=rw["budget"], initial=rw["n_labels"],
                               per_round=max(10, rw["n_labels"] // 2), bins=bins, range=prange, seed=seed,
                               reweight=_reweight_function(cfg), min_ess=rw["min_ess"],
                               max_beta_sigma=rw["max_beta_sigma"])
        labels = dict(frames=ad.labelled, delta_u=ad.delta_u, inclusion_probability=empty)
        failed, calls = ad.failed, int(ad.labelled.size + len(ad.failed))
        extra = {"adaptive_rounds": ad.history, "adaptive_converged": ad.converged}
        log.info("adaptive labelling: %d rounds, converged %s", len(ad.history), ad.converged)
    elif rw["estimator"] == "delta":
        _, two = delta_two_stage(samples, label, rw["n_labels"], bins=bins, range=prange, seed=seed,
                                 min_ess=rw["min_ess"], max_beta_sigma=rw["max_beta_sigma"], warn=False)
        labels = dict(frames=two.residual_frames, delta_u=two.residual_delta_u,
                      inclusion_probability=two.residual_inclusion, model_frames=two.model_frames,
                      model_delta_u=two.model_delta_u)
        failed, calls = two.failed, two.n_calls
    else:
        frames, pi = choose_frames(samples, rw["n_labels"], bins=bins, range=prange, seed=seed)
        order = np.argsort(frames)
        frames, pi = frames[order], pi[order]
        du, ok, reasons = label(frames)
        failed = {int(f): why for f, good, why in zip(frames, ok, reasons) if not good}
        labels = dict(frames=frames[ok], delta_u=du[ok], inclusion_probability=pi[ok])
        calls = int(frames.size)
    if failed:
        log.warning("%d reference calculations failed and are left out: %s", len(failed), failed)
    labels.update(qm_calls=np.array(calls), failed_frames=np.array(sorted(failed), dtype=np.int64))
    np.savez(out, **labels)
    run.mark("qm", qm_calls=calls, failed=len(failed), **extra)
    return labels


def reweight_labels(cfg, samples, labels: dict):
    """Stage 7: the corrected PMF from the stage-6 labels with the configured estimator."""
    from .estimators.delta_learning import TwoStageLabels, reweight_two_stage

    rw = cfg["reweight"]
    kw = dict(bins=cfg["pmf"]["bins"], range=_pmf_range(cfg), min_ess=rw["min_ess"],
              max_beta_sigma=rw["max_beta_sigma"], seed=cfg["run"]["seed"])
    if "model_frames" in labels:
        two = TwoStageLabels(labels["model_frames"], labels["model_delta_u"], labels["frames"], labels["delta_u"],
                             labels["inclusion_probability"], {}, int(labels["qm_calls"]))
        return reweight_two_stage(samples, two, **kw)
    pi = labels["inclusion_probability"]
    return _reweight_function(cfg)(samples, labels["frames"], labels["delta_u"],
                                   inclusion_probability=pi if pi.size else None, **kw)


def run_pipeline(config, progress=None) -> dict:
    """Run (or resume) the whole workflow; returns the results dict also written to ``results.json``."""
    from .analysis import barrier, eyring_rate, rate_error_factor, barrier_precision_for_rate
    from .estimators import compute_pmf
    from .units import convert

    t0 = time.perf_counter()
    cfg = load_config(config)
    cfg["surrogate"]["model_sha256"] = _model_digest(cfg)  # a changed model file reruns the stages after it
    run = Run(cfg)
    try:
        atoms = build_structure(cfg)
        cv = build_cv(cfg, len(atoms))
        oracle = build_oracle(cfg)
        unit, T = cfg["analysis"]["unit"], cfg["run"]["temperature"]
        log.info("run folder %s", run.dir)

        model, training_calls = stage_generate_label_train(run, atoms, cv, oracle)
        samples = stage_sample(run, model, atoms, cv, progress)
        bins, prange = cfg["pmf"]["bins"], _pmf_range(cfg)
        pmf_sur = compute_pmf(samples, bins=bins, range=prange)
        pmf_sur.to(unit).to_csv(run.dir / "pmf_surrogate.csv")
        run.mark("pmf")

        labels = stage_qm(run, samples, model, oracle)
        qm_calls = int(labels["qm_calls"])
        res = reweight_labels(cfg, samples, labels)
        res.corrected.to(unit).to_csv(run.dir / "pmf_corrected.csv")
        (run.dir / "reweight_bins.txt").write_text(res.summary() + "\n")
        run.mark("reweight", flagged_bins=int(res.flagged.sum()))

        b_sur = barrier(pmf_sur).to(unit)
        try:
            b_cor = res.barrier().to(unit)
        except InputError as exc:
            raise InputError(
                f"the corrected PMF gives no barrier: {int(res.flagged.sum())} of {res.flagged.size} bins are "
                f"flagged for poor overlap ({exc}). See {run.dir / 'reweight_bins.txt'}; raise 'reweight.n_labels' "
                "(or 'reweight.budget'; labels already computed are reused from qm_cache/), use fewer 'pmf.bins', "
                "or set 'reweight.estimator' = \"delta\"") from exc
        dg, sig = b_cor.activation.value, b_cor.activation.error
        k = float(eyring_rate(dg, T, unit=unit, transmission=cfg["analysis"]["transmission"]))
        factor = float(rate_error_factor(sig, T, unit=unit))
        stored_calls = stored_model_calls(cfg)
        need = float(barrier_precision_for_rate(cfg["analysis"]["rate_tolerance"], T, unit=unit))
        _plot(run.dir / "pmf.png", res, unit)
        results = {
            "unit": unit, "temperature_K": T, "cv": cv.to_spec(),
            "surrogate": b_sur.to_dict(), "corrected": b_cor.to_dict(),
            "rate": {"eyring_per_s": k, "transmission": cfg["analysis"]["transmission"],
                     "error_factor_1sigma": factor,
                     "barrier_precision_for_tolerance": need, "rate_tolerance": cfg["analysis"]["rate_tolerance"]},
            "qm_calls": {"sparse_labels": int(qm_calls), "training": int(training_calls),
                         "total": int(qm_calls + training_calls),
                         "stored_model": stored_calls,
                         "total_with_stored_model": int(qm_calls + training_calls + stored_calls)},
            "reweight_estimator": cfg["reweight"]["estimator"],
            "reweighting": {"n_labels": int(res.n_labels), "flagged_bins": int(res.flagged.sum()),
                            "min_kish_ess": float(np.min(res.per_bin["kish_ess"][res.per_bin["n_labels"] > 0])),
                            "max_beta_sigma": float(np.nanmax(res.per_bin["beta_sigma"]))},
            "n_frames": int(samples.n_frames),
            "wall_time_s": time.perf_counter() - t0,
            "kT_in_unit": float(convert(1.0, "kT", unit, temperature=T)),
        }
        (run.dir / "results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
        run.mark("analysis")
        samples.close()
        return results
    finally:
        run.close()


def _builtin_level(cfg):
    """The xTB level of a builtin surrogate named in ``surrogate.model``, or None."""
    from . import data

    spec = cfg["surrogate"]["model"]
    return data.BUILTIN_COMMITTEES.get(spec.split(":", 1)[1]) if spec.startswith("builtin:") else None


def _model_digest(cfg) -> str:
    """SHA-256 of the surrogate model file ('' when the run trains its own, or for an unknown builtin,
    whose loader raises the error that names the key)."""
    from . import data

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
    from . import data

    level = _builtin_level(cfg)
    return data.generation_calls(level) if level == cfg["oracle"]["method"] else 0


def _plot(path, res, unit):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    res.surrogate.to(unit).plot(ax=ax, label="surrogate")
    res.corrected.to(unit).plot(ax=ax, label="corrected to reference")
    ax.set_ylabel(f"F ({unit})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def format_results(r: dict) -> str:
    """The lines ``fesurf run`` prints."""
    u = r["unit"]
    s, c = r["surrogate"], r["corrected"]
    return "\n".join([
        f"surrogate barrier:  {s['activation']:.2f} ± {s['activation_sigma']:.2f} {u}",
        f"corrected barrier:  {c['activation']:.2f} ± {c['activation_sigma']:.2f} {u}  (reference level)",
        f"reaction free energy (corrected): {c['reaction']:.2f} ± {c['reaction_sigma']:.2f} {u}",
        f"rate (Eyring, {r['temperature_K']:.0f} K): {r['rate']['eyring_per_s']:.3e} 1/s, "
        f"error factor x{r['rate']['error_factor_1sigma']:.2f} (1 sigma)",
        f"reference (QM) calls: {r['qm_calls']['sparse_labels']} sparse labels + {r['qm_calls']['training']} "
        f"for training = {r['qm_calls']['total']}"
        + (f" (+ {r['qm_calls']['stored_model']} that made the reused surrogate)" if r['qm_calls'].get('stored_model')
           else ""),
        f"bins flagged for poor overlap: {r['reweighting']['flagged_bins']}; "
        f"max beta*sigma(dU{' - model' if r.get('reweight_estimator') == 'delta' else ''}) "
        f"{r['reweighting']['max_beta_sigma']:.2f}",
        f"wall time: {r['wall_time_s']:.0f} s",
    ])


def _run_command(args) -> int:
    return 0, format_results(run_pipeline(args.config, progress=None))


def register(subparsers):
    p = subparsers.add_parser("run", help="run the pipeline from a TOML config (resumable)")
    p.add_argument("config", help="path to the TOML config")
    p.set_defaults(func=_run_command)
