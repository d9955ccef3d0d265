//! The verify stage: loads a checkpoint into a TorchScript target through libtorch, reports
//! what loaded the way Hugging Face's loading report does (MISSING, UNEXPECTED, MISMATCHED,
//! TRANSFORMED), runs `forward` on dummy inputs and, given the source model, compares the
//! two models' outputs.
//!
//! Loading copies each checkpoint tensor into the module's own tensor (`copy_` under
//! `no_grad`), one tensor in memory at a time. Target tensors the checkpoint lacks keep
//! their initial values; with `strict`, a parameter left that way fails the check unless
//! it is allowed to be new (a fresh classifier head).
//!
//! The comparison: the source model runs with its own weights (as saved in its TorchScript
//! file, or loaded from `source_checkpoint`), the target runs with the adapted checkpoint,
//! both on the same seeded inputs; they agree when every output element is within
//! tolerance (absolute plus relative, as `torch.allclose(atol, rtol)`; both default to
//! `tolerance`).
//!
//! With a reference ([`reference`]), the target runs on the reference's inputs instead and
//! each of its outputs is compared with the saved one under the same tolerance.

pub mod reference;

use crate::apply::{TensorData, CONVERSIONS_METADATA_KEY, TRANSFORMS_METADATA_KEY};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::libtorch::ffi::EntryKind;
use crate::libtorch::{inputs::make_inputs, kind_of, ScriptModule, StateEntry};
use crate::mapping::{Conversion, Mapping};
use crate::read::script_module;
use crate::spec::{Format, ModelSpec, TensorInfo, TensorKind};
use crate::trace::InputSpec;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// Default tolerance of the output comparison (atol = rtol), as `bench/score.py` uses.
pub const DEFAULT_TOLERANCE: f64 = 1e-4;

/// Side of the square image used for default inputs of convolutional models (the common
/// ImageNet size); a second try uses [`SMALL_IMAGE_SIDE`] for models trained on small images.
const DEFAULT_IMAGE_SIDE: i64 = 224;
/// Fallback side for default image inputs (CIFAR-sized models, fixed position embeddings).
const SMALL_IMAGE_SIDE: i64 = 32;
/// Sequence length of default token inputs.
const DEFAULT_SEQUENCE: i64 = 16;
/// Length of default inputs of 1-D convolutions (audio, signals).
const DEFAULT_SIGNAL: i64 = 128;

/// Options of [`verify`].
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Dummy inputs; empty means "work them out from the target's first layer".
    pub inputs: Vec<InputSpec>,
    /// A TorchScript source model to compare outputs with.
    pub source_model: Option<PathBuf>,
    /// A checkpoint to load into the source model first (its own weights otherwise).
    pub source_checkpoint: Option<PathBuf>,
    /// Fail when a target parameter keeps its initial values.
    pub strict: bool,
    /// Names or prefixes of target tensors meant to be new (excluded from `strict`).
    pub allow_new: Vec<String>,
    /// Tolerance of the output comparison, absolute and relative alike; `None` for
    /// [`DEFAULT_TOLERANCE`].
    pub tolerance: Option<f64>,
    /// The absolute part (`atol` of `torch.allclose`); `None` for `tolerance`.
    pub atol: Option<f64>,
    /// The relative part (`rtol` of `torch.allclose`); `None` for `tolerance`.
    pub rtol: Option<f64>,
    /// A mapping whose transforms to list as TRANSFORMED (safetensors written by apply
    /// record them themselves).
    pub mapping: Option<Mapping>,
    /// The device to run on.
    pub device: Option<Device>,
    /// A reference file (see [`reference`]): its inputs replace `inputs`, and the target's
    /// outputs must agree with its saved outputs.
    pub reference: Option<PathBuf>,
}

/// A target tensor the checkpoint does not provide.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MissingTensor {
    /// The target name.
    pub name: String,
    /// Parameter or buffer.
    pub kind: TensorKind,
    /// Whether `allow_new` covers it.
    pub allowed: bool,
}

