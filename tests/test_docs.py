"""The documentation site: it builds with ``mkdocs build --strict`` (no broken link, no missing
page, no formula that fails to convert, no figure run a page quotes that did not happen), its
figures are small, and three built pages open in a real browser with every image loaded.

Needs the ``docs`` extra (``pip install -e ".[docs]"``) and, for the browser, Debian's chromium
driven by Playwright; without them the tests skip with the reason (under CI they fail).
"""
from __future__ import annotations

import functools
import html
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FIGURES = DOCS / "figures"
HOMEWORKS = ("knn", "logreg", "churn", "classify", "segment", "autoencoder", "gan", "detection", "plates")
MAX_FIGURE_BYTES = 300 * 1024
MAX_FIGURES_BYTES = 15 * 1024 * 1024
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _missing(what: str, how: str):
    if os.environ.get("CI"):
        pytest.fail(f"{what} is not installed: .ci/run should have installed it ({how})")
    pytest.skip(f"{what} is not installed ({how})")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built once by ``mkdocs build --strict`` into a temporary folder."""
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python", "latex2mathml"):
        if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
            _missing(f"the docs extra ({module})", 'pip install -e ".[docs]"')
    out = tmp_path_factory.mktemp("site")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                             "-d", str(out)], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    seconds = time.perf_counter() - start
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    print(f"\nmkdocs build --strict: {seconds:.1f} s")
    return out


def test_every_page_and_the_api_reference_are_built(site):
    for name in HOMEWORKS:
        page = (site / "homeworks" / name / "index.html").read_text()
        # the notebook: a link when the repository holds it (then copied into the site), else its path
        notebook = ROOT / "notebooks" / f"hw_{name}.ipynb"
        assert f"notebooks/hw_{name}.ipynb" in page, name
        if notebook.is_file():
            assert (site / "notebooks" / f"hw_{name}.ipynb").read_bytes() == notebook.read_bytes()
            assert re.search(rf'<a href="(\.\./)+notebooks/hw_{name}\.ipynb"', page), name
    for page in ("engine", "serve", "benchmarks", "getting-started"):
        assert (site / page / "index.html").is_file(), page
    api = (site / "api" / "homeworks" / "index.html").read_text()
    for name in HOMEWORKS[2:]:  # every homework with a trained model documents its load_model
        assert f'id="hw_{name}.models.load_model"' in api, name
    runs_api = (site / "api" / "core-runs" / "index.html").read_text()
    for anchor in ("core.runs.save_model", "core.runs.read_model", "core.runs.load_model", "core.runs.LoadedModel"):
        assert f'id="{anchor}"' in runs_api, anchor


def test_formulas_are_mathml_and_figure_runs_quote_the_manifest(site):
    segment = (site / "homeworks" / "segment" / "index.html").read_text()
    # BCE, Dice, Focal, Tversky, Lovász and the course's score: six display formulas, no TeX left over
    assert segment.count('<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">') >= 6
    assert "\\frac" not in segment and 'class="arithmatex"' not in segment
    manifest = json.loads((FIGURES / "figures.json").read_text())
    record = manifest["segment"]
    assert record["commands"][0].startswith("python -m hw_segment.train")
    text = html.unescape(re.sub(r"<[^>]+>", "", segment))  # the code block is split into highlighted tokens
    assert record["commands"][0] in text
    iou = record["metrics"]["test_iou"]
    assert 0 < iou <= 1
    assert f"<td>{iou:.4g}</td>" in segment


def test_figures_are_small_and_each_is_shown(site):
    files = [p for p in FIGURES.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".gif")]
    assert len(files) >= 9
    sizes = {p.name: p.stat().st_size for p in files}
    assert max(sizes.values()) <= MAX_FIGURE_BYTES, {k: v for k, v in sizes.items() if v > MAX_FIGURE_BYTES}
    assert sum(sizes.values()) <= MAX_FIGURES_BYTES
    pages = "\n".join(p.read_text() for p in DOCS.rglob("*.md"))
    unused = sorted(name for name in sizes if f"figures/{name}" not in pages)
    assert not unused, f"figures no page shows (delete them or show them): {unused}"
    for name in sizes:
        assert (site / "figures" / name).is_file()


@pytest.fixture
def served(site):
    """The built site over HTTP on a free port of 127.0.0.1."""
    handler = functools.partial(QuietHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.mark.parametrize("page, min_figures", [("", 1), ("homeworks/segment/", 2), ("homeworks/gan/", 4)])
def test_pages_show_every_image_in_a_browser(served, page, min_figures):
    if CHROMIUM is None:
        _missing("Debian's chromium", "apt-get install chromium")
    if importlib.util.find_spec("playwright") is None:
        _missing("playwright", 'pip install -e ".[dev]"')
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            failed = []
            tab.on("requestfailed", lambda request: failed.append(request.url))
            response = tab.goto(f"{served}/{page}", wait_until="load")
            assert response is not None and response.status == 200
            images = tab.evaluate("""() => Array.from(document.images).map(
                img => ({src: img.currentSrc || img.src, complete: img.complete, width: img.naturalWidth}))""")
            title = tab.title()
        finally:
            browser.close()
    figures = [img for img in images if "/figures/" in img["src"]]
    assert len(figures) >= min_figures, (title, images)
    broken = [img["src"] for img in images if not (img["complete"] and img["width"] > 0)]
    assert not broken, f"{title}: images that did not load: {broken}"
    assert not [url for url in failed if url.startswith(served)], failed
