"""Look at the built documentation site as a person would: in headless Chromium (Debian's ``chromium``).

Serves a built site (default ``docs/_build/html``, from ``make docs``) on 127.0.0.1, opens the home
page, the user-guide index and a tutorial page, and checks for each that

* the page loaded (its title names fesurf),
* every image on it loaded (natural width and height > 0), and the tutorial page shows its plots
  (at least one image in a cell output, at least 200 x 100 pixels),
* no docutils/notebook error block is on it and none of the error texts of ``ERROR_TEXT`` is,
* every formula was typeset by MathJax (served from the site itself: no network is needed),

then writes a screenshot of each page to ``docs/_build/screenshots/`` (not committed; the tutorial's
reaches down to its first plot) and checks it is not blank. Prints one line per page and exits 1 on a failed check, 2 when no Chromium is installed
(``apt-get install -y chromium``).

Usage::

    python scripts/check_docs_browser.py [--html docs/_build/html] [--shots docs/_build/screenshots]
"""
from __future__ import annotations

import argparse
import functools
import html.parser
import http.server
import json
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"home": "index.html", "guide": "guide/index.html", "tutorial": "tutorials/04_reweight_to_qm.html"}
ERROR_TEXT = ("Traceback (most recent call last)", "Error response", "File not found", "Page not found",
              "Exception occurred", "CellExecutionError")
CHECKER_NAME = "_fesurf_check.html"
# A page of our own that loads the page under test in a frame (same origin) and, once it has
# loaded, writes what it sees as JSON into #out; chromium --dump-dom prints the result.
CHECKER = """<!doctype html><html><body><pre id="out">pending</pre>
<iframe id="f" width="1280" height="1600"></iframe>
<script>
const f = document.getElementById("f");
f.onload = () => setTimeout(() => {
  const d = f.contentDocument;
  const imgs = [...d.querySelectorAll("img")].map(i => ({src: i.getAttribute("src"), w: i.naturalWidth,
                 h: i.naturalHeight, output: !!i.closest(".cell_output"),
                 bottom: Math.ceil(i.getBoundingClientRect().bottom + d.defaultView.scrollY)}));
  const bad = d.querySelectorAll(".system-message, .traceback, .output.traceback, .problematic").length;
  const math = d.querySelectorAll(".math").length;
  const raw = [...d.querySelectorAll(".math")].filter(m => !m.querySelector("mjx-container")).length;
  const mathjax = !!f.contentWindow.MathJax;
  document.getElementById("out").textContent = JSON.stringify({title: d.title, imgs, bad, math, raw,
                                                              mathjax, text: d.body.innerText});
}, 1500);
f.src = new URLSearchParams(location.search).get("page");
</script></body></html>"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "chromium-headless-shell", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def browse(exe: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    """Run headless Chromium once with a throw-away profile."""
    profile = tempfile.mkdtemp(prefix="fesurf-chromium-")
    try:
        return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class _Out(html.parser.HTMLParser):
    """The text of the element with id="out" in a dumped DOM."""

    def __init__(self):
        super().__init__()
        self.inside, self.text = False, None

    def handle_starttag(self, tag, attrs):
        if dict(attrs).get("id") == "out":
            self.inside, self.text = True, ""

    def handle_endtag(self, tag):
        if self.inside and tag == "pre":
            self.inside = False

    def handle_data(self, data):
        if self.inside:
            self.text += data


class Server:
    """The built site over HTTP on 127.0.0.1 (an ephemeral port), in a thread."""

    def __init__(self, root: Path):
        handler = functools.partial(type("Quiet", (http.server.SimpleHTTPRequestHandler,),
                                         {"log_message": lambda *a, **k: None}), directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def check_page(exe: str, url: str, page: str, key: str, shot: Path) -> list:
    """Problems found on one page (empty when it passes); writes its screenshot to ``shot``."""
    problems = []
    dump = browse(exe, "--virtual-time-budget=15000", "--dump-dom", f"{url}/{CHECKER_NAME}?page=/{page}")
    parser = _Out()
    parser.feed(dump.stdout)
    if parser.text in (None, "pending"):
        return [f"{page}: the checker did not run (chromium rc {dump.returncode}): {dump.stderr[-600:]}"]
    seen = json.loads(parser.text)
    if "fesurf" not in seen["title"]:
        problems.append(f"{page}: title {seen['title']!r} does not name fesurf (page not found?)")
    if seen["bad"]:
        problems.append(f"{page}: {seen['bad']} docutils/notebook error blocks")
    problems += [f"{page} shows {text!r}" for text in ERROR_TEXT if text in seen["text"]]
    broken = [i["src"] for i in seen["imgs"] if not (i["w"] > 0 and i["h"] > 0)]
    if broken:
        problems.append(f"{page}: images that did not load: {broken}")
    if seen["raw"]:
        problems.append(f"{page}: {seen['raw']} of {seen['math']} formulas not typeset (MathJax "
                        f"{'loaded' if seen['mathjax'] else 'did not load'})")
    plots = [i for i in seen["imgs"] if i["output"]]
    if key == "tutorial" and not (plots and all(i["w"] >= 200 and i["h"] >= 100 for i in plots)):
        problems.append(f"{page}: no plot in the cell outputs: {seen['imgs']}")
    # tall enough to show the page's first plot, as a reader scrolling down to it sees it
    height = min(max([1600] + [i["bottom"] + 40 for i in plots[:1]]), 9000)
    shot.unlink(missing_ok=True)
    run = browse(exe, "--virtual-time-budget=15000", f"--window-size=1280,{height}", f"--screenshot={shot}",
                 f"{url}/{page}")
    if not shot.exists():
        problems.append(f"{page}: no screenshot (chromium rc {run.returncode}): {run.stderr[-600:]}")
    else:
        import matplotlib.image

        pixels = matplotlib.image.imread(shot)
        if pixels.shape[0] < 1000 or pixels.std() <= 0.05:
            problems.append(f"{page}: the screenshot {shot} is blank (std {pixels.std():.3f})")
    print(f"{key:9s} {page}: title {seen['title']!r}, {len(seen['imgs'])} images ({len(plots)} plots), "
          f"{'ok' if not problems else 'FAILED'}; screenshot {shot}")
    return problems


def check_site(html_dir: Path, shots: Path, pages: dict = PAGES, exe: str | None = None) -> list:
    """Check every page of ``pages`` of the site built in ``html_dir``; returns the problems found."""
    exe = exe or find_chromium()
    if exe is None:
        raise FileNotFoundError("no headless Chromium: apt-get install -y chromium")
    if not (html_dir / "index.html").exists():
        raise FileNotFoundError(f"no built site in {html_dir}: run make docs first")
    shots.mkdir(parents=True, exist_ok=True)
    checker = html_dir / CHECKER_NAME
    checker.write_text(CHECKER)
    problems = []
    try:
        with Server(html_dir) as server:
            for key, page in pages.items():
                problems += check_page(exe, server.url, page, key, shots / f"{key}.png")
    finally:
        checker.unlink(missing_ok=True)
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--html", type=Path, default=ROOT / "docs" / "_build" / "html", help="the built site")
    ap.add_argument("--shots", type=Path, default=ROOT / "docs" / "_build" / "screenshots",
                    help="where the screenshots go")
    args = ap.parse_args(argv)
    try:
        problems = check_site(args.html, args.shots)
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        return 2
    for p in problems:
        print("FAIL:", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
