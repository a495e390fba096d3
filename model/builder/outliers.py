"""Outlier input channels of the weight MatMuls: scaled down into range, or computed in fp32.

Dynamic int8 scales each MatMul's input per tensor: one input channel that reaches 10-50x the
others (BERT-family models have a few such channels, LayerNorm and GELU outputs alike) sets the
scale, and the other channels are left with a few of their 256 levels. Two transforms, each an
identity in fp32, treat them:

- smoothing (SmoothQuant's scale migration, on the outlier channels only): X W = (X / s) (s W),
  with s = 1 except on channels whose largest |x| exceeds SMOOTH_RATIO x the median channel's,
  where s brings them down to that level. One fp32 Mul per input tensor at run time; the
  weight's rows grow by s, so its own 7-bit scales coarsen: a trade-off the gate judges.
- splitting, for a MatMul X W with outlier channels O (the rest I):
      X W = (X * mask_I) W_I + X[..., O] W[O]
  The first product is quantized (its input without the outliers, its weight with rows O set
  to 0); the second, over a handful of channels, stays fp32: exact for the outliers, at the
  cost of a Mul, a Gather, a small MatMul and an Add per MatMul.

Outlier channels are found on calibration sentences. Every added op is a plain fp32 op, so the
int8 arithmetic stays the 7-bit-weight kernel's, exact on every x86 ISA.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OUTLIER_RATIO = 3.0  # split: a channel is an outlier when its max |x| exceeds this x the median channel's
SMOOTH_RATIO = 2.0  # smoothing: channels above this x the median channel's max |x| are scaled down to it
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


def smoothing_scale(channel_max: np.ndarray) -> np.ndarray:
    """Per channel, the divisor s >= 1 that brings its max |x| down to SMOOTH_RATIO x the median channel's."""
    median = float(np.median(channel_max))
    if median <= 0:
        return np.ones_like(channel_max, dtype=np.float32)
    return np.maximum(1.0, channel_max / (SMOOTH_RATIO * median)).astype(np.float32)


def smooth_outlier_channels(prepared_path: Path, out_path: Path, maxima: dict[str, np.ndarray]) -> dict[str, int]:
    """Write the graph with each weight MatMul's outlier input channels divided by s, its weight's rows times s.

    Returns the number of scaled channels per MatMul that has any. MatMuls that share an input
    (query, key, value) share its Mul.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(prepared_path))
    graph = model.graph
    weights = {initializer.name: initializer for initializer in graph.initializer}
    scales: dict[str, np.ndarray] = {}  # input tensor -> s
    smoothed: dict[str, int] = {}
    nodes = []
    for node in list(graph.node):
        nodes.append(node)
        x = node.input[0]
        if node.op_type != "MatMul" or node.input[1] not in weights or x not in maxima:
            continue
        scale = scales.get(x, smoothing_scale(maxima[x]))
        if not (scale > 1).any():
            continue
        if x not in scales:
            scales[x] = scale
            graph.initializer.append(numpy_helper.from_array(1 / scale, f"{x}/smoothing"))
            nodes.insert(len(nodes) - 1, helper.make_node("Mul", [x, f"{x}/smoothing"], [f"{x}/smoothed"],
                                                          name=f"{x}/smooth_outliers"))
        weight = numpy_helper.to_array(weights[node.input[1]]) * scale[:, None]
        weights[node.input[1]].CopyFrom(numpy_helper.from_array(weight.astype(np.float32), node.input[1]))
        node.input[0] = f"{x}/smoothed"
        smoothed[node.name] = int((scale > 1).sum())
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(out_path))
    return smoothed


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
