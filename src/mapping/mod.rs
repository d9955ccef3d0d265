//! The mapping file: the one contract between `map` (which writes it), `apply` (which
//! executes it), `verify`, `tree --mapping` and the HTML report.
//!
//! `weightmap map -o` writes version 2:
//!
//! ```json
//! {"format": "weightmap.mapping", "version": 2,
//!  "mapping": {"conv1.weight": "stem.weight",
//!              "c_attn.weight": {"target": "attn.weight", "transform": "transpose"}},
//!  "conversions": [{"kind": "split", "sources": ["qkv.weight"],
//!                   "targets": ["q.weight", "k.weight", "v.weight"],
//!                   "dim": 0, "sizes": [64, 64, 64],
//!                   "confidence": 0.95, "reason": "..."}]}
//! ```
//!
//! `mapping` holds the one-to-one entries (a `null` target means "not mapped"); each
//! conversion is one op of a closed vocabulary ([`ConversionKind`]), with its sources and
//! targets in the order the op uses them, so the file alone says everything. The older
//! forms are still read: flat `{source: target}`, extended `{source: {"target",
//! "transform"}}`, either optionally wrapped as `{"mapping": {...}}` (the form
//! `bench/score.py` reads, which ignores `conversions`).

use crate::error::{Error, Result};
use crate::spec::{ModelSpec, TensorInfo};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// The `format` field of a version-2 mapping file.
pub const FORMAT: &str = "weightmap.mapping";
/// The version `map -o` writes.
pub const VERSION: u64 = 2;

/// How a tensor's data changes on its way from the source to the target. In JSON:
/// `"transpose"` or `{"reshape": [dims]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transform {
    /// Swap the two dimensions of a 2-D tensor (HF GPT-2 `Conv1D` `[in, out]` ↔ `nn.Linear`
    /// `[out, in]`). The data is rewritten, not just relabelled.
    Transpose,
    /// Same elements in the same order under a new shape (a 1×1 convolution `[out, in, 1, 1]`
    /// ↔ a linear layer `[out, in]`). At most one dimension may be `-1` (inferred).
    Reshape(Vec<i64>),
}

impl Transform {
    /// The shape a tensor of `shape` has after the transform, or why it does not fit.
    pub fn output_shape(&self, shape: &[i64]) -> std::result::Result<Vec<i64>, String> {
        match self {
            Transform::Transpose => {
                if shape.len() != 2 {
                    return Err(format!(
                        "transpose needs a 2-D tensor, this one has shape {shape:?} ({} dimensions)",
                        shape.len()
                    ));
                }
                Ok(vec![shape[1], shape[0]])
            }
            Transform::Reshape(dims) => {
                let inferred = dims.iter().filter(|&&d| d == -1).count();
                if inferred > 1 || dims.iter().any(|&d| d < -1) {
                    return Err(format!(
                        "reshape to {dims:?}: dimensions must be >= 0, with at most one -1"
                    ));
                }
                // Checked products: dimensions whose product wraps around (28672 x
                // 7905747460161236407 wraps to 4096) must not pass for a fitting shape.
                let numel = crate::spec::checked_numel(shape)
                    .ok_or_else(|| format!("the source shape {shape:?} has too many elements"))?
                    as i64;
                let known: Vec<i64> = dims.iter().copied().filter(|&d| d != -1).collect();
                let known = crate::spec::checked_numel(&known).ok_or_else(|| {
                    format!("reshape to {dims:?}: the dimensions' product overflows 64 bits")
                })? as i64;
                let mut out = dims.clone();
                if inferred == 1 {
                    if known == 0 || numel % known != 0 {
                        return Err(format!("reshape of shape {shape:?} ({numel} elements) to {dims:?} does not fit"));
                    }
                    for d in out.iter_mut().filter(|d| **d == -1) {
                        *d = numel / known;
                    }
                } else if known != numel {
                    return Err(format!(
                        "reshape of shape {shape:?} ({numel} elements) to {dims:?} ({known} elements) does not fit"
                    ));
                }
                Ok(out)
            }
        }
    }

