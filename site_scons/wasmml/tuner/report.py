"""Where an inference's time goes by the database: the costliest kernels,
their calls, times and GFLOP/s.
"""

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

    costs = sorted(((time_share(database, t), t) for t in tasks), key=lambda c: c[0], reverse=True)
    measured = [(share, t) for share, t in costs if share > 0]
    total = sum(share for share, _ in measured)
    print(f"  {name}: {total * 1e3:.1f} ms an inference by the database ({len(measured)} of "
          f"{len(tasks)} kernels measured); the costliest:", flush=True)
    for share, task in measured[:REPORTED_KERNELS]:
        per_call = share / task.weight
        rate = estimate_tir_flops(task.dispatched[0]) / per_call / 1e9
        print(f"    {share * 1e3:7.2f} ms {share / total:4.0%}  {task.weight:3d} x {per_call * 1e3:7.3f} ms "
              f"{rate:6.1f} GFLOP/s  {task.task_name}", flush=True)


def time_share(database, task):
    """What a kernel costs an inference by the database so far: its best
    measured time times its calls; 0 without records (a first run, without
    --focus, tunes every kernel; the global-average-pool reduction keeps no
    records, and a focused run would waste its trials on it again)."""
    mod = task.dispatched[0]
    if not database.has_workload(mod):
        return 0.0
    best = database.get_top_k(database.commit_workload(mod), 1)
    return float(best[0].run_secs[0]) * task.weight if best else 0.0


def named(task, texts):
    """Whether the kernel's name contains one of the comma-separated texts."""
    return any(text and text in task.task_name for text in texts.split(","))


def task_records(database, task):
    mod = task.dispatched[0]
    if not database.has_workload(mod):
        return 0
    return len(database.get_top_k(database.commit_workload(mod), 1 << 30))
