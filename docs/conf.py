"""Sphinx configuration of the fesurf documentation site (``make docs``).

Built offline, in nitpicky mode with warnings as errors (``sphinx-build -n -W``). Three small
extensions in ``docs/_ext`` generate what must not drift from the code: the API reference (from every
module's ``__all__``), the config reference (from ``fesurf.config.SCHEMA``) and the tutorial pages
(the notebooks of ``tutorials/`` with their stored outputs; never executed here).
"""
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import fesurf  # noqa: E402

project = "fesurf"
author = "the fesurf developers"
copyright = "fesurf developers, MIT licence"
release = version = fesurf.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "fesurf_docstrings",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",               # MathJax 3 served from _static/mathjax: the site works offline
    "myst_nb",
    "fesurf_api",
    "fesurf_config",
    "fesurf_tutorials",
]

# --- sources ---------------------------------------------------------------------------------
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
templates_path = []

# --- notebooks and Markdown (myst-nb) --------------------------------------------------------
nb_execution_mode = "off"                 # render the outputs stored in the notebooks; never execute
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

# --- API reference (autodoc + napoleon, numpy-style docstrings) -----------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = False       # True re-parses every function's source: ~10 s more per build
autodoc_default_options = {"exclude-members": "__init__, forward, extra_repr, training"}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_param = False                # types stay text ("(n, 3) array"): only real names cross-link
napoleon_use_rtype = False
napoleon_use_ivar = False
napoleon_custom_sections = [("Attributes", "params_style")]   # "name : type" read like Parameters: types stay text
napoleon_preprocess_types = False

# --- strictness ------------------------------------------------------------------------------
nitpicky = True
# The machine that builds the docs is offline, so no intersphinx inventory can be fetched: names
# from the standard library and third-party packages are accepted unresolved (they render as text).
# fesurf's own names must all resolve.
_THIRD_PARTY = ["torch", "numpy", "np", "scipy", "ase", "pymbar", "h5py", "matplotlib", "pathlib", "concurrent",
                "typing", "collections", "dataclasses", "enum", "os", "io", "logging", "threading", "multiprocessing",
                "contextlib", "abc", "types", "tblite", "pyscf", "vesin", "dask", "distributed", "plumed", "pandas",
                "sqlite3", "alchemlyb", "mace", "torch_sim", "e3nn", "warnings", "numbers", "datetime", "queue",
                "tempfile", "json", "re", "functools", "itertools", "argparse", "ipi", "torchpme", "torch_pme",
                "tad_dftd3", "torch_dftd", "nbformat", "jupyter_client"]
nitpick_ignore_regex = [(r"py:.*", rf"{name}(\..*)?") for name in _THIRD_PARTY]
nitpick_ignore_regex += [
    # bare names of third-party and standard types as they appear in signatures and docstrings
    (r"py:class", r"(Tensor|ndarray|Atoms|Path|PathLike|Executor|Future|Generator|Module|Figure|Axes|"
                  r"Calculator|MBAR|Dataset|DataFrame|Sequence|Mapping|Iterable|Iterator|Callable|Any|Optional|"
                  r"Union|Literal|ArrayLike|NDArray|dtype|device|Logger|Connection|Client|Parameter|"
                  r"array_like|array-like|optional|callable|path-like|file-like)"),
    (r"py:class", r"(torch\.)?(nn\.)?Module"),
    (r"py:obj", r"(typing|collections\.abc)\..*"),
    # private helpers (fesurf.sampling._engine.drive, Oracle._compute) are not part of the API: a
    # docstring may name them, and they render as text
    (r"py:.*", r"(fesurf\.(\w+\.)*)?_\w+(\.\w+)*"),
    (r"py:.*", r"(\w+\.)+_\w+"),
]

# --- output ----------------------------------------------------------------------------------
html_theme = "furo"
# API members stay out of the page tables of contents: with them, every page's navigation tree holds
# every documented object (a third of the build time, and 10x larger pages)
toc_object_entries = False
html_title = f"fesurf {release}"
html_static_path = []
html_show_sourcelink = False
html_theme_options = {"navigation_with_keys": True}
