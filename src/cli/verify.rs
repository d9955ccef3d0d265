//! `weightmap verify`: loads a checkpoint into a TorchScript target, reports what loaded,
//! runs it and, with `--source-model`, compares its output with the source model's; with
//! `--reference FILE`, with outputs saved from the original model.

use super::flags::{DeviceFlag, InputFlags};
use std::path::PathBuf;
use weightmap::format::json::versioned;
use weightmap::mapping::Mapping;
use weightmap::verify::{self, VerifyOptions, VerifyReport};
use weightmap::{read_model, ReadOptions};

/// Flags of `weightmap verify`.
#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint to load (.safetensors, .pth, .ckpt, ...).
    pub checkpoint: PathBuf,
    /// The target model as TorchScript (torch.jit.save / torch.jit.trace).
    pub target: PathBuf,
    /// Dummy inputs; default: worked out from the target's first layer.
    #[command(flatten)]
    pub inputs: InputFlags,
    /// The source model as TorchScript: run it on the same inputs and compare outputs.
    #[arg(long)]
    pub source_model: Option<PathBuf>,
    /// Load this checkpoint into the source model before running it (its own weights otherwise).
    #[arg(long, requires = "source_model")]
    pub source_checkpoint: Option<PathBuf>,
    /// Fail when a target parameter keeps its initial values.
    #[arg(long)]
    pub strict: bool,
    /// A target tensor or module prefix meant to be new (a fresh head); repeatable.
    #[arg(long = "allow-new", value_name = "NAME_OR_PREFIX")]
    pub allow_new: Vec<String>,
    /// A torch.save'd dict {"inputs": [tensor, ...], "reference_output": tensor or [tensors]}
    /// (saved once from the original model): run the target on those inputs and fail (exit 3)
    /// unless every output agrees with the reference within --atol/--rtol.
    #[arg(long, value_name = "FILE", conflicts_with = "inputs")]
    pub reference: Option<PathBuf>,
    /// Outputs agree when |target - reference| <= atol + rtol * |reference| everywhere
    /// (torch.allclose; the reference is the --reference file's output or the source
    /// model's). --tolerance T sets both atol and rtol to T.
    #[arg(long, value_name = "T", default_value_t = verify::DEFAULT_TOLERANCE)]
    pub tolerance: f64,
    /// The absolute tolerance of torch.allclose [default: --tolerance].
    #[arg(long, value_name = "ATOL")]
    pub atol: Option<f64>,
    /// The relative tolerance of torch.allclose [default: --tolerance].
    #[arg(long, value_name = "RTOL")]
    pub rtol: Option<f64>,
    /// The mapping the checkpoint was written with, to list its transforms.
    #[arg(long)]
    pub mapping: Option<PathBuf>,
    /// Take the state dict from this nested key of the checkpoint.
    #[arg(long)]
    pub state_dict_key: Option<String>,
    /// Where the models run.
    #[command(flatten)]
    pub device: DeviceFlag,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `weightmap verify`; exits with [`super::EXIT_CHECK_FAILED`] when the check ran and
/// failed (an error that keeps it from running exits 1 or 2, as every command does).
pub fn run(args: Args) -> anyhow::Result<()> {
    for (flag, value) in [
        ("--tolerance", Some(args.tolerance)),
        ("--atol", args.atol),
        ("--rtol", args.rtol),
    ] {
        if let Some(v) = value.filter(|v| !(*v >= 0.0 && v.is_finite())) {
            return Err(weightmap::Error::invalid(flag, format!("{v}; give a number >= 0")).into());
        }
    }
    let inputs = args.inputs.inputs.clone();
    let checkpoint = read_model(
        &args.checkpoint,
        &ReadOptions {
            state_dict_key: args.state_dict_key.clone(),
            keep_prefixes: false,
        },
    )?;
    let options = VerifyOptions {
        inputs,
        source_model: args.source_model.clone(),
        source_checkpoint: args.source_checkpoint.clone(),
        strict: args.strict,
        allow_new: args.allow_new.clone(),
        tolerance: Some(args.tolerance),
        atol: args.atol,
        rtol: args.rtol,
        mapping: args.mapping.as_deref().map(Mapping::load).transpose()?,
        device: Some(args.device.device),
        reference: args.reference.clone(),
    };
    let report = verify::verify(&checkpoint, &args.target, &options)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&versioned(&report)?)?);
    } else {
        print_report(&report);
    }
    if !report.pass {
        std::process::exit(super::EXIT_CHECK_FAILED);
    }
    Ok(())
}

