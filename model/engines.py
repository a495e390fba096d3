"""Inference engines: one interface, ONNX Runtime for serving, PyTorch as the reference.

Both engines tokenize with the same `tokenizers` tokenizer.json (truncate to
min(MAX_SEQUENCE_TOKENS, the model's limit), pad to the longest text of the batch), so
they see identical token ids. torch and transformers are imported only inside TorchEngine;
`model.builder` (export, quantization) is never imported from here.
"""

from __future__ import annotations

import logging
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence, Sized
from pathlib import Path
from typing import Protocol

import numpy as np
from tokenizers import Encoding, Tokenizer

from model.artifacts import ResolvedModel, resolve_model
from model.cpu import int8_isa
from model.settings import AUTO_PRECISION, ConfigurationError, Settings

log = logging.getLogger(__name__)

WARMUP_TEXTS = ["warming up the engine", "a second, somewhat longer sentence to pad the batch"]


class Engine(Protocol):
    """What the batcher, the predictor and the command line use; the ONNX, torch and test engines have it.

    Tokenizing and computing are separate steps, so the batcher tokenizes each text once (it
    needs the token counts to form batches) and hands the same encodings to the engine.
    """

    labels: tuple[str, ...]  # config id2label, in index order
    description: str  # e.g. "onnx-int8"
    max_tokens: int  # texts are truncated to this many tokens

    def tokenize(self, texts: list[str]) -> Sequence[Sized]:
        """One encoding per text, truncated, not padded; len(encoding) is its token count."""

    def predict_encoded(self, encodings: Sequence[Sized]) -> np.ndarray:
        """Probabilities, shape (len(encodings), len(labels)), float32."""

    def warmup(self) -> None: ...


def predict_texts(engine: Engine, texts: list[str]) -> np.ndarray:
    """Tokenize and score in one step (command line, tests, warm-up)."""
    return engine.predict_encoded(engine.tokenize(texts))


def load_engine(settings: Settings, resolved: ResolvedModel | None = None) -> OnnxEngine | TorchEngine:
    """The engine the settings ask for (BACKEND, PRECISION; PRECISION=auto follows the manifest)."""
    resolved = resolved or resolve_model(settings)
    threads = engine_threads(settings)
    if settings.backend == "onnx":
        precision = resolved.recommended_precision if settings.precision == AUTO_PRECISION else settings.precision
        return OnnxEngine(resolved, precision, settings.max_sequence_tokens, threads)
    precision = "fp32" if settings.precision == AUTO_PRECISION else settings.precision
    return TorchEngine(resolved, precision, settings.max_sequence_tokens, threads)


# --- shared pieces -----------------------------------------------------------------------------


