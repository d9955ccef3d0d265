//! The trace stage: the order in which a TorchScript model uses its parameters and buffers.
//!
//! Three orders, from most to least trusted:
//! - **dynamic** ([`trace`]): runs `forward` on seeded dummy inputs ([`InputSpec`]) under an
//!   `at::RecordFunction` observer and records, by tensor identity, the first op the model
//!   calls with each tensor (`aten::linear`, `aten::_convolution`, ...). Tensors no op took
//!   (a branch not taken, BatchNorm's `num_batches_tracked` in eval) are *untouched*.
//! - **static** ([`static_order`]): walks the `forward` graph with every method call inlined,
//!   following `prim::GetAttr` chains from `self` to each tensor; needs no input, lists both
//!   sides of every branch, and sees nothing that is computed at run time.
//! - **registration**: the state dict's own order (a module's parameters, buffers, then
//!   children), which is usually, not always, the execution order.
//!
//! [`execution_order`] picks the best one available: dynamic when inputs are given (and
//! forward runs), else static, else registration, and says in
//! [`ExecutionOrder::note`] why it fell back.
//!
//! Tied weights (one tensor under two names) appear once in the order, under the first name;
//! the other names, and later uses of a tensor by other ops, are in
//! [`ExecutionOrder::also_used`].
//!
//! The work happens in the libtorch layer ([`crate::libtorch`]); without it (the cargo
//! feature `libtorch` off) orders can still be read from files.

pub use crate::input::InputSpec;

#[cfg(feature = "libtorch")]
use crate::device::Device;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[cfg(feature = "libtorch")]
use crate::libtorch::{ffi, inputs::make_inputs, ScriptModule};
#[cfg(feature = "libtorch")]
use crate::read::script_module;
#[cfg(feature = "libtorch")]
use std::collections::HashSet;

/// Tracing that takes longer than this is worth doing once: [`reuse_hint`] says how.
pub const SLOW_TRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// What to say when getting the order of `model` took `took` (loading and tracing it) as
/// the `side` ("source" or "target") of a `map`: nothing when it was quick, else how
/// `weightmap trace -o` and `--source-order`/`--target-order` reuse the order next time.
/// `inputs` are the `--input` flags the trace used (repeated in the hint).
pub fn reuse_hint(
    model: &Path,
    side: &str,
    inputs: &[InputSpec],
    took: std::time::Duration,
) -> Option<String> {
    if took <= SLOW_TRACE {
        return None;
    }
    let flags: String = inputs.iter().map(|i| format!(" --input {i}")).collect();
    Some(format!(
        "the {side}'s execution order took {:.1} s; trace it once with `weightmap trace {}{flags} -o {side}_order.json` and map with `--{side}-order {side}_order.json` to reuse it",
        took.as_secs_f64(),
        model.display(),
    ))
}

/// How an execution order was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderMode {
    /// Ops observed while `forward` ran on dummy inputs.
    Dynamic,
    /// The inlined `forward` graph, read without running it.
    Static,
    /// The state dict's registration order (no op information).
    Registration,
}

impl OrderMode {
    /// The name used in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            OrderMode::Dynamic => "dynamic",
            OrderMode::Static => "static",
            OrderMode::Registration => "registration",
        }
    }
}

/// One tensor in execution order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderEntry {
    /// Position in the order, from 0.
    pub index: usize,
    /// The state-dict name (the first name of a tied tensor).
    pub name: String,
    /// The op that first took the tensor (`aten::linear`); `None` in registration order.
    pub op: Option<String>,
    /// The tensor's shape.
    pub shape: Vec<i64>,
}

/// A name or use that is not in the order because its tensor already is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlsoUsed {
    /// A tied alias of the tensor, or the tensor's own name for a repeated use.
    pub name: String,
    /// The name under which the tensor is in the order.
    pub same_as: String,
    /// The op of this later use; `None` for an alias that no further op used.
    pub op: Option<String>,
}

