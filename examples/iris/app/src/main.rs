//! `iris SEPAL_LENGTH SEPAL_WIDTH PETAL_LENGTH PETAL_WIDTH` (in cm): prints
//! the species the embedded model finds most likely, then each species'
//! probability with `--probabilities`.

mod model {
    include!(concat!(env!("OUT_DIR"), "/model.rs"));
}

use std::process::ExitCode;

const USAGE: &str = "usage: iris [--probabilities] SEPAL_LENGTH SEPAL_WIDTH PETAL_LENGTH PETAL_WIDTH (cm)";

struct Args {
    measurements: Vec<f32>,
    probabilities: bool,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut measurements = Vec::new();
    let mut probabilities = false;
    for arg in args {
        if arg == "--probabilities" {
            probabilities = true;
            continue;
        }
        match arg.parse::<f32>() {
            Ok(value) if value.is_finite() && value >= 0.0 => measurements.push(value),
            _ => return Err(format!("'{}' is not a length in cm\n{}", arg, USAGE)),
        }
    }
    if measurements.len() != 4 {
        return Err(format!("expected 4 measurements, got {}\n{}", measurements.len(), USAGE));
    }
    Ok(Args { measurements, probabilities })
}

fn classify(args: &Args) -> Result<(), String> {
    let model = model::load().map_err(|e| e.to_string())?;
    let labels: Vec<&str> = model::LABELS.unwrap_or("").lines().collect();
    let mut session = model.session();
    session.set_input_f32("measurements", &args.measurements).map_err(|e| e.to_string())?;
    session.run().map_err(|e| e.to_string())?;
    let probabilities = session.output_f32("probabilities").map_err(|e| e.to_string())?;
    let best = (0..probabilities.len())
        .max_by(|&a, &b| probabilities[a].total_cmp(&probabilities[b]))
        .ok_or("the model gave no output")?;
    let name = |i: usize| labels.get(i).copied().unwrap_or("?");
    println!("{}", name(best));
    if args.probabilities {
        for (i, p) in probabilities.iter().enumerate() {
            println!("{} {:.6}", name(i), p);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let result = parse_args(std::env::args().skip(1)).and_then(|args| classify(&args));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {}", message);
            ExitCode::from(2)
        }
    }
}
