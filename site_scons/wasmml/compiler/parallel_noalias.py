"""The TIR pipeline of threaded builds: TVM's own, then the body of every
parallel loop moved into a private PrimFunc whose pointer parameters are
`noalias`.

Why: TVM's codegen turns a parallel loop into a lambda that loads its
buffers' pointers from a closure, with no `noalias`. LLVM then cannot tell
that storing a sum leaves the inputs unchanged, and reloads them: ResNet50's
1x1 convolutions ran 6-30% slower on one thread inside a parallel loop than
outside one (docs/threads-noalias.md). A call of a `tirx.noalias` function,
which LLVM inlines back into the lambda, carries the fact across as
alias-scope metadata.

Only kernels that are `tirx.noalias` themselves are rewritten, and each
distinct allocation reaches the outlined body as one pointer, so the
parameters' `noalias` says nothing the kernel did not already say. A loop
whose body uses a raw pointer, or a buffer whose storage this pass cannot
trace, is left as TVM builds it.
"""

import tvm
import tvm_ffi
from tvm import tirx

NAME = "wasmml-parallel-noalias"


def pipeline_name():
    """The name under which tvm.tirx.build and relax.build(tir_pipeline=)
    find this pipeline, registered on first use in each process (the
    tuner's builds run in worker processes)."""
    from tvm.tirx import compilation_pipeline

    if NAME not in compilation_pipeline.PIPELINE_MAP:
        compilation_pipeline.register_tir_pipeline(NAME, _factory)
    return NAME


def _factory():
    lower, finalize_host, finalize_device = tvm.tirx.get_tir_pipeline("default")

    @tvm.transform.module_pass(opt_level=0, name="OutlineParallelBodies")
    def outline(mod, _ctx):
        return outline_parallel_bodies(lower(mod))

    return outline, finalize_host, finalize_device


def outline_parallel_bodies(mod):
    """`mod` (after MakePackedAPI) with the body of each parallel loop of
    each noalias kernel replaced by a call of a new private noalias
    PrimFunc; the loop variable and every other scalar the body reads are
    its parameters too."""
    updates = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc) or not _is_noalias(func):
            continue
        outliner = _Outliner(gv.name_hint, func.attrs["target"])
        body = outliner.visit(func.body)
        if outliner.bodies:
            updates[gv] = func.with_body(body)
            updates.update(outliner.bodies)
    for gv, func in updates.items():
        mod[gv] = func
    return mod


def _is_noalias(func):
    return bool(func.attrs and func.attrs.get("tirx.noalias", False) and "target" in func.attrs)


