"""Imports run one way: build-time code (model.builder) uses serving code, never the reverse."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "model"
BUILDER = "builder"  # the build-time subpackage of model
ENTRY_POINT = MODEL / "__main__.py"  # the command line may import model.builder, per command


def builder_imports(source: str) -> list[str]:
    """Every import of model.builder in `source`, wherever it stands (top level or inside a function)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if _is_builder(alias.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if _is_builder(node.module):
                found.append(node.module)
            elif node.module == "model":
                found += [f"model.{alias.name}" for alias in node.names if alias.name == BUILDER]
        elif isinstance(node, ast.ImportFrom) and node.level:  # relative: from .builder import x, from . import builder
            if (node.module or "").split(".")[0] == BUILDER or any(alias.name == BUILDER for alias in node.names):
                found.append("." * node.level + (node.module or BUILDER))
    return found


def _is_builder(name: str) -> bool:
    return name == f"model.{BUILDER}" or name.startswith(f"model.{BUILDER}.")


def serving_files() -> list[Path]:
    return [path for path in sorted(MODEL.rglob("*.py"))
            if path != ENTRY_POINT and BUILDER not in path.relative_to(MODEL).parts]


def test_no_serving_module_imports_the_builder_package():
    assert (MODEL / BUILDER / "__init__.py").is_file()
    files = serving_files()
    assert {path.name for path in files} >= {"engines.py", "artifacts.py", "batcher.py", "predictor.py", "settings.py"}
    offenders = {str(path.relative_to(REPO)): imports for path in files
                 if (imports := builder_imports(path.read_text(encoding="utf-8")))}
    assert not offenders, f"serving code imports build-time code: {offenders}"


def test_the_scan_finds_every_form_of_import():
    source = """
import model.builder.export
from model.builder.gate import int8_gate
from model import builder
from .builder import quantize
def later():
    from model.builder.measure import benchmark
from model.engines import load_engine
import model.builders
from model import build
"""
    assert builder_imports(source) == [
        "model.builder.export", "model.builder.gate", "model.builder", ".builder", "model.builder.measure"]
