//! `weightmap inspect`: prints what a model file holds.

use std::path::PathBuf;
use weightmap::format::json::versioned;
use weightmap::report::inspect::{to_json, to_text, TextOptions};

/// Flags of `weightmap inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// A checkpoint, safetensors file or index, TorchScript model, or model spec JSON.
    pub file: PathBuf,
    /// Print one JSON object (itself accepted as a model input) instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Show the module tree with parameter badges (W weight, B bias, buffer) and shapes.
    #[arg(long)]
    pub tree: bool,
    /// Deepest module level shown by --tree; deeper modules are folded into a count.
    #[arg(long, value_name = "N")]
    pub depth: Option<usize>,
    /// Use this nested dict as the state dict (e.g. `ema`, `model.ema`; `.` for the top level).
    #[arg(long, value_name = "K")]
    pub state_dict_key: Option<String>,
    /// Keep wrapper prefixes (`module.`, `_orig_mod.`, Lightning `model.`) in the names.
    #[arg(long)]
    pub keep_prefixes: bool,
}

/// Runs `weightmap inspect`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let options = weightmap::ReadOptions {
        state_dict_key: args.state_dict_key,
        keep_prefixes: args.keep_prefixes,
    };
    let spec = weightmap::read_model(&args.file, &options)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&versioned(&to_json(&spec))?)?
        );
    } else {
        print!(
            "{}",
            to_text(
                &spec,
                TextOptions {
                    tree: args.tree,
                    depth: args.depth
                }
            )
        );
    }
    Ok(())
}
