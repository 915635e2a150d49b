"""Compile one ONNX model with Apache TVM into the three artifacts a wasm32
program needs: a static archive of kernels, an execution plan and the weights.

Run by the `tvm_model` SCons tool as a separate process ($TVMCOM), so SCons
itself never imports TVM or onnx. Every failure the user can cause ends in
one line, `error: model 'NAME': CAUSE`, exit status 1, and no output file.
"""

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time

PLAN_FORMAT = 1
RELAXED_SIMD = "+relaxed-simd"
# what a threaded build's kernels need besides the build's features: real
# atomics and a shared memory (wasm-ld refuses to mix objects without them)
THREAD_FEATURES = ("+atomics", "+bulk-memory")
# a MetaSchedule JSON database: a directory holding these two files
WORKLOADS_FILE, RECORDS_FILE = "database_workload.json", "database_tuning_record.json"
ALIGN = 64  # TVM kernels assume 64-byte aligned buffers (kAllocAlignment).
WASM32_MEMORY = 1 << 32  # what a wasm32 module can address
# integer initializers up to this size are shape-like values (shapes, axes,
# pads, repeats): imported as constants, so TVM sees their values
SHAPE_LIKE_ELEMENTS = 1024


class ModelError(Exception):
    """A problem with the model or its options, reported as one line."""


def _align(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--name", required=True)
    p.add_argument("--onnx", required=True)
    p.add_argument("--meta", required=True, help="the model's model.json")
    p.add_argument("--archive", required=True)
    p.add_argument("--plan", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--llvm-ar", required=True)
    p.add_argument("--target-features", default="+simd128",
                   help="comma-separated LLVM features for wasm32, e.g. +simd128")
    p.add_argument("--pipeline", default=DEFAULT_PIPELINE, choices=sorted(PIPELINES))
    p.add_argument("--input-shape", action="append", default=[],
                   metavar="NAME=D0,D1,...", help="override an input's shape")
    p.add_argument("--tuning-db", help="MetaSchedule JSON database to apply (tune_model.py)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="N > 1: kernels with parallel loops, run on the runtime's pool of wasi "
                        "threads (TVMBackendParallelLaunch); needs a module linked with "
                        "model-runtime's `threads` feature (cargo_wasm with TVM_THREADS)")
    p.add_argument("--quiet", action="store_true", help="no timing line")
    return p.parse_args(argv)


class Stages:
    """Times the compile's stages for its one progress line."""

    def __init__(self):
        self.start = self.last = time.monotonic()
        self.times = []
        self.notes = []

    def note(self, text):
        self.notes.append(text)

    def done(self, stage):
        now = time.monotonic()
        self.times.append((stage, now - self.last))
        self.last = now

    def summary(self, name):
        parts = ", ".join([f"{stage} {seconds:.1f}s" for stage, seconds in self.times] + self.notes)
        return f"  {name}: {parts} ({time.monotonic() - self.start:.1f}s)"


# --- loading --------------------------------------------------------------

def load_onnx(path):
    import onnx
    from google.protobuf.message import DecodeError

    if not os.path.isfile(path):
        raise ModelError(f"{path}: file not found")
    try:
        model = onnx.load(path)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ModelError(f"{path}: not a readable ONNX file ({_first_line(e)})")
    if not model.graph.node:
        raise ModelError(f"{path}: not an ONNX model (no graph nodes; truncated or wrong file?)")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ModelError(f"{path}: invalid ONNX model ({_first_line(e)})")
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


def _first_line(exc):
    text = str(exc).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # TVM puts the useful sentence last, after a traceback.
    for ln in reversed(lines):
        if "Error" in ln or "not supported" in ln.lower():
            return ln[:300]
    return lines[-1][:300]


# --- compiling ------------------------------------------------------------

def _fold_fuse(mod, stages=None):
    """Fold weight-only work into constants and fuse elementwise chains into
    their producers before TVM's default lowering."""
    from tvm import relax, transform

    return transform.Sequential([
        # batch norm as a multiply and an add of constants: folded, then
        # fused into the convolution before it instead of a kernel of its own
        relax.transform.DecomposeOpsForInference(),
        # batch norm's result is a tuple's first field; reading it straight
        # from the tuple lets the ReLU after it fuse into the convolution
        relax.transform.CanonicalizeBindings(),
        relax.transform.LegalizeOps(),
        relax.transform.FoldConstant(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
    ])(mod)


def _fold_fuse_prepack(mod, stages=None):
    """fold-fuse, with the weights marked free to change layout: a tuned
    schedule may then read them in the order its loops want, and the build
    rewrites the constant weights into that layout (lower())."""
    from tvm import relax

    return relax.transform.AttachAttrLayoutFreeBuffers()(_fold_fuse(mod))


def _nhwc(mod, stages=None):
    """fold-fuse with convolutions in NHWC and their weights in HWIO: the
    output channels are then the innermost, contiguous axis of the output
    and of the weights, so a kernel computes 4 of them per SIMD128 vector
    for any image size (XNNPACK's layout). Elementwise work follows the new
    layout; the input and the final flatten pay one transpose each. 3x3
    convolutions with stride 1 and enough channels and tiles are computed
    by Winograd's F(4x4, 3x3), or F(2x2, 3x3) on small images, on weights
    packed at build time (winograd.py); 1x1 convolutions read their weights
    packed in blocks of outputs (pointwise.py).

    A graph without convolutions is left as it is. Where TVM's ConvertLayout
    fails (seen on a Dropout whose mask the graph reads), the graph keeps
    its layout: the build is slower, not wrong, and its log says so."""
    from tvm import relax

    from wasmml import packed_conv, pointwise, winograd

    if "relax.nn.conv2d" not in _operators(mod["main"]):
        return _fold_fuse(mod)
    try:
        converted = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]})(mod)
    except Exception as e:  # noqa: BLE001 -- TVM raises its own kinds
        if stages is not None:
            stages.note(f"convolutions kept in NCHW (TVM's ConvertLayout: {_first_line(e)})")
        converted = mod
    return _fold_fuse(packed_conv.rewrite(converted, [winograd.replacement, pointwise.replacement]))


