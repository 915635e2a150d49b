"""Batch normalisation folded into the convolution before it.

At inference a BatchNormalization is y = (x - mean) * scale / sqrt(var + eps)
+ bias per channel. After a convolution that is the same as the convolution
with each output channel's filter multiplied by s = scale / sqrt(var + eps)
and a bias of (conv_bias - mean) * s + bias. The build computes the new
weights once, in float64, so each kernel's epilogue is one add instead of a
subtract, a divide, a multiply and an add, and the ReLU after it fuses into
the same kernel (onnxruntime's ConvBNFusion does the same at load time).

Folded only where that is exact: the convolution's output feeds nothing but
the batch norm, and the weights and statistics are initializers.

Used by the compiler (onnx_import) before TVM imports the model, after
per_activation_as_arithmetic (batch norms whose statistics are not 1-D).
"""

DEFAULT_EPSILON = 1e-5  # ONNX BatchNormalization's default


def fold_batch_norms(model):
    """A copy of the model with every foldable Conv -> BatchNormalization
    pair replaced by one Conv with new weights; the model itself when it has
    no such pair."""
    import onnx

    pairs = _foldable_pairs(model.graph)
    if not pairs:
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    initializers = {t.name: t for t in graph.initializer}
    # IR < 4 lists every initializer among the graph's inputs too
    lists_initializers = any(i.name in initializers for i in graph.input)
    nodes = list(graph.node)
    # the weights and statistics the fold replaces (read before it rewrites them)
    replaced = {name for pair in pairs for i in pair for name in nodes[i].input[1:]}
    for conv_index, norm_index in pairs:
        for tensor in _fold(nodes[conv_index], nodes[norm_index], initializers):
            graph.initializer.append(tensor)
            if lists_initializers:
                graph.input.append(onnx.helper.make_tensor_value_info(
                    tensor.name, tensor.data_type, tensor.dims))
    norms = {norm_index for _, norm_index in pairs}
    del graph.node[:]
    graph.node.extend(n for i, n in enumerate(nodes) if i not in norms)
    _drop_unread(graph, replaced)
    return copy


