"""Measure TVM kernels where they will run: compiled for wasm32, linked into
a module of their own and timed in wasmtime, with the engine settings that
run the built programs.

MetaSchedule's export step and runner for `scons tune` (wasmml.tuner), so
candidate schedules are ranked by their speed in wasmtime, not by a native
proxy's: Cranelift allocates registers and selects instructions its own
way, and a schedule that LLVM keeps in x86 registers can spill under it.

Each kernel module imports the few host functions a TVM kernel calls
(workspace allocation, error reporting) from "env"; this file defines them
for the measurement, as rust/runtime does for the built programs.
"""
import os
import subprocess
import tempfile
import time

import numpy as np
import wasmtime

from wasmml import toolchain
from wasmml.compiler.plan import align
from wasmml.compiler.target import tir_pipeline

ENTRY = "__tvm_ffi_main"  # TVM-FFI's safe-call symbol of the PrimFunc "main"
STACK_BYTES = 1 << 20
PAGE = 65536
ANY_BYTES = 16  # TVMFFIAny
DLTENSOR_BYTES = 40  # DLTensor on wasm32 (rust/runtime/src/ffi.rs)
TYPE_DLTENSOR_PTR = 7
DLPACK_CODES = {"int": 0, "uint": 1, "float": 2, "bfloat": 4, "bool": 6}


def build_kernel(mod, target, params):
    """MetaSchedule's f_build: what its default build does, as a system
    library like the compiler's, so the kernel calls the host functions
    directly (a dynamic library's would call them through pointers a loader
    fills in). Unlike the default, it does not first import TVM's tensor
    intrinsics: a wasm kernel uses none of them, and registering them costs
    each fresh worker process about 25 s."""
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod.with_attr("system_lib_prefix", ""))
    return tvm.tirx.build(mod, target=target, pipeline=tir_pipeline(target))


def export_wasm(rt_mod):
    """MetaSchedule's f_export: the built kernel (an LLVM module for wasm32)
    linked into kernel.wasm in a new temporary directory; returns its path."""
    out_dir = tempfile.mkdtemp(prefix="wasmml-kernel-")
    obj, wasm = os.path.join(out_dir, "kernel.o"), os.path.join(out_dir, "kernel.wasm")
    rt_mod.write_to_file(obj)
    link = toolchain.find_wasm_ld() + [
        "--no-entry", f"--export={ENTRY}", "--export=__heap_base", "--allow-undefined",
        "-z", f"stack-size={STACK_BYTES}", "-o", wasm, obj]
    proc = subprocess.run(link, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"linking the kernel failed: {proc.stderr.strip()}")
    return wasm


class KernelError(Exception):
    """The kernel returned non-zero, trapped, or imports an unknown function."""


