"""The Relax pipelines by name (default, fold-fuse, prepack, nhwc) and lower():
the pipeline, then the tuning database's best schedules, then TVM's lowering.
"""

import os

from wasmml.compiler.errors import first_line
from wasmml.tuning_db import RECORDS_FILE, WORKLOADS_FILE, mean_run_seconds, read_json_lines


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

    from wasmml.compiler import kernels

    if "relax.nn.conv2d" not in _operators(mod["main"]):
        return _fold_fuse(mod)
    try:
        converted = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]})(mod)
    except Exception as e:  # noqa: BLE001 -- TVM raises its own kinds
        if stages is not None:
            stages.note(f"convolutions kept in NCHW (TVM's ConvertLayout: {first_line(e)})")
        converted = mod
    return _fold_fuse(kernels.rewrite_convolutions(converted))


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
# pipelines that change layouts import some operators in forms they can move
# (_layout_friendly_import)
LAYOUT_PIPELINES = {"nhwc"}


def lower(mod, target, pipeline, tuning_db=None, stages=None):
    """The module lowered for `target`; kernels that `tuning_db` (a
    MetaSchedule JSON database from wasmml.tuner) has records for get
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


def _tuned_kernels(mod):
    import tvm

    kernels = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    tuned = sum(1 for f in kernels if f.attrs and f.attrs.get("tirx.is_scheduled", False))
    return f"{tuned}/{len(kernels)} kernels tuned"
