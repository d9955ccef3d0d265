//! `weightmap report`: writes the mapping as one self-contained HTML page (both module
//! trees side by side, matches drawn between them, filters, search, score breakdowns).
//! Also home of what `tree`, `explain` and `report` share: the mapping flags and the
//! color decision.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use weightmap::mapper::{
    model_order, order_from_file, parse_incompatible, CandidateSearch, Mapper, MapperOptions,
    OrderKind, SuggestOptions, TensorOrder,
};
use weightmap::report::html;
use weightmap::score::ScoreWeights;
use weightmap::spec::ModelSpec;
use weightmap::trace::{self, InputSpec};

/// Whether to color terminal output: not when `NO_COLOR` is set (to anything but the
/// empty string, per no-color.org) and not when standard output is not a terminal.
pub fn color_enabled() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stdout().is_terminal()
}

/// Which order of tensors the mapper uses to tell look-alikes apart (`--order`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrderChoice {
    /// A TorchScript target: its dynamic order with --input (falling back to static when
    /// forward fails), else static, else registration; a TorchScript source: static.
    /// Checkpoints: their key order (none for safetensors, whose keys are sorted).
    #[default]
    Auto,
    /// The target's dynamic order from running forward on --input (required); a failing
    /// forward is an error. A TorchScript source gets its static order.
    Dynamic,
    /// The static order of each TorchScript model, read from its forward graph.
    Static,
    /// The registration order of each TorchScript model (as its modules registered them).
    Registration,
    /// No order on either side, not even a checkpoint's key order: names (indices in them
    /// included) and shapes only. Passed to the mapper as an empty order of kind `none`.
    None,
}

/// The flags that decide how a mapping is computed, shared by `map`, `tree`, `explain`
/// and `report`.
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
    /// SHAPE[:DTYPE[:LO-HI]], e.g. 1x3x224x224 or 1x16:i64:0-1000. Without it the static order is used.
    #[arg(long = "input", value_name = "SPEC", value_parser = parse_input)]
    pub inputs: Vec<InputSpec>,
    /// Where the trace and the batched candidate score run: cpu, cuda or cuda:N (the
    /// mapping is the same on every device).
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: String,
    /// How candidates of the units structure leaves over are found: auto (exact while
    /// each has at most 64 same-shape candidates, batched beyond), exact (score every
    /// same-shape candidate), batched (top-k by a batched tensor score on --device, then
    /// exact scores for those).
    #[arg(long, default_value = "auto", value_name = "SEARCH", value_parser = parse_candidates)]
    pub candidates: CandidateSearch,
    /// Which order tells look-alikes apart: auto (dynamic with --input, else static, else
    /// registration; a checkpoint's key order), dynamic (needs --input), static,
    /// registration, or none (names and shapes only: measures what order adds).
    #[arg(long, value_enum, default_value_t = OrderChoice::Auto, value_name = "ORDER")]
    pub order: OrderChoice,
    /// The target's execution order saved by `weightmap trace TARGET -o FILE`, used instead
    /// of tracing: any target format (a model spec JSON, a checkpoint) then has one.
    #[arg(long, value_name = "ORDER_JSON", conflicts_with = "inputs")]
    pub target_order: Option<PathBuf>,
    /// The source's execution order saved by `weightmap trace SOURCE -o FILE` (e.g. of a
    /// TorchScript export of the model that wrote the checkpoint).
    #[arg(long, value_name = "ORDER_JSON")]
    pub source_order: Option<PathBuf>,
}

fn parse_candidates(text: &str) -> Result<CandidateSearch, String> {
    text.parse().map_err(|e: weightmap::Error| e.to_string())
}

fn parse_input(text: &str) -> Result<InputSpec, String> {
    text.parse().map_err(|e: weightmap::Error| e.to_string())
}

