//! A pickle reader that executes nothing.
//!
//! `torch.save` writes its object tree (state dicts, Lightning checkpoints, optimizer
//! states, hyper-parameters) as a pickle, `data.pkl`, with tensors as calls to
//! `torch._utils._rebuild_tensor_v2` over *persistent ids* that name storage records of
//! the zip. This module runs the pickle virtual machine for protocols 0–5 on a closed
//! world: it never imports or calls anything. Globals stay names; `REDUCE`/`NEWOBJ`/
//! `BUILD` on unknown classes build opaque [`Object`]s (argparse `Namespace`, Lightning
//! `AttributeDict`, custom classes are tolerated); a handful of known callables are
//! interpreted: `collections.OrderedDict`/`dict` make dicts, and the torch rebuild
//! functions make [`TensorRef`] descriptors (storage key, dtype, offset, shape, stride).
//!
//! Opcode semantics follow CPython's `Lib/pickletools.py` (the opcode table and its
//! docs) and `Lib/pickle.py` (`_Unpickler.load_*`); comments cite them where the
//! behaviour is not obvious.
//!
//! Memory is bounded whatever the input declares ([`Limits`]): counted strings are
//! checked against the bytes that remain before anything is allocated, the stack and
//! the mark stack have caps, and every value the machine keeps (nodes, container items,
//! string occurrences, memo entries) counts against one budget. Containers live in an
//! arena and refer to each other by index, so deeply nested or cyclic pickles neither
//! recurse nor leak; readers of the tree walk it with explicit depth limits.
//!
//! For renaming keys in place (Lightning `.ckpt` files), every string value remembers
//! the byte span of the opcode that pushed it ([`Pickle::string_span`]), and
//! [`rewrite_strings`] re-encodes chosen string opcodes with new text.
//!
//! Files: [`opcodes`] (the opcode table and the byte cursor), [`machine`] (the virtual
//! machine), [`rewrite`] (in-place string edits).

mod machine;
mod opcodes;
mod rewrite;

pub use machine::storage_dtype;
pub use rewrite::{rewrite_strings, Rewrite};

use machine::{Machine, Memo};
pub(crate) use opcodes::op;

use crate::dtype::DType;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::rc::Rc;

/// Largest stack the machine keeps. The CPython pickler batches `APPENDS`/`SETITEMS`
/// by 1000 items and nests marks only as deep as the object tree, so real pickles stay
/// far below this.
pub const MAX_STACK: usize = 1 << 20;

/// Deepest mark stack accepted. Marks nest as deep as the pickled object tree, and
/// Python's pickler stops at its recursion limit (1000 by default) long before this.
pub const MAX_MARKS: usize = 10_000;

/// Most memo entries accepted. `torch.save` memoizes about 8 values a tensor, so this
/// covers checkpoints of several hundred thousand tensors.
pub const MAX_MEMO: usize = 1 << 22;

/// Budget of values the machine may keep: nodes, container items, string occurrences
/// and memo entries each count one. A saved tensor costs about 25, so this covers
/// checkpoints of some 300,000 tensors (optimizer moments included) while keeping the
/// worst case of a hostile pickle to a few hundred MB.
pub const MAX_UNITS: usize = 1 << 23;

/// Highest pickle protocol understood (Python 3.8+ writes at most 5).
pub const HIGHEST_PROTOCOL: u64 = 5;

/// Resource limits of one run of the machine.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest stack (see [`MAX_STACK`]).
    pub max_stack: usize,
    /// Deepest mark stack (see [`MAX_MARKS`]).
    pub max_marks: usize,
    /// Budget of kept values (see [`MAX_UNITS`]).
    pub max_units: usize,
    /// Most memo entries (see [`MAX_MEMO`]).
    pub max_memo: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stack: MAX_STACK,
            max_marks: MAX_MARKS,
            max_units: MAX_UNITS,
            max_memo: MAX_MEMO,
        }
    }
}

/// Why a pickle could not be read: the byte offset of the opcode and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickleError {
    /// Offset of the opcode in the pickle.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pickle byte {}: {}", self.offset, self.message)
    }
}

impl std::error::Error for PickleError {}

type PResult<T> = std::result::Result<T, PickleError>;

fn err<T>(offset: usize, message: impl Into<String>) -> PResult<T> {
    Err(PickleError {
        offset,
        message: message.into(),
    })
}

/// A value of the pickled object tree. Small and `Copy`: containers, objects and
/// tensors are nodes of the [`Pickle`]'s arena, strings are occurrences in its string
/// table, bytes are ranges of the pickle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// An integer too large for 64 bits (its value is not kept).
    BigInt,
    /// A float.
    Float(f64),
    /// A string: an index into the string-occurrence table (see [`Pickle::str`]).
    Str(u32),
    /// A bytes (or bytearray) object: `len` bytes at `start` in the pickle.
    Bytes {
        /// Offset of the first byte in the pickle.
        start: u32,
        /// Number of bytes.
        len: u32,
    },
    /// A node of the arena (see [`Pickle::node`]).
    Node(u32),
}

