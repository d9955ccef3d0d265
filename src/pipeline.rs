//! The policy "map these two files": read both models, give each the execution order asked
//! for (traced, read from a saved trace, or none), build the [`Mapper`] and run it. This is
//! exactly what `weightmap map` (and `tree`, `explain`, `report`, `apply --target`) do, so a
//! Rust user gets the same mapping as the command line.

use crate::device::Device;
use crate::error::{Error, Result};
use crate::mapper::{Mapper, MapperOptions, MappingResult, OrderKind, SuggestOptions, TensorOrder};
use crate::normalize::read_model;
use crate::read::{detect_format, ReadOptions};
use crate::rules::Rules;
use crate::spec::{Format, ModelSpec};
use crate::trace::{ExecutionOrder, InputSpec};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Which order of tensors tells look-alikes apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrderPolicy {
    /// Execution order where it is needed. Both models are first mapped on what their
    /// files say (names, shapes, a checkpoint's key order, a TorchScript model's registration
    /// order); only when that leaves something order could settle (a pair that needs review
    /// or rests on file order, look-alikes left ambiguous) is each TorchScript model traced,
    /// once, and the mapping worked out again with it: a TorchScript target's dynamic order
    /// with inputs (falling back to static when forward fails), else static; a TorchScript
    /// source's static order. A model that cannot be traced keeps its file's order, with a
    /// warning. Most mappings thus never load libtorch.
    #[default]
    Auto,
    /// The target's dynamic order from running forward on the inputs (required); a failing
    /// forward is an error. A TorchScript source gets its static order.
    Dynamic,
    /// The static order of each TorchScript model, read from its forward graph.
    Static,
    /// The registration order of each TorchScript model (as its modules registered them).
    Registration,
    /// No order on either side, not even a checkpoint's key order: names (indices in them
    /// included) and shapes only.
    None,
}

impl std::str::FromStr for OrderPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<OrderPolicy> {
        Ok(match s {
            "auto" => OrderPolicy::Auto,
            "dynamic" => OrderPolicy::Dynamic,
            "static" => OrderPolicy::Static,
            "registration" => OrderPolicy::Registration,
            "none" => OrderPolicy::None,
            _ => {
                return Err(Error::invalid(
                    "order",
                    format!("'{s}': use auto, dynamic, static, registration or none"),
                ))
            }
        })
    }
}

/// Everything that decides a mapping of two files.
#[derive(Debug, Clone)]
pub struct MapRequest {
    /// The source model (checkpoint, TorchScript, safetensors, model spec JSON).
    pub source: PathBuf,
    /// The target model.
    pub target: PathBuf,
    /// How both files are read; its `state_dict_key` picks the source's nested dict only
    /// (a target is a model, or a checkpoint of its own layout).
    pub read: ReadOptions,
    /// Which order tells look-alikes apart.
    pub order: OrderPolicy,
    /// The target's dummy inputs for a dynamic trace (empty: static order).
    pub inputs: Vec<InputSpec>,
    /// The target's order saved by `weightmap trace TARGET -o FILE`, used instead of tracing.
    pub target_order: Option<PathBuf>,
    /// The source's order saved by `weightmap trace SOURCE -o FILE`.
    pub source_order: Option<PathBuf>,
    /// Where tracing and the batched candidate score run.
    pub device: Device,
    /// The engine's options (their orders and device are set from the fields above).
    pub mapper: MapperOptions,
    /// Strategy, threshold and score weights.
    pub suggest: SuggestOptions,
    /// Rename rules taken as pins: every source tensor a rule renames to a target tensor
    /// is pinned there (pins in `mapper.constraints` win).
    pub rules: Option<Rules>,
    /// What an earlier mapping of this same request, without a TorchScript model's
    /// execution order, left for the order to settle ([`MappingResult::order_could_settle`]),
    /// when that is known before this one starts: the build without libtorch found it and
    /// handed the command over ([`Error::NeedsLibtorch`]'s `order_needed`). [`OrderPolicy::Auto`]
    /// then traces at once, beside the reading, instead of mapping first without the order.
    pub order_needed: Option<String>,
}

