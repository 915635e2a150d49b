//! `run-model DIR [--repeat N] [--profile]`: runs the embedded model on raw
//! tensors.
//!
//! Reads input i from `DIR/input_<i>.bin` (little-endian, the dtype and
//! shape the model declares, in the graph's input order), writes output i to
//! `DIR/output_<i>.bin`. With `--repeat N` it runs N times and prints each
//! run's time in milliseconds to stderr, for benchmarks. `--profile` also
//! times every step and prints, after the runs, each step's median as
//! `step_ms INDEX KERNEL MS`.

mod model {
    include!(concat!(env!("OUT_DIR"), "/model.rs"));
}

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

struct Args {
    dir: PathBuf,
    repeat: usize,
    profile: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut dir = None;
    let mut repeat = 1;
    let mut profile = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--repeat" {
            let n = args.next().ok_or("--repeat needs a count")?;
            repeat = n.parse().map_err(|_| format!("--repeat: '{}' is not a count", n))?;
        } else if arg == "--profile" {
            profile = true;
        } else if dir.is_none() {
            dir = Some(PathBuf::from(arg));
        } else {
            return Err(format!("unexpected argument '{}'", arg));
        }
    }
    let dir = dir.ok_or("usage: run-model DIR [--repeat N] [--profile]")?;
    Ok(Args { dir, repeat, profile })
}

fn tensor_path(dir: &Path, kind: &str, index: usize) -> PathBuf {
    dir.join(format!("{}_{}.bin", kind, index))
}

fn run(args: &Args) -> Result<(), String> {
    let model = model::load().map_err(|e| e.to_string())?;
    let mut session = model.session();
    for (i, input) in model.inputs().iter().enumerate() {
        let path = tensor_path(&args.dir, "input", i);
        let data = fs::read(&path).map_err(|e| format!("{}: {}", path.display(), e))?;
        session.set_input(input.name, &data).map_err(|e| format!("{}: {}", path.display(), e))?;
    }
    // step_ms[step][run]
    let mut step_ms = vec![Vec::new(); if args.profile { session.step_count() } else { 0 }];
    for _ in 0..args.repeat.max(1) {
        let start = Instant::now();
        if args.profile {
            run_timing_steps(&mut session, &mut step_ms)?;
        } else {
            session.run().map_err(|e| e.to_string())?;
        }
        if args.repeat > 1 {
            eprintln!("run_ms {:.3}", start.elapsed().as_secs_f64() * 1e3);
        }
    }
    for (index, times) in step_ms.iter_mut().enumerate() {
        times.sort_by(f64::total_cmp);
        let kernel = &model.plan().steps[index].kernel;
        eprintln!("step_ms {} {} {:.4}", index, kernel, times[times.len() / 2]);
    }
    for (i, output) in model.outputs().iter().enumerate() {
        let path = tensor_path(&args.dir, "output", i);
        let data = session.output(output.name).map_err(|e| e.to_string())?;
        fs::write(&path, data).map_err(|e| format!("{}: {}", path.display(), e))?;
    }
    Ok(())
}

fn run_timing_steps(session: &mut model_runtime::Session, step_ms: &mut [Vec<f64>]) -> Result<(), String> {
    for (index, times) in step_ms.iter_mut().enumerate() {
        let start = Instant::now();
        session.run_step(index).map_err(|e| e.to_string())?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(())
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|args| run(&args));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {}", message);
            ExitCode::FAILURE
        }
    }
}
