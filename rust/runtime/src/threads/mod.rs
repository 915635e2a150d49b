//! TVM's parallel loops on a pool of wasi-threads workers (feature
//! `threads`, prototype for issue 25).
//!
//! TVM compiles a parallel loop into a lambda and a call of
//! [`TVMBackendParallelLaunch`]; the lambda splits the loop by
//! `penv.num_task` and runs its `task_id`'s share. The calling thread runs
//! task 0 and `n - 1` persistent workers the others; the launch returns when
//! all are done. Workers are started with `wasi::thread-spawn` on first use
//! and sleep on `memory.atomic.wait32` between launches.
//!
//! Workers never call into the C library or into Rust's std (built without
//! atomics, its locks and thread-locals are not shared-memory safe): they run
//! kernels, which may allocate workspace, and `ffi`'s workspace allocator
//! takes a lock in this build. The thread count is `$TVM_NUM_THREADS`
//! (read once, on the calling thread), else [`DEFAULT_THREADS`].

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering::SeqCst};

/// Threads when `$TVM_NUM_THREADS` is not set.
pub const DEFAULT_THREADS: usize = 2;
/// Most threads a pool starts.
const MAX_THREADS: usize = 64;
/// Each worker's shadow stack.
const WORKER_STACK: usize = 1 << 20;

/// `TVMParallelGroupEnv` (tvm/runtime/c_backend_api.h).
#[repr(C)]
pub struct TVMParallelGroupEnv {
    pub sync_handle: *mut c_void,
    pub num_task: i32,
}

/// `FTVMParallelLambda`.
pub type ParallelLambda = unsafe extern "C" fn(i32, *mut TVMParallelGroupEnv, *mut c_void) -> i32;

extern "C" {
    // src/threads/wasi_thread_start.s
    fn wasmml_wait32(addr: *const i32, expected: i32) -> i32;
    fn wasmml_notify(addr: *const i32, count: i32) -> i32;
}

#[link(wasm_import_module = "wasi")]
extern "C" {
    #[link_name = "thread-spawn"]
    fn thread_spawn(start_arg: *mut StartArg) -> i32;
}

/// What `wasi_thread_start` gets: the stack top first (the assembly reads
/// offset 0), then the worker's task id.
#[repr(C)]
struct StartArg {
    stack_top: usize,
    task_id: usize,
}

/// One pool per module. A launch posts a job and bumps `generation`;
/// workers that see a new generation run their task and count `pending`
/// down; the last wakes the launcher.
struct Pool {
    generation: AtomicI32,
    pending: AtomicI32,
    failed: AtomicBool,
    lambda: AtomicUsize,
    cdata: AtomicUsize,
    num_task: AtomicI32,
    /// threads in use (0: not decided yet); workers started = threads - 1
    threads: AtomicUsize,
    busy: AtomicBool,
    barrier_count: AtomicI32,
    barrier_generation: AtomicI32,
}

static POOL: Pool = Pool {
    generation: AtomicI32::new(0),
    pending: AtomicI32::new(0),
    failed: AtomicBool::new(false),
    lambda: AtomicUsize::new(0),
    cdata: AtomicUsize::new(0),
    num_task: AtomicI32::new(0),
    threads: AtomicUsize::new(0),
    busy: AtomicBool::new(false),
    barrier_count: AtomicI32::new(0),
    barrier_generation: AtomicI32::new(0),
};

fn wait_while_equal(cell: &AtomicI32, value: i32) {
    let mut spins = 0u32;
    while cell.load(SeqCst) == value {
        if spins < 2000 {
            spins += 1;
            std::hint::spin_loop();
        } else {
            unsafe { wasmml_wait32(cell as *const AtomicI32 as *const i32, value) };
        }
    }
}

fn wake_all(cell: &AtomicI32) {
    unsafe { wasmml_notify(cell as *const AtomicI32 as *const i32, i32::MAX) };
}

fn wanted_threads() -> usize {
    std::env::var("TVM_NUM_THREADS")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(DEFAULT_THREADS)
        .min(MAX_THREADS)
}

/// Decides the thread count and starts the workers, once; a worker that
/// cannot be started lowers the count to those that did.
fn threads() -> usize {
    let n = POOL.threads.load(SeqCst);
    if n != 0 {
        return n;
    }
    let wanted = wanted_threads();
    let mut started = 1;
    for task_id in 1..wanted {
        let stack = Box::leak(vec![0u8; WORKER_STACK].into_boxed_slice());
        let top = (stack.as_ptr() as usize + WORKER_STACK) & !15;
        let arg = Box::into_raw(Box::new(StartArg { stack_top: top, task_id }));
        if unsafe { thread_spawn(arg) } < 0 {
            break;
        }
        started += 1;
    }
    POOL.threads.store(started, SeqCst);
    started
}

