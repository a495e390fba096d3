"""Choose a model's int8 recipe: the fastest that passes the int8 gate, fewest fp32 ops first.

1. Quantize every weight MatMul (model/builder/quantize.py) and apply the gate on the
   calibration sentences (rt-polarity, none of them in SST-2 dev).
2. If it fails: smooth each weight MatMul's outlier input channels (model/builder/outliers.py;
   the channels found on calibration sentences: scaled down, the weight's rows scaled up) and
   quantize every weight MatMul again. One fp32 Mul per MatMul input.
3. If it fails: move the outlier input channels into small fp32 MatMuls instead (a Mul, a
   Gather, a MatMul and an Add per MatMul: exact for the outliers, slower).
4. While it fails: measure each weight MatMul's sensitivity once (calibration sentences), and
   keep the most sensitive 1, 2, 3, 4, 5, 7, 9, ... in fp32 (outlier channels still split).
5. A recipe that passes on the calibration sentences is judged by the gate on the held-out
   verdict set (SST-2 dev). If the verdict fails, the search goes on (the manifest's attempts
   show it), so the verdict set decides only when the calibration set was not enough.
6. Past half of the weight MatMuls kept in fp32, int8 is not worth it: the model ships fp32
   only, and the manifest and the build's output say why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.artifacts import ResolvedModel
from model.builder.gate import MIXED_BATCH, GateResult, TextSet, check_candidate, score_batched
from model.builder.outliers import (OUTLIER_RATIO, SMOOTH_RATIO, input_channel_maxima, smooth_outlier_channels,
                                    split_outlier_channels)
from model.builder.phases import phase
from model.builder.quantize import RECIPE, growing_counts, node_role, prepare, quantize, sensitivity, weight_matmuls
from model.cpu import cpu_facts
from model.engines import OnnxEngine, available_cpus

SENSITIVITY_TEXTS = 128  # calibration sentences used to rank the MatMuls
OUTLIER_REMEDIES = {"smoothed": (smooth_outlier_channels, SMOOTH_RATIO), "fp32": (split_outlier_channels, OUTLIER_RATIO)}


@dataclass
class Int8Decision:
    """What the build decided about int8, as the manifest records it."""

    shipped: bool
    reason: str
    weight_matmuls: int
    kept_fp32: list[str] = field(default_factory=list)
    verdict: GateResult | None = None
    calibration: GateResult | None = None
    attempts: list[dict] = field(default_factory=list)
    sensitivity: list[tuple[str, float]] = field(default_factory=list)
    outlier_remedy: str | None = None  # "smoothed" or "fp32" (a key of OUTLIER_REMEDIES), None: untouched
    outlier_channels: dict[str, int] = field(default_factory=dict)  # per MatMul, the channels so treated

    def outlier_words(self) -> str:
        """How the outlier channels were treated, for the reason line ("" when they were not)."""
        if not self.outlier_remedy:
            return ""
        how = "smoothed" if self.outlier_remedy == "smoothed" else "computed in fp32"
        return f" and {sum(self.outlier_channels.values())} outlier input channels {how}"

    def manifest_entry(self, calibration: TextSet, verdict: TextSet) -> dict:
        return {
            "recipe": RECIPE,
            "shipped": self.shipped,
            "reason": self.reason,
            "weight_matmuls": self.weight_matmuls,
            "kept_fp32": self.kept_fp32,
            "kept_fp32_roles": [node_role(name) for name in self.kept_fp32],
            "outlier_channels": {
                "remedy": self.outlier_remedy,
                "ratio": OUTLIER_REMEDIES[self.outlier_remedy][1] if self.outlier_remedy else None,
                "per_matmul": {node_role(name): count for name, count in self.outlier_channels.items()},
            },
            "gate": {
                "verdict": self.verdict.as_json() if self.verdict else None,
                "calibration": self.calibration.as_json() if self.calibration else None,
            },
            "data": {"calibration": calibration.name, "verdict": verdict.name},
            "attempts": self.attempts,
            "sensitivity_top": [[node_role(name), round(score, 5)] for name, score in self.sensitivity[:12]],
            "measured_on": cpu_facts(),
        }


class RecipeSearch:
    """Quantize, measure, keep the most sensitive MatMuls in fp32, until the gate passes or int8 is dropped."""

    def __init__(self, source: ResolvedModel, fp32_path: Path, int8_path: Path, calibration: TextSet,
                 verdict: TextSet) -> None:
        self.source, self.int8_path = source, int8_path
        self.calibration, self.verdict = calibration, verdict
        self.threads = available_cpus()
        self.prepared = int8_path.with_suffix(".prepared.onnx")
        # the prepared graph with its outlier channels treated, per remedy
        self.treated = {remedy: int8_path.with_suffix(f".outliers-{remedy}.onnx") for remedy in OUTLIER_REMEDIES}
        self.maxima: dict[str, np.ndarray] = {}
        self.fp32 = OnnxEngine(source, "fp32", source.max_length, self.threads, path=fp32_path)
        prepare(fp32_path, self.prepared)
        self.nodes = weight_matmuls(self.prepared)
        # fp32 does not depend on batch neighbours: its probabilities are computed once.
        self.references = {"calibration": score_batched(self.fp32, calibration.texts),
                           "verdict": score_batched(self.fp32, verdict.texts)}

    def run(self) -> Int8Decision:
        try:
            return self._search()
        finally:
            self.prepared.unlink(missing_ok=True)
            for path in self.treated.values():
                path.unlink(missing_ok=True)

    def _search(self) -> Int8Decision:
        decision = Int8Decision(shipped=False, reason="", weight_matmuls=len(self.nodes))
        limit = len(self.nodes) // 2
        stages = [(None, 0), ("smoothed", 0)] + [("fp32", count) for count in growing_counts(len(self.nodes), limit)]
        for remedy, count in stages:
            if remedy != decision.outlier_remedy and count == 0:
                channels = self._treat_outliers(remedy)
                if not channels:  # no outlier channels: this stage would repeat the one before
                    continue
                decision.outlier_remedy, decision.outlier_channels = remedy, channels
            if count and not decision.sensitivity:
                decision.sensitivity = self._rank()
            keep = [name for name, _ in decision.sensitivity[:count]]
            attempt = self._try(keep, decision.outlier_remedy)
            decision.attempts.append(attempt["record"])
            decision.calibration, decision.verdict = attempt["calibration"], attempt["verdict"]
            if decision.verdict is not None and decision.verdict.passed:
                decision.shipped, decision.kept_fp32 = True, keep
                decision.reason = (f"passes the int8 gate with {len(keep)} of {len(self.nodes)} weight MatMuls "
                                   f"kept in fp32{decision.outlier_words()}")
                return decision
        failed = decision.verdict or decision.calibration
        decision.reason = (f"no recipe keeping at most {limit} of {len(self.nodes)} weight MatMuls in fp32 passes "
                           f"the int8 gate (last: {'; '.join(failed.reasons)}): fp32 only")
        self.int8_path.unlink(missing_ok=True)
        return decision

    def _calibration_batches(self, texts: list[str], order: list[int]) -> list[dict]:
        encodings = self.fp32.tokenize(texts)
        return [self.fp32.encoder.inputs([encodings[i] for i in order[b:b + MIXED_BATCH]])
                for b in range(0, len(order), MIXED_BATCH)]

    def _treat_outliers(self, remedy: str) -> dict[str, int]:
        """Outlier channels found on every calibration sentence, in shuffled (padded) batches as served."""
        texts = self.calibration.texts
        if not self.maxima:
            order = [int(i) for i in np.random.default_rng(1).permutation(len(texts))]
            self.maxima = input_channel_maxima(self.prepared, self.nodes, self._calibration_batches(texts, order),
                                               self.threads)
        transform, ratio = OUTLIER_REMEDIES[remedy]
        with phase(f"outlier input channels (above {ratio:g}x the median) of {len(self.nodes)} weight MatMuls on "
                   f"{len(texts)} calibration sentences, {remedy}") as line:
            treated = transform(self.prepared, self.treated[remedy], self.maxima)
            line["detail"] = f"{sum(treated.values())} channels over {len(treated)} MatMuls"
        return treated

    def _rank(self) -> list[tuple[str, float]]:
        texts = self.calibration.texts[:SENSITIVITY_TEXTS]
        lengths = [len(encoding) for encoding in self.fp32.tokenize(texts)]
        batches = self._calibration_batches(texts, sorted(range(len(texts)), key=lambda i: lengths[i]))
        with phase(f"sensitivity of {len(self.nodes)} weight MatMuls, each simulated alone in int8 on "
                   f"{len(texts)} calibration sentences") as line:
            ranking = sensitivity(self.prepared, batches, self.threads)
            line["detail"] = "most sensitive " + ", ".join(f"{node_role(n)} {s:.4f}" for n, s in ranking[:4])
        return ranking

    def _try(self, keep: list[str], remedy: str | None) -> dict:
        outliers = f" (outlier channels {remedy})" if remedy else ""
        with phase(f"int8 with {len(keep)} of {len(self.nodes)} weight MatMuls in fp32{outliers}") as line:
            quantize(self.treated[remedy] if remedy else self.prepared, self.int8_path, keep)
            candidate = OnnxEngine(self.source, "int8", self.source.max_length, self.threads, path=self.int8_path)
            calibration = check_candidate(self.references["calibration"], candidate, self.calibration)
            verdict = check_candidate(self.references["verdict"], candidate, self.verdict) if calibration.passed else None
            line["detail"] = calibration.summary() + (f"; {verdict.summary()}" if verdict else "")
        record = {"kept_fp32": len(keep), "outlier_channels": remedy,
                  "calibration": calibration.summary(), "verdict": verdict.summary() if verdict else None}
        return {"record": record, "calibration": calibration, "verdict": verdict}