/// The order in which a model's tensors are used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionOrder {
    /// How the order was obtained.
    pub mode: OrderMode,
    /// The device the model ran (or was loaded) on: `cpu`, `cuda:0`.
    pub device: String,
    /// Every used tensor once, in order of first use (registration order for
    /// [`OrderMode::Registration`]).
    pub order: Vec<OrderEntry>,
    /// Tensors that were never used, in registration order.
    pub untouched: Vec<String>,
    /// Tied aliases and later uses by other ops (see [`AlsoUsed`]).
    #[serde(default)]
    pub also_used: Vec<AlsoUsed>,
    /// Why a less trusted mode was used (the error that stopped the better one), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl ExecutionOrder {
    /// Position of `name` in the order (tied aliases resolve to their tensor's position).
    pub fn position(&self, name: &str) -> Option<usize> {
        let name = self
            .also_used
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.same_as.as_str())
            .unwrap_or(name);
        self.order.iter().position(|e| e.name == name)
    }

    /// Reads an order saved by [`ExecutionOrder::write_json`] (`weightmap trace -o FILE`):
    /// an order traced once (on a GPU machine, say) serves every later mapping run.
    ///
    /// Errors: the file cannot be read, is not JSON, or is not an order (the message names
    /// the field that is wrong).
    pub fn read_json(path: &Path) -> Result<ExecutionOrder> {
        let value = crate::format::json::read_json(path)?;
        serde_json::from_value(value).map_err(|e| {
            Error::corrupt(
                path,
                "execution order JSON",
                format!("{e}; write one with `weightmap trace MODEL -o FILE`"),
            )
        })
    }

    /// Writes the order as one JSON object to `path`, through a temporary file in the same
    /// folder renamed into place (no partial file on failure).
    pub fn write_json(&self, path: &Path) -> Result<()> {
        crate::format::json::write_json(path, self)
    }
}

/// Dynamic order of the model at `path`: loads it on `device`, runs `forward` on seeded dummy
/// `inputs` and records the first op that takes each tensor.
///
/// Errors: the file cannot be loaded; CUDA requested but unavailable; `forward` fails on
/// these inputs (libtorch's message on one line, e.g. a shape mismatch).
#[cfg(feature = "libtorch")]
pub fn trace(path: &Path, inputs: &[InputSpec], device: Device) -> Result<ExecutionOrder> {
    script_module(path, device)?.trace(inputs)
}

/// Static order of the model at `path` (loaded on the CPU), from its inlined forward graph.
#[cfg(feature = "libtorch")]
pub fn static_order(path: &Path) -> Result<ExecutionOrder> {
    script_module(path, Device::Cpu)?.static_order()
}

/// The best order available for the model at `path`: dynamic when `inputs` are given, else
/// static, else registration. When `forward` fails the dynamic order falls back to the
/// static one, and a failing graph walk falls back to registration order; `note` says so with
/// the error on one line. Fails only when the model cannot be loaded at all.
#[cfg(feature = "libtorch")]
pub fn execution_order(
    path: &Path,
    inputs: &[InputSpec],
    device: Device,
) -> Result<ExecutionOrder> {
    let module = script_module(path, device)?;
    let mut note = None;
    if !inputs.is_empty() {
        match module.trace(inputs) {
            Ok(order) => return Ok(order),
            Err(e) => {
                note = Some(format!(
                    "dynamic trace failed ({e}); using the static order"
                ))
            }
        }
    }
    match module.static_order() {
        Ok(mut order) => {
            order.note = note;
            Ok(order)
        }
        Err(e) => {
            let mut order = module.registration_order();
            let why = format!("static order failed ({e}); using registration order");
            order.note = Some(match note {
                Some(n) => format!("{n}; {why}"),
                None => why,
            });
            Ok(order)
        }
    }
}

#[cfg(feature = "libtorch")]
impl ScriptModule {
    /// Dynamic order: runs `forward` on dummy inputs built from `inputs` (on the module's
    /// device) and records the first outermost op that takes each tensor.
    pub fn trace(&self, inputs: &[InputSpec]) -> Result<ExecutionOrder> {
        let tensors = make_inputs(inputs, self.device())?;
        // The bar counts the distinct tensors forward has used so far (tied names are one).
        let total = self
            .state_entries()
            .iter()
            .filter(|e| e.tied_to.is_none())
            .count() as u64;
        let uses = crate::progress::Progress::while_counting(
            "tracing tensors",
            Some(total),
            || Some(ffi::trace_progress().1),
            || self.dynamic_uses(&tensors),
        )?;
        // Tensor identity cannot tell tied names apart; the graph can. Its order of first use
        // per name decides which name each use of a tied tensor is attributed to. Without a
        // graph (a failing walk) the state-dict order stands in.
        let graph_uses = if self.state_entries().iter().any(|e| e.tied_to.is_some()) {
            self.static_uses().map(|u| u.uses).unwrap_or_default()
        } else {
            Vec::new()
        };
        Ok(self.build_order(OrderMode::Dynamic, &uses.uses, &graph_uses))
    }

    /// Static order: the first use of each tensor in the inlined `forward` graph.
    pub fn static_order(&self) -> Result<ExecutionOrder> {
        let uses =
            crate::progress::Progress::while_running("tracing graph", || self.static_uses())?;
        Ok(self.build_order(OrderMode::Static, &uses.uses, &[]))
    }

