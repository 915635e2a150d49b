"""Tune one model's kernels with TVM's MetaSchedule, into a tuning database
that ordinary builds apply (compile_model.py --tuning-db).

Run by `scons tune` (never implicitly). The kernels are the ones
compile_model.py schedules: the same import and the same pipeline passes,
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

    python tune_model.py --name NAME --onnx M.onnx --meta model.json --database DIR
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from wasmml import compile_model as cm  # noqa: E402
from wasmml import staging  # noqa: E402

# x86-64 with SSE4.2: 128-bit vectors like simd128; one core: no threads.
PROXY_TARGET = {"kind": "llvm", "mcpu": "x86-64", "mattr": ["+sse4.2"], "num-cores": 1}
VECTOR_LANES = 4  # f32 lanes in a 128-bit vector
COST_MODEL = os.environ.get("WASMML_TUNE_COST_MODEL", "xgb")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    p.add_argument("--pipeline", default=cm.DEFAULT_PIPELINE, choices=sorted(set(cm.PIPELINES) - {"default"}),
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


def kernels(onnx, meta, pipeline, features, input_shape=()):
    """The model as compile_model.py has it just before scheduling (used by
    tools/bench_inference.py too, to count what the kernels compute)."""
    import json

    with open(meta) as f:
        meta = json.load(f)
    model = cm.load_onnx(onnx)
    mod = cm.to_relax(model, cm.input_shapes(model, meta, input_shape), pipeline)
    with cm.wasm_target(features):
        return cm.PIPELINES[pipeline](mod)


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


def tune(args):
    import tvm
    from tvm.s_tir import meta_schedule as ms

    target, builder, runner = _measurement(args)
    import_tensor_intrinsics()
    tasks = ms.relax_integration.extract_tasks(
        kernels(args.onnx, args.meta, args.pipeline, args.target_features, args.input_shape), target)
    os.makedirs(args.database, exist_ok=True)
    database = open_database(args.database)
    database = remeasure(args.database, database, tasks, target, builder, runner, measurement(args.measure))
    seed_dir = _seed_database(args)
    if seed_dir:
        seed(tasks, database, seed_dir, target, builder, runner)
    selected = [i for i, task in enumerate(tasks) if not args.kernels or _named(task, args.kernels)]
    hand_written([tasks[i] for i in selected], database, target, builder, runner)
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        tasks, work_dir=args.logs or os.path.join(args.database, os.pardir, "logs"), space=space(args.threads),
        strategy=search(args.trials_per_task), num_threads=os.cpu_count() or 1)
    to_go = {i: _trials_wanted(contexts[i], args.trials_per_task) - _records(database, tasks[i])
             for i in selected}
    todo = [i for i in selected if to_go[i] > 0]
    if args.focus:
        todo = sorted(todo, key=lambda i: _time_share(database, tasks[i]), reverse=True)[:args.focus]
    print(f"  {args.name}: {len(tasks)} kernels, {len(tasks) - len(todo)} already tuned"
          f"{' or left out' if args.focus or args.kernels else ''}, "
          f"tuning {len(todo)} with {args.trials_per_task} trials each", flush=True)
    for trials, group in _by_trials_to_go(todo, to_go):
        ms.tune.tune_tasks(tasks=[contexts[i] for i in group], task_weights=[weights[i] for i in group],
                           work_dir=args.database, max_trials_global=trials * len(group),
                           max_trials_per_task=trials, num_trials_per_iter=16,
                           database=database, cost_model=COST_MODEL, builder=builder, runner=runner)
    if todo:
        database = open_database(args.database)  # drops what this run added and cannot be replayed
    if args.prune:
        prune(args.database, database, tasks)
    report(args.name, database, tasks)


def _by_trials_to_go(todo, to_go):
    """[(trials, kernels)]: the kernels of `todo` grouped by the trials each
    still wants (its --trials-per-task less the records it has), one search
    a group. MetaSchedule counts only the trials of the search at hand, so
    a run after an interrupted one, or with more trials per task, measures
    what is missing rather than the whole count again."""
    groups = {}
    for i in todo:
        groups.setdefault(to_go[i], []).append(i)
    return sorted(groups.items(), reverse=True)


# How many of each kernel's best schedules a new database starts from.
SEED_RECORDS = 4


def _seed_database(args):
    """The database a new one for these features starts from: the one their
    builds apply until they have their own (for relaxed SIMD, the model's
    plain SIMD128 one), if that exists; else None."""
    fallback = cm.fallback_features(args.target_features)
    model_dir = os.path.dirname(os.path.abspath(args.meta))
    return cm.find_tuning_db(model_dir, args.pipeline, fallback) if fallback else None


def seed(tasks, database, seed_dir, target, builder, runner):
    """Measures each kernel's best schedules in `seed_dir` again, for
    `target`, into `database`, for the kernels that have no records there
    yet. The search then starts from them instead of from nothing: a
    relaxed-SIMD database, for one, would otherwise spend its first trials
    finding again what SIMD128's already knows, while its own measurements
    rank them by what fused multiply-adds make of them."""
    from tvm.s_tir import meta_schedule as ms

    source = ms.database.JSONDatabase(work_dir=seed_dir)
    candidates = []  # (workload in `database`, record of `source`, the module it schedules)
    for task in tasks:
        mod = task.dispatched[0]
        if _records(database, task) == 0 and source.has_workload(mod):
            workload = database.commit_workload(mod)
            for record in source.get_top_k(source.commit_workload(mod), SEED_RECORDS):
                scheduled = _replay(record, workload)
                if scheduled is not None:
                    candidates.append((workload, record, scheduled))
    print(f"  measuring {len(candidates)} schedules of {seed_dir} again, for these features",
          flush=True)
    run_secs = _measure([c[2] for c in candidates], [c[1].args_info for c in candidates],
                        target, builder, runner)
    for (workload, record, _), secs in zip(candidates, run_secs):
        if secs:
            database.commit_tuning_record(
                ms.database.TuningRecord(record.trace, workload, secs, target, record.args_info))


def hand_written(tasks, database, target, builder, runner):
    """Measures the hand-written schedules of the kernels (depthwise.py,
    pointwise.py, winograd_schedule.py) that `database` has no record of
    yet, into it: each is measured once, like a trial, and a build applies
    it where it is the fastest.

    This machine's speed drifts by 10% from hour to hour, and a kernel's
    records may be hours old. So each kernel's fastest record is timed
    again in the same batch, and the new schedules' times are stored on
    the database's scale: times its recorded time over its time now."""
    from tvm.s_tir import meta_schedule as ms

    groups = _unmeasured_hand_written(tasks, database)
    print(f"  measuring {sum(len(g[3]) for g in groups)} hand-written schedules", flush=True)
    batch = []  # (group, schedule or None for the group's fastest record, module)
    for group in groups:
        workload, _, best, new = group
        reference = _replay(best, workload) if best else None
        if reference is not None:
            batch.append((group, None, reference))
        batch += [(group, sch, sch.mod) for sch in new]
    run_secs = _measure([b[2] for b in batch], [b[0][1] for b in batch], target, builder, runner)
    scale = {}  # id(group) -> the database's time of its fastest record over its time now
    for (group, sch, _), secs in zip(batch, run_secs):
        workload, args_info, best, _ = group
        if sch is None:
            if secs:
                scale[id(group)] = _mean(best.run_secs) / _mean(secs)
        elif secs:
            secs = [t * scale.get(id(group), 1.0) for t in secs]
            database.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, secs, target, args_info))
    if scale:
        ratios = sorted(scale.values())
        print(f"  (stored on the database's scale: its fastest records ran "
              f"{1 / ratios[len(ratios) // 2]:.2f}x their recorded times, the median of {len(ratios)})",
              flush=True)


