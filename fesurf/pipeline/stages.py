"""The pipeline's stages as small objects.

Each stage names the config sections it reads (its cache key), takes what earlier stages produced
from :class:`Products`, writes its files into the run folder, and marks itself done in
``stages.json`` with its wall time. On a rerun a done stage loads its files instead of recomputing.
A route (:func:`fesurf.pipeline.route`) is the list of stages a config asks for.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from ..config import kappa_in_ev
from ..errors import InputError
from ..state import State
from .run import Run, config_hash

log = logging.getLogger(__name__)


@dataclass
class Products:
    """What the stages hand on to each other."""

    atoms: Any
    cv: Any
    oracle: Any
    executor: Any = None
    layout: Any = None
    model: Any = None
    training_calls: int = 0  # reference calls this run made to build the surrogate
    samples: Any = None
    pmf_surrogate: Any = None
    labels: Optional[dict] = None
    qm_calls: int = 0
    reweighted: Any = None
    results: Optional[dict] = None
    extra: dict = field(default_factory=dict)
    branches: dict = field(default_factory=dict)  # tag -> Products of an isotopologue branch

    def branch(self, tag: str) -> "Products":
        """The products of branch ``tag`` ("" is this one): same structure, CV, oracle, surrogate."""
        if not tag:
            return self
        if tag not in self.branches:
            self.branches[tag] = Products(atoms=self.atoms, cv=self.cv, oracle=self.oracle, executor=self.executor,
                                          layout=self.layout, model=self.model, training_calls=0)
        return self.branches[tag]


class Stage:
    """Base: ``name`` (its key in stages.json), ``reads`` (config sections of its cache key).

    A stage made with ``tag`` (e.g. ``"_heavy"``, an isotopologue) works on that branch's products and
    files: its name and every file it writes carry the tag.
    """

    base = "stage"
    reads: tuple = ()

    def __init__(self, tag: str = ""):
        self.tag = tag

    @property
    def name(self) -> str:
        return self.base + self.tag

    def file(self, run: Run, stem: str, suffix: str):
        return run.dir / f"{stem}{self.tag}{suffix}"

    def run(self, run: Run, p: Products) -> None:
        raise NotImplementedError

    def __repr__(self):
        return self.name


def _timed(run: Run, stage: str, t0: float, **info):
    run.mark(stage, seconds=round(time.perf_counter() - t0, 3), **info)


# ------------------------------------------------------------------ the surrogate
class StoredSurrogate(Stage):
    """Use the model named in ``surrogate.model`` (a builtin or a file); no reference calls."""

    base = "surrogate"
    reads = ("run", "system", "oracle", "surrogate", "cv")
    replaces = ("generate", "label", "train")

    def run(self, run, p):
        from .. import data
        from ..surrogates import load_model

        spec = run.cfg["surrogate"]["model"]
        t0 = time.perf_counter()
        if spec.startswith("builtin:"):
            name = spec.split(":", 1)[1]
            if name not in data.BUILTIN_COMMITTEES:
                raise InputError(f"'surrogate.model': unknown builtin {name!r}; available: "
                                 + ", ".join(f"builtin:{n}" for n in data.BUILTIN_COMMITTEES))
            p.model = getattr(data, f"load_{name}")()
        else:
            p.model = load_model(spec)
        p.training_calls = 0
        log.info("surrogate: reusing %s", spec)
        if not run.done(self.name):
            _timed(run, self.name, t0, source=spec, qm_calls=0)


class Generate(Stage):
    """Configurations by oracle MD at several temperatures and restrained oracle MD along the CV."""

    base = "generate"
    reads = ("run", "system", "oracle", "surrogate", "generate", "cv", "umbrella")

    def run(self, run, p):
        from ase.io import write

        from ..training.generate import biased_md, oracle_md

        path = run.dir / "generated.extxyz"
        if run.done(self.name) and path.exists():
            return
        cfg, gen = run.cfg, run.cfg["generate"]
        t0 = time.perf_counter()
        md_potential = p.oracle.as_potential()  # counts the reference calls the MD makes
        frames = oracle_md(md_potential, p.atoms, gen["temperatures"], gen["frames_per_temperature"],
                           stride=gen["stride"], timestep=gen["timestep"], seed=cfg["run"]["seed"])
        lo, hi = cfg["umbrella"]["range"]
        frames += biased_md(md_potential, p.atoms, p.cv, np.linspace(lo, hi, gen["biased_windows"]).tolist(),
                            kappa=kappa_in_ev(cfg), temperature=cfg["run"]["temperature"],
                            n_frames=gen["biased_frames_per_window"], stride=gen["stride"], timestep=gen["timestep"],
                            seed=cfg["run"]["seed"] + 1000)
        write(path, frames, format="extxyz")
        _timed(run, self.name, t0, n_frames=len(frames), qm_calls=md_potential.n_calls)


class Label(Stage):
    """Reference energies and forces of the generated frames (cache in ``labels/``)."""

    base = "label"
    reads = ()

    def run(self, run, p):
        from ..io_checks import read_structures

        t0 = time.perf_counter()
        frames = read_structures(run.dir / "generated.extxyz", index=":", what="generated frames")
        labels = p.oracle.label(frames, executor=p.executor, cache=run.dir / "labels")
        p.extra["training_labels"] = labels
        if not run.done(self.name):
            _timed(run, self.name, t0, qm_calls=len(labels), failed=sum(not lab.ok for lab in labels),
                   calls_per_second=p.oracle.last_stats["calls_per_second"])


class Train(Stage):
    """A Behler–Parrinello committee fitted to the labels (force matching); ``committee.pt``."""

    base = "train"
    reads = ("train",)

    def run(self, run, p):
        from ..surrogates import BehlerParrinello, load_model, save_model
        from ..training import Dataset, TrainConfig, train

        cfg = run.cfg
        path = run.dir / "committee.pt"
        made = int(run.stages.get("generate", {}).get("qm_calls", 0)) + int(run.stages.get("label", {}).get(
            "qm_calls", 0))
        p.training_calls = made
        if run.done(self.name) and path.exists():
            p.model = load_model(path)
            return
        t0 = time.perf_counter()
        good = [lab.to_atoms() for lab in p.extra["training_labels"] if lab.ok]
        if len(good) < 20:
            raise InputError(f"only {len(good)} configurations were labelled successfully; cannot train")
        dataset = Dataset.from_atoms(good)
        vf = cfg["train"]["validation_fraction"]
        split = dataset.split(seed=cfg["run"]["seed"], fractions=(1.0 - vf, vf, 0.0))
        elements = sorted(set(int(z) for a in good for z in a.numbers))
        model = BehlerParrinello(elements=elements, hidden=tuple(cfg["surrogate"]["hidden"]),
                                 n_members=cfg["surrogate"]["n_members"], seed=cfg["run"]["seed"])
        tc = TrainConfig(epochs=cfg["train"]["epochs"], max_time=cfg["train"]["max_time"],
                         force_weight=cfg["train"]["force_weight"], seed=cfg["run"]["seed"],
                         dtype=cfg["surrogate"]["dtype"])
        history = train(model, dataset, split["train"], split["val"], tc)
        save_model(model, path)
        p.model = model
        _timed(run, self.name, t0, n_train=len(split["train"]), epochs=len(history["val_loss"]),
               stopped_by_time=bool(history.get("stopped_by_time", False)))


# ------------------------------------------------------------------ sampling and estimation
class Sample(Stage):
    """Umbrella sampling with the surrogate, all windows in one batch, resumable from ``samples.h5``."""

    base = "sample"
    reads = ("umbrella", "pimd", "isotopes")

    def run(self, run, p):
        from ..sampling import SampleSet
        from ..sampling.protocol import LangevinDynamics, Schedule, Storage
        from ..sampling.umbrella import umbrella_sampling

        cfg, u = run.cfg, run.cfg["umbrella"]
        p = p.branch(self.tag)
        path = self.file(run, "samples", ".h5")
        if run.done(self.name) and path.exists():
            p.samples = SampleSet.open(path)
            return
        t0 = time.perf_counter()
        centers = np.linspace(u["range"][0], u["range"][1], u["n_windows"])
        start = State.from_atoms(p.atoms, dtype=torch.float64)
        if self.tag:  # an isotopologue branch: the substituted masses
            from ..md.ring_polymer import substitute_isotopes

            start = substitute_isotopes(start, isotope_substitutions(cfg))
        if cfg["surrogate"]["compile"] and hasattr(p.model, "use_compiled_path"):
            p.model.use_compiled_path()
        # resume only a run started with this very configuration; anything else starts afresh
        current = run.hash(self.name)
        started = f"{self.name}_started"
        resume = path.exists() and run.stages.get(started) == current
        run.stages[started] = current
        run.save()
        schedule = Schedule(n_equilibration=u["n_equilibration"], n_production=u["n_production"], stride=u["stride"],
                            checkpoint_every=u["checkpoint_every"])
        storage = Storage(path=str(path), resume=resume, overwrite=not resume)
        common = dict(centers=centers, kappa=kappa_in_ev(cfg), temperature=cfg["run"]["temperature"],
                      schedule=schedule, storage=storage, progress=None)
        beads = cfg["pimd"]["beads"]
        if beads > 1:
            from ..md.ring_polymer import PILEDynamics
            from ..sampling.pimd import quantum_umbrella_sampling

            dyn = PILEDynamics(n_beads=beads, timestep=u["timestep"], tau_centroid=cfg["pimd"]["tau_centroid"],
                               propagator=cfg["pimd"]["propagator"], seed=cfg["run"]["seed"])
            p.samples = quantum_umbrella_sampling(p.model, start, p.cv, dynamics=dyn, **common)
        else:
            dyn = LangevinDynamics(timestep=u["timestep"], friction=u["friction"], seed=cfg["run"]["seed"])
            from .active_stage import production_guard  # umbrella.guard: flag frames the committee does not know

            p.samples = umbrella_sampling(p.model, start, p.cv, dynamics=dyn, guard=production_guard(cfg, p.model),
                                          **common)
        p.samples.set_attrs(atomic_numbers=[int(z) for z in p.atoms.numbers])  # for labels, export and report
        steps = (u["n_equilibration"] + u["n_production"]) * u["n_windows"] * max(1, beads)
        seconds = time.perf_counter() - t0
        _timed(run, self.name, t0, n_frames=p.samples.n_frames,
               replica_steps_per_second=steps / seconds if seconds > 0 else 0.0)


def pmf_range(cfg):
    return cfg["pmf"]["range"] or [cfg["umbrella"]["range"][0], cfg["umbrella"]["range"][1]]


class SurrogatePMF(Stage):
    """The surrogate's MBAR PMF (``pmf_surrogate.csv``); cheap, so recomputed on every run."""

    base = "pmf"
    reads = ("pmf",)

    def run(self, run, p):
        from ..estimators import compute_pmf

        t0 = time.perf_counter()
        p = p.branch(self.tag)
        unit = run.cfg["analysis"]["unit"]
        p.pmf_surrogate = compute_pmf(p.samples, bins=run.cfg["pmf"]["bins"], range=pmf_range(run.cfg))
        p.pmf_surrogate.to(unit).to_csv(self.file(run, "pmf_surrogate", ".csv"))
        _timed(run, self.name, t0)