impl MappingFlags {
    /// The suggest options; checks every mapping flag, `--order` with `--input` included,
    /// before anything is read.
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
        if self.order == OrderChoice::Dynamic && self.inputs.is_empty() {
            anyhow::bail!(weightmap::Error::invalid(
                "--order dynamic",
                "needs the target's dummy input: give --input SHAPE[:DTYPE[:LO-HI]], e.g. 1x3x224x224"
            ));
        }
        if self.order == OrderChoice::None
            && (self.target_order.is_some() || self.source_order.is_some())
        {
            anyhow::bail!(weightmap::Error::invalid(
                "--order none",
                "means no order on either side: drop --target-order / --source-order, or --order none"
            ));
        }
        if !self.inputs.is_empty()
            && !matches!(self.order, OrderChoice::Auto | OrderChoice::Dynamic)
        {
            anyhow::bail!(weightmap::Error::invalid(
                "--input",
                "only used with --order auto or dynamic: drop --input or the --order flag"
            ));
        }
        Ok(opts)
    }

    /// Reads both models and builds the mapper, with the orders `--order` asks for.
    pub fn mapper(&self, source_path: &Path, target_path: &Path) -> anyhow::Result<Mapper> {
        let incompatible = match &self.incompatible {
            Some(s) => parse_incompatible(s)?,
            None => vec![],
        };
        // CUDA asked for where there is none is an error before anything is read.
        let device = weightmap::score_tensor::parse_device(&self.device)?;
        let read = weightmap::ReadOptions::default();
        let source = weightmap::read_model(source_path, &read)?;
        let target = weightmap::read_model(target_path, &read)?;
        let options = MapperOptions {
            shape_tolerance: self.shape_tolerance,
            incompatible,
            target_order: match &self.target_order {
                Some(file) => Some(order_from_file(file, &target)?),
                None => self.order_of(target_path, &self.inputs, device)?,
            },
            source_order: match &self.source_order {
                Some(file) => Some(order_from_file(file, &source)?),
                None => self.order_of(source_path, &[], device)?,
            },
            candidates: self.candidates,
            device,
        };
        Ok(Mapper::new(source, target, options)?)
    }

    /// The order of the model at `path` that `--order` asks for; `None` leaves the
    /// mapper its default (a checkpoint's key order). `inputs` are that model's dummy
    /// inputs (the target's; none for the source).
    fn order_of(
        &self,
        path: &Path,
        inputs: &[InputSpec],
        device: tch::Device,
    ) -> anyhow::Result<Option<TensorOrder>> {
        let script = || -> anyhow::Result<bool> {
            Ok(weightmap::read::detect_format(path)? == weightmap::Format::TorchScript)
        };
        Ok(match self.order {
            OrderChoice::Auto => auto_order(path, inputs, device),
            // An explicit order is used as asked or fails: no silent fallback.
            OrderChoice::Dynamic if script()? && !inputs.is_empty() => {
                Some(TensorOrder::from(&trace::trace(path, inputs, device)?))
            }
            OrderChoice::Dynamic | OrderChoice::Static if script()? => Some(TensorOrder::from(
                &trace::ScriptModule::load(path, device)?.static_order()?,
            )),
            OrderChoice::Registration if script()? => Some(TensorOrder::from(
                &trace::ScriptModule::load(path, device)?.registration_order(),
            )),
            OrderChoice::Dynamic | OrderChoice::Static | OrderChoice::Registration => None,
            // An empty order of kind `None`: the mapper ranks nothing on this side.
            OrderChoice::None => Some(TensorOrder {
                kind: OrderKind::None,
                names: vec![],
            }),
        })
    }
}

/// The order `--order auto` gives the model at `path` (see [`model_order`]); when it
/// cannot be had, a warning and `None` (the mapper then uses the file's order).
pub fn auto_order(path: &Path, inputs: &[InputSpec], device: tch::Device) -> Option<TensorOrder> {
    match model_order(path, inputs, device) {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "warning: no execution order for {} ({e}); using its registration order",
                path.display()
            );
            None
        }
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
