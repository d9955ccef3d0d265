//! Model spec JSON: what `weightmap inspect --json` writes, or a list of names, shapes and
//! dtypes written by hand.

use crate::error::{Error, Result};
use crate::spec::{Format, ModelSpec};
use std::path::Path;

/// Reads a model spec JSON (as written by `weightmap inspect --json`, or by hand with at
/// least `tensors: [{name, shape, dtype}]`).
pub fn read_spec_json(path: &Path) -> Result<ModelSpec> {
    let value = crate::format::json::read_json(path)?;
    let tensors = value
        .get("tensors")
        .and_then(|t| t.as_array())
        .ok_or_else(|| Error::corrupt(path, "model spec JSON", "no \"tensors\" list"))?;
    let mut spec = ModelSpec::new(
        path.display().to_string(),
        Format::SpecJson,
        Vec::with_capacity(tensors.len()),
    );
    let mut first_index: std::collections::HashMap<&str, usize> = Default::default();
    for (i, t) in tensors.iter().enumerate() {
        let bad =
            |what: &str| Error::corrupt(path, "model spec JSON", format!("tensors[{i}]: {what}"));
        let name = t
            .get("name")
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad("no \"name\" string"))?;
        let shape = t
            .get("shape")
            .and_then(|v| v.as_array())
            .ok_or_else(|| bad("no \"shape\" list"))?
            .iter()
            .map(|d| {
                d.as_i64()
                    .filter(|&d| d >= 0)
                    .ok_or_else(|| bad("shape entries must be non-negative integers"))
            })
            .collect::<Result<Vec<_>>>()?;
        let numel = crate::spec::checked_numel(&shape).ok_or_else(|| {
            bad(&format!(
                "shape {shape:?} has more elements than a 64-bit count holds"
            ))
        })?;
        if let Some(n) = t.get("numel") {
            if n.as_u64() != Some(numel) {
                return Err(bad(&format!(
                    "\"numel\" is {n} but the shape {shape:?} has {numel} elements; fix or drop it"
                )));
            }
        }
        let dtype = t.get("dtype").and_then(|v| v.as_str()).unwrap_or("float32");
        if crate::spec::dtype_size(dtype) == 0 {
            return Err(bad(&format!(
                "unknown dtype \"{dtype}\"; use a torch dtype name such as float32, bfloat16, int64"
            )));
        }
        if let Some(first) = first_index.insert(name, i) {
            return Err(bad(&format!(
                "the name '{name}' is also tensors[{first}]; each tensor is listed once"
            )));
        }
        let kind = match t.get("kind").and_then(|v| v.as_str()) {
            Some("parameter") => crate::spec::TensorKind::Parameter,
            Some("buffer") => crate::spec::TensorKind::Buffer,
            _ => crate::spec::TensorKind::Unknown,
        };
        let mut info = crate::spec::TensorInfo::new(name, shape, dtype, kind, i);
        if let Some(p) = t.get("persistent").and_then(|v| v.as_bool()) {
            info.persistent = p;
        }
        if let Some(tied) = t.get("tied_to").and_then(|v| v.as_str()) {
            info.tied_to = Some(tied.to_string());
        }
        spec.tensors.push(info);
    }
    Ok(spec)
}