def _operators(func):
    """The names of the relax operators that a function calls."""
    import tvm
    from tvm import relax

    names = set()

    @relax.expr_functor.visitor
    class Calls(relax.PyExprVisitor):
        def visit_call_(self, call):
            if isinstance(call.op, tvm.ir.Op):
                names.add(call.op.name)

    Calls().visit_expr(func)
    return names


PIPELINES = {"default": None, "fold-fuse": _fold_fuse, "prepack": _fold_fuse_prepack, "nhwc": _nhwc}
DEFAULT_PIPELINE = "nhwc"
# pipelines that change layouts import some operators in forms they can move
# (_layout_friendly_import)
LAYOUT_PIPELINES = {"nhwc"}


def check_operators(model):
    """Fails on the first node whose operator TVM's ONNX importer lacks,
    naming it, before the importer fails on it with less to go on."""
    from tvm.relax.frontend.onnx import onnx_frontend

    known = onnx_frontend._get_convert_map()
    missing = [n for n in model.graph.node
               if n.domain not in ("", "ai.onnx") or n.op_type not in known]
    if missing:
        node, op = missing[0], _operator_name(missing[0])
        others = sorted({_operator_name(n) for n in missing} - {op})
        also = f"; also unsupported: {', '.join(others)}" if others else ""
        raise ModelError(
            f"node '{node.name or '(unnamed)'}' (operator {op}) is not supported by TVM's ONNX "
            f"importer ({len(missing)} such node{'s' if len(missing) > 1 else ''}{also}); export the "
            "model without it, or rewrite it with supported operators")


def _operator_name(node):
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def to_relax(model, shapes, pipeline=DEFAULT_PIPELINE):
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from wasmml.fold_batch_norm import StatisticsError, fold_batch_norms, per_activation_as_arithmetic

    check_operators(model)
    model = shape_like_initializers_as_constants(dropouts_as_identity(initializers_not_inputs(model)))
    try:
        model = per_activation_as_arithmetic(model, lambda m: _inferred_shapes(m, shapes))
    except StatisticsError as e:
        raise ModelError(str(e))
    model = fold_batch_norms(model)
    try:
        with _layout_friendly_import(pipeline in LAYOUT_PIPELINES):
            mod = from_onnx(model, shape_dict=shapes, keep_params_in_input=True)
    except Exception as e:  # the frontend raises many kinds; all mean "cannot import"
        raise ModelError(f"TVM cannot import the graph: {_first_line(e)}")
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

    from wasmml.fold_batch_norm import names_read

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
             if t.data_type in integer and _elements(t.dims) <= SHAPE_LIKE_ELEMENTS]
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


def _elements(dims):
    n = 1
    for d in dims:
        n *= d
    return n


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


def wasm_target(features, threads=1):
    """TVM's target for wasm32 with these LLVM features; with threads > 1,
    also atomics and bulk memory (a shared memory) and `num-cores`, which
    MetaSchedule's parallel loops are sized by."""
    import tvm

    mattr = _feature_list(features)
    target = {"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm", "mattr": mattr}
    if threads > 1:
        mattr += [f for f in THREAD_FEATURES if f not in mattr]
        target["num-cores"] = threads
    if RELAXED_SIMD in mattr:
        # Without contraction LLVM keeps most a*b+c as a multiply and an add:
        # EfficientNet-Lite0 had 1515 f32x4.relaxed_madd and 1379 f32x4.mul
        # left over; with it, 2946 and none. A fused multiply-add rounds once
        # instead of twice, which relaxed_madd allows anyway.
        target["fast-math-contract"] = True
    return tvm.target.Target(target)


