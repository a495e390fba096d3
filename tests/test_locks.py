"""Every environment is installed from a lock in requirements/ that pyproject.toml agrees with.

When one of these fails after a change to pyproject.toml: run `make lock`, commit requirements/.
"""

from __future__ import annotations

import copy
import importlib.metadata

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.locks import ENVIRONMENTS, LOCK_COMMAND, LOCKS, lock_problems, read_lock, read_pyproject

PYPROJECT = read_pyproject()


@pytest.mark.parametrize("lock", ENVIRONMENTS)
def test_pyproject_and_the_lock_agree(lock):
    problems = lock_problems(PYPROJECT, (LOCKS / lock).read_text(encoding="utf-8"), ENVIRONMENTS[lock])
    assert not problems, (f"requirements/{lock} disagrees with pyproject.toml: {'; '.join(problems)}. "
                          f"Run `{LOCK_COMMAND}` and commit requirements/.")


def test_a_dependency_added_narrowed_or_dropped_in_pyproject_is_caught():
    lock = (LOCKS / "test.txt").read_text(encoding="utf-8")
    environment = ENVIRONMENTS["test.txt"]
    added, narrowed, dropped = (copy.deepcopy(PYPROJECT) for _ in range(3))
    added["project"]["optional-dependencies"]["test"] += ["werkzeug>=3", "cosmic-ray>=8"]
    narrowed["project"]["dependencies"] = [
        "flask>=99" if spec.startswith("flask") else spec for spec in narrowed["project"]["dependencies"]]
    dropped["project"]["dependencies"] = [
        spec for spec in dropped["project"]["dependencies"] if not spec.startswith("redis")]

    assert lock_problems(added, lock, environment) == [
        "werkzeug>=3 is in it only as another package's dependency", "cosmic-ray>=8 is not in it"]
    (problem,) = lock_problems(narrowed, lock, environment)
    assert problem.startswith("it pins flask==") and problem.endswith("which flask>=99 excludes")
    assert lock_problems(dropped, lock, environment) == ["it pins redis, which pyproject.toml no longer asks for"]


def test_the_image_runs_the_versions_the_tests_ran():
    runtime, build, test = (read_lock(LOCKS / name) for name in ("runtime.txt", "build.txt", "test.txt"))
    assert runtime.items() <= build.items(), "requirements/build.txt pins another version of a runtime package"
    assert build.items() <= test.items(), "requirements/test.txt pins another version of a build package"


def test_torch_is_the_cpu_build_and_only_where_models_are_built():
    for name in ("build.txt", "test.txt"):
        torch = Version(read_lock(LOCKS / name)["torch"])
        assert (torch.public, torch.local) == ("2.13.0", "cpu"), f"requirements/{name} pins torch {torch}"
    assert "torch" not in read_lock(LOCKS / "runtime.txt")


def test_this_environment_is_installed_from_its_lock():
    pins = {**read_lock(LOCKS / "test.txt"), **read_lock(LOCKS / "installer.txt")}
    installed = {canonicalize_name(d.name): d.version for d in importlib.metadata.distributions()}
    differ = {name: (version, installed.get(name)) for name, version in pins.items()
              if installed.get(name) is None or Version(installed[name]) != Version(version)}
    assert not differ, f"locked vs installed: {differ}: run `make install`"
