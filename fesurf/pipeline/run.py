"""A run folder: stage bookkeeping (``stages.json``), the run log file and the thread layout.

A stage is done when ``stages.json`` holds its entry with the hash of the config sections it and
every earlier stage of the route read; a changed section reruns that stage and everything after it.
Each entry records the stage's wall time (``seconds``) and what it counted (``qm_calls``...).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


def config_hash(cfg, sections) -> str:
    """Hash of the given config sections (order-independent)."""
    blob = json.dumps({s: cfg.get(s) for s in sorted(set(sections))}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Run:
    """The run folder of one config: ``stages.json``, ``fesurf.log`` and the stage hashes.

    ``depends`` maps each stage name to the config sections its cache key covers (its own and
    every earlier stage's), as the route computes them; ``hash_view`` is the config those sections are
    hashed from (the config without its execution keys, so more workers never rerun a stage).
    """

    def __init__(self, cfg, depends: dict, hash_view: dict | None = None):
        self.cfg = cfg
        self.depends = dict(depends)
        self._hash_view = cfg if hash_view is None else hash_view
        out = Path(cfg["run"]["output"])
        if not out.is_absolute() and cfg.get("_path"):
            out = Path(cfg["_path"]).parent / out
        self.dir = out
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stages_file = self.dir / "stages.json"
        self.stages = json.loads(self.stages_file.read_text()) if self.stages_file.exists() else {}
        self._handler = logging.FileHandler(self.dir / "fesurf.log")
        self._handler.setLevel(logging.INFO)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger = logging.getLogger("fesurf")
        self._old_level = logger.level
        logger.addHandler(self._handler)
        logger.setLevel(logging.INFO)  # the file gets INFO; stderr shows it only with -v (its own handler level)

    def close(self):
        logger = logging.getLogger("fesurf")
        logger.removeHandler(self._handler)
        logger.setLevel(self._old_level)
        self._handler.close()

    def hash(self, stage) -> str:
        return config_hash(self._hash_view, self.depends[stage])

    def done(self, stage) -> bool:
        entry = self.stages.get(stage)
        return bool(entry) and entry.get("hash") == self.hash(stage)

    def mark(self, stage, **info):
        self.stages[stage] = {"hash": self.hash(stage), "finished": time.time(), **info}
        self.save()

    def save(self):
        tmp = self.stages_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.stages, indent=1, default=str))
        tmp.replace(self.stages_file)