def _labeller(run: Run, p: Products):
    """``label(frames) -> (dU eV, ok, reasons)``: reference single points on SampleSet frames, through
    the run's executor and the ``qm_cache/`` folder; dU = U_ref - U_surrogate (for ring polymers the
    bead average: P calls per frame)."""
    from ..units import kT

    samples, oracle = p.samples, p.oracle
    if run.cfg["pimd"]["beads"] > 1:
        from ..sampling.pimd import bead_labeller

        inner = bead_labeller(samples, oracle, p.atoms, executor=p.executor, cache=run.dir / "qm_cache")

        def label_beads(frames):
            out = inner(frames)
            p.extra.setdefault("qm_rates", []).append(oracle.last_stats["calls_per_second"])
            return out

        label_beads.calls = lambda: inner.n_calls
        return label_beads

    def label(frames):
        configs = []
        for pos in samples.read_positions(frames):
            a = p.atoms.copy()
            a.positions = pos
            configs.append(a)
        labels = oracle.label(configs, executor=p.executor, cache=run.dir / "qm_cache")
        ok = np.array([lab.ok for lab in labels], dtype=bool)
        u_sur = samples.u_ref[frames] * kT(samples.temperature)  # surrogate energy of each frame, eV
        du = np.array([lab.energy if lab.ok else np.nan for lab in labels]) - u_sur
        p.extra.setdefault("qm_rates", []).append(oracle.last_stats["calls_per_second"])
        label.n_calls += len(labels)
        return du, ok, [lab.reason for lab in labels]

    label.n_calls = 0
    label.calls = lambda: label.n_calls
    return label