/// The tolerance in words: one number when atol = rtol (`--tolerance`).
fn bound(atol: f64, rtol: f64) -> String {
    if atol == rtol {
        format!("tolerance {atol:.1e}")
    } else {
        format!("atol {atol:.1e}, rtol {rtol:.1e}")
    }
}

/// Names shown per section before "... and N more".
const SHOWN: usize = 20;

fn section(title: &str, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    println!("{title} ({}):", lines.len());
    for l in lines.iter().take(SHOWN) {
        println!("  {l}");
    }
    if lines.len() > SHOWN {
        println!("  ... and {} more (--json lists all)", lines.len() - SHOWN);
    }
}

fn print_report(r: &VerifyReport) {
    println!("{} -> {}", r.checkpoint, r.target);
    println!("loaded {} tensor(s)", r.loaded);
    let missing: Vec<String> = r
        .missing
        .iter()
        .map(|m| {
            let kind = match m.kind {
                weightmap::TensorKind::Parameter => "parameter",
                weightmap::TensorKind::Buffer => "buffer",
                weightmap::TensorKind::Unknown => "tensor",
            };
            format!(
                "{} ({kind}{}, keeps its initial values)",
                m.name,
                if m.allowed { ", allowed new" } else { "" }
            )
        })
        .collect();
    section("MISSING", &missing);
    section("UNEXPECTED", &r.unexpected);
    let mismatched: Vec<String> = r
        .mismatched
        .iter()
        .map(|m| {
            if m.loaded_with_cast {
                format!(
                    "{}: dtype {} in the checkpoint, {} in the target (loaded, cast)",
                    m.name, m.checkpoint_dtype, m.target_dtype
                )
            } else {
                format!(
                    "{}: shape {:?} in the checkpoint, {:?} in the target (not loaded)",
                    m.name, m.checkpoint_shape, m.target_shape
                )
            }
        })
        .collect();
    section("MISMATCHED", &mismatched);
    let transformed: Vec<String> = r
        .transformed
        .iter()
        .map(|t| format!("{} ({})", t.name, t.transform))
        .collect();
    section("TRANSFORMED", &transformed);
    let converted: Vec<String> = r
        .converted
        .iter()
        .map(|t| format!("{} (by {})", t.name, t.conversion))
        .collect();
    section("CONVERTED", &converted);
    if !r.computed.is_empty() {
        let computed: Vec<String> = r
            .computed
            .iter()
            .map(|n| format!("{n} (computed by the model, not expected in a checkpoint)"))
            .collect();
        section("COMPUTED", &computed);
    }
    if let Some(shape) = &r.output_shape {
        println!("forward on {}: output {:?}", r.inputs.join(", "), shape);
    }
    if let Some(c) = &r.comparison {
        println!(
            "vs {}: max abs diff {:.3e}, cosine {:.6}, {}: {}",
            c.source_model,
            c.max_abs_diff,
            c.cosine,
            bound(c.atol, c.rtol),
            if c.pass { "match" } else { "DIFFER" }
        );
    }
    if let Some(reference) = &r.reference {
        for o in &reference.outputs {
            println!(
                "vs {} output {} {:?}: max abs diff {:.3e}, cosine {:.6}, {}: {}",
                reference.file,
                o.index,
                o.reference_shape,
                o.max_abs_diff,
                o.cosine,
                bound(reference.atol, reference.rtol),
                if o.pass { "match" } else { "DIFFER" }
            );
        }
    }
    for f in &r.failures {
        println!("FAIL: {f}");
    }
    let verdict = match (r.pass, r.uncovered_parameters.len()) {
        (false, _) => "FAIL".to_string(),
        (true, 0) => "PASS".to_string(),
        // A bare PASS would hide weights still at their random initialisation.
        (true, 1) => "PASS, 1 parameter left at initialisation (--strict fails on it)".to_string(),
        (true, n) => {
            format!("PASS, {n} parameters left at initialisation (--strict fails on them)")
        }
    };
    println!("{verdict}");
}