    /// The JSON form used in mapping files (`"transpose"`, `{"reshape": [..]}`).
    pub fn to_json(&self) -> Value {
        match self {
            Transform::Transpose => Value::String("transpose".into()),
            Transform::Reshape(dims) => serde_json::json!({ "reshape": dims }),
        }
    }

    /// Parses the JSON form; the error lists what is accepted.
    pub fn from_json(v: &Value) -> std::result::Result<Transform, String> {
        const ACCEPTED: &str = "accepted: \"transpose\" or {\"reshape\": [dims]}";
        match v {
            Value::String(s) if s == "transpose" || s == "t" => Ok(Transform::Transpose),
            Value::Object(o) => match o.get("reshape") {
                Some(Value::Array(dims)) => dims
                    .iter()
                    .map(|d| {
                        d.as_i64()
                            .ok_or_else(|| format!("reshape dimensions must be integers, not {d}"))
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map(Transform::Reshape),
                _ => Err(format!("unknown transform {v}; {ACCEPTED}")),
            },
            _ => Err(format!("unknown transform {v}; {ACCEPTED}")),
        }
    }

    /// A short human name (`transpose`, `reshape [768, 3072]`).
    pub fn describe(&self) -> String {
        match self {
            Transform::Transpose => "transpose".into(),
            Transform::Reshape(dims) => format!("reshape {dims:?}"),
        }
    }
}

impl Serialize for Transform {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Transform {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Transform::from_json(&Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The ops a conversion may be: each many-to-one op with its inverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversionKind {
    /// One source cut along `dim` into targets of `sizes` (fused qkv → q, k, v).
    Split,
    /// Sources concatenated along `dim` into one target (q, k, v → fused qkv).
    Concat,
    /// Sources (same shape) stacked along a new axis `dim` into one target (per-expert
    /// weights → one experts tensor).
    Stack,
    /// One source taken apart along `dim` into its slices (experts tensor → per expert).
    Unstack,
    /// Per index, `group_size` consecutive sources concatenated along `concat_dim`, then
    /// the results stacked along a new axis `dim` (Mixtral `w1`, `w3` per expert →
    /// `gate_up_proj`).
    StackOfConcat,
    /// The inverse of [`ConversionKind::StackOfConcat`]: one source unstacked along `dim`,
    /// each slice split along `concat_dim` into `sizes` (`group_size` parts); targets are
    /// listed slice by slice.
    SplitOfUnstack,
}

impl ConversionKind {
    /// The name used in files and reports.
    pub fn name(self) -> &'static str {
        match self {
            ConversionKind::Split => "split",
            ConversionKind::Concat => "concat",
            ConversionKind::Stack => "stack",
            ConversionKind::Unstack => "unstack",
            ConversionKind::StackOfConcat => "stack_of_concat",
            ConversionKind::SplitOfUnstack => "split_of_unstack",
        }
    }

    /// True for the ops that take many sources into one target.
    pub fn gathers(self) -> bool {
        matches!(
            self,
            ConversionKind::Concat | ConversionKind::Stack | ConversionKind::StackOfConcat
        )
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One many-to-one (or one-to-many) op of a mapping file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversion {
    /// The op.
    pub kind: ConversionKind,
    /// Source tensors (names as in the source file), in the order the op takes them.
    #[serde(alias = "source")]
    pub sources: Vec<String>,
    /// Target tensors, in the order the op makes them.
    #[serde(alias = "target")]
    pub targets: Vec<String>,
    /// The axis: of the split or concatenation, or the new axis of a stack (default 0).
    #[serde(default)]
    pub dim: usize,
    /// Sizes along the cut axis: of each target of a `split`, of each part of a group of a
    /// `split_of_unstack` (optional for `concat`, checked when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizes: Option<Vec<i64>>,
    /// `stack_of_concat` / `split_of_unstack`: tensors per index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_size: Option<usize>,
    /// `stack_of_concat` / `split_of_unstack`: the axis of the concatenation inside a
    /// group, counted on the parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concat_dim: Option<usize>,
    /// Each part on the many side is the 2-D transpose of its slice of the one tensor
    /// (transposed before it is put in, or after it is cut out).
    #[serde(default, skip_serializing_if = "is_false")]
    pub transpose: bool,
    /// How sure `map` is of the op and of its order, in `[0, 1]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Why `map` proposes it (which names or order settled the order of the parts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Set when something must be checked by a person: the order of the parts rests on
    /// weak evidence (names do not settle it). `apply` executes the op as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ambiguous: Option<String>,
}

/// Where each part of a conversion sits in its one tensor (the single tensor of the op).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Shape of the one tensor.
    pub whole: Vec<i64>,
    /// Per part, in op order: its block in the one tensor (same rank, 1 on a stacked axis)
    /// and the block's offset there.
    pub blocks: Vec<(Vec<i64>, Vec<i64>)>,
    /// Per part, its own shape (as stored on the many side).
    pub parts: Vec<Vec<i64>>,
}

fn insert(shape: &[i64], at: usize, v: i64) -> Vec<i64> {
    let mut s = shape.to_vec();
    s.insert(at, v);
    s
}

fn transposed(shape: &[i64], what: &str) -> std::result::Result<Vec<i64>, String> {
    Transform::Transpose
        .output_shape(shape)
        .map_err(|m| format!("{what}: {m}"))
}

impl Conversion {
    /// A conversion of `kind` with its axis, no sizes, groups, evidence.
    pub fn new(
        kind: ConversionKind,
        sources: Vec<String>,
        targets: Vec<String>,
        dim: usize,
    ) -> Self {
        Conversion {
            kind,
            sources,
            targets,
            dim,
            sizes: None,
            group_size: None,
            concat_dim: None,
            transpose: false,
            confidence: None,
            reason: None,
            ambiguous: None,
        }
    }

    /// The tensors of the many side (sources of a gather, targets of a scatter).
    pub fn parts(&self) -> &[String] {
        if self.kind.gathers() {
            &self.sources
        } else {
            &self.targets
        }
    }

    /// The single tensor of the op (target of a gather, source of a scatter).
    pub fn one(&self) -> &str {
        let v = if self.kind.gathers() {
            &self.targets
        } else {
            &self.sources
        };
        v.first().map(String::as_str).unwrap_or("")
    }

    /// One line for people: `split qkv.weight along dim 0 into q.weight, k.weight, v.weight`.
    pub fn describe(&self) -> String {
        let list = |v: &[String]| {
            if v.len() <= 4 {
                v.join(", ")
            } else {
                format!("{}, ... ({} tensors)", v[..2].join(", "), v.len())
            }
        };
        let t = if self.transpose {
            ", each part transposed"
        } else {
            ""
        };
        let g = self.group_size.unwrap_or(1);
        let c = self.concat_dim.unwrap_or(0);
        match self.kind {
            ConversionKind::Split => format!(
                "split {} along dim {} into {}{t}",
                list(&self.sources),
                self.dim,
                list(&self.targets)
            ),
            ConversionKind::Concat => format!(
                "concat {} along dim {} into {}{t}",
                list(&self.sources),
                self.dim,
                list(&self.targets)
            ),
            ConversionKind::Stack => format!(
                "stack {} along new dim {} into {}{t}",
                list(&self.sources),
                self.dim,
                list(&self.targets)
            ),
            ConversionKind::Unstack => format!(
                "unstack {} along dim {} into {}{t}",
                list(&self.sources),
                self.dim,
                list(&self.targets)
            ),
            ConversionKind::StackOfConcat => format!(
                "stack_of_concat {}: concat groups of {g} along dim {c}, stack along dim {} into {}{t}",
                list(&self.sources),
                self.dim,
                list(&self.targets)
            ),
            ConversionKind::SplitOfUnstack => format!(
                "split_of_unstack {}: unstack along dim {}, split each along dim {c} into groups of {g}: {}{t}",
                list(&self.sources),
                self.dim,
                list(&self.targets)
            ),
        }
    }

    /// Where each part goes, from the shapes of the sources (in op order); the error says
    /// what does not fit.
    pub fn layout(&self, sources: &[Vec<i64>]) -> std::result::Result<Layout, String> {
        let k = self.kind.name();
        let (n_src, n_tgt) = (self.sources.len(), self.targets.len());
        let gathers = self.kind.gathers();
        if gathers && (n_tgt != 1 || n_src < 1) {
            return Err(format!(
                "{k} takes one or more sources and exactly one target, not {n_src} and {n_tgt}"
            ));
        }
        if !gathers && (n_src != 1 || n_tgt < 1) {
            return Err(format!(
                "{k} takes exactly one source and one or more targets, not {n_src} and {n_tgt}"
            ));
        }
        if sources.len() != n_src {
            return Err(format!(
                "{k}: {n_src} sources named, {} shapes given",
                sources.len()
            ));
        }
        let group = |n: usize| -> std::result::Result<(usize, usize), String> {
            let g = self.group_size.ok_or(format!("{k} needs \"group_size\""))?;
            if g == 0 || !n.is_multiple_of(g) {
                return Err(format!("{k}: {n} parts do not make groups of {g}"));
            }
            Ok((g, self.concat_dim.unwrap_or(0)))
        };
        let orient = |p: &[i64], i: usize| -> std::result::Result<Vec<i64>, String> {
            if self.transpose {
                transposed(p, &format!("part {i}"))
            } else {
                Ok(p.to_vec())
            }
        };
        let cut = |whole: &[i64], at: usize, sizes: &[i64]| -> std::result::Result<(), String> {
            if at >= whole.len() {
                return Err(format!("{k}: dim {at} is out of range for shape {whole:?}"));
            }
            if sizes.iter().any(|&s| s < 0) || sizes.iter().sum::<i64>() != whole[at] {
                return Err(format!(
                    "{k}: sizes {sizes:?} do not add up to {} (dim {at} of shape {whole:?})",
                    whole[at]
                ));
            }
            Ok(())
        };
        let mut blocks = vec![];
        let mut parts = vec![];
        let whole;
        match self.kind {
            ConversionKind::Concat | ConversionKind::Stack | ConversionKind::StackOfConcat => {
                let oriented: Vec<Vec<i64>> = sources
                    .iter()
                    .enumerate()
                    .map(|(i, p)| orient(p, i))
                    .collect::<std::result::Result<_, _>>()?;
                parts = sources.to_vec();
                let (g, c, stack_dim) = match self.kind {
                    ConversionKind::Concat => (oriented.len(), self.dim, None),
                    ConversionKind::Stack => (1, 0, Some(self.dim)),
                    _ => {
                        let (g, c) = group(oriented.len())?;
                        (g, c, Some(self.dim))
                    }
                };
                let first = &oriented[0];
                if self.kind != ConversionKind::Stack && c >= first.len() {
                    return Err(format!(
                        "{k}: dim {c} is out of range for parts of shape {first:?}"
                    ));
                }
                // Every group concatenates to the same shape; parts agree off the axis.
                let mut group_shape: Option<Vec<i64>> = None;
                for (gi, chunk) in oriented.chunks(g).enumerate() {
                    let mut s = chunk[0].clone();
                    for (j, p) in chunk.iter().enumerate() {
                        let same_off_axis =
                            p.len() == s.len() && (0..s.len()).all(|d| d == c || p[d] == s[d]);
                        if !same_off_axis {
                            return Err(format!(
                                "{k}: part {} has shape {p:?}, which does not fit {:?} {}",
                                gi * g + j,
                                chunk[0],
                                if g == 1 {
                                    ""
                                } else {
                                    "off the concatenation axis"
                                }
                            ));
                        }
                        if j > 0 {
                            s[c] += p[c];
                        }
                    }
                    match &group_shape {
                        None => group_shape = Some(s),
                        Some(prev) if *prev != s => {
                            return Err(format!(
                                "{k}: parts {}..{} make shape {s:?}, the first ones {prev:?}; stacked parts must agree",
                                gi * g,
                                gi * g + g - 1
                            ))
                        }
                        Some(_) => {}
                    }
                }
                let group_shape = group_shape.unwrap_or_default();
                whole = match stack_dim {
                    None => group_shape.clone(),
                    Some(s) => {
                        if s > group_shape.len() {
                            return Err(format!("{k}: new dim {s} is out of range for parts of shape {group_shape:?}"));
                        }
                        insert(&group_shape, s, (oriented.len() / g) as i64)
                    }
                };
                for (i, p) in oriented.iter().enumerate() {
                    let (gi, j) = (i / g, i % g);
                    let at: i64 = oriented[gi * g..gi * g + j].iter().map(|q| q[c]).sum();
                    let mut off = vec![0i64; p.len()];
                    if g > 1 || stack_dim.is_none() {
                        off[c] = at;
                    }
                    let (b, o) = match stack_dim {
                        None => (p.clone(), off),
                        Some(s) => (insert(p, s, 1), insert(&off, s, gi as i64)),
                    };
                    blocks.push((b, o));
                }
                if let (Some(sizes), ConversionKind::Concat) = (&self.sizes, self.kind) {
                    let got: Vec<i64> = oriented.iter().map(|p| p[c]).collect();
                    if *sizes != got {
                        return Err(format!("concat: \"sizes\" {sizes:?} but the sources have {got:?} along dim {c}"));
                    }
                }
            }
            ConversionKind::Split | ConversionKind::Unstack | ConversionKind::SplitOfUnstack => {
                whole = sources[0].clone();
                let s = self.dim;
                if s >= whole.len() {
                    return Err(format!("{k}: dim {s} is out of range for shape {whole:?}"));
                }
                match self.kind {
                    ConversionKind::Split => {
                        let sizes = self.sizes.as_ref().ok_or("split needs \"sizes\"")?;
                        if sizes.len() != n_tgt {
                            return Err(format!(
                                "split: {} sizes for {n_tgt} targets",
                                sizes.len()
                            ));
                        }
                        cut(&whole, s, sizes)?;
                        let mut at = 0;
                        for &size in sizes {
                            let mut b = whole.clone();
                            b[s] = size;
                            let mut o = vec![0i64; whole.len()];
                            o[s] = at;
                            at += size;
                            blocks.push((b.clone(), o));
                            parts.push(b);
                        }
                    }
                    ConversionKind::Unstack => {
                        if whole[s] != n_tgt as i64 {
                            return Err(format!(
                                "unstack: dim {s} of shape {whole:?} has {} slices for {n_tgt} targets",
                                whole[s]
                            ));
                        }
                        let mut b = whole.clone();
                        b[s] = 1;
                        let mut p = whole.clone();
                        p.remove(s);
                        for e in 0..n_tgt {
                            let mut o = vec![0i64; whole.len()];
                            o[s] = e as i64;
                            blocks.push((b.clone(), o));
                            parts.push(p.clone());
                        }
                    }
                    _ => {
                        let (g, c) = group(n_tgt)?;
                        let sizes = self
                            .sizes
                            .as_ref()
                            .ok_or("split_of_unstack needs \"sizes\" (one per part of a group)")?;
                        if sizes.len() != g {
                            return Err(format!(
                                "split_of_unstack: {} sizes for groups of {g}",
                                sizes.len()
                            ));
                        }
                        let experts = n_tgt / g;
                        if whole[s] != experts as i64 {
                            return Err(format!(
                                "split_of_unstack: dim {s} of shape {whole:?} has {} slices for {experts} groups",
                                whole[s]
                            ));
                        }
                        let mut inner = whole.clone();
                        inner.remove(s);
                        cut(&inner, c, sizes)?;
                        for e in 0..experts {
                            let mut at = 0;
                            for &size in sizes {
                                let mut p = inner.clone();
                                p[c] = size;
                                let mut off = vec![0i64; inner.len()];
                                off[c] = at;
                                at += size;
                                blocks.push((insert(&p, s, 1), insert(&off, s, e as i64)));
                                parts.push(p);
                            }
                        }
                    }
                }
                if self.transpose {
                    parts = parts
                        .iter()
                        .enumerate()
                        .map(|(i, p)| transposed(p, &format!("part {i}")))
                        .collect::<std::result::Result<_, _>>()?;
                }
            }
        }
        Ok(Layout {
            whole,
            blocks,
            parts,
        })
    }
}

/// One mapped source tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingEntry {
    /// The source key, as written in the mapping file (original or normalized name).
    pub source: String,
    /// The target name it is written under.
    pub target: String,
    /// How the data changes, if at all.
    pub transform: Option<Transform>,
}

/// A whole mapping: one-to-one entries in file order, and conversions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapping {
    /// The one-to-one entries, in the order the file lists them.
    pub entries: Vec<MappingEntry>,
    /// The many-to-one and one-to-many ops.
    pub conversions: Vec<Conversion>,
}

/// A mapping entry resolved against a source spec.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedEntry {
    /// Index of the source tensor in the source spec's `tensors`.
    pub source_index: usize,
    /// The target name.
    pub target: String,
    /// The transform, if any.
    pub transform: Option<Transform>,
    /// The shape after the transform.
    pub shape: Vec<i64>,
}

/// A conversion resolved against a source spec: its tensors found, its layout worked out,
/// its dtypes checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedConversion {
    /// The conversion as written.
    pub conversion: Conversion,
    /// Indices of its source tensors in the source spec, in op order.
    pub sources: Vec<usize>,
    /// Where each part sits in the one tensor.
    pub layout: Layout,
    /// The dtype every tensor of the op has.
    pub dtype: String,
}

impl ResolvedConversion {
    /// Shape of each target, in op order.
    pub fn target_shapes(&self) -> Vec<Vec<i64>> {
        if self.conversion.kind.gathers() {
            vec![self.layout.whole.clone()]
        } else {
            self.layout.parts.clone()
        }
    }
}

/// A mapping resolved against a source spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The one-to-one entries.
    pub entries: Vec<ResolvedEntry>,
    /// The conversions.
    pub conversions: Vec<ResolvedConversion>,
}

