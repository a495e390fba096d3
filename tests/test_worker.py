"""The Gunicorn worker's measure of the wait for a thread, through a real Gunicorn: a request that waits for the only
request thread carries that wait to the app, and a kept-alive connection is stamped afresh for
each request, not once when it was accepted."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port, wait_until

REPO = Path(__file__).resolve().parent.parent
HOLD_SECONDS = 0.6

# Answers how long the request waited for a thread (as the worker measured it), then holds its
# thread for ?hold seconds.
WAITING_APP = textwrap.dedent("""
    import time
    from model.worker import THREAD_WAIT_KEY

    def app(environ, start_response):
        waited = environ[THREAD_WAIT_KEY]
        time.sleep(float(environ.get("QUERY_STRING", "").partition("=")[2] or 0))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{waited:.3f}".encode()]
""")


@pytest.fixture
def one_thread_server(tmp_path):
    (tmp_path / "waiting_app.py").write_text(WAITING_APP)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--worker-class", "model.worker.ThreadWaitWorker", "--threads", "1",
         "--bind", f"127.0.0.1:{port}", "--pythonpath", f"{tmp_path},{REPO}", "waiting_app:app"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until(lambda: _answers(url) or server.poll() is not None, 30, "gunicorn to answer")
        assert server.poll() is None, server.stderr.read().decode()
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


def test_a_request_that_waits_for_the_only_thread_tells_the_app_how_long(one_thread_server):
    waits: list[float] = []

    def call() -> None:
        with requests.Session() as session:  # a connection of its own
            waits.append(float(session.get(f"{one_thread_server}?hold={HOLD_SECONDS}", timeout=10).text))

    callers = [threading.Thread(target=call) for _ in range(2)]
    for caller in callers:
        caller.start()
        time.sleep(0.05)  # the second arrives while the first holds the thread
    for caller in callers:
        caller.join(timeout=15)
    first, second = sorted(waits)
    assert first < 0.3, f"the first request found the thread free, yet waited {first:.3f} s"
    assert second > HOLD_SECONDS - 0.15, f"the second waited for the first ({HOLD_SECONDS} s), but the app saw {second:.3f} s"


def test_each_request_on_a_kept_alive_connection_is_stamped_when_it_arrives(one_thread_server):
    with requests.Session() as session:
        assert float(session.get(one_thread_server, timeout=10).text) < 0.3
        time.sleep(HOLD_SECONDS)  # the connection idles, kept alive
        waited = float(session.get(one_thread_server, timeout=10).text)
    assert waited < 0.3, f"the second request on the connection counted its idle time: {waited:.3f} s"