/// A checkpoint tensor whose shape or dtype differs from the target's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MismatchedTensor {
    /// The name.
    pub name: String,
    /// Shape in the checkpoint.
    pub checkpoint_shape: Vec<i64>,
    /// Shape in the target.
    pub target_shape: Vec<i64>,
    /// Dtype in the checkpoint.
    pub checkpoint_dtype: String,
    /// Dtype in the target.
    pub target_dtype: String,
    /// True when only the dtype differs: the values were loaded, cast to the target's dtype.
    pub loaded_with_cast: bool,
}

/// A tensor whose data was transformed on its way from the source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransformedTensor {
    /// The target name.
    pub name: String,
    /// The transform (`transpose`, `reshape [8, 4]`).
    pub transform: String,
}

/// A target tensor written by a conversion (split, concat, stack, ...).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConvertedTensor {
    /// The target name.
    pub name: String,
    /// The op that wrote it, with its sources.
    pub conversion: String,
}

/// The comparison of the target's output with the source model's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The source model.
    pub source_model: String,
    /// Shape of the source output.
    pub source_shape: Vec<i64>,
    /// Largest absolute difference (infinite when the shapes differ).
    pub max_abs_diff: f64,
    /// Cosine similarity of the flattened outputs (0 when the shapes differ).
    pub cosine: f64,
    /// The tolerance given (the default of `atol` and `rtol`).
    pub tolerance: f64,
    /// The absolute tolerance used.
    pub atol: f64,
    /// The relative tolerance used.
    pub rtol: f64,
    /// Whether the outputs agree within the tolerance.
    pub pass: bool,
}

/// One output of the target compared with the reference's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputCheck {
    /// Position among the outputs (0 for a single one).
    pub index: usize,
    /// Shape of the target's output.
    pub shape: Vec<i64>,
    /// Shape of the reference output.
    pub reference_shape: Vec<i64>,
    /// Largest absolute difference (infinite when the shapes differ).
    pub max_abs_diff: f64,
    /// Cosine similarity of the flattened outputs (0 when the shapes differ).
    pub cosine: f64,
    /// Whether every element is within the tolerance.
    pub pass: bool,
}

/// The check against a reference file (`verify --reference`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReferenceCheck {
    /// The reference file.
    pub file: String,
    /// The tolerance given (the default of `atol` and `rtol`).
    pub tolerance: f64,
    /// The absolute tolerance used (`atol` of `torch.allclose`).
    pub atol: f64,
    /// The relative tolerance used (`rtol` of `torch.allclose`).
    pub rtol: f64,
    /// One entry per reference output.
    pub outputs: Vec<OutputCheck>,
    /// Whether every output agrees.
    pub pass: bool,
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// The checkpoint.
    pub checkpoint: String,
    /// The TorchScript target.
    pub target: String,
    /// Tensors copied into the target.
    pub loaded: usize,
    /// Target tensors the checkpoint lacks (they keep their initial values).
    pub missing: Vec<MissingTensor>,
    /// Checkpoint tensors the target does not have.
    pub unexpected: Vec<String>,
    /// Checkpoint tensors whose shape or dtype differs from the target's.
    pub mismatched: Vec<MismatchedTensor>,
    /// Tensors whose data was transformed by apply.
    pub transformed: Vec<TransformedTensor>,
    /// Tensors written by a conversion of apply (their shapes are checked like the others').
    pub converted: Vec<ConvertedTensor>,
    /// Buffers of the target the checkpoint lacks that the model computes itself (see
    /// [`verify`]): not expected in a checkpoint, not listed as missing.
    pub computed: Vec<String>,
    /// The inputs the forward pass used.
    pub inputs: Vec<String>,
    /// Shape of the target's output, when forward ran.
    pub output_shape: Option<Vec<i64>>,
    /// Why forward failed or gave non-finite values, if it did.
    pub forward_error: Option<String>,
    /// The output comparison, with a source model.
    pub comparison: Option<Comparison>,
    /// The check against a reference file, with one.
    pub reference: Option<ReferenceCheck>,
    /// Parameters that keep their initial values and are not allowed to (fails `strict`).
    pub uncovered_parameters: Vec<String>,
    /// Whether `strict` was asked for.
    pub strict: bool,
    /// The reasons the check failed; empty when it passed.
    pub failures: Vec<String>,
    /// Whether the check passed.
    pub pass: bool,
}

