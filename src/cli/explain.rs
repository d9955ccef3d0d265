//! `weightmap explain`: the score breakdown of one source tensor and why its
//! alternatives lost.

use std::path::PathBuf;
use weightmap::format::json::versioned;
use weightmap::mapping::did_you_mean;
use weightmap::report::explain::{
    effective_weights, explain_to_text, ExplainOptions, DEFAULT_ALTERNATIVES,
};

/// Flags of `weightmap explain`.
#[derive(clap::Args)]
pub struct Args {
    /// The source model (any format `map` accepts).
    pub source: PathBuf,
    /// The target model.
    pub target: PathBuf,
    /// The source tensor to explain (as in the file, or without wrapper prefixes).
    pub name: String,
    /// Number of alternatives listed.
    #[arg(long, default_value_t = DEFAULT_ALTERNATIVES, value_name = "N")]
    pub alternatives: usize,
    /// Explain in the context of this mapping file (written by `map -o`, perhaps edited):
    /// its pairs are pinned as they are, nothing else is mapped.
    #[arg(long = "mapping", value_name = "MAPPING_JSON")]
    pub mapping_file: Option<PathBuf>,
    /// Print the explanation as JSON instead.
    #[arg(long)]
    pub json: bool,
    /// How the mapping is computed.
    #[command(flatten)]
    pub flags: super::flags::MappingFlags,
}

/// Runs `weightmap explain`.
pub fn run(mut args: Args) -> anyhow::Result<()> {
    if let Some(path) = &args.mapping_file {
        args.flags.mapping_pins = Some(super::flags::pins_of_mapping_file(path)?);
    }
    let (request, mut prepared) = args.flags.prepare(&args.source, &args.target)?;
    let opts = request.suggest;
    // The mapping explained is `map`'s: with an execution order where `map` would trace one
    // (a first mapping tells; without a deferred order, explain's own mapping is the only one).
    if prepared.order_deferred() {
        prepared.suggest_mapping(&opts)?;
    }
    super::flags::print_notes(&mut prepared);
    let mapper = &prepared.mapper;
    let source = mapper.source();
    let known = source
        .tensors
        .iter()
        .any(|t| t.name == args.name || t.original_name == args.name);
    if !known {
        let names = source
            .tensors
            .iter()
            .flat_map(|t| [t.original_name.as_str(), t.name.as_str()]);
        let mut hint = did_you_mean(&args.name, names);
        if hint.is_empty() {
            hint = "; list the source tensors with `weightmap inspect`".into();
        }
        anyhow::bail!(weightmap::Error::MissingKey {
            context: format!("source {}", source.path),
            key: args.name.clone(),
            hint,
        });
    }
    let explanation = mapper.explain(&args.name, &opts)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&versioned(&explanation)?)?
        );
    } else {
        let text = explain_to_text(
            &explanation,
            &effective_weights(&opts),
            &ExplainOptions {
                color: super::flags::color_enabled(),
                alternatives: args.alternatives,
            },
        );
        print!("{text}");
    }
    Ok(())
}