class Kernel:
    """One linked kernel module, instantiated with its arguments laid out in
    its linear memory (random floats, zero integers)."""

    def __init__(self, engine, wasm_path, args_info, seed=0):
        self.store = wasmtime.Store(engine)
        module = wasmtime.Module.from_file(engine, wasm_path)
        self.error = None
        instance = wasmtime.Instance(self.store, module, [self._import(i) for i in module.imports])
        exports = instance.exports(self.store)
        self.memory = exports["memory"]
        self.entry = exports[ENTRY]
        self.top = align(exports["__heap_base"].value(self.store))
        self.args = self._lay_out(args_info, np.random.default_rng(seed))
        self.workspace_base = self.top

    # --- host functions ----------------------------------------------------

    def _import(self, imp):
        host = {
            "TVMBackendAllocWorkspace": self._alloc_workspace,
            "TVMBackendFreeWorkspace": lambda *_: 0,
            "TVMFFIErrorSetRaisedFromCStrParts": self._raised_parts,
            "TVMFFIErrorSetRaisedFromCStr": self._raised,
            "TVMFFIEnvModRegisterSystemLibSymbol": lambda *_: 0,
        }.get(imp.name)
        if host is None or imp.module != "env":
            def host(*_, name=f"{imp.module}.{imp.name}"):
                raise KernelError(f"the kernel calls {name}, which measurement does not provide")
        return wasmtime.Func(self.store, imp.type, host)

    def _alloc_workspace(self, _device_type, _device_id, nbytes, _code, _bits):
        return self._reserve(nbytes)

    def _raised(self, kind, message):
        self.error = f"{self._c_str(kind)}: {self._c_str(message)}"

    def _raised_parts(self, kind, parts, num_parts):
        words = [int.from_bytes(self._read(parts + 4 * i, 4), "little") for i in range(num_parts)]
        self.error = f"{self._c_str(kind)}: " + "".join(self._c_str(w) for w in words if w)

    # --- linear memory -----------------------------------------------------

    def _read(self, ptr, n):
        return self.memory.read(self.store, ptr, ptr + n)

    def _c_str(self, ptr):
        data = self._read(ptr, min(4096, self.memory.data_len(self.store) - ptr))
        return data.split(b"\0", 1)[0].decode("utf-8", "replace")

    def _reserve(self, nbytes):
        ptr = self.top
        self.top = align(ptr + int(nbytes))
        short = self.top - self.memory.data_len(self.store)
        if short > 0:
            self.memory.grow(self.store, (short + PAGE - 1) // PAGE)
        return ptr

    def _lay_out(self, args_info, rng):
        """The TVMFFIAny array of DLTensor pointers that the kernel takes."""
        anys = self._reserve(ANY_BYTES * len(args_info))
        self.tensors = []
        for i, info in enumerate(args_info):
            dtype = np.dtype(str(info.dtype))
            shape = [int(d) for d in info.shape]
            data = (rng.uniform(-1, 1, shape) if dtype.kind == "f" else np.zeros(shape)).astype(dtype)
            data_ptr = self._reserve(max(data.nbytes, 1))
            self.memory.write(self.store, data.tobytes(), data_ptr)
            self.tensors.append((data_ptr, dtype, shape))
            shape_ptr = self._reserve(8 * len(shape))
            self.memory.write(self.store, np.array(shape, dtype="<i8").tobytes(), shape_ptr)
            tensor = self._reserve(DLTENSOR_BYTES)
            self.memory.write(self.store, _dltensor(data_ptr, shape_ptr, len(shape), str(info.dtype)),
                              tensor)
            any_value = (np.array([TYPE_DLTENSOR_PTR, 0], "<i4").tobytes()
                         + np.array([tensor], "<u8").tobytes())
            self.memory.write(self.store, any_value, anys + ANY_BYTES * i)
        self.result = self._reserve(ANY_BYTES)
        return (anys, len(args_info))

    def tensor(self, i):
        """Argument i as it is now in linear memory."""
        ptr, dtype, shape = self.tensors[i]
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return np.frombuffer(self._read(ptr, nbytes), dtype=dtype).reshape(shape)

    # --- running -----------------------------------------------------------

    def call(self):
        self.top = self.workspace_base  # workspaces live for one call
        try:
            status = self.entry(self.store, 0, self.args[0], self.args[1], self.result)
        except wasmtime.Trap as e:
            raise KernelError(f"the kernel trapped: {' '.join(str(e).split())}")
        if status != 0:
            raise KernelError(self.error or f"the kernel returned {status}")

    def flush_all_but_input(self):
        """Evicts every argument but the first from the CPU's caches, as a
        whole inference finds them: the first (the layer's input) was just
        written by the kernel before, but its weights were last read an
        inference ago, after some 150 MB of others for ResNet50. Timed with
        its weights in cache, as every call after the first would find them,
        ResNet50's Winograd kernels took 3.9 and 5.1 ms where they take 6.8
        and 8.2 in an inference, and the search ranked them by that."""
        import tvm

        tvm.get_global_func("cache_flush_cpu_non_first_arg")(*self.host_views())

    def host_views(self):
        """The arguments as TVM tensors over the host memory that holds
        them in linear memory (not copies)."""
        import ctypes

        import tvm

        base = ctypes.addressof(self.memory.data_ptr(self.store).contents)
        return [tvm.runtime.from_dlpack(np.ctypeslib.as_array(
                    (ctypes.c_uint8 * max(int(np.prod(shape)) * dtype.itemsize, 1)).from_address(base + ptr)))
                for ptr, dtype, shape in self.tensors]

    def time(self, number, repeat, min_repeat_ms, cold=True):
        """Seconds per call, `repeat` times: each the mean of at least
        `number` calls, more if those took under `min_repeat_ms`. With
        `cold`, each call starts with all but its first argument out of
        the caches (flush_all_but_input), and only the calls are timed."""
        self.call()  # warm-up: page faults
        results = []
        for _ in range(repeat):
            calls, elapsed = 0, 0.0
            while calls == 0 or elapsed * 1e3 < min_repeat_ms:
                for _ in range(number):
                    if cold:
                        self.flush_all_but_input()
                    start = time.perf_counter()
                    self.call()
                    elapsed += time.perf_counter() - start
                calls += number
            results.append(elapsed / calls)
        return results


def _dltensor(data_ptr, shape_ptr, ndim, dtype):
    name = dtype.rstrip("0123456789")
    bits = int(dtype[len(name):] or 8)
    header = np.array([data_ptr, 1, 0, ndim], "<u4").tobytes()  # data, device (CPU, 0), ndim
    dl_dtype = bytes([DLPACK_CODES[name], bits]) + (1).to_bytes(2, "little")
    rest = np.array([shape_ptr, 0, 0], "<u4").tobytes() + (0).to_bytes(8, "little")
    return header + dl_dtype + rest  # ... strides (null), padding, byte_offset


def engine():
    """An engine with the settings the built programs run with (wasmtime run's defaults)."""
    return wasmtime.Engine()


def runner(number=3, repeat=1, min_repeat_ms=20):
    """A MetaSchedule runner that times each candidate (a kernel.wasm from
    export_wasm) in wasmtime, in this process, one at a time."""
    from tvm.s_tir.meta_schedule.runner import PyRunner
    from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture
    from tvm.ir.utils import derived_object

    @derived_object
    class WasmtimeRunner(PyRunner):
        def __init__(self):
            super().__init__()
            self.engine = engine()

        def run(self, runner_inputs):
            return [self._run_one(i) for i in runner_inputs]

        def _run_one(self, runner_input):
            try:
                kernel = Kernel(self.engine, runner_input.artifact_path, runner_input.args_info)
                return LocalRunnerFuture(res=kernel.time(number, repeat, min_repeat_ms))
            except (KernelError, wasmtime.WasmtimeError, OSError) as e:
                return LocalRunnerFuture(error_message=f"wasmtime: {e}")
            # MetaSchedule removes the artifact's directory after the run

    return WasmtimeRunner()

