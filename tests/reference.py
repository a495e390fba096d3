"""Reference answers from outside the service: a checkpoint's softmax computed here, with
transformers and torch directly, and its labels read here from config.json by index.

Nothing of model/ is used, so a fault in the serving code (labels in the wrong order, rows
swapped, another model's cached answers) shows as a difference from these numbers.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path


def config_labels(checkpoint: Path) -> tuple[str, ...]:
    """id2label in index order, whatever order config.json lists its keys in."""
    id2label = json.loads((Path(checkpoint) / "config.json").read_text())["id2label"]
    return tuple(id2label[str(index)] for index in range(len(id2label)))


@lru_cache(maxsize=8)
def _network(checkpoint: str):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoint), AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()


def softmax_by_label(checkpoint: Path, texts: list[str], bf16: bool = False) -> list[dict[str, float]]:
    """One {label: probability} per text, each text run alone (no padding), fp32 or bf16 autocast."""
    import torch

    tokenizer, network = _network(str(checkpoint))
    labels = config_labels(checkpoint)
    answers = []
    for text in texts:
        inputs = tokenizer(text, truncation=True, max_length=512, return_tensors="pt")
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = network(**inputs).logits.float()
        probabilities = torch.softmax(logits, dim=-1)[0].tolist()
        answers.append(dict(zip(labels, probabilities, strict=True)))
    return answers


def as_dict(ranked) -> dict[str, float]:
    """An answer's ranked labels, from the API ({label, score} objects) or the predictor ((label, score) pairs)."""
    return {entry["label"]: entry["score"] for entry in ranked} if ranked and isinstance(ranked[0], dict) else dict(ranked)


def distinct_answers(answers: list[dict[str, float]], margin: float) -> bool:
    """True when every two answers differ by more than `margin` on some label: then an answer given
    to the wrong text cannot pass a comparison made within that tolerance."""
    return all(
        max(abs(first[label] - second[label]) for label in first) > margin
        for n, first in enumerate(answers) for second in answers[n + 1:]
    )
