"""Measurements behind `python -m model evaluate` and `python -m model bench`.

evaluate: accuracy on a labelled TSV, label flips between alone and mixed batches, and the
int8 gate of a candidate engine against a reference engine.
bench: engine-level texts/s and latency per backend, precision variant and batch size:
fp32, int8 with every weight MatMul quantized ("int8-all"), the artifact's own int8 recipe,
and optionally the recipe of another artifact carried over by node role. Figures are
printed with the CPU's int8 instruction set, never asserted: they depend on the machine and
on whatever else runs on it.
"""

from __future__ import annotations

import functools
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from model.artifacts import ResolvedModel, inspect_model_dir
from model.builder.gate import MIXED_BATCH, check_candidate, gold_indices, read_text_set, score_alone_and_mixed, score_batched
from model.builder.quantize import nodes_for_roles, prepare, quantize, weight_matmuls
from model.cpu import cpu_model, int8_isa
from model.engines import Engine, OnnxEngine, engine_threads, load_engine, predict_texts
from model.settings import PRECISIONS_BY_BACKEND, ConfigurationError, Settings

BENCH_TOKENS = (12, 22)  # token range of benchmark sentences: about 17 on average
CARRIED_RECIPE = "int8-other-recipe"  # --recipe-from: another artifact's MatMuls kept in fp32, by node role


def engine_for(model_dir: Path, backend: str, precision: str) -> Engine:
    """An engine for the command line: the environment's settings with these three replaced."""
    try:
        settings = Settings(model_dir=model_dir, backend=backend, precision=precision)
    except ValidationError as error:
        raise ConfigurationError(f"{backend}/{precision}: {error.errors()[0]['msg']}") from None
    return load_engine(settings)


def cpu_line() -> str:
    return f"CPU: {cpu_model()}, int8 kernels {int8_isa()}"


# --- evaluate ----------------------------------------------------------------------------------


def evaluate_engines(model_dir: Path, data: Path, candidate: tuple[str, str], reference: tuple[str, str],
                     batch_size: int = MIXED_BATCH) -> str:
    text_set = read_text_set(data)
    engines = [engine_for(model_dir, backend, precision) for backend, precision in (candidate, reference)]
    lines = [f"{len(text_set.texts)} texts from {data}; mixed batches of {batch_size}; {cpu_line()}",
             f"{'engine':14s} {'acc alone':>9s} {'acc mixed':>9s} {'alone/mixed flips':>17s} "
             f"{'max |Δ| alone/mixed':>19s} {'s alone':>7s} {'isa':>6s}"]
    for engine in engines:
        engine.warmup()
        started = time.perf_counter()
        scored = score_alone_and_mixed(engine, text_set.texts, batch_size)
        seconds = time.perf_counter() - started
        target = gold_indices(engine.labels, text_set.gold)
        accuracy = [f"{(p.argmax(1) == target).mean():9.4f}" if target is not None else f"{'n/a':>9s}"
                    for p in (scored.alone, scored.mixed)]
        flips = int((scored.alone.argmax(1) != scored.mixed.argmax(1)).sum())
        drift = float(np.abs(scored.alone - scored.mixed).max())
        lines.append(f"{engine.description:14s} {accuracy[0]} {accuracy[1]} {flips:17d} {drift:19.2e} "
                     f"{seconds:7.1f} {int8_isa():>6s}")
    candidate_engine, reference_engine = engines
    gate = check_candidate(score_batched(reference_engine, text_set.texts), candidate_engine, text_set)
    lines.append(f"int8 gate, {candidate_engine.description} vs {reference_engine.description} "
                 f"({int8_isa()}): {gate.summary()}")
    lines += [f"  note: {note}" for note in gate.notes]
    return "\n".join(lines)


# --- bench -------------------------------------------------------------------------------------


@dataclass
class BenchRow:
    backend: str
    variant: str
    load_seconds: float
    batch_size: int
    texts_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_text: float
    mean_tokens: float

    def line(self) -> str:
        return (f"{self.backend:8s} {self.variant:20s} {self.load_seconds:6.2f} {self.batch_size:5d} "
                f"{self.texts_per_second:8.1f} {self.p50_ms:8.2f} {self.p99_ms:8.2f} {self.cpu_ms_per_text:11.2f} "
                f"{self.mean_tokens:6.1f} {int8_isa():>6s}")


BENCH_HEADER = (f"{'backend':8s} {'variant':20s} {'load s':>6s} {'batch':>5s} {'texts/s':>8s} {'p50 ms':>8s} "
                f"{'p99 ms':>8s} {'cpu ms/text':>11s} {'tokens':>6s} {'isa':>6s}")


def bench_sentences(engine: Engine, data: Path | None, count: int = 512) -> list[str]:
    """Real sentences of 12-22 tokens when a data file is given, otherwise generated ones."""
    if data is not None:
        candidates = read_text_set(data).texts
        lengths = [len(e) for e in engine.tokenize(candidates)]
        chosen = [text for text, n in zip(candidates, lengths) if BENCH_TOKENS[0] <= n <= BENCH_TOKENS[1]]
        if chosen:
            return chosen[:count]
    from model.builder.checkpoints import COMMON_WORDS

    rng = random.Random(0)
    return [" ".join(rng.choices(COMMON_WORDS, k=rng.randint(10, 20))) + " ." for _ in range(count)]


