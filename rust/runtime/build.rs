//! With the `threads` feature, assembles the wasi-threads entry point and
//! the wait/notify helpers (src/threads/wasi_thread_start.s) with llvm-mc
//! (`$LLVM_MC`, else `llvm-mc` on PATH) and links them, and makes
//! `$WASMML_THREADS` (the build's TVM_THREADS) the pool's default size.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_THREADS").is_none() {
        return;
    }
    // Without the feature, rustc silently lowers atomics to plain loads and
    // stores (and rustc 1.63 does not expose it to cfg).
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if !flags.split('\x1f').any(|f| f.contains("+atomics")) {
        panic!("feature `threads` needs RUSTFLAGS with -C target-feature=+atomics,+bulk-memory");
    }
    println!("cargo:rerun-if-env-changed=WASMML_THREADS");
    let threads = env::var("WASMML_THREADS").unwrap_or_else(|_| "2".to_string());
    match threads.parse::<usize>() {
        Ok(n) if n >= 1 => println!("cargo:rustc-env=WASMML_DEFAULT_THREADS={}", n),
        _ => panic!("WASMML_THREADS={:?}: expected a number of threads", threads),
    }
    let src = "src/threads/wasi_thread_start.s";
    println!("cargo:rerun-if-changed={}", src);
    println!("cargo:rerun-if-env-changed=LLVM_MC");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let obj = out.join("wasi_thread_start.o");
    let mc = env::var("LLVM_MC").unwrap_or_else(|_| "llvm-mc".to_string());
    let status = Command::new(&mc)
        .args(["-triple=wasm32-wasi", "-mattr=+atomics,+bulk-memory", "-filetype=obj", src, "-o"])
        .arg(&obj)
        .status()
        .unwrap_or_else(|e| panic!("{}: {}", mc, e));
    assert!(status.success(), "{} failed on {}", mc, src);
    let ar = env::var("LLVM_AR").unwrap_or_else(|_| "llvm-ar".to_string());
    let lib = out.join("libwasmml_threads.a");
    let _ = std::fs::remove_file(&lib);
    let status = Command::new(&ar).arg("rcs").arg(&lib).arg(&obj).status()
        .unwrap_or_else(|e| panic!("{}: {}", ar, e));
    assert!(status.success(), "{} failed", ar);
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static=wasmml_threads");
}
