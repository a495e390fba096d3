"""`python -m model ...` as an operator runs it: build, evaluate, bench, random-checkpoint, settings."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from model.builder.checkpoints import build_random_checkpoint
from model.engines import load_engine, predict_texts
from model.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint) -> Path:
    return tiny_checkpoint


@pytest.fixture(scope="module")
def artifact(tiny_artifact) -> Path:
    """Built by conftest as `python -m model build --model-dir <tiny checkpoint> --precision fp32,int8` builds it."""
    return tiny_artifact


@pytest.fixture()
def labelled_tsv(tmp_path) -> Path:
    rows = ["a charming and often affecting journey .\t1", "unflinchingly bleak and desperate\t0",
            "the funniest film of the year\t1", "a tedious , predictable mess\t0"]
    path = tmp_path / "labelled.tsv"
    path.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_build_writes_a_valid_artifact_and_manifest(checkpoint, artifact):
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["model_id"] == checkpoint.name
    assert manifest["fingerprint"] == sha256(checkpoint / "model.safetensors")
    assert manifest["labels"] == ["NEGATIVE", "POSITIVE"]
    assert manifest["max_length"] == 512
    assert manifest["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert set(manifest["tools"]) >= {"torch", "transformers", "onnxruntime", "onnx", "tokenizers"}
    for precision, entry in manifest["precisions"].items():
        assert entry["file"] == f"model.{precision}.onnx" and entry["sha256"] == sha256(artifact / entry["file"])
    assert manifest["precisions"]["fp32"]["max_abs_diff_vs_torch"] <= 1e-3
    assert sha256(artifact / "tokenizer.json") == sha256(checkpoint / "tokenizer.json")
    decision = manifest["int8"]
    assert decision["recipe"] == "dynamic-per-channel-7bit" and decision["measured_on"]["isa"]
    assert ("int8" in manifest["precisions"]) == decision["shipped"] == (manifest["recommended_precision"] == "int8")
    assert decision["gate"]["calibration"]["figures"]["alone"]["texts"] == 600
    for precision in manifest["precisions"]:
        probabilities = predict_texts(load_engine(Settings(model_dir=artifact, precision=precision)), ["fine"])
        assert probabilities.shape == (1, 2)


def test_build_of_one_precision_writes_only_that_file(checkpoint, tmp_path):
    result = cli("build", "--model-dir", str(checkpoint), "--out", str(tmp_path), "--precision", "fp32")
    assert result.returncode == 0, result.stderr
    assert f"artifact {tmp_path}" in result.stdout
    assert not (tmp_path / "model.int8.onnx").exists()
    assert list(json.loads((tmp_path / "manifest.json").read_text())["precisions"]) == ["fp32"]


def test_build_from_a_directory_that_is_not_a_checkpoint_fails_in_one_line(tmp_path):
    result = cli("build", "--model-dir", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --model-dir")


def test_evaluate_prints_accuracy_agreement_and_batch_drift(artifact, labelled_tsv):
    result = cli("evaluate", "--model-dir", str(artifact), "--data", str(labelled_tsv), "--batch-size", "3")
    assert result.returncode == 0, result.stderr
    assert "4 texts" in result.stdout
    assert "int8 kernels" in result.stdout.splitlines()[0]
    assert "onnx-int8" in result.stdout or "onnx-fp32 vs onnx-fp32" in result.stdout  # the recommended precision
    assert "int8 gate" in result.stdout and "confident flips" in result.stdout


def test_bench_prints_a_row_per_variant_and_batch_size(artifact, labelled_tsv):
    from model.cpu import int8_isa

    result = cli("bench", "--model-dir", str(artifact), "--batch-sizes", "1,4", "--seconds", "0.2",
                 "--variants", "fp32,int8-all", "--data", str(labelled_tsv))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert int8_isa() in lines[0]
    rows = [line.split() for line in lines[2:] if line.startswith("onnx")]
    assert [(row[0], row[1], row[3]) for row in rows] == [
        ("onnx", "fp32", "1"), ("onnx", "fp32", "4"), ("onnx", "int8-all", "1"), ("onnx", "int8-all", "4")]
    assert all(float(row[4]) > 0 and row[-1] == int8_isa().split()[-1] for row in rows)


def test_random_checkpoint_command_uses_the_given_labels(tmp_path):
    result = cli("random-checkpoint", "--out", str(tmp_path), "--labels", "joy,anger,neutral")
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["id2label"] == {"0": "joy", "1": "anger", "2": "neutral"}
    assert (tmp_path / "tokenizer.json").is_file() and (tmp_path / "model.safetensors").is_file()


def test_settings_command_lists_every_variable():
    result = cli("settings")
    assert result.returncode == 0, result.stderr
    for name in Settings.model_fields:
        assert f"`{name.upper()}`" in result.stdout


def test_build_converts_a_slow_only_tokenizer(checkpoint, tmp_path):
    """Hub checkpoints such as the default DistilBERT ship vocab.txt but no tokenizer.json."""
    from tokenizers import Tokenizer

    slow_only = tmp_path / "slow-only"
    slow_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        (slow_only / name).write_bytes((checkpoint / name).read_bytes())
    original = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    vocab = sorted(original.get_vocab().items(), key=lambda item: item[1])
    (slow_only / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")
    (slow_only / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}), encoding="utf-8")

    result = cli("build", "--model-dir", str(slow_only), "--out", str(tmp_path / "art"), "--precision", "fp32")
    assert result.returncode == 0, result.stderr

    converted = Tokenizer.from_file(str(tmp_path / "art" / "tokenizer.json"))
    for text in ("A charming, often affecting journey!", "unflinchingly bleak and desperate", "Worst. Film. Ever."):
        assert converted.encode(text).ids == original.encode(text).ids
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == ["manifest.json", "model.fp32.onnx", "tokenizer.json"]


# --- the build's int8 fallback on a quantization-hostile checkpoint ----------------------------


@pytest.mark.slow
@pytest.mark.parametrize("hostile_roles", [("layer.0/ffn.in", "layer.1/value"), ("layer.0/query", "layer.0/key",
                         "layer.0/value", "layer.0/ffn.in", "layer.1/query", "layer.1/key", "layer.1/value")])
def test_build_falls_back_when_int8_fails_the_gate(tmp_path, hostile_roles):
    """Two hostile MatMuls are kept in fp32; seven of the twelve (over half) leave int8 out."""
    checkpoint = build_random_checkpoint(tmp_path / "hostile", shape="tiny", hostile_roles=hostile_roles)
    result = cli("build", "--model-dir", str(checkpoint), "--out", str(tmp_path / "art"), "--precision", "int8",
                 timeout=600)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    decision = manifest["int8"]
    assert decision["attempts"][0]["kept_fp32"] == 0 and "FAIL" in decision["attempts"][0]["calibration"]
    assert "Quantization parameters for tensor" not in result.stderr
    if len(hostile_roles) == 2:
        assert decision["shipped"] and manifest["recommended_precision"] == "int8"
        assert {"layer.0/ffn.in", "layer.1/attention.value"} <= set(decision["kept_fp32_roles"])
        assert list(manifest["precisions"]) == ["int8"]
        assert "int8 shipped" in result.stdout and "layer.1/attention.value" in result.stdout
    else:
        assert not decision["shipped"] and manifest["recommended_precision"] == "fp32"
        assert list(manifest["precisions"]) == ["fp32"] and not (tmp_path / "art" / "model.int8.onnx").exists()
        assert "int8 NOT shipped" in result.stdout and "fp32 only" in decision["reason"]
    served = load_engine(Settings(model_dir=tmp_path / "art"))
    assert served.description == f"onnx-{manifest['recommended_precision']}"
