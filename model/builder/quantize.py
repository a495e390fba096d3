"""int8 quantization of an exported fp32 graph, and the measurements that choose its recipe.

The recipe: ONNX Runtime dynamic quantization of the weight MatMuls (attention-score MatMuls,
embeddings, pooler and classifier stay fp32), weights int8 per output channel with
`reduce_range` (7-bit, -64..64), activations uint8 per tensor, scaled per batch. Seven-bit
weights make the u8 x s8 kernels exact on every x86 instruction set: without VNNI they add
two 255 x 127 products into int16 (VPMADDUBSW), which saturates with 8-bit weights, so
results would depend on the node the pod lands on.

Which MatMuls stay fp32 is measured per model, not set by a layer rule:
  1. sensitivity: each weight MatMul alone is simulated in int8 (its weight rounded to 7 bits
     per channel, its input through DynamicQuantizeLinear/DequantizeLinear: the arithmetic of
     the integer kernel) and scored by how far the model's probabilities move on calibration
     sentences;
  2. the most sensitive ones are kept in fp32, as few as possible, until the real quantized
     model passes the int8 gate (model/builder/gate.py).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

RECIPE = "dynamic-per-channel-7bit"
WEIGHT_BITS_RANGE = 64  # reduce_range: symmetric int8 weights in -64..64


def prepare(fp32_path: Path, prepared_path: Path) -> None:
    """The quantizer's recommended pre-processing: ONNX shape inference and graph clean-up.

    (Symbolic shape inference gives up on the dynamic sequence axis; it is not needed here.)
    """
    from onnxruntime.quantization import quant_pre_process

    with quiet_quantizer():
        quant_pre_process(str(fp32_path), str(prepared_path), skip_symbolic_shape=True)


def weight_matmuls(model_path: Path) -> list[str]:
    """MatMul nodes whose second input is a weight (not attention scores or mixing), in graph order."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {initializer.name for initializer in graph.initializer}
    return [node.name for node in graph.node if node.op_type == "MatMul" and node.input[1] in weights]


def quantize(prepared_path: Path, int8_path: Path, keep_fp32: list[str]) -> None:
    """Write the int8 model: every weight MatMul but `keep_fp32` quantized with the recipe."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    chosen = [name for name in weight_matmuls(prepared_path) if name not in set(keep_fp32)]
    if not chosen:  # an empty list would mean "every node" to the quantizer
        raise ValueError("no weight MatMul left to quantize")
    with quiet_quantizer():
        quantize_dynamic(
            prepared_path, int8_path, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
            op_types_to_quantize=["MatMul"], nodes_to_quantize=chosen,
        )


@contextmanager
def quiet_quantizer() -> Iterator[None]:
    """Drop the quantizer's per-tensor INFO lines ("Quantization parameters for tensor ... not specified").

    It logs them on the root logger, so a filter there removes them and nothing else.
    """
    def chatter(record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.INFO and record.name == "root")

    root = logging.getLogger()
    root.addFilter(chatter)
    try:
        yield
    finally:
        root.removeFilter(chatter)


# --- node roles: the same place in another model of the family ----------------------------------

ROLE_PATTERNS = (  # BERT/MiniLM and DistilBERT exporter module paths
    (r"attention/self/query/|attention/q_lin/", "attention.query"),
    (r"attention/self/key/|attention/k_lin/", "attention.key"),
    (r"attention/self/value/|attention/v_lin/", "attention.value"),
    (r"attention/output/dense/|attention/out_lin/", "attention.output"),
    (r"intermediate/dense/|ffn/lin1/", "ffn.in"),
    (r"layer\.\d+/output/dense/|ffn/lin2/", "ffn.out"),
)


def node_role(name: str) -> str:
    """"layer.<i>/<part>" for an encoder MatMul (e.g. "layer.0/ffn.in"), else the node name."""
    layer = re.search(r"layer\.(\d+)/", name)
    for pattern, part in ROLE_PATTERNS:
        if layer and re.search(pattern, name):
            return f"layer.{layer.group(1)}/{part}"
    return name


def nodes_for_roles(roles: list[str], nodes: list[str]) -> list[str]:
    """The nodes of this model that play `roles` (a recipe carried over from another model)."""
    wanted = set(roles)
    return [node for node in nodes if node_role(node) in wanted]


# --- sensitivity ----------------------------------------------------------------------------------


def sensitivity(prepared_path: Path, inputs: list[dict[str, np.ndarray]], threads: int) -> list[tuple[str, float]]:
    """Each weight MatMul simulated alone in int8: mean max |Δp| on the batches `inputs`, largest first."""
    import onnx

    model = onnx.load(str(prepared_path))
    reference = _run_graph(model.SerializeToString(), inputs, threads)
    scores = []
    for name in weight_matmuls(prepared_path):
        with _simulated_int8(model, name):
            probabilities = _run_graph(model.SerializeToString(), inputs, threads)
        scores.append((name, float(np.abs(probabilities - reference).max(axis=1).mean())))
    return sorted(scores, key=lambda item: item[1], reverse=True)


def _run_graph(model_bytes: bytes, inputs: list[dict[str, np.ndarray]], threads: int) -> np.ndarray:
    import onnxruntime

    from model.engines import softmax

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC  # 37 sessions: create fast
    session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return np.concatenate([softmax(session.run(["logits"], {n: batch[n] for n in names})[0]) for batch in inputs])


@contextmanager
def _simulated_int8(model, node_name: str) -> Iterator[None]:
    """Temporarily route one MatMul through int8 arithmetic in fp32 ops (quantize, dequantize)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    node = next(n for n in graph.node if n.name == node_name)
    initializer = next(i for i in graph.initializer if i.name == node.input[1])
    original_inputs = list(node.input)
    weight = numpy_helper.to_array(initializer)
    scale = np.abs(weight).max(axis=0, keepdims=True) / WEIGHT_BITS_RANGE
    scale[scale == 0] = 1.0
    rounded = np.clip(np.rint(weight / scale), -WEIGHT_BITS_RANGE, WEIGHT_BITS_RANGE) * scale
    prefix = f"{node_name}/simulated_int8"
    added_initializer = numpy_helper.from_array(rounded.astype(np.float32), f"{prefix}/weight")
    added_nodes = [
        helper.make_node("DynamicQuantizeLinear", [node.input[0]], [f"{prefix}/q", f"{prefix}/s", f"{prefix}/z"],
                         name=f"{prefix}/quantize"),
        helper.make_node("DequantizeLinear", [f"{prefix}/q", f"{prefix}/s", f"{prefix}/z"], [f"{prefix}/x"],
                         name=f"{prefix}/dequantize"),
    ]
    graph.initializer.append(added_initializer)
    position = list(graph.node).index(node)
    for offset, added in enumerate(added_nodes):
        graph.node.insert(position + offset, added)
    node.input[0], node.input[1] = f"{prefix}/x", added_initializer.name
    try:
        yield
    finally:
        node.input[0], node.input[1] = original_inputs
        for added in added_nodes:
            graph.node.remove(added)
        graph.initializer.remove(graph.initializer[-1])


def growing_counts(total: int, limit: int) -> list[int]:
    """How many MatMuls to keep in fp32, tried in order: 0, 1, 2, 3, 4, 6, 8, 11, ... up to limit."""
    counts, count = [], 0
    while count <= min(limit, total):
        counts.append(count)
        count = count + 1 if count < 4 else int(count * 1.35 + 0.5)
    return counts