/// The worker loop, called by `wasi_thread_start` on the worker's own stack.
#[no_mangle]
unsafe extern "C" fn wasmml_worker_main(_tid: i32, arg: *mut StartArg) {
    let task_id = (*arg).task_id as i32;
    let mut seen = 0;
    loop {
        wait_while_equal(&POOL.generation, seen);
        seen = POOL.generation.load(SeqCst);
        let num_task = POOL.num_task.load(SeqCst);
        if task_id < num_task {
            let lambda: ParallelLambda = std::mem::transmute(POOL.lambda.load(SeqCst));
            let mut env = TVMParallelGroupEnv { sync_handle: std::ptr::null_mut(), num_task };
            if lambda(task_id, &mut env, POOL.cdata.load(SeqCst) as *mut c_void) != 0 {
                POOL.failed.store(true, SeqCst);
            }
        }
        if POOL.pending.fetch_sub(1, SeqCst) == 1 {
            wake_all(&POOL.pending);
        }
    }
}

/// Runs `flambda` as `num_task` tasks (0: one per thread) and returns when
/// all have finished: 0, or -1 if one failed.
///
/// # Safety
/// Called by TVM kernels with their own lambda and closure data.
#[no_mangle]
pub unsafe extern "C" fn TVMBackendParallelLaunch(
    flambda: ParallelLambda,
    cdata: *mut c_void,
    num_task: i32,
) -> i32 {
    let threads = threads();
    let num_task = if num_task <= 0 { threads as i32 } else { num_task.min(threads as i32) };
    // One thread, or a launch from inside a parallel loop: run it here.
    if num_task <= 1 || POOL.busy.swap(true, SeqCst) {
        let mut env = TVMParallelGroupEnv { sync_handle: std::ptr::null_mut(), num_task: 1 };
        return if flambda(0, &mut env, cdata) == 0 { 0 } else { -1 };
    }
    POOL.lambda.store(flambda as usize, SeqCst);
    POOL.cdata.store(cdata as usize, SeqCst);
    POOL.num_task.store(num_task, SeqCst);
    POOL.failed.store(false, SeqCst);
    let workers = threads as i32 - 1;
    POOL.pending.store(workers, SeqCst);
    POOL.generation.fetch_add(1, SeqCst);
    wake_all(&POOL.generation);
    let mut env = TVMParallelGroupEnv { sync_handle: std::ptr::null_mut(), num_task };
    let failed = flambda(0, &mut env, cdata) != 0;
    loop {
        let pending = POOL.pending.load(SeqCst);
        if pending == 0 {
            break;
        }
        wait_while_equal(&POOL.pending, pending);
    }
    let failed = failed || POOL.failed.load(SeqCst);
    POOL.busy.store(false, SeqCst);
    if failed { -1 } else { 0 }
}

/// A barrier among the `penv.num_task` tasks of the running launch.
///
/// # Safety
/// Called by TVM kernels from inside a parallel lambda.
#[no_mangle]
pub unsafe extern "C" fn TVMBackendParallelBarrier(_task_id: i32, penv: *mut TVMParallelGroupEnv) -> i32 {
    let num_task = (*penv).num_task;
    if num_task <= 1 {
        return 0;
    }
    let generation = POOL.barrier_generation.load(SeqCst);
    if POOL.barrier_count.fetch_add(1, SeqCst) + 1 == num_task {
        POOL.barrier_count.store(0, SeqCst);
        POOL.barrier_generation.fetch_add(1, SeqCst);
        wake_all(&POOL.barrier_generation);
    } else {
        wait_while_equal(&POOL.barrier_generation, generation);
    }
    0
}

/// The workspace allocator's lock: kernels allocate from any thread.
static ALLOC_LOCK: AtomicBool = AtomicBool::new(false);

pub(crate) fn with_alloc_lock<T>(f: impl FnOnce() -> T) -> T {
    while ALLOC_LOCK.compare_exchange_weak(false, true, SeqCst, SeqCst).is_err() {
        std::hint::spin_loop();
    }
    let out = f();
    ALLOC_LOCK.store(false, SeqCst);
    out
}
