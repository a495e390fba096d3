"""What to serve: find the model (MODEL_DIR or MODEL_ID), check and fingerprint it.

Two kinds of model directory are accepted:
- a built artifact (manifest.json + model.<precision>.onnx + tokenizer.json), written by
  `python -m model build`; serving it needs only onnxruntime, tokenizers and numpy;
- a plain Hugging Face checkpoint (config.json + weights + tokenizer.json): served by
  BACKEND=torch as it is; with BACKEND=onnx through the artifact built from it into
  ARTIFACT_CACHE_DIR/<fingerprint>-b<generation>/ (gunicorn.conf.py builds it on first start).

This module only finds and checks; building is `model.builder`'s job. It imports only the
standard library at the top (huggingface_hub inside download_checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

from model.settings import ConfigurationError, Settings

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
TOKENIZER_NAME = "tokenizer.json"
ONNX_NAMES = {"fp32": "model.fp32.onnx", "int8": "model.int8.onnx"}
WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")
SHORT_FINGERPRINT = 12
# Raise it whenever `python -m model build` writes something else for the same checkpoint (a new
# int8 recipe, new manifest fields): a service upgraded in place then builds again instead of
# serving what older code left in ARTIFACT_CACHE_DIR (an artifact from before the int8 gate
# carries no recommendation, so PRECISION=auto would quietly serve fp32).
BUILD_GENERATION = 3
HUB_FILES = ["config.json", "*.safetensors", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "vocab.txt"]


@dataclass(frozen=True)
class ResolvedModel:
    """The model to serve and where its files are."""

    model_id: str
    revision: str | None
    fingerprint_sha256: str  # sha256 over the source checkpoint's weight files
    labels: tuple[str, ...]
    max_length: int  # longest token sequence the model accepts (position embeddings)
    pad_token: str
    checkpoint_dir: Path | None  # plain HF checkpoint (torch backend, on-the-fly export)
    artifact_dir: Path | None  # built ONNX artifact
    manifest: dict | None = None

    @property
    def fingerprint(self) -> str:
        """Short hex of the weights' sha256, for display and cache keys."""
        return self.fingerprint_sha256[:SHORT_FINGERPRINT]

    def onnx_path(self, precision: str) -> Path:
        """The ONNX file of `precision`, checked against the manifest's sha256."""
        if self.artifact_dir is None or self.manifest is None:
            raise ConfigurationError(f"{self.model_id} has no ONNX artifact; build one with `python -m model build`")
        entry = self.manifest["precisions"].get(precision)
        if entry is None:
            built = ",".join(self.manifest["precisions"])
            raise ConfigurationError(
                f"artifact {self.artifact_dir} has no {precision} model (it has {built}): "
                f"rebuild with `python -m model build --precisions fp32,{precision}` or set PRECISION to one of {built}"
            )
        path = self.artifact_dir / entry["file"]
        if not path.is_file():
            raise ConfigurationError(f"artifact {self.artifact_dir} is missing {entry['file']}: rebuild it")
        if sha256_of([path]) != entry["sha256"]:
            raise ConfigurationError(f"{path} does not match the sha256 in {MANIFEST_NAME} (corrupt or modified): rebuild it")
        return path

    @property
    def recommended_precision(self) -> str:
        """The manifest's recommendation (int8 only when it passed the build's int8 gate), else fp32."""
        if self.manifest is None:
            return "fp32"
        built = self.manifest["precisions"]
        recommended = self.manifest.get("recommended_precision")
        if recommended in built:
            return recommended
        return "fp32" if "fp32" in built else next(iter(built))

    @property
    def tokenizer_path(self) -> Path:
        return (self.artifact_dir or self.checkpoint_dir) / TOKENIZER_NAME


