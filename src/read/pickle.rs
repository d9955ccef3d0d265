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

// Opcodes, named as in pickletools.py.
mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const FLOAT: u8 = b'F';
    pub const INT: u8 = b'I';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const LONG: u8 = b'L';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const PERSID: u8 = b'P';
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const STRING: u8 = b'S';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const UNICODE: u8 = b'V';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const GET: u8 = b'g';
    pub const BINGET: u8 = b'h';
    pub const INST: u8 = b'i';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const OBJ: u8 = b'o';
    pub const PUT: u8 = b'p';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const BINFLOAT: u8 = b'G';
    // Protocol 2.
    pub const PROTO: u8 = 0x80;
    pub const NEWOBJ: u8 = 0x81;
    pub const EXT1: u8 = 0x82;
    pub const EXT2: u8 = 0x83;
    pub const EXT4: u8 = 0x84;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    // Protocol 3.
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    // Protocol 4.
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const EMPTY_SET: u8 = 0x8f;
    pub const ADDITEMS: u8 = 0x90;
    pub const FROZENSET: u8 = 0x91;
    pub const NEWOBJ_EX: u8 = 0x92;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
    // Protocol 5.
    pub const BYTEARRAY8: u8 = 0x96;
    pub const NEXT_BUFFER: u8 = 0x97;
    pub const READONLY_BUFFER: u8 = 0x98;
}

/// The decoded argument of one opcode.
#[derive(Debug, Clone, Copy)]
enum Arg<'a> {
    None,
    /// BININT, BININT1, BININT2.
    Int(i64),
    /// Memo indices, PROTO, FRAME lengths, EXT codes.
    Index(u64),
    /// The payload of a counted string/bytes/long opcode.
    Data(&'a [u8]),
    /// A newline-terminated argument (protocol 0), without the newline.
    Line(&'a [u8]),
    /// Two lines (GLOBAL, INST).
    Lines(&'a [u8], &'a [u8]),
    /// BINFLOAT.
    Float(f64),
}

/// One decoded opcode: its code, span and argument.
#[derive(Debug, Clone, Copy)]
struct Op<'a> {
    code: u8,
    start: usize,
    end: usize,
    arg: Arg<'a>,
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    start: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64) -> PResult<&'a [u8]> {
        let remaining = (self.data.len() - self.pos) as u64;
        if n > remaining {
            return err(
                self.start,
                format!("opcode 0x{:02x} declares {n} bytes but only {remaining} remain (truncated or corrupt pickle)", self.data[self.start]),
            );
        }
        let s = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }
    fn u8(&mut self) -> PResult<u64> {
        Ok(self.take(1)?[0] as u64)
    }
    fn u16(&mut self) -> PResult<u64> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as u64)
    }
    fn u32(&mut self) -> PResult<u64> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64)
    }
    fn i32(&mut self) -> PResult<i64> {
        let b = self.take(4)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
    }
    fn u64(&mut self) -> PResult<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn line(&mut self) -> PResult<&'a [u8]> {
        match self.data[self.pos..].iter().position(|&b| b == b'\n') {
            Some(n) => {
                let s = &self.data[self.pos..self.pos + n];
                self.pos += n + 1;
                Ok(s)
            }
            None => err(
                self.start,
                "text argument without a terminating newline (truncated pickle)",
            ),
        }
    }
    fn counted_i32(&mut self) -> PResult<&'a [u8]> {
        let n = self.i32()?;
        if n < 0 {
            return err(self.start, format!("negative length {n}"));
        }
        self.take(n as u64)
    }
}

/// Decodes the opcode at `pos`.
fn read_op(data: &[u8], pos: usize) -> PResult<Op<'_>> {
    use op::*;
    let Some(&code) = data.get(pos) else {
        return err(pos, "pickle ends without STOP (truncated)");
    };
    let mut c = Cursor {
        data,
        pos: pos + 1,
        start: pos,
    };
    let arg = match code {
        MARK | STOP | POP | POP_MARK | DUP | NONE | NEWTRUE | NEWFALSE | EMPTY_DICT | EMPTY_LIST
        | EMPTY_TUPLE | EMPTY_SET | APPEND | APPENDS | LIST | TUPLE | TUPLE1 | TUPLE2 | TUPLE3
        | DICT | SETITEM | SETITEMS | ADDITEMS | FROZENSET | STACK_GLOBAL | REDUCE | BUILD | OBJ
        | NEWOBJ | NEWOBJ_EX | BINPERSID | MEMOIZE | NEXT_BUFFER | READONLY_BUFFER => Arg::None,
        BININT => Arg::Int(c.i32()?),
        BININT1 => Arg::Int(c.u8()? as i64),
        BININT2 => Arg::Int(c.u16()? as i64),
        LONG1 => {
            let n = c.u8()?;
            Arg::Data(c.take(n)?)
        }
        LONG4 => Arg::Data(c.counted_i32()?),
        INT | LONG | FLOAT | STRING | UNICODE | PERSID | GET | PUT => Arg::Line(c.line()?),
        GLOBAL | INST => {
            let a = c.line()?;
            Arg::Lines(a, c.line()?)
        }
        BINFLOAT => {
            let b = c.take(8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            // pickletools: "float stored in binary form, with 8 bytes, big-endian".
            Arg::Float(f64::from_be_bytes(a))
        }
        BINSTRING => Arg::Data(c.counted_i32()?),
        SHORT_BINSTRING | SHORT_BINUNICODE | SHORT_BINBYTES => {
            let n = c.u8()?;
            Arg::Data(c.take(n)?)
        }
        BINUNICODE | BINBYTES => {
            let n = c.u32()?;
            Arg::Data(c.take(n)?)
        }
        BINUNICODE8 | BINBYTES8 | BYTEARRAY8 => {
            let n = c.u64()?;
            Arg::Data(c.take(n)?)
        }
        BINGET | BINPUT | PROTO | EXT1 => Arg::Index(c.u8()?),
        EXT2 => Arg::Index(c.u16()?),
        LONG_BINGET | LONG_BINPUT | EXT4 => Arg::Index(c.u32()?),
        FRAME => Arg::Index(c.u64()?),
        _ => return err(pos, format!("unknown opcode 0x{code:02x} (not a pickle, or a newer protocol than {HIGHEST_PROTOCOL})")),
    };
    Ok(Op {
        code,
        start: pos,
        end: c.pos,
        arg,
    })
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

/// The memo: dense indices (what picklers write: 0, 1, 2, ...) in a vector, any others
/// in a map.
#[derive(Default)]
struct Memo {
    dense: Vec<Value>,
    sparse: HashMap<u64, Value>,
}

impl Memo {
    /// Stores `v` at `index`; returns whether the index was already in use.
    fn put(&mut self, index: u64, v: Value) -> bool {
        let len = self.dense.len() as u64;
        if index < len {
            self.dense[index as usize] = v;
            true
        } else if index == len {
            let existed = self.sparse.remove(&index).is_some();
            self.dense.push(v);
            // Later indices may already be in the map: move them over.
            while let Some(next) = self.sparse.remove(&(self.dense.len() as u64)) {
                self.dense.push(next);
            }
            existed
        } else {
            self.sparse.insert(index, v).is_some()
        }
    }

    fn get(&self, index: u64) -> Option<Value> {
        match self.dense.get(index as usize) {
            Some(&v) => Some(v),
            None => self.sparse.get(&index).copied(),
        }
    }

    /// Number of entries (pickle.py's `len(self.memo)`, used by MEMOIZE).
    fn len(&self) -> usize {
        self.dense.len() + self.sparse.len()
    }
}

struct Machine<'a> {
    data: &'a [u8],
    limits: Limits,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: Memo,
    units: usize,
    /// Start of the opcode being executed, for errors.
    pos: usize,
    p: Pickle,
}

