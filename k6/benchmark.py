"""Side-by-side benchmark of the service, printed as figures and ratios (no pass/fail).

    .venv/bin/python k6/benchmark.py [--checkpoint DIR] [--artifact DIR] [--baseline CHECKOUT]
                                     [--seconds 12] [--rounds 2] [--parts hot,compute,open,bulk,start,largest]

With no --checkpoint it writes a random checkpoint of DistilBERT-base's shape (the product
model's compute cost; real weights need the hub); with no --artifact it builds one from the
checkpoint. Every run on this machine, k6 on the same CPUs, in one process so the ratios are
side by side (configurations measured in turn, round after round, so drift hits all alike):

hot      hot cache: 200 texts, Zipf 1.1, 32 closed-loop clients, every text cached first, against
         (a) the minimal Flask handler (k6/yardsticks/minimal.py) under the service's Gunicorn
         settings, (b) the service with Redis, (c) the seed-style app (k6/yardsticks/seed.py:
         FastAPI + transformers pipeline + whole-response Redis cache) when fastapi, uvicorn and
         torch are installed (`make install` installs them);
compute  one new short text per request, 16 closed-loop clients, no Redis; then the engine alone,
         in this process, on texts of the same kind at the mean batch size the batcher formed;
open     open loop of one new text per request at fractions of the closed-loop rate, with
         QUEUE_MAX_WAIT_SECONDS=--queue-max-wait: 200s and 503s apart;
bulk     16 new texts per request, 8 clients: this tree against --baseline (another checkout);
start    process start to /ready, 5 starts each, and resident memory: this tree and --baseline;
largest  the largest request the API accepts by default (MAX_BATCH_TEXTS texts, each longer than
         the model's window, so every one is scored at its full length) on an idle service.

Beside req/s, each HTTP run reports the CPU time the server processes (and Redis) used per
request: on a machine shared with other work it is steadier than wall-clock throughput.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from k6/: the repo's `model` package

from model.builder.measure import cpu_line, engine_for, measure  # noqa: E402
from model.settings import Settings  # noqa: E402

BIN = Path(sys.executable).parent
YARDSTICKS = REPO / "k6" / "yardsticks"
SHORT_TEXT_CHARS = 160  # the k6 library's "short" texts
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PARTS = ("hot", "compute", "open", "bulk", "start", "largest")
OPEN_LOOP_FRACTIONS = (0.5, 0.85, 1.0, 1.5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str, method: str = "GET") -> bool:
    body = b'{"text": ["ready?"]}' if method == "POST" else None
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


class Process:
    """A server on a free port, started from `cwd`, its process tree's CPU time and memory readable."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], cwd: Path, log: Path,
                 ready_path: str = "/ready", ready_method: str = "GET") -> None:
        self.name = name
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, "PORT": str(self.port), "LOG_LEVEL": "warning", **env}
        if "REDIS_URL" not in env:
            full_env.pop("REDIS_URL", None)
        command = [part.replace("{port}", str(self.port)) for part in command]
        self.started = time.perf_counter()
        self.process = subprocess.Popen(command, cwd=cwd, env=full_env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
        while not answers(self.base_url + ready_path, ready_method):
            if self.process.poll() is not None or time.perf_counter() - self.started > 600:
                raise SystemExit(f"{name} did not become ready; see {log}")
            time.sleep(0.01)
        self.ready_seconds = time.perf_counter() - self.started

    def pids(self) -> list[int]:
        children = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [self.process.pid] + [int(pid) for pid in children.split()]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def resident_mb(self) -> float:
        kilobytes = 0
        for pid in self.pids():
            kilobytes += int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))
        return kilobytes / 1024

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"{self.base_url}/metrics", timeout=10) as response:
            text = response.read().decode()
        return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def service(env: dict[str, str], log: Path, tree: Path = REPO) -> Process:
    """The service as the container runs it (Gunicorn with gunicorn.conf.py), from checkout `tree`."""
    return Process(f"service ({tree.name})", [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "app:app"], env, tree, log)