impl MapRequest {
    /// A request with every default: automatic order, CPU, best-match strategy.
    pub fn new(source: &Path, target: &Path) -> MapRequest {
        MapRequest {
            source: source.to_path_buf(),
            target: target.to_path_buf(),
            read: ReadOptions::default(),
            order: OrderPolicy::Auto,
            inputs: vec![],
            target_order: None,
            source_order: None,
            device: Device::Cpu,
            mapper: MapperOptions::default(),
            suggest: SuggestOptions::default(),
            rules: None,
            order_needed: None,
        }
    }

    /// Checks that the options fit together, before anything is read.
    pub fn validate(&self) -> Result<()> {
        self.suggest.validate()?;
        if self.order == OrderPolicy::Dynamic && self.inputs.is_empty() {
            return Err(Error::invalid(
                "order",
                "a dynamic order needs the target's dummy input (SHAPE[:DTYPE[:LO-HI]], e.g. 1x3x224x224)",
            ));
        }
        if self.order == OrderPolicy::None
            && (self.target_order.is_some() || self.source_order.is_some())
        {
            return Err(Error::invalid(
                "order",
                "'none' means no order on either side, but an order file was given: drop one of them",
            ));
        }
        if !self.inputs.is_empty()
            && !matches!(self.order, OrderPolicy::Auto | OrderPolicy::Dynamic)
        {
            return Err(Error::invalid(
                "input",
                "dummy inputs are only used with the auto or dynamic order",
            ));
        }
        if self.target_order.is_some() && !self.inputs.is_empty() {
            return Err(Error::invalid(
                "input",
                "a saved target order replaces tracing: give the order file or the inputs, not both",
            ));
        }
        check_device(self.device)
    }
}

/// A mapper built from two files, with what the user should hear about how.
#[derive(Debug)]
pub struct Prepared {
    /// The engine, holding both model specs and their orders.
    pub mapper: Mapper,
    /// Things that went differently than asked (a model that could not be traced, say).
    pub warnings: Vec<String>,
    /// What was chosen without being asked (the nested dict a checkpoint's state dict was
    /// taken from).
    pub notes: Vec<String>,
    /// The request, while [`OrderPolicy::Auto`] has left a TorchScript model's execution
    /// order to be traced only if the first mapping needs it.
    deferred: Option<Deferred>,
}

/// What [`Prepared::suggest_mapping`] traces when the first mapping needs order.
#[derive(Debug)]
struct Deferred {
    request: MapRequest,
    source: bool,
    target: bool,
}

impl Prepared {
    /// Works out the mapping ([`Mapper::suggest_mapping`]). Where [`OrderPolicy::Auto`]
    /// left a TorchScript model untraced and the mapping has something order could settle
    /// ([`MappingResult::order_could_settle`]), traces it and works the mapping out again;
    /// either way, `notes` says which.
    ///
    /// Errors: the engine's; [`Error::NeedsLibtorch`] when the trace is needed and this
    /// build has no libtorch.
    pub fn suggest_mapping(&mut self, options: &SuggestOptions) -> Result<MappingResult> {
        let result = self.mapper.suggest_mapping(options)?;
        if self.settle_order(&result)? {
            self.mapper.suggest_mapping(options)
        } else {
            Ok(result)
        }
    }

    /// True while an execution order is left to be traced if the first mapping needs it.
    pub fn order_deferred(&self) -> bool {
        self.deferred.is_some()
    }