def _unmeasured_hand_written(tasks, database):
    """[(workload, its arguments, its fastest record or None, the
    hand-written schedules the database has no record of)] for the tasks
    that have any."""
    from tvm.s_tir import meta_schedule as ms

    from wasmml import depthwise, pointwise, winograd_schedule

    groups = []
    for task in tasks:
        mod = task.dispatched[0]
        schedules = [sch for source in (depthwise, pointwise, winograd_schedule)
                     for sch in source.candidates(mod)]
        if not schedules:
            continue
        workload = database.commit_workload(mod)
        records = database.get_top_k(workload, 1 << 30)
        known = {str(r.trace) for r in records}
        new = [s for s in schedules if str(s.trace) not in known]
        if new:
            args_info = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
            groups.append((workload, args_info, records[0] if records else None, new))
    return groups


def _mean(secs):
    return sum(float(t) for t in secs) / len(secs)


# How the runners time a kernel: the measurement a database's times come
# from, stored next to them. A database without it was timed with every
# argument in cache, which ranked ResNet50's Winograd kernels by speeds they
# do not have in an inference.
MEASUREMENT = {"caches": "all arguments but the first flushed before each timed call"}
MEASUREMENT_FILE = "measurement.json"


def measurement(measure):
    """MEASUREMENT for --measure: in wasmtime, with the engine's release too,
    since Cranelift's code and so the times change from one to the next
    (50.0.1 -> 51.0.0: ResNet50's relaxed-SIMD inference 2-3% faster)."""
    if measure != "wasmtime":
        return MEASUREMENT
    import importlib.metadata

    return dict(MEASUREMENT, engine=f"wasmtime {importlib.metadata.version('wasmtime')}")