def tir_pipeline(target):
    """The TIR pipeline that builds kernels for `target`: TVM's default, or
    for a threaded target the default followed by parallel_noalias's
    outlining, which gives the parallel loops' bodies back the `noalias`
    their lambdas lose."""
    if int(target.attrs.get("num-cores", 1)) > 1:
        from wasmml import parallel_noalias

        return parallel_noalias.pipeline_name()
    return "default"


def tuning_slug(features):
    """The directory name of a tuning database for these wasm features:
    "+simd128" -> simd128, "+simd128,+relaxed-simd" -> simd128+relaxed-simd."""
    return "+".join(f.lstrip("+") for f in _feature_list(features)) or "mvp"


def _feature_list(features):
    """"+simd128, +relaxed-simd" -> ["+simd128", "+relaxed-simd"]"""
    return [f.strip() for f in features.split(",") if f.strip()]


def thread_count(value):
    """TVM_THREADS as an int >= 1; ValueError with the one-line reason.
    Not 'auto' (the build machine's cores): a module runs elsewhere, and
    WASI cannot tell it how many it has; $TVM_NUM_THREADS can at run time."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ValueError(f"TVM_THREADS={value!r}: expected a number of threads, 1 or more")
    return n


def tuning_subdir(pipeline, features, threads=1):
    """Where, under a model's tuning/, its database for this pipeline, these
    features and this thread count lives (nhwc/simd128, nhwc/simd128+threads2):
    each pipeline makes other kernels, so each has databases of its own, and
    a threaded build's schedules have parallel loops sized for its threads."""
    return os.path.join(pipeline, tuning_slug(features) + (f"+threads{threads}" if threads > 1 else ""))


def find_tuning_db(model_dir, pipeline, features, threads=1):
    """The database a build of the model in `model_dir` applies, or None:
    its own, else, for relaxed SIMD, the plain SIMD128 one (the same
    kernels, and schedules valid on both: only the multiply-adds compile
    differently); a threaded build without a database of its threads takes
    the single-threaded one's (parallelize() then splits their outer loops)."""
    fallback = fallback_features(features)
    candidates = [features] + ([fallback] if fallback else [])
    for n in [threads] + ([1] if threads > 1 else []):
        for candidate in candidates:
            db = os.path.join(model_dir, "tuning", tuning_subdir(pipeline, candidate, n))
            if os.path.isfile(os.path.join(db, RECORDS_FILE)):
                return db
    return None


def fallback_features(features):
    """The features whose database a build with `features` applies when it
    has none of its own ("+simd128" for "+simd128,+relaxed-simd"), or None."""
    features = _feature_list(features)
    if RELAXED_SIMD not in features:
        return None
    return ",".join(f for f in features if f != RELAXED_SIMD)


def lower(mod, target, pipeline, tuning_db=None, stages=None):
    """The module lowered for `target`; kernels that `tuning_db` (a
    MetaSchedule JSON database from tune_model.py) has records for get
    their best tuned schedule, the others stay as TVM writes them."""
    from tvm import relax

    with target:
        if PIPELINES[pipeline] is not None:
            mod = PIPELINES[pipeline](mod, stages)
        if tuning_db:
            with best_schedules(tuning_db):
                mod = relax.transform.MetaScheduleApplyDatabase()(mod)
            if stages is not None:
                stages.note(_tuned_kernels(mod))
        if pipeline == "prepack":  # the weights' layout rewrites, folded into new constants
            mod = relax.transform.SplitLayoutRewritePreproc()(mod)
            mod = relax.transform.FoldConstant()(mod)
            mod = relax.transform.DeadCodeElimination()(mod)
        return relax.get_pipeline("default")(mod)


def best_schedules(path):
    """An in-memory database holding only the fastest record of each kernel
    in the JSON database at `path`.

    TVM's own JSONDatabase replays every record's trace while it loads, on
    several threads, and that once failed at random inside TVM
    (parallel_for_dynamic: "old_outputs.size() == new_outputs.size()"). Here
    one thread replays one record per kernel, so a build is deterministic
    and does not pay for the records that lost."""
    from tvm.s_tir import meta_schedule as ms

    workloads = read_json_lines(os.path.join(path, WORKLOADS_FILE), "workload")
    best = {}
    for index, record in read_json_lines(os.path.join(path, RECORDS_FILE),
                                     "tuning record"):
        seconds = mean_run_seconds(record)
        if seconds is not None and (index not in best or seconds < best[index][0]):
            best[index] = (seconds, record)
    database = ms.database.MemoryDatabase()
    for index, (_, record) in sorted(best.items()):
        workload = ms.database.Workload.from_json(workloads[index])
        database.commit_workload(workload.mod)
        database.commit_tuning_record(ms.database.TuningRecord.from_json(record, workload))
    return database


