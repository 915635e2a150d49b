"""The host side of waPC: an actor compiled once, run in many instances.

Every instance is its own wasmtime Store, so instances in different threads
run in parallel (wasmtime-py calls through ctypes, which releases the GIL).
A call gets a time budget through epoch interruption: one ticker thread
advances the shared Engine's epoch every TICK seconds, and each call sets
its deadline in ticks.

Host functions never raise. wasmtime-py keeps the exception of a failing
callback in one global that the next trap in *any* thread re-raises, so a
bad pointer from the guest is recorded on the instance instead, and the call
fails with `Trapped` once the guest returns or traps.
"""
import functools
import sys
import threading
import time

import wasmtime

from wascc import module_cache

TICK = 0.01  # seconds per epoch tick: the resolution of the time budget
PAGE = 65536
WASI = "wasi_snapshot_preview1"
OUT_OF_MEMORY = "out of memory"  # how a guest's error before a trap says an allocation failed

# the `wapc` imports a host provides: name -> (number of i32 params, returns an i32)
WAPC_IMPORTS = {
    "__guest_request": (2, False), "__guest_response": (2, False), "__guest_error": (2, False),
    "__host_call": (8, True), "__host_response_len": (0, True), "__host_response": (1, False),
    "__host_error_len": (0, True), "__host_error": (1, False), "__console_log": (2, False),
}


class ActorError(Exception):
    """A call or load that failed; the message is one line."""


class ModuleError(ActorError):
    """The module is not a waPC actor this host can run."""


class GuestError(ActorError):
    """The guest reported an error (`__guest_call` returned 0); the instance is fine."""


class Trapped(ActorError):
    """The instance trapped or misbehaved: it must be discarded."""


class TimedOut(Trapped):
    """The call ran out of its time budget and was interrupted."""


class OutOfMemory(Trapped):
    """The instance trapped with its memory at the limit (an allocation failed)."""


@functools.cache
def engine():
    """The one Engine of this process, and its epoch ticker (a daemon thread)."""
    config = wasmtime.Config()
    config.epoch_interruption = True
    eng = wasmtime.Engine(config)

    def tick():
        while True:
            time.sleep(TICK)
            eng.increment_epoch()
    threading.Thread(target=tick, name="epoch-ticker", daemon=True).start()
    return eng


class Actor:
    """A compiled waPC actor and the limits its instances run under."""

    def __init__(self, wasm, *, name="actor", timeout=10.0, max_memory=512 << 20,
                 cache_dir=None):
        self.name, self.timeout, self.max_memory = name, timeout, max_memory
        self.deadline = max(1, round(timeout / TICK))
        try:
            self.module = module_cache.load_module(engine(), wasm, cache_dir, flavor="epoch")
        except wasmtime.WasmtimeError as e:
            raise ModuleError(f"not a valid module: {one_line(e)}") from None
        self.uses_wasi = _check_imports(self.module)
        _check_exports(self.module)

    def instantiate(self):
        return Instance(self)


def _check_imports(module):
    """Whether the module imports WASI; refuses imports a waSCC host lacks."""
    uses_wasi = False
    for imp in module.imports:
        if imp.module == WASI:
            uses_wasi = True
        elif imp.module != "wapc" or imp.name not in WAPC_IMPORTS:
            raise ModuleError(f"imports `{imp.module}::{imp.name}`, which a waSCC host does not "
                              f"provide (only `wapc` and `{WASI}`)")
    return uses_wasi


def _check_exports(module):
    exports = {e.name: e.type for e in module.exports}
    call = exports.get("__guest_call")
    if not (isinstance(call, wasmtime.FuncType) and list(map(str, call.params)) == ["i32", "i32"]
            and list(map(str, call.results)) == ["i32"]):
        raise ModuleError("does not export `__guest_call(i32, i32) -> i32`: not a waPC actor")
    if not isinstance(exports.get("memory"), wasmtime.MemoryType):
        raise ModuleError("does not export its `memory`")