fn torch_err(context: &Path, e: tch::TchError) -> Error {
    Error::Torch {
        context: context.display().to_string(),
        message: crate::libtorch::ffi::one_line(&e.to_string()),
    }
}

/// Reads tensor `t` of an opened checkpoint into a CPU tensor.
pub fn load_tensor(data: &TensorData, t: &TensorInfo, path: &Path) -> Result<Tensor> {
    let kind = kind_of(&t.dtype).ok_or_else(|| Error::Unsupported {
        path: path.into(),
        message: format!(
            "tensor '{}': dtype {} cannot be loaded into libtorch",
            t.original_name, t.dtype
        ),
    })?;
    let bytes = data.read(t)?;
    Tensor::f_from_data_size(&bytes, &t.shape, kind).map_err(|e| torch_err(path, e))
}

/// What loading a checkpoint into a module did.
struct LoadResult {
    loaded: usize,
    loaded_names: HashSet<String>,
    unexpected: Vec<String>,
    mismatched: Vec<MismatchedTensor>,
}

/// Copies the tensors of `checkpoint` into `module` by name (the name as stored when the
/// module has it, else the normalized one).
fn load_into(module: &ScriptModule, checkpoint: &ModelSpec, path: &Path) -> Result<LoadResult> {
    let data = TensorData::open(checkpoint)?;
    let mut targets: HashMap<String, Tensor> = module.named_tensors().into_iter().collect();
    let entries: HashMap<&str, &StateEntry> = module
        .state_entries()
        .iter()
        .map(|e| (e.name.as_str(), e))
        .collect();
    let mut result = LoadResult {
        loaded: 0,
        loaded_names: HashSet::new(),
        unexpected: vec![],
        mismatched: vec![],
    };
    for t in &checkpoint.tensors {
        let name = if entries.contains_key(t.original_name.as_str()) {
            &t.original_name
        } else {
            &t.name
        };
        let (Some(entry), Some(dst)) = (entries.get(name.as_str()), targets.get_mut(name.as_str()))
        else {
            result.unexpected.push(name.clone());
            continue;
        };
        let shape_ok = entry.shape == t.shape;
        if !shape_ok || entry.dtype != t.dtype {
            result.mismatched.push(MismatchedTensor {
                name: name.clone(),
                checkpoint_shape: t.shape.clone(),
                target_shape: entry.shape.clone(),
                checkpoint_dtype: t.dtype.clone(),
                target_dtype: entry.dtype.clone(),
                loaded_with_cast: shape_ok,
            });
            if !shape_ok {
                continue;
            }
        }
        let src = load_tensor(&data, t, path)?;
        tch::no_grad(|| dst.f_copy_(&src)).map_err(|e| torch_err(path, e))?;
        result.loaded += 1;
        result.loaded_names.insert(name.clone());
    }
    Ok(result)
}

/// Whether `name` is `pattern` or lies under it (`head` covers `head.weight`).
fn allowed(name: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| {
        let p = p.trim_end_matches('.');
        !p.is_empty()
            && (name == p
                || name
                    .strip_prefix(p)
                    .is_some_and(|rest| rest.starts_with('.')))
    })
}

/// Inputs for `module` worked out from the first tensor its forward uses: token ids for an
/// embedding, an image for a 2-D convolution, a signal for a 1-D one, a vector for a linear
/// layer. `None` when the first layer says nothing usable.
pub fn default_inputs(module: &ScriptModule) -> Vec<Vec<InputSpec>> {
    let Ok(order) = module.static_order() else {
        return vec![];
    };
    let Some(first) = order.order.first() else {
        return vec![];
    };
    let op = first.op.as_deref().unwrap_or("");
    let shape = &first.shape;
    let spec = |s: &str| s.parse::<InputSpec>().ok();
    let candidates: Vec<Option<InputSpec>> = if op.contains("embedding") && shape.len() == 2 {
        vec![spec(&format!("1x{DEFAULT_SEQUENCE}:i64:0-{}", shape[0]))]
    } else if op.contains("conv") && shape.len() == 4 {
        [DEFAULT_IMAGE_SIDE, SMALL_IMAGE_SIDE]
            .iter()
            .map(|s| spec(&format!("1x{}x{s}x{s}", shape[1])))
            .collect()
    } else if op.contains("conv") && shape.len() == 3 {
        vec![spec(&format!("1x{}x{DEFAULT_SIGNAL}", shape[1]))]
    } else if (op.contains("linear") || op.contains("addmm") || op.contains("matmul"))
        && shape.len() == 2
    {
        vec![spec(&format!("1x{}", shape[1]))]
    } else {
        vec![]
    };
    candidates.into_iter().flatten().map(|s| vec![s]).collect()
}

