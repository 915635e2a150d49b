"""Threaded builds' parallel loops: parallelize() rewrites each kernel's TIR so
that every top-level loop nest has one parallel loop (design.md, Threads).
"""

import math


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
