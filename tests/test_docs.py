"""The documentation site: it builds clean, covers the API and the config, shows every tutorial's plots.

One fresh Sphinx build (``sphinx-build -n -W --keep-going -E``, in this process; notebooks never executed) into
``docs/_build/test/`` is shared by the tests below. The last test runs
``scripts/check_docs_browser.py`` on it: the built home page, the user-guide index and a tutorial in
headless Chromium (Debian's ``chromium``; skipped when it is not installed), checking that the plots
loaded as images and that no page shows error text, with screenshots left in
``docs/_build/screenshots/`` (not committed).
"""
from __future__ import annotations

import contextlib
import html.parser
import importlib
import importlib.util
import inspect
import io
import pkgutil
import posixpath
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BUILD = DOCS / "_build" / "test"
HTML = BUILD / "html"
SHOTS = DOCS / "_build" / "screenshots"
bs4 = pytest.importorskip("bs4", reason="the docs extra is not installed (pip install -e '.[docs]')")
pytest.importorskip("sphinx", reason="the docs extra is not installed (pip install -e '.[docs]')")
pytest.importorskip("myst_nb", reason="the docs extra is not installed (pip install -e '.[docs]')")


@pytest.fixture(scope="module")
def site():
    """Build the site once, from scratch (-E: every document read, so every warning is seen).

    In this process (fesurf and torch are imported once for the build and the checks); what Sphinx
    writes to stderr (its warnings) is kept in ``site.stderr``.
    """
    from sphinx.cmd.build import build_main

    shutil.rmtree(BUILD, ignore_errors=True)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)         # Sphinx's own deprecations
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # (RemovedInSphinx10/11Warning)
        returncode = build_main(["-n", "-W", "--keep-going", "-E", "-q", "-b", "html",
                                 "-d", str(BUILD / "doctrees"), str(DOCS), str(HTML)])
    return subprocess.CompletedProcess(["sphinx-build"], returncode, "", err.getvalue())


def _built(site) -> None:
    """The checks below read the pages, which a build with warnings (-W --keep-going) still writes."""
    assert (HTML / "index.html").exists() and (HTML / "objects.inv").exists(), (
        "sphinx-build wrote no site:\n" + "\n".join(site.stderr.splitlines()[-30:]))