/// The tolerances of an output comparison, as `torch.allclose` takes them.
#[derive(Debug, Clone, Copy)]
struct Tolerance {
    given: f64,
    atol: f64,
    rtol: f64,
}

impl Tolerance {
    fn of(options: &VerifyOptions) -> Self {
        let given = options.tolerance.unwrap_or(DEFAULT_TOLERANCE);
        Tolerance {
            given,
            atol: options.atol.unwrap_or(given),
            rtol: options.rtol.unwrap_or(given),
        }
    }

    /// The bound a failure message names.
    fn describe(&self) -> String {
        if self.atol == self.rtol {
            format!("tolerance {:.1e}", self.atol)
        } else {
            format!(
                "atol {:.1e} + rtol {:.1e} x |reference|",
                self.atol, self.rtol
            )
        }
    }
}

/// Largest absolute difference and cosine similarity of two outputs of equal shape, and
/// whether they agree as `torch.allclose(a, b, atol, rtol)` says.
fn compare(a: &Tensor, b: &Tensor, tol: Tolerance) -> (f64, f64, bool) {
    let a = a.to_kind(Kind::Double).flatten(0, -1);
    let b = b.to_kind(Kind::Double).flatten(0, -1);
    let diff = (&a - &b).abs();
    let max = if diff.numel() == 0 {
        0.0
    } else {
        diff.max().double_value(&[])
    };
    let dot = (&a * &b).sum(Kind::Double).double_value(&[]);
    let norms = a.norm().double_value(&[]) * b.norm().double_value(&[]);
    let cosine = if norms == 0.0 {
        if max == 0.0 {
            1.0
        } else {
            0.0
        }
    } else {
        dot / norms
    };
    // allclose(a, b, atol, rtol): |a - b| <= atol + rtol * |b|
    let limit = b.abs() * tol.rtol + tol.atol;
    let close = diff.numel() == 0 || bool::try_from(diff.le_tensor(&limit).all()).unwrap_or(false);
    (max, cosine, close && max.is_finite())
}

fn is_finite(t: &Tensor) -> bool {
    if !t.is_floating_point() {
        return true;
    }
    t.numel() == 0 || bool::try_from(t.isfinite().all()).unwrap_or(false)
}

