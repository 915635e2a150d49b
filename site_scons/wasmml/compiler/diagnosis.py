"""Failures explained in terms of the model: shapes known only at run time,
memory a wasm32 module cannot address, and which node TVM fails on.
"""

import math
import os
import tempfile

from wasmml.compiler.artifacts import build_object
from wasmml.compiler.errors import ModelError, first_line
from wasmml.compiler.onnx_import import inferred_shapes, operator_name, to_relax
from wasmml.compiler.pipelines import lower
from wasmml.compiler.plan import nbytes


WASM32_MEMORY = 1 << 32  # what a wasm32 module can address


def has_unknown_shapes(func):
    """Whether a lowered function computes a tensor whose shape is known only
    at run time (TVM then keeps a shape heap and a dynamic allocation)."""
    import tvm
    from tvm import relax

    for block in func.body.blocks:
        for binding in block.bindings:
            ty = binding.var.ty
            if isinstance(ty, relax.TensorType) and (
                    ty.shape is None or
                    not all(isinstance(d, tvm.tirx.IntImm) for d in ty.shape.values)):
                return True
    return False


def unknown_shape_cause(model, shapes):
    """Names the node whose output's shape TVM could not fix at build time:
    the first, in graph order, whose shape ONNX's inference leaves open with
    every input shape given (data-dependent operators such as NonZero or
    Unique)."""
    node, dims = _first_open_shape(model, shapes)
    what = (f"node '{node.name or '(unnamed)'}' (operator {operator_name(node)}) makes a tensor "
            f"whose shape depends on the data ({dims})" if node is not None else
            "the graph makes a tensor whose shape depends on the data")
    return (f"{what}; a wasm plan needs every shape fixed at build time: export the model "
            "with that part done outside it, or with a fixed-size variant of the operator")


def _node_outputs(model, shapes):
    """(node, output, elem_type, dims) of every node output, in graph order,
    with what ONNX's shape inference knows of it (None where nothing)."""
    known = inferred_shapes(model, shapes)
    for node in model.graph.node:
        for out in node.output:
            if out:
                yield (node, out, *known.get(out, (None, None)))


def _first_open_shape(model, shapes):
    for node, _, _, dims in _node_outputs(model, shapes):
        if dims is None or None in dims:
            text = "?" if dims is None else "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
            return node, text
    return None, None


def check_memory(plan, model, shapes):
    """A wasm32 module addresses 4 GiB: the arena and the weights must fit,
    with room for the program itself."""
    total = plan["arena_size"] + plan["weights_size"]
    if total < WASM32_MEMORY:
        return
    largest = max(plan["tensors"], key=lambda t: nbytes(t["dtype"], t["shape"]))
    size = nbytes(largest["dtype"], largest["shape"])
    maker = _node_making(model, shapes, largest)
    raise ModelError(
        f"needs {total / 2**30:.1f} GiB for its tensors and weights, and a wasm32 module can "
        f"address 4 GiB; the largest tensor is {largest['shape']} {largest['dtype']} "
        f"({size / 2**30:.1f} GiB){maker}: give the model smaller inputs (TVM_INPUT_SHAPES) "
        "or split it")


def _node_making(model, shapes, tensor):
    """", made by node 'N' (operator Op)" for the node whose output has the
    tensor's number of elements and type, or ""."""
    import numpy as np
    from onnx import helper

    elements = math.prod(tensor["shape"])
    for node, out, elem_type, dims in _node_outputs(model, shapes):
        if (dims and None not in dims and math.prod(dims) == elements and
                np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name == tensor["dtype"]):
            return f", made by node '{node.name or out}' (operator {operator_name(node)})"
    return ""


def tvm_failure(step, error, model, shapes, pipeline, target):
    """The ModelError for TVM failing to `step` ("lower" or "compile") the
    graph. TVM's message names neither node nor operator (its importer keeps
    no trace of them), so this names the first node that fails alone."""
    node, reason = failing_node(model, shapes, pipeline, target, compile_kernels=step == "compile")
    if node is None:
        return ModelError(f"TVM cannot {step} the graph: {first_line(error)}")
    return ModelError(
        f"TVM cannot {step} node '{node.name or node.output[0]}' (operator {operator_name(node)}): "
        f"{reason}; change that node in the model (another operator, or its inputs "
        "cast to a type TVM supports for it) or export the model without it")


def failing_node(model, shapes, pipeline, target, compile_kernels=False):
    """(node, TVM's reason) for the first node, in graph order, that TVM
    fails to lower (and with compile_kernels, to compile) as a graph of its
    own, its inputs typed and shaped as ONNX's inference says; (None, None)
    if none does. Only a diagnosis once the whole graph has failed: each
    kind of node (operator, attributes, input types) is tried once."""
    known = inferred_shapes(model, shapes)
    values = {t.name: t for t in model.graph.initializer}
    values.update({n.output[0]: n.attribute[0].t for n in model.graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    tried = set()
    for node in model.graph.node:
        alone = _node_alone(model, node, known, values)
        if alone is None:
            continue
        single, single_shapes = alone
        kind = single.graph.SerializeToString(deterministic=True)
        if kind in tried:
            continue
        tried.add(kind)
        try:
            mod = to_relax(single, single_shapes, pipeline)
        except ModelError:
            continue  # fails earlier than the graph did: not what the graph hit
        try:
            lowered = lower(mod, target, pipeline)
            if compile_kernels:
                with tempfile.TemporaryDirectory() as tmp:
                    build_object(lowered, target, os.path.join(tmp, "kernels.o"))
        except Exception as e:  # noqa: BLE001 -- TVM raises its own kinds
            return node, first_line(e)
    return None, None


def _node_alone(model, node, known, values):
    """(model of `node` alone, its input shapes): its constant inputs as
    initializers, the others as inputs typed as `known` says; None if the
    node is a Constant or an input's type or shape is not known."""
    import onnx
    from onnx import helper

    if node.op_type == "Constant":
        return None
    inputs, initializers, shapes = [], [], {}
    for name in dict.fromkeys(i for i in node.input if i):
        if name in values:
            initializers.append(values[name])
            continue
        elem_type, dims = known.get(name, (None, None))
        if not elem_type or dims is None or None in dims:
            return None
        inputs.append(helper.make_tensor_value_info(name, elem_type, dims))
        shapes[name] = dims
    outputs = [helper.make_tensor_value_info(o, known.get(o, (0, None))[0] or 0, None)
               for o in node.output if o]
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    graph = helper.make_graph([copy], "alone", inputs, outputs, initializers)
    single = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    return single, shapes