def read_json_lines(path, what):
    """The JSON values of a file with one per line. A last line without its
    newline is a record that an interrupted tuning run was writing: it is
    left out (the next `scons tune` rewrites the file without it)."""
    try:
        with open(path) as f:
            text = f.read()
        lines = [line for line in text.splitlines() if line.strip()]
        if lines and not text.endswith("\n") and not _is_json(lines[-1]):
            lines.pop()
        return [json.loads(line) for line in lines]
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: not a readable {what} file ({_first_line(e)})")


def _is_json(text):
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def mean_run_seconds(record):
    """Mean measured time of a record, None for a failed measurement."""
    run_secs = record[1] if len(record) > 1 else None
    if not run_secs:
        return None
    seconds = [float(s) for s in run_secs]
    mean = sum(seconds) / len(seconds)
    return mean if mean < 1e9 else None  # MetaSchedule writes 1e10 for a failed run


def _tuned_kernels(mod):
    import tvm

    kernels = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    tuned = sum(1 for f in kernels if f.attrs and f.attrs.get("tirx.is_scheduled", False))
    return f"{tuned}/{len(kernels)} kernels tuned"


# A parallel loop inside serial loops is launched once per iteration of
# theirs: ResNet50's 1x1 convolutions whose spatial loop sits inside a
# reduction loop of 256 ran 4.7x slower on 2 threads (a launch and a wake-up
# per iteration) than on one. Such loops are split and hoisted outside the
# reduction loops (_hoisted) where that is exact, else made parallel inside
# at most this many launches, else left serial.
MAX_LAUNCHES = 8


def parallelize(mod, threads):
    """Kernels whose loops run on the runtime's thread pool: in each kernel,
    one loop of each top-level loop nest becomes a parallel loop, which
    TVM's codegen turns into a lambda and a call of TVMBackendParallelLaunch
    (rust/runtime/src/threads). Applied after the tuned schedules, which a
    single-threaded database made without parallel loops.

    The loop is one of the nest's leading serial loops (each the only
    statement of the one before) over which the iterations write disjoint
    data (_is_parallel_safe): the one whose iterations split most evenly
    among `threads` (a loop of 3 on 2 threads wastes a quarter), the
    outermost of equals, since a loop inside others is launched once per
    iteration of theirs: where that is so, a loop under loops of reductions
    only is split in `threads` chunks outside them instead (_hoisted).
    Rewritten on the TIR itself, not with a schedule:
    the loop-partitioned kernels of the default pipeline define block
    variables twice, which a schedule refuses. Returns the module and the
    number of parallel loops made."""
    import tvm

    count = 0
    funcs = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc) or not isinstance(func.body, tvm.s_tir.SBlockRealize):
            continue
        root = func.body.block
        body, made = _parallelize_nests(root.body, threads)
        if made:
            count += made
            block = tvm.s_tir.SBlock(root.iter_vars, root.reads, root.writes, root.name_hint, body,
                                     root.init, root.alloc_buffers, root.match_buffers, root.annotations)
            funcs[gv] = func.with_body(tvm.s_tir.SBlockRealize(func.body.iter_values,
                                                               func.body.predicate, block))
    for gv, func in funcs.items():
        mod[gv] = func
    return mod, count


