"""`make run`: the service and a Redis of its own, both stopped by a signal to make itself.

A terminal's Ctrl-C reaches every process of the foreground group; `kill <make pid>` from another
shell reaches make alone. Either way nothing may be left running and the ports must be free.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO, VENV_BIN, free_port, service_env, wait_until


def descendants(pid: int) -> set[int]:
    """Every process below pid, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, pending = set(), [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.add(child)
            pending.append(child)
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def start_make_run(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    venv = VENV_BIN.parent
    with open(log_path, "wb") as log:
        # As from an interactive shell: make catches SIGINT only when it was not started ignoring it.
        return subprocess.Popen(
            ["make", "--no-print-directory", f"VENV={venv}", "-o", f"{venv}/.installed", "run",
             f"PORT={env['PORT']}", f"REDIS_PORT={env['REDIS_PORT']}"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_make_stops_the_service_and_its_redis(tiny_artifact, tmp_path, sent):
    env = service_env({"MODEL_DIR": str(tiny_artifact), "REDIS_PORT": str(free_port())}, tmp_path)
    for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(name, None)
    port, redis_port = int(env["PORT"]), int(env["REDIS_PORT"])
    log_path = tmp_path / "make-run.log"
    started: set[int] = set()
    make = start_make_run(env, log_path)
    try:
        def ready() -> bool:
            assert make.poll() is None, f"make run exited with {make.returncode}:\n{log_path.read_text()[-3000:]}"
            try:
                return requests.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(ready, 120, "make run to serve /ready", interval=0.2)
        texts = {"text": ["a signal to make, from another shell"]}
        first = requests.post(f"http://127.0.0.1:{port}/predict", json=texts, timeout=10)
        second = requests.post(f"http://127.0.0.1:{port}/predict", json=texts, timeout=10)
        assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("miss", "hit"), "served with its own Redis"
        started = descendants(make.pid)
        redis_pid = int((REPO / f".run/redis-{redis_port}.pid").read_text())
        assert redis_pid in started and answers(redis_port)

        os.kill(make.pid, sent)
        make.wait(timeout=60)
        wait_until(lambda: not any(running(pid) for pid in started), 10, "every process of make run to end")
    finally:  # nothing is left behind when the test fails
        for pid in started | descendants(make.pid):
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        if make.poll() is None:
            make.kill()
            make.wait()

    assert make.returncode == -sent, make.returncode
    assert not running(redis_pid), "redis-server is still running"
    assert not answers(port) and not answers(redis_port), "a port is still taken"
