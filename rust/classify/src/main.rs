//! `classify [--top N] IMAGE...`: prints the class of each photo (PNG or
//! JPEG) with the image classifier embedded at build time, or its N most
//! probable classes with their probabilities.
//!
//! A file that cannot be read or decoded, a directory, a file over 128 MiB
//! or an image whose decoding would need more memory than the limit (416
//! MiB, the file included, estimated from its header before anything is
//! decoded: `model_vision::footprint`) gets a one-line error on stderr; the
//! other files are still classified, and the exit status is 1. The limit
//! keeps decoding a valid image within a 512 MiB memory; should an
//! allocation fail anyway (a smaller limit set by the runtime), std prints
//! "memory allocation of N bytes failed" before the module traps.

mod model {
    include!(concat!(env!("OUT_DIR"), "/model.rs"));
}

use model_vision::{Classifier, Prediction};
use std::process::ExitCode;

const USAGE: &str = "usage: classify [--top N] IMAGE...";
/// Larger files are refused before they are read: reading a file whole
/// could exhaust the module's 4 GiB address space, which ends the program
/// for every file. The memory limit counts the file too, and an
/// uncompressed 33.5 Mpx RGB image is 100 MB.
const MAX_FILE_BYTES: u64 = 128 << 20;

struct Args {
    top: Option<usize>,
    images: Vec<String>,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut top = None;
    let mut images = Vec::new();
    let mut args = args;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--top" => {
                let n = args.next().ok_or("--top needs a number")?;
                match n.parse::<usize>() {
                    Ok(n) if n > 0 => top = Some(n),
                    _ => return Err(format!("--top: '{}' is not a positive number", n)),
                }
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            _ => images.push(arg),
        }
    }
    if images.is_empty() {
        return Err(USAGE.to_string());
    }
    Ok(Args { top, images })
}

fn load_classifier() -> Result<Classifier, String> {
    let model = model::load().map_err(|e| format!("model '{}': {}", model::NAME, e))?;
    let meta = model::META.ok_or_else(|| format!("model '{}' has no embedded metadata", model::NAME))?;
    let labels = model::LABELS.ok_or_else(|| format!("model '{}' has no embedded labels", model::NAME))?;
    Classifier::new(model, meta, labels).map_err(|e| format!("model '{}': {}", model::NAME, e))
}

fn read_image(path: &str) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {}", e))?;
    if meta.is_dir() {
        return Err("cannot read: is a directory".to_string());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!("file is {} bytes, more than the limit of {} bytes", meta.len(), MAX_FILE_BYTES));
    }
    std::fs::read(path).map_err(|e| format!("cannot read: {}", e))
}

fn print(image: &str, predictions: &[Prediction<'_>], args: &Args) {
    let prefix = if args.images.len() > 1 { format!("{}: ", image) } else { String::new() };
    match args.top {
        None => println!("{}{}", prefix, predictions[0].label),
        Some(_) => {
            for p in predictions {
                println!("{}{:.4}  {}", prefix, p.probability, p.label);
            }
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{}", message);
            // Rust 1.63's WASI ExitCode knows only success and failure.
            std::process::exit(2);
        }
    };
    let classifier = match load_classifier() {
        Ok(c) => c,
        Err(message) => {
            eprintln!("error: {}", message);
            return ExitCode::FAILURE;
        }
    };
    let mut session = classifier.session();
    let mut failed = false;
    for image in &args.images {
        let result = read_image(image).and_then(|bytes| {
            classifier.classify(&mut session, &bytes, args.top.unwrap_or(1)).map_err(|e| e.to_string())
        });
        match result {
            Ok(predictions) => print(image, &predictions, &args),
            Err(message) => {
                eprintln!("error: {}: {}", image, message);
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