/// Number of "did you mean" suggestions shown for an unknown key.
const SUGGESTIONS: usize = 3;
/// Smallest normalized similarity (0..1) for a name to be suggested; below this the
/// suggestions are noise.
const SUGGESTION_MIN_SIMILARITY: f64 = 0.5;

/// `"; did you mean 'a', 'b'?"` for the names closest to `key`, or the empty string.
pub fn did_you_mean<'a>(key: &str, names: impl Iterator<Item = &'a str>) -> String {
    let mut scored: Vec<(f64, &str)> = names
        .map(|n| (strsim::normalized_levenshtein(key, n), n))
        .filter(|(s, _)| *s >= SUGGESTION_MIN_SIMILARITY)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored.dedup_by(|a, b| a.1 == b.1);
    if scored.is_empty() {
        return String::new();
    }
    let list: Vec<String> = scored
        .iter()
        .take(SUGGESTIONS)
        .map(|(_, n)| format!("'{n}'"))
        .collect();
    format!("; did you mean {}?", list.join(", "))
}

impl Mapping {
    /// Reads a mapping file (version 2, or the flat or extended form, optionally wrapped in
    /// `{"mapping": ...}`).
    pub fn load(path: &Path) -> Result<Mapping> {
        let value = crate::format::json::read_json(path)?;
        Mapping::from_json(&value).map_err(|message| Error::corrupt(path, "mapping JSON", message))
    }