class Instance:
    """One running instance of an actor; not thread-safe (use one per thread)."""

    def __init__(self, actor):
        self.actor = actor
        self.store = wasmtime.Store(engine())
        self.store.set_limits(memory_size=actor.max_memory)
        linker = wasmtime.Linker(engine())
        for name, (nparams, returns) in WAPC_IMPORTS.items():
            ty = wasmtime.FuncType([wasmtime.ValType.i32()] * nparams,
                                   [wasmtime.ValType.i32()] if returns else [])
            linker.define_func("wapc", name, ty, self._guard(name, returns), access_caller=True)
        if actor.uses_wasi:  # no files, args or env; stderr so a panic is seen
            wasi = wasmtime.WasiConfig()
            wasi.inherit_stderr()
            self.store.set_wasi(wasi)
            linker.define_wasi()
        self._reset(b"", b"")
        try:
            instance = self._run(linker.instantiate, self.actor.module)
        except wasmtime.WasmtimeError as e:  # a missing or mistyped import, a too large memory
            self.close()
            raise ModuleError(f"cannot instantiate: {one_line(e)}") from None
        exports = instance.exports(self.store)
        self.memory = exports["memory"]
        self._guest_call = exports["__guest_call"]
        try:
            for init in ("_start", "wapc_init"):
                if isinstance(exports.get(init), wasmtime.Func):
                    self._run(exports[init])
        except Trapped:
            self.close()
            raise

    def close(self):
        """Frees the instance's store, its memory included. Required: the
        host functions live in wasmtime's global function table and hold
        this instance, which holds the store, so a discarded instance is
        never collected (a trapping 256 MiB guest leaked 256 MiB a request)."""
        self.store.close()

    def call(self, op, payload):
        """The guest's response to `op` with `payload` (bytes)."""
        self._reset(op.encode(), payload)
        try:
            ok = self._run(self._guest_call, len(self._op), len(payload))
        finally:
            self._op = self._msg = b""
        if not ok:
            raise GuestError(self._error or f"{op} failed without an error message")
        return self._response

    def _reset(self, op, msg):
        self._op, self._msg = op, msg
        self._response, self._error, self._fault = b"", "", None
        self._host_response, self._host_error = b"", b""

    def _run(self, func, *args):
        self.store.set_epoch_deadline(self.actor.deadline)
        try:
            result = func(self.store, *args)
        except wasmtime.Trap as e:
            raise self._trap_error(e) from None
        except wasmtime.ExitTrap as e:  # WASI proc_exit
            raise Trapped(f"exited with status {e.code}") from None
        if self._fault:
            raise Trapped(self._fault)
        return result

    def _trap_error(self, trap):
        if trap.trap_code == wasmtime.TrapCode.INTERRUPT:
            return TimedOut(f"timed out after {self.actor.timeout:g}s")
        limit = f"{self.actor.max_memory >> 20} MiB"
        if self._error.startswith(OUT_OF_MEMORY) and not self._fault:
            # the actor's allocator says so before the abort's trap
            return OutOfMemory(f"{self._error}; the limit is {limit}")
        message = self._fault or ": ".join(filter(None, (self._error, one_line(trap))))
        memory = getattr(self, "memory", None)
        if memory and memory.data_len(self.store) + PAGE > self.actor.max_memory:
            return OutOfMemory(f"{OUT_OF_MEMORY}: {message}, with memory at its {limit} limit")
        return Trapped(message)

    # ------------------------------------------------ the `wapc` imports

    def _guard(self, name, returns):
        """The host function `name`, which records any failure instead of raising."""
        impl = getattr(self, "_wapc" + name[1:])  # __guest_call -> _wapc_guest_call

        def host_function(caller, *args):
            try:
                result = impl(_Memory(caller, name, self), *args)
            except Exception as e:  # a bug here must not become a global exception
                self._fault = f"{name}: host error: {e}"
                result = None
            return (result or 0) if returns else None
        return host_function

    def _wapc_guest_request(self, mem, op_ptr, msg_ptr):
        mem.write(op_ptr, self._op)
        mem.write(msg_ptr, self._msg)

    def _wapc_guest_response(self, mem, ptr, length):
        self._response = mem.read(ptr, length)

    def _wapc_guest_error(self, mem, ptr, length):
        self._error = mem.read(ptr, length).decode("utf-8", "replace")

    def _wapc_host_call(self, mem, bd_ptr, bd_len, ns_ptr, ns_len, op_ptr, op_len, _msg_ptr, _msg_len):
        binding, ns, op = (mem.read(ptr, n).decode("utf-8", "replace")
                           for ptr, n in ((bd_ptr, bd_len), (ns_ptr, ns_len), (op_ptr, op_len)))
        self._host_response = b""
        self._host_error = f"no capability provider for {binding}/{ns}/{op}".encode()
        return 0

    def _wapc_host_response_len(self, mem):
        return len(self._host_response)

    def _wapc_host_response(self, mem, ptr):
        mem.write(ptr, self._host_response)

    def _wapc_host_error_len(self, mem):
        return len(self._host_error)

    def _wapc_host_error(self, mem, ptr):
        mem.write(ptr, self._host_error)

    def _wapc_console_log(self, mem, ptr, length):
        text = mem.read(ptr, length).decode("utf-8", "replace")
        print(f"[{self.actor.name}] {text}", file=sys.stderr, flush=True)


class _Memory:
    """The guest's memory as seen by one host function call, bounds-checked:
    an out-of-range access records a fault on the instance and does nothing."""

    def __init__(self, caller, name, instance):
        self.caller, self.name, self.instance = caller, name, instance
        self.memory = caller.get("memory")

    def _in_bounds(self, ptr, length):
        size = self.memory.data_len(self.caller)
        if ptr + length <= size:
            return True
        self.instance._fault = self.instance._fault or (
            f"{self.name}: bytes {ptr:#x}..{ptr + length:#x} are outside the guest's memory "
            f"({size:#x} bytes)")
        return False

    def read(self, ptr, length):
        ptr, length = ptr & 0xFFFFFFFF, length & 0xFFFFFFFF  # i32 -> wasm32 address
        return bytes(self.memory.read(self.caller, ptr, ptr + length)) if self._in_bounds(ptr, length) else b""

    def write(self, ptr, data):
        ptr &= 0xFFFFFFFF
        if data and self._in_bounds(ptr, len(data)):
            self.memory.write(self.caller, data, ptr)


def one_line(exc):
    """A wasmtime error or trap as "cause: cause", without its wasm backtrace."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if "Caused by:" in lines:
        lines = lines[lines.index("Caused by:") + 1:]
    return ": ".join(line.split(": ", 1)[1] if line.split(":")[0].isdigit() else line
                     for line in lines)
