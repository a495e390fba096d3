"""The locks in requirements/: what each pins, and where pyproject.toml disagrees with it.

`make lock` writes them with `uv pip compile`: one `name==version` line per package with its
`--hash=sha256:...` lines and `# via` notes, where `sentiment-service (pyproject.toml...)` marks
a package pyproject.toml asks for by name.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LOCKS = REPO / "requirements"
LOCK_COMMAND = "make lock"
# What each lock holds: the project's dependencies with these extras, or one dependency group.
ENVIRONMENTS: dict[str, dict] = {
    "runtime.txt": {"extras": ()},
    "build.txt": {"extras": ("build",)},
    "test.txt": {"extras": ("build", "test")},
    "tools.txt": {"group": "tools"},
    "installer.txt": {"group": "installer"},
}
# The platform `make lock` resolves for: the image's, linux/amd64 with CPython 3.11.
TARGET = {"python_version": "3.11", "python_full_version": "3.11.16", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
          "implementation_name": "cpython", "platform_python_implementation": "CPython"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


@dataclass
class Pin:
    version: str
    hashes: int = 0
    direct: bool = False  # asked for by pyproject.toml, not only by another package


def parse_lock(text: str) -> dict[str, Pin]:
    pins: dict[str, Pin] = {}
    current = None
    for line in text.splitlines():
        if match := PIN.match(line):
            current = pins.setdefault(canonicalize_name(match[1]), Pin(match[2]))
        elif current and line.strip().startswith("--hash=sha256:"):
            current.hashes += 1
        elif current and "sentiment-service (pyproject.toml" in line:
            current.direct = True
    return pins


def read_lock(path: Path) -> dict[str, str]:
    """Package name -> pinned version."""
    return {name: pin.version for name, pin in parse_lock(path.read_text(encoding="utf-8")).items()}


def read_pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def requirements_of(pyproject: dict, environment: dict) -> list[Requirement]:
    """What pyproject.toml asks for in one environment, on the platform the locks are for."""
    if "group" in environment:
        specs = [(spec, "") for spec in pyproject["dependency-groups"][environment["group"]]]
    else:
        project = pyproject["project"]
        specs = [(spec, "") for spec in project["dependencies"]]
        specs += [(spec, extra) for extra in environment["extras"] for spec in project["optional-dependencies"][extra]]
    requirements = [(Requirement(spec), extra) for spec, extra in specs]
    return [req for req, extra in requirements if req.marker is None or req.marker.evaluate({**TARGET, "extra": extra})]


def lock_problems(pyproject: dict, lock_text: str, environment: dict) -> list[str]:
    """Every way the lock fails to be what `make lock` writes from this pyproject.toml."""
    pins = parse_lock(lock_text)
    problems = []
    wanted = set()
    for requirement in requirements_of(pyproject, environment):
        name = canonicalize_name(requirement.name)
        wanted.add(name)
        pin = pins.get(name)
        if pin is None:
            problems.append(f"{requirement} is not in it")
        elif not pin.direct:
            problems.append(f"{requirement} is in it only as another package's dependency")
        elif not requirement.specifier.contains(Version(pin.version), prereleases=True):
            problems.append(f"it pins {name}=={pin.version}, which {requirement} excludes")
    for name, pin in pins.items():
        if pin.direct and name not in wanted:
            problems.append(f"it pins {name}, which pyproject.toml no longer asks for")
        if not pin.hashes:
            problems.append(f"{name} has no hash")
    if f"#    {LOCK_COMMAND}\n" not in lock_text:
        problems.append(f"it was not written by `{LOCK_COMMAND}`")
    return problems