class TextEncoder:
    """tokenizer.json with truncation to max_tokens; batches are padded here, to their longest text."""

    def __init__(self, path: Path, max_tokens: int, pad_token: str) -> None:
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:  # the Rust side raises a bare Exception for any parse problem
            raise ConfigurationError(f"cannot read tokenizer {path}: {error}") from None
        pad_id = self.tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ConfigurationError(f"tokenizer {path} has no padding token {pad_token!r}")
        self.pad_id = pad_id
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_tokens)

    def tokenize(self, texts: list[str]) -> list[Encoding]:
        return self.tokenizer.encode_batch(texts) if texts else []

    def inputs(self, encodings: Sequence[Encoding]) -> dict[str, np.ndarray]:
        """int64 input_ids, attention_mask, token_type_ids, shape (texts, longest), padded on the right."""
        longest = max((len(e) for e in encodings), default=0)
        shape = (len(encodings), longest)
        arrays = {"input_ids": np.full(shape, self.pad_id, dtype=np.int64),
                  "attention_mask": np.zeros(shape, dtype=np.int64), "token_type_ids": np.zeros(shape, dtype=np.int64)}
        for row, encoding in enumerate(encodings):
            length = len(encoding)
            arrays["input_ids"][row, :length] = encoding.ids
            arrays["attention_mask"][row, :length] = 1
            arrays["token_type_ids"][row, :length] = encoding.type_ids
        return arrays

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        return self.inputs(self.tokenize(texts))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, stable for large logits (subtract the row maximum)."""
    shifted = logits.astype(np.float32) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota readable: the affinity mask is the limit
    return cpus


def engine_threads(settings: Settings) -> int:
    """INTRA_OP_THREADS, or the CPUs shared evenly between the Gunicorn workers."""
    if settings.intra_op_threads:
        return settings.intra_op_threads
    return max(1, available_cpus() // settings.web_concurrency)


class _TokenizingEngine(ABC):
    """Tokenizer handling common to both engines; subclasses turn token ids into logits."""

    def __init__(self, resolved: ResolvedModel, max_sequence_tokens: int) -> None:
        self.model = resolved
        self.labels = resolved.labels
        self.max_tokens = min(max_sequence_tokens, resolved.max_length)
        self.encoder = TextEncoder(resolved.tokenizer_path, self.max_tokens, resolved.pad_token)

    def tokenize(self, texts: list[str]) -> list[Encoding]:
        return self.encoder.tokenize(texts)

    def predict_encoded(self, encodings: Sequence[Encoding]) -> np.ndarray:
        if not encodings:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return softmax(self.logits(self.encoder.inputs(encodings)))

    @abstractmethod
    def logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Raw scores, shape (batch, len(labels))."""

    def warmup(self) -> None:
        predict_texts(self, WARMUP_TEXTS)


# --- ONNX Runtime (serving) --------------------------------------------------------------------


class OnnxEngine(_TokenizingEngine):
    """ONNX Runtime on CPU over a built artifact; the only engine the serving image needs."""

    def __init__(self, resolved: ResolvedModel, precision: str, max_sequence_tokens: int, threads: int,
                 path: Path | None = None) -> None:
        """`path` overrides the artifact's file of `precision` (the build measures candidate files)."""
        import onnxruntime

        super().__init__(resolved, max_sequence_tokens)
        self.description = f"onnx-{precision}"
        path = path or resolved.onnx_path(precision)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # warnings about unused initializers etc. are noise at start-up
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for bad files
            raise ConfigurationError(f"cannot load ONNX model {path}: {str(error).splitlines()[0]}") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        log.debug("loaded %s from %s (%d threads, int8 kernels: %s)", self.description, path, threads, int8_isa())

    def logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(["logits"], {name: inputs[name] for name in self.input_names})[0]


# --- PyTorch (reference) -----------------------------------------------------------------------


class TorchEngine(_TokenizingEngine):
    """transformers on PyTorch over the plain checkpoint: the numerical reference, fp32 or bf16."""

    def __init__(self, resolved: ResolvedModel, precision: str, max_sequence_tokens: int, threads: int) -> None:
        try:
            import torch
            from transformers import AutoModelForSequenceClassification
        except ImportError:
            raise ConfigurationError("BACKEND=torch needs torch and transformers (the build extra)") from None
        if resolved.checkpoint_dir is None:
            raise ConfigurationError("BACKEND=torch needs a Hugging Face checkpoint, not a built ONNX artifact")
        super().__init__(resolved, max_sequence_tokens)
        self.description = f"torch-{precision}"
        self.torch = torch
        self.autocast = precision == "bf16"
        torch.set_num_threads(threads)
        try:
            self.network = AutoModelForSequenceClassification.from_pretrained(resolved.checkpoint_dir).eval()
        except Exception as error:  # transformers raises many types for unreadable checkpoints
            raise ConfigurationError(f"cannot load checkpoint {resolved.checkpoint_dir}: {str(error).splitlines()[0]}") from None
        self.input_names = accepted_inputs(self.network)

    def logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        torch = self.torch
        tensors = {name: torch.from_numpy(inputs[name]) for name in self.input_names}
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            return self.network(**tensors).logits.float().numpy()


def accepted_inputs(network) -> list[str]:
    """The tokenizer outputs the model's forward() takes (DistilBERT has no token_type_ids)."""
    import inspect

    parameters = inspect.signature(network.forward).parameters
    return [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in parameters]
