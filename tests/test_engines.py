"""Engines on tiny random checkpoints: numerics, labels, truncation, what serving imports."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from model.engines import engine_threads, load_engine, softmax
from model.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TEXTS = [
    "a charming and often affecting journey.",
    "The plot is predictable, the acting wooden and the jokes fall flat!",
    "good",
    "not bad at all , actually",
    "Émilie's café served crème brûlée 🍮 — unexpectedly moving",
]
THREE_LABELS = ("joy", "anger", "neutral")


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint_3labels) -> Path:
    return tiny_checkpoint_3labels


@pytest.fixture(scope="module")
def artifact(checkpoint, tmp_path_factory) -> Path:
    from model.export import build_artifact

    out = tmp_path_factory.mktemp("tiny") / "artifact"
    build_artifact(checkpoint, out, ("fp32", "int8"))
    return out


def engine(model_dir: Path, backend: str = "onnx", precision: str = "fp32", **settings):
    return load_engine(Settings(model_dir=model_dir, backend=backend, precision=precision, **settings))


def test_onnx_fp32_matches_torch_alone_and_batched(checkpoint, artifact):
    onnx_engine, torch_engine = engine(artifact), engine(checkpoint, backend="torch")
    reference = torch_engine.predict_proba(TEXTS)
    assert np.abs(onnx_engine.predict_proba(TEXTS) - reference).max() <= 1e-4
    alone = np.concatenate([onnx_engine.predict_proba([text]) for text in TEXTS])
    assert np.abs(alone - reference).max() <= 1e-4


def test_probabilities_have_one_column_per_config_label(artifact):
    for precision in ("fp32", "int8"):
        onnx_engine = engine(artifact, precision=precision)
        probabilities = onnx_engine.predict_proba(TEXTS)
        assert onnx_engine.labels == THREE_LABELS
        assert onnx_engine.description == f"onnx-{precision}"
        assert probabilities.shape == (len(TEXTS), 3) and probabilities.dtype == np.float32
        assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        assert onnx_engine.predict_proba([]).shape == (0, 3)


def test_int8_stays_close_to_fp32(artifact):
    fp32, int8 = engine(artifact).predict_proba(TEXTS), engine(artifact, precision="int8").predict_proba(TEXTS)
    assert np.abs(fp32 - int8).max() < 0.1


def test_very_long_text_is_truncated_to_the_model_limit(artifact, checkpoint):
    long_text = "an utterly charming yet somewhat tedious film " * 2000
    onnx_engine = engine(artifact)
    assert onnx_engine.max_tokens == 512
    assert onnx_engine.tokenize_lengths([long_text, "good"]) == [512, 3]
    assert onnx_engine.predict_proba([long_text, "good"]).shape == (2, 3)
    short = engine(artifact, max_sequence_tokens=64)
    assert short.tokenize_lengths([long_text]) == [64]
    # The torch reference truncates the same way, so it sees the same token ids.
    assert np.abs(engine(checkpoint, backend="torch").predict_proba([long_text])
                  - onnx_engine.predict_proba([long_text])).max() <= 1e-4


def test_torch_bf16_reference_runs(checkpoint):
    bf16 = engine(checkpoint, backend="torch", precision="bf16")
    assert bf16.description == "torch-bf16"
    assert bf16.predict_proba(TEXTS).dtype == np.float32


def test_softmax_is_stable_for_large_logits():
    probabilities = softmax(np.array([[1000.0, 0.0, -1000.0], [3.0, 3.0, 3.0]]))
    assert np.isfinite(probabilities).all()
    assert np.allclose(probabilities, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]])


def test_engine_threads_follow_settings():
    assert engine_threads(Settings(intra_op_threads=3)) == 3
    assert engine_threads(Settings(web_concurrency=64)) == 1


def test_serving_an_artifact_imports_no_torch_transformers_or_hub(artifact):
    script = textwrap.dedent(f"""
        import sys
        from model.engines import load_engine
        from model.settings import Settings
        engine = load_engine(Settings(model_dir={str(artifact)!r}, precision="int8"))
        engine.warmup()
        print(engine.predict_proba(["fine"]).shape)
        print(sorted(m for m in ("torch", "transformers", "huggingface_hub") if m in sys.modules))
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["(1, 3)", "[]"]


@pytest.mark.slow
def test_minilm_int8_agrees_with_fp32_alone_and_in_mixed_batches(tmp_path):
    """The int8 recipe's promise on a real trained model: ≥99% label agreement, ≤0.5 pt accuracy."""
    model, data = SHARED / "models" / "minilm-sst-sentiment", SHARED / "data" / "sst2" / "dev.tsv"
    if not (model / "config.json").is_file() or not data.is_file():
        pytest.skip("needs the shared minilm-sst-sentiment model and SST-2 dev set")
    from model.evaluation import gold_indices, read_labelled_tsv, run_alone_and_mixed
    from model.export import build_artifact

    build_artifact(model, tmp_path, ("fp32", "int8"))
    texts, gold = read_labelled_tsv(data)
    engines = {precision: engine(tmp_path, precision=precision) for precision in ("fp32", "int8")}
    runs = {precision: run_alone_and_mixed(engines[precision], texts, 32) for precision in engines}
    reference = runs["fp32"].alone.argmax(1)
    target = gold_indices(engines["fp32"].labels, gold)
    for probabilities in (runs["int8"].alone, runs["int8"].mixed):
        assert (probabilities.argmax(1) == reference).mean() >= 0.99
        assert (probabilities.argmax(1) == target).mean() >= (reference == target).mean() - 0.005
