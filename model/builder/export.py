"""Build an ONNX artifact from a Hugging Face checkpoint: export, verify, quantize, manifest.

Needs the `build` extra (torch, transformers, onnx); serving code never imports this.

- fp32: torch.onnx.export with the TorchScript exporter (dynamo=False): in torch 2.13 it
  exports BERT/DistilBERT classifiers correctly, writes a single self-contained file and is
  3-25x faster than the dynamo exporter (which also works). Tracing can freeze Python
  branches, so the export is checked against PyTorch on real sentences, alone and in a
  padded batch, and the build fails if any probability differs by more than 1e-3.
- int8: 7-bit weights; how outlier channels are treated and which MatMuls stay fp32 are chosen
  per model by the int8 gate (model/builder/recipe.py); int8 is shipped only if it passes, and
  the manifest says why.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import tempfile
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np

from model.artifacts import (
    MANIFEST_NAME,
    ONNX_NAMES,
    TOKENIZER_NAME,
    ResolvedModel,
    cached_artifact_dir,
    checkpoint_fingerprint,
    inspect_checkpoint,
    sha256_of,
)
from model.builder.gate import CALIBRATION_SET, VERDICT_SET, read_text_set
from model.builder.phases import phase
from model.builder.recipe import RecipeSearch
from model.engines import TextEncoder, accepted_inputs, softmax

log = logging.getLogger(__name__)

OPSET = 17
FP32_TOLERANCE = 1e-3

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
    calibration_data: Path = CALIBRATION_SET,
    verdict_data: Path = VERDICT_SET,
) -> dict:
    """Write out_dir/{model.<precision>.onnx, tokenizer.json, manifest.json}; return the manifest.

    int8 is written only when it passes the int8 gate; otherwise the artifact holds fp32 (even
    when only int8 was asked for) and the manifest's "int8" entry says why.
    """
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
        texts = {"calibration": read_text_set(calibration_data), "verdict": read_text_set(verdict_data)}
        return _export_and_quantize(network, source, out, precisions, texts)


def build_into_cache(checkpoint_dir: Path, cache_dir: Path, **options) -> tuple[Path, dict]:
    """Build a plain checkpoint into cache_dir/<fingerprint>-b<generation>/ once; later calls find it there.

    A file lock makes concurrent starts build once: the others wait, then find the finished
    artifact. The build goes to a staging directory renamed into place when complete.
    """
    target = cached_artifact_dir(checkpoint_fingerprint(Path(checkpoint_dir)), cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / MANIFEST_NAME).is_file():
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
            try:
                build_artifact(checkpoint_dir, staging, **options)
                shutil.rmtree(target, ignore_errors=True)  # an incomplete earlier attempt
                staging.rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        else:
            log.info("%s was built earlier into %s", checkpoint_dir, target)
    return target, json.loads((target / MANIFEST_NAME).read_text(encoding="utf-8"))


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


def _export_and_quantize(network, source: ResolvedModel, out: Path, precisions: tuple[str, ...], texts: dict) -> dict:
    encoder = TextEncoder(source.tokenizer_path, source.max_length, source.pad_token)
    input_names = accepted_inputs(network)
    paths = {precision: out / name for precision, name in ONNX_NAMES.items()}
    with phase("export fp32 (torch -> ONNX), checked against torch") as line:
        export_fp32(network, encoder, input_names, paths["fp32"])
        reference = torch_probabilities(network, encoder, input_names, VERIFY_TEXTS)
        checks = {"fp32": verify(paths["fp32"], encoder, reference, FP32_TOLERANCE)}
        line["detail"] = f"max |Δp| {checks['fp32']:.1e}"
    decision = None
    if "int8" in precisions:
        decision = RecipeSearch(source, paths["fp32"], paths["int8"], texts["calibration"], texts["verdict"]).run()
        if decision.shipped:
            checks["int8"] = verify(paths["int8"], encoder, reference, tolerance=None)
    # What was asked for and built; fp32 in place of an int8 that failed the gate.
    shipped = [p for p in ONNX_NAMES if p in checks and (p in precisions or (p == "fp32" and "int8" not in checks))]
    for precision in set(checks) - set(shipped):
        paths[precision].unlink()
    shutil.copyfile(source.tokenizer_path, out / TOKENIZER_NAME)
    manifest = {
        "model_id": source.model_id,
        "revision": source.revision,
        "fingerprint": source.fingerprint_sha256,
        "labels": list(source.labels),
        "max_length": source.max_length,
        "pad_token": source.pad_token,
        "inputs": input_names,
        "recommended_precision": "int8" if "int8" in shipped else "fp32",
        "precisions": {
            precision: {"file": paths[precision].name, "sha256": sha256_of([paths[precision]]),
                        "max_abs_diff_vs_torch": checks[precision]}
            for precision in shipped
        },
        "int8": decision.manifest_entry(texts["calibration"], texts["verdict"]) if decision else None,
        "tools": tool_versions(),
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log.info("built %s (%s) into %s", source.model_id, ",".join(shipped), out)
    return manifest


def export_fp32(network, encoder: TextEncoder, input_names: list[str], path: Path) -> None:
    """torch.onnx.export with dynamic batch and sequence axes; output `logits`."""
    import torch

    # Trace with a padded batch of two, so the attention-mask path is the one recorded.
    sample = encoder.encode(VERIFY_TEXTS[:2])
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


def torch_probabilities(network, encoder: TextEncoder, input_names: list[str], texts: list[str]) -> np.ndarray:
    import torch

    inputs = encoder.encode(texts)
    with torch.inference_mode():
        logits = network(**{name: torch.from_numpy(inputs[name]) for name in input_names}).logits
    return softmax(logits.float().numpy())


def verify(path: Path, encoder: TextEncoder, reference: np.ndarray, tolerance: float | None) -> float:
    """Largest |Δp| against PyTorch, texts alone and batched; above `tolerance` fails the build."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(texts: list[str]) -> np.ndarray:
        inputs = encoder.encode(texts)
        return softmax(session.run(["logits"], {name: inputs[name] for name in names})[0])

    batched = run(VERIFY_TEXTS)
    alone = np.concatenate([run([text]) for text in VERIFY_TEXTS])
    worst = float(max(np.abs(batched - reference).max(), np.abs(alone - reference).max()))
    if tolerance is not None and worst > tolerance:
        raise BuildError(f"{path.name} differs from PyTorch by {worst:.2e} in probability (limit {tolerance:.0e})")
    return worst


def tool_versions() -> dict[str, str]:
    versions = {}
    for package in ("torch", "transformers", "onnx", "onnxruntime", "tokenizers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions
