"""Measurements behind `python -m model evaluate` and `python -m model bench`.

evaluate: accuracy on a labelled TSV, label agreement and |Δscore| between two engines, and
how much each text's result moves between running alone and inside mixed batches.
bench: engine-level texts/s and latency per backend, precision and batch size. Figures are
printed, never asserted: they depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from model.engines import Engine, load_engine
from model.settings import PRECISIONS_BY_BACKEND, ConfigurationError, Settings

BENCH_TOKENS = (12, 22)  # token range of benchmark sentences: about 17 on average


def engine_for(model_dir: Path, backend: str, precision: str) -> Engine:
    """An engine for the command line: the environment's settings with these three replaced."""
    try:
        settings = Settings(model_dir=model_dir, backend=backend, precision=precision)
    except ValidationError as error:
        raise ConfigurationError(f"{backend}/{precision}: {error.errors()[0]['msg']}") from None
    return load_engine(settings)


def read_labelled_tsv(path: Path) -> tuple[list[str], np.ndarray]:
    """`sentence<TAB>label` rows after a header line; label 1 = positive, 0 = negative."""
    rows = [line.rsplit("\t", 1) for line in path.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
    return [text for text, _ in rows], np.array([int(label) for _, label in rows])


def read_sentences(path: Path) -> list[str]:
    """Sentences from a TSV (first column, header skipped) or a file with one sentence a line."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if "\t" in lines[0]:
        return [line.rsplit("\t", 1)[0] for line in lines[1:]]
    return lines


# --- evaluate ----------------------------------------------------------------------------------


@dataclass
class Run:
    """One engine's probabilities for every text, alone and inside mixed batches."""

    name: str
    alone: np.ndarray
    mixed: np.ndarray
    seconds_alone: float


def run_alone_and_mixed(engine: Engine, texts: list[str], batch_size: int) -> Run:
    start = time.perf_counter()
    alone = np.concatenate([engine.predict_proba([text]) for text in texts])
    seconds_alone = time.perf_counter() - start
    # Shuffled so every batch mixes short and long texts (padding differs from alone).
    order = np.random.default_rng(0).permutation(len(texts))
    mixed = np.zeros_like(alone)
    for begin in range(0, len(texts), batch_size):
        chosen = order[begin : begin + batch_size]
        mixed[chosen] = engine.predict_proba([texts[i] for i in chosen])
    return Run(engine.description, alone, mixed, seconds_alone)


def gold_indices(labels: tuple[str, ...], gold: np.ndarray) -> np.ndarray | None:
    """Map TSV labels (0 negative, 1 positive) to the engine's label indices, if it names them."""
    lowered = [label.lower() for label in labels]
    if "negative" in lowered and "positive" in lowered:
        return np.where(gold == 1, lowered.index("positive"), lowered.index("negative"))
    return gold if len(labels) == 2 else None


def evaluate_engines(model_dir: Path, data: Path, candidate: tuple[str, str], reference: tuple[str, str],
                     batch_size: int = 32) -> str:
    texts, gold = read_labelled_tsv(data)
    runs = []
    for backend, precision in (candidate, reference):
        engine = engine_for(model_dir, backend, precision)
        engine.warmup()
        runs.append((engine, run_alone_and_mixed(engine, texts, batch_size)))
    lines = [f"{len(texts)} texts from {data}; mixed batches of {batch_size}"]
    lines.append(f"{'engine':14s} {'acc alone':>9s} {'acc mixed':>9s} {'alone/mixed flips':>17s} {'max |Δ| alone/mixed':>19s} {'s alone':>7s}")
    for engine, run in runs:
        target = gold_indices(engine.labels, gold)
        accuracy = [f"{(p.argmax(1) == target).mean():9.4f}" if target is not None else f"{'n/a':>9s}" for p in (run.alone, run.mixed)]
        flips = int((run.alone.argmax(1) != run.mixed.argmax(1)).sum())
        drift = float(np.abs(run.alone - run.mixed).max())
        lines.append(f"{run.name:14s} {accuracy[0]} {accuracy[1]} {flips:17d} {drift:19.2e} {run.seconds_alone:7.1f}")
    (_, candidate_run), (_, reference_run) = runs
    lines.append(f"{candidate_run.name} vs {reference_run.name} (reference run alone):")
    for mode, probabilities in (("alone", candidate_run.alone), ("mixed", candidate_run.mixed)):
        agree = (probabilities.argmax(1) == reference_run.alone.argmax(1)).mean()
        delta = np.abs(probabilities - reference_run.alone)
        lines.append(f"  {mode}: label agreement {agree:.4f} ({int(round((1 - agree) * len(texts)))} differ), "
                     f"max |Δscore| {delta.max():.2e}, mean |Δscore| {delta.max(axis=1).mean():.2e}")
    return "\n".join(lines)


# --- bench -------------------------------------------------------------------------------------


def bench_sentences(engine: Engine, data: Path | None, count: int = 512) -> list[str]:
    """Real sentences of 12-22 tokens when a data file is given, otherwise generated ones."""
    if data is not None:
        candidates = read_sentences(data)
        lengths = engine.tokenize_lengths(candidates)
        chosen = [text for text, n in zip(candidates, lengths) if BENCH_TOKENS[0] <= n <= BENCH_TOKENS[1]]
        if chosen:
            return chosen[:count]
    from model.checkpoints import COMMON_WORDS

    rng = random.Random(0)
    return [" ".join(rng.choices(COMMON_WORDS, k=rng.randint(10, 20))) + " ." for _ in range(count)]


def measure(engine: Engine, sentences: list[str], batch_size: int, seconds: float) -> tuple[float, float, float, float]:
    """texts/s, median and p99 latency (ms), and CPU ms per text of predict_proba on batches.

    CPU time per text is less disturbed than wall time when other work shares the machine.
    """
    latencies: list[float] = []
    cpu_start = time.process_time()
    position = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(latencies) < 3:
        batch = [sentences[(position + i) % len(sentences)] for i in range(batch_size)]
        position += batch_size
        start = time.perf_counter()
        engine.predict_proba(batch)
        latencies.append(time.perf_counter() - start)
    cpu_ms_per_text = (time.process_time() - cpu_start) * 1e3 / (batch_size * len(latencies))
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return batch_size * len(latencies) / sum(latencies), statistics.median(latencies) * 1e3, p99 * 1e3, cpu_ms_per_text


def benchmark(model_dir: Path, backends: list[str], precisions: list[str], batch_sizes: list[int],
              seconds: float, data: Path | None) -> str:
    lines = [f"{'backend':8s} {'precision':9s} {'load s':>6s} {'batch':>5s} {'texts/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'cpu ms/text':>11s} {'tokens':>6s}"]
    for backend in backends:
        for precision in precisions:
            if precision not in PRECISIONS_BY_BACKEND.get(backend, ()):
                continue
            start = time.perf_counter()
            engine = engine_for(model_dir, backend, precision)
            engine.warmup()
            load_seconds = time.perf_counter() - start
            sentences = bench_sentences(engine, data)
            mean_tokens = statistics.mean(engine.tokenize_lengths(sentences))
            for batch_size in batch_sizes:
                rate, p50, p99, cpu = measure(engine, sentences, batch_size, seconds)
                lines.append(f"{backend:8s} {precision:9s} {load_seconds:6.2f} {batch_size:5d} {rate:8.1f} "
                             f"{p50:8.2f} {p99:8.2f} {cpu:11.2f} {mean_tokens:6.1f}")
    return "\n".join(lines)
