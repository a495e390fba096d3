"""Measure one pod of the service on this machine and keep the figures as a profile (JSON).

One Gunicorn process configured by environment variables, as the container runs it, serving a
built artifact on a free port; k6 (k6/batch.js through k6/benchmark.py, the repo's load
machinery) keeps N requests in flight for N = 1, 2, 4, ... until throughput stops growing,
requests fail, or N passes the pod's request threads, for each request shape (texts per
request, unique short texts so no cache answers). Process start to /ready is timed over a few
starts. The profile records the CPU (model, vCPUs, instruction sets), the serving
configuration (backend, precision, threads), the model fingerprint and the command, so a figure
is never read without the machine it was measured on.

k6 runs on the same machine as the pod and takes CPU from it: a pod alone on a node of the same
type does somewhat better, so a profile measured this way errs on the safe side.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROFILE_FORMAT = 1
# Throughput that grows by less than this share from one in-flight count to the next (twice
# in a row) has saturated.
SATURATION_GAIN = 0.05
# Instruction-set flags that change inference speed (int8 and bf16 kernels, vector width).
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def load_benchmark():
    """The repo's HTTP benchmark machinery (k6/benchmark.py: service, k6_summary, prepare).
    It is a script beside the k6 scenarios, so it is loaded from its path."""
    spec = importlib.util.spec_from_file_location("k6_benchmark", REPO / "k6" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu_info() -> dict:
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("unknown", "", "x86_64"):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    vcpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    isa = [flag for flag in ISA_FLAGS if flag in flags]
    return {"model": model, "vcpus": vcpus, "isa": isa, "summary": cpu_summary(model, vcpus, isa)}


def cpu_summary(model: str, vcpus: int, isa: list[str]) -> str:
    """e.g. "2 vCPU AMD EPYC, AVX2, no AVX-512/VNNI"."""
    has = set(isa)
    if "avx512f" in has:
        vector = "AVX-512" + (" VNNI" if "avx512_vnni" in has else ", no VNNI") + (" BF16" if "avx512_bf16" in has else "")
    elif "avx2" in has:
        vector = "AVX2" + (" VNNI" if "avx_vnni" in has else "") + ", no AVX-512" + ("" if "avx_vnni" in has else "/VNNI")
    else:
        vector = "no AVX2"
    return f"{vcpus} vCPU {model}, {vector}"


def service_description(model_dir: Path, overrides: dict[str, str]) -> dict:
    """The serving configuration the measured process runs with, and the model it serves."""
    from model.artifacts import inspect_model_dir
    from model.settings import AUTO_PRECISION, Settings

    settings = Settings(**{name.lower(): value for name, value in overrides.items()})
    resolved = inspect_model_dir(model_dir)
    precision = settings.precision
    if precision == AUTO_PRECISION:  # as the engine resolves it (model/engines.py, load_engine)
        precision = resolved.recommended_precision if settings.backend == "onnx" else "fp32"
    return {
        "model_id": resolved.model_id,
        "fingerprint": resolved.fingerprint_sha256,
        "backend": settings.backend,
        "precision": precision,
        "workers": settings.web_concurrency,
        "threads": settings.gunicorn_threads,
        "intra_op_threads": settings.intra_op_threads or max(1, (os.cpu_count() or 1) // settings.web_concurrency),
        "batching": settings.batching,
        "overrides": overrides,
    }


def point_from_summary(summary: dict, in_flight: int, texts: int, seconds: float) -> dict:
    """One profile point from a k6/batch.js summary."""
    metrics = summary["metrics"]
    duration = metrics["http_req_duration"]["values"]
    requests = summary["figures"]["requests"]
    return {
        "in_flight": in_flight,
        "requests": requests,
        "requests_per_second": requests / seconds,
        "texts_per_second": summary["figures"]["texts_per_second"],
        "failed_share": metrics["http_req_failed"]["values"]["rate"],
        "latency_ms": {"avg": duration["avg"], "min": duration["min"], "p50": duration["med"],
                       "p90": duration["p(90)"], "p95": duration["p(95)"], "p99": duration["p(99)"],
                       "max": duration["max"]},
    }


def measure_shape(bench, base_url: str, texts: int, seconds: int, max_in_flight: int, workdir: Path,
                  say=print) -> list[dict]:
    """Closed-loop points at 1, 2, 4, ... requests in flight until saturation."""
    points: list[dict] = []
    in_flight, flat = 1, 0
    while in_flight <= max_in_flight:
        env = {"BASE_URL": base_url, "BATCH_TEXTS": str(texts), "TEXTS": "short", "VUS": str(in_flight),
               "DURATION": f"{seconds}s", "SLO_P99_MS": "600000"}
        point = point_from_summary(bench.k6_summary("batch.js", env, seconds, workdir), in_flight, texts, seconds)
        say(f"  {texts:>3} text(s) x {in_flight:>3} in flight: {point['requests_per_second']:7.1f} req/s"
            f"  p50 {point['latency_ms']['p50']:7.1f} ms  p99 {point['latency_ms']['p99']:7.1f} ms"
            f"  failed {100 * point['failed_share']:.2f}%")
        best_before = max((p["requests_per_second"] for p in points), default=0.0)
        points.append(point)
        if point["failed_share"] > 0:
            break
        flat = flat + 1 if point["requests_per_second"] < (1 + SATURATION_GAIN) * best_before else 0
        if flat == 2:
            break
        in_flight *= 2
    return points


def measure(model_dir: Path, shapes: list[int], seconds: int, starts: int, overrides: dict[str, str],
            workdir: Path, command: str, max_in_flight: int | None = None, say=print) -> dict:
    """Starts the service, measures every shape and the start-up, returns the profile. The
    closed-loop points stop at saturation, at `max_in_flight`, or at the pod's request threads."""
    bench = load_benchmark()
    env = {"MODEL_DIR": str(model_dir), **overrides}
    service_info = service_description(model_dir, overrides)
    cpu = cpu_info()
    say(f"profiling on {cpu['summary']}; {service_info['backend']} {service_info['precision']},"
        f" {service_info['threads']} threads, model {service_info['model_id']}@{service_info['fingerprint'][:12]}")
    ready_seconds = []
    for _ in range(starts):
        service = bench.service(env, workdir / "service.log")
        ready_seconds.append(service.ready_seconds)
        service.stop()
    say(f"  process start to /ready: median {statistics.median(ready_seconds):.2f} s over {starts} starts")
    service = bench.service(env, workdir / "service.log")
    try:
        measured = {str(texts): {"texts_per_request": texts,
                                 "points": measure_shape(bench, service.base_url, texts, seconds,
                                                         max_in_flight or service_info["threads"], workdir, say)}
                    for texts in shapes}
    finally:
        service.stop()
    return {
        "format": PROFILE_FORMAT,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "cpu": cpu,
        "service": service_info,
        "load_generator": f"{k6_version(bench)} on the same machine, closed loop (k6/batch.js), {seconds} s per point",
        "start_to_ready_seconds": ready_seconds,
        "shapes": measured,
    }


def k6_version(bench) -> str:
    result = subprocess.run([str(bench.BIN / "k6"), "version"], capture_output=True, text=True)
    return " ".join(result.stdout.split()[:2]) or "k6"


def process_start_seconds(profile: dict) -> float:
    return statistics.median(profile["start_to_ready_seconds"])


def save(profile: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(profile, indent=1) + "\n")


def load(path: Path) -> dict:
    try:
        profile = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read profile {path}: {error}") from None
    if profile.get("format") != PROFILE_FORMAT:
        raise ValueError(f"{path}: profile format {profile.get('format')} is not {PROFILE_FORMAT}; profile again")
    return profile


def command_line() -> str:
    return "python -m knative.plan " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
