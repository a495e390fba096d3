"""Build an ONNX artifact from a Hugging Face checkpoint: export, verify, quantize, manifest.

Needs the `build` extra (torch, transformers, onnx); the serving image never imports this.

- fp32: torch.onnx.export with the TorchScript exporter (dynamo=False): in torch 2.13 it
  exports BERT/DistilBERT classifiers correctly, writes a single self-contained file and is
  3-25x faster than the dynamo exporter (which also works). Tracing can freeze Python
  branches, so the export is checked against PyTorch on real sentences, alone and in a
  padded batch, and the build fails if any probability differs by more than 1e-3.
- int8: onnxruntime.quantization; see INT8_RECIPE and docs/engine.md for the choice.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np

from model.artifacts import MANIFEST_NAME, ONNX_NAMES, TOKENIZER_NAME, inspect_checkpoint, sha256_of
from model.engines import accepted_inputs, encode, load_tokenizer, softmax

log = logging.getLogger(__name__)

OPSET = 17
FP32_TOLERANCE = 1e-3
INT8_RECIPES = ("dynamic-default", "dynamic-per-channel", "dynamic-per-channel-late-ffn")
INT8_RECIPE = "dynamic-per-channel-late-ffn"

# Sentences of different lengths and styles, run alone and as one padded batch.
VERIFY_TEXTS = [
    "a charming and often affecting journey.",
    "unflinchingly bleak and desperate",
    "The acting is wooden, the plot is predictable and the jokes fall flat; I wanted my two hours back!",
    "good",
    "it's not a masterpiece, but it is never boring and the final scene is genuinely moving.",
    "Worst. Film. Ever.",
    "an engaging, witty script with lively performances from the whole cast",
    "i did not think it would be this good ... and yet it was",
]


class BuildError(RuntimeError):
    """The export or its verification failed; the artifact must not be used."""


def build_artifact(
    checkpoint_dir: Path,
    out_dir: Path,
    precisions: tuple[str, ...] = ("fp32", "int8"),
    model_id: str | None = None,
    revision: str | None = None,
    int8_recipe: str = INT8_RECIPE,
) -> dict:
    """Write out_dir/{model.<precision>.onnx, tokenizer.json, manifest.json}; return the manifest."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()

    unknown = set(precisions) - set(ONNX_NAMES)
    if unknown or not precisions:
        raise BuildError(f"unknown precisions {sorted(unknown)}; choose from {sorted(ONNX_NAMES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="checkpoint-", dir=out) as staging:
        checkpoint = with_fast_tokenizer(Path(checkpoint_dir), Path(staging))
        source = inspect_checkpoint(checkpoint, model_id=model_id or Path(checkpoint_dir).resolve().name, revision=revision)
        network = AutoModelForSequenceClassification.from_pretrained(checkpoint_dir).eval()
        return _export_and_quantize(network, source, out, precisions, int8_recipe)


def with_fast_tokenizer(checkpoint_dir: Path, staging: Path) -> Path:
    """The checkpoint, with a tokenizer.json converted from its slow tokenizer files when it has none.

    Some hub checkpoints, the default DistilBERT among them, ship only vocab.txt and
    tokenizer_config.json. The service tokenizes with the `tokenizers` library, so the build
    converts them once (transformers' own conversion) into a view of the checkpoint.
    """
    if (checkpoint_dir / TOKENIZER_NAME).is_file():
        return checkpoint_dir
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir, use_fast=True)
    except Exception as error:  # any failure means the same thing: no usable tokenizer files
        raise BuildError(f"checkpoint {checkpoint_dir} has no {TOKENIZER_NAME} and no slow tokenizer to convert ({error})") from None
    if not tokenizer.is_fast:
        raise BuildError(f"checkpoint {checkpoint_dir} has no {TOKENIZER_NAME} and its tokenizer has no fast version")
    for item in checkpoint_dir.iterdir():
        (staging / item.name).symlink_to(item.resolve())
    tokenizer.backend_tokenizer.save(str(staging / TOKENIZER_NAME))
    log.info("converted the slow tokenizer of %s to %s", checkpoint_dir, TOKENIZER_NAME)
    return staging


