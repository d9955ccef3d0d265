//! Mapping files: which source tensor goes to which target name, and how its data
//! changes on the way.
//!
//! Two forms are accepted (the same ones `bench/score.py` accepts):
//! - flat: `{"conv1.weight": "stem.conv.weight", ...}`;
//! - extended, per key: `{"c_attn.weight": {"target": "attn.weight", "transform": "transpose"}}`,
//!   where `transform` is `"transpose"` or `{"reshape": [dims]}`;
//!
//! and either may be wrapped as `{"mapping": {...}}` (what `weightmap map -o` writes, with
//! other report fields beside it). A `null` target means "not mapped".

use crate::error::{Error, Result};
use crate::spec::{ModelSpec, TensorInfo};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// How a tensor's data changes on its way from the source to the target.
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

    /// A short human name (`transpose`, `reshape [768, 3072]`).
    pub fn describe(&self) -> String {
        match self {
            Transform::Transpose => "transpose".into(),
            Transform::Reshape(dims) => format!("reshape {dims:?}"),
        }
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

/// A whole mapping, entries in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    /// The entries, in the order the file lists them.
    pub entries: Vec<MappingEntry>,
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
    /// Reads a mapping file (flat or extended form, optionally wrapped in `{"mapping": ...}`).
    pub fn load(path: &Path) -> Result<Mapping> {
        let value = crate::format::json::read_json(path)?;
        Mapping::from_json(&value).map_err(|message| Error::corrupt(path, "mapping JSON", message))
    }

    /// Parses the JSON of a mapping file; the error says which key is wrong and why.
    pub fn from_json(value: &Value) -> std::result::Result<Mapping, String> {
        let object = match value.get("mapping") {
            Some(Value::Object(m)) => m,
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
                        Some(t) => Some(parse_transform(t).map_err(|m| format!("'{source}': {m}"))?),
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
        Ok(Mapping { entries })
    }

    /// The extended JSON form (`{"mapping": {source: {"target", "transform"}}}`) when any
    /// entry has a transform, else the flat form.
    pub fn to_json(&self) -> Value {
        let extended = self.entries.iter().any(|e| e.transform.is_some());
        let mut map = serde_json::Map::new();
        for e in &self.entries {
            let v = if extended {
                let mut o = serde_json::Map::new();
                o.insert("target".into(), Value::String(e.target.clone()));
                if let Some(t) = &e.transform {
                    o.insert("transform".into(), t.to_json());
                }
                Value::Object(o)
            } else {
                Value::String(e.target.clone())
            };
            map.insert(e.source.clone(), v);
        }
        serde_json::json!({ "mapping": Value::Object(map) })
    }

    /// Checks the mapping against the source (every key exists, transforms fit) and, when
    /// given, the target (every target name exists, shapes agree); no two entries may share
    /// a target. `context` names the mapping (its file) in errors.
    pub fn resolve(
        &self,
        source: &ModelSpec,
        target: Option<&ModelSpec>,
        context: &str,
    ) -> Result<Vec<ResolvedEntry>> {
        // Mapping files may use the names as stored (`module.conv1.weight`) or the
        // normalized ones (`conv1.weight`); stored names win when both exist.
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        for (i, t) in source.tensors.iter().enumerate() {
            by_name.entry(t.name.as_str()).or_insert(i);
        }
        for (i, t) in source.tensors.iter().enumerate() {
            by_name.insert(t.original_name.as_str(), i);
        }
        let target_index: Option<HashMap<&str, &TensorInfo>> =
            target.map(|t| t.tensors.iter().map(|x| (x.name.as_str(), x)).collect());
        let mut seen_target: HashMap<&str, &str> = HashMap::new();
        let mut seen_source: HashMap<usize, &str> = HashMap::new();
        let mut out = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let Some(&i) = by_name.get(e.source.as_str()) else {
                let names = source.tensors.iter().map(|t| t.original_name.as_str());
                return Err(Error::MissingKey {
                    context: format!("{context}: source {}", source.path),
                    key: e.source.clone(),
                    hint: did_you_mean(&e.source, names),
                });
            };
            if let Some(prev) = seen_source.insert(i, &e.source) {
                return Err(Error::invalid(
                    "mapping",
                    format!(
                        "{context}: '{prev}' and '{}' are the same source tensor; map it once",
                        e.source
                    ),
                ));
            }
            if let Some(prev) = seen_target.insert(&e.target, &e.source) {
                return Err(Error::invalid(
                    "mapping",
                    format!(
                        "{context}: '{prev}' and '{}' both map to '{}'; a target name can take one tensor",
                        e.source, e.target
                    ),
                ));
            }
            let tensor = &source.tensors[i];
            let shape = match &e.transform {
                None => tensor.shape.clone(),
                Some(t) => t.output_shape(&tensor.shape).map_err(|m| Error::Mismatch {
                    context: format!("{context}: '{}' -> '{}'", e.source, e.target),
                    message: m,
                })?,
            };
            if let (Some(index), Some(spec)) = (&target_index, target) {
                let Some(t) = index.get(e.target.as_str()) else {
                    return Err(Error::MissingKey {
                        context: format!("{context}: target {}", spec.path),
                        key: e.target.clone(),
                        hint: did_you_mean(&e.target, spec.tensors.iter().map(|t| t.name.as_str())),
                    });
                };
                if t.shape != shape {
                    let how = match &e.transform {
                        Some(tr) => format!(" after {}", tr.describe()),
                        None => String::new(),
                    };
                    return Err(Error::Mismatch {
                        context: format!("{context}: '{}' -> '{}'", e.source, e.target),
                        message: format!(
                            "source shape {:?}{how} is {shape:?} but the target expects {:?}; fix the mapping or add a transform",
                            tensor.shape, t.shape
                        ),
                    });
                }
            }
            out.push(ResolvedEntry {
                source_index: i,
                target: e.target.clone(),
                transform: e.transform.clone(),
                shape,
            });
        }
        Ok(out)
    }
}

