"""Outlier input channels of the weight MatMuls, computed in fp32 beside the int8 MatMul.

Dynamic int8 scales each MatMul's input per tensor: one input channel that reaches 10-50x the
others (BERT-family models have a few such channels, LayerNorm and GELU outputs alike) sets the
scale, and the other channels are left with a few of their 256 levels. The transform here is an
identity in fp32: for a MatMul X W with outlier channels O (the rest I),

    X W = (X * mask_I) W_I + X[..., O] W[O]

The first product is quantized (its input without the outliers, its weight with rows O set to
0); the second, over a handful of channels, stays fp32. The outlier channels are those whose
largest |x| on calibration sentences exceeds OUTLIER_RATIO x the median channel's. Every op is a
plain fp32 op, so the int8 arithmetic stays the 7-bit-weight kernel's, exact on every x86 ISA.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OUTLIER_RATIO = 3.0  # a channel is an outlier when its max |x| exceeds this x the median channel's
OUTLIER_SUFFIX = "/outlier_channels_fp32"  # name suffix of the added fp32 MatMuls (never quantized)


def input_channel_maxima(prepared_path: Path, nodes: list[str], inputs: list[dict[str, np.ndarray]],
                         threads: int) -> dict[str, np.ndarray]:
    """Per input tensor of `nodes`: the largest |x| of each channel over the batches `inputs`.

    Padded positions count: dynamic quantization scales the whole tensor, padding included.
    """
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper

    model = onnx.load(str(prepared_path))
    tensors = sorted({node.input[0] for node in model.graph.node if node.name in set(nodes)})
    model.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in tensors)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    maxima = {t: np.zeros(0, dtype=np.float32) for t in tensors}
    for batch in inputs:
        for tensor, values in zip(tensors, session.run(tensors, {n: batch[n] for n in names})):
            channel_max = np.abs(values.reshape(-1, values.shape[-1])).max(axis=0)
            maxima[tensor] = np.maximum(maxima[tensor], channel_max) if maxima[tensor].size else channel_max
    return maxima


def outlier_channels(channel_max: np.ndarray) -> np.ndarray:
    return np.flatnonzero(channel_max > OUTLIER_RATIO * np.median(channel_max))


def split_outlier_channels(prepared_path: Path, out_path: Path, maxima: dict[str, np.ndarray]) -> dict[str, int]:
    """Write the graph with each weight MatMul's outlier input channels in a separate fp32 MatMul.

    Returns the number of outlier channels per MatMul that has any. MatMuls that share an input
    (query, key, value) share its mask and gathered channels.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(prepared_path))
    graph = model.graph
    weights = {initializer.name: initializer for initializer in graph.initializer}
    shared: dict[str, tuple[str, str]] = {}  # input tensor -> (inlier tensor, outlier tensor)
    split: dict[str, int] = {}
    # The bias Add after each MatMul: the fp32 part joins after it, so ONNX Runtime still fuses
    # the int8 MatMul with its bias.
    bias_add = {next(i for i in node.input if i not in weights): node for node in graph.node
                if node.op_type == "Add" and len(node.input) == 2 and sum(i in weights for i in node.input) == 1}
    joins: dict[str, list] = {}  # name of the node after which the fp32 part joins -> its nodes
    nodes = []
    for node in list(graph.node):
        nodes.append(node)
        channels = outlier_channels(maxima[node.input[0]]) if node.input[0] in maxima else []
        if node.op_type != "MatMul" or node.input[1] not in weights or not len(channels):
            continue
        x = node.input[0]
        if x not in shared:
            mask = np.ones(len(maxima[x]), dtype=np.float32)
            mask[channels] = 0
            graph.initializer.extend([numpy_helper.from_array(mask, f"{x}/inlier_mask"),
                                      numpy_helper.from_array(channels.astype(np.int64), f"{x}/outlier_index")])
            shared[x] = (f"{x}/inliers", f"{x}/outliers")
            nodes[-1:-1] = [helper.make_node("Mul", [x, f"{x}/inlier_mask"], [shared[x][0]], name=f"{x}/mask_outliers"),
                            helper.make_node("Gather", [x, f"{x}/outlier_index"], [shared[x][1]], axis=-1,
                                             name=f"{x}/gather_outliers")]
        weight = numpy_helper.to_array(weights[node.input[1]]).copy()
        outlier_weight = numpy_helper.from_array(weight[channels].astype(np.float32), f"{node.name}/outlier_weight")
        weight[channels] = 0
        weights[node.input[1]].CopyFrom(numpy_helper.from_array(weight, node.input[1]))
        graph.initializer.append(outlier_weight)
        node.input[0] = shared[x][0]
        last = bias_add.get(node.output[0], node)
        y = last.output[0]
        last.output[0] = f"{y}/inliers"
        joins[last.name] = [
            helper.make_node("MatMul", [shared[x][1], outlier_weight.name], [f"{y}/outliers"],
                             name=node.name + OUTLIER_SUFFIX),
            helper.make_node("Add", [f"{y}/inliers", f"{y}/outliers"], [y], name=f"{node.name}/join_outliers")]
        split[node.name] = len(channels)
    for last in [n for n in nodes if n.name in joins]:
        position = nodes.index(last) + 1
        nodes[position:position] = joins[last.name]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(out_path))
    return split
