# wasi-threads glue that Rust 1.63 cannot write itself (inline asm and the
# wait/notify intrinsics are unstable on wasm32): the thread entry point sets
# the new instance's stack pointer before any Rust code runs, as wasi-libc's
# wasi_thread_start.s does. Assembled by build.rs with llvm-mc.
  .text
  .globaltype __stack_pointer, i32
  .functype wasmml_worker_main (i32, i32) -> ()
  .export_name wasi_thread_start, wasi_thread_start
  .globl wasi_thread_start
  .type wasi_thread_start,@function
wasi_thread_start:
  .functype wasi_thread_start (i32, i32) -> ()
  local.get 1
  i32.load 0
  global.set __stack_pointer
  local.get 0
  local.get 1
  call wasmml_worker_main
  end_function

  .globl wasmml_wait32
  .type wasmml_wait32,@function
wasmml_wait32:
  .functype wasmml_wait32 (i32, i32) -> (i32)
  local.get 0
  local.get 1
  i64.const -1
  memory.atomic.wait32 0
  end_function

  .globl wasmml_notify
  .type wasmml_notify,@function
wasmml_notify:
  .functype wasmml_notify (i32, i32) -> (i32)
  local.get 0
  local.get 1
  memory.atomic.notify 0
  end_function
