"""Side-by-side HTTP benchmark of the service, printed as figures (no pass/fail).

    .venv/bin/python k6/benchmark.py [--checkpoint DIR] [--seconds 20] [--rounds 2]

With no --checkpoint it writes a random checkpoint of DistilBERT-base's shape (the product
model's compute cost; real weights need the hub) and builds its artifact. Then, on this machine:

1. one unique short text per request, 16 concurrent k6 clients, against the naive
   configuration (BACKEND=torch PRECISION=fp32 BATCHING=false) and the shipped one (ONNX
   artifact, default precision, batching on), alternating A B A B so drift hits both alike;
2. 32 short texts per request against the shipped configuration, beside the engine alone
   on batches of 32 texts of the same kind (model.builder.measure.measure, in this process);
3. process start to /ready (median of 5 starts) and resident memory after warm-up.

Both services run without Redis: every text is new, so this measures the compute path.
"""

from __future__ import annotations

import argparse
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

from model.builder.measure import engine_for, measure  # noqa: E402
from model.settings import Settings  # noqa: E402

BIN = Path(sys.executable).parent
SHORT_TEXT_CHARS = 160  # the k6 library's "short" texts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/ready", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


class Service:
    """A real Gunicorn serving one configuration on a free port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, "PORT": str(self.port), "LOG_LEVEL": "warning", **env}
        full_env.pop("REDIS_URL", None)
        self.started = time.perf_counter()
        self.process = subprocess.Popen([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "app:app"], cwd=REPO,
                                        env=full_env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
        while not is_ready(self.base_url):
            if self.process.poll() is not None or time.perf_counter() - self.started > 300:
                raise SystemExit(f"service did not become ready; see {log_path}")
            time.sleep(0.01)
        self.ready_seconds = time.perf_counter() - self.started

    def resident_mb(self) -> float:
        """Resident memory of the master and its workers."""
        pids = [self.process.pid] + [int(pid) for pid in subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout.split()]
        kilobytes = 0
        for pid in pids:
            status = Path(f"/proc/{pid}/status").read_text()
            kilobytes += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
        return kilobytes / 1024

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def run_k6(base_url: str, texts_per_request: int, vus: int, seconds: int, workdir: Path) -> dict:
    """k6/batch.js with short unique texts; returns its figures (texts/s, p50, p99)."""
    summary = workdir / f"k6-{time.monotonic_ns()}.json"
    env = {**os.environ, "BASE_URL": base_url, "BATCH_TEXTS": str(texts_per_request), "TEXTS": "short",
           "VUS": str(vus), "DURATION": f"{seconds}s", "SLO_P99_MS": "60000", "SUMMARY_JSON": str(summary)}
    subprocess.run([str(BIN / "k6"), "run", "--quiet", str(REPO / "k6" / "batch.js")], env=env, check=True,
                   stdout=subprocess.DEVNULL, timeout=seconds + 120)
    figures = json.loads(summary.read_text())["figures"]
    return {"texts_per_second": figures["texts_per_second"], "p50_ms": figures["p50_ms"], "p99_ms": figures["p99_ms"]}


def engine_batch32(artifact: Path) -> float:
    """Engine-level texts/s at batch 32 (default precision) on texts shaped like the k6 ones."""
    engine = engine_for(artifact, "onnx", default_precision())
    engine.warmup()
    return measure(engine, unique_short_texts(4096), 32, 10.0)[0]


def unique_short_texts(count: int) -> list[str]:
    """The k6 library's short texts with its unique suffix `[salt-vu-iteration-slot]`."""
    texts = [t for t in json.loads((REPO / "k6" / "data" / "texts.json").read_text())["texts"] if len(t) <= SHORT_TEXT_CHARS]
    rng = random.Random(0)
    salt = "".join(rng.choices("0123456789abcdefghijklmnopqrstuvwxyz", k=11))
    return [f"{rng.choice(texts)} [{salt}-{1 + n % 2}-{n // 64}-{n % 32}]" for n in range(count)]


