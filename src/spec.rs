//! The model spec: one description of a model's state dict for every input format.
//!
//! A [`ModelSpec`] lists each tensor (parameter or buffer) with its name, shape, dtype
//! and position, and derives the module structure from the dotted names: the module
//! path and leaf name of each tensor, groups of tensors by module, and the module tree.
//! It serializes to JSON, and that JSON is itself accepted as a model everywhere.

use crate::dtype::DType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The on-disk format a model spec was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// A `torch.save` zip archive (`.pth`, `.pt`, `.bin`, Lightning `.ckpt`).
    TorchZip,
    /// The legacy (pre-1.6) non-zip `torch.save` format.
    TorchLegacy,
    /// A single safetensors file.
    Safetensors,
    /// Sharded safetensors, through `*.safetensors.index.json`.
    SafetensorsSharded,
    /// A TorchScript archive written by `torch.jit.save`.
    TorchScript,
    /// A model spec JSON written by weightmap (`inspect --json`) or by hand.
    SpecJson,
}

impl Format {
    /// The name used in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Format::TorchZip => "torch_zip",
            Format::TorchLegacy => "torch_legacy",
            Format::Safetensors => "safetensors",
            Format::SafetensorsSharded => "safetensors_sharded",
            Format::TorchScript => "torchscript",
            Format::SpecJson => "spec_json",
        }
    }
}

/// Whether a tensor is a learnable parameter or a buffer (running statistics, masks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorKind {
    /// `nn.Parameter`.
    Parameter,
    /// A registered buffer.
    Buffer,
    /// The file does not say (checkpoints store parameters and buffers alike).
    Unknown,
}

/// Where a tensor's bytes live in its file, for the apply stage. Never read to build a spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DataLocation {
    /// A storage record of a `torch.save` zip archive.
    TorchStorage {
        /// The storage key (the record is `<archive>/data/<key>`).
        key: String,
        /// The storage's element type, as torch names it (e.g. `float32`).
        storage_dtype: String,
        /// Offset into the storage, in elements.
        offset: u64,
        /// Strides, in elements.
        stride: Vec<i64>,
    },
    /// A byte range of a safetensors file.
    Safetensors {
        /// The file (a shard, for sharded checkpoints).
        file: String,
        /// Start of the data, in bytes from the beginning of the file.
        start: u64,
        /// End of the data (exclusive), in bytes from the beginning of the file.
        end: u64,
    },
}

/// One tensor of a state dict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorInfo {
    /// The name after wrapper prefixes were stripped (`module.conv1.weight` → `conv1.weight`).
    pub name: String,
    /// The name exactly as written in the file.
    pub original_name: String,
    /// The module path: the name up to the last dot (`layer1.0.conv1`); empty at top level.
    pub module: String,
    /// The leaf name: after the last dot (`weight`, `bias`, `running_mean`).
    pub leaf: String,
    /// The shape.
    pub shape: Vec<i64>,
    /// The dtype, as torch names it (`float32`, `bfloat16`, `int64`, ...).
    pub dtype: String,
    /// Number of elements (the product of the shape; 1 for a scalar).
    pub numel: u64,
    /// Number of module levels above the tensor (`a.b.weight` has depth 2).
    pub depth: usize,
    /// Parameter, buffer, or unknown.
    pub kind: TensorKind,
    /// Position in the file (checkpoints) or registration order (TorchScript), from 0.
    pub position: usize,
    /// False for a non-persistent buffer (listed by the model, absent from its state dict).
    #[serde(default = "default_true")]
    pub persistent: bool,
    /// The name of the first tensor sharing this tensor's storage (tied weights), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tied_to: Option<String>,
    /// Where the bytes are, when the spec was read from a checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<DataLocation>,
}

fn default_true() -> bool {
    true
}