    /// The order step of [`Prepared::suggest_mapping`] for a mapping worked out another way
    /// (`map --by-content`): true when it traced and the mapping must be worked out again.
    pub fn settle_order(&mut self, result: &MappingResult) -> Result<bool> {
        let Some(deferred) = self.deferred.take() else {
            return Ok(false);
        };
        let request = &deferred.request;
        let models = [
            (deferred.source, &request.source),
            (deferred.target, &request.target),
        ];
        let names = models
            .iter()
            .filter(|m| m.0)
            .map(|m| m.1.display().to_string())
            .collect::<Vec<_>>()
            .join(" and ");
        let Some(unsettled) = result.order_could_settle() else {
            self.notes.push(format!(
                "{names}: not traced; names and shapes decided every pair (`--order static` traces anyway)"
            ));
            return Ok(false);
        };
        let mut clock = crate::progress::StageClock::start();
        let mut source_order = self.mapper.options().source_order.clone();
        let mut target_order = self.mapper.options().target_order.clone();
        // Without libtorch, the error says why the order is needed: the libtorch build it
        // is handed to then traces at once.
        let needed = |e: Error| match e {
            Error::NeedsLibtorch { what, .. } => Error::NeedsLibtorch {
                what,
                order_needed: Some(unsettled.clone()),
            },
            e => e,
        };
        if deferred.target {
            target_order = timed_order(
                request,
                "target",
                &request.inputs,
                &mut self.warnings,
                &mut self.notes,
            )
            .map_err(needed)?;
        }
        if deferred.source {
            source_order = timed_order(request, "source", &[], &mut self.warnings, &mut self.notes)
                .map_err(needed)?;
        }
        clock.lap("order");
        self.notes.push(format!(
            "{names}: traced for its execution order ({unsettled} without it)"
        ));
        self.mapper.set_orders(source_order, target_order);
        Ok(true)
    }
}

/// Reads both models of `request` and builds the mapper, with the orders asked for.
///
/// Errors: either file cannot be read; an explicit order cannot be had; an order file
/// belongs to another model.
pub fn prepare(request: &MapRequest) -> Result<Prepared> {
    request.validate()?;
    let mut clock = crate::progress::StageClock::start();
    // Auto traces a TorchScript model only when the first mapping needs its order, unless
    // an earlier mapping of this request found that it does.
    let defer = |format: Option<Format>, file: &Option<PathBuf>| {
        request.order == OrderPolicy::Auto
            && request.order_needed.is_none()
            && file.is_none()
            && format == Some(Format::TorchScript)
    };
    // A target traced now is loaded and traced beside the reading of both headers. Its
    // format is looked at only when it may be traced now (a format that cannot be told is
    // left to the reader to report, in its turn).
    let may_trace_now = request.target_order.is_none()
        && request.order != OrderPolicy::None
        && !(request.order == OrderPolicy::Auto && request.order_needed.is_none());
    let trace_target =
        may_trace_now && detect_format(&request.target).ok() == Some(Format::TorchScript);
    let (read, traced) = std::thread::scope(|scope| {
        let traced = trace_target.then(|| {
            scope.spawn(|| {
                let (mut warnings, mut notes) = (Vec::new(), Vec::new());
                let order = timed_order(
                    request,
                    "target",
                    &request.inputs,
                    &mut warnings,
                    &mut notes,
                );
                (order, warnings, notes)
            })
        });
        let read = || -> Result<(ModelSpec, ModelSpec)> {
            let source = read_model(&request.source, &request.read)?;
            let target_read = ReadOptions {
                state_dict_key: None,
                ..request.read.clone()
            };
            Ok((source, read_model(&request.target, &target_read)?))
        };
        let read = read();
        let traced = traced.map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        (read, traced)
    });
    let (source, target) = read?;
    clock.lap("read");
    let mut warnings = Vec::new();
    let mut notes = Vec::new();
    for (side, spec) in [("source", &source), ("target", &target)] {
        if let Some(key) = &spec.state_dict_key {
            let others = if spec.alternatives.is_empty() {
                String::new()
            } else {
                format!(
                    " (also there: {}; choose with --state-dict-key)",
                    spec.alternatives.join(", ")
                )
            };
            notes.push(format!(
                "{side} {}: the state dict under '{key}'{others}",
                spec.path
            ));
        }
    }
    let deferred = Deferred {
        request: request.clone(),
        source: defer(Some(source.format), &request.source_order),
        target: defer(Some(target.format), &request.target_order),
    };
    let target_order = match (&request.target_order, traced) {
        (Some(file), _) => Some(order_from_file(file, &target)?),
        (None, Some((order, w, n))) => {
            warnings.extend(w);
            notes.extend(n);
            order?
        }
        (None, None) if deferred.target => None,
        (None, None) => timed_order(
            request,
            "target",
            &request.inputs,
            &mut warnings,
            &mut notes,
        )?,
    };
    let source_order = match &request.source_order {
        Some(file) => Some(order_from_file(file, &source)?),
        None if deferred.source => None,
        None => timed_order(request, "source", &[], &mut warnings, &mut notes)?,
    };
    if let Some(unsettled) = &request.order_needed {
        let traced: Vec<String> = [
            (
                &source,
                &request.source,
                &source_order,
                &request.source_order,
            ),
            (
                &target,
                &request.target,
                &target_order,
                &request.target_order,
            ),
        ]
        .iter()
        .filter(|(spec, _, order, file)| {
            spec.format == Format::TorchScript && order.is_some() && file.is_none()
        })
        .map(|(_, path, ..)| path.display().to_string())
        .collect();
        if !traced.is_empty() {
            notes.push(format!(
                "{}: traced for its execution order ({unsettled} without it)",
                traced.join(" and ")
            ));
        }
    }
    clock.lap("order");
    let mut options = MapperOptions {
        target_order,
        source_order,
        device: request.device,
        ..request.mapper.clone()
    };
    if let Some(rules) = &request.rules {
        let pins = pins_from_rules(rules, &source, &target, &options.constraints.pins);
        if pins.is_empty() {
            warnings.push(
                "no rule renames a source tensor to a target tensor; the rules pin nothing".into(),
            );
        }
        options.constraints.pins.extend(pins);
    }
    let mapper = Mapper::new(source, target, options)?;
    clock.lap("prepare");
    Ok(Prepared {
        mapper,
        warnings,
        notes,
        deferred: (deferred.source || deferred.target).then_some(deferred),
    })
}

