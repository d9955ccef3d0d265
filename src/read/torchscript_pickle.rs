//! A TorchScript archive's tensors read from the archive itself, without libtorch.
//!
//! `torch.jit.save` writes the module's object graph to `<prefix>/data.pkl`: each module is
//! a `__torch__.<qualified.Class>` object whose `BUILD` state is a dict of its attribute
//! slots in the class type's order (submodules, parameters, buffers, plain values), and each
//! tensor is `torch._utils._rebuild_tensor_v2` over a storage record `<prefix>/data/<key>`,
//! as in `torch.save` (PyTorch's `torch/csrc/jit/serialization/pickler.cpp`). Which slots
//! are parameters and which buffers is part of the class type, printed at the top of the
//! class in `<prefix>/code/<qualified/path>.py` (`__parameters__ = ["weight", ]`,
//! `__buffers__ = [...]`, `python_print.cpp`).
//!
//! [`read_header`] puts the two together and lists the tensors exactly as the shim does
//! after `torch::jit::load` (`collect` and `mark_ties` in `libtorch/shim.cpp`): a module's
//! parameters, then its buffers, then its other tensor attributes (not persistent), then
//! each child module; a tensor met again (the same pickled object, or the same storage
//! view) is a tied alias of its first name. Only `data.pkl` and the class headers of the
//! modules it uses are read: no tensor data, no code compiled.

use crate::error::{Error, Result};
use crate::format::pickle::{self, Node, TensorRef, Value};
use crate::format::torch_zip::{self, MAX_DATA_PKL_BYTES};
use crate::spec::{DataLocation, Format, ModelSpec, TensorInfo, TensorKind};
use std::collections::{HashMap, HashSet};
use std::path::Path;

const FORMAT: &str = "TorchScript archive";

/// Deepest module nesting followed (real models nest a few dozen levels at most).
const MAX_DEPTH: usize = 512;

/// Largest source file read for its class headers (as the archive check allows).
const MAX_CODE_BYTES: u64 = super::torchscript_archive::MAX_CODE_BYTES;

/// What the class header of a module says about its slots.
#[derive(Debug, Default)]
struct ClassInfo {
    /// `class Name(Module):` (other classes are script objects, not submodules).
    module: bool,
    parameters: HashSet<String>,
    buffers: HashSet<String>,
}

/// The archive opened for reading its pickles and class headers.
struct Archive<'a> {
    path: &'a Path,
    zip: torch_zip::Zip,
    layout: torch_zip::ArchiveLayout,
    index: HashMap<String, usize>,
    /// The class headers of each source file read, by entry name
    /// (`<prefix>/code/__torch__/torch/nn/modules/linear.py`).
    files: HashMap<String, HashMap<String, ClassInfo>>,
    /// `data.pkl`, when the archive check read it already.
    data_pkl: Option<Vec<u8>>,
}

