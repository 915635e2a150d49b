"""ONNX to Relax: reading the model and its model.json, input shapes, the graph
rewrites the importer needs (initializers, dropouts, shape-like constants,
per-activation arithmetic, batch-norm folding) and the import itself.
"""

import contextlib
import math
import os

from wasmml.compiler.errors import ModelError, first_line
from wasmml.compiler.options import DEFAULT_PIPELINE
from wasmml.compiler.pipelines import LAYOUT_PIPELINES


# integer initializers up to this size are shape-like values (shapes, axes,
# pads, repeats): imported as constants, so TVM sees their values
SHAPE_LIKE_ELEMENTS = 1024


def load_onnx(path):
    import onnx
    from google.protobuf.message import DecodeError

    if not os.path.isfile(path):
        raise ModelError(f"{path}: file not found")
    try:
        model = onnx.load(path)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ModelError(f"{path}: not a readable ONNX file ({first_line(e)})")
    if not model.graph.node:
        raise ModelError(f"{path}: not an ONNX model (no graph nodes; truncated or wrong file?)")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ModelError(f"{path}: invalid ONNX model ({first_line(e)})")
    return model


def read_meta(path):
    """model.json, checked as the build checks it (wasmml.model_json). The
    labels are the copy step's, not the compile's: not looked for here."""
    from wasmml import model_json

    try:
        return model_json.load(path, file_exists=lambda name: True)
    except model_json.ModelJsonError as e:
        raise ModelError(str(e))


def check_meta(meta, model, path):
    """model.json's inputs and outputs against the loaded ONNX file, before
    TVM is imported: a contradiction is one line naming the key."""
    from wasmml import model_json

    try:
        model_json.check_against_onnx(meta, model, path)
    except model_json.ModelJsonError as e:
        raise ModelError(str(e))


def input_shapes(model, meta, overrides):
    """Shape of every graph input: command line, then model.json, then the
    ONNX file itself; an unknown dimension with no shape given is an error.
    The command line may set dynamic dims, not contradict static ones."""
    from wasmml import model_json

    given = {name: spec["shape"] for name, spec in meta.get("inputs", {}).items()}
    flags = {}
    for item in overrides:
        name, _, dims = item.partition("=")
        try:
            given[name] = [int(d) for d in dims.split(",")]
        except ValueError:
            raise ModelError(f"--input-shape {item!r}: expected NAME=D0,D1,...")
        flags[name] = item
    initializers = {t.name for t in model.graph.initializer}
    shapes = {}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        if inp.name in given:
            shapes[inp.name] = list(given.pop(inp.name))
            conflict = inp.name in flags and model_json.shape_conflict(
                shapes[inp.name], model_json.onnx_dims(inp))
            if conflict:
                raise ModelError(f"--input-shape {flags[inp.name]} (TVM_INPUT_SHAPES): {conflict}")
            continue
        dims = inp.type.tensor_type.shape.dim
        unknown = [d.dim_param or "?" for d in dims if not d.dim_value]
        if unknown or not inp.type.tensor_type.HasField("shape"):
            raise ModelError(
                f"input '{inp.name}' has unknown dimension '{(unknown or ['rank'])[0]}' "
                f"and no shape is given (set it in model.json 'inputs' or TVM_INPUT_SHAPES)")
        shapes[inp.name] = [d.dim_value for d in dims]
    if given:
        raise ModelError(f"shape given for '{sorted(given)[0]}', which is not an input of the graph")
    return shapes


def check_operators(model):
    """Fails on the first node whose operator TVM's ONNX importer lacks,
    naming it, before the importer fails on it with less to go on."""
    from tvm.relax.frontend.onnx import onnx_frontend

    known = onnx_frontend._get_convert_map()
    missing = [n for n in model.graph.node
               if n.domain not in ("", "ai.onnx") or n.op_type not in known]
    if missing:
        node, op = missing[0], operator_name(missing[0])
        others = sorted({operator_name(n) for n in missing} - {op})
        also = f"; also unsupported: {', '.join(others)}" if others else ""
        raise ModelError(
            f"node '{node.name or '(unnamed)'}' (operator {op}) is not supported by TVM's ONNX "
            f"importer ({len(missing)} such node{'s' if len(missing) > 1 else ''}{also}); export the "
            "model without it, or rewrite it with supported operators")


def operator_name(node):
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def to_relax(model, shapes, pipeline=DEFAULT_PIPELINE):
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from wasmml.compiler.fold_batch_norm import StatisticsError, fold_batch_norms, per_activation_as_arithmetic

    check_operators(model)
    model = shape_like_initializers_as_constants(dropouts_as_identity(initializers_not_inputs(model)))
    try:
        model = per_activation_as_arithmetic(model, lambda m: inferred_shapes(m, shapes))
    except StatisticsError as e:
        raise ModelError(str(e))
    model = fold_batch_norms(model)
    try:
        with _layout_friendly_import(pipeline in LAYOUT_PIPELINES):
            mod = from_onnx(model, shape_dict=shapes, keep_params_in_input=True)
    except Exception as e:  # the frontend raises many kinds; all mean "cannot import"
        raise ModelError(f"TVM cannot import the graph: {first_line(e)}")
    mod, params = relax.frontend.detach_params(mod)
    main = mod["main"]
    values = params.get("main", [])
    num_inputs = len(main.params) - len(values)  # main's parameters: the inputs, then the weights
    if num_inputs != len(shapes):
        raise ModelError(f"TVM imported {num_inputs} inputs for the graph's {len(shapes)} "
                         f"({', '.join(shapes)}); cannot tell its weights from its inputs")
    return relax.transform.BindParams("main", dict(zip(main.params[num_inputs:], values)))(mod)