fn parse_transform(v: &Value) -> std::result::Result<Transform, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Format;

    fn spec(names: &[(&str, Vec<i64>)]) -> ModelSpec {
        ModelSpec::from_shapes("s.pth", Format::SpecJson, names)
    }

    #[test]
    fn parses_flat_extended_and_wrapped_forms() {
        let flat =
            Mapping::from_json(&serde_json::json!({"a.weight": "b.weight", "skip": null})).unwrap();
        assert_eq!(
            flat.entries,
            vec![MappingEntry {
                source: "a.weight".into(),
                target: "b.weight".into(),
                transform: None
            }]
        );
        let ext = Mapping::from_json(&serde_json::json!({"mapping": {
            "a": {"target": "b", "transform": "transpose"},
            "c": {"target": "d", "transform": {"reshape": [4, -1]}},
            "e": {"target": null}
        }}))
        .unwrap();
        assert_eq!(ext.entries.len(), 2);
        assert_eq!(ext.entries[0].transform, Some(Transform::Transpose));
        assert_eq!(
            ext.entries[1].transform,
            Some(Transform::Reshape(vec![4, -1]))
        );
        assert_eq!(Mapping::from_json(&ext.to_json()).unwrap(), ext);
        assert!(Mapping::from_json(
            &serde_json::json!({"a": {"target": "b", "transform": "flip"}})
        )
        .unwrap_err()
        .contains("flip"));
        assert!(Mapping::from_json(&serde_json::json!(["a"])).is_err());
    }

    #[test]
    fn transform_shapes() {
        assert_eq!(
            Transform::Transpose.output_shape(&[3, 5]).unwrap(),
            vec![5, 3]
        );
        assert!(Transform::Transpose.output_shape(&[3, 5, 1]).is_err());
        assert_eq!(
            Transform::Reshape(vec![8, -1])
                .output_shape(&[8, 4, 1, 1])
                .unwrap(),
            vec![8, 4]
        );
        assert_eq!(
            Transform::Reshape(vec![8, 4, 1, 1])
                .output_shape(&[8, 4])
                .unwrap(),
            vec![8, 4, 1, 1]
        );
        assert!(Transform::Reshape(vec![8, 5])
            .output_shape(&[8, 4])
            .is_err());
        assert!(Transform::Reshape(vec![-1, -1])
            .output_shape(&[8, 4])
            .is_err());
    }

    #[test]
    fn resolve_checks_keys_targets_and_shapes() {
        let mut src = spec(&[("conv1.weight", vec![4, 3]), ("bn1.weight", vec![4])]);
        src.tensors[0].original_name = "module.conv1.weight".into();
        let tgt = spec(&[("stem.weight", vec![3, 4]), ("stem.bn.weight", vec![4])]);
        let m = Mapping::from_json(&serde_json::json!({
            "module.conv1.weight": {"target": "stem.weight", "transform": "transpose"},
            "bn1.weight": "stem.bn.weight"
        }))
        .unwrap();
        let r = m.resolve(&src, Some(&tgt), "m.json").unwrap();
        assert_eq!(r[0].source_index, 0);
        assert_eq!(r[0].shape, vec![3, 4]);

        let unknown =
            Mapping::from_json(&serde_json::json!({"module.conv1.weigth": "stem.weight"})).unwrap();
        let e = unknown
            .resolve(&src, None, "m.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean 'module.conv1.weight'"), "{e}");

        let dup = Mapping::from_json(&serde_json::json!({"conv1.weight": "x", "bn1.weight": "x"}))
            .unwrap();
        assert!(dup
            .resolve(&src, None, "m.json")
            .unwrap_err()
            .to_string()
            .contains("both map to 'x'"));

        let shape =
            Mapping::from_json(&serde_json::json!({"conv1.weight": "stem.weight"})).unwrap();
        let e = shape
            .resolve(&src, Some(&tgt), "m.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("target expects [3, 4]"), "{e}");
    }
}