def _reweight_function(cfg):
    """The configured estimator: plain wTP per bin, or a delta-learned correction plus residual wTP."""
    from ..estimators.delta_learning import reweight_pmf_delta
    from ..estimators.reweight import reweight_pmf

    return {"wtp": reweight_pmf, "delta": reweight_pmf_delta}[cfg["reweight"]["estimator"]]


class ReferenceLabels(Stage):
    """Reference labels (dU = U_ref - U_surrogate, eV) on sampled frames, saved in ``qm_labels.npz``.

    ``estimator = "wtp"``: one stratified uniform draw. ``"delta"``: the two-stage design of
    :func:`~fesurf.estimators.delta_learning.delta_two_stage`. ``adaptive``: rounds until the barrier
    sigma is below ``target_sigma`` or ``budget`` is spent.
    """

    base = "qm"
    reads = ("reweight",)

    def run(self, run, p):
        from ..estimators.delta_learning import delta_two_stage
        from ..estimators.reweight import adaptive_reweight, choose_frames

        cfg, rw = run.cfg, run.cfg["reweight"]
        p = p.branch(self.tag)
        out = self.file(run, "qm_labels", ".npz")
        if run.done(self.name) and out.exists():
            with np.load(out, allow_pickle=False) as d:
                p.labels = {k: d[k] for k in d.files}
            p.qm_calls = int(p.labels["qm_calls"])
            return
        t0 = time.perf_counter()
        samples = p.samples
        label = _labeller(run, p)
        bins, prange, seed = cfg["pmf"]["bins"], pmf_range(cfg), cfg["run"]["seed"] + 7
        empty = np.zeros(0)
        extra = {}
        if rw["adaptive"]:
            from ..units import convert

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
        calls = int(label.calls())  # every reference call made (P per frame for ring polymers)
        if failed:
            log.warning("%d reference calculations failed and are left out: %s", len(failed), failed)
        labels.update(qm_calls=np.array(calls), failed_frames=np.array(sorted(failed), dtype=np.int64))
        np.savez(out, **labels)
        p.labels, p.qm_calls = labels, int(calls)
        rates = p.extra.get("qm_rates", [])
        _timed(run, self.name, t0, qm_calls=calls, failed=len(failed),
               calls_per_second=float(np.mean(rates)) if rates else 0.0, **extra)


