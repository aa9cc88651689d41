"""The shape of the code: no import cycles, one way to load a model, ``torch.load`` only in core."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file()
                  and (p.name == "core" or p.name.startswith("hw_")))
WITH_MODEL = ("hw_autoencoder", "hw_churn", "hw_classify", "hw_detection", "hw_gan", "hw_plates", "hw_segment")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Line numbers inside ``if TYPE_CHECKING:`` blocks (annotations only: nothing imported at run time)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that module ``name`` imports, at top level or inside functions."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import core.detection.x as y` -> the deepest module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_reader_sees_relative_function_level_and_submodule_imports(tmp_path):
    modules = {"pkg": tmp_path / "__init__.py", "pkg.a": tmp_path / "a.py", "pkg.b": tmp_path / "b.py",
               "pkg.c": tmp_path / "c.py"}
    source = ("from typing import TYPE_CHECKING\nfrom . import b\nif TYPE_CHECKING:\n    from .c import X\n"
              "def f():\n    from pkg import c\n")
    (tmp_path / "a.py").write_text(source)
    assert imports_of("pkg.a", tmp_path / "a.py", modules) == {"pkg.b", "pkg.c"}
    (tmp_path / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import X\n")
    assert imports_of("pkg.a", tmp_path / "a.py", modules) == set()


def test_no_two_project_modules_import_each_other():
    modules = project_modules()
    assert "core.trainer" in modules and "hw_segment.train" in modules
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert "core.checkpoint" in graph["core.trainer"] and "core.checkpoint" in graph["core.callbacks"]
    assert import_cycles(graph) == []


def test_core_imports_no_homework_and_no_homework_imports_another():
    modules = project_modules()
    for name, path in modules.items():
        package = name.split(".")[0]
        for target in imports_of(name, path, modules):
            other = target.split(".")[0]
            assert other in ("core", package), f"{name} imports {target}"


def test_torch_load_only_in_core():
    offenders = []
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in ("core", "tests", ".git") or "site-packages" in relative.parts:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "load" and getattr(node.value, "id", "") == "torch":
                offenders.append(f"{relative}:{node.lineno}")
    assert offenders == []


@pytest.mark.parametrize("homework", WITH_MODEL)
def test_every_homework_with_a_model_has_load_model(homework):
    module = importlib.import_module(homework)
    assert callable(getattr(module, "load_model", None)), f"{homework}.load_model missing"
    assert {"run"} <= set(module.load_model.__code__.co_varnames[:module.load_model.__code__.co_argcount])