/// A dict's entries in insertion order (Python dicts keep it; state dicts rely on it).
#[derive(Debug, Clone, Default)]
pub struct Dict {
    entries: Vec<(Value, Value)>,
    /// Position of each string or integer key, to find repeated keys.
    index: HashMap<KeyRepr, usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeyRepr {
    Str(Rc<str>),
    Int(i64),
}

impl Dict {
    /// The entries, in insertion order.
    pub fn entries(&self) -> &[(Value, Value)] {
        &self.entries
    }
}

/// An instance of a class the reader does not interpret: what `REDUCE`, `NEWOBJ`,
/// `NEWOBJ_EX`, `OBJ` or `INST` would have built, with the `BUILD` state and any items
/// added to it (dict and list subclasses).
#[derive(Debug, Clone)]
pub struct Object {
    /// The class or callable (usually a [`Node::Global`]).
    pub class: Value,
    /// The arguments it would have been called with (a tuple).
    pub args: Value,
    /// The state given by `BUILD`, if any (usually a dict of attributes).
    pub state: Option<Value>,
    /// Items set with `SETITEM(S)` (dict subclasses such as `AttributeDict`).
    pub dict: Dict,
    /// Items added with `APPEND(S)` (list subclasses).
    pub list: Vec<Value>,
}

/// A storage record named by a persistent id `('storage', storage_type, key, location,
/// numel)`, as written by `torch.serialization._save` (`persistent_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRef {
    /// The storage class name (`FloatStorage`, `BFloat16Storage`, `UntypedStorage`...).
    pub storage_type: String,
    /// The storage's element type as torch names it (`float32`; `uint8` for untyped).
    pub dtype: String,
    /// The record key: the data is the zip entry `<prefix>/data/<key>`.
    pub key: String,
    /// The device it was saved from (`cpu`, `cuda:0`).
    pub location: String,
    /// Number of elements of the storage (bytes for `UntypedStorage`).
    pub numel: u64,
}

/// A tensor rebuilt by one of torch's `_rebuild_tensor*` functions (and possibly
/// wrapped as an `nn.Parameter`): where its data is and how to view it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    /// The storage it views.
    pub storage: StorageRef,
    /// The tensor's dtype (the storage's, except for `_rebuild_tensor_v3`).
    pub dtype: String,
    /// Offset into the storage, in elements of `dtype`.
    pub offset: u64,
    /// The shape.
    pub shape: Vec<i64>,
    /// The strides, in elements.
    pub stride: Vec<i64>,
    /// `requires_grad` as saved.
    pub requires_grad: bool,
    /// Whether it was saved as an `nn.Parameter` (state dicts save detached tensors, so
    /// this is usually false even for parameters).
    pub parameter: bool,
}

/// A node of the arena.
#[derive(Debug, Clone)]
pub enum Node {
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A set or frozenset.
    Set(Vec<Value>),
    /// A dict or `collections.OrderedDict`.
    Dict(Dict),
    /// A global name (`GLOBAL`/`STACK_GLOBAL`), never imported.
    Global {
        /// The module (`torch._utils`).
        module: String,
        /// The name (`_rebuild_tensor_v2`).
        name: String,
    },
    /// An instance of a class that is not interpreted.
    Object(Box<Object>),
    /// A storage persistent id.
    Storage(Box<StorageRef>),
    /// A tensor.
    Tensor(Box<TensorRef>),
    /// A persistent id other than a storage (kept opaque).
    PersistentId(Value),
}

/// A string literal: the text and the span of the opcode that defined it.
#[derive(Debug, Clone)]
struct Lit {
    text: Rc<str>,
    start: u32,
    end: u32,
}

/// One push of a string onto the stack: by its defining opcode, or again by `GET`/`DUP`.
#[derive(Debug, Clone, Copy)]
struct Occurrence {
    lit: u32,
    start: u32,
    end: u32,
}

/// Where a string value came from in the pickle, for rewriting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringSpan {
    /// Byte span of the opcode that pushed this occurrence (a string opcode, or the
    /// `GET`/`DUP` that fetched it again).
    pub span: Range<usize>,
    /// Whether `span` is the opcode that defined the string (not a memo fetch).
    pub defining: bool,
    /// Whether the same string object is pushed elsewhere too (memoized and fetched
    /// again with `GET`). [`rewrite_strings`] keeps those other uses unchanged.
    pub shared: bool,
}

