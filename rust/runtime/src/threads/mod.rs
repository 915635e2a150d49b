//! TVM's parallel loops on a pool of wasi-threads workers (feature
//! `threads`; the `cargo_wasm` tool enables it for TVM_THREADS > 1).
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
//! takes a lock in this build. A kernel error reported during a launch, on
//! any thread, is kept in the pool's own buffer (no allocation, no
//! thread-local) and handed to `ffi`'s last error by the launcher. The
//! thread count is `$TVM_NUM_THREADS` (read once, on the calling thread),
//! else [`default_threads`].

use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::os::raw::c_char;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering::SeqCst};

/// Threads when `$TVM_NUM_THREADS` is not set: the build's TVM_THREADS.
pub fn default_threads() -> usize {
    env!("WASMML_DEFAULT_THREADS").parse().unwrap_or(1)
}
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

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    /// WASI's own call, not libc's: safe on a worker.
    fn sched_yield() -> u16;
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

/// Loads of a cell a waiting thread spins through before it sleeps in
/// `memory.atomic.wait32` (about a millisecond): a model's kernels follow
/// one another closely, and waking a sleeping worker took about 50 us a
/// launch on a 2-core VM (EfficientNet-Lite0's 7x7 depthwise kernels,
/// 0.09 ms on one thread, took 0.5 ms on two with 2000 spins).
const SPINS: u32 = 1 << 20;
/// Spins between yields of the core: with more threads than cores, a
/// spinning thread would otherwise hold a core that a thread with work to
/// do is waiting for.
const SPINS_PER_YIELD: u32 = 256;

fn wait_while_equal(cell: &AtomicI32, value: i32) {
    let mut spins = 0u32;
    while cell.load(SeqCst) == value {
        if spins < SPINS {
            spins += 1;
            if spins % SPINS_PER_YIELD == 0 {
                unsafe { sched_yield() };
            } else {
                std::hint::spin_loop();
            }
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
        .unwrap_or_else(default_threads)
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
    ERROR.clear();
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
    if failed {
        if let Some(message) = ERROR.take() {
            crate::ffi::set_last_error(message);
        }
        return -1;
    }
    0
}

/// Whether a launch is running: a kernel error is then kept in the pool.
pub(crate) fn in_launch() -> bool {
    POOL.busy.load(SeqCst)
}

/// The first kernel error of a launch, as bytes: written by whichever task
/// claims it first, with no allocation (workers must not call the
/// allocator unlocked, nor std), read by the launcher after all are done.
struct ErrorSlot {
    claimed: AtomicBool,
    len: AtomicUsize,
    bytes: UnsafeCell<[u8; ERROR_BYTES]>,
}

const ERROR_BYTES: usize = 1024;

// Written only by the task that claimed it, read only once all have finished.
unsafe impl Sync for ErrorSlot {}

static ERROR: ErrorSlot = ErrorSlot {
    claimed: AtomicBool::new(false),
    len: AtomicUsize::new(0),
    bytes: UnsafeCell::new([0; ERROR_BYTES]),
};

impl ErrorSlot {
    fn clear(&self) {
        self.len.store(0, SeqCst);
        self.claimed.store(false, SeqCst);
    }

    fn take(&self) -> Option<String> {
        if !self.claimed.load(SeqCst) {
            return None;
        }
        let len = self.len.load(SeqCst);
        let bytes = unsafe { &(*self.bytes.get())[..len] };
        let text = String::from_utf8_lossy(bytes);
        Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

/// Records a kernel error reported during a launch (see
/// `ffi::TVMFFIErrorSetRaisedFromCStrParts`): "KIND: PARTS...", cut at
/// ERROR_BYTES; only the first of a launch is kept.
///
/// # Safety
/// As that function's: null or NUL-terminated strings.
pub(crate) unsafe fn record_error(kind: *const c_char, parts: *const *const c_char, num_parts: i32) {
    if ERROR.claimed.swap(true, SeqCst) {
        return;
    }
    let buf = &mut *ERROR.bytes.get();
    let mut len = 0;
    let mut push = |s: *const c_char| {
        let mut p = s as *const u8;
        while !p.is_null() && *p != 0 && len < ERROR_BYTES {
            buf[len] = *p;
            len += 1;
            p = p.add(1);
        }
    };
    push(if kind.is_null() { b"Error\0".as_ptr() as *const c_char } else { kind });
    push(b": \0".as_ptr() as *const c_char);
    if !parts.is_null() {
        for i in 0..num_parts.max(0) as usize {
            push(*parts.add(i));
        }
    }
    ERROR.len.store(len, SeqCst);
}

/// Checks the pool: `launches` launches of a lambda that counts each
/// task's runs, waits at a barrier, then checks every task of the launch
/// counted as often as it (tests; `wasmml_pool_stress` below). Returns the
/// threads the pool has, or what went wrong.
pub fn stress(launches: u32) -> Result<usize, String> {
    struct Counts {
        runs: [AtomicU32; MAX_THREADS],
        wrong: AtomicU32,
    }
    unsafe extern "C" fn lambda(task_id: i32, penv: *mut TVMParallelGroupEnv, cdata: *mut c_void) -> i32 {
        let counts = &*(cdata as *const Counts);
        let num_task = (*penv).num_task as usize;
        let mine = counts.runs[task_id as usize].fetch_add(1, SeqCst) + 1;
        TVMBackendParallelBarrier(task_id, penv);
        if counts.runs[..num_task].iter().any(|r| r.load(SeqCst) != mine) {
            counts.wrong.fetch_add(1, SeqCst);
        }
        TVMBackendParallelBarrier(task_id, penv);
        0
    }
    const ZERO: AtomicU32 = AtomicU32::new(0);
    let counts = Counts { runs: [ZERO; MAX_THREADS], wrong: AtomicU32::new(0) };
    let threads = threads();
    for launch in 0..launches {
        let status = unsafe { TVMBackendParallelLaunch(lambda, &counts as *const Counts as *mut c_void, 0) };
        if status != 0 {
            return Err(format!("launch {} returned {}", launch, status));
        }
    }
    let runs: Vec<u32> = counts.runs[..threads].iter().map(|r| r.load(SeqCst)).collect();
    if counts.wrong.load(SeqCst) != 0 || runs.iter().any(|&r| r != launches) {
        return Err(format!("{} threads, {} launches: runs per task {:?}, {} tasks saw others' counts differ",
                           threads, launches, runs, counts.wrong.load(SeqCst)));
    }
    Ok(threads)
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
