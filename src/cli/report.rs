//! `weightmap report`: writes the mapping as one self-contained HTML page (both module
//! trees side by side, matches drawn between them, filters, search, score breakdowns).

use super::flags::MappingFlags;
use std::path::{Path, PathBuf};
use weightmap::report::html;

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
    /// Review this mapping file (written by `map -o`, perhaps edited) as it is, instead of
    /// computing one: its pairs are pinned, nothing else is mapped.
    #[arg(long = "mapping", value_name = "MAPPING_JSON", conflicts_with = "from")]
    pub mapping_file: Option<PathBuf>,
    /// The HTML file to write (replaced if it exists).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// How the mapping is computed (ignored with --from).
    #[command(flatten)]
    pub mapping: MappingFlags,
}

/// Runs `weightmap report`.
pub fn run(mut args: Args) -> anyhow::Result<()> {
    if let Some(path) = &args.mapping_file {
        args.mapping.mapping_pins = Some(super::flags::pins_of_mapping_file(path)?);
    }
    let (data, inputs): (serde_json::Value, Vec<PathBuf>) =
        match (&args.from, &args.source, &args.target) {
            (Some(from), _, _) => {
                let result = html::load_report_json(from)?;
                (
                    html::report_data(&result, None, None, None),
                    vec![from.clone()],
                )
            }
            (None, Some(s), Some(t)) => {
                let (request, mut prepared) = args.mapping.prepare(s, t)?;
                let result = prepared.suggest_mapping(&request.suggest)?;
                super::flags::print_notes(&mut prepared);
                let mapper = &prepared.mapper;
                let data = html::report_data(
                    &result,
                    Some(mapper.source()),
                    Some(mapper.target()),
                    mapper.options().target_order.as_ref(),
                );
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
