"""The config reference, generated from ``fesurf.config.SCHEMA`` while the page is read.

``.. fesurf-config-schema::`` expands into one section per config section: a summary table, then
one ``confval`` entry per key (``section.key``) with its type, default, unit, allowed values and
meaning, all read from the schema's :class:`~fesurf.config.Key` objects. The page cannot drift from
the code: a key added to the schema appears in the next build, and each entry is a cross-reference
target (``:confval:`umbrella.kappa```) listed in ``objects.inv``.
"""
from __future__ import annotations

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles


def default_text(key) -> str:
    from fesurf.config import REQUIRED

    if key.default is REQUIRED:
        return "required"
    if key.default is None:
        return "none"
    if isinstance(key.default, bool):
        return "true" if key.default else "false"
    if isinstance(key.default, str):
        return f'"{key.default}"'
    return repr(key.default)


def unit_text(section: str, key, schema) -> str:
    """The key's unit; a unit that names another key ("kappa_unit", "analysis.unit") says so."""
    unit = key.unit
    if not unit:
        return "none"
    for candidate in (unit, f"{section}.{unit}"):
        sec, _, name = candidate.partition(".")
        if name and sec in schema and name in schema[sec]:
            return f"set by :confval:`{sec}.{name}`"
    return unit


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("*", r"\*").replace("|", r"\|").replace("`", r"\`")


def schema_lines(schema) -> list:
    from fesurf.config import REQUIRED

    lines = []
    for section, keys in schema.items():
        title = f"[{section}]"
        lines += [title, "-" * len(title), ""]
        lines += [".. list-table::", "   :header-rows: 1", "   :widths: 24 20 18 18", "",
                  "   * - key", "     - type", "     - default", "     - unit"]
        for name, key in keys.items():
            lines += [f"   * - :confval:`{section}.{name}`", f"     - {key.type_name()}",
                      f"     - ``{default_text(key)}``" if key.default is not REQUIRED else "     - required",
                      f"     - {unit_text(section, key, schema)}"]
        lines.append("")
        for name, key in keys.items():
            lines += [f".. confval:: {section}.{name}", f"   :type: {key.type_name()}",
                      f"   :default: ``{default_text(key)}``" if key.default is not REQUIRED else
                      "   :default: required", ""]
            lines += [f"   {_escape(key.doc[0].upper() + key.doc[1:])}.", ""]
            lines += [f"   :Unit: {unit_text(section, key, schema)}"]
            allowed = key.range_text()
            if key.length:
                allowed = (allowed + "; " if allowed else "") + f"exactly {key.length} items"
            if allowed:
                lines += [f"   :Allowed: {_escape(allowed)}"]
            lines.append("")
    return lines


class ConfigSchema(SphinxDirective):
    """Render ``fesurf.config.SCHEMA`` as reference sections."""

    has_content = False

    def run(self):
        import fesurf.config

        self.env.note_dependency(fesurf.config.__file__)
        container = nodes.container()
        nested_parse_with_titles(self.state, StringList(schema_lines(fesurf.config.SCHEMA), "fesurf.config.SCHEMA"),
                                 container)
        return container.children


def setup(app):
    app.add_directive("fesurf-config-schema", ConfigSchema)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
