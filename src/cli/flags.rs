//! Every flag that more than one subcommand takes, defined once and typed by clap's value
//! parsers (as ripgrep defines each flag once): a bad value is refused while parsing, and
//! the subcommands turn these into the library's request types.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use weightmap::mapper::{
    parse_incompatible, CandidateSearch, Constraints, MapperOptions, Strategy, SuggestOptions,
};
use weightmap::pipeline::{MapRequest, OrderPolicy};
use weightmap::score::ScoreWeights;
use weightmap::trace::InputSpec;
use weightmap::{Device, ReadOptions};

/// A clap value parser for any library type parsed by `FromStr` with a library error.
pub fn parse<T: FromStr<Err = weightmap::Error>>(text: &str) -> Result<T, String> {
    text.parse().map_err(|e: weightmap::Error| e.to_string())
}

fn parse_pair_flag(text: &str) -> Result<(String, String), String> {
    weightmap::mapper::parse_pair(text).map_err(|e| e.to_string())
}

/// Incompatible components: pairs of (source chunks, target chunks).
type Incompatible = Vec<(Vec<String>, Vec<String>)>;

fn parse_incompatible_flag(text: &str) -> Result<Incompatible, String> {
    parse_incompatible(text).map_err(|e| e.to_string())
}

/// Whether to color terminal output: not when `NO_COLOR` is set (to anything but the
/// empty string, per no-color.org) and not when standard output is not a terminal.
pub fn color_enabled() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stdout().is_terminal()
}

/// Width that text fitted to a terminal takes: `COLUMNS` when set to a positive number,
/// else the terminal's width when standard output is one (80 if it does not say), else
/// none (output piped to a file or a program is never cut).
pub fn output_width() -> Option<usize> {
    if let Some(n) = std::env::var("COLUMNS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        return Some(n);
    }
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct it is given, which lives here.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    Some(if ok && size.ws_col > 0 {
        usize::from(size.ws_col)
    } else {
        80
    })
}

/// `--input`: the dummy inputs of a forward pass.
#[derive(clap::Args, Debug, Clone)]
pub struct InputFlags {
    /// A dummy input for forward, repeatable in argument order: SHAPE[:DTYPE[:LO-HI]], e.g.
    /// 1x3x224x224, or 1x16:i64:0-1000 for token ids in [0, 1000). Floats default to standard
    /// normal, integers to 0/1.
    #[arg(long = "input", short = 'i', value_name = "SPEC", value_parser = parse::<InputSpec>)]
    pub inputs: Vec<InputSpec>,
}

/// `--device`: where libtorch work runs.
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceFlag {
    /// Where tracing, forward passes and the batched candidate score run: cpu, cuda or
    /// cuda:N (a mapping is the same on every device).
    #[arg(long, default_value = "cpu", value_name = "DEVICE", value_parser = parse::<Device>)]
    pub device: Device,
}

/// The flags that decide how a mapping is computed, shared by `map`, `tree`, `explain`
/// and `report`.
#[derive(clap::Args, Debug, Clone)]
pub struct MappingFlags {
    /// best_match, conservative or shape_only.
    #[arg(long, default_value = "best_match", value_name = "S", value_parser = parse::<Strategy>)]
    pub strategy: Strategy,
    /// Pairs scoring below this stay unmatched (0 to 1).
    #[arg(long, default_value_t = weightmap::mapper::DEFAULT_THRESHOLD, value_name = "T")]
    pub threshold: f64,
    /// Score weights, e.g. shape=0.5,name=0.3,hierarchy=0.2 (normalized).
    #[arg(long, value_name = "W", value_parser = parse::<ScoreWeights>)]
    pub weights: Option<ScoreWeights>,
    /// Incompatible components: SOURCE_CHUNKS:TARGET_CHUNKS, e.g. 'backbone,encoder:head,classifier'
    /// (several separated by ';').
    #[arg(long, value_name = "SPEC", value_parser = parse_incompatible_flag)]
    pub incompatible: Option<Incompatible>,
    /// Shape tolerance (0 to 1); above 0, reshapes such as conv 1x1 <-> linear are candidates.
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    pub shape_tolerance: f64,
    /// The target's dummy inputs for tracing its execution order (without: static order).
    #[command(flatten)]
    pub inputs: InputFlags,
    /// Where the trace and the batched candidate score run.
    #[command(flatten)]
    pub device: DeviceFlag,
    /// How candidates of the units structure leaves over are found: auto (exact while
    /// each has at most 64 same-shape candidates, batched beyond), exact (score every
    /// same-shape candidate), batched (top-k by a batched tensor score on --device, then
    /// exact scores for those).
    #[arg(long, default_value = "auto", value_name = "SEARCH", value_parser = parse::<CandidateSearch>)]
    pub candidates: CandidateSearch,
    /// Which order tells look-alikes apart: auto (dynamic with --input, else static, else
    /// registration; a checkpoint's key order), dynamic (needs --input), static,
    /// registration, or none (names and shapes only: measures what order adds).
    #[arg(long, default_value = "auto", value_name = "ORDER", value_parser = parse::<OrderPolicy>)]
    pub order: OrderPolicy,
    /// The target's execution order saved by `weightmap trace TARGET -o FILE`, used instead
    /// of tracing: any target format (a model spec JSON, a checkpoint) then has one.
    #[arg(long, value_name = "ORDER_JSON", conflicts_with = "inputs")]
    pub target_order: Option<PathBuf>,
    /// The source's execution order saved by `weightmap trace SOURCE -o FILE` (e.g. of a
    /// TorchScript export of the model that wrote the checkpoint).
    #[arg(long, value_name = "ORDER_JSON")]
    pub source_order: Option<PathBuf>,
    /// Map SOURCE to TARGET whatever the scores say (names as written in the files;
    /// repeatable); the rest is re-solved around the pinned pairs.
    #[arg(long = "pin", value_name = "SRC=TGT", value_parser = parse_pair_flag)]
    pub pins: Vec<(String, String)>,
    /// Never map SOURCE to TARGET (repeatable); the rest is re-solved without that pair.
    #[arg(long = "forbid", value_name = "SRC=TGT", value_parser = parse_pair_flag)]
    pub forbids: Vec<(String, String)>,
    /// Rename rules (`weightmap export --format rules`, or an HF key_mapping JSON) taken as
    /// pins: each source tensor the first matching rule renames to a target tensor is
    /// pinned there; --pin wins over a rule.
    #[arg(long, value_name = "RULES_JSON")]
    pub rules: Option<PathBuf>,
    /// Take the source's state dict from this nested key (e.g. state_dict, ema, model);
    /// without it the most likely one is used and named.
    #[arg(long, value_name = "KEY")]
    pub state_dict_key: Option<String>,
    /// Pairs pinned by the subcommand (`--mapping FILE` of `report` and `explain`).
    #[arg(skip)]
    pub mapping_pins: Option<Vec<(String, String)>>,
}