/// Loads `checkpoint` (already read into a spec) into the TorchScript `target`, runs it and
/// reports; see the module documentation.
pub fn verify(
    checkpoint: &ModelSpec,
    target: &Path,
    options: &VerifyOptions,
) -> Result<VerifyReport> {
    let device = options.device.unwrap_or(Device::Cpu);
    let checkpoint_path = PathBuf::from(&checkpoint.path);
    // A bad reference file is refused before anything runs.
    let reference = options
        .reference
        .as_deref()
        .map(|p| reference::read(p).map(|r| (p, r)))
        .transpose()?;
    let module = script_module(target, device)?;
    let load = load_into(&module, checkpoint, &checkpoint_path)?;

    // MISSING: state-dict tensors of the target not loaded, directly or through a tie.
    // Tensors with a mismatched shape are listed as MISMATCHED, not again as MISSING, but
    // they too keep their initial values.
    let mismatched: HashSet<&str> = load
        .mismatched
        .iter()
        .filter(|m| !m.loaded_with_cast)
        .map(|m| m.name.as_str())
        .collect();
    let mut missing = vec![];
    let mut uncovered = vec![];
    let mut computed = vec![];
    let entries = module.state_entries();
    let computed_by_model = computed_buffers(entries, &load.loaded_names);
    for e in entries {
        if !e.persistent || load.loaded_names.contains(&e.name) {
            continue;
        }
        if computed_by_model.contains(e.name.as_str()) {
            computed.push(e.name.clone());
            continue;
        }
        if e.tied_to
            .as_ref()
            .is_some_and(|t| load.loaded_names.contains(t))
        {
            continue;
        }
        let ok = allowed(&e.name, &options.allow_new);
        if e.kind == EntryKind::Parameter && !ok {
            uncovered.push(e.name.clone());
        }
        if !mismatched.contains(e.name.as_str()) {
            missing.push(MissingTensor {
                name: e.name.clone(),
                kind: crate::read::torchscript::tensor_kind(e.kind),
                allowed: ok,
            });
        }
    }

    let transformed = transformed_tensors(checkpoint, options.mapping.as_ref());
    let converted = converted_tensors(checkpoint, options.mapping.as_ref());

    // Forward on the given or default inputs.
    let tolerance = Tolerance::of(options);
    let candidates = if options.reference.is_some() {
        vec![]
    } else if options.inputs.is_empty() {
        default_inputs(&module)
    } else {
        vec![options.inputs.clone()]
    };
    let mut failures = vec![];
    let mut used_inputs = vec![];
    let mut output = None;
    let mut forward_error = None;
    let mut reference_check = None;
    if let Some((path, r)) = &reference {
        let run = run_reference(&module, path, r, device, tolerance)?;
        used_inputs = run.described;
        reference_check = Some(run.check);
        output = Some(run.output);
    } else if candidates.is_empty() {
        forward_error = Some(format!(
            "cannot tell {}'s input from its first layer; pass --input (e.g. 1x3x224x224 or 1x16:i64:0-1000)",
            target.display()
        ));
    }
    for specs in &candidates {
        let inputs = make_inputs(specs, device)?;
        match module.forward(&inputs) {
            Ok(out) => {
                used_inputs = specs.iter().map(|s| s.to_string()).collect();
                output = Some((out, inputs));
                forward_error = None;
                break;
            }
            Err(e) => forward_error = Some(e.to_string()),
        }
    }
    let mut output_shape = None;
    let mut comparison = None;
    if let Some((out, inputs)) = &output {
        output_shape = Some(out.size());
        if !is_finite(out) {
            forward_error = Some("the target's output has NaN or infinite values".into());
        } else if let Some(source_path) = &options.source_model {
            let source = script_module(source_path, device)?;
            if let Some(ckpt) = &options.source_checkpoint {
                let spec = crate::normalize::read_model(ckpt, &Default::default())?;
                let r = load_into(&source, &spec, ckpt)?;
                if let Some(m) = r.mismatched.iter().find(|m| !m.loaded_with_cast) {
                    return Err(Error::Mismatch {
                        context: format!("{} into {}", ckpt.display(), source_path.display()),
                        message: format!(
                            "'{}' has shape {:?}, the source model {:?}",
                            m.name, m.checkpoint_shape, m.target_shape
                        ),
                    });
                }
            }
            let reference = source.forward(inputs)?;
            let (max_abs_diff, cosine, pass) = if reference.size() == out.size() {
                compare(out, &reference, tolerance)
            } else {
                (f64::INFINITY, 0.0, false)
            };
            comparison = Some(Comparison {
                source_model: source_path.display().to_string(),
                source_shape: reference.size(),
                max_abs_diff,
                cosine,
                tolerance: tolerance.given,
                atol: tolerance.atol,
                rtol: tolerance.rtol,
                pass,
            });
        }
    }

    if load.loaded == 0 && !checkpoint.tensors.is_empty() {
        failures.push(
            "no checkpoint tensor has a target name: was the mapping applied (weightmap apply)?"
                .into(),
        );
    }
    if let Some(e) = &forward_error {
        failures.push(format!("forward: {e}"));
    }
    let shape_mismatches = load
        .mismatched
        .iter()
        .filter(|m| !m.loaded_with_cast)
        .count();
    if shape_mismatches > 0 {
        failures.push(format!(
            "{shape_mismatches} tensor(s) with mismatched shapes were not loaded"
        ));
    }
    if let Some(r) = &reference_check {
        for o in r.outputs.iter().filter(|o| !o.pass) {
            failures.push(if o.shape != o.reference_shape {
                format!(
                    "output {} has shape {:?}, the reference {:?} ({})",
                    o.index, o.shape, o.reference_shape, r.file
                )
            } else {
                format!(
                    "output {} differs from the reference: max abs diff {:.3e}, not within {} (cosine {:.6}; {})",
                    o.index, o.max_abs_diff, tolerance.describe(), o.cosine, r.file
                )
            });
        }
    }
    if let Some(c) = &comparison {
        if !c.pass {
            failures.push(
                if c.source_shape != output_shape.clone().unwrap_or_default() {
                    format!(
                        "output shapes differ: source {:?}, target {:?}",
                        c.source_shape,
                        output_shape.clone().unwrap_or_default()
                    )
                } else {
                    format!(
                        "outputs differ: max abs diff {:.3e}, not within {} (cosine {:.6})",
                        c.max_abs_diff,
                        tolerance.describe(),
                        c.cosine
                    )
                },
            );
        }
    }
    if options.strict && !uncovered.is_empty() {
        failures.push(format!(
            "--strict: {} parameter(s) keep their initial values (e.g. '{}'); map them or list them with --allow-new",
            uncovered.len(),
            uncovered[0]
        ));
    }
    Ok(VerifyReport {
        checkpoint: checkpoint.path.clone(),
        target: target.display().to_string(),
        loaded: load.loaded,
        missing,
        unexpected: load.unexpected,
        mismatched: load.mismatched,
        transformed,
        converted,
        computed,
        inputs: used_inputs,
        output_shape,
        forward_error,
        comparison,
        reference: reference_check,
        uncovered_parameters: uncovered,
        strict: options.strict,
        pass: failures.is_empty(),
        failures,
    })
}

