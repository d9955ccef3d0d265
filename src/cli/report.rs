//! `weightmap report`: writes the mapping as one self-contained HTML page (both module
//! trees side by side, matches drawn between them, filters, search, score breakdowns).
//! Also home of what `tree`, `explain` and `report` share: the mapping flags and the
//! color decision.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use weightmap::mapper::{model_order, parse_incompatible, Mapper, MapperOptions, SuggestOptions};
use weightmap::report::html;
use weightmap::score::ScoreWeights;
use weightmap::spec::ModelSpec;
use weightmap::trace::InputSpec;

/// Whether to color terminal output: not when `NO_COLOR` is set (to anything but the
/// empty string, per no-color.org) and not when standard output is not a terminal.
pub fn color_enabled() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stdout().is_terminal()
}

/// The flags that decide how a mapping is computed, as `weightmap map` takes them.
#[derive(clap::Args, Debug, Clone)]
pub struct MappingFlags {
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
    /// SHAPE[:DTYPE[:LO-HI]], e.g. 1x3x224x224. Without it the static order is used.
    #[arg(long = "input", value_name = "SPEC", value_parser = parse_input)]
    pub inputs: Vec<InputSpec>,
    /// Where the trace runs: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: String,
}

fn parse_input(text: &str) -> Result<InputSpec, String> {
    text.parse().map_err(|e: weightmap::Error| e.to_string())
}

impl MappingFlags {
    /// The suggest options, validated (before anything is read).
    pub fn suggest_options(&self) -> anyhow::Result<SuggestOptions> {
        let weights: ScoreWeights = match &self.weights {
            Some(w) => w.parse()?,
            None => ScoreWeights::default(),
        };
        let opts = SuggestOptions {
            threshold: self.threshold,
            strategy: self.strategy.parse()?,
            weights,
        };
        opts.validate()?;
        Ok(opts)
    }

    /// Reads both models and builds the mapper as `weightmap map` does (TorchScript
    /// models contribute their execution order when it can be had).
    pub fn mapper(&self, source_path: &Path, target_path: &Path) -> anyhow::Result<Mapper> {
        let incompatible = match &self.incompatible {
            Some(s) => parse_incompatible(s)?,
            None => vec![],
        };
        let device = weightmap::trace::parse_device(&self.device)?;
        let read = weightmap::ReadOptions::default();
        let source = weightmap::read_model(source_path, &read)?;
        let target = weightmap::read_model(target_path, &read)?;
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
        let options = MapperOptions {
            shape_tolerance: self.shape_tolerance,
            incompatible,
            target_order: order_of(target_path, &self.inputs),
            source_order: order_of(source_path, &[]),
        };
        Ok(Mapper::new(source, target, options)?)
    }
}

/// Flags of `weightmap report`.
#[derive(clap::Args)]
pub struct Args {
    /// The source model (any format `map` accepts); not with --from.
    #[arg(required_unless_present = "from", conflicts_with = "from")]
    pub source: Option<PathBuf>,
    /// The target model; not with --from.
    #[arg(required_unless_present = "from", conflicts_with = "from")]
    pub target: Option<PathBuf>,
    /// Build the page from a JSON report saved by `weightmap map --report FILE`.
    #[arg(long, value_name = "REPORT_JSON")]
    pub from: Option<PathBuf>,
    /// The HTML file to write (replaced if it exists).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// How the mapping is computed (ignored with --from).
    #[command(flatten)]
    pub mapping: MappingFlags,
}

/// Runs `weightmap report`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (data, inputs): (serde_json::Value, Vec<PathBuf>) =
        match (&args.from, &args.source, &args.target) {
            (Some(from), _, _) => {
                let result = html::load_report_json(from)?;
                (html::report_data(&result, None, None), vec![from.clone()])
            }
            (None, Some(s), Some(t)) => {
                let opts = args.mapping.suggest_options()?;
                let mapper = args.mapping.mapper(s, t)?;
                let result = mapper.suggest_mapping(&opts)?;
                let data = html::report_data(&result, Some(mapper.source()), Some(mapper.target()));
                (data, vec![s.clone(), t.clone()])
            }
            _ => anyhow::bail!(weightmap::Error::invalid(
            "arguments",
            "give SOURCE and TARGET, or --from REPORT_JSON (written by `weightmap map --report`)"
        )),
        };
    let page = html::render_html(&data);
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    html::write_html(&args.output, &page, &inputs)?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}

/// Reads two models and computes their mapping with `flags`; returns both specs and the result.
pub fn compute_mapping(
    flags: &MappingFlags,
    source: &Path,
    target: &Path,
) -> anyhow::Result<(ModelSpec, ModelSpec, weightmap::mapper::MappingResult)> {
    let opts = flags.suggest_options()?;
    let mapper = flags.mapper(source, target)?;
    let result = mapper.suggest_mapping(&opts)?;
    Ok((mapper.source().clone(), mapper.target().clone(), result))
}