# How many of each kernel's best records a database timed another way keeps,
# timed again.
REMEASURED_RECORDS = 8


def remeasure(path, database, tasks, target, builder, runner, how):
    """The database at `path`, with all its times comparable with the ones
    a search adds now, measured `how` (measurement()). One timed another
    way (its MEASUREMENT_FILE differs or is missing) keeps only each
    kernel's REMEASURED_RECORDS best records, timed again; the other records
    and the old times are dropped, since they would outrank or undercut the
    new ones. Nothing changes on disk until every kernel is timed: an
    interrupted run starts over."""
    import json

    marker = os.path.join(path, MEASUREMENT_FILE)
    if _read_measurement(marker) == how:
        return database
    workloads = cm.read_json_lines(os.path.join(path, cm.WORKLOADS_FILE), "workload") \
        if os.path.isfile(os.path.join(path, cm.WORKLOADS_FILE)) else []
    records = cm.read_json_lines(os.path.join(path, cm.RECORDS_FILE), "tuning record") \
        if os.path.isfile(os.path.join(path, cm.RECORDS_FILE)) else []
    if records:
        kept = _timed_again(records, workloads, database, tasks, target, builder, runner)
        text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in kept)
        staging.write_into_place(os.path.join(path, cm.RECORDS_FILE), text.encode())
        print(f"  kept {len(kept)} of {len(records)} records, timed again", flush=True)
    staging.write_into_place(marker, (json.dumps(how, indent=1) + "\n").encode())
    return open_database(path) if records else database