impl<'a> Archive<'a> {
    fn open(path: &'a Path) -> Result<Archive<'a>> {
        let (zip, layout) = torch_zip::open_layout(path)?;
        let index = layout
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        Ok(Archive {
            path,
            zip,
            layout,
            index,
            files: HashMap::new(),
            data_pkl: None,
        })
    }

    fn corrupt(&self, message: String) -> Error {
        Error::corrupt(self.path, FORMAT, message)
    }

    /// The entry `<prefix>/<rel>`, at most `limit` bytes; `None` when there is none.
    fn entry(&mut self, rel: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let name = self.layout.entry_name(rel);
        self.entry_named(&name, limit)
    }

    /// The entry `name`, at most `limit` bytes; `None` when there is none.
    fn entry_named(&mut self, name: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let Some(&i) = self.index.get(name) else {
            return Ok(None);
        };
        torch_zip::read_entry(&mut self.zip, i, limit)
            .map(Some)
            .map_err(|m| self.corrupt(format!("{name}: {m}")))
    }

    /// The class `module.name`'s header, reading `code/<module as path>.py` once.
    fn class(&mut self, module: &str, name: &str) -> Result<&ClassInfo> {
        let entry = self
            .layout
            .entry_name(&format!("code/{}.py", module.replace('.', "/")));
        if !self.files.contains_key(&entry) {
            let classes = match self.entry_named(&entry, MAX_CODE_BYTES)? {
                Some(code) => class_headers(&String::from_utf8_lossy(&code)),
                None => HashMap::new(),
            };
            self.files.insert(entry.clone(), classes);
        }
        let path = self.path;
        self.files[&entry]
            .get(name)
            .ok_or_else(|| Error::Unsupported {
                path: path.into(),
                message: format!(
                    "class {module}.{name} of data.pkl has no definition in the archive's code/; \
                 load it with libtorch (a weightmap built with the `libtorch` feature does)"
                ),
            })
    }
}

/// The class headers of one printed source file: for each `class Name(Base):` at the start
/// of a line, whether it is a module and its `__parameters__` and `__buffers__` lists.
fn class_headers(code: &str) -> HashMap<String, ClassInfo> {
    let mut out: HashMap<String, ClassInfo> = HashMap::new();
    let mut current: Option<String> = None;
    for line in code.lines() {
        if let Some(rest) = line.strip_prefix("class ") {
            let end = rest.find(['(', ':']).unwrap_or(rest.len());
            let name = rest[..end].trim().to_string();
            let base = rest[end..]
                .strip_prefix('(')
                .and_then(|b| b.split(')').next());
            out.insert(
                name.clone(),
                ClassInfo {
                    module: base.is_some_and(|b| b.trim() == "Module"),
                    ..ClassInfo::default()
                },
            );
            current = Some(name);
            continue;
        }
        if !line.starts_with(' ') && !line.trim().is_empty() {
            current = None;
            continue;
        }
        let Some(info) = current.as_ref().and_then(|c| out.get_mut(c)) else {
            continue;
        };
        let trimmed = line.trim_start();
        // The slot lists come first; methods (and their bodies) end the header.
        if trimmed.starts_with("def ") || trimmed.starts_with('@') {
            current = None;
            continue;
        }
        let (list, names) = if let Some(r) = trimmed.strip_prefix("__parameters__ = [") {
            (&mut info.parameters, r)
        } else if let Some(r) = trimmed.strip_prefix("__buffers__ = [") {
            (&mut info.buffers, r)
        } else {
            continue;
        };
        let names = names.split(']').next().unwrap_or("");
        list.extend(
            names
                .split(',')
                .map(|n| n.trim().trim_matches('"').trim_matches('\''))
                .filter(|n| !n.is_empty())
                .map(str::to_string),
        );
    }
    out
}

/// Reads `<prefix>/data.pkl` of an opened archive.
fn data_pickle(archive: &mut Archive) -> Result<pickle::Pickle> {
    let bytes = match archive.data_pkl.take() {
        Some(bytes) => bytes,
        None => archive
            .entry("data.pkl", MAX_DATA_PKL_BYTES)?
            .ok_or_else(|| archive.corrupt("no data.pkl (the module's attributes)".into()))?,
    };
    pickle::parse(&bytes).map_err(|e| archive.corrupt(format!("data.pkl: {e}")))
}

/// A tensor view: storage key, offset, shape, strides, dtype.
type View<'p> = (&'p str, u64, &'p [i64], &'p [i64], &'p str);

/// One tensor of the module, in the shim's order.
struct Found<'p> {
    name: String,
    tensor: &'p TensorRef,
    node: Option<u32>,
    kind: TensorKind,
    persistent: bool,
}

