"""Records a search does not find by itself: a relaxed-SIMD database's first
records, the best of the SIMD128 one's measured again (seed), and the
hand-written schedules of our kernels, each measured once (hand_written).
"""

import os

from wasmml.compiler import kernels
from wasmml.tuner.database import replay
from wasmml.tuner.report import task_records
from wasmml.tuner.search import measure_candidates
from wasmml.tuning_db import fallback_features, find_tuning_db


# How many of each kernel's best schedules a new database starts from.
SEED_RECORDS = 4


def seed_database(args):
    """The database a new one for these features starts from: the one their
    builds apply until they have their own (for relaxed SIMD, the model's
    plain SIMD128 one), if that exists; else None."""
    fallback = fallback_features(args.target_features)
    model_dir = os.path.dirname(os.path.abspath(args.meta))
    return find_tuning_db(model_dir, args.pipeline, fallback) if fallback else None


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
        if task_records(database, task) == 0 and source.has_workload(mod):
            workload = database.commit_workload(mod)
            for record in source.get_top_k(source.commit_workload(mod), SEED_RECORDS):
                scheduled = replay(record, workload)
                if scheduled is not None:
                    candidates.append((workload, record, scheduled))
    print(f"  measuring {len(candidates)} schedules of {seed_dir} again, for these features",
          flush=True)
    run_secs = measure_candidates([c[2] for c in candidates], [c[1].args_info for c in candidates],
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

    groups = unmeasured_hand_written(tasks, database)
    print(f"  measuring {sum(len(g[3]) for g in groups)} hand-written schedules", flush=True)
    batch = []  # (group, schedule or None for the group's fastest record, module)
    for group in groups:
        workload, _, best, new = group
        reference = replay(best, workload) if best else None
        if reference is not None:
            batch.append((group, None, reference))
        batch += [(group, sch, sch.mod) for sch in new]
    run_secs = measure_candidates([b[2] for b in batch], [b[0][1] for b in batch], target, builder, runner)
    scale = {}  # id(group) -> the database's time of its fastest record over its time now
    for (group, sch, _), secs in zip(batch, run_secs):
        workload, args_info, best, _ = group
        if sch is None:
            if secs:
                scale[id(group)] = mean(best.run_secs) / mean(secs)
        elif secs:
            secs = [t * scale.get(id(group), 1.0) for t in secs]
            database.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, secs, target, args_info))
    if scale:
        ratios = sorted(scale.values())
        print(f"  (stored on the database's scale: its fastest records ran "
              f"{1 / ratios[len(ratios) // 2]:.2f}x their recorded times, the median of {len(ratios)})",
              flush=True)


def unmeasured_hand_written(tasks, database):
    """[(workload, its arguments, its fastest record or None, the
    hand-written schedules the database has no record of)] for the tasks
    that have any."""
    from tvm.s_tir import meta_schedule as ms

    groups = []
    for task in tasks:
        mod = task.dispatched[0]
        schedules = kernels.hand_written_schedules(mod)
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


def mean(secs):
    return sum(float(t) for t in secs) / len(secs)
