"""Imports go one way: run.py and adapters/ -> graphs/ -> pipeline/. Checked on the source (every
import statement, including those inside functions) and by importing each layer alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what each layer may not import
FORBIDDEN = {"pipeline": ("graphs", "adapters", "run"), "graphs": ("adapters", "run"), "adapters": ("run",)}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_module_imports_a_layer_above_its_own(layer):
    wrong = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for name in imported_modules(path):
            if name.split(".")[0] in FORBIDDEN[layer]:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from graphs.runner import run_query\n    import adapters.tools\n")
    assert {"graphs.runner", "adapters.tools"} <= imported_modules(module)


@pytest.mark.parametrize("layer", ["pipeline.gallery", "pipeline.evidence", "graphs.graph", "graphs.runner"])
def test_a_lower_layer_imports_without_the_layers_above(layer):
    code = (f"import sys, {layer}\n"
            "above = sorted(m for m in sys.modules if m.split('.')[0] in ('adapters', 'run')"
            + (" or m.split('.')[0] == 'graphs'" if layer.startswith("pipeline") else "") + ")\n"
            "assert not above, above\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