/// A parsed pickle: the root value and the arena it refers to.
#[derive(Debug, Clone)]
pub struct Pickle {
    root: Value,
    protocol: u64,
    nodes: Vec<Node>,
    lits: Vec<Lit>,
    occurrences: Vec<Occurrence>,
    /// Number of occurrences of each literal (1 when it is never fetched again).
    lit_uses: Vec<u32>,
    frames: usize,
}

impl Pickle {
    /// The value the pickle evaluates to (what `STOP` returned).
    pub fn root(&self) -> Value {
        self.root
    }

    /// The protocol declared by `PROTO` (0 or 1 when absent).
    pub fn protocol(&self) -> u64 {
        self.protocol
    }

    /// Number of `FRAME` opcodes (protocol 4+).
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// The node a [`Value::Node`] refers to.
    pub fn node(&self, value: Value) -> Option<&Node> {
        match value {
            Value::Node(id) => self.nodes.get(id as usize),
            _ => None,
        }
    }

    /// The text of a string value.
    pub fn str(&self, value: Value) -> Option<&str> {
        match value {
            Value::Str(occ) => {
                let o = self.occurrences.get(occ as usize)?;
                Some(&self.lits[o.lit as usize].text)
            }
            _ => None,
        }
    }

    /// Where a string value was pushed, for [`rewrite_strings`].
    pub fn string_span(&self, value: Value) -> Option<StringSpan> {
        let Value::Str(occ) = value else { return None };
        let o = self.occurrences.get(occ as usize)?;
        let lit = &self.lits[o.lit as usize];
        Some(StringSpan {
            span: o.start as usize..o.end as usize,
            defining: (o.start, o.end) == (lit.start, lit.end),
            shared: self.lit_uses[o.lit as usize] > 1,
        })
    }

    /// The entries of a dict value (`dict`, `OrderedDict`), in insertion order.
    pub fn dict(&self, value: Value) -> Option<&[(Value, Value)]> {
        match self.node(value)? {
            Node::Dict(d) => Some(d.entries()),
            _ => None,
        }
    }

    /// The items of a tuple or list value.
    pub fn sequence(&self, value: Value) -> Option<&[Value]> {
        match self.node(value)? {
            Node::Tuple(v) | Node::List(v) => Some(v),
            _ => None,
        }
    }

    /// The tensor a value describes.
    pub fn tensor(&self, value: Value) -> Option<&TensorRef> {
        match self.node(value)? {
            Node::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// The module and name of a global value.
    pub fn global(&self, value: Value) -> Option<(&str, &str)> {
        match self.node(value)? {
            Node::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }

    /// Looks `key` up in a dict value (string keys).
    pub fn dict_get(&self, value: Value, key: &str) -> Option<Value> {
        self.dict(value)?
            .iter()
            .find(|(k, _)| self.str(*k) == Some(key))
            .map(|(_, v)| *v)
    }

    /// A short description of a value's type for messages (`dict`, `list`,
    /// `argparse.Namespace`, `tensor`).
    pub fn type_name(&self, value: Value) -> String {
        match value {
            Value::None => "None".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) | Value::BigInt => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes { .. } => "bytes".into(),
            Value::Node(_) => match self.node(value) {
                Some(Node::Tuple(_)) => "tuple".into(),
                Some(Node::List(_)) => "list".into(),
                Some(Node::Set(_)) => "set".into(),
                Some(Node::Dict(_)) => "dict".into(),
                Some(Node::Global { module, name }) => format!("global {module}.{name}"),
                Some(Node::Object(o)) => match self.global(o.class) {
                    Some((m, n)) => format!("{m}.{n}"),
                    None => "object".into(),
                },
                Some(Node::Storage(_)) => "storage".into(),
                Some(Node::Tensor(_)) => "tensor".into(),
                Some(Node::PersistentId(_)) => "persistent id".into(),
                None => "?".into(),
            },
        }
    }
}

/// Parses `data` with the default [`Limits`].
pub fn parse(data: &[u8]) -> PResult<Pickle> {
    parse_with_limits(data, Limits::default())
}

/// Parses `data`, a pickle, without executing anything.
pub fn parse_with_limits(data: &[u8], limits: Limits) -> PResult<Pickle> {
    if data.len() > u32::MAX as usize {
        return err(
            0,
            format!(
                "{} bytes is larger than the 4 GiB this reader supports",
                data.len()
            ),
        );
    }
    let mut vm = Machine {
        data,
        limits,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Memo::default(),
        units: 0,
        pos: 0,
        p: Pickle {
            root: Value::None,
            protocol: 0,
            nodes: Vec::new(),
            lits: Vec::new(),
            occurrences: Vec::new(),
            lit_uses: Vec::new(),
            frames: 0,
        },
    };
    vm.run()?;
    Ok(vm.p)
}

#[cfg(test)]
mod tests;
