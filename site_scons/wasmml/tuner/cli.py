"""Tune one model's kernels with TVM's MetaSchedule, into a tuning database
that ordinary builds apply (the compiler's --tuning-db).

Run by `scons tune` (never implicitly). The kernels are the ones
the compiler schedules: the same import and the same pipeline passes,
so every tuned workload matches a kernel of the build. The search space has
vectors of at most 4 floats (SIMD128), and parallel loops only for a
threaded build (--threads N > 1, TVM_THREADS), sized for N cores.

Candidates are measured where they will run (--measure wasmtime, the
default): each is compiled for wasm32 with the build's features, linked
into a module of its own and timed in wasmtime (wasm_measure.py).
--measure native times them instead on a native proxy target with 128-bit
vectors, which is faster to tune but ranks them by LLVM's x86 code, not
by what Cranelift makes of the wasm.

Resumable: records are appended to the database as they are measured, and
a task that already has --trials-per-task records is not tuned again, so an
interrupted run picks up where it stopped.

    python -m wasmml.tuner --name NAME --onnx M.onnx --meta model.json --database DIR
        [--trials-per-task 64] [--focus N] [--kernels TEXT,...] [--input-shape NAME=D0,...]

A database for relaxed SIMD starts from the plain SIMD128 one beside it,
which its builds apply until then: each kernel's best schedules there are
measured again with the new features and stored as its first records, and
the search goes on from them (seed).

Before the search, the hand-written schedules of depthwise, 1x1 and
Winograd convolutions (depthwise.py, pointwise.py, winograd_schedule.py)
that the database has no record of are measured into it, once each
(hand_written).

Every run ends with a report of where an inference's time goes by the
database: the costliest kernels, their calls, times and GFLOP/s.

--focus N spends the trials where the time goes: a second run with more
trials per task and --focus 8 tunes only the 8 kernels that the records so
far say cost the model most. --kernels winograd tunes only the kernels whose
names contain "winograd": after a change to how those compute, whose new
workloads have no records yet, the others are left as they are.

"""

import argparse
import os
import sys
import time

from wasmml.compiler.errors import ModelError
from wasmml.compiler.options import DEFAULT_PIPELINE
from wasmml.compiler.pipelines import PIPELINES
from wasmml.tuner.database import measurement, open_database, prune, remeasure
from wasmml.tuner.report import named, report, task_records, time_share
from wasmml.tuner.search import (COST_MODEL, import_tensor_intrinsics, measurement_setup,
                                 model_kernels, search, space, trials_wanted)
from wasmml.tuner.seeding import hand_written, seed, seed_database


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m wasmml.tuner", description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True)
    p.add_argument("--onnx", required=True)
    p.add_argument("--meta", required=True)
    p.add_argument("--database", required=True, help="directory of the JSON tuning database")
    p.add_argument("--trials-per-task", type=int, default=64)
    p.add_argument("--focus", type=int, default=0, metavar="N",
                   help="tune only the N kernels that take the most time by the database "
                        "so far (best time x calls per inference); 0: every kernel")
    p.add_argument("--kernels", default="", metavar="TEXT,...",
                   help="tune only the kernels whose names contain one of these texts "
                        "(default: every kernel)")
    p.add_argument("--logs", help="MetaSchedule's logs (default: DATABASE/../logs)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,...")
    p.add_argument("--target-features", default="+simd128",
                   help="wasm features of the build the database is for")
    p.add_argument("--pipeline", default=DEFAULT_PIPELINE, choices=sorted(set(PIPELINES) - {"default"}),
                   help="the compile pipeline the database is for")
    p.add_argument("--measure", choices=("wasmtime", "native"), default="wasmtime",
                   help="where candidates are timed (default: wasmtime)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="the database is for a build with N threads (TVM_THREADS): parallel loops "
                        "in the search space; candidates are timed natively on N threads "
                        "(wasmtime's measurement has no thread pool yet)")
    p.add_argument("--prune", action="store_true",
                   help="afterwards, drop the workloads and records of kernels the model no "
                        "longer has (after a change to the compiler or the model)")
    return p.parse_args(argv)


def tune(args):
    import tvm
    from tvm.s_tir import meta_schedule as ms

    target, builder, runner = measurement_setup(args)
    import_tensor_intrinsics()
    tasks = ms.relax_integration.extract_tasks(
        model_kernels(args.onnx, args.meta, args.pipeline, args.target_features, args.input_shape), target)
    os.makedirs(args.database, exist_ok=True)
    database = open_database(args.database)
    database = remeasure(args.database, database, tasks, target, builder, runner, measurement(args.measure))
    seed_dir = seed_database(args)
    if seed_dir:
        seed(tasks, database, seed_dir, target, builder, runner)
    selected = [i for i, task in enumerate(tasks) if not args.kernels or named(task, args.kernels)]
    hand_written([tasks[i] for i in selected], database, target, builder, runner)
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        tasks, work_dir=args.logs or os.path.join(args.database, os.pardir, "logs"), space=space(args.threads),
        strategy=search(args.trials_per_task), num_threads=os.cpu_count() or 1)
    to_go = {i: trials_wanted(contexts[i], args.trials_per_task) - task_records(database, tasks[i])
             for i in selected}
    todo = [i for i in selected if to_go[i] > 0]
    if args.focus:
        todo = sorted(todo, key=lambda i: time_share(database, tasks[i]), reverse=True)[:args.focus]
    print(f"  {args.name}: {len(tasks)} kernels, {len(tasks) - len(todo)} already tuned"
          f"{' or left out' if args.focus or args.kernels else ''}, "
          f"tuning {len(todo)} with {args.trials_per_task} trials each", flush=True)
    for trials, group in by_trials_to_go(todo, to_go):
        ms.tune.tune_tasks(tasks=[contexts[i] for i in group], task_weights=[weights[i] for i in group],
                           work_dir=args.database, max_trials_global=trials * len(group),
                           max_trials_per_task=trials, num_trials_per_iter=16,
                           database=database, cost_model=COST_MODEL, builder=builder, runner=runner)
    if todo:
        database = open_database(args.database)  # drops what this run added and cannot be replayed
    if args.prune:
        prune(args.database, database, tasks)
    report(args.name, database, tasks)


def by_trials_to_go(todo, to_go):
    """[(trials, kernels)]: the kernels of `todo` grouped by the trials each
    still wants (its --trials-per-task less the records it has), one search
    a group. MetaSchedule counts only the trials of the search at hand, so
    a run after an interrupted one, or with more trials per task, measures
    what is missing rather than the whole count again."""
    groups = {}
    for i in todo:
        groups.setdefault(to_go[i], []).append(i)
    return sorted(groups.items(), reverse=True)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    try:
        tune(args)
    except ModelError as e:
        print(f"error: model '{args.name}': {e}", file=sys.stderr)
        return 1
    print(f"  {args.name}: tuned in {time.monotonic() - started:.0f}s", flush=True)
    return 0
