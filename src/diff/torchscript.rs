//! Where the tensors of a TorchScript archive are, without loading it through libtorch.
//!
//! `torch.jit.save` writes the module's object graph to `<prefix>/data.pkl` as nested
//! `__torch__.<Class>` objects whose `BUILD` state is a dict of attributes (submodules,
//! parameters, buffers, plain values), and each tensor as `torch._utils._rebuild_tensor_v2`
//! over a storage record `<prefix>/data/<key>`, the same layout as `torch.save`
//! (PyTorch's `torch/csrc/jit/serialization/export_module.cpp`). Walking the attribute
//! dicts gives each dotted state-dict name its storage, offset and strides; the names
//! themselves (and which attributes are parameters or buffers) come from libtorch.

use crate::error::{Error, Result};
use crate::format::pickle::{self, Node, TensorRef, Value};
use crate::format::torch_zip::{self, MAX_DATA_PKL_BYTES};
use crate::spec::{DataLocation, ModelSpec};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;

const FORMAT: &str = "TorchScript archive";

/// Deepest module nesting followed (real models nest a few dozen levels at most).
const MAX_DEPTH: usize = 512;

/// Gives every tensor of `spec` (read from a TorchScript archive) the location of its
/// bytes in the archive's storage records.
///
/// Errors: the archive is damaged, or a tensor the module lists is not in its pickle.
pub(crate) fn locate_tensors(spec: &mut ModelSpec) -> Result<()> {
    let path = Path::new(&spec.path).to_path_buf();
    let corrupt = |m: String| Error::corrupt(&path, FORMAT, m);
    let layout = torch_zip::read_layout(&path)?;
    let data_pkl = {
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let mut zip =
            zip::ZipArchive::new(file).map_err(|e| corrupt(format!("unreadable zip: {e}")))?;
        let name = layout.entry_name("data.pkl");
        let entry = zip
            .by_name(&name)
            .map_err(|e| corrupt(format!("{name}: {e}")))?;
        let mut buf = Vec::new();
        entry
            .take(MAX_DATA_PKL_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(|e| corrupt(format!("{name}: {e}")))?;
        if buf.len() as u64 > MAX_DATA_PKL_BYTES {
            return Err(corrupt(format!(
                "{name} is larger than the {MAX_DATA_PKL_BYTES}-byte limit"
            )));
        }
        buf
    };
    let pickle = pickle::parse(&data_pkl).map_err(|e| corrupt(format!("data.pkl: {e}")))?;
    let tensors = attribute_tensors(&pickle);
    for t in &mut spec.tensors {
        let Some(r) = tensors.get(t.original_name.as_str()) else {
            return Err(corrupt(format!(
                "tensor '{}' is not among the attributes pickled in data.pkl",
                t.original_name
            )));
        };
        if r.shape != t.shape || r.dtype != t.dtype {
            return Err(corrupt(format!(
                "tensor '{}': data.pkl says {} {:?}, the module says {} {:?}",
                t.original_name, r.dtype, r.shape, t.dtype, t.shape
            )));
        }
        // As `torch_zip::TorchArchive::to_spec`: an untyped storage counts in elements
        // of the tensor's own dtype.
        let storage_dtype = if r.storage.storage_type == "UntypedStorage" {
            &r.dtype
        } else {
            &r.storage.dtype
        };
        t.location = Some(DataLocation::TorchStorage {
            key: r.storage.key.clone(),
            storage_dtype: storage_dtype.clone(),
            offset: r.offset,
            stride: r.stride.clone(),
        });
    }
    Ok(())
}

/// Every tensor reachable from the root object through attribute dicts, by dotted path.
/// Each object is visited once (a shared submodule keeps its first path; cycles end).
fn attribute_tensors(p: &pickle::Pickle) -> HashMap<String, &TensorRef> {
    let mut out = HashMap::new();
    let mut seen = HashSet::new();
    let mut stack: Vec<(Value, String, usize)> = vec![(p.root(), String::new(), 0)];
    while let Some((value, prefix, depth)) = stack.pop() {
        if depth > MAX_DEPTH || !seen.insert(node_id(value)) {
            continue;
        }
        let Some(Node::Object(obj)) = p.node(value) else {
            continue;
        };
        let Some(items) = obj.state.and_then(|s| p.dict(s)) else {
            continue;
        };
        // Pushed in reverse so that the walk meets attributes in pickle order.
        for &(k, v) in items.iter().rev() {
            let Some(key) = p.str(k) else { continue };
            let name = format!("{prefix}{key}");
            if let Some(t) = p.tensor(v) {
                out.entry(name).or_insert(t);
            } else if matches!(p.node(v), Some(Node::Object(_))) {
                stack.push((v, format!("{name}."), depth + 1));
            }
        }
    }
    out
}

fn node_id(v: Value) -> Option<u32> {
    match v {
        Value::Node(n) => Some(n),
        _ => None,
    }
}