def _parallelize_nests(stmt, threads):
    """(stmt with a parallel loop in each of its top-level nests that can
    have one, how many)."""
    import tvm

    if isinstance(stmt, tvm.tirx.SeqStmt):
        results = [_parallelize_nests(child, threads) for child in stmt.seq]
        if not any(made for _, made in results):
            return stmt, 0
        return tvm.tirx.SeqStmt([new for new, _ in results]), sum(made for _, made in results)
    if not isinstance(stmt, tvm.tirx.For):
        return stmt, 0
    chain = []  # the leading serial loops, each the only statement of the one before
    node = stmt
    while (isinstance(node, tvm.tirx.For) and node.kind == tvm.tirx.ForKind.SERIAL
           and node.thread_binding is None and isinstance(node.extent, tvm.tirx.IntImm)
           and isinstance(node.min, tvm.tirx.IntImm) and node.min.value == 0):
        chain.append(node)
        node = node.body
    best, best_score, best_launches, launches = None, 0.0, 1, 1
    for depth, loop in enumerate(chain):
        extent = loop.extent.value
        if launches > MAX_LAUNCHES:
            break
        if extent > 1 and _is_parallel_safe(loop.body, loop.loop_var):
            # the share of the threads' time spent working, less a launch's cost:
            # EfficientNet-Lite0's 7x7 depthwise kernels (0.09 ms) took 0.5 ms on 2
            # threads in 7 launches of their channels instead of 1 of their 7 columns
            score = extent / (threads * -(-extent // threads)) - 0.1 * math.log2(launches)
            if score > best_score + 1e-9:
                best, best_score, best_launches = depth, score, launches
        launches *= extent
    if best is not None and best_launches == 1:
        return _rebuilt(chain[:best + 1], chain[best].body, parallel=True), 1
    # inside loops of reductions: their loop made parallel outside them, launched once
    hoisted = _hoisted(chain, threads) if chain else None
    if hoisted is not None:
        return hoisted, 1
    if best is not None:
        return _rebuilt(chain[:best + 1], chain[best].body, parallel=True), 1
    if not chain:
        return stmt, 0
    # none of them (a tile loop of 1 around several nests): the nests inside
    body, made = _parallelize_nests(node, threads)
    return (_rebuilt(chain, body), made) if made else (stmt, 0)


def _hoisted(chain, threads):
    """The nest of `chain` with one of its data-parallel loops split in
    `threads` chunks and the chunks' loop made parallel outside the whole
    nest, or None. For a loop inside serial loops that bind only reduction
    variables (a 1x1 convolution's pixels inside its loop over input
    channels): launched once a call instead of once per iteration of
    theirs. Each output element's sums run in the same order, by one
    thread. Only where one block writes what the nest computes and no
    other block under it reads that, so the loops above carry no data from
    one chunk to another."""
    import tvm

    best, best_score = None, 0.0
    for depth, loop in enumerate(chain):
        extent = loop.extent.value
        if depth == 0 or extent < threads or not _is_parallel_safe(loop.body, loop.loop_var):
            continue
        outer = [l.loop_var for l in chain[:depth] if l.extent.value > 1]
        if not _only_reductions_above(loop, outer):
            continue
        score = extent / (threads * -(-extent // threads))
        if score > best_score + 1e-9:
            best, best_score = depth, score
    if best is None:
        return None
    loop = chain[best]
    dtype = str(loop.extent.ty)
    chunk = tvm.tirx.IntImm(dtype, -(-loop.extent.value // threads))
    task = tvm.tirx.Var(f"{loop.loop_var.name}_task", dtype)
    # the same loop variable over this task's chunk: the blocks' bindings stay as they are
    body = loop.body
    if chunk.value * threads != loop.extent.value:
        body = tvm.tirx.IfThenElse(loop.loop_var < loop.extent, body, None)
    body = tvm.tirx.For(loop.loop_var, task * chunk, chunk, tvm.tirx.ForKind.SERIAL, body, None,
                        loop.annotations)
    body = _rebuilt(chain[:best], body)
    return tvm.tirx.For(task, tvm.tirx.IntImm(dtype, 0), tvm.tirx.IntImm(dtype, threads),
                        tvm.tirx.ForKind.PARALLEL, body)


def _only_reductions_above(loop, outer):
    """Whether the loops over `outer`, around `loop`, bind only reduction
    variables of the blocks under it, and the one block under it that
    writes outside it reads nothing another writes."""
    import tvm

    realizes, local, _ = _blocks(loop.body)
    shared = [r for r in realizes
              if not all(any(_data(w).same_as(b) for b in local) for w in r.block.writes)]
    if len(shared) != 1:
        return False
    written = [_data(w) for w in shared[0].block.writes]
    for realize in realizes:
        for iter_var, value in zip(realize.block.iter_vars, realize.iter_values):
            used = tvm.tirx.analysis.undefined_vars(value)
            if (iter_var.iter_type == tvm.tirx.IterVar.DataPar
                    and any(v.same_as(o) for v in used for o in outer)):
                return False
        if realize is not shared[0] and any(_data(r).same_as(w) for r in realize.block.reads for w in written):
            return False
    return True


def _rebuilt(chain, body, parallel=False):
    """The loops of `chain` around `body`, the innermost made parallel."""
    import tvm

    for i, loop in enumerate(reversed(chain)):
        kind = tvm.tirx.ForKind.PARALLEL if parallel and i == 0 else loop.kind
        body = tvm.tirx.For(loop.loop_var, loop.min, loop.extent, kind, body, loop.thread_binding,
                            loop.annotations)
    return body


def _is_parallel_safe(stmt, var):
    """Whether the iterations of a loop over `var` with body `stmt` write
    disjoint data: each block under it (looking inside opaque ones) binds
    `var` to data-parallel block variables only, and one that does not bind
    it at all writes only buffers allocated under the loop."""
    import tvm

    realizes, local, stores = _blocks(stmt)
    for realize in realizes:
        bound = False
        for iter_var, value in zip(realize.block.iter_vars, realize.iter_values):
            if any(v.same_as(var) for v in tvm.tirx.analysis.undefined_vars(value)):
                if iter_var.iter_type != tvm.tirx.IterVar.DataPar:
                    return False
                bound = True
        if not bound and not all(any(_data(w).same_as(b) for b in local) for w in realize.block.writes):
            return False
    return bool(realizes) and not stores


def _data(region):
    """The data variable of the buffer a block's read or write region is of."""
    return region.source.data


def _blocks(stmt):
    """(the blocks under `stmt`, looking inside opaque ones, as
    SBlockRealize; the data of buffers allocated under it; the stores
    outside any block)."""
    import tvm

    realizes, local, stores = [], [], []

    def walk(node):
        if isinstance(node, tvm.s_tir.SBlockRealize):
            local.extend(b.data for b in node.block.alloc_buffers)
            if not node.block.iter_vars:  # an opaque block: what is inside says
                walk(node.block.body)
                return
            realizes.append(node)
            return  # a block's writes are its own: its variables say where
        if isinstance(node, tvm.tirx.SeqStmt):
            for child in node.seq:
                walk(child)
        elif isinstance(node, tvm.tirx.IfThenElse):
            walk(node.then_case)
            if node.else_case is not None:
                walk(node.else_case)
        elif isinstance(node, tvm.tirx.BufferStore):
            stores.append(node)  # a write outside any block: nothing says where
        elif hasattr(node, "body"):
            walk(node.body)

    walk(stmt)
    return realizes, local, stores


def build_object(mod, target, path):
    from tvm import relax

    ex = relax.build(mod, target, relax_pipeline=None, tir_pipeline=tir_pipeline(target),
                     system_lib=True)
    ex.mod.imports[0].write_to_file(path)


# --- what a static plan cannot hold ------------------------------------------

def _has_unknown_shapes(func):
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
    what = (f"node '{node.name or '(unnamed)'}' (operator {_operator_name(node)}) makes a tensor "
            f"whose shape depends on the data ({dims})" if node is not None else
            "the graph makes a tensor whose shape depends on the data")
    return (f"{what}; a wasm plan needs every shape fixed at build time: export the model "
            "with that part done outside it, or with a fixed-size variant of the operator")


def _inferred_shapes(model, shapes):
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


def _node_outputs(model, shapes):
    """(node, output, elem_type, dims) of every node output, in graph order,
    with what ONNX's shape inference knows of it (None where nothing)."""
    known = _inferred_shapes(model, shapes)
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
    largest = max(plan["tensors"], key=lambda t: _nbytes(t["dtype"], t["shape"]))
    size = _nbytes(largest["dtype"], largest["shape"])
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

    elements = _elements(tensor["shape"])
    for node, out, elem_type, dims in _node_outputs(model, shapes):
        if (dims and None not in dims and _elements(dims) == elements and
                np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name == tensor["dtype"]):
            return f", made by node '{node.name or out}' (operator {_operator_name(node)})"
    return ""


# --- which node TVM fails on --------------------------------------------------

def tvm_failure(step, error, model, shapes, pipeline, target):
    """The ModelError for TVM failing to `step` ("lower" or "compile") the
    graph. TVM's message names neither node nor operator (its importer keeps
    no trace of them), so this names the first node that fails alone."""
    node, reason = failing_node(model, shapes, pipeline, target, compile_kernels=step == "compile")
    if node is None:
        return ModelError(f"TVM cannot {step} the graph: {_first_line(error)}")
    return ModelError(
        f"TVM cannot {step} node '{node.name or node.output[0]}' (operator {_operator_name(node)}): "
        f"{reason}; change that node in the model (another operator, or its inputs "
        "cast to a type TVM supports for it) or export the model without it")


def failing_node(model, shapes, pipeline, target, compile_kernels=False):
    """(node, TVM's reason) for the first node, in graph order, that TVM
    fails to lower (and with compile_kernels, to compile) as a graph of its
    own, its inputs typed and shaped as ONNX's inference says; (None, None)
    if none does. Only a diagnosis once the whole graph has failed: each
    kind of node (operator, attributes, input types) is tried once."""
    known = _inferred_shapes(model, shapes)
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
            return node, _first_line(e)
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


# --- the execution plan ----------------------------------------------------

class PlanBuilder:
    """Turns the lowered `main` (a straight line of storage allocations,
    tensor views, kernel calls and reshapes) into a static plan: every tensor
    gets a fixed place in one arena or in the weights blob."""

    IGNORED = {"relax.vm.kill_object", "relax.null_value"}
    IGNORED_BUILTINS = {"vm.builtin.check_tensor_info", "vm.builtin.match_shape"}

    def __init__(self):
        self.tensors = []          # plan entries
        self.values = {}           # relax Var -> tensor index, arena offset or tuple
        self.arena = 0
        self.weights = bytearray()
        self.const_ids = {}        # constant handle -> tensor index
        self.steps = []
        self.kernels = []

    def _tensor(self, dtype, shape, region, offset):
        self.tensors.append({"dtype": dtype, "shape": [int(d) for d in shape],
                             "region": region, "offset": int(offset)})
        return len(self.tensors) - 1

    def _arena_alloc(self, nbytes):
        offset = self.arena
        self.arena = _align(self.arena + int(nbytes))
        return offset

    def _constant(self, const):
        key = const.value.__chandle__()
        if key not in self.const_ids:
            array = const.value.numpy()
            offset = len(self.weights)
            self.weights += array.tobytes()
            self.weights += bytes(_align(len(self.weights)) - len(self.weights))
            self.const_ids[key] = self._tensor(str(array.dtype), array.shape, "weights", offset)
        return self.const_ids[key]

    def _arg(self, arg):
        import tvm
        from tvm import relax

        if isinstance(arg, relax.Var):
            return {"tensor": self.values[arg]}
        if hasattr(arg, "value") and isinstance(arg.value, tvm.runtime.Tensor):
            return {"tensor": self._constant(arg)}
        if isinstance(arg, tvm.tirx.IntImm):
            return {"int": int(arg.value)}
        raise ModelError(f"unsupported kernel argument in plan: {arg}")

    def _tensor_like(self, var, shape):
        return str(var.ty.dtype), [int(d) for d in shape]

    def bind(self, var, value):
        import tvm
        from tvm import relax

        if isinstance(value, relax.Var):
            self.values[var] = self.values[value]
        elif isinstance(value, relax.Tuple):
            self.values[var] = tuple(self._arg(f)["tensor"] for f in value.fields)
        elif isinstance(value, relax.TupleGetItem):
            self.values[var] = self.values[value.tuple_value][value.index]
        elif not isinstance(value, relax.Call):
            raise ModelError(f"unsupported statement in plan: {value}")
        elif isinstance(value.op, relax.GlobalVar):
            name = value.op.name_hint
            if name not in self.kernels:
                self.kernels.append(name)
            self.steps.append({"kernel": name, "args": [self._arg(a) for a in value.args]})
        elif isinstance(value.op, relax.ExternFunc):
            self._builtin(var, value)
        elif isinstance(value.op, tvm.ir.Op):
            self._vm_op(var, value)
        else:
            raise ModelError(f"unsupported call in plan: {value.op}")

    def _builtin(self, var, call):
        symbol = call.op.global_symbol
        if symbol in self.IGNORED_BUILTINS:
            return
        if symbol != "vm.builtin.reshape":
            raise ModelError(f"unsupported VM builtin in plan: {symbol}")
        src = self.tensors[self._arg(call.args[0])["tensor"]]
        dtype, shape = self._tensor_like(var, call.args[1].values)
        self.values[var] = self._tensor(dtype, shape, src["region"], src["offset"])

    def _vm_op(self, var, call):
        name = call.op.name
        if name in self.IGNORED:
            return
        if name == "relax.vm.alloc_storage":
            self.values[var] = self._arena_alloc(call.args[0].values[0])
        elif name == "relax.vm.alloc_tensor":
            base = self.values[call.args[0]]
            offset = int(call.args[1].value) if hasattr(call.args[1], "value") else int(call.args[1])
            dtype, shape = self._tensor_like(var, call.args[2].values)
            self.values[var] = self._tensor(dtype, shape, "arena", base + offset)
        else:
            raise ModelError(f"unsupported VM operation in plan: {name}")

    def build(self, func, input_names, output_names):
        from tvm import relax

        inputs = []
        for param, name in zip(func.params, input_names):
            dtype, shape = self._tensor_like(param, param.ty.shape.values)
            self.values[param] = self._tensor(dtype, shape, "arena",
                                              self._arena_alloc(_nbytes(dtype, shape)))
            inputs.append({"name": name, "tensor": self.values[param]})
        for block in func.body.blocks:
            for binding in block.bindings:
                self.bind(binding.var, binding.value)
        out = self._outputs(func.body.body)
        if len(out) != len(output_names):
            raise ModelError(f"graph has {len(output_names)} outputs but TVM produced {len(out)}")
        return {
            "format": PLAN_FORMAT,
            "arena_size": self.arena,
            "weights_size": len(self.weights),
            "kernels": self.kernels,
            "tensors": self.tensors,
            "inputs": inputs,
            "outputs": [{"name": n, "tensor": t} for n, t in zip(output_names, out)],
            "steps": self.steps,
        }

    def _outputs(self, result):
        """The tensors of main's result: a tuple of them, a variable (bound
        to a tensor or a tuple), or a constant (a graph whose only output is
        an initializer or a Constant node)."""
        from tvm import relax

        if isinstance(result, relax.Tuple):
            return [self._arg(f)["tensor"] for f in result.fields]
        if isinstance(result, relax.Var):
            out = self.values[result]
            return list(out) if isinstance(out, tuple) else [out]
        return [self._arg(result)["tensor"]]


def _nbytes(dtype, shape):
    import numpy as np

    return _elements(shape) * np.dtype(dtype).itemsize


# --- writing ----------------------------------------------------------------

def write_outputs(args, plan, weights, obj_path):
    """Write every artifact beside its final name, then rename them all, so a
    failure or a kill never leaves a partial artifact under a final name."""
    staged = []
    try:
        archive_tmp = args.archive + ".tmp"
        member = os.path.join(os.path.dirname(obj_path), args.name + ".o")
        os.replace(obj_path, member)
        if os.path.exists(archive_tmp):
            os.remove(archive_tmp)
        # D: deterministic (no timestamps, uids); s: write the symbol index.
        ar = subprocess.run([args.llvm_ar, "rcsD", archive_tmp, member],
                            capture_output=True, text=True)
        if ar.returncode != 0:
            raise OSError(f"{os.path.basename(args.llvm_ar)}: {_tool_error(ar)}")
        staged.append((archive_tmp, args.archive))
        staged.append((_write_tmp(args.plan, json.dumps(plan, indent=1, sort_keys=True).encode()), args.plan))
        staged.append((_write_tmp(args.weights, bytes(weights)), args.weights))
        for tmp, final in staged:
            os.replace(tmp, final)
    except BaseException:
        for tmp, final in staged:
            for path in (tmp, final):
                if os.path.exists(path):
                    os.remove(path)
        raise


def _tool_error(proc):
    """What a failed tool said: its error line, not the stack dump after it
    (llvm-ar aborts on a full disk: "LLVM ERROR: IO failure ...")."""
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or [f"exited with {proc.returncode}"])[0][:300]


def _write_tmp(final, data):
    tmp = final + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    return tmp


def remove_outputs(args):
    for path in (args.archive, args.plan, args.weights):
        for p in (path, path + ".tmp"):
            if os.path.exists(p):
                os.remove(p)


def check_python(*modules):
    """The interpreter must be the one that has TVM (the project's .venv)."""
    for module in modules:
        try:
            __import__(module)
        except ImportError as e:
            raise ModelError(f"{sys.executable} cannot import {module} ({e}); "
                             "run tools/setup.sh and build with .venv/bin/scons")


def compile_model(args, stages):
    meta = read_meta(args.meta)
    check_python("onnx")
    model = load_onnx(args.onnx)
    check_meta(meta, model, args.meta)
    check_python("tvm")
    shapes = input_shapes(model, meta, args.input_shape)
    output_names = [o.name for o in model.graph.output]
    mod = to_relax(model, shapes, args.pipeline)
    stages.done("imported")
    target = wasm_target(args.target_features, args.threads)
    try:
        lowered = lower(mod, target, args.pipeline, args.tuning_db, stages)
    except Exception as e:  # noqa: BLE001 -- TVM raises its own kinds
        raise tvm_failure("lower", e, model, shapes, args.pipeline, target)
    if _has_unknown_shapes(lowered["main"]):
        raise ModelError(unknown_shape_cause(model, shapes))
    if args.threads > 1:
        lowered, count = parallelize(lowered, args.threads)
        stages.note(f"{count} parallel loops")
    builder = PlanBuilder()
    plan = builder.build(lowered["main"], list(shapes), output_names)
    check_memory(plan, model, shapes)
    stages.done("lowered")
    with tempfile.TemporaryDirectory() as tmp:
        obj = os.path.join(tmp, "kernels.o")
        try:
            build_object(lowered, target, obj)
        except Exception as e:  # noqa: BLE001
            raise tvm_failure("compile", e, model, shapes, args.pipeline, target)
        stages.done("kernels built")
        try:
            write_outputs(args, plan, builder.weights, obj)
        except OSError as e:
            raise ModelError(_write_error(e, args.archive))


def _write_error(e, default_path):
    """One line for a failure to write the artifacts (a read-only or full
    build directory), naming the file."""
    return f"cannot write {e.filename or default_path} ({e.strerror or e})"


class CapturedStderr:
    """Holds TVM's and LLVM's native log lines (written straight to fd 2)
    while compiling: a good build stays quiet, a failed one can show them."""

    def __enter__(self):
        sys.stderr.flush()
        self.file = tempfile.TemporaryFile(mode="w+b")
        self.saved = os.dup(2)
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.seek(0)
        self.text = self.file.read().decode(errors="replace")
        self.file.close()
        return False


def main(argv=None):
    args = parse_args(argv)
    log = CapturedStderr()
    stages = Stages()
    try:
        try:
            remove_outputs(args)
        except OSError as e:
            raise ModelError(_write_error(e, args.archive))
        with log:
            compile_model(args, stages)
    except ModelError as e:
        with contextlib.suppress(OSError):
            remove_outputs(args)
        print(f"error: model '{args.name}': {e}", file=sys.stderr)
        return 1
    except BaseException:
        remove_outputs(args)
        sys.stderr.write(getattr(log, "text", ""))
        raise
    if not args.quiet:
        print(stages.summary(args.name), flush=True)
    return 0


if __name__ == "__main__":
    # run as a script ($TVMCOM): its sibling modules are imported as wasmml.*
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
