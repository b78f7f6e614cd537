"""How fesurf's docstrings are read: numpy style, written to be read as plain text too.

Four rules, each a convention of the package's docstrings rather than an escape hatch:

* ``|x|`` is an absolute value, never a reST substitution (fesurf uses none), so bars are escaped
  before parsing, except inside ````literals```` and on lines of reST tables.
* napoleon reads sections (Parameters, Returns, ...) of functions and classes; the one-paragraph
  docstrings of properties, attributes and module data stay as they are (napoleon would otherwise
  take the text before their first colon for a type and try to cross-link it).
* A private base class (``_Walls``) is not part of the API: the bases shown are its public ones.
* A reference written with a bare name (``:func:`check_potential```, ``:meth:`set_label```) resolves
  to the one documented fesurf object of that name, as Sphinx's ``.name`` search does; inside a class,
  a bare member name resolves along the class's bases first (``:meth:`run``` in a subclass of
  ``Integrator`` is ``Integrator.run``). A bare name that matches none, or several, still fails the
  nitpicky build.
* Module data documented without a ``#:`` comment gets no docstring (autodoc would otherwise show
  the docstring of its type, ``dict``'s or ``tuple``'s, as if it were the constant's).
"""
from __future__ import annotations

import re

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.nodes import make_refnode

_LITERAL = re.compile(r"``.*?``")
_TABLE_LINE = re.compile(r"^\s*([+|].*[+|]|[=\- ]+)\s*$")
_PLAIN = {"attribute", "data", "property"}


def escape_bars(lines: list) -> None:
    for i, line in enumerate(lines):
        if "|" not in line or _TABLE_LINE.match(line) or line.lstrip().startswith((">>>", "...")):
            continue
        parts = _LITERAL.split(line)
        literals = _LITERAL.findall(line)
        escaped = [re.sub(r"(?<!\\)\|", r"\\|", p) for p in parts]
        out = escaped[0]
        for lit, rest in zip(literals, escaped[1:]):
            out += lit + rest
        lines[i] = out


def _wrap_napoleon(app: Sphinx) -> None:
    from sphinx.ext.napoleon import _process_docstring

    listeners = app.events.listeners.get("autodoc-process-docstring", [])
    for listener in list(listeners):
        if listener.handler is _process_docstring:
            app.disconnect(listener.id)

            def process(app, what, name, obj, options, lines, _napoleon=_process_docstring):
                if what in ("data", "attribute") and _type_doc(obj, lines):
                    lines[:] = []
                    return
                escape_bars(lines)
                if what not in _PLAIN:
                    _napoleon(app, what, name, obj, options, lines)

            app.connect("autodoc-process-docstring", process, priority=listener.priority)
            return
    raise RuntimeError("fesurf_docstrings: load sphinx.ext.napoleon before this extension")


def _type_doc(obj, lines: list) -> bool:
    """True when ``lines`` is only the docstring of ``obj``'s type (no documentation of its own)."""
    own = getattr(type(obj), "__doc__", None)
    if not own or not lines:
        return False
    import inspect

    return "\n".join(lines).strip() == (inspect.cleandoc(own) or "").strip()


def _along_bases(env, node, target: str, kinds):
    """``Class.target`` for the first class in the MRO of the reference's class that documents it."""
    import importlib

    modname, clsname = node.get("py:module"), node.get("py:class")
    if not modname or not clsname or "." in target:
        return None
    obj = importlib.import_module(modname)
    for part in clsname.split("."):
        obj = getattr(obj, part, None)
    if not isinstance(obj, type):
        return None
    objects = env.get_domain("py").objects
    for base in obj.__mro__:
        if target not in vars(base):
            continue
        for full in (f"{base.__module__}.{base.__qualname__}.{target}", f"{modname}.{clsname}.{target}"):
            entry = objects.get(full)
            if entry is not None and (kinds is None or entry.objtype in kinds):
                return entry
        return None
    return None


def public_bases(app, name, obj, options, bases: list) -> None:
    """autodoc-process-bases: replace private bases by their own bases (recursively)."""
    out = []
    todo = list(bases)
    while todo:
        base = todo.pop(0)
        if getattr(base, "__name__", "").startswith("_") and isinstance(base, type):
            todo[:0] = [b for b in base.__bases__ if b is not object]
        elif base not in out:
            out.append(base)
    bases[:] = out or [object]


_ROLE_TYPES = {"func": ("function", "method", "classmethod", "staticmethod"), "meth": ("method", "classmethod",
               "staticmethod", "property"), "class": ("class", "exception"), "exc": ("exception", "class"),
               "data": ("data", "attribute"), "attr": ("attribute", "property", "data"), "obj": None, "mod": ("module",)}


_INDEX = {}


def _by_last_name(env) -> dict:
    """fesurf's documented py objects by the last component of their name (built once per build)."""
    objects = env.get_domain("py").objects
    key = (id(env), len(objects))
    if key not in _INDEX:
        index = {}
        for full, entry in objects.items():
            if full.startswith("fesurf"):
                index.setdefault(full.rpartition(".")[2], []).append((full, entry))
        _INDEX.clear()
        _INDEX[key] = index
    return _INDEX[key]


def resolve_bare_name(app, env, node, contnode):
    """missing-reference: a bare or partly qualified py name that names exactly one fesurf object."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    role = node.get("reftype")
    if not target or target.startswith(("_", ".")) or role not in _ROLE_TYPES:
        return None
    kinds = _ROLE_TYPES[role]
    inherited = _along_bases(env, node, target, kinds)
    if inherited is not None:
        return make_refnode(app.builder, node["refdoc"], inherited.docname, inherited.node_id, contnode, target)
    hits = {}
    for full, entry in _by_last_name(env).get(target.rpartition(".")[2], ()):
        if (full == target or full.endswith("." + target)) and (kinds is None or entry.objtype in kinds):
            hits.setdefault((entry.docname, entry.node_id), full)
    if len(hits) > 1:  # prefer the one in the same class, then the same module, as the reference
        for prefix in (".".join(filter(None, (node.get("py:module"), node.get("py:class")))), node.get("py:module")):
            near = {k: v for k, v in hits.items() if prefix and v.startswith(prefix + ".")}
            if len(near) == 1:
                hits = near
                break
    if len(hits) != 1:
        return None
    (docname, node_id), _ = hits.popitem()
    return make_refnode(app.builder, node["refdoc"], docname, node_id, contnode, target)


def setup(app: Sphinx) -> dict:
    app.setup_extension("sphinx.ext.napoleon")
    _wrap_napoleon(app)
    app.connect("autodoc-process-bases", public_bases)
    app.connect("missing-reference", resolve_bare_name)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
