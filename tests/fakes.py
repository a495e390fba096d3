"""Small deterministic stand-ins for unit tests: an engine for the batcher, cache and predictor, and
a predictor for the HTTP layer.

It honours the Engine protocol of model/engines.py: `tokenize` gives one encoding per text (its
length is the text's word count plus two special tokens), `predict_encoded` scores encodings,
each text from its own sha256 (so a mixed-up answer is visible). Every batch is recorded as
the texts it held, and a test can hold the engine inside a batch (`hold()` / `release()`) to
build up a queue deterministically.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.predictor import Prediction


@dataclass(frozen=True)
class FakeEncoding:
    text: str
    tokens: int

    def __len__(self) -> int:
        return self.tokens


class FakeEngine:
    description = "fake-fp32"
    max_tokens = 512

    def __init__(self, labels=("NEGATIVE", "POSITIVE"), fail_on: str | None = None) -> None:
        self.labels = tuple(labels)
        self.fail_on = fail_on
        self.batches: list[list[str]] = []
        self.tokenized: list[str] = []  # every text tokenize() saw, in order
        self.running = threading.Event()  # set while a batch is inside predict_encoded
        self._gate = threading.Event()
        self._gate.set()
        self._lock = threading.Lock()

    def tokenize(self, texts: list[str]) -> list[FakeEncoding]:
        with self._lock:
            self.tokenized.extend(texts)
        return [FakeEncoding(text, min(len(text.split()) + 2, self.max_tokens)) for text in texts]

    def expected(self, texts: list[str]) -> np.ndarray:
        """The scores predict_encoded gives these texts, whatever their batch."""
        rows = []
        for text in texts:
            digest = hashlib.sha256(text.encode()).digest()
            logits = np.array([digest[i] / 32.0 for i in range(len(self.labels))], dtype=np.float32)
            exp = np.exp(logits - logits.max())
            rows.append(exp / exp.sum())
        return np.array(rows, dtype=np.float32).reshape(len(texts), len(self.labels))

    def predict_encoded(self, encodings: Sequence[FakeEncoding]) -> np.ndarray:
        texts = [encoding.text for encoding in encodings]
        with self._lock:
            self.batches.append(texts)
        self.running.set()
        try:
            self._gate.wait(timeout=30)
            if self.fail_on is not None and self.fail_on in texts:
                raise RuntimeError(f"engine failure on {self.fail_on!r}")
            return self.expected(texts)
        finally:
            self.running.clear()

    def warmup(self) -> None:
        self.predict_encoded(self.tokenize(["warm-up"]))

    def hold(self) -> None:
        """The next batch will wait inside the engine until release()."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()


class FixedPredictor:
    """Stands in for model.predictor.Predictor where the HTTP layer is under test: every text gets
    the same ranked scores, or predict() raises the error it was given. `during`, if set, runs
    inside predict(), to look at the service while a request is being served."""

    model_string = "fixed@000000000000"
    labels = ("NEGATIVE", "POSITIVE")

    def __init__(self, error: Exception | None = None, row=(("POSITIVE", 0.75), ("NEGATIVE", 0.25))) -> None:
        self.error = error
        self.row = list(row)
        self.during = None
        self.seen: list[list[str]] = []
        self.thread_waits: list[float] = []  # the wait for a request thread the HTTP layer passed with each call

    def predict(self, texts, waited_seconds: float = 0.0) -> Prediction:
        self.seen.append(list(texts))
        self.thread_waits.append(waited_seconds)
        if self.during is not None:
            self.during()
        if self.error is not None:
            raise self.error
        return Prediction(scores=[self.row for _ in texts], cache_status="miss")

    def cache_state(self) -> str:
        return "disabled"