class _Outliner:
    """Walks a kernel's statements in order, recording the buffer
    declarations and device attributes in scope, and outlines each parallel
    loop it meets. It descends only through the statements that hold the
    loops after MakePackedAPI (SeqStmt, AttrStmt, IfThenElse, For); a loop
    under any other statement stays as it is."""

    def __init__(self, kernel_name, target):
        self.kernel_name = kernel_name
        self.target = target
        self.bodies = {}    # GlobalVar -> outlined PrimFunc
        self.storage = {}   # buffer Var -> its root: the buffer that owns the storage
        self.device = {}    # "device_id"/"device_type" -> the AttrStmt in scope

    def visit(self, stmt):
        if isinstance(stmt, tirx.SeqStmt):
            return tirx.SeqStmt([self.visit(s) for s in stmt.seq])
        if isinstance(stmt, tirx.DeclBuffer):
            self.storage[stmt.buffer] = self._root_of(stmt.data, stmt.buffer)
        elif isinstance(stmt, tirx.AllocBuffer):
            self.storage[stmt.buffer] = stmt.buffer
        elif isinstance(stmt, tirx.AttrStmt):
            return self._visit_attr(stmt)
        elif isinstance(stmt, tirx.IfThenElse):
            other = self.visit(stmt.else_case) if stmt.else_case is not None else None
            return tirx.IfThenElse(stmt.condition, self.visit(stmt.then_case), other)
        elif isinstance(stmt, tirx.For):
            if stmt.kind == tirx.ForKind.PARALLEL:
                return self._outlined(stmt)
            return _with_loop_body(stmt, self.visit(stmt.body))
        return stmt

    def _visit_attr(self, stmt):
        saved = self.device.get(stmt.attr_key)
        if stmt.attr_key in ("device_id", "device_type"):
            self.device[stmt.attr_key] = stmt
        body = self.visit(stmt.body)
        if stmt.attr_key in ("device_id", "device_type"):
            self.device[stmt.attr_key] = saved
        return tirx.AttrStmt(stmt.node, stmt.attr_key, stmt.value, body)

    def _root_of(self, data, buffer):
        """The buffer owning the storage that `data` points into: a view
        declared over another buffer's data shares that buffer's root."""
        if isinstance(data, tvm.ir.expr.Call) and getattr(data.op, "name", None) == "tirx.buffer_data" and data.args:
            return self.storage.get(data.args[0], data.args[0])
        return buffer

    def _outlined(self, loop):
        """The parallel loop calling a new PrimFunc that holds its body, or
        the loop unchanged where the body's inputs cannot all be passed
        safely."""
        body = loop.body
        for key in ("device_type", "device_id"):
            # LowerTVMBuiltin lowers an allocation inside the body only
            # under these, which sat outside the loop
            attr = self.device.get(key)
            if attr is not None:
                body = tirx.AttrStmt(attr.node, attr.attr_key, attr.value, body)
        free = list(tirx.analysis.undefined_vars(body, []))
        buffers = [v for v in free if tirx.buffer.is_buffer_var(v)]
        scalars = [v for v in free if not tirx.buffer.is_buffer_var(v)]
        if any(isinstance(v.ty, tvm.ir.PointerType) for v in scalars):
            return loop  # a raw pointer could alias a buffer: nothing to promise
        if any(v not in self.storage for v in buffers):
            return loop

        roots = []
        for v in buffers:
            if self.storage[v] not in roots:
                roots.append(self.storage[v])
        pointers = {root: tirx.Var(f"{root.name}_ptr", tirx.buffer.buffer_data_pointer_type(root))
                    for root in roots}
        views = [tirx.DeclBuffer(v, data=_pointer_as(pointers[self.storage[v]], v)) for v in buffers]
        callee_body = tirx.SeqStmt(views + [body, tirx.Return(tirx.IntImm("int32", 0))])
        params = [pointers[root] for root in roots] + scalars
        callee = (tirx.PrimFunc(params, callee_body, ret_type=tvm.ir.PrimType("int32"))
                  .with_attr("tirx.noalias", True)
                  .with_attr("target", self.target))
        gv = tvm.ir.GlobalVar(f"{self.kernel_name}_parallel_body{len(self.bodies)}")
        self.bodies[gv] = callee

        args = [tirx.buffer.buffer_data(root) for root in roots] + scalars
        call = tvm.ir.expr.Call(gv, args, ret_ty="int32")
        # a failure inside (a workspace TVM could not allocate) ends the task
        # with the error code, as it would have ended the lambda
        on_error = tirx.Evaluate(tirx.call_intrin("int32", "tirx.tvm_throw_last_error"))
        checked = tirx.IfThenElse(tirx.NE(call, tirx.IntImm("int32", 0)), on_error, None)
        return _with_loop_body(loop, checked)


def _pointer_as(pointer, view):
    """`pointer` typed as `view`'s data pointer (a float32x4 view of float32
    storage needs a cast)."""
    wanted = tirx.buffer.buffer_data_pointer_type(view)
    if tvm_ffi.structural_equal(wanted, pointer.ty):
        return pointer
    return tirx.reinterpret(wanted, pointer)


def _with_loop_body(loop, body):
    return tirx.For(loop.loop_var, loop.min, loop.extent, loop.kind, body,
                    loop.thread_binding, loop.annotations)
