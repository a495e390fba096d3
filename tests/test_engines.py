"""Engines on tiny random checkpoints and a real trained model: numerics, labels, truncation,
the int8 gate at the default precision, what serving imports."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from model.builder.gate import VERDICT_SET, check_engines, read_text_set
from model.engines import engine_threads, load_engine, predict_texts, softmax
from model.settings import Settings
from tests.reference import config_labels, softmax_by_label

REPO = Path(__file__).resolve().parents[1]
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
    from model.builder.export import build_artifact

    out = tmp_path_factory.mktemp("tiny") / "artifact"
    build_artifact(checkpoint, out, ("fp32", "int8"))
    return out


def engine(model_dir: Path, backend: str = "onnx", precision: str = "fp32", **settings):
    return load_engine(Settings(model_dir=model_dir, backend=backend, precision=precision, **settings))


def probabilities(model_dir: Path, texts: list[str], **options):
    return predict_texts(engine(model_dir, **options), texts)


def test_onnx_fp32_matches_torch_alone_and_batched(checkpoint, artifact):
    onnx_engine, torch_engine = engine(artifact), engine(checkpoint, backend="torch")
    reference = predict_texts(torch_engine, TEXTS)
    assert np.abs(predict_texts(onnx_engine, TEXTS) - reference).max() <= 1e-4
    alone = np.concatenate([predict_texts(onnx_engine, [text]) for text in TEXTS])
    assert np.abs(alone - reference).max() <= 1e-4


def test_probabilities_have_one_column_per_config_label(artifact):
    for precision in ("fp32", "auto"):
        onnx_engine = engine(artifact, precision=precision)
        scores = predict_texts(onnx_engine, TEXTS)
        assert onnx_engine.labels == THREE_LABELS
        assert scores.shape == (len(TEXTS), 3) and scores.dtype == np.float32
        assert np.allclose(scores.sum(axis=1), 1.0, atol=1e-5)
        assert predict_texts(onnx_engine, []).shape == (0, 3)
    assert engine(artifact).description == "onnx-fp32"


def test_default_precision_follows_the_manifest_and_an_explicit_one_wins(artifact):
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert engine(artifact, precision="auto").description == f"onnx-{manifest['recommended_precision']}"
    assert Settings().precision == "auto"
    assert engine(artifact, precision="fp32").description == "onnx-fp32"


def test_three_label_model_at_the_default_precision_is_within_the_int8_gate_of_fp32(artifact):
    """API.md: every label with its softmax probability, whichever precision the build chose."""
    result = check_engines(engine(artifact, precision="fp32"), engine(artifact, precision="auto"),
                           read_text_set(VERDICT_SET, limit=300))
    assert result.passed, result.summary()


def test_very_long_text_is_truncated_to_the_model_limit(artifact, checkpoint):
    long_text = "an utterly charming yet somewhat tedious film " * 2000
    onnx_engine = engine(artifact)
    assert onnx_engine.max_tokens == 512
    assert [len(e) for e in onnx_engine.tokenize([long_text, "good"])] == [512, 3]
    assert predict_texts(onnx_engine, [long_text, "good"]).shape == (2, 3)
    short = engine(artifact, max_sequence_tokens=64)
    assert [len(e) for e in short.tokenize([long_text])] == [64]
    # The torch reference truncates the same way, so it sees the same token ids.
    assert np.abs(probabilities(checkpoint, [long_text], backend="torch")
                  - predict_texts(onnx_engine, [long_text])).max() <= 1e-4


def test_torch_bf16_computes_in_bfloat16_and_answers_in_float32(checkpoint):
    """bf16 answers are torch's bf16-autocast softmax computed here, visibly not the fp32 one."""
    bf16 = engine(checkpoint, backend="torch", precision="bf16")
    assert bf16.description == "torch-bf16"
    assert predict_texts(bf16, TEXTS).dtype == np.float32
    answers = np.concatenate([predict_texts(bf16, [text]) for text in TEXTS])  # alone, as the reference runs
    labels = config_labels(checkpoint)
    bf16_reference = np.array([[row[label] for label in labels] for row in softmax_by_label(checkpoint, TEXTS, bf16=True)])
    fp32_reference = np.array([[row[label] for label in labels] for row in softmax_by_label(checkpoint, TEXTS)])
    assert np.abs(fp32_reference - bf16_reference).max() > 1e-4, "bf16 rounding does not show on these texts"
    assert np.abs(answers - bf16_reference).max() <= 1e-5
    assert np.abs(answers - fp32_reference).max() <= 0.05  # still the same model


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
        from model.engines import load_engine, predict_texts
        from model.settings import Settings
        engine = load_engine(Settings(model_dir={str(artifact)!r}))
        engine.warmup()
        print(predict_texts(engine, ["fine"]).shape)
        print(sorted(m for m in ("torch", "transformers", "huggingface_hub", "onnx", "model.builder") if m in sys.modules))
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["(1, 3)", "[]"]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_minilm_build_passes_the_int8_gate_on_this_cpu(minilm_artifact):
    """A real trained model: the build ships int8 because it passes the gate, measured again here."""
    from model.cpu import int8_isa

    manifest = json.loads((minilm_artifact / "manifest.json").read_text())
    assert manifest["recommended_precision"] == "int8", manifest["int8"]["reason"]
    decision = manifest["int8"]
    assert decision["shipped"] and decision["gate"]["verdict"]["passed"]
    assert decision["measured_on"]["isa"] == int8_isa() and decision["data"]["verdict"] == "sst2-dev.tsv"
    assert len(decision["kept_fp32"]) <= decision["weight_matmuls"] // 2
    assert_recipe_is_the_one_recorded(minilm_artifact / "model.int8.onnx", decision)
    served = engine(minilm_artifact, precision="auto")
    assert served.description == "onnx-int8"
    result = check_engines(engine(minilm_artifact, precision="fp32"), served, read_text_set(VERDICT_SET))
    assert result.passed, result.summary()
    assert result.figures["alone"]["accuracy"] >= 0.85  # the model is a real one: fp32 scores 0.874


def assert_recipe_is_the_one_recorded(int8_path: Path, decision: dict) -> None:
    """The shipped graph holds the outlier-channel ops of the remedy the manifest names, and no other's.

    The search tries the cheaper remedy first: the attempts run plain, smoothed, then split.
    """
    import onnx

    from model.builder.outliers import OUTLIER_SUFFIX

    names = [node.name for node in onnx.load(str(int8_path)).graph.node]
    outliers = decision["outlier_channels"]
    smoothing_muls = sum(name.endswith("/smooth_outliers") for name in names)
    fp32_parts = sum(name.endswith(OUTLIER_SUFFIX) for name in names)
    assert (smoothing_muls > 0) == (outliers["remedy"] == "smoothed")
    assert fp32_parts == (len(outliers["per_matmul"]) if outliers["remedy"] == "fp32" else 0)
    order = [None, "smoothed", "fp32"]
    tried = [order.index(attempt["outlier_channels"]) for attempt in decision["attempts"]]
    assert tried == sorted(tried) and tried[0] == 0