/// Maps the two files of `request`: [`prepare`], then the engine.
pub fn map_files(request: &MapRequest) -> Result<MappingResult> {
    prepare(request)?.suggest_mapping(&request.suggest)
}

/// The pins `rules` give: each source tensor (by its name as written) that the first
/// matching rule renames to a target tensor's name as written, unless either tensor is
/// already pinned in `pinned`.
pub fn pins_from_rules(
    rules: &Rules,
    source: &ModelSpec,
    target: &ModelSpec,
    pinned: &[(String, String)],
) -> Vec<(String, String)> {
    let targets = target.written_index();
    let taken_s: HashSet<&str> = pinned.iter().map(|p| p.0.as_str()).collect();
    let mut taken_t: HashSet<usize> = pinned
        .iter()
        .filter_map(|p| targets.get(p.1.as_str()).copied())
        .collect();
    let mut out = vec![];
    for t in &source.tensors {
        if taken_s.contains(t.original_name.as_str()) || taken_s.contains(t.name.as_str()) {
            continue;
        }
        let Some(new) = rules.rename(&t.original_name) else {
            continue;
        };
        if let Some(&ti) = targets.get(new.as_str()) {
            if taken_t.insert(ti) {
                out.push((
                    t.original_name.clone(),
                    target.tensors[ti].original_name.clone(),
                ));
            }
        }
    }
    out
}

#[cfg(feature = "libtorch")]
fn check_device(device: Device) -> Result<()> {
    crate::libtorch::check_device(device)
}

#[cfg(not(feature = "libtorch"))]
fn check_device(device: Device) -> Result<()> {
    match device {
        Device::Cpu => Ok(()),
        Device::Cuda(_) => Err(Error::NeedsLibtorch {
            what: format!("the device '{device}'"),
            order_needed: None,
        }),
    }
}