def _page(path: Path):
    return bs4.BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def test_docs_build_without_warnings(site):
    problems = [line for line in site.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert site.returncode == 0 and not problems, "sphinx-build failed:\n" + "\n".join(
        problems or site.stderr.splitlines()[-30:])
    assert (HTML / "index.html").exists() and (HTML / "objects.inv").exists()


def _inventory():
    from sphinx.util.inventory import InventoryFile

    with open(HTML / "objects.inv", "rb") as f:
        inv = InventoryFile.load(f, "", posixpath.join)
    return inv if isinstance(inv, dict) else inv.data


def _public_modules():
    import fesurf

    names = ["fesurf"] + [m.name for m in pkgutil.walk_packages(fesurf.__path__, "fesurf.")
                          if not any(p.startswith("_") for p in m.name.split("."))]
    return [importlib.import_module(n) for n in names]


def test_api_reference_covers_every_name_in_every_all(site):
    _built(site)
    inv = _inventory()
    documented = {name for kind, entries in inv.items() if kind.startswith("py:") for name in entries}
    modules = _public_modules()
    missing, checked = [], 0
    for module in modules:
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            checked += 1
            here = f"{module.__name__}.{name}"
            if inspect.ismodule(obj):
                ok = obj.__name__ in documented
            else:
                qual = getattr(obj, "__qualname__", None)
                canonical = f"{getattr(obj, '__module__', '')}.{qual}" if qual else None
                ok = here in documented or (canonical in documented and not isinstance(obj, (int, float, str)))
            if not ok:
                missing.append(here)
    assert checked > 400, checked  # every fesurf module's __all__ (457 names when this was written)
    assert not missing, f"{len(missing)} names of __all__ lists are not in objects.inv: {missing}"
    # and every module has its own entry
    assert {m.__name__ for m in modules} <= set(inv["py:module"])


def test_config_reference_lists_every_key_with_type_default_and_unit(site):
    _built(site)
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        from fesurf_config import default_text, unit_text
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    from fesurf.config import SCHEMA

    assert set(_inventory()["std:confval"]) == {f"{s}.{k}" for s, keys in SCHEMA.items() for k in keys}
    page = _page(HTML / "guide" / "config.html")
    for section, keys in SCHEMA.items():
        for name, key in keys.items():
            dt = page.find(id=f"confval-{section}.{name}")
            assert dt is not None, f"{section}.{name} has no entry in guide/config.html"
            text = " ".join(dt.find_parent("dl").get_text(" ", strip=True).split())
            unit = unit_text(section, key, SCHEMA).replace(":confval:", "").replace("`", "")
            plain = text.translate({ord(q): None for q in '"“”'})
            for want in (f"Type : {key.type_name()}", f"Default : {default_text(key)}", f"Unit : {unit}"):
                assert want.translate({ord(q): None for q in '"“”'}) in plain, (section, name, want, text)


class _Anchors(html.parser.HTMLParser):
    """The ids, link targets and cell-output images of one page (the stdlib parser: 20x faster than a soup)."""

    def __init__(self, path: Path):
        super().__init__(convert_charrefs=True)
        self.ids, self.hrefs, self.output_images = set(), [], []
        self._stack = []  # (tag, is a cell output) of the open elements
        self.feed(path.read_text(encoding="utf-8"))
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        inside = bool(self._stack and self._stack[-1][1]) or "cell_output" in (attrs.get("class") or "").split()
        if tag not in VOID:
            self._stack.append((tag, inside))
        if attrs.get("id") is not None:
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href") is not None:
            self.hrefs.append(attrs["href"])
        if tag == "img" and inside and attrs.get("src"):
            self.output_images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag in VOID or all(open_tag != tag for open_tag, _ in self._stack):
            return  # <img ... /> and stray end tags close nothing
        while self._stack.pop()[0] != tag:
            pass


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def _stored_images(nb_path: Path) -> int:
    import nbformat

    nb = nbformat.read(nb_path, as_version=4)
    return sum(1 for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
               if {"image/png", "image/svg+xml", "image/jpeg"} & set(out.get("data", {})))


def test_every_tutorial_page_shows_its_plots(site):
    _built(site)
    notebooks = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.ipynb"))
    assert len(notebooks) >= 14
    stored = {nb.name: _stored_images(nb) for nb in notebooks}
    unplotted = [name for name, n in stored.items() if n == 0]
    assert not unplotted, (f"tutorials stored without a plot: {unplotted}; store the notebook's outputs with "
                           "python scripts/refresh_tutorials.py NN")
    no_plot = []
    for nb in notebooks:
        page = HTML / "tutorials" / f"{nb.stem}.html"
        assert page.exists(), f"no page for {nb.name}"
        imgs = [src for src in _Anchors(page).output_images if (page.parent / unquote(src)).is_file()]
        if len(imgs) < stored[nb.name]:
            no_plot.append(f"{nb.name} ({len(imgs)} of {stored[nb.name]} images)")
    assert not no_plot, f"tutorial pages that do not show the plots stored in the notebook: {no_plot}"


def test_internal_links_resolve(site):
    _built(site)
    pages = sorted(HTML.rglob("*.html"))
    parsed = {page.resolve(): _Anchors(page) for page in pages}
    broken = []
    for page in pages:
        for href in parsed[page.resolve()].hrefs:
            url = urlsplit(href)
            if url.scheme or href.startswith(("mailto:", "javascript:")):
                continue
            target = (page.parent / unquote(url.path)).resolve() if url.path else page.resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(HTML)} -> {href}")
            elif url.fragment and target.suffix == ".html" and unquote(url.fragment) not in (
                    parsed[target].ids if target in parsed else _Anchors(target).ids):
                broken.append(f"{page.relative_to(HTML)} -> {href} (no such anchor)")
    assert len(pages) > 40
    assert not broken, f"{len(broken)} broken internal links: {broken[:20]}"


# --- looked at as a person would -------------------------------------------------------------


def _browser_check():
    spec = importlib.util.spec_from_file_location("check_docs_browser", ROOT / "scripts" / "check_docs_browser.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pages_render_in_headless_chromium(site):
    """scripts/check_docs_browser.py on the test build: home, guide index and a tutorial in Chromium."""
    _built(site)
    check = _browser_check()
    exe = check.find_chromium()
    if exe is None:
        pytest.skip("no headless Chromium (apt-get install -y chromium)")
    problems = check.check_site(HTML, SHOTS, exe=exe)
    assert not problems, "\n".join(problems)
    assert {p.name for p in SHOTS.glob("*.png")} >= {f"{key}.png" for key in check.PAGES}
