//! `weightmap map`: works out which source tensor goes to which target tensor, and why.

use std::io::Write;
use std::path::{Path, PathBuf};
use weightmap::mapper::{
    model_order, parse_incompatible, Mapper, MapperOptions, MappingResult, Strategy, SuggestOptions,
};
use weightmap::report::terminal::{map_to_text, MapTextOptions, Rows};
use weightmap::score::ScoreWeights;
use weightmap::trace::InputSpec;

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
    /// best_match, conservative or shape_only.
    #[arg(long, default_value = "best_match", value_name = "S")]
    pub strategy: String,
    /// Pairs scoring below this stay unmatched (0 to 1).
    #[arg(long, default_value_t = weightmap::mapper::DEFAULT_THRESHOLD, value_name = "T")]
    pub threshold: f64,
    /// Score weights, e.g. shape=0.5,name=0.3,hierarchy=0.2 (normalized).
    #[arg(long, value_name = "W")]
    pub weights: Option<String>,
    /// Incompatible components: SOURCE_CHUNKS:TARGET_CHUNKS, e.g. 'backbone,encoder:head,classifier'
    /// (several separated by ';').
    #[arg(long, value_name = "SPEC")]
    pub incompatible: Option<String>,
    /// Shape tolerance (0 to 1); above 0, reshapes such as conv 1x1 <-> linear are candidates.
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    pub shape_tolerance: f64,
    /// A dummy input for tracing the target's execution order (repeatable):
    /// SHAPE[:DTYPE[:LO-HI]], e.g. 1x3x224x224 or 1x16:i64:0-1000. Without it the static order is used.
    #[arg(long = "input", value_name = "SPEC", value_parser = parse_input)]
    pub inputs: Vec<InputSpec>,
    /// Where the trace runs: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: String,
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

fn parse_input(text: &str) -> Result<InputSpec, String> {
    text.parse().map_err(|e: weightmap::Error| e.to_string())
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
    // Validate every flag before reading anything.
    let strategy: Strategy = args.strategy.parse()?;
    let weights: ScoreWeights = match &args.weights {
        Some(w) => w.parse()?,
        None => ScoreWeights::default(),
    };
    let opts = SuggestOptions {
        threshold: args.threshold,
        strategy,
        weights,
    };
    opts.validate()?;
    let incompatible = match &args.incompatible {
        Some(s) => parse_incompatible(s)?,
        None => vec![],
    };
    let device = weightmap::trace::parse_device(&args.device)?;

    let read = weightmap::ReadOptions::default();
    let source = weightmap::read_model(&args.source, &read)?;
    let target = weightmap::read_model(&args.target, &read)?;
    let order_of = |path: &Path, inputs: &[InputSpec]| match model_order(path, inputs, device) {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "warning: no execution order for {} ({e}); using its registration order",
                path.display()
            );
            None
        }
    };
    let target_order = order_of(&args.target, &args.inputs);
    let source_order = order_of(&args.source, &[]);
    let options = MapperOptions {
        shape_tolerance: args.shape_tolerance,
        incompatible,
        source_order,
        target_order,
    };
    let mapper = Mapper::new(source, target, options)?;
    let result = mapper.suggest_mapping(&opts)?;

    if let Some(path) = &args.output {
        write_json(path, &result.to_mapping_json())?;
    }
    let report = result.to_report_json();
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