impl TensorInfo {
    /// A tensor named `name` (already normalized) with derived module, leaf, numel and depth.
    pub fn new(
        name: &str,
        shape: Vec<i64>,
        dtype: &str,
        kind: TensorKind,
        position: usize,
    ) -> Self {
        let (module, leaf) = split_name(name);
        TensorInfo {
            name: name.to_string(),
            original_name: name.to_string(),
            module: module.to_string(),
            leaf: leaf.to_string(),
            // Readers refuse shapes whose product overflows (`checked_numel`); saturating
            // here keeps a hand-built spec from wrapping to a small, wrong count.
            numel: shape
                .iter()
                .fold(1u64, |n, &d| n.saturating_mul(d.max(0) as u64)),
            depth: if module.is_empty() {
                0
            } else {
                module.split('.').count()
            },
            shape,
            dtype: dtype.to_string(),
            kind,
            position,
            persistent: true,
            tied_to: None,
            location: None,
        }
    }

    /// Renames the tensor (normalization), keeping `original_name` and re-deriving structure.
    pub fn rename(&mut self, name: &str) {
        let (module, leaf) = split_name(name);
        self.name = name.to_string();
        self.module = module.to_string();
        self.leaf = leaf.to_string();
        self.depth = if module.is_empty() {
            0
        } else {
            module.split('.').count()
        };
    }

    /// Bytes of data, from the dtype's element size.
    pub fn nbytes(&self) -> u64 {
        self.numel.saturating_mul(dtype_size(&self.dtype) as u64)
    }
}

/// The number of elements of `shape`, or `None` when a dimension is negative or the
/// product does not fit torch's 64-bit signed element count (a hostile or corrupt shape
/// whose product would otherwise wrap around to a small, plausible number).
pub fn checked_numel(shape: &[i64]) -> Option<u64> {
    shape
        .iter()
        .try_fold(1i64, |n, &d| if d < 0 { None } else { n.checked_mul(d) })
        .map(|n| n as u64)
}

/// Splits `a.b.weight` into (`a.b`, `weight`).
pub fn split_name(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => ("", name),
    }
}

/// Size in bytes of one element of a torch dtype name; 0 when unknown.
pub fn dtype_size(dtype: &str) -> usize {
    DType::parse(dtype).map_or(0, DType::size)
}

/// A model's state dict, described without tensor data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// The file it was read from, as given.
    pub path: String,
    /// The file's format.
    pub format: Format,
    /// The key of the nested dict chosen as the state dict (`state_dict`, `model`, ...),
    /// or `None` when the file's top level is the state dict.
    #[serde(default)]
    pub state_dict_key: Option<String>,
    /// Other nested dicts that also look like state dicts (choose one with `--state-dict-key`).
    #[serde(default)]
    pub alternatives: Vec<String>,
    /// Wrapper prefixes stripped from every name (`module.`, `_orig_mod.`, ...), outermost first.
    #[serde(default)]
    pub stripped_prefixes: Vec<String>,
    /// The tensors, in file order (checkpoints) or registration order (TorchScript).
    pub tensors: Vec<TensorInfo>,
}

/// The tensors of one module (a layer's weight, bias, running_mean, ...).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModuleGroup {
    /// The module path (`layer1.0.bn1`); empty for top-level tensors.
    pub module: String,
    /// Indices into [`ModelSpec::tensors`], in position order.
    pub tensors: Vec<usize>,
}

/// A node of the module tree.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModuleNode {
    /// The child's own name (`conv1`), empty for the root.
    pub name: String,
    /// The full module path (`layer1.0.conv1`), empty for the root.
    pub path: String,
    /// Indices into [`ModelSpec::tensors`] of the tensors directly in this module.
    pub tensors: Vec<usize>,
    /// Child modules in order of first appearance.
    pub children: Vec<ModuleNode>,
}

impl ModuleNode {
    /// Total number of tensors in this subtree.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
            + self
                .children
                .iter()
                .map(|c| c.tensor_count())
                .sum::<usize>()
    }
}

impl ModelSpec {
    /// A spec of `tensors` read from `path` in `format`: the top-level state dict, no
    /// alternatives, no prefixes stripped.
    pub fn new(path: impl Into<String>, format: Format, tensors: Vec<TensorInfo>) -> ModelSpec {
        ModelSpec {
            path: path.into(),
            format,
            state_dict_key: None,
            alternatives: vec![],
            stripped_prefixes: vec![],
            tensors,
        }
    }