def reweight_labels(cfg, samples, labels: dict):
    """The corrected PMF from the stage's labels with the configured estimator."""
    from ..estimators.delta_learning import TwoStageLabels, reweight_two_stage

    rw = cfg["reweight"]
    kw = dict(bins=cfg["pmf"]["bins"], range=pmf_range(cfg), min_ess=rw["min_ess"],
              max_beta_sigma=rw["max_beta_sigma"], seed=cfg["run"]["seed"])
    if "model_frames" in labels:
        two = TwoStageLabels(labels["model_frames"], labels["model_delta_u"], labels["frames"], labels["delta_u"],
                             labels["inclusion_probability"], {}, int(labels["qm_calls"]))
        return reweight_two_stage(samples, two, **kw)
    pi = labels["inclusion_probability"]
    return _reweight_function(cfg)(samples, labels["frames"], labels["delta_u"],
                                   inclusion_probability=pi if pi.size else None, **kw)


class Reweight(Stage):
    """The corrected PMF (``pmf_corrected.csv``) and its per-bin table (``reweight_bins.txt``)."""

    base = "reweight"
    reads = ()

    def run(self, run, p):
        t0 = time.perf_counter()
        p = p.branch(self.tag)
        unit = run.cfg["analysis"]["unit"]
        p.reweighted = reweight_labels(run.cfg, p.samples, p.labels)
        p.reweighted.corrected.to(unit).to_csv(self.file(run, "pmf_corrected", ".csv"))
        self.file(run, "reweight_bins", ".txt").write_text(p.reweighted.summary() + "\n")
        _timed(run, self.name, t0, flagged_bins=int(p.reweighted.flagged.sum()))


