//! The `weightmap` command line: parses flags, calls the library, prints.
//! Each subcommand lives in `src/cli/<name>.rs` with its flags and its printing.

mod cli;

/// mimalloc: a third of a large mapping's run was glibc's malloc and free.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weightmap",
    version,
    about = "Map the weights of one PyTorch model onto another"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a checkpoint's or model's format, state dict, prefixes, counts and module tree.
    Inspect(cli::inspect::Args),
    /// Work out which source tensor goes to which target tensor, and why.
    ///
    /// The table: SCORE (shape, name and hierarchy similarity, 0..1), CONF (confidence,
    /// 0..1: for a pair decided by scores, the margin over the best alternative; for one
    /// decided by structure, the trust in that evidence: 1 unique or pinned, 0.9 names,
    /// relations, execution order, block rules, ordinal families, sibling anchors, elimination, 0.8
    /// indices in names, 0.7 similar content, 0.3 file order), MARK (exact, transpose,
    /// reshape, ambiguous), TYPE (group: with its module; individual). A pair needs review
    /// when flagged ambiguous or decided by scores within 0.05 of an alternative.
    #[command(verbatim_doc_comment)]
    Map(cli::map::Args),
    /// Record the execution order of a TorchScript model's parameters and buffers.
    #[cfg(feature = "libtorch")]
    Trace(cli::trace::Args),
    /// Record the execution order of a TorchScript model's parameters and buffers
    /// (run by the libtorch build, weightmap-torch).
    #[cfg(not(feature = "libtorch"))]
    Trace(cli::delegate::Args),
    /// Write the adapted checkpoint under the target's names.
    Apply(cli::apply::Args),
    /// Load a checkpoint into a TorchScript target and run it.
    #[cfg(feature = "libtorch")]
    Verify(cli::verify::Args),
    /// Load a checkpoint into a TorchScript target and run it (run by the libtorch build,
    /// weightmap-torch).
    #[cfg(not(feature = "libtorch"))]
    Verify(cli::delegate::Args),
    /// Show module hierarchies side by side (fitted to `COLUMNS`, or the terminal's width).
    Tree(cli::tree::Args),
    /// Explain the score of one source tensor against its candidates.
    Explain(cli::explain::Args),
    /// Write a self-contained HTML report of a mapping.
    Report(cli::report::Args),
    /// Compare two models: identical, renamed, changed, converted, added, removed tensors.
    /// Exit 0 when they hold the same weights, 1 when not, 2 on error.
    Diff(cli::diff::Args),
    /// Export a mapping as rename rules (HF key_mapping, rules file) or a Python converter.
    Export(cli::export::Args),
}

fn main() {
    // Rust ignores SIGPIPE, so `weightmap inspect --json | head` would panic on a closed
    // pipe; restore the default so the command ends quietly, as other Unix tools do.
    // SAFETY: called before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    // diff's status says whether the models differ (1), so its errors need another (2).
    let diff = matches!(cli.command, Command::Diff(_));
    let result = match cli.command {
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Map(a) => cli::map::run(a),
        #[cfg(feature = "libtorch")]
        Command::Trace(a) => cli::trace::run(a),
        #[cfg(not(feature = "libtorch"))]
        Command::Trace(_) => Err(cli::delegate::hand_over("`trace`", None)),
        Command::Apply(a) => cli::apply::run(a),
        #[cfg(feature = "libtorch")]
        Command::Verify(a) => cli::verify::run(a),
        #[cfg(not(feature = "libtorch"))]
        Command::Verify(_) => Err(cli::delegate::hand_over("`verify`", None)),
        Command::Tree(a) => cli::tree::run(a),
        Command::Explain(a) => cli::explain::run(a),
        Command::Report(a) => cli::report::run(a),
        Command::Diff(a) => cli::diff::run(a).map(|same| {
            if !same {
                std::process::exit(1);
            }
        }),
        Command::Export(a) => cli::export::run(a),
    };
    // What turns out to need libtorch goes to the libtorch build, before any output.
    #[cfg(not(feature = "libtorch"))]
    let result = match result {
        Err(e) => match e.downcast_ref::<weightmap::Error>() {
            Some(weightmap::Error::NeedsLibtorch { what, order_needed }) => {
                Err(cli::delegate::hand_over(what, order_needed.as_deref()))
            }
            _ => Err(e),
        },
        ok => ok,
    };
    if let Err(e) = result {
        // The whole chain of causes, each said once (an I/O error's text is often in the
        // message of the error that wraps it).
        let mut message = e.to_string();
        for cause in e.chain().skip(1) {
            let cause = cause.to_string();
            if !message.contains(&cause) {
                message = format!("{message}: {cause}");
            }
        }
        eprintln!("error: {message}");
        std::process::exit(if diff { 2 } else { cli::exit_code(&e) });
    }
}
