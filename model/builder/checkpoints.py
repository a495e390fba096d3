"""Random-weight Hugging Face checkpoints, for tests and benchmarks.

Real weights cannot be downloaded everywhere the service is built and tested, so the
tests build small checkpoints on the fly: the same files `save_pretrained` writes for a
real model (config.json with id2label/label2id, model.safetensors, tokenizer.json,
tokenizer_config.json), with random weights and a synthetic uncased WordPiece vocabulary.

Shapes:
    tiny             BertForSequenceClassification, hidden 32, 2 layers, 2 heads (fast tests)
    distilbert-base  DistilBertForSequenceClassification with the dimensions of
                     distilbert-base-uncased (dim 768, 6 layers, 12 heads, vocab 30522),
                     for benchmarks that need the product model's compute cost.

A tiny checkpoint can also be made quantization-hostile (`hostile_roles`): chosen MatMuls get
a few weight rows 1000x larger than the rest, on hidden dimensions that the LayerNorms feeding
them hold at exactly 0. fp32 answers do not change (0 x 1000 = 0), but per-channel int8 scales
are dominated by the outliers and every other weight of those MatMuls rounds to 0: the int8
gate must fail, and the build must fall back.

Needs torch and transformers (the `build` extra).
"""

from __future__ import annotations

import itertools
import string
from pathlib import Path

SHAPES = ("tiny", "distilbert-base")
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Common English words (movie-review flavoured) so typical sentences tokenize into whole
# words; anything else falls back to letter pairs and single letters.
COMMON_WORDS = """
the a an and or but if of to in on at by for with from as is are was were be been being it
its this that these those he she they we you i me my your our their his her them us not no
nor so too very just only also than then there here when where what which who whom whose why
how all any both each few more most other some such own same can will would should could may
might must do does did done have has had having get gets got make makes made go goes went
gone see saw seen film films movie movies story stories character characters plot script
actor actors acting director performance performances scene scenes screen audience drama
comedy thriller horror action music time times year years life lives world people man woman
men women love heart mind way thing things work works part end beginning moment moments good
great best better bad worse worst funny boring dull smart clever stupid beautiful ugly
charming delightful wonderful terrible awful brilliant mediocre entertaining engaging moving
touching powerful weak strong fresh original predictable tedious slow fast long short new old
young big small little high low real true false fun enjoyable pleasant painful sad happy dark
light rich poor simple complex deep shallow clear obvious subtle solid flat hollow sweet
bitter warm cold hard easy well much many never always often ever still even yet again once
enough almost quite rather really actually nothing something everything anything one two
three first last another every like love hate feel feels felt look looks looked seem seems
seemed think thinks thought know knows knew want wants wanted watch watching watched give
gives gave take takes took come comes came find finds found tell tells told keep keeps kept
fails failed succeed succeeds manages manage worth waste mess masterpiece disaster triumph
joy anger fear surprise neutral positive negative interesting uninteresting compelling
unfunny laughable heartfelt sincere pretentious witty clumsy lively lifeless gorgeous
""".split()

COMMON_SUFFIXES = """
s es ed ing ly er est ness ment ful less able ible ion tion sion ity ive ous al ic ical ize
ise ism ist y ie n t d
""".split()

PUNCTUATION = list(string.punctuation)


def synthetic_vocab(size: int | None = None) -> list[str]:
    """Special tokens, characters, common words and subwords; padded with [unusedN] to `size`."""
    letters = string.ascii_lowercase
    characters = list(letters) + list(string.digits) + PUNCTUATION
    pairs = ["".join(pair) for pair in itertools.product(letters, repeat=2)]
    pieces = (
        SPECIAL_TOKENS
        + characters
        + ["##" + c for c in letters + string.digits]
        + COMMON_WORDS
        + ["##" + suffix for suffix in COMMON_SUFFIXES]
        + pairs
        + ["##" + pair for pair in pairs]
    )
    vocab = list(dict.fromkeys(pieces))  # keeps first occurrences, in order
    if size is not None:
        if size < len(vocab):
            raise ValueError(f"vocab size {size} is smaller than the base vocabulary ({len(vocab)})")
        vocab += [f"[unused{i}]" for i in range(size - len(vocab))]
    return vocab