impl MappingFlags {
    /// The library request these flags describe, validated before anything is read.
    pub fn request(&self, source: &Path, target: &Path) -> anyhow::Result<MapRequest> {
        let request = MapRequest {
            source: source.to_path_buf(),
            target: target.to_path_buf(),
            read: ReadOptions {
                state_dict_key: self.state_dict_key.clone(),
                ..ReadOptions::default()
            },
            order: self.order,
            inputs: self.inputs.inputs.clone(),
            target_order: self.target_order.clone(),
            source_order: self.source_order.clone(),
            device: self.device.device,
            mapper: MapperOptions {
                shape_tolerance: self.shape_tolerance,
                incompatible: self.incompatible.clone().unwrap_or_default(),
                candidates: self.candidates,
                constraints: Constraints {
                    pins: self
                        .pins
                        .iter()
                        .chain(self.mapping_pins.iter().flatten())
                        .cloned()
                        .collect(),
                    forbids: self.forbids.clone(),
                    exclusive: self.mapping_pins.is_some(),
                },
                ..MapperOptions::default()
            },
            suggest: SuggestOptions {
                threshold: self.threshold,
                strategy: self.strategy,
                weights: self.weights.unwrap_or_default(),
                alternatives: true,
            },
            rules: match &self.rules {
                Some(path) => Some(weightmap::rules::Rules::load(path)?),
                None => None,
            },
            order_needed: super::delegate::order_needed(),
        };
        request.validate().map_err(flag_names)?;
        Ok(request)
    }

    /// Reads both models and builds the mapper, printing the pipeline's warnings.
    pub fn prepare(
        &self,
        source: &Path,
        target: &Path,
    ) -> anyhow::Result<(MapRequest, weightmap::pipeline::Prepared)> {
        let request = self.request(source, target)?;
        let mut prepared = weightmap::pipeline::prepare(&request)?;
        print_notes(&mut prepared);
        Ok((request, prepared))
    }
}

/// Prints (once) the warnings and, unless `--quiet`, the notes the pipeline has gathered so
/// far: reading, then whether an execution order was traced.
pub fn print_notes(prepared: &mut weightmap::pipeline::Prepared) {
    for w in prepared.warnings.drain(..) {
        eprintln!("warning: {w}");
    }
    let notes = std::mem::take(&mut prepared.notes);
    if !weightmap::progress::is_quiet() {
        for n in notes {
            eprintln!("note: {n}");
        }
    }
}

/// The pairs of a mapping file (`--mapping FILE` of `report` and `explain`), to be pinned
/// as they are: the review shows the edited mapping, not a re-solved one.
pub fn pins_of_mapping_file(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    Ok(weightmap::mapping::Mapping::load(path)?
        .entries
        .into_iter()
        .map(|e| (e.source, e.target))
        .collect())
}

/// The library names options by what they are; on the command line they are flags: say
/// which flag an invalid-argument error is about.
pub fn flag_names(e: weightmap::Error) -> anyhow::Error {
    match e {
        weightmap::Error::InvalidArgument { what, message } => {
            let flag = match what.as_str() {
                "order" => "--order",
                "input" => "--input",
                "device" => "--device",
                "threshold" => "--threshold",
                "weights" => "--weights",
                "strategy" => "--strategy",
                "pin" => "--pin",
                "forbid" => "--forbid",
                other => {
                    return weightmap::Error::InvalidArgument {
                        what: other.into(),
                        message,
                    }
                    .into()
                }
            };
            weightmap::Error::InvalidArgument {
                what: flag.into(),
                message,
            }
            .into()
        }
        other => other.into(),
    }
}