class Analysis(Stage):
    """Barriers, the Eyring rate and its error factor, the reference-call count; ``results.json``, ``pmf.png``."""

    base = "analysis"
    reads = ("analysis",)

    def run(self, run, p):
        from ..analysis import barrier, barrier_precision_for_rate, eyring_rate, rate_error_factor
        from ..units import convert
        from . import stored_model_calls

        t0 = time.perf_counter()
        cfg, res = run.cfg, p.reweighted
        unit, T = cfg["analysis"]["unit"], cfg["run"]["temperature"]
        b_sur = barrier(p.pmf_surrogate).to(unit)
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
        from ..analysis.report import ReportSettings, write_run_report

        # overlap matrix, window histograms, a two-point convergence check, per-bin reweighting diagnostics
        write_run_report(run.dir, p.samples, p.pmf_surrogate, res, symbols=p.atoms.get_chemical_symbols(),
                         settings=ReportSettings(fractions=(0.5, 1.0), unit=unit))
        per_bin = res.per_bin
        p.results = {
            "unit": unit, "temperature_K": T, "cv": p.cv.to_spec(),
            "surrogate": b_sur.to_dict(), "corrected": b_cor.to_dict(),
            "rate": {"eyring_per_s": k, "transmission": cfg["analysis"]["transmission"],
                     "error_factor_1sigma": factor,
                     "barrier_precision_for_tolerance": need, "rate_tolerance": cfg["analysis"]["rate_tolerance"]},
            "qm_calls": {"sparse_labels": int(p.qm_calls), "training": int(p.training_calls),
                         "total": int(p.qm_calls + p.training_calls), "stored_model": stored_calls,
                         "total_with_stored_model": int(p.qm_calls + p.training_calls + stored_calls)},
            "reweight_estimator": cfg["reweight"]["estimator"],
            "reweighting": {"n_labels": int(res.n_labels), "flagged_bins": int(res.flagged.sum()),
                            "min_kish_ess": float(np.min(per_bin["kish_ess"][per_bin["n_labels"] > 0])),
                            "max_beta_sigma": float(np.nanmax(per_bin["beta_sigma"]))},
            "n_frames": int(p.samples.n_frames),
            "threads": p.layout.to_dict() if p.layout is not None else None,
            "kT_in_unit": float(convert(1.0, "kT", unit, temperature=T)),
        }
        if cfg["pimd"]["beads"] > 1:
            p.results["pimd"] = {"beads": cfg["pimd"]["beads"], "tau_centroid_fs": cfg["pimd"]["tau_centroid"]}
        heavy = p.branches.get(HEAVY)
        if heavy is not None:
            p.results["kie"] = _isotope_effect(cfg, p, heavy, b_cor)
            p.results["qm_calls"]["sparse_labels_heavy"] = int(heavy.qm_calls)
            p.results["qm_calls"]["total"] += int(heavy.qm_calls)
            p.results["qm_calls"]["total_with_stored_model"] += int(heavy.qm_calls)
        _timed(run, self.name, t0)
        p.results["stage_seconds"] = {name: run.stages[name].get("seconds") for name in run.stages
                                      if isinstance(run.stages[name], dict) and "seconds" in run.stages[name]}