def default_precision() -> str:
    return Settings.model_fields["precision"].default


def prepare(checkpoint: Path | None, workdir: Path) -> tuple[Path, Path]:
    if checkpoint is None:
        checkpoint = workdir / "checkpoint"
        subprocess.run([str(BIN / "python"), "-m", "model", "random-checkpoint", "--shape", "distilbert-base",
                        "--out", str(checkpoint)], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    artifact = workdir / "artifact"
    subprocess.run([str(BIN / "python"), "-m", "model", "build", "--model-dir", str(checkpoint), "--out", str(artifact)],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return checkpoint, artifact


def compare_naive_and_shipped(checkpoint: Path, artifact: Path, args, workdir: Path) -> None:
    configs = {
        "naive (torch fp32, no batching)": {"MODEL_DIR": str(checkpoint), "BACKEND": "torch", "PRECISION": "fp32",
                                            "BATCHING": "false"},
        f"shipped (onnx {default_precision()}, batching)": {"MODEL_DIR": str(artifact)},
    }
    print(f"\n1. one unique short text per request, 16 concurrent clients, {args.seconds} s per run")
    print(f"{'round':>5}  {'configuration':38} {'texts/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    ratios = []
    for round_number in range(1, args.rounds + 1):
        rates = []
        for name, env in configs.items():
            service = Service(env, workdir / "service.log")
            try:
                figures = run_k6(service.base_url, 1, 16, args.seconds, workdir)
            finally:
                service.stop()
            rates.append(figures["texts_per_second"])
            print(f"{round_number:>5}  {name:38} {figures['texts_per_second']:8.1f} {figures['p50_ms']:8.1f} {figures['p99_ms']:8.1f}")
        ratios.append(rates[1] / rates[0])
    print(f"shipped / naive throughput, per round: {', '.join(f'{r:.2f}x' for r in ratios)}")


def compare_http_and_engine_batches(artifact: Path, args, workdir: Path) -> None:
    engine = engine_batch32(artifact)
    service = Service({"MODEL_DIR": str(artifact)}, workdir / "service.log")
    try:
        http = run_k6(service.base_url, 32, 2, args.seconds, workdir)
    finally:
        service.stop()
    print("\n2. 32 short texts per request (2 clients) against the engine alone at batch 32")
    print(f"engine {engine:.1f} texts/s   HTTP {http['texts_per_second']:.1f} texts/s (p99 {http['p99_ms']:.0f} ms)"
          f"   HTTP / engine {http['texts_per_second'] / engine:.0%}")


def measure_start(artifact: Path, workdir: Path) -> None:
    seconds, memory = [], []
    for _ in range(5):
        service = Service({"MODEL_DIR": str(artifact)}, workdir / "service.log")
        seconds.append(service.ready_seconds)
        memory.append(service.resident_mb())
        service.stop()
    print("\n3. process start to /ready, 5 starts (shipped configuration)")
    print(f"median {statistics.median(seconds):.2f} s (min {min(seconds):.2f}, max {max(seconds):.2f});"
          f" resident memory after warm-up, master + worker: median {statistics.median(memory):.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="Hugging Face checkpoint (default: random DistilBERT-base shape)")
    parser.add_argument("--seconds", type=int, default=20, help="length of each k6 run")
    parser.add_argument("--rounds", type=int, default=2, help="A/B rounds of the naive-vs-shipped comparison")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sentiment-bench-") as tmp:
        workdir = Path(tmp)
        checkpoint, artifact = prepare(args.checkpoint, workdir)
        print(f"checkpoint {args.checkpoint or 'random DistilBERT-base shape'}; {os.cpu_count()} CPUs")
        compare_naive_and_shipped(checkpoint, artifact, args, workdir)
        compare_http_and_engine_batches(artifact, args, workdir)
        measure_start(artifact, workdir)


if __name__ == "__main__":
    main()
