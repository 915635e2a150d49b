//! `run-model DIR [--repeat N]`: runs the embedded model on raw tensors.
//!
//! Reads input i from `DIR/input_<i>.bin` (little-endian, the dtype and
//! shape the model declares, in the graph's input order), writes output i to
//! `DIR/output_<i>.bin`. With `--repeat N` it runs N times and prints each
//! run's time in milliseconds to stderr, for benchmarks.

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
}

fn parse_args() -> Result<Args, String> {
    let mut dir = None;
    let mut repeat = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--repeat" {
            let n = args.next().ok_or("--repeat needs a count")?;
            repeat = n.parse().map_err(|_| format!("--repeat: '{}' is not a count", n))?;
        } else if dir.is_none() {
            dir = Some(PathBuf::from(arg));
        } else {
            return Err(format!("unexpected argument '{}'", arg));
        }
    }
    let dir = dir.ok_or("usage: run-model DIR [--repeat N]")?;
    Ok(Args { dir, repeat })
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
    for _ in 0..args.repeat.max(1) {
        let start = Instant::now();
        session.run().map_err(|e| e.to_string())?;
        if args.repeat > 1 {
            eprintln!("run_ms {:.3}", start.elapsed().as_secs_f64() * 1e3);
        }
    }
    for (i, output) in model.outputs().iter().enumerate() {
        let path = tensor_path(&args.dir, "output", i);
        let data = session.output(output.name).map_err(|e| e.to_string())?;
        fs::write(&path, data).map_err(|e| format!("{}: {}", path.display(), e))?;
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
