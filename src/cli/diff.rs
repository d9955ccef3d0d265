//! `weightmap diff`: what was renamed, changed, converted, added or removed between two
//! models. Exit status 0 when they hold the same weights under some naming, 1 when not,
//! 2 on any error (bad flag, unreadable file), as `diff(1)` does.

use std::io::Write;
use std::path::{Path, PathBuf};
use weightmap::diff::{DiffOptions, DiffResult, Entry};

/// Flags of `weightmap diff`.
#[derive(clap::Args)]
pub struct Args {
    /// Model A: a checkpoint (.pth, .ckpt, .bin), safetensors file or index, or TorchScript model.
    pub a: PathBuf,
    /// Model B, in any of the same formats.
    pub b: PathBuf,
    /// Print the JSON report instead of the text.
    #[arg(long)]
    pub json: bool,
    /// Also write the diff as a self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// A changed or converted tensor whose largest absolute difference is at most T counts
    /// as close (the same weights, for the exit status).
    #[arg(long, default_value_t = 0.0, value_name = "T")]
    pub tolerance: f64,
    /// Pick this nested dict of a torch.save checkpoint as its state dict (both sides).
    #[arg(long, value_name = "KEY")]
    pub state_dict_key: Option<String>,
    /// Skip comparing the forward graphs of two TorchScript models.
    #[arg(long)]
    pub no_graph: bool,
    /// List identical tensors too.
    #[arg(long)]
    pub all: bool,
    /// Print the summary line only.
    #[arg(long, conflicts_with = "json")]
    pub quiet: bool,
}

/// Runs `weightmap diff`; returns whether A and B hold the same weights.
pub fn run(args: Args) -> anyhow::Result<bool> {
    weightmap::progress::set_quiet(args.quiet || args.json);
    let options = DiffOptions {
        read: weightmap::ReadOptions {
            state_dict_key: args.state_dict_key.clone(),
            keep_prefixes: false,
        },
        tolerance: args.tolerance,
        graphs: !args.no_graph,
    };
    let result = weightmap::diff::diff(&args.a, &args.b, &options)?;
    if let Some(path) = &args.report {
        write_atomically(path, result.to_html().as_bytes())?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&result.to_json())?)?;
    } else if args.quiet {
        writeln!(out, "{}", result.summary_line())?;
    } else {
        write!(out, "{}", text(&result, args.all))?;
    }
    out.flush()?;
    Ok(result.same_weights())
}

/// Writes `bytes` to `path` through a temporary file renamed into place.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| weightmap::Error::io(path, e))?;
    tmp.write_all(bytes)
        .map_err(|e| weightmap::Error::io(path, e))?;
    tmp.persist(path)
        .map_err(|e| weightmap::Error::io(path, e.error))?;
    Ok(())
}

fn name(t: &Option<weightmap::TensorInfo>) -> &str {
    t.as_ref().map(|t| t.original_name.as_str()).unwrap_or("")
}

fn pair(e: &Entry) -> String {
    if name(&e.a) == name(&e.b) {
        name(&e.a).to_string()
    } else {
        format!("{} -> {}", name(&e.a), name(&e.b))
    }
}

fn figures(e: &Entry) -> String {
    let mut parts = vec![];
    if let Some(c) = &e.conversion {
        parts.push(c.clone());
    }
    match &e.stats {
        Some(s) => parts.push(format!(
            "max abs diff {:.2e}, rel L2 {:.2e}, cosine {:.6}, {:.1}% of elements differ{}",
            s.max_abs_diff,
            s.rel_l2,
            s.cosine,
            100.0 * s.frac_differ,
            if e.close { " (close)" } else { "" }
        )),
        None => parts.push("values not comparable".into()),
    }
    parts.join("; ")
}

/// The text report: the summary line, then each category that is not empty.
fn text(r: &DiffResult, all: bool) -> String {
    let mut s = format!("{}\n", r.summary_line());
    let mut section = |title: &str, lines: Vec<String>| {
        if !lines.is_empty() {
            s.push_str(&format!("\n{title} ({}):\n", lines.len()));
            for l in lines {
                s.push_str(&format!("  {l}\n"));
            }
        }
    };
    section(
        "changed",
        r.changed
            .iter()
            .map(|e| format!("{}: {}", pair(e), figures(e)))
            .collect(),
    );
    section(
        "converted",
        r.converted
            .iter()
            .map(|e| format!("{}: {}", pair(e), figures(e)))
            .collect(),
    );
    section(
        "removed (only in A)",
        r.removed.iter().map(|e| name(&e.a).to_string()).collect(),
    );
    section(
        "added (only in B)",
        r.added.iter().map(|e| name(&e.b).to_string()).collect(),
    );
    section(
        "renamed",
        r.renamed
            .iter()
            .map(|e| {
                let by = e.paired_by.map(|p| format!("{p:?}").to_lowercase());
                format!("{} (by {})", pair(e), by.unwrap_or_default())
            })
            .collect(),
    );
    if all {
        section("identical", r.identical.iter().map(pair).collect());
    }
    section("notes", r.notes.clone());
    if let Some(g) = &r.graph {
        let mut lines = vec![];
        if g.signature_a == g.signature_b {
            lines.push(format!("signature: {} (same)", g.signature_a));
        } else {
            lines.push(format!("signature in A: {}", g.signature_a));
            lines.push(format!("signature in B: {}", g.signature_b));
        }
        if g.op_changes.is_empty() {
            lines.push(format!(
                "aten ops: the same ({} kinds, {} nodes)",
                g.ops_a.len(),
                g.ops_a.values().sum::<usize>()
            ));
        }
        for c in &g.op_changes {
            lines.push(format!("{}: {} in A, {} in B", c.op, c.a, c.b));
        }
        for m in &g.moved {
            lines.push(format!(
                "moved: {} (#{} in A's execution order) -> {} (#{} in B's)",
                m.a, m.a_index, m.b, m.b_index
            ));
        }
        s.push_str("\nforward graphs:\n");
        for l in lines {
            s.push_str(&format!("  {l}\n"));
        }
    }
    s
}