impl<'a> Machine<'a> {
    fn fail<T>(&self, message: impl Into<String>) -> PResult<T> {
        err(self.pos, message)
    }

    fn charge(&mut self, n: usize) -> PResult<()> {
        self.units += n;
        if self.units > self.limits.max_units {
            return self.fail(format!(
                "the pickle builds more than {} values (memo entries, containers, items); refusing to go on",
                self.limits.max_units
            ));
        }
        Ok(())
    }

    fn push(&mut self, v: Value) -> PResult<()> {
        if self.stack.len() >= self.limits.max_stack {
            return self.fail(format!(
                "stack deeper than {} values",
                self.limits.max_stack
            ));
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> PResult<Value> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return self.fail("pops past a MARK");
        }
        match self.stack.pop() {
            Some(v) => Ok(v),
            None => self.fail("stack underflow"),
        }
    }

    fn top(&self) -> PResult<Value> {
        match self.stack.last() {
            Some(&v) if self.marks.last().is_none_or(|&m| m < self.stack.len()) => Ok(v),
            _ => self.fail("needs a value on the stack"),
        }
    }

    fn pop_mark(&mut self) -> PResult<Vec<Value>> {
        let Some(m) = self.marks.pop() else {
            return self.fail("no MARK to pop to");
        };
        Ok(self.stack.split_off(m))
    }

    fn new_node(&mut self, node: Node) -> PResult<Value> {
        self.charge(1)?;
        self.p.nodes.push(node);
        Ok(Value::Node((self.p.nodes.len() - 1) as u32))
    }

    fn new_str(&mut self, op: &Op, text: String) -> PResult<Value> {
        self.charge(2)?;
        let (start, end) = (op.start as u32, op.end as u32);
        self.p.lits.push(Lit {
            text: text.into(),
            start,
            end,
        });
        self.p.lit_uses.push(1);
        self.p.occurrences.push(Occurrence {
            lit: (self.p.lits.len() - 1) as u32,
            start,
            end,
        });
        Ok(Value::Str((self.p.occurrences.len() - 1) as u32))
    }

    /// A value pushed again by `GET`/`DUP`: strings get a new occurrence at this opcode.
    fn again(&mut self, op: &Op, v: Value) -> PResult<Value> {
        if let Value::Str(occ) = v {
            self.charge(1)?;
            let lit = self.p.occurrences[occ as usize].lit;
            self.p.lit_uses[lit as usize] += 1;
            self.p.occurrences.push(Occurrence {
                lit,
                start: op.start as u32,
                end: op.end as u32,
            });
            return Ok(Value::Str((self.p.occurrences.len() - 1) as u32));
        }
        Ok(v)
    }

    fn memo_put(&mut self, index: u64) -> PResult<()> {
        let v = self.top()?;
        if !self.memo.put(index, v) {
            if self.memo.len() > self.limits.max_memo {
                return self.fail(format!(
                    "more than {} memo entries; refusing to go on",
                    self.limits.max_memo
                ));
            }
            self.charge(1)?;
        }
        Ok(())
    }

    fn memo_get(&self, index: u64) -> PResult<Value> {
        match self.memo.get(index) {
            Some(v) => Ok(v),
            None => self.fail(format!("memo index {index} was never stored")),
        }
    }

    fn line_str(&self, line: &[u8]) -> String {
        String::from_utf8_lossy(line).into_owned()
    }