    /// Registration order: the state dict's order, without ops.
    pub fn registration_order(&self) -> ExecutionOrder {
        self.build_order(OrderMode::Registration, &[], &[])
    }

    /// Orders the tensors by first use.
    ///
    /// A tied tensor is one group of names. Its first use puts it in the order under the
    /// name that use was attributed to; its later uses (by other ops) and its other names go
    /// to `also_used`. Static uses carry their name; dynamic uses are attributed to the
    /// group's names in the order the graph (`name_hint`) first uses them, then to the first.
    /// Registration mode has no uses: every group counts as used at its first name.
    fn build_order(
        &self,
        mode: OrderMode,
        uses: &[ffi::TensorUse],
        name_hint: &[ffi::TensorUse],
    ) -> ExecutionOrder {
        let entries = self.state_entries();
        let group_of: Vec<usize> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                e.tied_to
                    .as_deref()
                    .and_then(|t| entries.iter().position(|x| x.name == t))
                    .unwrap_or(i)
            })
            .collect();
        // Names of each group, in the order the hint's graph first uses them, then the rest.
        let mut names: Vec<Vec<usize>> = vec![Vec::new(); entries.len()];
        for u in name_hint.iter().map(|u| u.entry).chain(0..entries.len()) {
            let group = &mut names[group_of[u]];
            if !group.contains(&u) {
                group.push(u);
            }
        }

        // (entry named, group, op) for the first use of each group, and for each later use.
        let mut first: Vec<(usize, usize, Option<String>)> = Vec::new();
        let mut later: Vec<(usize, usize, Option<String>)> = Vec::new();
        if mode == OrderMode::Registration {
            first = (0..entries.len())
                .filter(|&i| group_of[i] == i)
                .map(|i| (i, i, None))
                .collect();
        } else {
            let mut last_call: Vec<Option<u64>> = vec![None; entries.len()];
            let mut use_count = vec![0usize; entries.len()];
            for u in uses {
                let g = group_of[u.entry];
                if last_call[g] == Some(u.call) {
                    continue; // one op taking the tensor twice (x * w * w) is one use
                }
                last_call[g] = Some(u.call);
                let named = match mode {
                    OrderMode::Static => u.entry,
                    _ => names[g].get(use_count[g]).copied().unwrap_or(names[g][0]),
                };
                let slot = if use_count[g] == 0 {
                    &mut first
                } else {
                    &mut later
                };
                slot.push((named, g, Some(u.op.clone())));
                use_count[g] += 1;
            }
        }

        let order: Vec<OrderEntry> = first
            .iter()
            .enumerate()
            .map(|(index, (e, _, op))| OrderEntry {
                index,
                name: entries[*e].name.clone(),
                op: op.clone(),
                shape: entries[*e].shape.clone(),
            })
            .collect();
        let mut in_order: Vec<Option<usize>> = vec![None; entries.len()]; // group -> named entry
        for (e, g, _) in &first {
            in_order[*g] = Some(*e);
        }
        let untouched = (0..entries.len())
            .filter(|&i| in_order[group_of[i]].is_none())
            .map(|i| entries[i].name.clone())
            .collect();

        let mut mentioned: HashSet<usize> = first.iter().map(|(e, _, _)| *e).collect();
        let mut also_used = Vec::new();
        for (e, g, op) in later {
            mentioned.insert(e);
            let same_as = in_order[g]
                .map(|i| entries[i].name.clone())
                .unwrap_or_default();
            also_used.push(AlsoUsed {
                name: entries[e].name.clone(),
                same_as,
                op,
            });
        }
        for i in 0..entries.len() {
            if let Some(named) = in_order[group_of[i]] {
                if !mentioned.contains(&i) {
                    also_used.push(AlsoUsed {
                        name: entries[i].name.clone(),
                        same_as: entries[named].name.clone(),
                        op: None,
                    });
                }
            }
        }
        ExecutionOrder {
            mode,
            device: self.device().to_string(),
            order,
            untouched,
            also_used,
            note: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_slow_trace_says_how_to_reuse_it_and_a_quick_one_says_nothing() {
        let model = Path::new("m.pt");
        let inputs: Vec<InputSpec> = vec!["1x16:i64:0-1000".parse().unwrap()];
        assert_eq!(
            reuse_hint(model, "target", &inputs, Duration::from_millis(300)),
            None
        );
        let hint = reuse_hint(
            model,
            "target",
            &inputs,
            SLOW_TRACE + Duration::from_secs(1),
        )
        .expect("a slow trace gets a hint");
        assert!(
            hint.contains("weightmap trace m.pt --input 1x16:i64:0-1000 -o target_order.json")
                && hint.contains("--target-order target_order.json"),
            "{hint}"
        );
    }
}
