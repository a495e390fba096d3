"""Gunicorn runs with the settings' values: read back from Gunicorn itself (`--print-config`, in
its own process), against the values the test put in the environment."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import GUNICORN, REPO, free_port, service_env


def gunicorn_config(env: dict[str, str], tmp_path) -> dict[str, str]:
    result = subprocess.run(
        [str(GUNICORN), "--print-config", "-c", "gunicorn.conf.py", "app:app"],
        cwd=REPO, env=service_env(env, tmp_path), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return dict(re.findall(r"^(\w+)\s+= (.*)$", result.stdout, flags=re.MULTILINE))


def test_gunicorn_takes_its_timeouts_threads_and_port_from_the_settings(tmp_path):
    port = free_port()
    config = gunicorn_config({
        "PORT": str(port), "WEB_CONCURRENCY": "3", "GUNICORN_THREADS": "7", "REQUEST_TIMEOUT_SECONDS": "41",
        "GRACEFUL_TIMEOUT_SECONDS": "37", "KEEPALIVE_SECONDS": "17",
    }, tmp_path)
    assert {name: config[name] for name in ("bind", "workers", "threads", "timeout", "graceful_timeout", "keepalive")} == {
        "bind": f"['0.0.0.0:{port}']", "workers": "3", "threads": "7", "timeout": "41", "graceful_timeout": "37",
        "keepalive": "17",
    }
    assert (config["worker_class"], config["preload_app"]) == ("model.worker.ThreadWaitWorker", "False")


def test_the_access_log_is_off_unless_asked_for(tmp_path):
    assert gunicorn_config({"PORT": str(free_port())}, tmp_path)["accesslog"] == "None"
    assert gunicorn_config({"PORT": str(free_port()), "ACCESS_LOG": "true"}, tmp_path)["accesslog"] == "-"
