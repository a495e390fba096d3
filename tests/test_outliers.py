"""Outlier input channels moved to fp32 MatMuls: an identity in fp32, and int8 quantizes only the rest."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest

from model.artifacts import inspect_model_dir
from model.builder.outliers import OUTLIER_SUFFIX, input_channel_maxima, outlier_channels, split_outlier_channels
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


def test_split_graph_computes_the_same_logits_in_fp32(prepared, feeds, tmp_path):
    nodes = weight_matmuls(prepared)
    maxima = input_channel_maxima(prepared, nodes, [feeds], threads=1)
    for tensor, channel_max in maxima.items():  # two planted outlier channels on every MatMul input
        maxima[tensor] = np.ones_like(channel_max)
        maxima[tensor][[0, 5]] = 100.0
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
