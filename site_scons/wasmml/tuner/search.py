"""MetaSchedule's search as the tuner runs it: the model's kernels as tasks,
the search space (SIMD128 vectors, parallel loops only for threads), the
cost model, and how candidates are built and timed (in wasmtime, or on a
native proxy).
"""

import json
import os

from wasmml.compiler.errors import ModelError
from wasmml.compiler.onnx_import import input_shapes, load_onnx, to_relax
from wasmml.compiler.pipelines import PIPELINES
from wasmml.compiler.target import wasm_target


# x86-64 with SSE4.2: 128-bit vectors like simd128; one core: no threads.
PROXY_TARGET = {"kind": "llvm", "mcpu": "x86-64", "mattr": ["+sse4.2"], "num-cores": 1}
VECTOR_LANES = 4  # f32 lanes in a 128-bit vector
COST_MODEL = os.environ.get("WASMML_TUNE_COST_MODEL", "xgb")


def model_kernels(onnx, meta, pipeline, features, input_shape=()):
    """The model as the compiler has it just before scheduling (used by
    tools/bench_inference.py too, to count what the kernels compute)."""
    import json

    with open(meta) as f:
        meta = json.load(f)
    model = load_onnx(onnx)
    mod = to_relax(model, input_shapes(model, meta, input_shape), pipeline)
    with wasm_target(features):
        return PIPELINES[pipeline](mod)


# MetaSchedule's default: a parallel loop gets up to this many jobs a core.
JOBS_PER_CORE = 16


def space(threads=1):
    """MetaSchedule's LLVM search space, with parallel loops only for a
    threaded build (sized by the target's num-cores)."""
    from tvm.s_tir import meta_schedule as ms

    rules = [r for r in ms.schedule_rule.ScheduleRule.create("llvm")
             if not isinstance(r, ms.schedule_rule.ParallelizeVectorizeUnroll)]
    rules.append(ms.schedule_rule.ParallelizeVectorizeUnroll(
        max_jobs_per_core=JOBS_PER_CORE if threads > 1 else -1, max_vectorize_extent=4 * VECTOR_LANES,
        unroll_max_steps=[0, 16, 64, 512], unroll_explicit=True))
    return ms.space_generator.PostOrderApply(sch_rules=rules, postprocs="llvm", mutator_probs="llvm")


def search(trials_per_task):
    """MetaSchedule's evolutionary search, with a population in proportion to
    the trials (at most its default of 512): each generation costs time in
    proportion to the population, and a run of few trials measures only
    a few candidates of it."""
    from tvm.s_tir import meta_schedule as ms

    return ms.search_strategy.EvolutionarySearch(population_size=min(512, max(64, 8 * trials_per_task)))


def measure_candidates(mods, args_infos, target, builder, runner):
    """Seconds per call of each scheduled kernel (None where it fails): all
    built in one batch, as the search builds its candidates, then run."""
    import shutil

    from tvm.s_tir import meta_schedule as ms

    if not mods:
        return []
    built = builder.build([ms.builder.BuilderInput(mod, target) for mod in mods])
    results = []
    for b, args_info in zip(built, args_infos):
        if b.error_msg:
            results.append(None)
            continue
        try:
            ran = runner.run([ms.runner.RunnerInput(b.artifact_path, target.kind.name, args_info)])
            result = ran[0].result()
        finally:
            shutil.rmtree(os.path.dirname(b.artifact_path), ignore_errors=True)
        results.append(None if result.error_msg else [float(s) for s in result.run_secs])
    return results


def import_tensor_intrinsics():
    """Imports TVM's tensor intrinsics, which every TuneContext imports
    first, in 6 s instead of 27. TVMScript's parser calls inspect.stack()
    for each of their hundreds of functions, and inspect.getmodule then
    scans all of sys.modules for every frame of code that has no file. A
    frame's module depends only on its file name, so the scans are
    remembered by file name while the import runs."""
    import inspect

    scan = inspect.getmodule
    known = {}

    def getmodule(obj, _filename=None):
        if _filename is None or not inspect.isframe(obj):
            return scan(obj, _filename)
        if _filename not in known:
            known[_filename] = scan(obj, _filename)
        return known[_filename]

    inspect.getmodule = getmodule
    try:
        import tvm.s_tir.tensor_intrin  # noqa: F401
    finally:
        inspect.getmodule = scan


def trials_wanted(context, trials):
    """How many records make a kernel tuned: `trials`, or fewer when its
    search space has fewer candidates (a transpose's has one schedule and
    no decisions to vary)."""
    designs = context.generate_design_space()
    if any(design.trace.decisions for design in designs):
        return trials
    return min(trials, len(designs))


# Each build batch starts fresh worker processes that import TVM: on a busy
# machine that takes a while, and a build timeout counts as a failed trial.
BUILD_TIMEOUT_S = 120


def measurement_setup(args):
    """(target to tune for, MetaSchedule builder, runner) for --measure."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    if args.threads > 1 and args.measure != "native":
        raise ModelError(f"--threads {args.threads}: candidates with parallel loops are timed "
                            "natively (TUNE_MEASURE=native); wasmtime's measurement has no thread pool")
    if args.measure == "native":
        return (tvm.target.Target(dict(PROXY_TARGET, **{"num-cores": args.threads})),
                ms.builder.LocalBuilder(timeout_sec=BUILD_TIMEOUT_S),
                ms.runner.LocalRunner(evaluator_config=ms.runner.EvaluatorConfig(
                    number=3, repeat=1, min_repeat_ms=20, enable_cpu_cache_flush=True)))
    from wasmml.tuner import wasm_measure

    # the builder's worker processes unpickle build_kernel by its module name
    site = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (site, os.environ.get("PYTHONPATH")) if p)
    target = tvm.target.Target(dict(wasm_target(args.target_features).export(), **{"num-cores": 1}))
    builder = ms.builder.LocalBuilder(f_build=wasm_measure.build_kernel,
                                      f_export=wasm_measure.export_wasm, timeout_sec=BUILD_TIMEOUT_S)
    return target, builder, wasm_measure.runner(number=3, repeat=1, min_repeat_ms=20)