/// The module's tensors in the shim's order (see the module docs).
fn module_tensors<'p>(archive: &mut Archive, p: &'p pickle::Pickle) -> Result<Vec<Found<'p>>> {
    let mut out = Vec::new();
    // Depth-first, children pushed in reverse so they are visited in slot order.
    let mut stack: Vec<(Value, String, usize)> = vec![(p.root(), String::new(), 0)];
    while let Some((value, prefix, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(archive.corrupt(format!(
                "modules nest more than {MAX_DEPTH} deep at '{prefix}'"
            )));
        }
        let Some(Node::Object(obj)) = p.node(value) else {
            return Err(archive.corrupt(format!(
                "module '{prefix}' is a {} in data.pkl, not a module object",
                p.type_name(value)
            )));
        };
        let Some((module, class)) = p.global(obj.class) else {
            return Err(archive.corrupt(format!("module '{prefix}' has no class in data.pkl")));
        };
        let Some(items) = obj.state.and_then(|s| p.dict(s)) else {
            return Err(Error::Unsupported {
                path: archive.path.into(),
                message: format!(
                    "module '{prefix}' ({module}.{class}) saves its state with __getstate__, \
                     not as attributes; load it with libtorch (a weightmap built with the `libtorch` feature does)"
                ),
            });
        };
        let info = archive.class(module, class)?;
        let join = |key: &str| {
            if prefix.is_empty() {
                key.to_string()
            } else {
                format!("{prefix}.{key}")
            }
        };
        for pass in 0..3 {
            for &(k, v) in items {
                let (Some(key), Some(tensor)) = (p.str(k), p.tensor(v)) else {
                    continue;
                };
                let param = info.parameters.contains(key);
                let buffer = info.buffers.contains(key);
                let wanted = match pass {
                    0 => param,
                    1 => buffer && !param,
                    _ => !param && !buffer,
                };
                if wanted {
                    out.push(Found {
                        name: join(key),
                        tensor,
                        node: node_id(v),
                        kind: if param {
                            TensorKind::Parameter
                        } else {
                            TensorKind::Buffer
                        },
                        persistent: pass != 2,
                    });
                }
            }
        }
        let mut children = Vec::new();
        for &(k, v) in items {
            let (Some(key), Some(Node::Object(child))) = (p.str(k), p.node(v)) else {
                continue;
            };
            let Some((m, c)) = p.global(child.class) else {
                continue;
            };
            if archive.class(m, c).is_ok_and(|i| i.module) {
                children.push((v, join(key), depth + 1));
            }
        }
        stack.extend(children.into_iter().rev());
    }
    Ok(out)
}

/// The location of a tensor's bytes, as `torch_zip::TorchArchive::to_spec` gives it: an
/// untyped storage counts its offset in elements of the tensor's own dtype.
fn location(t: &TensorRef) -> DataLocation {
    let storage_dtype = if t.storage.storage_type == "UntypedStorage" {
        &t.dtype
    } else {
        &t.storage.dtype
    };
    DataLocation::TorchStorage {
        key: t.storage.key.clone(),
        storage_dtype: storage_dtype.clone(),
        offset: t.offset,
        stride: t.stride.clone(),
    }
}

/// Reads the parameters and buffers of the TorchScript archive at `path` from its
/// `data.pkl` and class headers, without libtorch: the same names, order, shapes, dtypes,
/// kinds and ties as `torch.jit.load(path).state_dict()` (plus tensor attributes outside
/// the state dict, not persistent), each with the location of its bytes.
///
/// Errors: the archive is damaged ([`Error::Corrupt`]), or it holds modules this reader
/// cannot follow ([`Error::Unsupported`]: a custom `__getstate__`, a class without code),
/// which libtorch can still load.
pub fn read_header(path: &Path) -> Result<ModelSpec> {
    spec_of(Archive::open(path)?)
}

/// What [`read_header`] gives, for an archive that also passes the bounds check of
/// [`torchscript_archive::check`](super::torchscript_archive::check) (which is run
/// first): one pass over the archive inflates each source file and pickle once, for both.
pub fn read_checked(path: &Path) -> Result<ModelSpec> {
    enum Read {
        Classes(String, HashMap<String, ClassInfo>),
        Data(Vec<u8>),
    }
    let mut archive = Archive::open(path)?;
    let data_name = archive.layout.entry_name("data.pkl");
    let read = super::torchscript_archive::scan(path, |name, bytes| {
        if name == data_name {
            Some(Read::Data(bytes.to_vec()))
        } else if name.ends_with(".py") {
            let classes = class_headers(&String::from_utf8_lossy(bytes));
            Some(Read::Classes(name.to_string(), classes))
        } else {
            None
        }
    })?;
    for r in read {
        match r {
            Read::Classes(name, classes) => {
                archive.files.insert(name, classes);
            }
            Read::Data(bytes) => archive.data_pkl = Some(bytes),
        }
    }
    spec_of(archive)
}