    fn run(&mut self) -> PResult<()> {
        use op::*;
        let data = self.data;
        let mut pos = 0;
        loop {
            let o = read_op(data, pos)?;
            self.pos = o.start;
            pos = o.end;
            match (o.code, o.arg) {
                (PROTO, Arg::Index(v)) => {
                    if v > HIGHEST_PROTOCOL {
                        return self.fail(format!("pickle protocol {v} is newer than {HIGHEST_PROTOCOL}"));
                    }
                    self.p.protocol = v;
                }
                // PEP 3154: a frame only groups opcodes for buffered reading; the whole
                // pickle is in memory, so check the length is plausible and read on.
                (FRAME, Arg::Index(n)) => {
                    if n > (data.len() - pos) as u64 {
                        return self.fail(format!("FRAME declares {n} bytes but only {} remain (truncated)", data.len() - pos));
                    }
                    self.p.frames += 1;
                }
                (STOP, _) => {
                    let v = self.pop()?;
                    self.p.root = v;
                    return Ok(());
                }
                (MARK, _) => {
                    if self.marks.len() >= self.limits.max_marks {
                        return self.fail(format!("MARKs nested deeper than {} (a recursion bomb?)", self.limits.max_marks));
                    }
                    self.marks.push(self.stack.len());
                }
                // pickle.py load_pop: pops the top item, or the mark if the stack is at it.
                (POP, _) => {
                    if self.marks.last().is_some_and(|&m| m == self.stack.len()) {
                        self.marks.pop();
                    } else {
                        self.pop()?;
                    }
                }
                (POP_MARK, _) => {
                    self.pop_mark()?;
                }
                (DUP, _) => {
                    let v = self.top()?;
                    let v = self.again(&o, v)?;
                    self.push(v)?;
                }
                (NONE, _) => self.push(Value::None)?,
                (NEWTRUE, _) => self.push(Value::Bool(true))?,
                (NEWFALSE, _) => self.push(Value::Bool(false))?,
                (BININT | BININT1 | BININT2, Arg::Int(v)) => self.push(Value::Int(v))?,
                // pickletools INT: "01"/"00" are protocol 0's True/False.
                (INT, Arg::Line(l)) => {
                    let v = match l {
                        b"01" => Value::Bool(true),
                        b"00" => Value::Bool(false),
                        _ => parse_int_text(l),
                    };
                    self.push(v)?
                }
                (LONG, Arg::Line(l)) => {
                    let l = l.strip_suffix(b"L").unwrap_or(l);
                    let v = parse_int_text(l);
                    self.push(v)?
                }
                // pickletools LONG1/LONG4: little-endian two's complement.
                (LONG1 | LONG4, Arg::Data(b)) => self.push(decode_long(b))?,
                (FLOAT, Arg::Line(l)) => {
                    let v = std::str::from_utf8(l).ok().and_then(|s| s.trim().parse::<f64>().ok());
                    match v {
                        Some(f) => self.push(Value::Float(f))?,
                        None => return self.fail("FLOAT argument is not a number"),
                    }
                }
                (BINFLOAT, Arg::Float(f)) => self.push(Value::Float(f))?,
                // Python 2 str (protocol 0 quoted repr; BINSTRING raw bytes): torch.load
                // decodes them as text, so they are strings here too.
                (STRING, Arg::Line(l)) => {
                    let inner = l
                        .strip_prefix(b"'")
                        .and_then(|s| s.strip_suffix(b"'"))
                        .or_else(|| l.strip_prefix(b"\"").and_then(|s| s.strip_suffix(b"\"")))
                        .unwrap_or(l);
                    let s = self.line_str(inner);
                    let v = self.new_str(&o, s)?;
                    self.push(v)?
                }
                (UNICODE, Arg::Line(l)) => {
                    let s = decode_raw_unicode_escape(l);
                    let v = self.new_str(&o, s)?;
                    self.push(v)?
                }
                (BINSTRING | SHORT_BINSTRING | BINUNICODE | SHORT_BINUNICODE | BINUNICODE8, Arg::Data(b)) => {
                    let s = String::from_utf8_lossy(b).into_owned();
                    let v = self.new_str(&o, s)?;
                    self.push(v)?
                }
                (BINBYTES | SHORT_BINBYTES | BINBYTES8 | BYTEARRAY8, Arg::Data(b)) => {
                    let start = (o.end - b.len()) as u32;
                    self.push(Value::Bytes { start, len: b.len() as u32 })?
                }
                (EMPTY_LIST, _) => {
                    let v = self.new_node(Node::List(Vec::new()))?;
                    self.push(v)?
                }
                (EMPTY_TUPLE, _) => {
                    let v = self.new_node(Node::Tuple(Vec::new()))?;
                    self.push(v)?
                }
                (EMPTY_DICT, _) => {
                    let v = self.new_node(Node::Dict(Dict::default()))?;
                    self.push(v)?
                }
                (EMPTY_SET, _) => {
                    let v = self.new_node(Node::Set(Vec::new()))?;
                    self.push(v)?
                }
                (APPEND, _) => {
                    let v = self.pop()?;
                    let target = self.top()?;
                    self.extend(target, vec![v])?;
                }
                (APPENDS, _) => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.extend(target, items)?;
                }
                (LIST, _) => {
                    let items = self.pop_mark()?;
                    self.charge(items.len())?;
                    let v = self.new_node(Node::List(items))?;
                    self.push(v)?
                }
                (TUPLE, _) => {
                    let items = self.pop_mark()?;
                    self.charge(items.len())?;
                    let v = self.new_node(Node::Tuple(items))?;
                    self.push(v)?
                }
                (TUPLE1 | TUPLE2 | TUPLE3, _) => {
                    let n = (o.code - TUPLE1 + 1) as usize;
                    let mut items = vec![Value::None; n];
                    for slot in items.iter_mut().rev() {
                        *slot = self.pop()?;
                    }
                    self.charge(n)?;
                    let v = self.new_node(Node::Tuple(items))?;
                    self.push(v)?
                }
                (DICT, _) => {
                    let items = self.pop_mark()?;
                    let v = self.new_node(Node::Dict(Dict::default()))?;
                    self.set_items(v, items)?;
                    self.push(v)?
                }
                (SETITEM, _) => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    let target = self.top()?;
                    self.set_items(target, vec![key, value])?;
                }
                (SETITEMS, _) => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.set_items(target, items)?;
                }
                (ADDITEMS, _) => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.charge(items.len())?;
                    match self.node_mut(target) {
                        Some(Node::Set(s)) => s.extend(items),
                        Some(Node::Object(obj)) => obj.list.extend(items),
                        _ => return self.fail("ADDITEMS to something that is not a set"),
                    }
                }
                (FROZENSET, _) => {
                    let items = self.pop_mark()?;
                    self.charge(items.len())?;
                    let v = self.new_node(Node::Set(items))?;
                    self.push(v)?
                }
                (GLOBAL, Arg::Lines(m, n)) => {
                    let (module, name) = (self.line_str(m), self.line_str(n));
                    let v = self.new_node(Node::Global { module, name })?;
                    self.push(v)?
                }
                // pickletools STACK_GLOBAL: pops name, then module (both str).
                (STACK_GLOBAL, _) => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(module), Some(name)) = (self.p.str(module), self.p.str(name)) else {
                        return self.fail("STACK_GLOBAL needs two strings");
                    };
                    let node = Node::Global { module: module.to_string(), name: name.to_string() };
                    let v = self.new_node(node)?;
                    self.push(v)?
                }
                (REDUCE, _) => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.reduce(callable, args, 0)?;
                    self.push(v)?
                }
                (BUILD, _) => {
                    let state = self.pop()?;
                    let target = self.top()?;
                    self.build(target, state)?;
                }
                // pickle.py load_inst: class from the two lines, args from the mark.
                (INST, Arg::Lines(m, n)) => {
                    let items = self.pop_mark()?;
                    let (module, name) = (self.line_str(m), self.line_str(n));
                    let class = self.new_node(Node::Global { module, name })?;
                    self.charge(items.len())?;
                    let args = self.new_node(Node::Tuple(items))?;
                    let v = self.instantiate(class, args)?;
                    self.push(v)?
                }
                // pickle.py load_obj: the class is the first item after the mark.
                (OBJ, _) => {
                    let mut items = self.pop_mark()?;
                    if items.is_empty() {
                        return self.fail("OBJ without a class");
                    }
                    let class = items.remove(0);
                    self.charge(items.len())?;
                    let args = self.new_node(Node::Tuple(items))?;
                    let v = self.instantiate(class, args)?;
                    self.push(v)?
                }
                (NEWOBJ, _) => {
                    let args = self.pop()?;
                    let class = self.pop()?;
                    let v = self.instantiate(class, args)?;
                    self.push(v)?
                }
                (NEWOBJ_EX, _) => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let class = self.pop()?;
                    let v = self.instantiate(class, args)?;
                    self.push(v)?
                }
                (PERSID, Arg::Line(l)) => {
                    let s = self.line_str(l);
                    let pid = self.new_str(&o, s)?;
                    let v = self.persistent_load(pid)?;
                    self.push(v)?
                }
                (BINPERSID, _) => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(pid)?;
                    self.push(v)?
                }
                (GET, Arg::Line(l)) => {
                    let Some(i) = std::str::from_utf8(l).ok().and_then(|s| s.trim().parse::<u64>().ok()) else {
                        return self.fail("GET index is not a number");
                    };
                    let v = self.memo_get(i)?;
                    let v = self.again(&o, v)?;
                    self.push(v)?
                }
                (BINGET | LONG_BINGET, Arg::Index(i)) => {
                    let v = self.memo_get(i)?;
                    let v = self.again(&o, v)?;
                    self.push(v)?
                }
                (PUT, Arg::Line(l)) => {
                    let Some(i) = std::str::from_utf8(l).ok().and_then(|s| s.trim().parse::<u64>().ok()) else {
                        return self.fail("PUT index is not a number");
                    };
                    self.memo_put(i)?
                }
                (BINPUT | LONG_BINPUT, Arg::Index(i)) => self.memo_put(i)?,
                // pickle.py load_memoize: memo[len(memo)] = top of stack.
                (MEMOIZE, _) => {
                    let i = self.memo.len() as u64;
                    self.memo_put(i)?
                }
                (EXT1 | EXT2 | EXT4, _) => {
                    return self.fail("extension-registry opcodes (EXT1/2/4, copyreg.add_extension) are not supported")
                }
                (NEXT_BUFFER, _) => {
                    return self.fail("out-of-band buffers (protocol 5 NEXT_BUFFER) are not supported: the pickle needs buffers that are not in the file")
                }
                // Marks the buffer on the stack read-only; nothing to do for a reader.
                (READONLY_BUFFER, _) => {
                    self.top()?;
                }
                _ => return self.fail(format!("malformed opcode 0x{:02x}", o.code)),
            }
        }
    }

    fn node_mut(&mut self, v: Value) -> Option<&mut Node> {
        match v {
            Value::Node(id) => self.p.nodes.get_mut(id as usize),
            _ => None,
        }
    }

    fn extend(&mut self, target: Value, items: Vec<Value>) -> PResult<()> {
        self.charge(items.len())?;
        match self.node_mut(target) {
            Some(Node::List(l)) => l.extend(items),
            // pickle.py load_appends: list subclasses and objects with extend/append.
            Some(Node::Object(obj)) => obj.list.extend(items),
            _ => return self.fail("APPEND to something that is not a list"),
        }
        Ok(())
    }

    fn key_repr(&self, key: Value) -> Option<KeyRepr> {
        match key {
            Value::Str(occ) => {
                let lit = self.p.occurrences[occ as usize].lit;
                Some(KeyRepr::Str(self.p.lits[lit as usize].text.clone()))
            }
            Value::Int(i) => Some(KeyRepr::Int(i)),
            Value::Bool(b) => Some(KeyRepr::Int(b as i64)),
            _ => None,
        }
    }

    /// `d[k] = v` for each pair: a repeated key keeps its first position and takes the
    /// last value, as Python dicts do.
    fn set_items(&mut self, target: Value, items: Vec<Value>) -> PResult<()> {
        if !items.len().is_multiple_of(2) {
            return self.fail("SETITEMS/DICT with an odd number of items");
        }
        self.charge(items.len() / 2)?;
        let reprs: Vec<Option<KeyRepr>> = items.chunks(2).map(|kv| self.key_repr(kv[0])).collect();
        let dict = match self.node_mut(target) {
            Some(Node::Dict(d)) => d,
            Some(Node::Object(obj)) => &mut obj.dict,
            _ => return self.fail("SETITEM on something that is not a dict"),
        };
        for (kv, repr) in items.chunks(2).zip(reprs) {
            dict_insert(dict, kv[0], kv[1], repr);
        }
        Ok(())
    }

    fn build(&mut self, target: Value, state: Value) -> PResult<()> {
        match self.node_mut(target) {
            Some(Node::Object(obj)) => obj.state = Some(state),
            // OrderedDict state carries `_metadata` (module versions); tensors and
            // parameters carry Python attributes. Neither changes the structure read here.
            Some(_) => {}
            None => return self.fail("BUILD on a value that is not an object"),
        }
        Ok(())
    }

    fn persistent_load(&mut self, pid: Value) -> PResult<Value> {
        // torch.serialization persistent_id: ('storage', storage_type, key, location, numel).
        if let Some(items) = self.p.sequence(pid) {
            let tag = items.first().and_then(|&v| {
                self.p
                    .str(v)
                    .map(str::to_string)
                    .or_else(|| self.bytes_text(v))
            });
            if tag.as_deref() == Some("storage") {
                if items.len() != 5 {
                    return self.fail(format!(
                        "storage persistent id has {} fields, expected 5",
                        items.len()
                    ));
                }
                let storage_type = match self.p.global(items[1]) {
                    Some((_, name)) => name.to_string(),
                    None => match self.p.str(items[1]) {
                        Some(s) => s.to_string(),
                        None => {
                            return self
                                .fail("storage persistent id: the storage type is not a class")
                        }
                    },
                };
                let Some(dtype) = storage_dtype(&storage_type) else {
                    return self.fail(format!("unknown storage type {storage_type}"));
                };
                let key = match self.p.str(items[2]) {
                    Some(k) => k.to_string(),
                    None => return self.fail("storage persistent id: the key is not a string"),
                };
                let location = self.p.str(items[3]).unwrap_or("").to_string();
                let numel = match items[4] {
                    Value::Int(n) if n >= 0 => n as u64,
                    _ => {
                        return self
                            .fail("storage persistent id: the size is not a non-negative integer")
                    }
                };
                let s = StorageRef {
                    storage_type,
                    dtype: dtype.to_string(),
                    key,
                    location,
                    numel,
                };
                return self.new_node(Node::Storage(Box::new(s)));
            }
        }
        self.new_node(Node::PersistentId(pid))
    }

    fn bytes_text(&self, v: Value) -> Option<String> {
        match v {
            Value::Bytes { start, len } => Some(
                String::from_utf8_lossy(&self.data[start as usize..(start + len) as usize])
                    .into_owned(),
            ),
            _ => None,
        }
    }

    fn instantiate(&mut self, class: Value, args: Value) -> PResult<Value> {
        if let Some((m, n)) = self.p.global(class) {
            if is_dict_class(m, n) {
                return self.new_node(Node::Dict(Dict::default()));
            }
        }
        let obj = Object {
            class,
            args,
            state: None,
            dict: Dict::default(),
            list: Vec::new(),
        };
        self.new_node(Node::Object(Box::new(obj)))
    }

    /// `callable(*args)`, for the few callables that are interpreted; anything else
    /// becomes an opaque object.
    fn reduce(&mut self, callable: Value, args: Value, depth: usize) -> PResult<Value> {
        let Some((module, name)) = self.p.global(callable) else {
            return self.instantiate(callable, args);
        };
        let (module, name) = (module.to_string(), name.to_string());
        let argv: Vec<Value> = self
            .p
            .sequence(args)
            .map(<[Value]>::to_vec)
            .unwrap_or_default();
        if is_dict_class(&module, &name) {
            let d = self.new_node(Node::Dict(Dict::default()))?;
            // OrderedDict([(k, v), ...]): the pairs come as one list argument.
            if let Some(pairs) = argv
                .first()
                .and_then(|&a| self.p.sequence(a))
                .map(<[Value]>::to_vec)
            {
                let mut flat = Vec::with_capacity(pairs.len() * 2);
                for p in pairs {
                    match self.p.sequence(p) {
                        Some([k, v]) => flat.extend([*k, *v]),
                        _ => {
                            return self
                                .fail(format!("{module}.{name} argument is not a list of pairs"))
                        }
                    }
                }
                self.set_items(d, flat)?;
            }
            return Ok(d);
        }
        if module == "torch._utils" {
            match name.as_str() {
                // _rebuild_tensor(storage, storage_offset, size, stride)
                // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
                "_rebuild_tensor" | "_rebuild_tensor_v2" => {
                    return self.rebuild_tensor(&argv, None, &name)
                }
                // _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype[, metadata])
                "_rebuild_tensor_v3" => {
                    let dtype = match argv.get(6).and_then(|&d| self.p.global(d)) {
                        Some(("torch", d)) => d.to_string(),
                        _ => {
                            return self.fail("_rebuild_tensor_v3: argument 7 is not a torch dtype")
                        }
                    };
                    return self.rebuild_tensor(&argv, Some(dtype), &name);
                }
                // _rebuild_parameter(data, requires_grad, backward_hooks)
                // _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state)
                "_rebuild_parameter" | "_rebuild_parameter_with_state" => {
                    if let Some(mut t) = argv.first().and_then(|&d| self.p.tensor(d)).cloned() {
                        t.parameter = true;
                        t.requires_grad = matches!(argv.get(1), Some(Value::Bool(true)));
                        return self.new_node(Node::Tensor(Box::new(t)));
                    }
                }
                // _rebuild_from_type_v2(func, new_type, args, state): a tensor subclass;
                // the tensor itself is func(*args).
                "_rebuild_from_type_v2" if depth == 0 && argv.len() == 4 => {
                    return self.reduce(argv[0], argv[2], depth + 1);
                }
                _ => {}
            }
        }
        self.instantiate(callable, args)
    }

    fn rebuild_tensor(
        &mut self,
        argv: &[Value],
        dtype: Option<String>,
        func: &str,
    ) -> PResult<Value> {
        if argv.len() < 4 {
            return self.fail(format!(
                "{func} with {} arguments, expected at least 4",
                argv.len()
            ));
        }
        let Some(Node::Storage(storage)) = self.p.node(argv[0]) else {
            return self.fail(format!(
                "{func}: the first argument is a {}, not a storage",
                self.p.type_name(argv[0])
            ));
        };
        let storage = (**storage).clone();
        let offset = match argv[1] {
            Value::Int(o) if o >= 0 => o as u64,
            _ => {
                return self.fail(format!(
                    "{func}: the storage offset is not a non-negative integer"
                ))
            }
        };
        let ints = |v: Value, what: &str| -> PResult<Vec<i64>> {
            let Some(items) = self.p.sequence(v) else {
                return self.fail(format!(
                    "{func}: the {what} is a {}, not a tuple",
                    self.p.type_name(v)
                ));
            };
            items
                .iter()
                .map(|&d| match d {
                    Value::Int(i) if i >= 0 => Ok(i),
                    _ => self.fail(format!(
                        "{func}: the {what} holds something other than a non-negative integer"
                    )),
                })
                .collect()
        };
        let shape = ints(argv[2], "size")?;
        let stride = ints(argv[3], "stride")?;
        if shape.len() != stride.len() {
            return self.fail(format!(
                "{func}: size has {} dimensions but stride {}",
                shape.len(),
                stride.len()
            ));
        }
        let requires_grad = matches!(argv.get(4), Some(Value::Bool(true)));
        let dtype = dtype.unwrap_or_else(|| storage.dtype.clone());
        self.charge(shape.len() * 2)?;
        let t = TensorRef {
            storage,
            dtype,
            offset,
            shape,
            stride,
            requires_grad,
            parameter: false,
        };
        self.new_node(Node::Tensor(Box::new(t)))
    }
}

