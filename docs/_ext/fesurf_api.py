"""The API reference, generated at build time from every fesurf module's ``__all__``.

Every module of the package is imported (a module that fails to import fails the build). Its public
names are its ``__all__`` or, for a module without one, the classes and functions defined in it and
the data it documents with a ``#:`` comment. Each object is documented once, at its most public
home: the shallowest module that exports it (``fesurf.estimators.compute_pmf`` rather than
``fesurf.estimators.pmf.compute_pmf``). Every other name of the same object (the defining module,
other re-exports) becomes an alias in the Python domain and in ``objects.inv``, so ``:func:`` and
``:class:`` references and type annotations resolve under any of them.

The pages go to ``docs/api/generated/`` (not committed; rewritten only when their text changes), one
per top-level module or package of fesurf, so a module that lands later appears by itself.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging

logger = logging.getLogger(__name__)

PACKAGE = "fesurf"
PRIMITIVES = (int, float, complex, str, bytes, bool, type(None), tuple, frozenset)


@dataclass
class Entry:
    """One object of the public API: where it is documented and under which other names."""

    obj: object
    kind: str  # "class", "exception", "function", "data", "module"
    home: str  # module whose page documents it
    name: str  # name in that module
    aliases: set = field(default_factory=set)  # other full names of the same object

    @property
    def full_name(self) -> str:
        return f"{self.home}.{self.name}"


def public_modules(package: str = PACKAGE) -> list:
    """Every importable module of ``package`` with no private component, package first."""
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        names.append(info.name)
    return [importlib.import_module(n) for n in sorted(names)]


def _kind(obj) -> str:
    if inspect.ismodule(obj):
        return "module"
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    if inspect.isfunction(obj) or inspect.isbuiltin(obj) or inspect.ismethod(obj):
        return "function"
    if callable(obj) and hasattr(obj, "__wrapped__"):
        return "function"
    return "data"


def _module_assignments(module) -> tuple[list, list]:
    """Names assigned at the top level of the module's source, and names imported under another name."""
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        return [], []
    assigned, renamed = [], []
    for node in tree.body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = [t for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            targets = [node.target]
        elif isinstance(node, ast.ImportFrom):
            renamed += [a.asname for a in node.names if a.asname and a.asname != a.name]
        assigned += [t.id for t in targets]
    return assigned, renamed


def public_names(module) -> list:
    """The module's public API.

    ``__all__`` (or, without one, the classes and functions defined in the module, its
    ``#:``-documented data and the fesurf objects it imports under another name), plus the
    UPPER_CASE constants it assigns (thresholds and tables that docstrings refer to).
    """
    assigned, renamed = _module_assignments(module)
    constants = [n for n in assigned if n.isupper() and not n.startswith("_")]
    if hasattr(module, "__all__"):
        names = list(module.__all__)
        extra = constants
    else:
        names = [n for n, o in vars(module).items()
                 if not n.startswith("_") and (inspect.isclass(o) or inspect.isfunction(o))
                 and getattr(o, "__module__", None) == module.__name__]
        try:
            analyzer = ModuleAnalyzer.for_module(module.__name__)
            documented = [attr for (cls, attr) in analyzer.find_attr_docs() if cls == "" and not attr.startswith("_")]
        except Exception:  # a module without source (none in fesurf)
            documented = []
        aliases = [n for n in renamed if not n.startswith("_")
                   and str(getattr(getattr(module, n, None), "__module__", "")).startswith(PACKAGE)]
        extra = documented + constants + aliases
    return names + [n for n in dict.fromkeys(extra) if n in vars(module) and n not in names]


def _identity(module_name, name, obj):
    # primitives share ids (interned ints and strings): a constant is "the same object" only under
    # the same name with the same value
    if isinstance(obj, PRIMITIVES):
        return ("value", name, repr(obj))
    return ("id", id(obj))


def collect(package: str = PACKAGE) -> tuple[list, dict]:
    """Return (modules, entries by identity): every public name of every module, grouped by object."""
    modules = public_modules(package)
    module_names = {m.__name__ for m in modules}
    found = {}
    for module in modules:
        for name in public_names(module):
            if not hasattr(module, name):
                raise AttributeError(f"{module.__name__}.__all__ lists {name!r}, which the module does not define")
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                continue  # modules are documented as modules
            found.setdefault(_identity(module.__name__, name, obj), []).append((module.__name__, name, obj))
    entries = {}
    for key, places in found.items():
        obj = places[0][2]
        defining = getattr(obj, "__module__", None) if not isinstance(obj, PRIMITIVES) else None

        def rank(place):
            mod, name, _ = place
            # under its own name (not an alias such as LabelCache) first, then the shallowest module,
            # then the defining one, then alphabetical
            return (name != getattr(obj, "__name__", name), mod.count("."), mod != defining, mod, name)

        # a name that is also a submodule's (fesurf.sampling.metadynamics, the function and the module)
        # is documented where it is defined
        homes = [p for p in places if f"{p[0]}.{p[1]}" not in module_names] or places
        home_mod, home_name, _ = min(homes, key=rank)
        entry = Entry(obj, _kind(obj), home_mod, home_name)
        for mod, name, _ in places:
            if (mod, name) != (home_mod, home_name) and f"{mod}.{name}" not in module_names:
                entry.aliases.add(f"{mod}.{name}")
        qualname = getattr(obj, "__qualname__", None)
        if entry.kind != "data" and defining and qualname and "<locals>" not in qualname:
            canonical = f"{defining}.{qualname}"
            if canonical != entry.full_name:
                entry.aliases.add(canonical)
        entries[key] = entry
    return modules, entries


def _title(text: str, char: str) -> list:
    return [text, char * len(text), ""]


def _directive(entry: Entry) -> list:
    name = entry.full_name
    if entry.kind in ("class", "exception"):
        lines = [f".. auto{entry.kind}:: {name}", "   :members:", "   :undoc-members:", "   :show-inheritance:"]
    elif entry.kind == "function":
        lines = [f".. autofunction:: {name}"]
    else:
        lines = [f".. autodata:: {name}"]
        text = repr(entry.obj)
        if len(text) > 70 or "\n" in text or " at 0x" in text:
            lines.append("   :no-value:")
    return lines + [""]


def first_sentence(obj) -> str:
    """The first sentence of an object's docstring, not cut inside a ``literal`` or a $math$ span."""
    doc = inspect.getdoc(obj) if not isinstance(obj, PRIMITIVES + (dict, list, set)) else None
    if not doc:
        return ""
    para = " ".join(doc.strip().split("\n\n")[0].split())
    depth = 0
    for i, ch in enumerate(para):
        if para.startswith("``", i):
            depth ^= 1
        if ch == "." and depth == 0 and (i + 1 == len(para) or para[i + 1] == " ") and para.count("``", 0, i) % 2 == 0 \
                and para.count("`", 0, i) % 2 == 0 and para.count("(", 0, i) == para.count(")", 0, i):
            return para[:i + 1]
    return para if para.count("``") % 2 == 0 and para.count("`") % 2 == 0 else ""


def summary_table(entries: list) -> list:
    from fesurf_docstrings import escape_bars

    lines = [".. list-table::", "   :widths: 30 70", "   :class: fesurf-summary", ""]
    for entry in entries:
        text = [first_sentence(entry.obj) or " "]
        escape_bars(text)
        lines += [f"   * - :py:obj:`~{entry.full_name}`", f"     - {text[0]}"]
    return lines + [""]


def page_text(top: str, modules: list, entries: dict) -> str:
    """The reST page of one top-level module or package and its submodules."""
    homed = {}
    exported = {}
    for entry in entries.values():
        homed.setdefault(entry.home, []).append(entry)
    for module in modules:
        if hasattr(module, "__all__"):
            for name in module.__all__:
                obj = getattr(module, name)
                if inspect.ismodule(obj):
                    continue
                entry = entries[_identity(module.__name__, name, obj)]
                if entry.home != module.__name__:
                    exported.setdefault(module.__name__, []).append((name, entry))
    lines = [f".. This page is generated by docs/_ext/fesurf_api.py at build time: edit the docstrings.", ""]
    lines += _title(f"``{top}``", "=")
    for module in modules:
        mod = module.__name__
        if mod != top:
            lines += _title(f"``{mod}``", "-")
        lines += [f".. automodule:: {mod}", "   :no-members:", ""]
        own = sorted(homed.get(mod, []), key=lambda e: (e.kind not in ("class", "exception"), e.name.lower()))
        if own:
            lines += summary_table(own)
        again = exported.get(mod, [])
        if again:
            refs = ", ".join(f":py:obj:`{name} <{e.full_name}>`" for name, e in sorted(again))
            lines += [f"Also exported here: {refs}.", ""]
        for entry in own:
            lines += _directive(entry)
    return "\n".join(lines) + "\n"


def write_pages(app: Sphinx) -> None:
    """builder-inited: import fesurf, write one page per top-level module into api/generated/."""
    modules, entries = collect()
    app.env.fesurf_api_aliases = {e.full_name: sorted(e.aliases) for e in entries.values() if e.aliases}
    out = Path(app.srcdir) / "api" / "generated"
    out.mkdir(parents=True, exist_ok=True)
    groups = {}
    for module in modules:
        parts = module.__name__.split(".")
        top = ".".join(parts[:2]) if len(parts) > 1 else PACKAGE
        groups.setdefault(top, []).append(module)
    wanted = set()
    for top, mods in groups.items():
        path = out / f"{top}.rst"
        wanted.add(path.name)
        text = page_text(top, mods, entries)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    for stale in out.glob("*.rst"):
        if stale.name not in wanted:
            stale.unlink()


def add_aliases(app: Sphinx, env) -> None:
    """env-updated: register every other name of a documented object (and of its members)."""
    from sphinx.domains.python import ObjectEntry

    domain = env.get_domain("py")
    objects = domain.objects
    aliases = getattr(env, "fesurf_api_aliases", {})
    for home, others in aliases.items():
        if home not in objects:
            logger.warning("fesurf_api: %s was not documented (no autodoc entry)", home)
            continue
        members = [(n, o) for n, o in objects.items()
                   if (n == home or n.startswith(home + ".")) and o.objtype != "module"]
        for alias in others:
            for name, target in members:
                alias_name = alias + name[len(home):]
                if alias_name not in objects:
                    objects[alias_name] = ObjectEntry(target.docname, target.node_id, target.objtype, True)


def setup(app: Sphinx) -> dict:
    app.connect("builder-inited", write_pages)
    app.connect("env-updated", add_aliases)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True, "env_version": 1}
