"""Outlier input channels smoothed or moved to fp32 MatMuls: identities in fp32; int8 quantizes what they leave."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest

from model.artifacts import inspect_model_dir
from model.builder.outliers import (OUTLIER_SUFFIX, SMOOTH_RATIO, input_channel_maxima, outlier_channels,
                                    smooth_outlier_channels, smoothing_scale, split_outlier_channels)
from model.builder.quantize import prepare, quantize, weight_matmuls
from model.engines import TextEncoder

TEXTS = ["a charming and often affecting journey.", "The plot is predictable and the jokes fall flat!", "good"]


@pytest.fixture(scope="module")
def prepared(tiny_artifact, tmp_path_factory):
    path = tmp_path_factory.mktemp("outliers") / "prepared.onnx"
    prepare(tiny_artifact / "model.fp32.onnx", path)
    return path


@pytest.fixture(scope="module")
def feeds(tiny_artifact):
    artifact = inspect_model_dir(tiny_artifact)
    encoder = TextEncoder(artifact.tokenizer_path, 64, artifact.pad_token)
    return encoder.inputs(encoder.tokenize(TEXTS))


def logits(path, feeds) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {i.name: feeds[i.name] for i in session.get_inputs()})[0]


def test_channels_far_above_the_median_are_outliers():
    assert outlier_channels(np.array([1.0, 1.2, 0.9, 3.5, 1.1, 30.0])).tolist() == [3, 5]
    assert outlier_channels(np.ones(8)).tolist() == []


def planted_maxima(prepared, feeds) -> dict[str, np.ndarray]:
    """Every MatMul input's channel maxima as measured, then two outlier channels (0 and 5) planted."""
    maxima = input_channel_maxima(prepared, weight_matmuls(prepared), [feeds], threads=1)
    for tensor, channel_max in maxima.items():
        maxima[tensor] = np.ones_like(channel_max)
        maxima[tensor][[0, 5]] = 100.0
    return maxima


def test_split_graph_computes_the_same_logits_in_fp32(prepared, feeds, tmp_path):
    nodes = weight_matmuls(prepared)
    maxima = planted_maxima(prepared, feeds)
    split_path = tmp_path / "split.onnx"
    split = split_outlier_channels(prepared, split_path, maxima)
    assert set(split) == set(nodes) and set(split.values()) == {2}
    assert weight_matmuls(split_path) == nodes  # the fp32 outlier MatMuls are not candidates for int8
    np.testing.assert_allclose(logits(split_path, feeds), logits(prepared, feeds), atol=1e-5)

    int8_path = tmp_path / "int8.onnx"
    quantize(split_path, int8_path, keep_fp32=[])
    graph = onnx.load(str(int8_path)).graph
    fp32_matmuls = [n.name for n in graph.node if n.op_type == "MatMul"]
    assert sum(name.endswith(OUTLIER_SUFFIX) for name in fp32_matmuls) == len(nodes)
    assert np.abs(logits(int8_path, feeds) - logits(prepared, feeds)).max() < 0.5


def test_smoothing_scales_only_channels_above_the_ratio_down_to_it():
    channel_max = np.array([1.0, 1.0, 1.0, 1.5, 8.0])
    scale = smoothing_scale(channel_max)
    assert scale.tolist() == [1.0, 1.0, 1.0, 1.0, 8.0 / SMOOTH_RATIO]
    assert (channel_max / scale).max() == SMOOTH_RATIO * np.median(channel_max)
    assert smoothing_scale(np.zeros(4)).tolist() == [1.0] * 4


def test_smoothed_graph_computes_the_same_logits_in_fp32_with_one_mul_per_input(prepared, feeds, tmp_path):
    nodes = weight_matmuls(prepared)
    maxima = planted_maxima(prepared, feeds)
    smoothed_path = tmp_path / "smoothed.onnx"
    smoothed = smooth_outlier_channels(prepared, smoothed_path, maxima)
    assert set(smoothed) == set(nodes) and set(smoothed.values()) == {2}
    added = [n for n in onnx.load(str(smoothed_path)).graph.node if n.name.endswith("/smooth_outliers")]
    assert len(added) == len(maxima) < len(nodes)  # query, key and value share one Mul
    np.testing.assert_allclose(logits(smoothed_path, feeds), logits(prepared, feeds), atol=1e-5)

    int8_path = tmp_path / "int8.onnx"
    quantize(smoothed_path, int8_path, keep_fp32=[])
    assert not set(weight_matmuls(int8_path)) & set(smoothed)  # the smoothed MatMuls are int8, weights included
    assert sum(n.name.endswith("/smooth_outliers") for n in onnx.load(str(int8_path)).graph.node) == len(added)