def sha256_of(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


# --- resolution ----------------------------------------------------------------------------


def resolve_model(settings: Settings) -> ResolvedModel:
    """Find the model the settings name; with BACKEND=onnx make sure an ONNX artifact exists.

    MODEL_DIR wins over MODEL_ID. A plain checkpoint served with BACKEND=onnx needs the artifact
    built from it in ARTIFACT_CACHE_DIR (the server's entry point builds it on first start).
    Every problem is a ConfigurationError with one line.
    """
    resolved = locate_model(settings)
    if settings.backend == "onnx" and resolved.artifact_dir is None:
        resolved = cached_artifact(resolved, settings.artifact_cache_dir)
    if settings.backend == "torch" and resolved.checkpoint_dir is None:
        raise ConfigurationError(
            f"BACKEND=torch needs a Hugging Face checkpoint but MODEL_DIR={settings.model_dir} is a built ONNX artifact: "
            "point MODEL_DIR at the checkpoint or use BACKEND=onnx"
        )
    return resolved


def locate_model(settings: Settings) -> ResolvedModel:
    """MODEL_DIR (artifact or checkpoint), else MODEL_ID through the hub cache; nothing is built."""
    if settings.model_dir is not None:
        return inspect_model_dir(Path(settings.model_dir), env_name="MODEL_DIR")
    checkpoint = download_checkpoint(settings.model_id, settings.model_revision)
    return inspect_checkpoint(checkpoint, model_id=settings.model_id, revision=checkpoint.name)


def inspect_model_dir(path: Path, env_name: str = "MODEL_DIR") -> ResolvedModel:
    """An artifact dir (has manifest.json) or a plain checkpoint dir (has config.json)."""
    if not path.is_dir():
        raise ConfigurationError(f"{env_name}={path} does not exist or is not a directory")
    if (path / MANIFEST_NAME).is_file():
        return inspect_artifact(path)
    if (path / "config.json").is_file():
        return inspect_checkpoint(path, model_id=path.resolve().name, revision=None)
    raise ConfigurationError(
        f"{env_name}={path} is neither a built artifact ({MANIFEST_NAME}) nor a Hugging Face checkpoint (config.json)"
    )


def inspect_artifact(path: Path) -> ResolvedModel:
    manifest = _read_json(path / MANIFEST_NAME)
    missing = {"model_id", "fingerprint", "labels", "max_length", "precisions"} - manifest.keys()
    if missing:
        raise ConfigurationError(f"{path / MANIFEST_NAME} lacks {', '.join(sorted(missing))}: rebuild the artifact")
    if not (path / TOKENIZER_NAME).is_file():
        raise ConfigurationError(f"artifact {path} has no {TOKENIZER_NAME}: rebuild it")
    return ResolvedModel(
        model_id=manifest["model_id"], revision=manifest.get("revision"),
        fingerprint_sha256=manifest["fingerprint"], labels=tuple(manifest["labels"]),
        max_length=int(manifest["max_length"]), pad_token=manifest.get("pad_token", "[PAD]"),
        checkpoint_dir=None, artifact_dir=path, manifest=manifest,
    )


def inspect_checkpoint(path: Path, model_id: str, revision: str | None) -> ResolvedModel:
    """Check a plain checkpoint's files cheaply (no torch) and fingerprint its weights."""
    config = _read_json(path / "config.json")
    fingerprint = checkpoint_fingerprint(path)
    if not (path / TOKENIZER_NAME).is_file():
        raise ConfigurationError(
            f"checkpoint {path} has no {TOKENIZER_NAME} (a fast tokenizer is required: save it with tokenizer.save_pretrained)"
        )
    tokenizer_config = _read_json(path / "tokenizer_config.json") if (path / "tokenizer_config.json").is_file() else {}
    return ResolvedModel(
        model_id=model_id, revision=revision, fingerprint_sha256=fingerprint,
        labels=_labels(config, path), max_length=_max_length(config, tokenizer_config),
        pad_token=str(tokenizer_config.get("pad_token") or "[PAD]"),
        checkpoint_dir=path, artifact_dir=None,
    )


def checkpoint_fingerprint(path: Path) -> str:
    """sha256 over a checkpoint's weight files, after checking that safetensors files are whole."""
    weights = sorted(p for pattern in WEIGHT_GLOBS for p in path.glob(pattern))
    if not weights:
        raise ConfigurationError(f"checkpoint {path} has no weights (model.safetensors or pytorch_model.bin)")
    for weight in weights:
        if weight.suffix == ".safetensors":
            _check_safetensors(weight)
    return sha256_of(weights)


def download_checkpoint(model_id: str, revision: str | None) -> Path:
    """MODEL_ID through the Hugging Face hub cache (honours HF_HOME and HF_HUB_OFFLINE)."""
    hint = "set MODEL_DIR to a local checkpoint or built artifact"
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ConfigurationError(f"MODEL_ID={model_id} needs huggingface_hub, which is not installed: {hint}") from None
    try:
        return Path(snapshot_download(model_id, revision=revision, allow_patterns=HUB_FILES))
    except Exception as error:  # network, offline mode, unknown repo or revision: all mean the same to the operator
        at = f"@{revision}" if revision else ""
        raise ConfigurationError(
            f"cannot fetch MODEL_ID={model_id}{at} from the Hugging Face hub ({type(error).__name__}; offline?): {hint}"
        ) from None


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigurationError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise ConfigurationError(f"{path} is not a JSON object")
    return value


def _check_safetensors(path: Path) -> None:
    """A safetensors file is an 8-byte header length, a JSON header, then the tensor bytes."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            (header_length,) = struct.unpack("<Q", handle.read(8))
            if header_length > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(handle.read(header_length))
        data_end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        if 8 + header_length + data_end != size:
            raise ValueError("tensor data does not fill the file")
    except (struct.error, ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"weights file {path} is corrupt or truncated ({error})") from None


def _labels(config: dict, path: Path) -> tuple[str, ...]:
    id2label = config.get("id2label")
    if not id2label:
        raise ConfigurationError(f"{path / 'config.json'} has no id2label: the labels cannot be named")
    try:
        ordered = sorted((int(index), str(name)) for index, name in id2label.items())
    except ValueError:
        raise ConfigurationError(f"{path / 'config.json'} id2label keys are not integers") from None
    if [index for index, _ in ordered] != list(range(len(ordered))):
        raise ConfigurationError(f"{path / 'config.json'} id2label is not numbered 0..{len(ordered) - 1}")
    return tuple(name for _, name in ordered)


def _max_length(config: dict, tokenizer_config: dict) -> int:
    """Longest input the model takes: position embeddings, or a smaller tokenizer limit."""
    positions = int(config.get("max_position_embeddings") or 512)
    tokenizer_limit = tokenizer_config.get("model_max_length")
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < positions:
        return tokenizer_limit
    return positions


# --- artifacts built from plain checkpoints ----------------------------------------------------


def cached_artifact_dir(fingerprint_sha256: str, cache_dir: Path) -> Path:
    """Where the artifact built from a plain checkpoint lives: ARTIFACT_CACHE_DIR/<fingerprint>-b<N>/,
    N being BUILD_GENERATION, so a newer build never finds an older one's output."""
    return Path(cache_dir).expanduser() / f"{fingerprint_sha256[:SHORT_FINGERPRINT]}-b{BUILD_GENERATION}"


def cached_artifact(source: ResolvedModel, cache_dir: Path) -> ResolvedModel:
    """The artifact built earlier from this plain checkpoint, keeping the checkpoint's id and revision."""
    target = cached_artifact_dir(source.fingerprint_sha256, cache_dir)
    if not (target / MANIFEST_NAME).is_file():
        raise ConfigurationError(
            f"{source.checkpoint_dir} is a plain checkpoint that has not been built into an ONNX artifact: "
            f"run `python -m model build --model-dir {source.checkpoint_dir} --out DIR` and set MODEL_DIR=DIR"
        )
    artifact = inspect_artifact(target)
    log.info("using ONNX artifact %s built from %s", target, source.checkpoint_dir)
    return ResolvedModel(
        model_id=source.model_id, revision=source.revision, fingerprint_sha256=artifact.fingerprint_sha256,
        labels=artifact.labels, max_length=artifact.max_length, pad_token=artifact.pad_token,
        checkpoint_dir=source.checkpoint_dir, artifact_dir=artifact.artifact_dir, manifest=artifact.manifest,
    )