def _read_measurement(marker):
    import json

    try:
        with open(marker) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _timed_again(records, workloads, database, tasks, target, builder, runner):
    """The best REMEASURED_RECORDS records of each of the tasks' kernels, as
    database lines with their new times (records that fail are left out)."""
    from tvm.s_tir import meta_schedule as ms

    index_of = {w[0]: i for i, w in enumerate(workloads)}
    chosen = []  # (workload index, raw record, its arguments, the module it schedules)
    for task in tasks:
        if not database.has_workload(task.dispatched[0]):
            continue
        index = index_of.get(database.commit_workload(task.dispatched[0]).as_json()[0])
        workload = ms.database.Workload.from_json(workloads[index]) if index is not None else None
        best = sorted((r for i, r in records if i == index and cm.mean_run_seconds(r) is not None),
                      key=cm.mean_run_seconds)
        for raw in best[:REMEASURED_RECORDS]:
            record = ms.database.TuningRecord.from_json(raw, workload)
            scheduled = _replay(record, workload)
            if scheduled is not None:
                chosen.append((index, raw, record.args_info, scheduled))
    print(f"  the database was timed another way: timing {len(chosen)} of its best schedules again "
          f"({MEASUREMENT['caches']})", flush=True)
    run_secs = _measure([c[3] for c in chosen], [c[2] for c in chosen], target, builder, runner)
    return [[index, [raw[0], secs] + raw[2:]] for (index, raw, _, _), secs in zip(chosen, run_secs) if secs]


def _replay(record, workload):
    """The workload's module scheduled by the record's trace, or None for a
    record that does not replay (as open_database drops)."""
    from tvm.s_tir import Schedule

    sch = Schedule(workload.mod)
    try:
        record.trace.apply_to_schedule(sch, remove_postproc=False)
    except Exception:  # noqa: BLE001 -- TVM raises its own kinds
        return None
    return sch.mod


def _measure(mods, args_infos, target, builder, runner):
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


def _trials_wanted(context, trials):
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


def _measurement(args):
    """(target to tune for, MetaSchedule builder, runner) for --measure."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    if args.threads > 1 and args.measure != "native":
        raise cm.ModelError(f"--threads {args.threads}: candidates with parallel loops are timed "
                            "natively (TUNE_MEASURE=native); wasmtime's measurement has no thread pool")
    if args.measure == "native":
        return (tvm.target.Target(dict(PROXY_TARGET, **{"num-cores": args.threads})), ms.builder.LocalBuilder(timeout_sec=BUILD_TIMEOUT_S),
                ms.runner.LocalRunner(evaluator_config=ms.runner.EvaluatorConfig(
                    number=3, repeat=1, min_repeat_ms=20, enable_cpu_cache_flush=True)))
    from wasmml import wasm_measure

    # the builder's worker processes unpickle build_kernel by its module name
    site = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (site, os.environ.get("PYTHONPATH")) if p)
    target = tvm.target.Target(dict(cm.wasm_target(args.target_features).export(), **{"num-cores": 1}))
    builder = ms.builder.LocalBuilder(f_build=wasm_measure.build_kernel,
                                      f_export=wasm_measure.export_wasm, timeout_sec=BUILD_TIMEOUT_S)
    return target, builder, wasm_measure.runner(number=3, repeat=1, min_repeat_ms=20)


def open_database(path):
    """The JSON database at `path`, after dropping the records whose trace
    TVM cannot replay on their workload: MetaSchedule measures and stores
    them (seen for the global-average-pool reduction), but loading a
    database with one of them fails as a whole, which would fail the build."""
    import json

    from tvm.s_tir import meta_schedule as ms

    try:
        return ms.database.JSONDatabase(work_dir=path)
    except Exception:  # noqa: BLE001 -- TVM raises RuntimeError or its own kinds
        pass
    # Each workload is parsed once, and each record replayed on it as the
    # loader does. Loading the whole workload file once per record, as
    # before, would have taken hours on ResNet50's (68 workloads, 7 MB, and
    # 3,500 records); this takes about a minute.
    workloads = [ms.database.Workload.from_json(w)
                 for w in cm.read_json_lines(os.path.join(path, cm.WORKLOADS_FILE), "workload")]
    records = os.path.join(path, cm.RECORDS_FILE)
    with open(records) as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    kept = [line for line in lines if _replays(json.loads(line), workloads)]
    print(f"  dropped {len(lines) - len(kept)} of {len(lines)} records that TVM cannot replay",
          flush=True)
    staging.write_into_place(records, "".join(line + "\n" for line in kept).encode())
    return ms.database.JSONDatabase(work_dir=path)


def _replays(record, workloads):
    from tvm.s_tir import meta_schedule as ms

    index, value = record
    try:
        ms.database.TuningRecord.from_json(value, workloads[index])
        return True
    except Exception:  # noqa: BLE001 -- TVM raises its own kinds
        return False


def prune(path, database, tasks):
    """Rewrites the database at `path` with only the workloads of `tasks`
    and their records: a change to the compiler or the model leaves the
    old kernels' records behind, which no build reads."""
    import json

    current = {database.commit_workload(t.dispatched[0]).as_json()[0]
               for t in tasks if database.has_workload(t.dispatched[0])}
    workloads = cm.read_json_lines(os.path.join(path, cm.WORKLOADS_FILE), "workload")
    records = cm.read_json_lines(os.path.join(path, cm.RECORDS_FILE), "tuning record")
    new_index = {}
    for old, workload in enumerate(workloads):
        if workload[0] in current:
            new_index[old] = len(new_index)
    kept = [[new_index[r[0]], r[1]] for r in records if r[0] in new_index]
    for name, lines in ((cm.WORKLOADS_FILE, [workloads[i] for i in new_index]),
                        (cm.RECORDS_FILE, kept)):
        text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
        staging.write_into_place(os.path.join(path, name), text.encode())
    print(f"  pruned {len(workloads) - len(new_index)} of {len(workloads)} workloads and "
          f"{len(records) - len(kept)} of {len(records)} records of kernels the model no longer has",
          flush=True)


