"""MkDocs hooks of the documentation site (``hooks:`` in mkdocs.yml).

- Formulas: ``pymdownx.arithmatex`` (generic mode) marks ``$...$`` and ``$$...$$``; they are
  turned into MathML here, at build time (``latex2mathml``), which browsers draw natively: the
  pages load no script and need no network for their formulas.
- Notebooks: a page's inline code ``notebooks/hw_<name>.ipynb`` becomes a link to the notebook
  when the repository holds it (the notebook is then copied into the site as
  ``notebooks/hw_<name>.ipynb``) and stays plain text otherwise, so ``mkdocs build --strict``
  passes with or without the notebooks (and the page reads the same on a repository browser).
- Figure runs: the comment ``<!-- figure-run <job>: key, key ... -->`` becomes the commands,
  wall time and the named ``metrics.json`` values of the run that made the page's figures, read
  from ``docs/figures/figures.json`` (written by ``scripts/make_figures.py``); a job or key
  missing there fails the build, so a page cannot quote a figure run that did not happen.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
FIGURES_JSON = ROOT / "docs" / "figures" / "figures.json"

NOTEBOOK = re.compile(r"(?<!`)`notebooks/(hw_[a-z0-9_]+)\.ipynb`(?!`)")
FIGURE_RUN = re.compile(r"<!-- figure-run ([a-z0-9_]+):(.*?)-->", re.S)
BLOCK_MATH = re.compile(r'<div class="arithmatex">\s*\\\[(.*?)\\\]\s*</div>', re.S)
INLINE_MATH = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)


def on_files(files, config):
    """Add the notebooks the repository holds to the site, as ``notebooks/<name>.ipynb``."""
    for path in sorted(NOTEBOOKS.glob("hw_*.ipynb")):
        files.append(File.generated(config, f"notebooks/{path.name}", abs_src_path=str(path)))
    return files


def _notebook(match: re.Match, page) -> str:
    name = match.group(1)
    if not (NOTEBOOKS / f"{name}.ipynb").is_file():
        return match.group(0)
    return f"[{match.group(0)}]({'../' * page.file.src_uri.count('/')}notebooks/{name}.ipynb)"


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _figure_run(match: re.Match, page) -> str:
    job, keys = match.group(1), [k.strip() for k in match.group(2).split(",") if k.strip()]
    if not FIGURES_JSON.is_file():
        raise PluginError(f"{page.file.src_uri}: {FIGURES_JSON} not found (run scripts/make_figures.py)")
    manifest = json.loads(FIGURES_JSON.read_text())
    if job not in manifest:
        raise PluginError(f"{page.file.src_uri}: no job '{job}' in {FIGURES_JSON} "
                          f"(run scripts/make_figures.py --only {job})")
    record = manifest[job]
    missing = [k for k in keys if k not in record["metrics"]]
    if missing:
        raise PluginError(f"{page.file.src_uri}: {FIGURES_JSON}: job '{job}' has no metric {', '.join(missing)}")
    commands = "\n".join(record["commands"])
    seconds = " + ".join(f"{s:.0f}" for s in record["seconds"])
    lines = [f"The figures above come from this run on the shared data ({seconds} s of wall time, "
             "made by `scripts/make_figures.py`):", "", "```bash",
             "# DLS_DATA points at the shared data subsets", commands, "```", ""]
    if keys:
        lines += ["| metric (`metrics.json`) | value |", "|---|---|"]
        lines += [f"| `{k}` | {_number(record['metrics'][k])} |" for k in keys]
    return "\n".join(lines)


def on_page_markdown(markdown, page, config, files):
    markdown = NOTEBOOK.sub(lambda m: _notebook(m, page), markdown)
    return FIGURE_RUN.sub(lambda m: _figure_run(m, page), markdown)


def _mathml(tex: str, display: str, page) -> str:
    from latex2mathml.converter import convert

    tex = html.unescape(tex).strip()
    try:
        return convert(tex, display=display)
    except Exception as exc:  # latex2mathml raises its own error types for bad TeX
        raise PluginError(f"{page.file.src_uri}: cannot convert the formula {tex!r} ({exc})") from None


def on_page_content(content, page, config, files):
    content = BLOCK_MATH.sub(lambda m: f'<div class="formula">{_mathml(m.group(1), "block", page)}</div>', content)
    return INLINE_MATH.sub(lambda m: _mathml(m.group(1), "inline", page), content)