def initializers_not_inputs(model):
    """A copy of the model without the graph inputs that have an initializer
    (IR < 4, or keep_initializers_as_inputs exports): they are weights. TVM's
    importer makes each such input a parameter of main as well as a weight,
    so main's parameters would no longer be the inputs, then the weights.
    The copy is IR 4 at least, which lets initializers be no inputs."""
    import onnx

    initializers = {t.name for t in model.graph.initializer}
    if not any(i.name in initializers for i in model.graph.input):
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    inputs = [i for i in copy.graph.input if i.name not in initializers]
    del copy.graph.input[:]
    copy.graph.input.extend(inputs)
    copy.ir_version = max(copy.ir_version, 4)
    return copy


def dropouts_as_identity(model):
    """A copy of the model whose Dropouts are Identity nodes where nothing
    reads their mask and no training_mode input is given: what they compute
    at inference. TVM would copy the data and write a mask of ones, in a
    tuple that ConvertLayout cannot move to NHWC."""
    import onnx

    from wasmml.compiler.fold_batch_norm import names_read

    graph = model.graph
    read = names_read(graph)

    def inference(node):
        return (node.op_type == "Dropout" and node.domain in ("", "ai.onnx")
                and (len(node.input) < 3 or not node.input[2])
                and not any(o in read for o in node.output[1:]))

    if not any(inference(n) for n in graph.node):
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for node in copy.graph.node:
        if inference(node):
            output = node.output[0]
            node.op_type = "Identity"
            del node.input[1:], node.output[:], node.attribute[:]
            node.output.append(output)
    return copy


def shape_like_initializers_as_constants(model):
    """A copy of the model whose small integer initializers are Constant
    nodes. The importer turns initializers into parameters, whose values it
    cannot see: an Expand or Tile of a shape given as an initializer then
    gets a shape known only at run time, which a static plan cannot hold.
    A Constant node it imports as a value."""
    import onnx
    from onnx import helper

    integer = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
    moved = [t for t in model.graph.initializer
             if t.data_type in integer and math.prod(t.dims) <= SHAPE_LIKE_ELEMENTS]
    if not moved:
        return model
    names = {t.name for t in moved}
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    kept = [t for t in graph.initializer if t.name not in names]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    inputs = [i for i in graph.input if i.name not in names]  # IR < 4 lists initializers as inputs
    del graph.input[:]
    graph.input.extend(inputs)
    constants = [helper.make_node("Constant", [], [t.name], value=t) for t in moved]
    nodes = constants + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return copy


@contextlib.contextmanager
def _layout_friendly_import(enabled):
    """While enabled, TVM's ONNX importer writes operators in forms that
    ConvertLayout can move to NHWC, where it wraps its own forms in
    transposes or fails. Clip (ReLU6): relax maximum/minimum (with the
    importer's NaN bounds), not two TIR kernels, so it fuses into the conv
    before it. Sum, Max, Min, Mean: binary ops, not a reduction over a stack."""
    from unittest import mock

    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as frontend

    if not enabled:
        yield
        return

    def clip(cls, bb, inputs, attr, params):
        x = inputs[0]
        if inputs[1] is not None:
            x = bb.emit(relax.op.maximum(x, cls._sanitize_nan_clip_bound(bb, inputs[1], for_min=True)))
        if inputs[2] is not None:
            x = bb.emit(relax.op.minimum(x, cls._sanitize_nan_clip_bound(bb, inputs[2], for_min=False)))
        return x

    def pairwise(original):
        def convert(cls, bb, inputs, attr, params):
            if all(isinstance(i, tvm.ir.GenericConst) for i in inputs):  # folded at import
                return original.__func__(cls, bb, inputs, attr, params)
            return cls._impl_dynamic(bb, inputs)
        return classmethod(convert)

    with contextlib.ExitStack() as patches:
        patches.enter_context(mock.patch.object(frontend.Clip, "_impl_v13", classmethod(clip)))
        for op in (frontend.Sum, frontend.Max, frontend.Min, frontend.Mean):
            patches.enter_context(mock.patch.object(op, "_impl_v1", pairwise(op.__dict__.get(
                "_impl_v1", frontend.MultiInputBase.__dict__["_impl_v1"]))))
        yield


def inferred_shapes(model, shapes):
    """{tensor name: (elem_type, [dim or None])} by ONNX's shape inference,
    with the graph's inputs set to `shapes`."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for inp in copy.graph.input:
        if inp.name in shapes:
            dims = inp.type.tensor_type.shape.dim
            del dims[:]
            for d in shapes[inp.name]:
                dims.add().dim_value = d
    try:
        inferred = onnx.shape_inference.infer_shapes(copy, data_prop=True)
    except Exception:  # noqa: BLE001 -- only a diagnosis: without it, name no node
        return {}
    found = {}
    graph = inferred.graph
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        found[vi.name] = (t.elem_type, dims if t.HasField("shape") else None)
    return found