fn dict_insert(dict: &mut Dict, key: Value, value: Value, repr: Option<KeyRepr>) {
    let Some(repr) = repr else {
        dict.entries.push((key, value));
        return;
    };
    if let Some(&i) = dict.index.get(&repr) {
        dict.entries[i].1 = value;
        return;
    }
    dict.entries.push((key, value));
    dict.index.insert(repr, dict.entries.len() - 1);
}

fn is_dict_class(module: &str, name: &str) -> bool {
    matches!(
        (module, name),
        ("collections", "OrderedDict") | ("builtins" | "__builtin__", "dict")
    )
}

/// The element type of a torch storage class (`torch/storage.py`,
/// `_dtype_to_storage_type_map`); `UntypedStorage` holds bytes.
pub fn storage_dtype(storage_type: &str) -> Option<&'static str> {
    Some(match storage_type {
        "DoubleStorage" => "float64",
        "FloatStorage" => "float32",
        "HalfStorage" => "float16",
        "BFloat16Storage" => "bfloat16",
        "LongStorage" => "int64",
        "IntStorage" => "int32",
        "ShortStorage" => "int16",
        "CharStorage" => "int8",
        "ByteStorage" | "UntypedStorage" => "uint8",
        "BoolStorage" => "bool",
        "ComplexDoubleStorage" => "complex128",
        "ComplexFloatStorage" => "complex64",
        "QInt8Storage" => "qint8",
        "QUInt8Storage" => "quint8",
        "QInt32Storage" => "qint32",
        "QUInt4x2Storage" => "quint4x2",
        "QUInt2x4Storage" => "quint2x4",
        _ => return None,
    })
}

