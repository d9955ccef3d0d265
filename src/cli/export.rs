//! `weightmap export`: a mapping as rename rules (an HF `key_mapping`, weightmap's rules
//! file) or a standalone Python converter.

use std::io::Write;
use std::path::PathBuf;
use weightmap::mapping::Mapping;

/// What `export` writes.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// `{regex: replacement}` for transformers' `from_pretrained(..., key_mapping=...)`;
    /// transforms cannot be expressed there and are listed on standard error.
    HfKeyMapping,
    /// A Python module with `convert(state_dict) -> state_dict` (only torch needed).
    Python,
    /// weightmap's rules file, for `apply SOURCE --rules FILE` and `map --rules FILE`.
    Rules,
}

/// Flags of `weightmap export`.
#[derive(clap::Args)]
pub struct Args {
    /// The mapping file written by `map -o`.
    pub mapping: PathBuf,
    /// hf-key-mapping, python or rules.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: ExportFormat,
    /// The file to write.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Overwrite the output if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Runs `weightmap export`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mapping = Mapping::load(&args.mapping)?;
    // transformers keeps a key no pattern matches: names that stay need no rule there.
    let unmatched = match args.format {
        ExportFormat::HfKeyMapping => weightmap::export::Unmatched::Kept,
        ExportFormat::Python | ExportFormat::Rules => weightmap::export::Unmatched::Dropped,
    };
    let rules = weightmap::export::induce_rules(&mapping, unmatched)?;
    if !mapping.conversions.is_empty() && args.format != ExportFormat::Python {
        // Not expressible as renames; named so that nobody believes the export complete.
        eprintln!(
            "note: {} conversion(s) (split, concat, stack) are not renames and are not in this export; `--format python` carries them, `weightmap apply --mapping {}` applies them:",
            mapping.conversions.len(),
            args.mapping.display()
        );
        for c in &mapping.conversions {
            eprintln!("  {}", c.describe());
        }
    }
    let text = match args.format {
        ExportFormat::HfKeyMapping => {
            if !rules.transforms.is_empty() {
                eprintln!(
                    "note: {} tensor(s) need a transform that key_mapping cannot express; apply them after loading (or use --format python):",
                    rules.transforms.len()
                );
                for (target, how) in &rules.transforms {
                    eprintln!("  {target}: {how}");
                }
            }
            serde_json::to_string_pretty(&rules.to_key_mapping())? + "\n"
        }
        ExportFormat::Rules => serde_json::to_string_pretty(&rules.to_json())? + "\n",
        ExportFormat::Python => weightmap::export::python_module(
            &rules,
            &mapping.conversions,
            &args.mapping.display().to_string(),
        ),
    };
    let mut out =
        weightmap::output::OutputFile::create(&args.output, &[args.mapping.as_path()], args.force)?;
    out.file()
        .write_all(text.as_bytes())
        .map_err(|e| weightmap::Error::io(&args.output, e))?;
    out.commit()?;
    eprintln!(
        "wrote {} ({} rule(s) for {} rename(s))",
        args.output.display(),
        rules.rules().len(),
        mapping.entries.len()
    );
    // Many rules for the renames: say why fewer cannot do, when it can be proven.
    if args.format != ExportFormat::Python && rules.rules().len() * 10 > mapping.entries.len() {
        let bound = weightmap::export::rule_lower_bound(&mapping, unmatched);
        if let Some(w) = bound.witness.filter(|_| bound.rules > 1) {
            let ((s1, t1), (s2, t2), ch) = (w.needs, w.lacks, w.character);
            eprintln!(
                "note: no list of regex rules does with fewer than {}: '{s1}' -> '{t1}' needs a literal {ch:?} (its source has none), which the rule would also write into '{s2}' -> '{t2}'{}",
                bound.rules,
                if ch.is_ascii_digit() {
                    " (a regex replacement cannot compute a renumbering)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}
