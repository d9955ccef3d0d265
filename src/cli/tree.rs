//! `weightmap tree`: one model's module tree, or two side by side with what matched.

use std::path::PathBuf;
use weightmap::report::tree::{
    pairs_from_mapping, pairs_from_result, render_side_by_side, render_tree, TreeOptions,
};

/// Flags of `weightmap tree`.
#[derive(clap::Args)]
pub struct Args {
    /// The (source) model: any format `inspect` reads.
    pub source: PathBuf,
    /// A target model: show both trees side by side, marked by what matched.
    pub target: Option<PathBuf>,
    /// Deepest module level shown; deeper modules are folded into a count.
    #[arg(long, value_name = "N")]
    pub depth: Option<usize>,
    /// Mark matches from this mapping file (written by `map -o`) instead of computing them.
    #[arg(long, value_name = "MAPPING_JSON", requires = "target")]
    pub mapping: Option<PathBuf>,
    /// How the mapping is computed when no --mapping is given.
    #[command(flatten)]
    pub flags: super::flags::MappingFlags,
}

/// Runs `weightmap tree`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let opts = TreeOptions {
        depth: args.depth,
        color: super::flags::color_enabled(),
        width: super::flags::output_width(),
    };
    if args.depth == Some(0) {
        anyhow::bail!(weightmap::Error::invalid(
            "--depth",
            "give 1 or more (1 shows the top-level modules)"
        ));
    }
    let text = match (&args.target, &args.mapping) {
        (None, _) => {
            let spec = weightmap::read_model(&args.source, &weightmap::ReadOptions::default())?;
            render_tree(&spec, &opts)
        }
        (Some(target), Some(mapping_path)) => {
            // Validate the flags the mapping file replaces all the same, so typos surface.
            args.flags.request(&args.source, target)?;
            let read = weightmap::ReadOptions::default();
            let source = weightmap::read_model(&args.source, &read)?;
            let target = weightmap::read_model(target, &read)?;
            let mapping = weightmap::mapping::Mapping::load(mapping_path)?;
            let pairs = pairs_from_mapping(
                &source,
                &target,
                &mapping,
                &mapping_path.display().to_string(),
            )?;
            render_side_by_side(&source, &target, &pairs, &opts)
        }
        (Some(target), None) => {
            let (request, mut prepared) = args.flags.prepare(&args.source, target)?;
            let result = prepared.suggest_mapping(&request.suggest)?;
            super::flags::print_notes(&mut prepared);
            let mapper = &prepared.mapper;
            let pairs = pairs_from_result(mapper.source(), mapper.target(), &result);
            render_side_by_side(mapper.source(), mapper.target(), &pairs, &opts)
        }
    };
    print!("{text}");
    Ok(())
}