    /// A spec described by names and shapes alone (float32, kind unknown, in the order
    /// given): a model written down in code, as a model spec JSON is on disk.
    pub fn from_shapes(
        path: impl Into<String>,
        format: Format,
        tensors: &[(&str, Vec<i64>)],
    ) -> ModelSpec {
        let tensors = tensors
            .iter()
            .enumerate()
            .map(|(i, (name, shape))| {
                TensorInfo::new(name, shape.clone(), "float32", TensorKind::Unknown, i)
            })
            .collect();
        ModelSpec::new(path, format, tensors)
    }

    /// Tensors grouped by module, groups in order of their first tensor.
    pub fn groups(&self) -> Vec<ModuleGroup> {
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        let mut groups: Vec<ModuleGroup> = Vec::new();
        for (i, t) in self.tensors.iter().enumerate() {
            let g = *index.entry(t.module.as_str()).or_insert_with(|| {
                groups.push(ModuleGroup {
                    module: t.module.clone(),
                    tensors: Vec::new(),
                });
                groups.len() - 1
            });
            groups[g].tensors.push(i);
        }
        groups
    }

    /// The module tree built from the dotted names, children in order of first appearance.
    pub fn module_tree(&self) -> ModuleNode {
        // Built in an arena with a (parent, child name) index, so that wide modules (256
        // experts, or thousands of top-level modules) cost O(1) per lookup, not O(children).
        let mut arena = vec![ModuleNode {
            name: String::new(),
            path: String::new(),
            tensors: vec![],
            children: vec![],
        }];
        let mut kids: Vec<Vec<usize>> = vec![vec![]];
        let mut index: std::collections::HashMap<(usize, &str), usize> =
            std::collections::HashMap::new();
        for (i, t) in self.tensors.iter().enumerate() {
            let mut node = 0;
            if !t.module.is_empty() {
                for part in t.module.split('.') {
                    node = match index.get(&(node, part)) {
                        Some(&c) => c,
                        None => {
                            let parent = &arena[node].path;
                            let path = if parent.is_empty() {
                                part.to_string()
                            } else {
                                format!("{parent}.{part}")
                            };
                            arena.push(ModuleNode {
                                name: part.to_string(),
                                path,
                                tensors: vec![],
                                children: vec![],
                            });
                            kids.push(vec![]);
                            let c = arena.len() - 1;
                            kids[node].push(c);
                            index.insert((node, part), c);
                            c
                        }
                    };
                }
            }
            arena[node].tensors.push(i);
        }
        // Children were created after their parents: assemble bottom-up.
        let mut built: Vec<Option<ModuleNode>> = arena.into_iter().map(Some).collect();
        for n in (0..built.len()).rev() {
            let children: Vec<ModuleNode> =
                kids[n].iter().filter_map(|&c| built[c].take()).collect();
            if let Some(node) = built[n].as_mut() {
                node.children = children;
            }
        }
        built[0].take().unwrap_or(ModuleNode {
            name: String::new(),
            path: String::new(),
            tensors: vec![],
            children: vec![],
        })
    }

    /// Index of the tensor named `name` (normalized name).
    pub fn find(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
    }

    /// Every tensor by the names a user may write for it: the name as written in its
    /// file (what `map -o` writes and `load_state_dict` expects), and the normalized name
    /// (wrapper prefixes stripped) where no tensor is written that way. One notion of
    /// "the names as written" for mapping files, pins and rules on either side.
    pub fn written_index(&self) -> std::collections::HashMap<&str, usize> {
        let mut index = std::collections::HashMap::with_capacity(2 * self.tensors.len());
        for (i, t) in self.tensors.iter().enumerate() {
            index.entry(t.name.as_str()).or_insert(i);
        }
        for (i, t) in self.tensors.iter().enumerate() {
            index.insert(t.original_name.as_str(), i);
        }
        index
    }

    /// Total elements over all tensors.
    pub fn total_elements(&self) -> u64 {
        self.tensors.iter().map(|t| t.numel).sum()
    }
}
