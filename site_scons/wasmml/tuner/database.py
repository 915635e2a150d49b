"""The tuning database on disk as the tuner keeps it: opened and repaired
(records whose trace no longer replays are pruned), and measured again
when the way kernels are timed changes (measurement.json).
"""

import json
import os

from wasmml import staging
from wasmml.tuner.search import measure_candidates
from wasmml.tuning_db import RECORDS_FILE, WORKLOADS_FILE, mean_run_seconds, read_json_lines


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
    workloads = read_json_lines(os.path.join(path, WORKLOADS_FILE), "workload") \
        if os.path.isfile(os.path.join(path, WORKLOADS_FILE)) else []
    records = read_json_lines(os.path.join(path, RECORDS_FILE), "tuning record") \
        if os.path.isfile(os.path.join(path, RECORDS_FILE)) else []
    if records:
        kept = _timed_again(records, workloads, database, tasks, target, builder, runner)
        text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in kept)
        staging.write_into_place(os.path.join(path, RECORDS_FILE), text.encode())
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
        best = sorted((r for i, r in records if i == index and mean_run_seconds(r) is not None),
                      key=mean_run_seconds)
        for raw in best[:REMEASURED_RECORDS]:
            record = ms.database.TuningRecord.from_json(raw, workload)
            scheduled = replay(record, workload)
            if scheduled is not None:
                chosen.append((index, raw, record.args_info, scheduled))
    print(f"  the database was timed another way: timing {len(chosen)} of its best schedules again "
          f"({MEASUREMENT['caches']})", flush=True)
    run_secs = measure_candidates([c[3] for c in chosen], [c[2] for c in chosen], target, builder, runner)
    return [[index, [raw[0], secs] + raw[2:]] for (index, raw, _, _), secs in zip(chosen, run_secs) if secs]


def replay(record, workload):
    """The workload's module scheduled by the record's trace, or None for a
    record that does not replay (as open_database drops)."""
    from tvm.s_tir import Schedule

    sch = Schedule(workload.mod)
    try:
        record.trace.apply_to_schedule(sch, remove_postproc=False)
    except Exception:  # noqa: BLE001 -- TVM raises its own kinds
        return None
    return sch.mod


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
                 for w in read_json_lines(os.path.join(path, WORKLOADS_FILE), "workload")]
    records = os.path.join(path, RECORDS_FILE)
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
    workloads = read_json_lines(os.path.join(path, WORKLOADS_FILE), "workload")
    records = read_json_lines(os.path.join(path, RECORDS_FILE), "tuning record")
    new_index = {}
    for old, workload in enumerate(workloads):
        if workload[0] in current:
            new_index[old] = len(new_index)
    kept = [[new_index[r[0]], r[1]] for r in records if r[0] in new_index]
    for name, lines in ((WORKLOADS_FILE, [workloads[i] for i in new_index]),
                        (RECORDS_FILE, kept)):
        text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
        staging.write_into_place(os.path.join(path, name), text.encode())
    print(f"  pruned {len(workloads) - len(new_index)} of {len(workloads)} workloads and "
          f"{len(records) - len(kept)} of {len(records)} records of kernels the model no longer has",
          flush=True)