#: the tag of the isotopologue branch ([isotopes] substitute)
HEAVY = "_heavy"


def isotope_substitutions(cfg) -> dict:
    """``{atom index: isotope name}`` from ``isotopes.substitute`` (``[[5, "D"]]``)."""
    return {int(i): str(name) for i, name in cfg["isotopes"]["substitute"] or []}


def _isotope_effect(cfg, light: Products, heavy: Products, b_light) -> dict:
    """k_light / k_heavy by centroid QTST from the two corrected centroid PMFs."""
    from ..estimators.quantum import kinetic_isotope_effect
    from ..sampling.pimd import centroid_effective_mass

    ts = float(b_light.ts_location)
    width = float(cfg["isotopes"]["ts_width"])
    m_light = centroid_effective_mass(light.samples, light.cv, near=ts, width=width)
    m_heavy = centroid_effective_mass(heavy.samples, heavy.cv, near=ts, width=width)
    kie = kinetic_isotope_effect(light.reweighted.corrected, heavy.reweighted.corrected, m_light, m_heavy)
    out = kie.to_dict()
    out["substitute"] = [[int(i), str(n)] for i, n in cfg["isotopes"]["substitute"]]
    b_heavy = heavy.reweighted.barrier().to(cfg["analysis"]["unit"])
    out["corrected_heavy"] = b_heavy.to_dict()
    return out


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


def route(cfg) -> list:
    """The stages this config asks for, in order."""
    stages: list = []
    if cfg["surrogate"]["model"]:
        stages.append(StoredSurrogate())
    elif cfg["surrogate"].get("strategy", "active") == "active":
        from .active_stage import ActiveLearn  # on-the-fly active learning (issue 13)

        stages.append(ActiveLearn())
    else:
        stages += [Generate(), Label(), Train()]
    if cfg.get("sampling", {}).get("method", "umbrella") == "hybrid_mc":  # exact reference-level sampling (issue 14)
        from .hybrid_mc_stage import HybridMCAnalysis, HybridMCSample

        return stages + [HybridMCSample(), HybridMCAnalysis()]  # no reference labels or reweighting to do
    stages += [Sample(), SurrogatePMF(), ReferenceLabels(), Reweight()]
    if cfg["isotopes"]["substitute"]:
        stages += [Sample(HEAVY), SurrogatePMF(HEAVY), ReferenceLabels(HEAVY), Reweight(HEAVY)]
    stages.append(Analysis())
    return stages


#: keys that say how to compute, not what: they never invalidate a stage
EXECUTION_KEYS = {"run": ("output", "workers", "executor", "threads"), "surrogate": ("compile",)}


def science_config(cfg) -> dict:
    """``cfg`` without the execution keys (for stage hashes)."""
    out = {}
    for sec, keys in cfg.items():
        if isinstance(keys, dict):
            drop = EXECUTION_KEYS.get(sec, ())
            out[sec] = {k: v for k, v in keys.items() if k not in drop}
        else:
            out[sec] = keys
    return out


def depends(stages) -> dict:
    """Each stage's cache sections: its own and every earlier stage's."""
    out, seen = {}, []
    for st in stages:
        seen += list(st.reads)
        out[st.name] = tuple(dict.fromkeys(seen))
        for name in getattr(st, "replaces", ()):
            out[name] = out[st.name]
    return out


__all__ = ["Products", "Stage", "route", "depends", "science_config", "reweight_labels", "pmf_range", "config_hash"]