fn parse_int_text(l: &[u8]) -> Value {
    match std::str::from_utf8(l)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
    {
        Some(i) => Value::Int(i),
        None => Value::BigInt,
    }
}

fn decode_long(b: &[u8]) -> Value {
    if b.is_empty() {
        return Value::Int(0);
    }
    if b.len() > 8 {
        return Value::BigInt;
    }
    let negative = b[b.len() - 1] & 0x80 != 0;
    let mut a = if negative { [0xffu8; 8] } else { [0u8; 8] };
    a[..b.len()].copy_from_slice(b);
    Value::Int(i64::from_le_bytes(a))
}

/// Python's `raw-unicode-escape`: `\uXXXX` and `\UXXXXXXXX` escapes, other bytes latin-1.
fn decode_raw_unicode_escape(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() && (b[i + 1] == b'u' || b[i + 1] == b'U') {
            let n = if b[i + 1] == b'u' { 4 } else { 8 };
            if let Some(c) = b
                .get(i + 2..i + 2 + n)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .and_then(char::from_u32)
            {
                out.push(c);
                i += 2 + n;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// The result of [`rewrite_strings`].
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// The new pickle.
    pub data: Vec<u8>,
    /// Spans of `GET`/`DUP` opcodes (in the input) that fetched an edited string from the
    /// memo elsewhere and were replaced by a copy of the original string opcode, so that
    /// those other uses keep the old text.
    pub detached: Vec<Range<usize>>,
    /// Number of `FRAME` opcodes dropped.
    pub frames_dropped: usize,
}

/// Re-encodes string opcodes of the pickle `data` with new text.
///
/// Each edit is `(span, text)`, where `span` is a [`StringSpan::span`] from parsing
/// `data` (the opcode that pushed the string: its defining `BINUNICODE`-family opcode,
/// or a `GET` that fetched it from the memo). The opcode is replaced by a `BINUNICODE`
/// of `text`; memo indices are untouched, since `PUT`/`MEMOIZE` opcodes stay where they
/// are. When the defining opcode of a memoized string is edited, other places that
/// fetch it with `GET` would see the new text too; those `GET`s are replaced by a copy
/// of the original opcode and reported in [`Rewrite::detached`], so only the edited
/// occurrence changes.
///
/// `FRAME` opcodes are dropped: their lengths would no longer match, and framing is
/// optional (PEP 3154: "the unpickler must handle frames and non-framed opcodes").
/// Everything else is copied byte for byte.
pub fn rewrite_strings(data: &[u8], edits: &[(Range<usize>, String)]) -> PResult<Rewrite> {
    let parsed = parse(data)?;
    // Replacement bytes by opcode start.
    let mut replace: HashMap<usize, (usize, Vec<u8>)> = HashMap::new();
    let by_start: HashMap<usize, &Occurrence> = parsed
        .occurrences
        .iter()
        .map(|o| (o.start as usize, o))
        .collect();
    let mut edited_lits = Vec::new();
    for (span, text) in edits {
        let Some(o) = by_start
            .get(&span.start)
            .filter(|o| o.end as usize == span.end)
        else {
            return err(
                span.start,
                format!(
                    "bytes {}..{} are not a string opcode of this pickle",
                    span.start, span.end
                ),
            );
        };
        if replace
            .insert(span.start, (span.end, binunicode(text)))
            .is_some()
        {
            return err(span.start, "the same string opcode is edited twice");
        }
        let lit = &parsed.lits[o.lit as usize];
        if (lit.start, lit.end) == (o.start, o.end) {
            edited_lits.push(o.lit);
        }
    }
    let mut detached = Vec::new();
    for lit_id in edited_lits {
        let lit = &parsed.lits[lit_id as usize];
        let original = &data[lit.start as usize..lit.end as usize];
        for o in parsed
            .occurrences
            .iter()
            .filter(|o| o.lit == lit_id && o.start != lit.start)
        {
            if let std::collections::hash_map::Entry::Vacant(e) = replace.entry(o.start as usize) {
                e.insert((o.end as usize, original.to_vec()));
                detached.push(o.start as usize..o.end as usize);
            }
        }
    }
    detached.sort_by_key(|r| r.start);
    let mut out =
        Vec::with_capacity(data.len() + edits.iter().map(|(_, t)| t.len() + 5).sum::<usize>());
    let mut pos = 0;
    let mut frames_dropped = 0;
    loop {
        let o = read_op(data, pos)?;
        if o.code == op::FRAME {
            frames_dropped += 1;
        } else if let Some((end, bytes)) = replace.get(&o.start) {
            debug_assert_eq!(*end, o.end);
            out.extend_from_slice(bytes);
        } else {
            out.extend_from_slice(&data[o.start..o.end]);
        }
        pos = o.end;
        if o.code == op::STOP {
            break;
        }
    }
    out.extend_from_slice(&data[pos..]);
    Ok(Rewrite {
        data: out,
        detached,
        frames_dropped,
    })
}

/// `BINUNICODE` (or `BINUNICODE8` past 4 GiB) of `text`.
fn binunicode(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len() + 9);
    match u32::try_from(b.len()) {
        Ok(n) => {
            out.push(op::BINUNICODE);
            out.extend_from_slice(&n.to_le_bytes());
        }
        Err(_) => {
            out.push(op::BINUNICODE8);
            out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        }
    }
    out.extend_from_slice(b);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds pickles opcode by opcode.
    #[derive(Default)]
    struct W(Vec<u8>);

    impl W {
        fn op(mut self, code: u8) -> Self {
            self.0.push(code);
            self
        }
        fn proto(self, v: u8) -> Self {
            let mut w = self.op(op::PROTO);
            w.0.push(v);
            w
        }
        fn s(mut self, text: &str) -> Self {
            self.0.push(op::SHORT_BINUNICODE);
            self.0.push(text.len() as u8);
            self.0.extend_from_slice(text.as_bytes());
            self
        }
        fn u(mut self, text: &str) -> Self {
            self.0.push(op::BINUNICODE);
            self.0.extend_from_slice(&(text.len() as u32).to_le_bytes());
            self.0.extend_from_slice(text.as_bytes());
            self
        }
        fn int(mut self, v: u8) -> Self {
            self.0.extend_from_slice(&[op::BININT1, v]);
            self
        }
        fn put(mut self, i: u8) -> Self {
            self.0.extend_from_slice(&[op::BINPUT, i]);
            self
        }
        fn get(mut self, i: u32) -> Self {
            self.0.push(op::LONG_BINGET);
            self.0.extend_from_slice(&i.to_le_bytes());
            self
        }
        fn global(mut self, module: &str, name: &str) -> Self {
            self.0.push(op::GLOBAL);
            self.0
                .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
            self
        }
        fn frame(mut self, n: u64) -> Self {
            self.0.push(op::FRAME);
            self.0.extend_from_slice(&n.to_le_bytes());
            self
        }
        fn stop(self) -> Vec<u8> {
            self.op(op::STOP).0
        }
    }

    fn keys(p: &Pickle, v: Value) -> Vec<String> {
        p.dict(v)
            .unwrap()
            .iter()
            .map(|(k, _)| p.str(*k).unwrap().to_string())
            .collect()
    }

    /// `{'a': <tensor>, 'b': <tensor sharing a's storage at offset 6>}` as torch.save
    /// (protocol 2) writes it: OrderedDict, persistent ids, _rebuild_tensor_v2.
    fn state_dict_pickle() -> Vec<u8> {
        let tensor = |w: W, offset: u8, storage_again: bool| {
            let w = w.global("torch._utils", "_rebuild_tensor_v2").op(op::MARK);
            let w = if storage_again {
                w.get(9)
            } else {
                w.op(op::MARK)
                    .s("storage")
                    .global("torch", "BFloat16Storage")
                    .s("0")
                    .s("cpu")
                    .int(12)
                    .op(op::TUPLE)
                    .op(op::BINPERSID)
                    .put(9)
            };
            w.int(offset)
                .int(2)
                .int(3)
                .op(op::TUPLE2)
                .int(3)
                .int(1)
                .op(op::TUPLE2)
                .op(op::NEWFALSE)
                .global("collections", "OrderedDict")
                .op(op::EMPTY_TUPLE)
                .op(op::REDUCE)
                .op(op::TUPLE)
                .op(op::REDUCE)
        };
        let w = W::default()
            .proto(2)
            .global("collections", "OrderedDict")
            .op(op::EMPTY_TUPLE)
            .op(op::REDUCE);
        let w = w.op(op::MARK).u("a").put(1);
        let w = tensor(w, 0, false);
        let w = w.u("b").put(2);
        let w = tensor(w, 6, true);
        w.op(op::SETITEMS).stop()
    }

    #[test]
    fn reads_tensors_of_an_ordered_dict_in_order() {
        let p = parse(&state_dict_pickle()).unwrap();
        assert_eq!(keys(&p, p.root()), ["a", "b"]);
        let items = p.dict(p.root()).unwrap();
        let a = p.tensor(items[0].1).unwrap();
        let b = p.tensor(items[1].1).unwrap();
        assert_eq!(a.storage.key, "0");
        assert_eq!(a.storage.dtype, "bfloat16");
        assert_eq!(a.storage.numel, 12);
        assert_eq!(
            (a.offset, a.shape.as_slice(), a.stride.as_slice()),
            (0, &[2i64, 3][..], &[3i64, 1][..])
        );
        assert_eq!(b.offset, 6);
        assert_eq!(b.storage, a.storage);
        assert_eq!(a.dtype, "bfloat16");
    }

    #[test]
    fn key_spans_point_at_the_string_opcodes() {
        let data = state_dict_pickle();
        let p = parse(&data).unwrap();
        let (k, _) = p.dict(p.root()).unwrap()[1];
        let span = p.string_span(k).unwrap();
        assert!(span.defining && !span.shared);
        assert_eq!(&data[span.span.clone()], b"X\x01\x00\x00\x00b");
    }

    #[test]
    fn rewrite_renames_keys_and_reparses() {
        let data = state_dict_pickle();
        let p = parse(&data).unwrap();
        let edits: Vec<_> = p
            .dict(p.root())
            .unwrap()
            .iter()
            .map(|(k, _)| {
                (
                    p.string_span(*k).unwrap().span,
                    format!("model.{}", p.str(*k).unwrap()),
                )
            })
            .collect();
        let out = rewrite_strings(&data, &edits).unwrap();
        assert!(out.detached.is_empty());
        let q = parse(&out.data).unwrap();
        assert_eq!(keys(&q, q.root()), ["model.a", "model.b"]);
        let items = q.dict(q.root()).unwrap();
        assert_eq!(q.tensor(items[1].1).unwrap().offset, 6);
    }

    #[test]
    fn rewrite_keeps_other_uses_of_a_memoized_key() {
        // {'a': 1, 'b': ['a']}: the list fetches the key string 'a' through the memo.
        let data = W::default()
            .proto(4)
            .frame(0)
            .op(op::EMPTY_DICT)
            .op(op::MEMOIZE)
            .op(op::MARK)
            .s("a")
            .op(op::MEMOIZE)
            .int(1)
            .s("b")
            .op(op::MEMOIZE)
            .op(op::EMPTY_LIST)
            .get(1)
            .op(op::APPEND)
            .op(op::SETITEMS)
            .stop();
        let p = parse(&data).unwrap();
        assert_eq!(p.frames(), 1);
        let (k, _) = p.dict(p.root()).unwrap()[0];
        let span = p.string_span(k).unwrap();
        assert!(span.shared, "the key is fetched again by the list");
        let out = rewrite_strings(&data, &[(span.span, "renamed".into())]).unwrap();
        assert_eq!(out.detached.len(), 1);
        assert_eq!(out.frames_dropped, 1);
        let q = parse(&out.data).unwrap();
        assert_eq!(q.frames(), 0);
        assert_eq!(keys(&q, q.root()), ["renamed", "b"]);
        let list = q.dict_get(q.root(), "b").unwrap();
        assert_eq!(q.str(q.sequence(list).unwrap()[0]), Some("a"));
    }

    #[test]
    fn rewrite_rejects_spans_that_are_not_strings() {
        let data = state_dict_pickle();
        assert!(rewrite_strings(&data, &[(0..2, "x".into())]).is_err());
    }

    #[test]
    fn unknown_classes_become_objects_with_state_and_items() {
        // argparse.Namespace(lr=...) the way protocol 2 writes it, and a dict subclass.
        let data = W::default()
            .proto(2)
            .op(op::EMPTY_DICT)
            .op(op::MARK)
            .s("args")
            .global("argparse", "Namespace")
            .op(op::EMPTY_TUPLE)
            .op(op::NEWOBJ)
            .op(op::EMPTY_DICT)
            .s("lr")
            .int(3)
            .op(op::SETITEM)
            .op(op::BUILD)
            .s("hp")
            .global("lightning.fabric.utilities.data", "AttributeDict")
            .op(op::EMPTY_TUPLE)
            .op(op::NEWOBJ)
            .s("x")
            .int(1)
            .op(op::SETITEM)
            .op(op::SETITEMS)
            .stop();
        let p = parse(&data).unwrap();
        let args = p.dict_get(p.root(), "args").unwrap();
        assert_eq!(p.type_name(args), "argparse.Namespace");
        let Some(Node::Object(o)) = p.node(args) else {
            panic!()
        };
        assert_eq!(p.dict_get(o.state.unwrap(), "lr"), Some(Value::Int(3)));
        let Some(Node::Object(hp)) = p.node(p.dict_get(p.root(), "hp").unwrap()) else {
            panic!()
        };
        assert_eq!(hp.dict.entries().len(), 1);
    }

    #[test]
    fn repeated_keys_keep_first_position_and_last_value() {
        let data = W::default()
            .proto(2)
            .op(op::EMPTY_DICT)
            .op(op::MARK)
            .s("a")
            .int(1)
            .s("b")
            .int(2)
            .s("a")
            .int(3)
            .op(op::SETITEMS)
            .stop();
        let p = parse(&data).unwrap();
        assert_eq!(keys(&p, p.root()), ["a", "b"]);
        assert_eq!(p.dict_get(p.root(), "a"), Some(Value::Int(3)));
    }

    #[test]
    fn longs_floats_and_protocol_0_text() {
        let mut w = W::default().proto(2).op(op::MARK);
        w.0.extend_from_slice(&[op::LONG1, 2, 0xff, 0x7f]); // 32767
        w.0.extend_from_slice(&[op::LONG1, 1, 0xff]); // -1
        w.0.extend_from_slice(b"I01\n"); // True
        w.0.extend_from_slice(b"L12345678901L\n");
        w.0.push(op::BINFLOAT);
        w.0.extend_from_slice(&1.5f64.to_be_bytes());
        w.0.extend_from_slice(b"Vcaf\\u00e9\n");
        let data = w.op(op::TUPLE).stop();
        let p = parse(&data).unwrap();
        let t = p.sequence(p.root()).unwrap();
        assert_eq!(
            &t[..5],
            &[
                Value::Int(32767),
                Value::Int(-1),
                Value::Bool(true),
                Value::Int(12345678901),
                Value::Float(1.5)
            ]
        );
        assert_eq!(p.str(t[5]), Some("café"));
    }

    #[test]
    fn deep_nesting_through_the_memo_needs_no_recursion() {
        // L(i+1) = [L(i)], a million levels with a constant stack; parsing and dropping
        // the result must not recurse.
        let mut w = W::default().proto(4).op(op::EMPTY_LIST).op(op::MEMOIZE);
        for i in 0..1_000_000u32 {
            w = w
                .op(op::POP)
                .op(op::EMPTY_LIST)
                .get(i)
                .op(op::APPEND)
                .op(op::MEMOIZE);
        }
        let p = parse(&w.stop()).unwrap();
        assert_eq!(p.type_name(p.root()), "list");
        drop(p);
    }

    #[test]
    fn hostile_pickles_fail_fast() {
        let marks = W(b"\x80\x02".to_vec());
        let mut bomb = marks.0.clone();
        bomb.extend(std::iter::repeat_n(*b"(]", 100_000).flatten());
        bomb.push(op::STOP);
        assert!(parse(&bomb).unwrap_err().message.contains("MARK"));

        let mut memo = vec![op::PROTO, 4, op::NONE];
        memo.extend(std::iter::repeat_n(op::MEMOIZE, 1000));
        memo.push(op::STOP);
        let small = Limits {
            max_memo: 100,
            ..Limits::default()
        };
        assert!(parse_with_limits(&memo, small)
            .unwrap_err()
            .message
            .contains("memo"));
        let few_units = Limits {
            max_units: 50,
            ..Limits::default()
        };
        assert!(parse_with_limits(&memo, few_units).is_err());

        let mut huge = vec![op::PROTO, 4, op::BINUNICODE8];
        huge.extend_from_slice(&(1u64 << 62).to_le_bytes());
        assert!(parse(&huge).unwrap_err().message.contains("declares"));
        assert!(parse(&W::default().frame(1 << 40).stop()).is_err());

        assert!(parse(b"\x80\x02}").unwrap_err().message.contains("STOP"));
        assert!(parse(b"\x80\x02\xff.")
            .unwrap_err()
            .message
            .contains("unknown opcode"));
        assert!(parse(b"\x80\x02h\x05.")
            .unwrap_err()
            .message
            .contains("memo"));
        assert!(parse(b"\x80\x02a.").is_err());
        assert!(parse(b"\x80\x09N.").is_err());
        assert!(parse(b"\x80\x02N\x82\x01.")
            .unwrap_err()
            .message
            .contains("extension"));
        assert!(parse(b"\x80\x05\x97.")
            .unwrap_err()
            .message
            .contains("out-of-band"));
    }

    #[test]
    fn tensor_rebuild_with_bad_arguments_is_an_error() {
        let data = W::default()
            .proto(2)
            .global("torch._utils", "_rebuild_tensor_v2")
            .op(op::MARK)
            .op(op::NONE)
            .int(0)
            .op(op::EMPTY_TUPLE)
            .op(op::EMPTY_TUPLE)
            .op(op::TUPLE)
            .op(op::REDUCE)
            .stop();
        assert!(parse(&data).unwrap_err().message.contains("not a storage"));
    }
}
