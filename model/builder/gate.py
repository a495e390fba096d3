"""The int8 quality gate: does the int8 model give its fp32 model's answers? Defined here only.

Applied per model to sentences run alone and inside shuffled mixed batches of 32 (dynamic
int8 scales activations per batch, so a text's score can move with its neighbours). The int8
model passes when, in both modes:
  (a) no label flips on a text that fp32 scores >= 0.60 for its top label;
  (b) accuracy is within 0.5 point of fp32's, where gold labels exist (binary sentiment data
      on a model whose labels name negative and positive, or a two-label model);
  (c) the largest per-label probability gap is <= 0.10 for >= 98.5% of the texts.
Unlabelled text checks (a) and (c). The fp32 reference is run in batches sorted by length:
fp32 scores do not depend on batch neighbours (within 1e-6).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from model.engines import Engine

CONFIDENT = 0.60  # (a) fp32 top-label probability from which a flip is not allowed
MAX_ACCURACY_DROP = 0.005  # (b) 0.5 point
MAX_GAP = 0.10  # (c) per-text largest |Δp| ...
MIN_SHARE_WITHIN_GAP = 0.985  # ... for at least this share of the texts
MIXED_BATCH = 32
DATA_DIR = Path(__file__).resolve().parent / "data"
VERDICT_SET = DATA_DIR / "sst2-dev.tsv"  # held out: the gate's verdict
CALIBRATION_SET = DATA_DIR / "rt-polarity-calibration.tsv"  # build choices (no overlap with the above)


@dataclass(frozen=True)
class TextSet:
    """Sentences, with gold labels (1 positive, 0 negative) when the file has them."""

    name: str
    texts: list[str]
    gold: np.ndarray | None


def read_text_set(path: Path, limit: int | None = None) -> TextSet:
    """A TSV `sentence<TAB>label` with a header line (label 1 = positive), or one sentence a line."""
    lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if lines and "\t" in lines[0]:
        rows = [line.rsplit("\t", 1) for line in lines[1:]][:limit]
        return TextSet(Path(path).name, [text for text, _ in rows], np.array([int(label) for _, label in rows]))
    return TextSet(Path(path).name, lines[:limit], None)


def gold_indices(labels: tuple[str, ...], gold: np.ndarray | None) -> np.ndarray | None:
    """Gold labels (0 negative, 1 positive) as the model's label indices, when the model names them."""
    if gold is None:
        return None
    lowered = [label.lower() for label in labels]
    if "negative" in lowered and "positive" in lowered:
        return np.where(gold == 1, lowered.index("positive"), lowered.index("negative"))
    return gold if len(labels) == 2 else None


# --- running an engine ---------------------------------------------------------------------------


@dataclass
class Scored:
    """One engine's probabilities for every text, each text alone and inside mixed batches."""

    alone: np.ndarray
    mixed: np.ndarray


def score_batched(engine: Engine, texts: list[str], batch_size: int = MIXED_BATCH) -> np.ndarray:
    """Probabilities in batches of texts of similar length (the fast way; for batch-independent fp32)."""
    encodings = engine.tokenize(texts)
    order = np.argsort([len(e) for e in encodings], kind="stable")
    scores = np.zeros((len(texts), len(engine.labels)), dtype=np.float32)
    for begin in range(0, len(texts), batch_size):
        chosen = order[begin:begin + batch_size]
        scores[chosen] = engine.predict_encoded([encodings[i] for i in chosen])
    return scores


def score_alone_and_mixed(engine: Engine, texts: list[str], batch_size: int = MIXED_BATCH) -> Scored:
    encodings = engine.tokenize(texts)
    alone = np.concatenate([engine.predict_encoded([encoding]) for encoding in encodings])
    # Shuffled, so every batch mixes short and long texts (padding differs from alone).
    order = np.random.default_rng(0).permutation(len(texts))
    mixed = np.zeros_like(alone)
    for begin in range(0, len(texts), batch_size):
        chosen = order[begin:begin + batch_size]
        mixed[chosen] = engine.predict_encoded([encodings[i] for i in chosen])
    return Scored(alone, mixed)


# --- the gate ------------------------------------------------------------------------------------


