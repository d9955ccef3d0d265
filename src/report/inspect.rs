//! `inspect`: a model spec as a human summary (format, state dict, prefixes, counts,
//! module tree) or as one JSON object that is itself accepted as a model input
//! (see [`crate::read::read_spec_json`]).

use crate::spec::{dtype_size, ModelSpec, ModuleNode, TensorInfo, TensorKind};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Options for the human summary.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextOptions {
    /// Print the module tree with parameter badges and shapes.
    pub tree: bool,
    /// Deepest module level shown in the tree (`None`: all); deeper modules are folded
    /// into a count on their ancestor.
    pub depth: Option<usize>,
}

/// Totals of one dtype.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DtypeCount {
    /// Number of tensors.
    pub tensors: usize,
    /// Number of elements.
    pub elements: u64,
    /// Number of bytes.
    pub bytes: u64,
}

/// Totals by dtype, dtypes in name order.
pub fn counts_by_dtype(spec: &ModelSpec) -> BTreeMap<String, DtypeCount> {
    let mut out: BTreeMap<String, DtypeCount> = BTreeMap::new();
    for t in &spec.tensors {
        let c = out.entry(t.dtype.clone()).or_default();
        c.tensors += 1;
        c.elements += t.numel;
        c.bytes += t.nbytes();
    }
    out
}

fn kind_name(kind: TensorKind) -> Option<&'static str> {
    match kind {
        TensorKind::Parameter => Some("parameter"),
        TensorKind::Buffer => Some("buffer"),
        TensorKind::Unknown => None,
    }
}