    /// Parses the JSON of a mapping file; the error says which key is wrong and why.
    pub fn from_json(value: &Value) -> std::result::Result<Mapping, String> {
        if let Some(f) = value.get("format") {
            if f != FORMAT {
                return Err(format!("\"format\" is {f}, expected \"{FORMAT}\""));
            }
            match value.get("version").and_then(Value::as_u64) {
                Some(VERSION) => {}
                Some(v) => {
                    return Err(format!(
                        "version {v}; this weightmap reads version {VERSION} (and the unversioned forms): update weightmap or write the file again with this one's `map -o`"
                    ))
                }
                None => return Err("\"version\" must be a number".into()),
            }
        }
        let object = match value.get("mapping") {
            Some(Value::Object(m)) => m,
            Some(other) if value.get("format").is_some() => {
                return Err(format!("\"mapping\" must be an object, not {other}"))
            }
            _ => value
                .as_object()
                .ok_or("expected an object {source key: target key}")?,
        };
        let mut entries = Vec::with_capacity(object.len());
        for (source, v) in object {
            let (target, transform) = match v {
                Value::Null => continue,
                Value::String(t) => (t.clone(), None),
                Value::Object(o) => {
                    let target = match o.get("target") {
                        Some(Value::String(t)) => t.clone(),
                        Some(Value::Null) | None => continue,
                        Some(other) => return Err(format!("'{source}': \"target\" must be a string, not {other}")),
                    };
                    let transform = match o.get("transform") {
                        None | Some(Value::Null) => None,
                        Some(t) => Some(Transform::from_json(t).map_err(|m| format!("'{source}': {m}"))?),
                    };
                    (target, transform)
                }
                other => {
                    return Err(format!(
                        "'{source}': expected a target name or {{\"target\": ..., \"transform\": ...}}, not {other}"
                    ))
                }
            };
            entries.push(MappingEntry {
                source: source.clone(),
                target,
                transform,
            });
        }
        let conversions = match value.get("conversions") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    serde_json::from_value::<Conversion>(c.clone())
                        .map_err(|e| format!("conversions[{i}]: {e}; kinds: split, concat, stack, unstack, stack_of_concat, split_of_unstack"))
                })
                .collect::<std::result::Result<_, _>>()?,
            Some(other) => return Err(format!("\"conversions\" must be a list, not {other}")),
        };
        Ok(Mapping {
            entries,
            conversions,
        })
    }

    /// The version-2 JSON form (what `map -o` writes).
    pub fn to_json(&self) -> Value {
        let mut map = serde_json::Map::new();
        for e in &self.entries {
            let v = match &e.transform {
                Some(t) => serde_json::json!({"target": e.target, "transform": t.to_json()}),
                None => Value::String(e.target.clone()),
            };
            map.insert(e.source.clone(), v);
        }
        serde_json::json!({
            "format": FORMAT,
            "version": VERSION,
            "mapping": Value::Object(map),
            "conversions": self.conversions,
        })
    }

    /// Every target name the mapping writes, with what writes it: `None` for a
    /// one-to-one entry, the conversion otherwise.
    pub fn targets(&self) -> Vec<(&str, Option<&Conversion>)> {
        let mut out: Vec<(&str, Option<&Conversion>)> = self
            .entries
            .iter()
            .map(|e| (e.target.as_str(), None))
            .collect();
        for c in &self.conversions {
            out.extend(c.targets.iter().map(|t| (t.as_str(), Some(c))));
        }
        out
    }

    /// Checks the mapping against the source (every key exists, transforms and
    /// conversions fit, the parts of a conversion share one dtype) and, when given, the
    /// target (every target name exists, shapes agree). No source may be used twice, no
    /// target written twice. `context` names the mapping (its file) in errors.
    pub fn resolve(
        &self,
        source: &ModelSpec,
        target: Option<&ModelSpec>,
        context: &str,
    ) -> Result<Resolved> {
        // Mapping files may use the names as stored (`module.conv1.weight`) or the
        // normalized ones (`conv1.weight`); stored names win when both exist.
        let by_name = source.written_index();
        let find = |key: &str| -> Result<usize> {
            by_name.get(key).copied().ok_or_else(|| Error::MissingKey {
                context: format!("{context}: source {}", source.path),
                key: key.to_string(),
                hint: did_you_mean(key, source.tensors.iter().map(|t| t.original_name.as_str())),
            })
        };
        // The target likewise: `map` writes target names as written in the target file
        // (`model.embed_tokens.weight` of a `*ForCausalLM`), which a normalized-only index
        // (`embed_tokens.weight`) would not find.
        let target_index: Option<HashMap<&str, &TensorInfo>> = target.map(|t| {
            t.written_index()
                .into_iter()
                .map(|(k, i)| (k, &t.tensors[i]))
                .collect()
        });
        let mut seen_target: HashMap<String, String> = HashMap::new();
        let mut seen_source: HashMap<usize, &str> = HashMap::new();
        let mut use_source = |i: usize, key: &'_ str| -> Result<()> {
            match seen_source.get(&i) {
                Some(prev) => Err(Error::invalid(
                    "mapping",
                    format!(
                        "{context}: '{prev}' and '{key}' are the same source tensor; map it once"
                    ),
                )),
                None => {
                    seen_source.insert(i, source.tensors[i].original_name.as_str());
                    Ok(())
                }
            }
        };
        // Checks a target name and shape; `what` says what writes it.
        let mut use_target = |name: &str, shape: &[i64], what: &str, hint: &str| -> Result<()> {
            if let Some(prev) = seen_target.get(name) {
                return Err(Error::invalid(
                    "mapping",
                    format!("{context}: {prev} and {what} both map to '{name}'; a target name can take one tensor"),
                ));
            }
            if let (Some(index), Some(spec)) = (&target_index, target) {
                let Some(t) = index.get(name) else {
                    return Err(Error::MissingKey {
                        context: format!("{context}: target {}", spec.path),
                        key: name.to_string(),
                        hint: did_you_mean(
                            name,
                            spec.tensors.iter().map(|t| t.original_name.as_str()),
                        ),
                    });
                };
                if t.shape != shape {
                    return Err(Error::Mismatch {
                        context: format!("{context}: {what} -> '{name}'"),
                        message: format!(
                            "it makes shape {shape:?}{hint} but the target expects {:?}; fix the mapping",
                            t.shape
                        ),
                    });
                }
            }
            seen_target.insert(name.to_string(), what.to_string());
            Ok(())
        };
        let mut entries = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let i = find(&e.source)?;
            use_source(i, &e.source)?;
            let tensor = &source.tensors[i];
            let shape = match &e.transform {
                None => tensor.shape.clone(),
                Some(t) => t.output_shape(&tensor.shape).map_err(|m| Error::Mismatch {
                    context: format!("{context}: '{}' -> '{}'", e.source, e.target),
                    message: m,
                })?,
            };
            let hint = match &e.transform {
                Some(tr) => format!(" (source {:?} after {})", tensor.shape, tr.describe()),
                None => format!(
                    " (source shape {:?}; add a transform if it is the same data)",
                    tensor.shape
                ),
            };
            use_target(&e.target, &shape, &format!("'{}'", e.source), &hint)?;
            entries.push(ResolvedEntry {
                source_index: i,
                target: e.target.clone(),
                transform: e.transform.clone(),
                shape,
            });
        }
        let mut conversions = Vec::with_capacity(self.conversions.len());
        for (ci, c) in self.conversions.iter().enumerate() {
            let what = format!(
                "conversion {ci} ({} of '{}')",
                c.kind.name(),
                c.sources.first().map(String::as_str).unwrap_or("")
            );
            let mut idx = Vec::with_capacity(c.sources.len());
            for s in &c.sources {
                let i = find(s)?;
                use_source(i, s)?;
                idx.push(i);
            }
            let shapes: Vec<Vec<i64>> = idx
                .iter()
                .map(|&i| source.tensors[i].shape.clone())
                .collect();
            let layout = c.layout(&shapes).map_err(|m| Error::Mismatch {
                context: format!("{context}: {what}"),
                message: format!(
                    "{m} (source shapes: {})",
                    describe_shapes(&c.sources, &shapes)
                ),
            })?;
            let dtype = source.tensors[idx[0]].dtype.clone();
            if let Some(&j) = idx.iter().find(|&&i| source.tensors[i].dtype != dtype) {
                return Err(Error::Mismatch {
                    context: format!("{context}: {what}"),
                    message: format!(
                        "'{}' is {} but '{}' is {}; the parts of one op must share a dtype",
                        source.tensors[idx[0]].original_name,
                        dtype,
                        source.tensors[j].original_name,
                        source.tensors[j].dtype
                    ),
                });
            }
            let resolved = ResolvedConversion {
                conversion: c.clone(),
                sources: idx,
                layout,
                dtype,
            };
            for (name, shape) in c.targets.iter().zip(resolved.target_shapes()) {
                use_target(name, &shape, &what, "")?;
            }
            conversions.push(resolved);
        }
        Ok(Resolved {
            entries,
            conversions,
        })
    }
}

fn describe_shapes(names: &[String], shapes: &[Vec<i64>]) -> String {
    let all: Vec<String> = names
        .iter()
        .zip(shapes)
        .map(|(n, s)| format!("'{n}' {s:?}"))
        .collect();
    if all.len() <= 4 {
        all.join(", ")
    } else {
        format!("{}, ... ({} tensors)", all[..3].join(", "), all.len())
    }
}

#[cfg(test)]
mod tests;