/// Describes an input tensor as `--input` would (`1x3x32x32:f32`).
fn describe_input(t: &Tensor) -> String {
    let shape: Vec<String> = t.size().iter().map(|d| d.to_string()).collect();
    format!("{}:{:?}", shape.join("x"), t.kind())
}

/// What [`run_reference`] ran and found.
struct ReferenceRun {
    /// The output verify reports (the first compared) and the inputs it came from.
    output: (Tensor, Vec<Tensor>),
    /// The inputs, described.
    described: Vec<String>,
    /// The comparison.
    check: ReferenceCheck,
}

/// Runs `module` on the reference's inputs and compares its outputs with the reference's.
/// A forward that fails on these inputs, or returns fewer tensors than the
/// reference lists, means the reference does not fit this target: an error, not a failed
/// check.
fn run_reference(
    module: &ScriptModule,
    path: &Path,
    r: &reference::Reference,
    device: Device,
    tolerance: Tolerance,
) -> Result<ReferenceRun> {
    let td = crate::libtorch::tch_device(device);
    let inputs: Vec<Tensor> = r.inputs.iter().map(|t| t.to_device(td)).collect();
    let described: Vec<String> = r.inputs.iter().map(describe_input).collect();
    let doesnt_fit = |message: String| Error::Mismatch {
        context: format!("{} with {}", path.display(), module.path().display()),
        message,
    };
    let outputs = if r.output_is_list {
        module.forward_all(&inputs)
    } else {
        module.forward(&inputs).map(|t| vec![t])
    }
    .map_err(|e| {
        doesnt_fit(format!(
            "the target does not run on the reference's {} input(s) ({}): {e}",
            inputs.len(),
            described.join(", ")
        ))
    })?;
    if outputs.len() < r.outputs.len() {
        return Err(doesnt_fit(format!(
            "the reference lists {} outputs, the target's forward returns {} tensor(s)",
            r.outputs.len(),
            outputs.len()
        )));
    }
    let mut checks = vec![];
    for (index, (out, want)) in outputs.iter().zip(&r.outputs).enumerate() {
        let out = out.to_device(tch::Device::Cpu);
        let (max_abs_diff, cosine, pass) = if out.size() == want.size() {
            compare(&out, want, tolerance)
        } else {
            (f64::INFINITY, 0.0, false)
        };
        checks.push(OutputCheck {
            index,
            shape: out.size(),
            reference_shape: want.size(),
            max_abs_diff,
            cosine,
            pass,
        });
    }
    let check = ReferenceCheck {
        file: path.display().to_string(),
        tolerance: tolerance.given,
        atol: tolerance.atol,
        rtol: tolerance.rtol,
        pass: checks.iter().all(|c| c.pass),
        outputs: checks,
    };
    let first = outputs.into_iter().next().expect("at least one output");
    Ok(ReferenceRun {
        output: (first, inputs),
        described,
        check,
    })
}