/// The `inspect --json` object: `format`, `path`, `state_dict_key`, `alternatives`,
/// `stripped_prefixes`, `counts` (tensors, elements, bytes, by dtype) and `tensors` in
/// file order, each `{name, shape, dtype, kind, ...}` with `name` as written in the file
/// (before prefix stripping), `kind` only when known, `normalized_name` when prefixes
/// were stripped, and `tied_to` (also as written) for tied weights.
pub fn to_json(spec: &ModelSpec) -> Value {
    let by_dtype: Map<String, Value> = counts_by_dtype(spec)
        .into_iter()
        .map(|(d, c)| {
            (
                d,
                json!({"tensors": c.tensors, "elements": c.elements, "bytes": c.bytes}),
            )
        })
        .collect();
    let original_of = |name: &str| -> String {
        spec.find(name).map_or_else(
            || name.to_string(),
            |i| spec.tensors[i].original_name.clone(),
        )
    };
    let tensors: Vec<Value> = spec
        .tensors
        .iter()
        .map(|t| {
            let mut o = Map::new();
            o.insert("name".into(), json!(t.original_name));
            o.insert("shape".into(), json!(t.shape));
            o.insert("dtype".into(), json!(t.dtype));
            if let Some(k) = kind_name(t.kind) {
                o.insert("kind".into(), json!(k));
            }
            if t.name != t.original_name {
                o.insert("normalized_name".into(), json!(t.name));
            }
            o.insert("module".into(), json!(t.module));
            o.insert("leaf".into(), json!(t.leaf));
            o.insert("numel".into(), json!(t.numel));
            if !t.persistent {
                o.insert("persistent".into(), json!(false));
            }
            if let Some(tied) = &t.tied_to {
                o.insert("tied_to".into(), json!(original_of(tied)));
            }
            Value::Object(o)
        })
        .collect();
    json!({
        "path": spec.path,
        "format": spec.format.name(),
        "state_dict_key": spec.state_dict_key,
        "alternatives": spec.alternatives,
        "stripped_prefixes": spec.stripped_prefixes,
        "counts": {
            "tensors": spec.tensors.len(),
            "elements": spec.total_elements(),
            "bytes": spec.tensors.iter().map(TensorInfo::nbytes).sum::<u64>(),
            "by_dtype": by_dtype,
        },
        "tensors": tensors,
    })
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in binary units (`4.0 KiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn shape_text(shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(i64::to_string).collect();
    format!("[{}]", dims.join(","))
}

/// A tensor's badge in the tree: `W[16,3,3,3]` for a weight, `B[16]` for a bias,
/// `buffer running_mean[16]` for a known buffer, `name[shape]` otherwise; a tied
/// tensor adds `= other`, a dtype other than float32 is shown.
fn badge(t: &TensorInfo) -> String {
    let mut s = match (t.kind, t.leaf.as_str()) {
        (TensorKind::Buffer, leaf) => format!("buffer {leaf}{}", shape_text(&t.shape)),
        (_, "weight") => format!("W{}", shape_text(&t.shape)),
        (_, "bias") => format!("B{}", shape_text(&t.shape)),
        (_, leaf) => format!("{leaf}{}", shape_text(&t.shape)),
    };
    if t.dtype != "float32" {
        let _ = write!(s, " {}", t.dtype);
    }
    if let Some(tied) = &t.tied_to {
        let _ = write!(s, " = {tied}");
    }
    s
}

/// The human summary.
pub fn to_text(spec: &ModelSpec, options: TextOptions) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "file:              {}", spec.path);
    let _ = writeln!(out, "format:            {}", spec.format.name());
    let _ = writeln!(
        out,
        "state dict:        {}",
        spec.state_dict_key.as_deref().unwrap_or("(top level)")
    );
    if !spec.alternatives.is_empty() {
        let _ = writeln!(
            out,
            "alternatives:      {} (choose one with --state-dict-key)",
            spec.alternatives.join(", ")
        );
    }
    let prefixes = if spec.stripped_prefixes.is_empty() {
        "none".to_string()
    } else {
        spec.stripped_prefixes.join(" then ")
    };
    let _ = writeln!(out, "stripped prefixes: {prefixes}");
    let params = spec
        .tensors
        .iter()
        .filter(|t| t.kind == TensorKind::Parameter)
        .count();
    let buffers = spec
        .tensors
        .iter()
        .filter(|t| t.kind == TensorKind::Buffer)
        .count();
    let kinds = if params + buffers > 0 {
        format!(" ({params} parameters, {buffers} buffers)")
    } else {
        String::new()
    };
    let total_bytes: u64 = spec.tensors.iter().map(TensorInfo::nbytes).sum();
    let _ = writeln!(
        out,
        "tensors:           {}{kinds}",
        thousands(spec.tensors.len() as u64)
    );
    let _ = writeln!(
        out,
        "elements:          {}",
        thousands(spec.total_elements())
    );
    let _ = writeln!(
        out,
        "bytes:             {} ({})",
        thousands(total_bytes),
        human_bytes(total_bytes)
    );
    let by_dtype = counts_by_dtype(spec);
    if !by_dtype.is_empty() {
        let _ = writeln!(out, "by dtype:");
        for (d, c) in &by_dtype {
            let unknown = if dtype_size(d) == 0 {
                " (size unknown)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {d:<10} {:>8} tensors {:>16} elements {:>12}{unknown}",
                thousands(c.tensors as u64),
                thousands(c.elements),
                human_bytes(c.bytes)
            );
        }
    }
    let tied: Vec<&TensorInfo> = spec
        .tensors
        .iter()
        .filter(|t| t.tied_to.is_some())
        .collect();
    if !tied.is_empty() {
        let _ = writeln!(out, "tied weights:");
        for t in tied {
            let _ = writeln!(out, "  {} = {}", t.name, t.tied_to.as_deref().unwrap_or(""));
        }
    }
    if options.tree {
        let _ = writeln!(out, "module tree:");
        write_tree(&mut out, spec, &spec.module_tree(), options.depth);
    }
    out
}

/// Writes the tree without recursion (module paths can be arbitrarily deep).
fn write_tree(out: &mut String, spec: &ModelSpec, root: &ModuleNode, depth: Option<usize>) {
    let root_badges: Vec<String> = root
        .tensors
        .iter()
        .map(|&i| badge(&spec.tensors[i]))
        .collect();
    if !root_badges.is_empty() {
        let _ = writeln!(out, "  (top level)  {}", root_badges.join("  "));
    }
    let mut stack: Vec<(&ModuleNode, usize)> = root.children.iter().rev().map(|c| (c, 1)).collect();
    while let Some((node, level)) = stack.pop() {
        let indent = "  ".repeat(level);
        let folded = depth.is_some_and(|d| level >= d) && !node.children.is_empty();
        let mut line = format!("{indent}{}", node.name);
        if folded {
            let n = node.tensor_count();
            let _ = write!(line, "  ({} tensors)", thousands(n as u64));
        } else if !node.tensors.is_empty() {
            let badges: Vec<String> = node
                .tensors
                .iter()
                .map(|&i| badge(&spec.tensors[i]))
                .collect();
            let _ = write!(line, "  {}", badges.join("  "));
        }
        let _ = writeln!(out, "{line}");
        if !folded {
            stack.extend(node.children.iter().rev().map(|c| (c, level + 1)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Format;

    fn spec() -> ModelSpec {
        let mut tensors = vec![
            TensorInfo::new(
                "conv.weight",
                vec![4, 3, 3, 3],
                "float32",
                TensorKind::Parameter,
                0,
            ),
            TensorInfo::new("bn.running_mean", vec![4], "float32", TensorKind::Buffer, 1),
            TensorInfo::new(
                "bn.num_batches_tracked",
                vec![],
                "int64",
                TensorKind::Buffer,
                2,
            ),
            TensorInfo::new(
                "head.weight",
                vec![4, 3, 3, 3],
                "float32",
                TensorKind::Unknown,
                3,
            ),
        ];
        tensors[0].original_name = "module.conv.weight".into();
        tensors[3].tied_to = Some("conv.weight".into());
        ModelSpec {
            path: "m.pth".into(),
            format: Format::TorchZip,
            state_dict_key: Some("model".into()),
            alternatives: vec!["ema".into()],
            stripped_prefixes: vec!["module.".into()],
            tensors,
        }
    }

    #[test]
    fn json_lists_tensors_as_written_with_known_kinds() {
        let v = to_json(&spec());
        assert_eq!(v["format"], "torch_zip");
        assert_eq!(v["state_dict_key"], "model");
        assert_eq!(v["stripped_prefixes"][0], "module.");
        let t = v["tensors"].as_array().unwrap();
        assert_eq!(t[0]["name"], "module.conv.weight");
        assert_eq!(t[0]["normalized_name"], "conv.weight");
        assert_eq!(t[0]["kind"], "parameter");
        assert_eq!(t[1]["kind"], "buffer");
        assert!(t[3].get("kind").is_none());
        assert_eq!(t[3]["tied_to"], "module.conv.weight");
        assert_eq!(v["counts"]["by_dtype"]["int64"]["bytes"], 8);
        assert_eq!(v["counts"]["elements"], 108 + 4 + 1 + 108);
    }

    #[test]
    fn text_shows_badges_and_folds_below_depth() {
        let s = spec();
        let full = to_text(
            &s,
            TextOptions {
                tree: true,
                depth: None,
            },
        );
        assert!(full.contains("conv  W[4,3,3,3]"), "{full}");
        assert!(full.contains("buffer running_mean[4]"), "{full}");
        assert!(full.contains("alternatives:      ema"), "{full}");
        let mut deep = s.clone();
        deep.tensors.push(TensorInfo::new(
            "a.b.c.weight",
            vec![2],
            "bfloat16",
            TensorKind::Unknown,
            4,
        ));
        let folded = to_text(
            &deep,
            TextOptions {
                tree: true,
                depth: Some(1),
            },
        );
        assert!(folded.contains("  a  (1 tensors)"), "{folded}");
        assert!(!folded.contains("W[2]"), "{folded}");
    }

    #[test]
    fn thousands_and_bytes() {
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(human_bytes(2048), "2.0 KiB");
    }
}
