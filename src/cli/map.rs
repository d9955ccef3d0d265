//! `weightmap map`: works out which source tensor goes to which target tensor, and why.

use super::flags::{color_enabled, MappingFlags};
use std::path::{Path, PathBuf};
use weightmap::mapper::MappingResult;
use weightmap::report::terminal::{map_to_text, MapTextOptions, Rows};

/// Flags of `weightmap map`.
#[derive(clap::Args)]
pub struct Args {
    /// The source: a checkpoint, safetensors file or index, TorchScript model or model spec JSON.
    pub source: PathBuf,
    /// The target: a TorchScript model (gives execution order), a checkpoint, or a model spec JSON.
    pub target: PathBuf,
    /// Write the mapping file `apply` reads (version 2):
    /// {"format": "weightmap.mapping", "version": 2,
    ///  "mapping": {SOURCE: TARGET | {"target": TARGET, "transform": "transpose" | {"reshape": [..]}}},
    ///  "conversions": [{"kind": split|concat|stack|unstack|stack_of_concat|split_of_unstack,
    ///    "sources": [..], "targets": [..] (in the order the op uses them), "dim": N,
    ///    "sizes": [..], "group_size": G, "concat_dim": N, "transpose": bool,
    ///    "confidence": 0..1, "reason": "...", "ambiguous": "what to check"}]}.
    /// The older {source: target} form is still read; see the README for the semantics.
    #[arg(
        short = 'o',
        long = "output",
        value_name = "FILE",
        verbatim_doc_comment
    )]
    pub output: Option<PathBuf>,
    /// Overwrite the -o and --report files if they exist (an edited mapping is not
    /// replaced silently).
    #[arg(long)]
    pub force: bool,
    /// Write the full JSON report (scores, breakdowns, alternatives, unmatched with reasons).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// How the mapping is computed (strategy, threshold, weights, order, trace inputs).
    #[command(flatten)]
    pub mapping: MappingFlags,
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
    /// Exit with status 3 (after printing and writing everything) when the result has
    /// tensors left unmatched for want of a counterpart (`unmatched`: those in conversions,
    /// tied or outside the state dict do not count) or pairs that need review (`review`:
    /// flagged ambiguous, or decided by scores with a thin margin); comma-separated.
    #[arg(long, value_name = "unmatched,review", value_delimiter = ',')]
    pub fail_on: Vec<FailOn>,
    /// Pair tensors with equal content first (both models need values: checkpoints,
    /// safetensors or TorchScript), then map the rest as usual.
    #[arg(long)]
    pub by_content: bool,
}

/// Runs `weightmap map`.
pub fn run(args: Args) -> anyhow::Result<()> {
    weightmap::progress::set_quiet(args.quiet);
    // Refused before minutes of work, and again when written (it may appear meanwhile).
    for path in args.output.iter().chain(&args.report) {
        refuse_existing(path, &args, args.force)?;
    }
    // Every flag is validated before anything is read.
    let (mut request, mut prepared) = args.mapping.prepare(&args.source, &args.target)?;
    // Alternatives of pairs decided by structure are for review: only the JSON report
    // lists them (a scoring pass over every pair, seconds at 90k tensors).
    request.suggest.alternatives = args.json || args.report.is_some();
    let (result, content) = if args.by_content {
        let mut c = weightmap::diff::suggest_by_content(&prepared.mapper, &request.suggest)?;
        if prepared.settle_order(&c.result)? {
            c = weightmap::diff::suggest_by_content(&prepared.mapper, &request.suggest)?;
        }
        (c.result, Some((c.by_content, c.notes)))
    } else {
        (prepared.suggest_mapping(&request.suggest)?, None)
    };
    super::flags::print_notes(&mut prepared);

    let mut clock = weightmap::progress::StageClock::start();
    if let Some(path) = &args.output {
        write_new(path, &result.to_mapping_json(), &args)?;
    }
    clock.lap("write");
    // The full report costs seconds on large models: built only when asked for.
    let mut report = if args.report.is_some() || args.json {
        result.to_report_json()
    } else {
        serde_json::Value::Null
    };
    if let (Some((pairs, notes)), serde_json::Value::Object(o)) = (&content, &mut report) {
        o.insert(
            "by_content".into(),
            serde_json::json!({"pairs": pairs, "notes": notes}),
        );
    }
    if !report.is_null() {
        report = weightmap::format::json::versioned(&report)?;
    }
    if let Some(path) = &args.report {
        write_new(path, &report, &args)?;
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
                    color: color_enabled(),
                    rows
                }
            )
        );
        if let Some((pairs, notes)) = &content {
            println!("{pairs} pairs decided by equal content");
            for n in notes {
                println!("note: {n}");
            }
        }
    }
    let failed: Vec<String> = args
        .fail_on
        .iter()
        .filter_map(|f| match f {
            FailOn::Unmatched => (result.unaccounted() > 0)
                .then(|| format!("{} tensors unmatched", result.unaccounted())),
            FailOn::Review => (result.needs_review() > 0)
                .then(|| format!("{} pairs need review", result.needs_review())),
        })
        .collect();
    if !failed.is_empty() {
        eprintln!("weightmap map: --fail-on: {}", failed.join(", "));
        std::process::exit(super::EXIT_CHECK_FAILED);
    }
    Ok(())
}

/// What `--fail-on` stops on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    /// Tensors left unmatched for want of a counterpart.
    Unmatched,
    /// Pairs that need review.
    Review,
}

fn inputs(args: &Args) -> Vec<&Path> {
    let mut v = vec![args.source.as_path(), args.target.as_path()];
    v.extend(args.mapping.rules.as_deref());
    v
}

fn refuse_existing(path: &Path, args: &Args, force: bool) -> anyhow::Result<()> {
    // Creating the output checks everything (an input, a folder, an existing file);
    // dropped uncommitted, it leaves nothing behind.
    weightmap::output::OutputFile::create(path, &inputs(args), force)?;
    Ok(())
}

fn write_new(path: &Path, value: &serde_json::Value, args: &Args) -> anyhow::Result<()> {
    Ok(weightmap::format::json::write_json_checked(
        path,
        value,
        &inputs(args),
        args.force,
    )?)
}

fn headline(r: &MappingResult) -> String {
    format!(
        "{} of {} target tensors mapped ({:.1}% coverage), {} source tensors unmatched, {} need review",
        r.mappings.len(),
        r.target.tensors,
        100.0 * r.coverage(),
        r.unmatched_source.len(),
        r.needs_review()
    )
}
