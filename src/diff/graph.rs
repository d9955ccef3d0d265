//! The forward graphs of two TorchScript models compared: the histogram of aten ops on
//! each side, forward's signature, and the paired tensors whose place in the execution
//! order moved.

#[cfg(feature = "libtorch")]
use crate::error::Result;
#[cfg(feature = "libtorch")]
use crate::libtorch::ScriptModule;
use serde_json::{json, Value};
use std::collections::BTreeMap;
#[cfg(feature = "libtorch")]
use std::collections::HashMap;
#[cfg(feature = "libtorch")]
use std::path::Path;

/// One op kind whose count differs between A and B.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpCount {
    /// The op (`aten::conv2d`).
    pub op: String,
    /// Nodes of that kind in A's inlined forward graph.
    pub a: usize,
    /// In B's.
    pub b: usize,
}

/// A paired tensor used at another point of the forward pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// Its name in A.
    pub a: String,
    /// Its name in B.
    pub b: String,
    /// Its place in A's static execution order, from 0.
    pub a_index: usize,
    /// Its place in B's.
    pub b_index: usize,
}

/// The forward graphs compared.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphDiff {
    /// Forward's schema in A (the `self` argument left out: its class name changes with
    /// every export).
    pub signature_a: String,
    /// Forward's schema in B.
    pub signature_b: String,
    /// aten op kinds in A's inlined forward graph, with their counts.
    pub ops_a: BTreeMap<String, usize>,
    /// In B's.
    pub ops_b: BTreeMap<String, usize>,
    /// The aten ops whose counts differ.
    pub op_changes: Vec<OpCount>,
    /// Paired tensors out of order: the fewest whose removal leaves both orders agreeing.
    pub moved: Vec<Moved>,
}

/// Compares the forward graphs of the TorchScript models `a` and `b`; `pairs` are the
/// (A name, B name) pairs the diff found, as written in the files.
///
/// Errors: libtorch cannot load a model or read its forward graph.
#[cfg(feature = "libtorch")]
pub fn compare(a: &Path, b: &Path, pairs: &[(String, String)]) -> Result<GraphDiff> {
    let (ma, mb) = (
        ScriptModule::load(a, crate::Device::Cpu)?,
        ScriptModule::load(b, crate::Device::Cpu)?,
    );
    let (ga, gb) = (ma.graph_summary()?, mb.graph_summary()?);
    let aten = |ops: BTreeMap<String, usize>| -> BTreeMap<String, usize> {
        ops.into_iter()
            .filter(|(k, _)| k.starts_with("aten::"))
            .collect()
    };
    let (ops_a, ops_b) = (aten(ga.ops), aten(gb.ops));
    let mut kinds: Vec<&String> = ops_a.keys().chain(ops_b.keys()).collect();
    kinds.sort();
    kinds.dedup();
    let op_changes = kinds
        .into_iter()
        .filter_map(|k| {
            let (x, y) = (
                ops_a.get(k).copied().unwrap_or(0),
                ops_b.get(k).copied().unwrap_or(0),
            );
            (x != y).then(|| OpCount {
                op: k.clone(),
                a: x,
                b: y,
            })
        })
        .collect();

    let (oa, ob) = (ma.static_order()?, mb.static_order()?);
    let place = |o: &crate::trace::ExecutionOrder| -> HashMap<String, usize> {
        o.order.iter().map(|e| (e.name.clone(), e.index)).collect()
    };
    let (pa, pb) = (place(&oa), place(&ob));
    // The pairs used on both sides, in A's order.
    let mut used: Vec<Moved> = pairs
        .iter()
        .filter_map(|(x, y)| {
            Some(Moved {
                a: x.clone(),
                b: y.clone(),
                a_index: *pa.get(x)?,
                b_index: *pb.get(y)?,
            })
        })
        .collect();
    used.sort_by_key(|m| m.a_index);
    let keep = longest_increasing(&used.iter().map(|m| m.b_index).collect::<Vec<_>>());
    let moved = used
        .into_iter()
        .zip(keep)
        .filter(|(_, k)| !k)
        .map(|(m, _)| m)
        .collect();
    Ok(GraphDiff {
        signature_a: without_self(&ga.schema),
        signature_b: without_self(&gb.schema),
        ops_a,
        ops_b,
        op_changes,
        moved,
    })
}

/// `forward(__torch__.M self, Tensor x) -> Tensor` → `forward(Tensor x) -> Tensor`.
#[cfg_attr(not(feature = "libtorch"), allow(dead_code))]
fn without_self(schema: &str) -> String {
    let Some(open) = schema.find('(') else {
        return schema.to_string();
    };
    let rest = &schema[open + 1..];
    let cut = match (rest.find(", "), rest.find(')')) {
        (Some(c), Some(p)) if c < p => c + 2,
        (_, Some(p)) => p,
        _ => return schema.to_string(),
    };
    format!("{}{}", &schema[..open + 1], &rest[cut..])
}

/// Marks the members of one longest strictly increasing subsequence of `xs` (patience
/// sorting, O(n log n)): the tensors that kept their relative order.
#[cfg_attr(not(feature = "libtorch"), allow(dead_code))]
fn longest_increasing(xs: &[usize]) -> Vec<bool> {
    // tails[k]: index into xs of the smallest tail of an increasing run of length k + 1.
    let mut tails: Vec<usize> = Vec::new();
    let mut prev = vec![usize::MAX; xs.len()];
    for (i, &x) in xs.iter().enumerate() {
        let k = tails.partition_point(|&t| xs[t] < x);
        if k > 0 {
            prev[i] = tails[k - 1];
        }
        if k == tails.len() {
            tails.push(i);
        } else {
            tails[k] = i;
        }
    }
    let mut keep = vec![false; xs.len()];
    let mut at = tails.last().copied();
    while let Some(i) = at {
        keep[i] = true;
        at = (prev[i] != usize::MAX).then_some(prev[i]);
    }
    keep
}

impl GraphDiff {
    /// The JSON form, under the diff report's `graph` key.
    pub fn to_json(&self) -> Value {
        json!({
            "signature": {"a": self.signature_a, "b": self.signature_b,
                          "same": self.signature_a == self.signature_b},
            "ops": {"a": self.ops_a, "b": self.ops_b},
            "op_changes": self.op_changes.iter().map(|c| json!({"op": c.op, "a": c.a, "b": c.b})).collect::<Vec<_>>(),
            "moved": self.moved.iter().map(|m| json!({"a": m.a, "b": m.b, "a_index": m.a_index, "b_index": m.b_index})).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_tensor_moved_to_the_end_is_the_only_one_moved() {
        assert_eq!(
            longest_increasing(&[4, 0, 1, 2, 3]),
            vec![false, true, true, true, true]
        );
        assert!(longest_increasing(&[0, 1, 2]).iter().all(|&k| k));
    }

    #[test]
    fn the_self_argument_is_left_out() {
        assert_eq!(
            without_self("forward(__torch__.___torch_mangle_3.M self, Tensor x) -> Tensor"),
            "forward(Tensor x) -> Tensor"
        );
        assert_eq!(
            without_self("forward(__torch__.M self) -> Tensor"),
            "forward() -> Tensor"
        );
    }
}
