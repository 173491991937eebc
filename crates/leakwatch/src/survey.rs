//! Programmed leak survey in the binary: `leakwatch network import` and
//! `leakwatch sim survey` (module `survey_sim`).

use anyhow::{Context, bail};
use leakwatch_store::{NetworkStore, Store};
use leakwatch_survey::SurveyConfig;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Subcommand)]
pub enum NetworkCommand {
    /// Load pipe segments from a GeoJSON FeatureCollection of LineStrings with the
    /// properties id, district, pressure_class, material, diameter_mm, year_laid and,
    /// optionally, added_on and last_surveyed (YYYY-MM-DD). Idempotent: segments are
    /// updated by id, a survey date is recorded once.
    Import { file: PathBuf },
}

/// Reads and checks a whole GeoJSON file against the obligation table in force; every
/// bad feature is reported and nothing is imported.
pub fn read_network(
    path: &Path,
    survey: &SurveyConfig,
) -> anyhow::Result<Vec<leakwatch_survey::geojson::Imported>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let table = survey.table().map_err(anyhow::Error::msg)?;
    let classes: Vec<&str> = table.obligations.iter().map(|o| o.class.as_str()).collect();
    match leakwatch_survey::geojson::parse(&text, Some(&classes)) {
        Ok(items) => Ok(items),
        Err(errors) => {
            let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            bail!(
                "{}: {} error{}, nothing imported:\n  {}",
                path.display(),
                errors.len(),
                if errors.len() == 1 { "" } else { "s" },
                lines.join("\n  ")
            )
        }
    }
}

pub async fn network(
    database_url: &str,
    survey: &SurveyConfig,
    command: NetworkCommand,
) -> anyhow::Result<()> {
    match command {
        NetworkCommand::Import { file } => {
            let items = read_network(&file, survey)?;
            let store = Store::connect(database_url).await?;
            let out = store
                .network_store()
                .import_network(&items, chrono::Utc::now())
                .await;
            store.close().await;
            let out = out?;
            let km: f64 = items.iter().map(|i| i.segment.length_m()).sum::<f64>() / 1000.0;
            println!(
                "imported {} segments ({} new, {km:.1} km) and {} survey dates from {}",
                out.segments,
                out.new_segments,
                out.surveys_added,
                file.display()
            );
            Ok(())
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct SimNetworkArgs {
    /// Seed (the same as the fleet's: the network lies where its districts are).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 10)]
    pub districts: u32,
    /// Obligation table whose pressure classes the segments get: `it` or `us`.
    #[arg(long, default_value = "it")]
    pub obligations: String,
    /// Where to write the GeoJSON (for `leakwatch network import`).
    #[arg(long)]
    pub out: PathBuf,
}

/// `leakwatch sim network`: the simulated fleet's street network as GeoJSON.
pub fn sim_network(args: &SimNetworkArgs) -> anyhow::Result<()> {
    let Some(table) = leakwatch_survey::ObligationTable::preset(&args.obligations) else {
        bail!(
            "--obligations: unknown preset {:?}; expected it or us",
            args.obligations
        );
    };
    let fleet = leakwatch_sim::FleetConfig {
        seed: args.seed,
        districts: args.districts,
        ..leakwatch_sim::FleetConfig::default()
    };
    let net = leakwatch_sim::network::generate(
        &fleet,
        &leakwatch_sim::network::NetworkConfig::default(),
        &table,
    );
    let text = serde_json::to_string(&leakwatch_sim::network::to_geojson(&net))?;
    std::fs::write(&args.out, text)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let km: f64 = net.iter().map(|i| i.segment.length_m()).sum::<f64>() / 1000.0;
    println!(
        "{} segments ({km:.1} km) in {} districts written to {}",
        net.len(),
        args.districts,
        args.out.display()
    );
    Ok(())
}