@dataclass
class GateResult:
    """The verdict, the reasons it failed (empty when it passed) and every figure behind it."""

    data: str
    passed: bool
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)

    def summary(self) -> str:
        alone, mixed = self.figures["alone"], self.figures["mixed"]
        verdict = "PASS" if self.passed else "FAIL: " + "; ".join(self.reasons)
        accuracy = ""
        if alone["accuracy"] is not None:
            accuracy = (f", accuracy {alone['accuracy']:.4f}/{mixed['accuracy']:.4f} "
                        f"vs fp32 {alone['reference_accuracy']:.4f}")
        return (f"{self.data}: {alone['confident_flips']}/{mixed['confident_flips']} confident flips (alone/mixed), "
                f"{alone['flips']}/{mixed['flips']} flips in all, within {MAX_GAP:.2f}: "
                f"{alone['share_within_gap']:.2%}/{mixed['share_within_gap']:.2%}{accuracy} -> {verdict}")

    def as_json(self) -> dict:
        return asdict(self)


def int8_gate(reference: np.ndarray, candidate: Scored, gold: np.ndarray | None, data: str) -> GateResult:
    """Apply (a), (b), (c) to the candidate alone and mixed against fp32 `reference` probabilities."""
    result = GateResult(data=data, passed=True)
    confident = reference.max(axis=1) >= CONFIDENT
    reference_labels = reference.argmax(axis=1)
    reference_accuracy = float((reference_labels == gold).mean()) if gold is not None else None
    for mode, probabilities in (("alone", candidate.alone), ("mixed", candidate.mixed)):
        flipped = probabilities.argmax(axis=1) != reference_labels
        gaps = np.abs(probabilities - reference).max(axis=1)
        figures = {
            "texts": len(reference), "confident_texts": int(confident.sum()),
            "confident_flips": int((flipped & confident).sum()), "flips": int(flipped.sum()),
            "most_confident_flip": round(float(reference.max(axis=1)[flipped].max()), 4) if flipped.any() else None,
            "share_within_gap": round(float((gaps <= MAX_GAP).mean()), 4), "max_gap": round(float(gaps.max()), 4),
            "accuracy": round(float((probabilities.argmax(axis=1) == gold).mean()), 4) if gold is not None else None,
            "reference_accuracy": round(reference_accuracy, 4) if reference_accuracy is not None else None,
        }
        result.figures[mode] = figures
        if figures["confident_flips"]:
            result.reasons.append(f"{mode}: {figures['confident_flips']} labels flip on texts fp32 is >= "
                                  f"{CONFIDENT:.2f} sure of (up to {figures['most_confident_flip']:.2f})")
        if gold is not None and figures["accuracy"] < reference_accuracy - MAX_ACCURACY_DROP:
            result.reasons.append(f"{mode}: accuracy {figures['accuracy']:.4f} is more than "
                                  f"{MAX_ACCURACY_DROP * 100:.1f} point below fp32's {reference_accuracy:.4f}")
        if figures["share_within_gap"] < MIN_SHARE_WITHIN_GAP:
            result.reasons.append(f"{mode}: only {figures['share_within_gap']:.2%} of texts within {MAX_GAP:.2f} "
                                  f"of fp32 (needs {MIN_SHARE_WITHIN_GAP:.1%})")
    result.passed = not result.reasons
    if not confident.any():
        result.notes.append(f"fp32 is >= {CONFIDENT:.2f} sure of no text here: criterion (a) tests nothing "
                            "(random weights?)")
    elif len(np.unique(reference_labels)) == 1:
        result.notes.append("fp32 gives every text the same label: the gate tests little (random weights?)")
    if gold is None:
        result.notes.append("no gold labels for this model's labels: criterion (b) not applied")
    return result


def check_engines(reference: Engine, candidate: Engine, text_set: TextSet) -> GateResult:
    """The gate of `candidate` against `reference` (fp32) on one set of sentences."""
    return check_candidate(score_batched(reference, text_set.texts), candidate, text_set)


def check_candidate(reference: np.ndarray, candidate: Engine, text_set: TextSet) -> GateResult:
    """The gate of `candidate` against fp32 probabilities computed earlier on the same sentences."""
    return int8_gate(reference, score_alone_and_mixed(candidate, text_set.texts),
                     gold_indices(candidate.labels, text_set.gold), text_set.name)