# How many of the costliest kernels report() lists.
REPORTED_KERNELS = 10


def report(name, database, tasks):
    """Where an inference's time goes by the database: the kernels that cost
    it most, with their calls, time per call and rate (the kernel's floating-
    point operations, as TVM counts them, per second in wasmtime). Its total
    is the sum of the best times, each kernel timed alone with its weights
    out of the caches: within about 5% of a whole inference (ResNet50's
    relaxed-SIMD database: 182.0 ms against 183.1 by `run-model --profile`)."""
    from tvm.s_tir.analysis import estimate_tir_flops

    costs = sorted(((_time_share(database, t), t) for t in tasks), key=lambda c: c[0], reverse=True)
    measured = [(share, t) for share, t in costs if share > 0]
    total = sum(share for share, _ in measured)
    print(f"  {name}: {total * 1e3:.1f} ms an inference by the database ({len(measured)} of "
          f"{len(tasks)} kernels measured); the costliest:", flush=True)
    for share, task in measured[:REPORTED_KERNELS]:
        per_call = share / task.weight
        rate = estimate_tir_flops(task.dispatched[0]) / per_call / 1e9
        print(f"    {share * 1e3:7.2f} ms {share / total:4.0%}  {task.weight:3d} x {per_call * 1e3:7.3f} ms "
              f"{rate:6.1f} GFLOP/s  {task.task_name}", flush=True)


def _time_share(database, task):
    """What a kernel costs an inference by the database so far: its best
    measured time times its calls; 0 without records (a first run, without
    --focus, tunes every kernel; the global-average-pool reduction keeps no
    records, and a focused run would waste its trials on it again)."""
    mod = task.dispatched[0]
    if not database.has_workload(mod):
        return 0.0
    best = database.get_top_k(database.commit_workload(mod), 1)
    return float(best[0].run_secs[0]) * task.weight if best else 0.0


def _named(task, texts):
    """Whether the kernel's name contains one of the comma-separated texts."""
    return any(text and text in task.task_name for text in texts.split(","))


def _records(database, task):
    mod = task.dispatched[0]
    if not database.has_workload(mod):
        return 0
    return len(database.get_top_k(database.commit_workload(mod), 1 << 30))


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    try:
        tune(args)
    except cm.ModelError as e:
        print(f"error: model '{args.name}': {e}", file=sys.stderr)
        return 1
    print(f"  {args.name}: tuned in {time.monotonic() - started:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