def _export_and_quantize(network, source, out: Path, precisions: tuple[str, ...], int8_recipe: str) -> dict:
    tokenizer = load_tokenizer(source.tokenizer_path, source.max_length, source.pad_token)
    input_names = accepted_inputs(network)

    fp32_path = out / ONNX_NAMES["fp32"]
    export_fp32(network, tokenizer, input_names, fp32_path)
    reference = torch_probabilities(network, tokenizer, input_names, VERIFY_TEXTS)
    checks = {"fp32": verify(fp32_path, tokenizer, reference, FP32_TOLERANCE)}
    if "int8" in precisions:
        int8_path = out / ONNX_NAMES["int8"]
        quantize_int8(fp32_path, int8_path, int8_recipe)
        checks["int8"] = verify(int8_path, tokenizer, reference, tolerance=None)
    if "fp32" not in precisions:
        fp32_path.unlink()
    shutil.copyfile(source.tokenizer_path, out / TOKENIZER_NAME)
    manifest = {
        "model_id": source.model_id,
        "revision": source.revision,
        "fingerprint": source.fingerprint_sha256,
        "labels": list(source.labels),
        "max_length": source.max_length,
        "pad_token": source.pad_token,
        "inputs": input_names,
        "precisions": {
            precision: {
                "file": ONNX_NAMES[precision],
                "sha256": sha256_of([out / ONNX_NAMES[precision]]),
                "max_abs_diff_vs_torch": checks[precision],
                **({"recipe": int8_recipe} if precision == "int8" else {}),
            }
            for precision in precisions
        },
        "tools": tool_versions(),
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log.info("built %s (%s) into %s", source.model_id, ",".join(precisions), out)
    return manifest


def export_fp32(network, tokenizer, input_names: list[str], path: Path) -> None:
    """torch.onnx.export with dynamic batch and sequence axes; output `logits`."""
    import torch

    # Trace with a padded batch of two, so the attention-mask path is the one recorded.
    sample = encode(tokenizer, VERIFY_TEXTS[:2])
    args = tuple(torch.from_numpy(sample[name]) for name in input_names)
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names} | {"logits": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        # Expected: the TorchScript exporter's deprecation notice and tracer warnings about
        # Python branches; the verification below is what guards the traced graph.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=UserWarning)  # notes on how aten::index is exported
        torch.onnx.export(
            network, args, str(path), input_names=input_names, output_names=["logits"],
            dynamic_axes=axes, opset_version=OPSET, dynamo=False,
        )


def torch_probabilities(network, tokenizer, input_names: list[str], texts: list[str]) -> np.ndarray:
    import torch

    inputs = encode(tokenizer, texts)
    with torch.inference_mode():
        logits = network(**{name: torch.from_numpy(inputs[name]) for name in input_names}).logits
    return softmax(logits.float().numpy())


def verify(path: Path, tokenizer, reference: np.ndarray, tolerance: float | None) -> float:
    """Largest |Δp| against PyTorch, texts alone and batched; above `tolerance` fails the build."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(texts: list[str]) -> np.ndarray:
        inputs = encode(tokenizer, texts)
        return softmax(session.run(["logits"], {name: inputs[name] for name in names})[0])

    batched = run(VERIFY_TEXTS)
    alone = np.concatenate([run([text]) for text in VERIFY_TEXTS])
    worst = float(max(np.abs(batched - reference).max(), np.abs(alone - reference).max()))
    if tolerance is not None and worst > tolerance:
        raise BuildError(f"{path.name} differs from PyTorch by {worst:.2e} in probability (limit {tolerance:.0e})")
    return worst


def quantize_int8(fp32_path: Path, int8_path: Path, recipe: str) -> None:
    """Dynamic int8 quantization with onnxruntime.quantization (signed int8 weights).

    Recipes (measured in docs/engine.md):
    "dynamic-default": ONNX Runtime's defaults (per-tensor weight scales, every supported op).
    "dynamic-per-channel": per-channel weight scales on the weight MatMuls only; attention
        score MatMuls (activation x activation), embeddings, pooler and classifier stay fp32.
    "dynamic-per-channel-late-ffn": as above, and the feed-forward MatMuls of the first half
        of the layers stay fp32 too (they are the most sensitive to quantization).
    """
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    if recipe not in INT8_RECIPES:
        raise BuildError(f"unknown int8 recipe {recipe!r}; choose from {INT8_RECIPES}")
    # The quantizer's recommended pre-processing: ONNX shape inference and graph clean-up.
    # (Symbolic shape inference gives up on the dynamic sequence axis; it is not needed here.)
    prepared = int8_path.with_suffix(".prepared.onnx")
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    try:
        if recipe == "dynamic-default":
            quantize_dynamic(prepared, int8_path, weight_type=QuantType.QInt8)
        else:
            keep_fp32 = fp32_matmuls(prepared, keep_early_ffn=recipe == "dynamic-per-channel-late-ffn")
            quantize_dynamic(
                prepared, int8_path, weight_type=QuantType.QInt8, per_channel=True,
                op_types_to_quantize=["MatMul"], nodes_to_exclude=keep_fp32,
            )
    finally:
        prepared.unlink(missing_ok=True)


def fp32_matmuls(path: Path, keep_early_ffn: bool) -> list[str]:
    """MatMul nodes to leave in fp32.

    Always: MatMuls whose second input is computed rather than a weight (attention scores and
    mixing). With keep_early_ffn: the feed-forward MatMuls (non-square weights, hidden <->
    intermediate) of the encoder layers in the first half of the stack.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {initializer.name: tuple(initializer.dims) for initializer in graph.initializer}
    matmuls = [node for node in graph.node if node.op_type == "MatMul"]
    keep = [node.name for node in matmuls if node.input[1] not in weights]
    layers = [index for node in matmuls if (index := layer_index(node.name)) is not None]
    if keep_early_ffn and layers:
        half = (max(layers) + 1) / 2
        for node in matmuls:
            shape, index = weights.get(node.input[1]), layer_index(node.name)
            if shape and len(shape) == 2 and shape[0] != shape[1] and index is not None and index < half:
                keep.append(node.name)
    return keep


def layer_index(node_name: str) -> int | None:
    """Encoder layer of a node from the exporter's module path (".../layer.3/...")."""
    match = re.search(r"layer\.(\d+)/", node_name)
    return int(match.group(1)) if match else None


def tool_versions() -> dict[str, str]:
    versions = {}
    for package in ("torch", "transformers", "onnx", "onnxruntime", "tokenizers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions
