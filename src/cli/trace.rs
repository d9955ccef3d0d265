//! `weightmap trace`: the order in which a TorchScript model uses its parameters and buffers.

use super::flags::{DeviceFlag, InputFlags};
use std::path::PathBuf;
use weightmap::format::json::versioned;
use weightmap::trace::{self, ExecutionOrder};

/// Flags of `weightmap trace`.
#[derive(clap::Args)]
pub struct Args {
    /// The TorchScript model (`torch.jit.save` / `torch.jit.trace` output).
    pub model: PathBuf,
    /// Dummy inputs for forward; without them the static order is used.
    #[command(flatten)]
    pub inputs: InputFlags,
    /// Where forward runs.
    #[command(flatten)]
    pub device: DeviceFlag,
    /// Read the order from the forward graph without running it (no inputs needed).
    #[arg(long = "static", conflicts_with = "inputs")]
    pub static_only: bool,
    /// Write the order as JSON to this file (written whole or not at all).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the order as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// With -o, also print the order's table (by default -o prints one summary line).
    #[arg(long)]
    pub print: bool,
}

/// Runs `weightmap trace`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let device = args.device.device;
    weightmap::libtorch::check_device(device).map_err(super::flags::flag_names)?;
    let inputs = &args.inputs.inputs;
    let order = if !inputs.is_empty() {
        // Explicit inputs: a failing forward is an error here (the mapper falls back instead).
        trace::trace(&args.model, inputs, device)?
    } else if args.static_only {
        weightmap::read::script_module(&args.model, device)?.static_order()?
    } else {
        trace::execution_order(&args.model, &[], device)?
    };
    if let Some(path) = &args.output {
        order.write_json(path)?;
        if !args.print && !args.json {
            // The table of a large model runs to thousands of lines; the file holds it.
            println!(
                "wrote the {} order of {} ({} tensors used, {} untouched) to {}; map with --target-order {}",
                order.mode.name(),
                args.model.display(),
                order.order.len(),
                order.untouched.len(),
                path.display(),
                path.display()
            );
            return Ok(());
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&versioned(&order)?)?);
    } else {
        print!("{}", to_text(&args.model, &order));
    }
    Ok(())
}

/// The order as a table: index, name, first op, shape; then the untouched tensors and the
/// aliases or later uses.
fn to_text(model: &std::path::Path, order: &ExecutionOrder) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} order of {} on {}: {} tensors used, {} untouched",
        order.mode.name(),
        model.display(),
        order.device,
        order.order.len(),
        order.untouched.len()
    );
    if let Some(note) = &order.note {
        let _ = writeln!(out, "note: {note}");
    }
    let name_width = order
        .order
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let op_width = order
        .order
        .iter()
        .map(|e| e.op.as_deref().unwrap_or("-").len())
        .max()
        .unwrap_or(2)
        .max(2);
    let _ = writeln!(
        out,
        "{:>5}  {:<name_width$}  {:<op_width$}  shape",
        "index", "name", "op"
    );
    for e in &order.order {
        let _ = writeln!(
            out,
            "{:>5}  {:<name_width$}  {:<op_width$}  {:?}",
            e.index,
            e.name,
            e.op.as_deref().unwrap_or("-"),
            e.shape
        );
    }
    if !order.untouched.is_empty() {
        let _ = writeln!(out, "untouched ({}):", order.untouched.len());
        for name in &order.untouched {
            let _ = writeln!(out, "  {name}");
        }
    }
    if !order.also_used.is_empty() {
        let _ = writeln!(out, "also used ({}):", order.also_used.len());
        for a in &order.also_used {
            let mut line = format!("  {}", a.name);
            if a.name == a.same_as {
                line.push_str(" again");
            } else {
                let _ = write!(line, " = {}", a.same_as);
            }
            if let Some(op) = &a.op {
                let _ = write!(line, " by {op}");
            }
            let _ = writeln!(out, "{line}");
        }
    }
    out
}
