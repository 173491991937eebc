//! Compares crew-choice policies on a simulated month of emergencies.
//!
//! `cargo run -p leakwatch-dispatch --example dispatch_sim [-- scenario.json]`: the
//! standard scenario, or the one in the JSON file (keys of `SimScenario`, missing ones
//! from the standard). Prints a table, then the reports as JSON.

use leakwatch_dispatch::choose::ChoicePolicy;
use leakwatch_dispatch::simulate::{SimPolicy, SimScenario, compare, table};

fn main() -> Result<(), String> {
    let scenario = match std::env::args().nth(1) {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
            serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?
        }
        None => SimScenario::standard(),
    };
    let policies = [
        SimPolicy::Nearest(ChoicePolicy::default()),
        SimPolicy::Nearest(ChoicePolicy {
            preempt: false,
            ..ChoicePolicy::default()
        }),
        SimPolicy::FirstFree,
    ];
    let reports = compare(&scenario, &policies)?;
    println!("{}", table(&reports));
    println!(
        "{}",
        serde_json::to_string_pretty(&reports).map_err(|e| e.to_string())?
    );
    Ok(())
}
