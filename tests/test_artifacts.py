"""Finding the model: MODEL_DIR / MODEL_ID resolution, clear one-line errors, artifacts built from checkpoints."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from model.artifacts import MANIFEST_NAME, resolve_model
from model.settings import ConfigurationError, Settings
from tests.reference import config_labels, softmax_by_label

REPO = Path(__file__).resolve().parents[1]

# Runs resolve_model in a fresh interpreter and prints the error line, if any.
RESOLVE_SCRIPT = textwrap.dedent("""
    import sys
    {prelude}
    from model.artifacts import resolve_model
    from model.settings import ConfigurationError, Settings
    try:
        resolved = resolve_model(Settings())
    except ConfigurationError as error:
        print(error)
        sys.exit(2)
    print("resolved", resolved.artifact_dir)
""")


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint_3labels) -> Path:
    """Shared by the tests of this module, which never modify it (see checkpoint_copy)."""
    return tiny_checkpoint_3labels


@pytest.fixture()
def checkpoint_copy(checkpoint, tmp_path) -> Path:
    """A private copy a test may damage."""
    return Path(shutil.copytree(checkpoint, tmp_path / "copy"))


def resolve_error(**settings) -> str:
    with pytest.raises(ConfigurationError) as caught:
        resolve_model(Settings(**settings))
    message = str(caught.value)
    assert "\n" not in message and message
    return message


def resolve_in_subprocess(env: dict[str, str], prelude: str = "") -> subprocess.CompletedProcess:
    script = RESOLVE_SCRIPT.format(prelude=prelude)
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_plain_checkpoint_labels_and_fingerprint(checkpoint):
    resolved = resolve_model(Settings(model_dir=checkpoint, backend="torch"))
    assert resolved.labels == ("joy", "anger", "neutral")
    weights_sha256 = hashlib.sha256((checkpoint / "model.safetensors").read_bytes()).hexdigest()
    assert resolved.fingerprint_sha256 == weights_sha256
    assert resolved.fingerprint == weights_sha256[:12]
    assert resolved.max_length == 512
    assert resolved.checkpoint_dir == checkpoint


def test_missing_model_dir_is_one_clear_line(tmp_path):
    message = resolve_error(model_dir=tmp_path / "nowhere")
    assert "MODEL_DIR" in message and "does not exist" in message


def test_directory_without_a_model_is_rejected(tmp_path):
    assert "neither a built artifact" in resolve_error(model_dir=tmp_path)


def test_corrupt_weights_are_rejected(checkpoint_copy):
    weights = checkpoint_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    message = resolve_error(model_dir=checkpoint_copy, backend="torch")
    assert "model.safetensors" in message and "corrupt" in message


def test_missing_tokenizer_is_rejected(checkpoint_copy):
    (checkpoint_copy / "tokenizer.json").unlink()
    assert "tokenizer.json" in resolve_error(model_dir=checkpoint_copy, backend="torch")


def test_missing_id2label_is_rejected(checkpoint_copy):
    config = json.loads((checkpoint_copy / "config.json").read_text())
    del config["id2label"]
    (checkpoint_copy / "config.json").write_text(json.dumps(config))
    assert "id2label" in resolve_error(model_dir=checkpoint_copy, backend="torch")


def test_plain_checkpoint_is_served_from_the_artifact_built_once_into_the_cache(checkpoint, tmp_path, caplog):
    from model.builder.export import build_into_cache

    settings = Settings(model_dir=checkpoint, backend="onnx", precision="fp32", artifact_cache_dir=tmp_path)
    assert "python -m model build --model-dir" in resolve_error(**settings.model_dump())
    target, manifest = build_into_cache(checkpoint, tmp_path, precisions=("fp32", "int8"))
    manifest_time = (target / MANIFEST_NAME).stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="model.builder"):
        again, _ = build_into_cache(checkpoint, tmp_path, precisions=("fp32", "int8"))
    assert again == target and "built earlier" in caplog.text
    assert (target / MANIFEST_NAME).stat().st_mtime_ns == manifest_time
    resolved = resolve_model(settings)
    assert resolved.artifact_dir == target and target.parent == tmp_path
    assert resolved.labels == ("joy", "anger", "neutral") and resolved.checkpoint_dir == checkpoint
    assert resolved.recommended_precision == manifest["recommended_precision"]


def test_an_artifact_an_older_build_left_in_the_cache_is_not_served(checkpoint, tmp_path, tiny_artifact):
    """After an upgrade the service builds again: what older build code wrote into the cache, in
    the layout it used (ARTIFACT_CACHE_DIR/<fingerprint>/), is not served in place of a new build."""
    fingerprint = resolve_model(Settings(model_dir=checkpoint, backend="torch", precision="fp32")).fingerprint
    shutil.copytree(tiny_artifact, tmp_path / fingerprint)
    settings = Settings(model_dir=checkpoint, backend="onnx", precision="fp32", artifact_cache_dir=tmp_path)
    assert "has not been built into an ONNX artifact" in resolve_error(**settings.model_dump())


def test_corrupt_or_missing_artifact_files_are_detected(checkpoint, tmp_path):
    from model.builder.export import build_artifact
    from model.engines import load_engine

    build_artifact(checkpoint, tmp_path, ("fp32",))
    with pytest.raises(ConfigurationError, match="has no int8 model"):
        load_engine(Settings(model_dir=tmp_path, precision="int8"))
    onnx_file = tmp_path / "model.fp32.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:1000])
    with pytest.raises(ConfigurationError, match="does not match the sha256"):
        load_engine(Settings(model_dir=tmp_path, precision="fp32"))
    onnx_file.unlink()
    with pytest.raises(ConfigurationError, match="is missing model.fp32.onnx"):
        load_engine(Settings(model_dir=tmp_path, precision="fp32"))


def test_torch_backend_needs_a_checkpoint_not_an_artifact(checkpoint, tmp_path):
    from model.builder.export import build_artifact

    artifact = tmp_path / "artifact"
    build_artifact(checkpoint, artifact, ("fp32",))
    assert "BACKEND=torch needs a Hugging Face checkpoint" in resolve_error(model_dir=artifact, backend="torch")


def test_offline_model_id_without_model_dir_says_what_to_set(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "MODEL_ID": "someone/some-model"}
    result = resolve_in_subprocess(env)
    assert result.returncode == 2, result.stderr
    line = result.stdout.strip()
    assert "\n" not in line
    assert "cannot fetch MODEL_ID=someone/some-model" in line and "set MODEL_DIR" in line


def test_plain_checkpoint_without_torch_asks_for_a_built_artifact(checkpoint, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "MODEL_DIR": str(checkpoint), "ARTIFACT_CACHE_DIR": str(tmp_path)}
    # sys.modules[name] = None makes `import name` fail, as in an image without the build extra.
    result = resolve_in_subprocess(env, prelude="sys.modules['torch'] = None")
    assert result.returncode == 2, result.stderr
    assert "python -m model build" in result.stdout and "MODEL_DIR" in result.stdout


def test_build_fails_when_the_onnx_graph_disagrees_with_torch(checkpoint, tmp_path):
    import numpy as np

    from model.builder.export import VERIFY_TEXTS, BuildError, build_artifact, verify
    from model.engines import TextEncoder

    manifest = build_artifact(checkpoint, tmp_path, ("fp32",))
    tokenizer = TextEncoder(tmp_path / "tokenizer.json", 512, "[PAD]")
    agreeing = verify(tmp_path / "model.fp32.onnx", tokenizer, _torch_reference(checkpoint, VERIFY_TEXTS), 1e-3)
    assert agreeing <= 1e-4  # ONNX Runtime fp32 against torch fp32
    assert agreeing == pytest.approx(manifest["precisions"]["fp32"]["max_abs_diff_vs_torch"], abs=1e-6)
    shifted = np.roll(_torch_reference(checkpoint, VERIFY_TEXTS), 1, axis=1)
    with pytest.raises(BuildError, match="differs from PyTorch"):
        verify(tmp_path / "model.fp32.onnx", tokenizer, shifted, 1e-3)


def _torch_reference(checkpoint: Path, texts: list[str]):
    """torch's softmax of the checkpoint, computed here (not with the serving engines)."""
    import numpy as np

    labels = config_labels(checkpoint)
    return np.array([[row[label] for label in labels] for row in softmax_by_label(checkpoint, texts)], dtype=np.float32)