/// The state dict of an opened archive (see [`read_header`]).
fn spec_of(mut archive: Archive) -> Result<ModelSpec> {
    let path = archive.path;
    let p = data_pickle(&mut archive)?;
    let found = module_tensors(&mut archive, &p)?;
    // Ties as the shim marks them: the same tensor object, or the same non-empty view.
    let mut by_node: HashMap<u32, usize> = HashMap::new();
    let mut by_view: HashMap<View, usize> = HashMap::new();
    let mut tensors = Vec::with_capacity(found.len());
    for (i, f) in found.iter().enumerate() {
        let t = f.tensor;
        let view = (t.storage.numel > 0).then_some((
            t.storage.key.as_str(),
            t.offset,
            t.shape.as_slice(),
            t.stride.as_slice(),
            t.dtype.as_str(),
        ));
        let tied = f
            .node
            .and_then(|n| by_node.get(&n))
            .or_else(|| view.and_then(|v| by_view.get(&v)))
            .copied();
        if tied.is_none() {
            if let Some(n) = f.node {
                by_node.insert(n, i);
            }
            if let Some(v) = view {
                by_view.entry(v).or_insert(i);
            }
        }
        let mut info = TensorInfo::new(&f.name, t.shape.clone(), &t.dtype, f.kind, i);
        info.persistent = f.persistent;
        info.tied_to = tied.map(|j| found[j].name.clone());
        info.location = Some(location(t));
        tensors.push(info);
    }
    Ok(ModelSpec::new(
        path.display().to_string(),
        Format::TorchScript,
        tensors,
    ))
}

/// Gives every tensor of `spec` (read from a TorchScript archive by libtorch) the location
/// of its bytes in the archive's storage records.
///
/// Errors: the archive is damaged, or a tensor the module lists is not in its pickle.
pub fn locate_tensors(spec: &mut ModelSpec) -> Result<()> {
    let path = Path::new(&spec.path).to_path_buf();
    let mut archive = Archive::open(&path)?;
    let p = data_pickle(&mut archive)?;
    let tensors = attribute_tensors(&p);
    for t in &mut spec.tensors {
        let Some(r) = tensors.get(t.original_name.as_str()) else {
            return Err(archive.corrupt(format!(
                "tensor '{}' is not among the attributes pickled in data.pkl",
                t.original_name
            )));
        };
        if r.shape != t.shape || r.dtype != t.dtype {
            return Err(archive.corrupt(format!(
                "tensor '{}': data.pkl says {} {:?}, the module says {} {:?}",
                t.original_name, r.dtype, r.shape, t.dtype, t.shape
            )));
        }
        t.location = Some(location(r));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_headers_give_parameters_buffers_and_modules() {
        let code = "class Linear(Module):\n  __parameters__ = [\"weight\", \"bias\", ]\n  __buffers__ = []\n  weight : Tensor\n  def forward(self: __torch__.Linear) -> None:\n    __parameters__ = [\"x\"]\n    return None\nclass BN(Module):\n  __parameters__ = [\"weight\", ]\n  __buffers__ = [\"running_mean\", \"num_batches_tracked\", ]\nclass Point:\n  x : Tensor\n";
        let c = class_headers(code);
        assert!(c["Linear"].module && c["BN"].module && !c["Point"].module);
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
        assert_eq!(c["Linear"].parameters, set(&["weight", "bias"]));
        assert!(c["Linear"].buffers.is_empty());
        assert_eq!(
            c["BN"].buffers,
            set(&["running_mean", "num_batches_tracked"])
        );
    }
}
