"""What an engine batch costs, measured on the batches the engine runs, on whatever CPU it is.

Every batch pads its texts to the longest, so its time depends on its shape: `texts` rows of
`longest` tokens. Its time is the engine thread's whole turn (the engine call, then handing the
rows to the waiting requests), since that is what the queue waits for. The model fitted here is

    seconds = per_batch + per_token * texts * longest + per_token_pair * texts * longest**2

(a fixed cost per call, the weight matrix products that grow with the padded tokens, and the
attention products that grow with their square), by least squares with coefficients kept
non-negative, over the most recent WINDOW batches. It is refitted every REFIT_EVERY batches, so
it follows the CPU the service landed on and what else runs there. The batcher uses it to pick
the batch with the most real tokens per second, and `tokens_per_second` (real tokens over engine
time in the same window) to predict how long queued work will take.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque

import numpy as np

WINDOW = 256  # batches remembered
REFIT_EVERY = 8  # batches between fits
MIN_SHAPES = 3  # distinct (texts, longest) shapes before a fit is trusted


class BatchCost:
    def __init__(self) -> None:
        self._observed: deque[tuple[int, int, int, float]] = deque(maxlen=WINDOW)  # texts, longest, real, s
        self._lock = threading.Lock()
        self._since_fit = 0
        self.coefficients: np.ndarray | None = None  # per_batch, per_token, per_token_pair

    @property
    def fitted(self) -> bool:
        return self.coefficients is not None

    def observe(self, texts: int, longest: int, real_tokens: int, seconds: float) -> None:
        """One batch the engine ran: its shape, its real (unpadded) tokens and its time."""
        if seconds <= 0:
            return
        with self._lock:
            self._observed.append((texts, longest, real_tokens, seconds))
            self._since_fit += 1
            if self._since_fit >= REFIT_EVERY or not self.fitted:
                self._since_fit = 0
                self._fit()

    def seconds(self, texts: int, longest: int) -> float:
        """Predicted time of a batch of this shape (only meaningful once fitted)."""
        per_batch, per_token, per_pair = self.coefficients
        padded = texts * longest
        return per_batch + per_token * padded + per_pair * padded * longest

    def tokens_per_second(self) -> float | None:
        """Real tokens the engine scored per second of engine time, over the recent batches."""
        with self._lock:
            seconds = sum(row[3] for row in self._observed)
            tokens = sum(row[2] for row in self._observed)
        return tokens / seconds if seconds > 0 and tokens > 0 else None

    def _fit(self) -> None:
        if len({(texts, longest) for texts, longest, _, _ in self._observed}) < MIN_SHAPES:
            return
        rows = np.array([(1.0, t * n, t * n * n) for t, n, _, _ in self._observed])
        seconds = np.array([row[3] for row in self._observed])
        fitted = _non_negative_least_squares(rows / seconds[:, None], np.ones(len(seconds)))
        if fitted is not None and fitted[1:].any():
            self.coefficients = fitted


def _non_negative_least_squares(features: np.ndarray, target: np.ndarray) -> np.ndarray | None:
    """The best fit with every coefficient >= 0, by trying each subset of the three features.

    The rows are divided by each batch's time beforehand, so the fit minimises relative errors:
    a 5 ms batch counts as much as a 500 ms one.
    """
    best, best_error = None, np.inf
    columns = range(features.shape[1])
    for size in range(1, len(columns) + 1):
        for subset in itertools.combinations(columns, size):
            solution, *_ = np.linalg.lstsq(features[:, subset], target, rcond=None)
            if (solution < 0).any():
                continue
            error = float(np.sum((features[:, subset] @ solution - target) ** 2))
            if error < best_error:
                best, best_error = np.zeros(features.shape[1]), error
                best[list(subset)] = solution
    return best
