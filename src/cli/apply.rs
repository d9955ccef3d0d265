//! `weightmap apply`: writes the adapted checkpoint under the target's names.

use anyhow::Context;
use std::path::{Path, PathBuf};
use weightmap::apply::{self, ApplyOptions, Mapping, OutputFormat};
use weightmap::format::json::versioned;
use weightmap::pipeline::MapRequest;
use weightmap::{read_model, ReadOptions};

/// Flags of `weightmap apply`.
#[derive(clap::Args)]
pub struct Args {
    /// The source checkpoint (.pth, .pt, .bin, .ckpt, .safetensors, or a sharded index).
    pub source: PathBuf,
    /// The mapping file: {source: target} or {source: {"target": ..., "transform": ...}}.
    #[arg(long, short = 'm')]
    pub mapping: Option<PathBuf>,
    /// The target model (TorchScript, checkpoint or spec). Without --mapping the mapping is
    /// worked out against it; with --mapping every mapped name and shape is checked against it.
    #[arg(long, short = 't')]
    pub target: Option<PathBuf>,
    /// The output file; its extension picks the format unless --format is given.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Output format: safetensors or pth.
    #[arg(long)]
    pub format: Option<String>,
    /// Rename by these rules (`weightmap export --format rules`) instead of a mapping: for
    /// more checkpoints of the same architecture (fine-tunes, EMA copies), no target needed.
    /// A key no rule matches is an error unless --keep-unmatched.
    #[arg(long, value_name = "RULES_JSON", conflicts_with = "mapping")]
    pub rules: Option<PathBuf>,
    /// Write unmapped source tensors too, under their own names (with --rules: keys no
    /// rule matches).
    #[arg(long, alias = "keep-unmatched")]
    pub keep_unmapped: bool,
    /// Overwrite the output if it exists (a regular file only).
    #[arg(long)]
    pub force: bool,
    /// Write the output even when the mapping maps no tensor.
    #[arg(long)]
    pub allow_empty: bool,
    /// Take the state dict from this nested key of the source (e.g. state_dict_ema).
    #[arg(long)]
    pub state_dict_key: Option<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

fn read(path: &Path, state_dict_key: Option<String>) -> anyhow::Result<weightmap::ModelSpec> {
    Ok(read_model(
        path,
        &ReadOptions {
            state_dict_key,
            keep_prefixes: false,
        },
    )?)
}

/// Runs `weightmap apply`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let format = args
        .format
        .as_deref()
        .map(OutputFormat::parse)
        .transpose()?;
    let source = read(&args.source, args.state_dict_key.clone())?;
    let target = args.target.as_deref().map(|t| read(t, None)).transpose()?;
    let (mapping, context) = match (&args.mapping, &target) {
        (Some(path), _) => (Mapping::load(path)?, path.display().to_string()),
        (None, _) if args.rules.is_some() => {
            let path = args.rules.as_deref().unwrap_or(Path::new(""));
            let rules = weightmap::rules::Rules::load(path)?;
            let context = path.display().to_string();
            let mapping = weightmap::export::mapping_from_rules(
                &rules,
                &source,
                args.keep_unmapped,
                &context,
            )?;
            (mapping, context)
        }
        (None, Some(target)) => {
            let target_path = args.target.as_deref().unwrap_or(Path::new(""));
            let mapping = compute_mapping(
                &args.source,
                &source,
                target_path,
                target,
                args.state_dict_key.clone(),
            )?;
            (mapping, "computed mapping".to_string())
        }
        (None, None) => {
            return Err(weightmap::Error::invalid(
                "arguments",
                "give --mapping MAPPING.json, --rules RULES.json or --target TARGET",
            )
            .into())
        }
    };
    let options = ApplyOptions {
        format,
        keep_unmapped: args.keep_unmapped,
        force: args.force,
        allow_empty: args.allow_empty,
    };
    let summary = apply::apply(
        &source,
        &mapping,
        target.as_ref(),
        &args.output,
        &options,
        &context,
    )
    .with_context(|| format!("writing {}", args.output.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&versioned(&summary)?)?);
    } else {
        println!(
            "wrote {} ({}, {} bytes)",
            summary.output.display(),
            summary.format,
            summary.bytes
        );
        println!("  renamed      {}", summary.renamed);
        println!("  transformed  {}", summary.transformed);
        println!(
            "  converted    {} (by {} conversion(s))",
            summary.converted, summary.conversions
        );
        println!(
            "  kept         {}{}",
            summary.kept,
            if summary.preserved_checkpoint {
                " (checkpoint preserved: unmapped state-dict entries stay)"
            } else {
                ""
            }
        );
        println!(
            "  dropped      {}{}",
            summary.dropped,
            if summary.dropped > 0 && !args.keep_unmapped {
                " (unmapped; --keep-unmapped keeps them)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// The mapping the engine works out with `weightmap map`'s default settings (the
/// TorchScript models' static execution order where there is one).
fn compute_mapping(
    source_path: &Path,
    source: &weightmap::ModelSpec,
    target_path: &Path,
    target: &weightmap::ModelSpec,
    state_dict_key: Option<String>,
) -> anyhow::Result<Mapping> {
    let mut request = MapRequest::new(source_path, target_path);
    request.read.state_dict_key = state_dict_key;
    let mut prepared = weightmap::pipeline::prepare(&request)?;
    let result = prepared.suggest_mapping(&request.suggest)?;
    for w in &prepared.warnings {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "mapped {} of {} source tensors onto {} target tensors (weightmap map shows why)",
        result.mappings.len(),
        source.tensors.len(),
        target.tensors.len()
    );
    Ok(result.to_mapping())
}
