//! `pool-stress LAUNCHES`: runs model-runtime's `threads::stress` (a
//! launch of a lambda that counts each task's runs and checks them between
//! two barriers, LAUNCHES times) on `$TVM_NUM_THREADS` threads. Prints
//! `threads N launches L` and exits 0, or the error and exits 1. Linked
//! with the runtime's `threads` feature (CargoWasm with TVM_THREADS > 1).

fn main() {
    let launches = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    match model_runtime::threads::stress(launches) {
        Ok(threads) => println!("threads {} launches {}", threads, launches),
        Err(e) => {
            eprintln!("pool-stress: {}", e);
            std::process::exit(1);
        }
    }
}