def _foldable_pairs(graph):
    """(conv index, batch norm index) of each pair that can be folded."""
    initializers = {t.name for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    readers = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    producer = {out: i for i, n in enumerate(graph.node) for out in n.output}
    pairs = []
    for norm_index, norm in enumerate(graph.node):
        if not _is_standard(norm, "BatchNormalization") or len(norm.output) != 1:
            continue
        if _attribute(norm, "training_mode", 0) or len(norm.input) != 5:
            continue
        conv_index = producer.get(norm.input[0])
        if conv_index is None or not _is_standard(graph.node[conv_index], "Conv"):
            continue
        conv = graph.node[conv_index]
        constants = [n for n in conv.input[1:] if n] + list(norm.input[1:])
        if (all(n in initializers for n in constants) and readers[conv.output[0]] == 1
                and conv.output[0] not in graph_outputs):
            pairs.append((conv_index, norm_index))
    return pairs


def _is_standard(node, op_type):
    return node.op_type == op_type and node.domain in ("", "ai.onnx")


def _fold(conv, norm, initializers):
    """Rewrites `conv` to compute `conv` then `norm`, and returns the new
    weight and bias it reads (its own: the old ones may be read by other
    nodes too)."""
    import numpy as np
    from onnx import numpy_helper

    def array(name):
        return numpy_helper.to_array(initializers[name])

    weight = array(conv.input[1])
    scale, bias, mean, var = (array(n).astype(np.float64) for n in norm.input[1:])
    factor = scale / np.sqrt(var + _attribute(norm, "epsilon", DEFAULT_EPSILON))
    has_bias = len(conv.input) > 2 and conv.input[2]
    conv_bias = array(conv.input[2]).astype(np.float64) if has_bias else 0.0
    per_channel = factor.reshape((-1,) + (1,) * (weight.ndim - 1))
    base = conv.name or conv.output[0]
    tensors = [numpy_helper.from_array(value.astype(weight.dtype), f"{base}.{suffix}") for suffix, value in (
        ("folded_weight", weight.astype(np.float64) * per_channel),
        ("folded_bias", (conv_bias - mean) * factor + bias))]
    for tensor in tensors:
        initializers[tensor.name] = tensor
    data = conv.input[0]
    del conv.input[:]
    conv.input.extend([data] + [t.name for t in tensors])
    del conv.output[:]
    conv.output.extend(norm.output)
    return tensors


def _attribute(node, name, default):
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def names_read(graph):
    """Every tensor name that a node of the graph reads or the graph outputs."""
    return {name for node in graph.node for name in node.input} | {o.name for o in graph.output}


def _drop_unread(graph, replaced):
    """Removes the initializers among `replaced` that no node reads any more
    (a weight may be shared with a convolution that was not folded), and,
    for IR < 4, their entries among the graph's inputs."""
    read = names_read(graph)
    unused = {name for name in replaced if name and name not in read}
    kept = [t for t in graph.initializer if t.name not in unused]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    inputs = [i for i in graph.input if i.name not in unused]
    del graph.input[:]
    graph.input.extend(inputs)


class StatisticsError(Exception):
    """A batch norm whose statistics have a shape neither TVM nor onnxruntime runs."""


STATISTICS = ("scale", "bias", "mean", "var")


def per_activation_as_arithmetic(model, infer_shapes):
    """A copy of the model whose per-activation batch norms (opset < 9,
    spatial=0: statistics shaped like one sample, [C, H, W]) are arithmetic
    nodes, as onnxruntime computes them; TVM's batch_norm takes only 1-D
    statistics. Statistics of other shapes, which onnxruntime refuses too,
    raise StatisticsError naming the node. infer_shapes(model): {name: (elem_type, dims)}."""
    import onnx

    graph = model.graph
    norms = [n for n in graph.node if _is_standard(n, "BatchNormalization") and len(n.input) == 5]
    if not norms:
        return model
    known = {t.name: (t.data_type, list(t.dims)) for t in graph.initializer}
    inferred = []

    def dims(name):
        if name not in known and not inferred:
            inferred.append(True)
            known.update((k, v) for k, v in infer_shapes(model).items() if k not in known)
        return known.get(name, (None, None))[1]

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    read = names_read(graph)
    rewrite = {}
    for norm in norms:
        shapes = [dims(name) for name in norm.input[1:]]
        if any(s is None for s in shapes) or all(len(s) == 1 for s in shapes):
            continue  # 1-D, or not known here: TVM's importer decides
        if opset < 9 and _attribute(norm, "spatial", 1) == 0:  # per activation
            data = dims(norm.input[0])
            if data is None or None in data or any(o in read for o in norm.output[1:]):
                continue  # TVM's importer decides
            wanted, fits = f"statistics shaped like one sample ({data[1:]})", lambda s: s == data[1:]
            if all(fits(s) for s in shapes):
                rewrite[norm.output[0]] = known[norm.input[4]][0]
                continue
        else:
            wanted, fits = "1-D statistics, one value per channel", lambda s: len(s) == 1
        which, shape = next((w, s) for w, s in zip(STATISTICS, shapes) if not fits(s))
        raise StatisticsError(
            f"node '{norm.name or norm.output[0]}' (operator BatchNormalization): its {which} has "
            f"shape {shape}, and the operator takes {wanted}, in onnxruntime too: "
            "export the statistics in that shape")
    if not rewrite:
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    nodes = []
    for node in copy.graph.node:
        if node.op_type == "BatchNormalization" and node.output[0] in rewrite:
            nodes.extend(_arithmetic(node, rewrite[node.output[0]], copy.graph))
        else:
            nodes.append(node)
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    return copy


def _arithmetic(norm, elem_type, graph):
    """y = x * a + (bias - mean * a), a = scale / sqrt(var + epsilon): the
    batch norm as nodes whose inputs broadcast (onnxruntime's order)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    x, scale, bias, mean, var = norm.input
    base = f"{norm.name or norm.output[0]}.per_activation"
    eps = f"{base}.epsilon"
    graph.initializer.append(numpy_helper.from_array(
        np.array(_attribute(norm, "epsilon", DEFAULT_EPSILON),
                 dtype=helper.tensor_dtype_to_np_dtype(elem_type or TensorProto.FLOAT)), eps))
    step = [f"{base}.{i}" for i in range(5)]
    return [helper.make_node("Add", [var, eps], [step[0]]),
            helper.make_node("Sqrt", [step[0]], [step[1]]),
            helper.make_node("Div", [scale, step[1]], [step[2]]),
            helper.make_node("Mul", [mean, step[2]], [step[3]]),
            helper.make_node("Sub", [bias, step[3]], [step[4]]),
            helper.make_node("Mul", [x, step[2]], [f"{base}.scaled"]),
            helper.make_node("Add", [f"{base}.scaled", step[4]], [norm.output[0]])]