def build_tokenizer(vocab: list[str]):
    """An uncased BERT WordPiece tokenizer (tokenizers library), no truncation or padding baked in."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    token_ids = {token: index for index, token in enumerate(vocab)}
    tokenizer = Tokenizer(models.WordPiece(token_ids, unk_token="[UNK]", continuing_subword_prefix="##"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, clean_text=True, handle_chinese_chars=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", token_ids["[CLS]"]), ("[SEP]", token_ids["[SEP]"])],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    return tokenizer


def _model_for_shape(shape: str, vocab_size: int, labels: tuple[str, ...]):
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
    )

    id2label = dict(enumerate(labels))
    label2id = {label: index for index, label in id2label.items()}
    if shape == "tiny":
        # A wide initializer makes the random logits differ clearly between texts, so
        # engine-agreement tests compare something other than near-uniform outputs.
        config = BertConfig(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=512, initializer_range=0.2,
            id2label=id2label, label2id=label2id, pad_token_id=0,
        )
        return BertForSequenceClassification(config)
    if shape == "distilbert-base":
        config = DistilBertConfig(
            vocab_size=vocab_size, dim=768, n_layers=6, n_heads=12, hidden_dim=3072,
            max_position_embeddings=512, id2label=id2label, label2id=label2id, pad_token_id=0,
        )
        return DistilBertForSequenceClassification(config)
    raise ValueError(f"unknown checkpoint shape {shape!r}; use one of {SHAPES}")


def build_random_checkpoint(
    out_dir: str | Path,
    labels: tuple[str, ...] = ("NEGATIVE", "POSITIVE"),
    shape: str = "tiny",
    seed: int = 0,
    hostile_roles: tuple[str, ...] = (),
) -> Path:
    """Write a random-weight sequence-classification checkpoint to `out_dir`; return its path.

    hostile_roles (tiny shape): "layer.<i>/<query|key|value|ffn.in>" MatMuls made quantization-hostile.
    """
    import torch
    from transformers import PreTrainedTokenizerFast

    if shape not in SHAPES:
        raise ValueError(f"unknown checkpoint shape {shape!r}; use one of {SHAPES}")
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be at least two distinct names, got {labels!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = synthetic_vocab(30522 if shape == "distilbert-base" else None)
    torch.manual_seed(seed)
    model = _model_for_shape(shape, len(vocab), tuple(labels)).eval()
    if hostile_roles:
        _make_hostile(model, hostile_roles)
    model.save_pretrained(out)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(vocab),
        unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
        model_max_length=512, do_lower_case=True,
    )
    fast.save_pretrained(out)
    return out


HOSTILE_DIMS = [0, 1]  # hidden dimensions held at 0 by every LayerNorm
HOSTILE_WEIGHT = 1000.0
HOSTILE_PARTS = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
                 "ffn.in": "intermediate.dense"}


def _make_hostile(model, roles: tuple[str, ...]) -> None:
    """Outlier weight rows that fp32 never sees (their inputs are 0) but int8 scales do."""
    import torch

    bert = model.bert
    norms = [bert.embeddings.LayerNorm] + [norm for layer in bert.encoder.layer
                                            for norm in (layer.attention.output.LayerNorm, layer.output.LayerNorm)]
    with torch.no_grad():
        for norm in norms:
            norm.weight[HOSTILE_DIMS] = 0.0
            norm.bias[HOSTILE_DIMS] = 0.0
        for role in roles:
            layer, _, part = role.removeprefix("layer.").partition("/")
            linear = bert.encoder.layer[int(layer)].get_submodule(HOSTILE_PARTS[part.removeprefix("attention.")])
            signs = torch.where(torch.rand(linear.weight.shape[0], len(HOSTILE_DIMS)) < 0.5, -1.0, 1.0)
            linear.weight[:, HOSTILE_DIMS] = HOSTILE_WEIGHT * signs


def build_tiny_checkpoint(out_dir: str | Path, labels: tuple[str, ...] = ("NEGATIVE", "POSITIVE"), seed: int = 0) -> Path:
    """The tests' small BERT checkpoint (shape "tiny")."""
    return build_random_checkpoint(out_dir, labels=labels, shape="tiny", seed=seed)
