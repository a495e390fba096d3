"""Imports run one way: build-time code (model.build) uses serving code, never the reverse."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "model"
ENTRY_POINT = MODEL / "__main__.py"  # the command line may import model.build, per command


def build_imports(source: str) -> list[str]:
    """Every import of model.build in `source`, wherever it stands (top level or inside a function)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if _is_build(alias.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if _is_build(node.module):
                found.append(node.module)
            elif node.module == "model":
                found += [f"model.{alias.name}" for alias in node.names if alias.name == "build"]
        elif isinstance(node, ast.ImportFrom) and node.level:  # relative: from .build import x, from . import build
            if (node.module or "").split(".")[0] == "build" or any(alias.name == "build" for alias in node.names):
                found.append("." * node.level + (node.module or "build"))
    return found


def _is_build(name: str) -> bool:
    return name == "model.build" or name.startswith("model.build.")


def serving_files() -> list[Path]:
    return [path for path in sorted(MODEL.rglob("*.py"))
            if path != ENTRY_POINT and "build" not in path.relative_to(MODEL).parts]


def test_no_serving_module_imports_the_build_package():
    files = serving_files()
    assert {path.name for path in files} >= {"engines.py", "artifacts.py", "batcher.py", "predictor.py", "settings.py"}
    offenders = {str(path.relative_to(REPO)): imports for path in files
                 if (imports := build_imports(path.read_text(encoding="utf-8")))}
    assert not offenders, f"serving code imports build code: {offenders}"


def test_the_scan_finds_every_form_of_import():
    source = """
import model.build.export
from model.build.gate import int8_gate
from model import build
from .build import quantize
def later():
    from model.build.measure import benchmark
from model.engines import load_engine
import model.buildings
"""
    assert build_imports(source) == [
        "model.build.export", "model.build.gate", "model.build", ".build", "model.build.measure"]
