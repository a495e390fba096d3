"""Fault and soak: three minutes of open-loop load at 60% of the capacity measured at the start,
against a real Gunicorn and a real redis-server, while Redis is restarted twice, the worker is
killed with SIGKILL once, and a SIGTERM drain ends the run with large requests in flight.

Every request gets 200, or 503 with Retry-After, except those in flight inside the killed worker
(they fail at the connection level: counted, and each must have been sent before the kill). Each
answer is checked against the engine run in this process on the same artifact (fp32: a text's
scores do not depend on its batch neighbours), so no answer can be another request's; resident
memory at the end is within 20% of after warm-up. The counts are printed.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pytest

from model.engines import load_engine, predict_texts
from model.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(330)]

LOAD_SECONDS = 180
# Of the capacity measured at the start (16 closed-loop clients, cache hits among them). At 80%
# a run that measured a high capacity could not work off the backlog the worker kill leaves:
# requests waited in the listen backlog, out of admission's sight, past CLIENT_TIMEOUT.
LOAD_SHARE = 0.6
CAPACITY_CLIENTS = 16
CAPACITY_SECONDS = 6
REDIS_RESTARTS_AT = (30, 110)  # seconds into the load
REDIS_DOWN_SECONDS = 3
KILL_AT = 70
DRAIN_REQUESTS = 4  # large requests in flight when SIGTERM arrives
CLIENT_TIMEOUT = 60
SCORE_TOLERANCE = 1e-5
WORDS = ("film", "plot", "actor", "scene", "music", "ending", "story", "cast", "script", "director", "pace", "humour")
POPULAR_TEXTS = [f"a popular line about the {a} and the {b}" for a in WORDS for b in WORDS]  # repeated: cache hits


@dataclass
class Outcome:
    """One request as the client saw it: an HTTP answer, or the connection failing without one."""

    texts: list[str]
    sent: float
    done: float = 0.0
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    failure: str = ""  # why there was no complete HTTP answer


def parse_answer(outcome: Outcome, raw: bytes) -> None:
    head, separator, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    if not separator or not status_line.startswith("HTTP/1.1 "):
        outcome.failure = f"no HTTP answer ({len(raw)} bytes)"
        return
    headers = dict(line.split(": ", 1) for line in header_lines)
    if len(body) != int(headers.get("Content-Length", -1)):
        outcome.failure = f"answer cut short ({len(body)} of {headers.get('Content-Length')} bytes)"
        return
    outcome.status, outcome.headers, outcome.body = int(status_line.split()[1]), headers, body


async def post(port: int, texts: list[str], request_id: str) -> Outcome:
    """One POST /predict on its own connection (Connection: close), so a failure belongs to it alone."""
    outcome = Outcome(texts, time.monotonic())
    body = json.dumps({"text": texts}).encode()
    head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Request-ID: {request_id}\r\nConnection: close\r\n\r\n").encode()
    try:
        async with asyncio.timeout(CLIENT_TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(head + body)
                await writer.drain()
                raw = await reader.read()
            finally:
                writer.close()
        parse_answer(outcome, raw)
    except TimeoutError:
        outcome.failure = "timeout"  # not a connection failure: the service kept the request
        outcome.status = -1
    except OSError as error:
        outcome.failure = type(error).__name__
    outcome.done = time.monotonic()
    return outcome


class TextMaker:
    """Texts no other request carries (a mixed-up answer shows), plus sometimes a popular one."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.count = 0

    def request(self, prefix: str) -> list[str]:
        self.count += 1
        texts = [f"{prefix} {self.count}.{n}: " + " ".join(self.random.choices(WORDS, k=self.random.randint(4, 14)))
                 for n in range(self.random.randint(1, 3))]
        if self.random.random() < 0.3:
            texts.insert(self.random.randint(0, len(texts)), self.random.choice(POPULAR_TEXTS))
        return texts

    def large(self, n: int) -> list[str]:
        return [f"drain {n}.{k}: " + " ".join(self.random.choices(WORDS, k=400)) for k in range(32)]


async def measure_capacity(port: int, maker: TextMaker) -> float:
    """Requests per second that CAPACITY_CLIENTS closed-loop clients get (after a short warm-up)."""
    async def client(until: float) -> int:
        done = 0
        while time.monotonic() < until:
            outcome = await post(port, maker.request("capacity"), "capacity")
            assert outcome.status == 200, (outcome.status, outcome.failure, outcome.body[:200])
            done += 1
        return done

    await asyncio.gather(*(client(time.monotonic() + 2) for _ in range(CAPACITY_CLIENTS)))
    started = time.monotonic()
    counts = await asyncio.gather(*(client(started + CAPACITY_SECONDS) for _ in range(CAPACITY_CLIENTS)))
    return sum(counts) / (time.monotonic() - started)