def k6_summary(script: str, env: dict[str, str], seconds: float, workdir: Path) -> dict:
    """Runs k6/SCRIPT with `env` and returns its JSON summary (k6/lib/summary.js). Thresholds
    that fail (k6 exit 99) still return the summary: callers read the figures, not a verdict."""
    summary = workdir / f"k6-{time.monotonic_ns()}.json"
    result = subprocess.run([str(BIN / "k6"), "run", "--quiet", str(REPO / "k6" / script)],
                            env={**os.environ, **env, "SUMMARY_JSON": str(summary)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=seconds + 300)
    if result.returncode not in (0, 99):
        raise subprocess.CalledProcessError(result.returncode, result.args)
    return json.loads(summary.read_text())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Bench:
    def __init__(self, args, workdir: Path, checkpoint: Path, artifact: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.checkpoint = checkpoint
        self.artifact = artifact
        self.log = workdir / "servers.log"
        self.settings = Settings(model_dir=artifact)

    # --- servers ---------------------------------------------------------------------------

    def service(self, env: dict[str, str] | None = None, tree: Path = REPO) -> Process:
        return service({"MODEL_DIR": str(self.artifact), **(env or {})}, self.log, tree)

    def minimal(self) -> Process:
        """The minimal handler under the service's Gunicorn worker settings."""
        s = self.settings
        command = [str(BIN / "gunicorn"), "-b", "127.0.0.1:{port}", "-k", "gthread", "-w", str(s.web_concurrency),
                   "--threads", str(s.gunicorn_threads), "--keep-alive", str(s.keepalive_seconds), "minimal:app"]
        return Process("minimal Flask handler", command, {}, YARDSTICKS, self.log, "/predict", "POST")

    def seed(self, redis_url: str) -> Process:
        command = [str(BIN / "uvicorn"), "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning",
                   "seed:app"]
        return Process("seed-style app", command, {"MODEL_DIR": str(self.checkpoint), "REDIS_URL": redis_url},
                       YARDSTICKS, self.log, "/predict", "POST")

    def redis(self) -> tuple[subprocess.Popen, str]:
        port = free_port()
        process = subprocess.Popen([str(BIN / "redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                                    "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        for _ in range(100):
            if subprocess.run([str(BIN / "redis-cli"), "-p", str(port), "ping"], capture_output=True).returncode == 0:
                return process, url
            time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    # --- k6 --------------------------------------------------------------------------------

    def k6(self, scenario: str, base_url: str, **env: str) -> dict:
        full_env = {"BASE_URL": base_url, "DURATION": f"{self.args.seconds}s", "SLO_P99_MS": "60000",
                    **{k: str(v) for k, v in env.items()}}
        return k6_summary(f"{scenario}.js", full_env, self.args.seconds, self.workdir)["figures"]

    def measured_run(self, server: Process, scenario: str, extra_cpu=(), **env: str) -> dict:
        """A k6 run with the CPU time the server (and `extra_cpu` processes) used per request."""
        before = server.cpu_seconds() + sum(cpu_seconds(pid) for pid in extra_cpu)
        figures = self.k6(scenario, server.base_url, **env)
        used = server.cpu_seconds() + sum(cpu_seconds(pid) for pid in extra_cpu) - before
        requests = figures.get("requests") or 1
        figures["cpu_ms_per_request"] = 1000 * used / requests
        figures["resident_mb"] = server.resident_mb()
        return figures

    # --- parts -----------------------------------------------------------------------------

    def hot(self) -> None:
        seed_possible = all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn", "torch", "transformers"))
        names = ["minimal", "service"] + (["seed"] if seed_possible else [])
        print(f"\nhot cache: 200 texts, Zipf 1.1, 32 closed-loop clients, every text cached first; "
              f"{self.args.rounds} rounds of {self.args.seconds} s each")
        if not seed_possible:
            print("  (seed-style app skipped: fastapi, uvicorn, torch or transformers is missing: run make install)")
        print(f"{'round':>5}  {'server':24} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'hit share':>9} {'CPU ms/req':>10}")
        results: dict[str, list[dict]] = {name: [] for name in names}
        for round_number in range(1, self.args.rounds + 1):
            for name in names:
                redis, redis_url = self.redis()
                try:
                    server = {"minimal": self.minimal, "service": lambda: self.service({"REDIS_URL": redis_url}),
                              "seed": lambda: self.seed(redis_url)}[name]()
                    try:
                        hot_set = {"HOT_SET": 200, "ZIPF_S": 1.1, "HOT_SALT": f"r{round_number}", "MIN_HIT_SHARE": 0}
                        self.k6("cache", server.base_url, VUS=1, WARM=1, DURATION="1s", **hot_set)  # cache it all
                        figures = self.measured_run(server, "cache", extra_cpu=(redis.pid,), VUS=32, **hot_set)
                    finally:
                        server.stop()
                finally:
                    redis.terminate()
                    redis.wait()
                results[name].append(figures)
                print(f"{round_number:>5}  {server.name:24} {figures['requests_per_second']:8.1f} "
                      f"{figures['p50_ms']:8.1f} {figures['p99_ms']:8.1f} {figures['hit_share']:9.3f} "
                      f"{figures['cpu_ms_per_request']:10.2f}")
        for round_index in range(self.args.rounds):
            service, minimal = results["service"][round_index], results["minimal"][round_index]
            line = (f"round {round_index + 1}: service / minimal handler: req/s {ratio(service, minimal, 'requests_per_second')}"
                    f" (target >= 0.90), CPU per request {ratio(service, minimal, 'cpu_ms_per_request')}")
            if seed_possible:
                seed = results["seed"][round_index]
                line += (f"; service / seed-style: req/s {ratio(service, seed, 'requests_per_second')} (target >= 1.2),"
                         f" p99 {ratio(service, seed, 'p99_ms')} (target <= 0.5)")
            print(line)

    def compute(self) -> float:
        print(f"\none new short text per request, 16 closed-loop clients, no Redis, {self.args.seconds} s")
        server = self.service()
        try:
            batches_before = (server.metric("sentiment_batch_size_texts_sum"), server.metric("sentiment_batch_size_texts_count"))
            http = self.measured_run(server, "batch", BATCH_TEXTS=1, TEXTS="short", VUS=16)
            texts = server.metric("sentiment_batch_size_texts_sum") - batches_before[0]
            batches = server.metric("sentiment_batch_size_texts_count") - batches_before[1]
        finally:
            server.stop()
        formed = texts / batches if batches else 1.0
        batch_size = max(1, round(formed))
        engine = engine_for(self.artifact, "onnx", "auto")
        engine.warmup()
        engine_rate, _, _, engine_cpu_ms = measure(engine, unique_short_texts(4096), batch_size, self.args.seconds / 2)
        del engine
        print(f"HTTP {http['texts_per_second']:.1f} req/s (p50 {http['p50_ms']:.0f} ms, p99 {http['p99_ms']:.0f} ms, "
              f"{http['cpu_ms_per_request']:.1f} CPU ms per request); batches formed: {batches:.0f}, "
              f"{formed:.1f} texts on average")
        print(f"engine alone at batch {batch_size} on texts of the same kind: {engine_rate:.1f} texts/s "
              f"({engine_cpu_ms:.1f} CPU ms per text)")
        print(f"HTTP req/s / engine texts/s: {http['texts_per_second'] / engine_rate:.0%} (target >= 85%)")
        return http["texts_per_second"]

    def open_loop(self, closed_loop_rate: float) -> None:
        wait = self.args.queue_max_wait
        print(f"\nopen loop, one new short text per request, QUEUE_MAX_WAIT_SECONDS={wait:g}, {self.args.seconds} s a step;"
              f" closed-loop rate {closed_loop_rate:.1f} req/s")
        print(f"{'offered':>8} {'share':>6} {'200/s':>7} {'503/s':>7} {'errors':>6} {'dropped':>7} "
              f"{'200 p50':>8} {'200 p99':>8} {'503 p50':>8} {'503 p99':>8}  (ms)")
        for fraction in OPEN_LOOP_FRACTIONS:
            rate = max(1, round(closed_loop_rate * fraction))
            server = self.service({"QUEUE_MAX_WAIT_SECONDS": str(wait)})
            try:
                f = self.k6("admission", server.base_url, RPS=rate, MAX_VUS=max(100, 4 * rate))
            finally:
                server.stop()
            print(f"{rate:8d} {fraction:6.0%} {f['answered_rps'] or 0:7.1f} {f['refused_rps'] or 0:7.1f} "
                  f"{f['errors'] or 0:6.0f} {f['dropped_iterations'] or 0:7.0f} {ms(f['admitted_p50_ms'])} "
                  f"{ms(f['admitted_p99_ms'])} {ms(f['refused_p50_ms'])} {ms(f['refused_p99_ms'])}")

    def bulk(self) -> None:
        trees = [REPO] + ([self.args.baseline] if self.args.baseline else [])
        print(f"\n16 new short texts per request, 8 clients, no Redis, {self.args.rounds} rounds of {self.args.seconds} s")
        print(f"{'round':>5}  {'tree':24} {'texts/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/text':>11} {'RSS MB':>7}")
        rates: dict[Path, list[float]] = {tree: [] for tree in trees}
        for round_number in range(1, self.args.rounds + 1):
            for tree in trees:
                server = self.service(tree=tree)
                try:
                    f = self.measured_run(server, "batch", BATCH_TEXTS=16, TEXTS="short", VUS=8)
                finally:
                    server.stop()
                rates[tree].append(f["texts_per_second"])
                print(f"{round_number:>5}  {tree.name:24} {f['texts_per_second']:8.1f} {f['p50_ms']:8.1f} "
                      f"{f['p99_ms']:8.1f} {f['cpu_ms_per_request'] / 16:11.2f} {f['resident_mb']:7.0f}")
        if self.args.baseline:
            shares = [a / b for a, b in zip(rates[REPO], rates[self.args.baseline])]
            print(f"this tree / baseline texts/s, per round: {', '.join(f'{s:.2f}x' for s in shares)}")

    def start(self) -> None:
        trees = [REPO] + ([self.args.baseline] if self.args.baseline else [])
        seconds: dict[Path, list[float]] = {tree: [] for tree in trees}
        memory: dict[Path, list[float]] = {tree: [] for tree in trees}
        for _ in range(5):
            for tree in trees:
                server = self.service(tree=tree)
                seconds[tree].append(server.ready_seconds)
                memory[tree].append(server.resident_mb())
                server.stop()
        print("\nprocess start to /ready, 5 starts each, in turn; resident memory after warm-up (master + worker)")
        for tree in trees:
            print(f"{tree.name:24} median {statistics.median(seconds[tree]):.2f} s (min {min(seconds[tree]):.2f}, "
                  f"max {max(seconds[tree]):.2f}); {statistics.median(memory[tree]):.0f} MB")


    def largest(self) -> None:
        s = self.settings
        words = " ".join(["an unusually long review that keeps going"] * 200)  # far above any model window
        texts = [f"{n} {words}"[:s.max_text_chars] for n in range(s.max_batch_texts)]
        body = json.dumps({"text": texts}).encode()
        server = self.service()
        try:
            batches_before = server.metric("sentiment_batch_size_texts_count")
            started = time.perf_counter()
            request = urllib.request.Request(server.base_url + "/predict", data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=3600) as response:
                status = response.status
            seconds = time.perf_counter() - started
            batches = server.metric("sentiment_batch_size_texts_count") - batches_before
        finally:
            server.stop()
        print(f"\nlargest request accepted by default, idle service: {len(texts)} texts truncated to the model's "
              f"window, {len(body) / 1e6:.1f} MB body: HTTP {status} in {seconds:.1f} s, {batches:.0f} engine batches")


def ratio(a: dict, b: dict, key: str) -> str:
    return f"{a[key] / b[key]:.2f}x" if a.get(key) and b.get(key) else "n/a"


def ms(value: float | None) -> str:
    return f"{value:8.0f}" if value is not None else f"{'-':>8}"


def unique_short_texts(count: int) -> list[str]:
    """The k6 library's short texts with its unique suffix `[salt-vu-iteration-slot]`."""
    texts = [t for t in json.loads((REPO / "k6" / "data" / "texts.json").read_text())["texts"] if len(t) <= SHORT_TEXT_CHARS]
    rng = random.Random(0)
    salt = "".join(rng.choices("0123456789abcdefghijklmnopqrstuvwxyz", k=11))
    return [f"{rng.choice(texts)} [{salt}-{1 + n % 16}-{n // 16}-0]" for n in range(count)]


def prepare(checkpoint: Path | None, artifact: Path | None, workdir: Path) -> tuple[Path, Path]:
    """The checkpoint (default: random weights of DistilBERT-base's shape) and its built artifact."""
    if checkpoint is None:
        checkpoint = workdir / "checkpoint"
        subprocess.run([str(BIN / "python"), "-m", "model", "random-checkpoint", "--shape", "distilbert-base",
                        "--out", str(checkpoint)], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    if artifact is None:
        artifact = workdir / "artifact"
        subprocess.run([str(BIN / "python"), "-m", "model", "build", "--model-dir", str(checkpoint), "--out",
                        str(artifact)], cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return checkpoint, artifact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="Hugging Face checkpoint (default: random DistilBERT-base shape)")
    parser.add_argument("--artifact", type=Path, help="its built artifact (default: built here from the checkpoint)")
    parser.add_argument("--baseline", type=Path, help="a checkout of another revision, for the bulk and start parts")
    parser.add_argument("--seconds", type=int, default=12, help="length of each k6 run")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the side-by-side comparisons")
    parser.add_argument("--queue-max-wait", type=float, default=0.5, help="QUEUE_MAX_WAIT_SECONDS of the open loop")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"which parts to run, of {','.join(PARTS)}")
    args = parser.parse_args()
    named_checkpoint = args.checkpoint  # as given: the printed figures name it, not where it resolves
    for name in ("checkpoint", "artifact", "baseline"):  # the servers run from other directories
        if getattr(args, name) is not None:
            setattr(args, name, getattr(args, name).resolve())
    parts = [part for part in args.parts.split(",") if part]
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="sentiment-bench-") as tmp:
        workdir = Path(tmp)
        checkpoint, artifact = prepare(args.checkpoint, args.artifact, workdir)
        bench = Bench(args, workdir, checkpoint, artifact)
        print(f"checkpoint {named_checkpoint or 'random DistilBERT-base shape'}; {os.cpu_count()} CPUs; {cpu_line()}")
        try:
            if "hot" in parts:
                bench.hot()
            closed_loop_rate = bench.compute() if "compute" in parts or "open" in parts else None
            if "open" in parts:
                bench.open_loop(closed_loop_rate)
            if "bulk" in parts:
                bench.bulk()
            if "start" in parts:
                bench.start()
            if "largest" in parts:
                bench.largest()
        except BaseException:
            print(f"the servers' last log lines:\n{bench.log.read_text(errors='replace')[-3000:]}")
            raise


if __name__ == "__main__":
    main()
