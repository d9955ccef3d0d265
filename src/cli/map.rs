//! `weightmap map`: works out which source tensor goes to which target tensor, and why.

use super::report::MappingFlags;
use std::io::Write;
use std::path::{Path, PathBuf};
use weightmap::mapper::MappingResult;
use weightmap::report::terminal::{map_to_text, MapTextOptions, Rows};

/// Flags of `weightmap map`.
#[derive(clap::Args)]
pub struct Args {
    /// The source: a checkpoint, safetensors file or index, TorchScript model or model spec JSON.
    pub source: PathBuf,
    /// The target: a TorchScript model (gives execution order), a checkpoint, or a model spec JSON.
    pub target: PathBuf,
    /// Write the mapping as JSON {source name: target name} (with {"target", "transform"}
    /// entries where a transpose or reshape is needed).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Write the full JSON report (scores, breakdowns, alternatives, unmatched with reasons).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// How the mapping is computed (strategy, threshold, weights, order, trace inputs).
    #[command(flatten)]
    pub mapping: MappingFlags,
    /// Print the JSON report instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Print one summary line only.
    #[arg(long)]
    pub quiet: bool,
    /// Number of mappings listed in the table (best score first).
    #[arg(long, value_name = "N", default_value_t = weightmap::report::terminal::DEFAULT_TOP, conflicts_with = "all")]
    pub top: usize,
    /// List every mapping.
    #[arg(long)]
    pub all: bool,
}

/// Writes `value` as pretty JSON to `path` through a temporary file renamed into place.
fn write_json(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| weightmap::Error::io(path, e))?;
    serde_json::to_writer_pretty(&mut tmp, value)?;
    tmp.write_all(b"\n")
        .map_err(|e| weightmap::Error::io(path, e))?;
    tmp.persist(path)
        .map_err(|e| weightmap::Error::io(path, e.error))?;
    Ok(())
}

/// Runs `weightmap map`.
pub fn run(args: Args) -> anyhow::Result<()> {
    weightmap::progress::set_quiet(args.quiet);
    // Validate every flag before reading anything.
    let opts = args.mapping.suggest_options()?;
    let mapper = args.mapping.mapper(&args.source, &args.target)?;
    let result = mapper.suggest_mapping(&opts)?;

    if let Some(path) = &args.output {
        write_json(path, &result.to_mapping_json())?;
    }
    // The full report costs seconds on large models: built only when asked for.
    let report = if args.report.is_some() || args.json {
        result.to_report_json()
    } else {
        serde_json::Value::Null
    };
    if let Some(path) = &args.report {
        write_json(path, &report)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if args.quiet {
        println!("{}", headline(&result));
    } else {
        let rows = if args.all {
            Rows::All
        } else {
            Rows::Top(args.top)
        };
        print!(
            "{}",
            map_to_text(
                &result,
                &MapTextOptions {
                    color: super::report::color_enabled(),
                    rows
                }
            )
        );
    }
    Ok(())
}

fn headline(r: &MappingResult) -> String {
    format!(
        "{} of {} target tensors mapped ({:.1}% coverage), {} source tensors unmatched, {} flagged",
        r.mappings.len(),
        r.target.tensors,
        100.0 * r.coverage(),
        r.unmatched_source.len(),
        r.mappings.iter().filter(|m| m.ambiguous.is_some()).count()
    )
}