def worker_pids(master: int) -> list[int]:
    with open(f"/proc/{master}/task/{master}/children") as children:
        return [int(pid) for pid in children.read().split()]


def resident_mb(master: int) -> float:
    """Resident memory of the master and its workers."""
    total_kb = 0
    for pid in [master, *worker_pids(master)]:
        with open(f"/proc/{pid}/status") as status:
            total_kb += int(re.search(r"^VmRSS:\s+(\d+) kB", status.read(), re.MULTILINE)[1])
    return total_kb / 1024


def inject_faults(redis, master: int, started: float, events: dict[str, float]) -> None:
    """(thread) Restart Redis twice and SIGKILL the worker, at fixed times into the load."""
    plan = sorted([(at, "redis") for at in REDIS_RESTARTS_AT] + [(KILL_AT, "kill")])
    for at, fault in plan:
        time.sleep(max(0.0, started + at - time.monotonic()))
        if fault == "redis":
            redis.stop()
            time.sleep(REDIS_DOWN_SECONDS)
            redis.start()
        else:
            (worker,) = worker_pids(master)
            events["kill_started"] = time.monotonic()
            os.kill(worker, signal.SIGKILL)
            events["kill_done"] = time.monotonic()


async def in_flight(port: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    text = (await reader.read()).decode()
    writer.close()
    return float(re.search(r"^sentiment_http_requests_in_flight (\S+)$", text, re.MULTILINE)[1])


async def soak(service, redis, port: int) -> dict:
    maker = TextMaker(seed=12)
    capacity = await measure_capacity(port, maker)
    rate = LOAD_SHARE * capacity
    await asyncio.sleep(1)
    rss_start = resident_mb(service.process.pid)

    events: dict[str, float] = {}
    started = time.monotonic()
    faults = threading.Thread(target=inject_faults, args=(redis, service.process.pid, started, events), daemon=True)
    faults.start()
    tasks, lag = [], (0.0, 0.0)  # the dispatcher's worst lag behind the schedule, and when
    gc.disable()  # a full collection over tens of thousands of answers would stall the schedule
    try:
        for n in range(int(rate * LOAD_SECONDS)):
            wait = started + n / rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            lag = max(lag, (-wait, n / rate))
            tasks.append(asyncio.create_task(post(port, maker.request("load"), f"load-{n}")))
        faults.join()
        load = await asyncio.gather(*tasks)
    finally:
        gc.enable()
    rss_end = resident_mb(service.process.pid)

    # Drain: large requests inside the worker (counted by its in-flight gauge), then SIGTERM.
    drain = [asyncio.create_task(post(port, maker.large(n), f"drain-{n}")) for n in range(DRAIN_REQUESTS)]
    deadline = time.monotonic() + 30
    while await in_flight(port) < DRAIN_REQUESTS + 1 and time.monotonic() < deadline:  # +1: this scrape
        await asyncio.sleep(0.01)
    events["sigterm"] = time.monotonic()
    service.process.send_signal(signal.SIGTERM)
    drained = await asyncio.gather(*drain)
    exit_status = await asyncio.to_thread(service.process.wait, 60)
    return dict(capacity=capacity, rate=rate, lag=lag, events=events, load=load, drained=drained,
                rss=(rss_start, rss_end), exit_status=exit_status)


def reference_scores(artifact, outcomes: list[Outcome]) -> dict[str, dict[str, float]]:
    """Each distinct text's scores from the engine run here, outside the service."""
    engine = load_engine(Settings(model_dir=artifact, precision="fp32"))
    texts = sorted({text for outcome in outcomes if outcome.status == 200 for text in outcome.texts}, key=len)
    rows = np.concatenate([predict_texts(engine, texts[i:i + 256]) for i in range(0, len(texts), 256)])
    return {text: dict(zip(engine.labels, map(float, row))) for text, row in zip(texts, rows)}


def mismatches(outcome: Outcome, request_id: str, reference) -> list[str]:
    if outcome.headers.get("X-Request-ID") != request_id:
        return [f"{request_id}: answered as {outcome.headers.get('X-Request-ID')}"]
    predictions = json.loads(outcome.body)["predictions"]
    if len(predictions) != len(outcome.texts):
        return [f"{request_id}: {len(predictions)} answers for {len(outcome.texts)} texts"]
    wrong = []
    for text, ranked in zip(outcome.texts, predictions):
        got = {entry["label"]: entry["score"] for entry in ranked}
        if got.keys() != reference[text].keys() or any(abs(got[k] - reference[text][k]) > SCORE_TOLERANCE for k in got):
            wrong.append(f"{request_id}: {text!r} scored {got}, reference {reference[text]}")
    return wrong


@pytest.fixture
def soak_redis(redis_factory):
    return redis_factory()


def print_counts(run: dict, capsys) -> None:
    load, drained, events = run["load"], run["drained"], run["events"]
    statuses = Counter(outcome.status for outcome in load + drained)
    failed = sum(outcome.status is None for outcome in load)
    answered_again = min(o.done for o in load if o.status == 200 and o.sent > events["kill_done"]) - events["kill_done"]
    latency_ms = np.percentile([1000 * (o.done - o.sent) for o in load if o.status == 200], [50, 99])
    lines = [
        f"capacity {run['capacity']:.0f} req/s ({CAPACITY_CLIENTS} closed-loop clients, 1-4 texts each); open loop at "
        f"{run['rate']:.0f} req/s for {LOAD_SECONDS} s (dispatch at most {run['lag'][0]:.3f} s behind schedule, "
        f"at {run['lag'][1]:.0f} s)",
        f"{len(load) + len(drained)} requests: 200 x{statuses[200]}, 503 x{statuses[503]}, "
        f"other x{sum(c for s, c in statuses.items() if s not in (200, 503, None))}, connection failures x{failed} "
        f"(in flight inside the killed worker); latency of the 200s p50 {latency_ms[0]:.0f} ms, p99 {latency_ms[1]:.0f} ms",
        f"Redis restarted at {REDIS_RESTARTS_AT} s; worker SIGKILL at {KILL_AT} s, answering again "
        f"{answered_again:.2f} s later; SIGTERM drain with {DRAIN_REQUESTS} large requests in flight, "
        f"exit status {run['exit_status']}",
        f"resident memory (master + worker) {run['rss'][0]:.0f} MB after warm-up, {run['rss'][1]:.0f} MB at the end",
    ]
    with capsys.disabled():
        print("".join(f"\nsoak: {line}" for line in lines))


def test_soak_under_faults_answers_every_request_correctly(service, tiny_artifact, soak_redis, capsys):
    handle = service({"MODEL_DIR": tiny_artifact, "PRECISION": "fp32", "REDIS_URL": soak_redis.url,
                      "CACHE_KEY_PREFIX": "soak:", "CACHE_RETRY_SECONDS": "0.5"})
    run = asyncio.run(soak(handle, soak_redis, int(handle.env["PORT"])))
    print_counts(run, capsys)
    load, drained, events = run["load"], run["drained"], run["events"]

    statuses = {outcome.status for outcome in load + drained}
    assert statuses <= {200, 503, None}, statuses
    assert all(o.headers.get("Retry-After") for o in load + drained if o.status == 503)
    # A connection failure is a request sent before the kill that ended at the kill, and no other.
    failed = [outcome for outcome in load if outcome.status is None]
    late = [(o.failure, o.sent - events["kill_done"]) for o in failed
            if not (o.sent < events["kill_done"] and o.done >= events["kill_started"])]
    assert late == [], "connection failures that were not in flight inside the killed worker"
    assert all(o.done > events["sigterm"] for o in drained), "the drain requests ended before SIGTERM: make them larger"
    assert [o.status for o in drained] == [200] * DRAIN_REQUESTS, "the drain dropped a request in flight"
    assert run["exit_status"] == 0

    reference = reference_scores(tiny_artifact, load + drained)
    wrong = [problem for prefix, outcomes in (("load", load), ("drain", drained))
             for n, outcome in enumerate(outcomes) if outcome.status == 200
             for problem in mismatches(outcome, f"{prefix}-{n}", reference)]
    assert wrong == [], wrong[:5]

    rss_start, rss_end = run["rss"]
    assert 0.8 <= rss_end / rss_start <= 1.2, (rss_start, rss_end)
    assert "Traceback" not in handle.log() and "unhandled error" not in handle.log()
