"""Outlier input channels smoothed or moved to fp32 MatMuls: identities in fp32; int8 quantizes what they leave."""

from __future__ import annotations

from pathlib import Path

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


def treat_and_quantize(transform, prepared, feeds, tmp_path) -> tuple[Path, Path]:
    """Plant two outlier channels (0 and 5) on every MatMul input, treat them with `transform`, quantize.

    Checks what both treatments promise: every weight MatMul treated, logits unchanged in fp32.
    """
    nodes = weight_matmuls(prepared)
    maxima = input_channel_maxima(prepared, nodes, [feeds], threads=1)
    for tensor, channel_max in maxima.items():
        maxima[tensor] = np.ones_like(channel_max)
        maxima[tensor][[0, 5]] = 100.0
    treated_path, int8_path = tmp_path / "treated.onnx", tmp_path / "int8.onnx"
    treated = transform(prepared, treated_path, maxima)
    assert set(treated) == set(nodes) and set(treated.values()) == {2}
    np.testing.assert_allclose(logits(treated_path, feeds), logits(prepared, feeds), atol=1e-5)
    quantize(treated_path, int8_path, keep_fp32=[])
    return treated_path, int8_path


def test_split_graph_computes_the_same_logits_in_fp32(prepared, feeds, tmp_path):
    split_path, int8_path = treat_and_quantize(split_outlier_channels, prepared, feeds, tmp_path)
    nodes = weight_matmuls(prepared)
    assert weight_matmuls(split_path) == nodes  # the fp32 outlier MatMuls are not candidates for int8
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
    smoothed_path, int8_path = treat_and_quantize(smooth_outlier_channels, prepared, feeds, tmp_path)
    nodes = weight_matmuls(prepared)
    inputs = {node.input[0] for node in onnx.load(str(prepared)).graph.node if node.name in set(nodes)}
    for path in (smoothed_path, int8_path):  # query, key and value share one Mul; quantizing keeps them
        added = [n for n in onnx.load(str(path)).graph.node if n.name.endswith("/smooth_outliers")]
        assert len(added) == len(inputs) < len(nodes)
    assert not set(weight_matmuls(int8_path)) & set(nodes)  # the smoothed MatMuls are int8, weights included
