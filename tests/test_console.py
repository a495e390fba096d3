"""What a person sees on the console: one line per start-up phase with its time; a start that
fails is exactly one line on stderr saying what to fix, and exit status 1 (no traceback, no
Gunicorn lines; through `make run`, only make's own note of the failed recipe follows)."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess

import pytest

from tests.conftest import GUNICORN, REPO, Service, free_port, service_env, wait_ready

pytestmark = pytest.mark.slow

PHASES = [r"imports \d+\.\d\d s", r"model load \d+\.\d\d s: \S+@\w{12}, onnx-fp32, \d+ engine threads",
          r"warm-up \d+\.\d\d s", r"ready \d+\.\d\d s after start: \S+@\w{12} \(onnx-fp32, CPU int8 kernels [A-Z0-9 -]+\) on port \d+, cache disabled"]


def failed_start(env: dict, workdir) -> subprocess.CompletedProcess:
    """Run the service until it stops by itself; stdout and stderr kept apart."""
    return subprocess.run([str(GUNICORN), "-c", "gunicorn.conf.py", "app:app"], cwd=REPO, env=service_env(env, workdir),
                          capture_output=True, text=True, timeout=120)


def the_one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sentiment: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("env, named", [
    ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY"), ({"PORT": "70000"}, "PORT"),
    ({"MAX_BATCH_TEXTS": "many"}, "MAX_BATCH_TEXTS"), ({"BACKEND": "tensorflow"}, "BACKEND"),
    ({"REDIS_URL": "http://redis"}, "REDIS_URL"),
    ({"MAX_BATCH_TEXTS": "4096"}, "QUEUE_MAX_TEXTS=1024"),
    ({"QUEUE_MAX_WAIT_SECONDS": "30"}, "GRACEFUL_TIMEOUT_SECONDS=25"),
])
def test_a_bad_setting_stops_start_up_with_one_line_and_status_1(tmp_path, env, named):
    result = failed_start(env, tmp_path)
    line = the_one_line(result)
    assert line.startswith("sentiment: invalid configuration: ") and named in line, line
    assert result.stdout == ""


@pytest.mark.parametrize("workers", [1, 3])
def test_a_missing_model_stops_every_worker_with_one_line_and_status_1(tmp_path, workers):
    missing = tmp_path / "no-such-model"
    result = failed_start({"MODEL_DIR": missing, "WEB_CONCURRENCY": workers}, tmp_path)
    assert the_one_line(result) == f"sentiment: cannot load the model: MODEL_DIR={missing} does not exist or is not a directory"
    assert re.fullmatch(rf"(\[[^]]+\] \[\d+\] \[INFO\] sentiment: {PHASES[0]}\n)+", result.stdout), result.stdout
    if workers == 1:
        assert result.stdout.count("imports") == 1  # stopped, not restarted in a loop


def test_a_taken_port_stops_start_up_with_one_line(tmp_path, tiny_artifact):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = failed_start({"PORT": port, "MODEL_DIR": tiny_artifact}, tmp_path)
    assert the_one_line(result) == (
        f"sentiment: cannot listen on port {port}: Address already in use; stop what listens there or set PORT"
    )


def test_a_good_start_is_one_line_per_phase_and_a_stop_adds_nothing(tmp_path, tiny_artifact):
    env = service_env({"MODEL_DIR": tiny_artifact, "PRECISION": "fp32"}, tmp_path)
    with open(tmp_path / "stdout", "w+") as stdout, open(tmp_path / "stderr", "w+") as stderr:
        process = subprocess.Popen([str(GUNICORN), "-c", "gunicorn.conf.py", "app:app"], cwd=REPO, env=env,
                                   stdout=stdout, stderr=stderr, text=True)
        service = Service(f"http://127.0.0.1:{env['PORT']}", process, tmp_path / "stdout", env)
        try:
            wait_ready(service, timeout=120)
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
        stdout.seek(0), stderr.seek(0)
        lines, problems = stdout.read().splitlines(), stderr.read()
    assert problems == ""
    assert len(lines) == len(PHASES), lines
    for line, phase in zip(lines, PHASES, strict=True):
        assert re.fullmatch(rf"\[[^]]+\] \[\d+\] \[INFO\] sentiment: {phase}", line), line


def test_make_run_fails_with_the_one_line_and_make_s_own_status(tmp_path, redis_server):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    if subprocess.run(["make", "-q", ".venv/.installed"], cwd=REPO, capture_output=True).returncode != 0:
        pytest.skip("the repo's .venv is not installed by make (make run would install it first)")
    missing = tmp_path / "no-such-model"
    env = service_env({"MODEL_DIR": missing, "REDIS_URL": redis_server.url, "PORT": free_port()}, tmp_path)
    result = subprocess.run(["make", "--no-print-directory", "run"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    service_line, *rest = result.stderr.splitlines()
    assert service_line == f"sentiment: cannot load the model: MODEL_DIR={missing} does not exist or is not a directory"
    # The failure reaches make's own exit status, so a script sees it; GNU make then adds its
    # one-line note for any failing recipe, and nothing else is printed.
    assert len(rest) == 1 and re.fullmatch(r"make(\[\d+\])?: \*\*\* \[Makefile:\d+: run\] Error 1", rest[0]), rest
    assert "make" not in result.stdout
    assert result.returncode == 2
