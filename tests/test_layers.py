"""The layout: imports go one way (run.py and adapters/ -> graphs/ -> pipeline/, and inside pipeline/
from the basics up through its sub-packages), no import cycle, at most ten modules directly in
pipeline/, every import through the installed `lensgraph` name. Checked on the source (every import
statement, including those inside functions) and by importing each layer alone."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOPS = ("pipeline", "graphs", "adapters", "prompts")
# what each layer may not import
FORBIDDEN = {"pipeline": ("graphs", "adapters", "run"), "graphs": ("adapters", "run"), "adapters": ("run",)}
# inside pipeline/: what each part may import besides itself (pipeline/__init__.py says the same)
BASICS = {"errors", "settings", "files", "images", "redaction", ""}
PIPELINE_PARTS = {
    "basics": {"basics"},
    "models": {"basics"},
    "reasoning": {"basics", "models"},
    "store": {"basics", "models"},
    "ingest": {"basics", "models", "store"},
    "gallery": {"basics", "models", "store", "ingest"},
    "evaluation": {"basics", "models", "reasoning", "store", "ingest", "gallery"},
}
# settings.py validates its fields against the values their owners declare (devices, plan checks)
SETTINGS_READS = {"models", "reasoning"}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, named as in the source."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def project_name(name: str) -> str | None:
    """A project module's name without the package prefix ("pipeline.store.index"), or None."""
    return name.removeprefix("lensgraph.") if name.startswith("lensgraph.") else None


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_module_imports_a_layer_above_its_own(layer):
    wrong = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for name in imported_modules(path):
            if (project_name(name) or "").split(".")[0] in FORBIDDEN[layer]:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


def pipeline_part(relative: str) -> str:
    """The part of pipeline/ a module belongs to ("store", "basics", ...) from its dotted name under pipeline."""
    first = relative.split(".")[0]
    return "basics" if first in BASICS else first


def test_pipeline_parts_import_only_the_parts_below_them():
    wrong = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        relative = ".".join(path.relative_to(ROOT / "pipeline").with_suffix("").parts).removesuffix("__init__").rstrip(".")
        part = pipeline_part(relative)
        allowed = PIPELINE_PARTS[part] | {part} | (SETTINGS_READS if relative == "settings" else set())
        for name in imported_modules(path):
            target = project_name(name)
            if target and target.startswith("pipeline.") and pipeline_part(target.removeprefix("pipeline.")) not in allowed:
                wrong.append(f"{path.relative_to(ROOT)} ({part}) imports {name}")
    assert not wrong, "\n".join(wrong)


def test_at_most_ten_modules_directly_in_pipeline():
    modules = sorted(p.name for p in (ROOT / "pipeline").glob("*.py"))
    assert len(modules) <= 10, modules
    for package in (p for p in (ROOT / "pipeline").iterdir() if (p / "__init__.py").is_file()):
        assert ast.get_docstring(ast.parse((package / "__init__.py").read_text())), f"{package.name} says what it holds"


def test_every_import_goes_through_the_lensgraph_package():
    """A bare `import pipeline...` would load a second copy of a module beside lensgraph.pipeline's."""
    bare = re.compile(rf"^({'|'.join(TOPS)}|run)(\.|$)")
    wrong = []
    for path in [ROOT / "run.py", *(p for top in (*TOPS, "tests", "bench") for p in (ROOT / top).rglob("*.py"))]:
        wrong += [f"{path.relative_to(ROOT)} imports {n}" for n in imported_modules(path) if bare.match(n)]
    assert not wrong, "\n".join(wrong)


def test_the_installed_packages_are_the_project_folders():
    """pyproject.toml lists the packages by hand (the repository itself maps to `lensgraph`)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {"lensgraph"} | {"lensgraph." + ".".join(p.parent.relative_to(ROOT).parts)
                               for top in TOPS for p in (ROOT / top).rglob("__init__.py")}
    assert set(config["packages"]) == folders
    assert config["package-dir"] == {"lensgraph": "."}


def test_the_checker_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from lensgraph.graphs.runner import run_query\n    import lensgraph.adapters.tools\n")
    assert {"lensgraph.graphs.runner", "lensgraph.adapters.tools"} <= imported_modules(module)


@pytest.mark.parametrize("layer", ["pipeline.gallery", "pipeline.reasoning.evidence", "graphs.graph", "graphs.runner"])
def test_a_lower_layer_imports_without_the_layers_above(layer):
    code = (f"import sys, lensgraph.{layer}\n"
            "tops = sorted({m.split('.')[1] for m in sys.modules if m.startswith('lensgraph.')})\n"
            "above = [t for t in tops if t in ('adapters', 'run')"
            + (" or t == 'graphs'" if layer.startswith("pipeline") else "") + "]\n"
            "assert not above, above\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def project_modules() -> dict[str, Path]:
    """Module name -> file, for every module of the project (packages by their __init__)."""
    found = {"lensgraph.run": ROOT / "run.py"}
    for top in TOPS:
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found["lensgraph." + ".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Who imports whom among the project's modules: every import statement, those inside functions
    and under TYPE_CHECKING included; `from package import name` points at the submodule when
    `name` is one."""
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                           for alias in node.names]
            edges.update(t for t in targets if t in modules and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_among_the_projects_modules():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