@dataclass
class Timings:
    """Latencies of batches of one size and the process CPU time they took."""

    batch_size: int
    latencies: list[float]
    cpu_seconds: float = 0.0

    def add(self, engine: Engine, sentences: list[str], seconds: float) -> None:
        cpu_start = time.process_time()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(self.latencies) < 3:
            start_at = len(self.latencies) * self.batch_size
            batch = [sentences[(start_at + i) % len(sentences)] for i in range(self.batch_size)]
            start = time.perf_counter()
            predict_texts(engine, batch)
            self.latencies.append(time.perf_counter() - start)
        self.cpu_seconds += time.process_time() - cpu_start

    def figures(self) -> tuple[float, float, float, float]:
        """texts/s, median and p99 latency (ms), CPU ms per text."""
        ordered = sorted(self.latencies)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        texts = self.batch_size * len(ordered)
        return texts / sum(ordered), statistics.median(ordered) * 1e3, p99 * 1e3, self.cpu_seconds * 1e3 / texts


def measure(engine: Engine, sentences: list[str], batch_size: int, seconds: float) -> tuple[float, float, float, float]:
    """texts/s, median and p99 latency (ms), and CPU ms per text of tokenize + predict on batches.

    CPU time per text is less disturbed than wall time when other work shares the machine.
    """
    timings = Timings(batch_size, [])
    timings.add(engine, sentences, seconds)
    return timings.figures()


def onnx_variants(artifact: ResolvedModel, wanted: list[str], recipe_from: ResolvedModel | None,
                  workdir: Path) -> dict[str, Path]:
    """ONNX files per variant: the artifact's own, plus int8 variants quantized here from its fp32 file."""
    files = {p: artifact.artifact_dir / e["file"] for p, e in artifact.manifest["precisions"].items()}
    variants = {name: files[name] for name in wanted if name in files}
    derived = [name for name in wanted if name == "int8-all"]
    if recipe_from is not None:
        derived.append(CARRIED_RECIPE)
    if not derived or "fp32" not in files:
        return variants
    prepared = workdir / "prepared.onnx"
    prepare(files["fp32"], prepared)
    nodes = weight_matmuls(prepared)
    for name in derived:
        keep = [] if name == "int8-all" else nodes_for_roles(recipe_from.manifest["int8"]["kept_fp32_roles"], nodes)
        variants[name] = workdir / f"{name}.onnx"
        quantize(prepared, variants[name], keep)
    return variants


ROUNDS = 3  # each variant measured in turn, this many times per batch size: drift hits every variant alike


def benchmark(model_dir: Path, backends: list[str], variants: list[str], batch_sizes: list[int],
              seconds: float, data: Path | None, recipe_from: Path | None = None) -> str:
    lines = [cpu_line(), BENCH_HEADER]
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        loaders = _loaders(model_dir, backends, variants, recipe_from, Path(workdir), lines)
        engines = []
        for backend, variant, load in loaders:
            start = time.perf_counter()
            engine = load()
            engine.warmup()
            engines.append((backend, variant, engine, time.perf_counter() - start))
        sentences = bench_sentences(engines[0][2], data) if engines else []
        rows = []
        for batch_size in batch_sizes:
            timings = [Timings(batch_size, []) for _ in engines]
            for _ in range(ROUNDS):
                for (_, _, engine, _), timing in zip(engines, timings):
                    timing.add(engine, sentences, seconds / ROUNDS)
            for (backend, variant, engine, load_seconds), timing in zip(engines, timings):
                mean_tokens = statistics.mean(len(e) for e in engine.tokenize(sentences))
                rows.append(BenchRow(backend, variant, load_seconds, batch_size, *timing.figures(), mean_tokens))
    rows.sort(key=lambda row: (backends.index(row.backend), row.variant != "fp32", row.variant, row.batch_size))
    return "\n".join(lines + [row.line() for row in rows] + ratio_lines(rows))


def _loaders(model_dir: Path, backends: list[str], variants: list[str], recipe_from: Path | None, workdir: Path,
             lines: list[str]) -> list[tuple[str, str, Callable[[], Engine]]]:
    """(backend, variant, load) for every combination asked for that exists."""
    loaders = []
    for backend in backends:
        if backend == "onnx":
            settings = Settings(model_dir=model_dir, precision="fp32")
            artifact = inspect_model_dir(Path(model_dir))
            if artifact.artifact_dir is None:
                raise ConfigurationError(f"{model_dir} is not a built artifact: bench the output of `python -m model build`")
            other = inspect_model_dir(Path(recipe_from)) if recipe_from else None
            if other is not None:
                roles = other.manifest["int8"]["kept_fp32_roles"]
                lines.insert(1, f"{CARRIED_RECIPE}: the int8 recipe of {other.model_id} ({len(roles)} MatMuls kept in "
                                f"fp32: {', '.join(roles) or 'none'}), applied here by node role")
            for variant, path in onnx_variants(artifact, variants, other, workdir).items():
                precision = "fp32" if variant == "fp32" else "int8"
                loaders.append(("onnx", variant, functools.partial(
                    OnnxEngine, artifact, precision, settings.max_sequence_tokens, engine_threads(settings), path=path)))
        else:
            loaders += [(backend, precision, functools.partial(engine_for, model_dir, backend, precision))
                        for precision in PRECISIONS_BY_BACKEND[backend] if precision in variants]
    return loaders


def ratio_lines(rows: list[BenchRow]) -> list[str]:
    """Each int8 variant's texts/s as a share of int8-all's, per batch size (same run, side by side)."""
    full = {row.batch_size: row.texts_per_second for row in rows if row.variant == "int8-all"}
    lines = []
    for row in rows:
        if row.backend == "onnx" and row.variant not in ("fp32", "int8-all") and row.batch_size in full:
            lines.append(f"{row.variant} at batch {row.batch_size}: {row.texts_per_second / full[row.batch_size]:.0%} "
                         f"of int8-all's texts/s ({int8_isa()})")
    return lines