/// Buffers the checkpoint lacks that the model computes itself. TorchScript keeps no
/// `persistent` flag (`register_buffer(..., persistent=False)` buffers such as rotary
/// `inv_freq` or Swin's `relative_position_index` are listed in its state dict), so this
/// is decided from what the checkpoint covers: a buffer counts as computed when its
/// module's parameters all loaded (or it has none) and no buffer of the same shape as
/// one of those parameters is involved; a buffer shaped like a parameter of its module
/// is a running statistic of it (BatchNorm's `running_mean`) and stays MISSING, as does
/// every buffer of a module whose parameters did not load.
fn computed_buffers<'a>(entries: &'a [StateEntry], loaded: &HashSet<String>) -> HashSet<&'a str> {
    let module_of = |n: &'a str| n.rsplit_once('.').map_or("", |x| x.0);
    let mut params: HashMap<&str, Vec<&StateEntry>> = HashMap::new();
    for e in entries.iter().filter(|e| e.kind == EntryKind::Parameter) {
        params.entry(module_of(&e.name)).or_default().push(e);
    }
    entries
        .iter()
        .filter(|e| e.kind == EntryKind::Buffer && !loaded.contains(&e.name))
        .filter(|e| {
            let ps = params
                .get(module_of(&e.name))
                .map_or(&[][..], |v| v.as_slice());
            let all_loaded = ps.iter().all(|p| {
                loaded.contains(&p.name) || p.tied_to.as_ref().is_some_and(|t| loaded.contains(t))
            });
            let statistic = ps.iter().any(|p| p.shape == e.shape);
            all_loaded && !statistic && e.tied_to.is_none()
        })
        .map(|e| e.name.as_str())
        .collect()
}

/// CONVERTED entries: from the mapping when given, else from the metadata apply writes
/// into safetensors outputs.
fn converted_tensors(checkpoint: &ModelSpec, mapping: Option<&Mapping>) -> Vec<ConvertedTensor> {
    let list: Vec<Conversion> = match mapping {
        Some(m) => m.conversions.clone(),
        None => safetensors_metadata(checkpoint, CONVERSIONS_METADATA_KEY)
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default(),
    };
    list.iter()
        .flat_map(|c| {
            let what = c.describe();
            c.targets.iter().map(move |t| ConvertedTensor {
                name: t.clone(),
                conversion: what.clone(),
            })
        })
        .collect()
}

/// The metadata value `key` of a safetensors checkpoint, if any.
fn safetensors_metadata(checkpoint: &ModelSpec, key: &str) -> Option<String> {
    if checkpoint.format != Format::Safetensors {
        return None;
    }
    let header = crate::format::safetensors::read_header(Path::new(&checkpoint.path)).ok()?;
    header
        .metadata
        .as_ref()
        .and_then(|m| m.get(key))
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// TRANSFORMED entries: from the mapping when given, else from the metadata apply writes
/// into safetensors outputs.
fn transformed_tensors(
    checkpoint: &ModelSpec,
    mapping: Option<&Mapping>,
) -> Vec<TransformedTensor> {
    if let Some(m) = mapping {
        return m
            .entries
            .iter()
            .filter_map(|e| {
                e.transform.as_ref().map(|t| TransformedTensor {
                    name: e.target.clone(),
                    transform: t.describe(),
                })
            })
            .collect();
    }
    let Some(text) = safetensors_metadata(checkpoint, TRANSFORMS_METADATA_KEY) else {
        return vec![];
    };
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(&text)
    else {
        return vec![];
    };
    map.into_iter()
        .map(|(name, v)| {
            let transform = match &v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            TransformedTensor { name, transform }
        })
        .collect()
}