/// The order of the model at `path` that `request.order` asks for; `None` leaves the
/// mapper its default (a checkpoint's key order). `inputs` are that model's dummy inputs.
/// [`order_of`] for the `side` ("source" or "target") of `request`; a slow trace is said
/// once in `notes`, with how to reuse it (`trace -o`, then `--source-order` /
/// `--target-order`).
fn timed_order(
    request: &MapRequest,
    side: &str,
    inputs: &[InputSpec],
    warnings: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Result<Option<TensorOrder>> {
    let path = if side == "source" {
        &request.source
    } else {
        &request.target
    };
    let start = std::time::Instant::now();
    let order = order_of(request, path, inputs, warnings)?;
    if order.is_some() {
        notes.extend(crate::trace::reuse_hint(
            path,
            side,
            inputs,
            start.elapsed(),
        ));
    }
    Ok(order)
}

fn order_of(
    request: &MapRequest,
    path: &Path,
    inputs: &[InputSpec],
    warnings: &mut Vec<String>,
) -> Result<Option<TensorOrder>> {
    if request.order == OrderPolicy::None {
        // An empty order of kind `None`: the mapper ranks nothing on this side.
        return Ok(Some(TensorOrder {
            kind: OrderKind::None,
            names: vec![],
        }));
    }
    if detect_format(path)? != Format::TorchScript {
        return Ok(None);
    }
    let traced = trace_order(request.order, path, inputs, request.device);
    match (request.order, traced) {
        (_, Ok(order)) => Ok(Some(TensorOrder::from(&order))),
        // Without libtorch in this build there is nothing to fall back from.
        (_, Err(e @ Error::NeedsLibtorch { .. })) => Err(e),
        // Auto never fails for want of an order: the file's order stands in, said aloud.
        (OrderPolicy::Auto, Err(e)) => {
            warnings.push(format!(
                "no execution order for {} ({e}); using its registration order",
                path.display()
            ));
            Ok(None)
        }
        // An explicit order is used as asked or fails: no silent fallback.
        (_, Err(e)) => Err(e),
    }
}

#[cfg(feature = "libtorch")]
fn trace_order(
    policy: OrderPolicy,
    path: &Path,
    inputs: &[InputSpec],
    device: Device,
) -> Result<ExecutionOrder> {
    use crate::trace;
    match policy {
        OrderPolicy::Auto => trace::execution_order(path, inputs, device),
        OrderPolicy::Dynamic if !inputs.is_empty() => trace::trace(path, inputs, device),
        OrderPolicy::Dynamic | OrderPolicy::Static => {
            crate::read::script_module(path, device)?.static_order()
        }
        OrderPolicy::Registration | OrderPolicy::None => {
            Ok(crate::read::script_module(path, device)?.registration_order())
        }
    }
}

#[cfg(not(feature = "libtorch"))]
fn trace_order(
    _policy: OrderPolicy,
    path: &Path,
    _inputs: &[InputSpec],
    device: Device,
) -> Result<ExecutionOrder> {
    crate::read::script_module(path, device).map(|never| match never {})
}

/// The order saved at `path` by `weightmap trace -o` (see [`ExecutionOrder::read_json`]),
/// for `spec`: an order traced once stands in for tracing again, and gives execution order
/// to models that cannot be traced here (a model spec JSON, a checkpoint of a model traced
/// elsewhere).
///
/// Errors: the file is not an order, or most of its names are not the model's tensors
/// (it was traced from another model).
pub fn order_from_file(path: &Path, spec: &ModelSpec) -> Result<TensorOrder> {
    let order = TensorOrder::from(&ExecutionOrder::read_json(path)?);
    let names: HashSet<&str> = spec
        .tensors
        .iter()
        .flat_map(|t| [t.name.as_str(), t.original_name.as_str()])
        .collect();
    // A trace of the same model names its own tensors (a few non-persistent buffers may be
    // missing from a checkpoint); mostly foreign names mean another model, whose order
    // would decide look-alikes wrongly.
    let known = order
        .names
        .iter()
        .filter(|n| names.contains(n.as_str()))
        .count();
    if order.names.is_empty() || known * 2 < order.names.len() {
        return Err(Error::invalid(
            "order file",
            format!(
                "{}: only {known} of its {} names are tensors of {}; it was traced from another model: trace this one with `weightmap trace MODEL -o FILE`",
                path.display(),
                order.names.len(),
                spec.path
            ),
        ));
    }
    Ok(order)
}
