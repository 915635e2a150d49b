"""The compiler's command line ($TVMCOM): one ONNX model into a static archive
of kernels, an execution plan and the weights. Every failure the user can
cause ends in one line, `error: model 'NAME': CAUSE`, exit status 1, and
no output file.
"""

import argparse
import contextlib
import os
import sys
import tempfile
import time

from wasmml.compiler.artifacts import build_object, remove_outputs, write_error, write_outputs
from wasmml.compiler.diagnosis import check_memory, has_unknown_shapes, tvm_failure, unknown_shape_cause
from wasmml.compiler.errors import ModelError
from wasmml.compiler.onnx_import import check_meta, input_shapes, load_onnx, read_meta, to_relax
from wasmml.compiler.options import DEFAULT_PIPELINE
from wasmml.compiler.parallel import parallelize
from wasmml.compiler.pipelines import PIPELINES, lower
from wasmml.compiler.plan import PlanBuilder
from wasmml.compiler.target import wasm_target


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m wasmml.compiler", description=__doc__)
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
    p.add_argument("--tuning-db", help="MetaSchedule JSON database to apply (wasmml.tuner)")
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
    if has_unknown_shapes(lowered["main"]):
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
            raise ModelError(write_error(e, args.archive))


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
            raise ModelError(write_error(e, args.archive))
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
