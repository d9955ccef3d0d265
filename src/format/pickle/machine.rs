//! The pickle virtual machine: executes opcodes on a closed world (nothing is imported
//! or called), building values in an arena with every allocation charged to [`Limits`].

use super::opcodes::*;
use super::*;

/// The memo: dense indices (what picklers write: 0, 1, 2, ...) in a vector, any others
/// in a map.
#[derive(Default)]
pub(super) struct Memo {
    pub(super) dense: Vec<Value>,
    pub(super) sparse: HashMap<u64, Value>,
}

impl Memo {
    /// Stores `v` at `index`; returns whether the index was already in use.
    pub(super) fn put(&mut self, index: u64, v: Value) -> bool {
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

    pub(super) fn get(&self, index: u64) -> Option<Value> {
        match self.dense.get(index as usize) {
            Some(&v) => Some(v),
            None => self.sparse.get(&index).copied(),
        }
    }

    /// Number of entries (pickle.py's `len(self.memo)`, used by MEMOIZE).
    pub(super) fn len(&self) -> usize {
        self.dense.len() + self.sparse.len()
    }
}

pub(super) struct Machine<'a> {
    pub(super) data: &'a [u8],
    pub(super) limits: Limits,
    pub(super) stack: Vec<Value>,
    pub(super) marks: Vec<usize>,
    pub(super) memo: Memo,
    pub(super) units: usize,
    /// Start of the opcode being executed, for errors.
    pub(super) pos: usize,
    pub(super) p: Pickle,
}

impl<'a> Machine<'a> {
    pub(super) fn fail<T>(&self, message: impl Into<String>) -> PResult<T> {
        err(self.pos, message)
    }

    pub(super) fn charge(&mut self, n: usize) -> PResult<()> {
        self.units += n;
        if self.units > self.limits.max_units {
            return self.fail(format!(
                "the pickle builds more than {} values (memo entries, containers, items); refusing to go on",
                self.limits.max_units
            ));
        }
        Ok(())
    }

    pub(super) fn push(&mut self, v: Value) -> PResult<()> {
        if self.stack.len() >= self.limits.max_stack {
            return self.fail(format!(
                "stack deeper than {} values",
                self.limits.max_stack
            ));
        }
        self.stack.push(v);
        Ok(())
    }

    pub(super) fn pop(&mut self) -> PResult<Value> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return self.fail("pops past a MARK");
        }
        match self.stack.pop() {
            Some(v) => Ok(v),
            None => self.fail("stack underflow"),
        }
    }

    pub(super) fn top(&self) -> PResult<Value> {
        match self.stack.last() {
            Some(&v) if self.marks.last().is_none_or(|&m| m < self.stack.len()) => Ok(v),
            _ => self.fail("needs a value on the stack"),
        }
    }

    pub(super) fn pop_mark(&mut self) -> PResult<Vec<Value>> {
        let Some(m) = self.marks.pop() else {
            return self.fail("no MARK to pop to");
        };
        Ok(self.stack.split_off(m))
    }

    pub(super) fn new_node(&mut self, node: Node) -> PResult<Value> {
        self.charge(1)?;
        self.p.nodes.push(node);
        Ok(Value::Node((self.p.nodes.len() - 1) as u32))
    }

    pub(super) fn new_str(&mut self, op: &Op, text: String) -> PResult<Value> {
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
    pub(super) fn again(&mut self, op: &Op, v: Value) -> PResult<Value> {
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

    pub(super) fn memo_put(&mut self, index: u64) -> PResult<()> {
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

    pub(super) fn memo_get(&self, index: u64) -> PResult<Value> {
        match self.memo.get(index) {
            Some(v) => Ok(v),
            None => self.fail(format!("memo index {index} was never stored")),
        }
    }

    pub(super) fn line_str(&self, line: &[u8]) -> String {
        String::from_utf8_lossy(line).into_owned()
    }

    pub(super) fn run(&mut self) -> PResult<()> {
        use super::opcodes::op::*;
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

    pub(super) fn node_mut(&mut self, v: Value) -> Option<&mut Node> {
        match v {
            Value::Node(id) => self.p.nodes.get_mut(id as usize),
            _ => None,
        }
    }

    pub(super) fn extend(&mut self, target: Value, items: Vec<Value>) -> PResult<()> {
        self.charge(items.len())?;
        match self.node_mut(target) {
            Some(Node::List(l)) => l.extend(items),
            // pickle.py load_appends: list subclasses and objects with extend/append.
            Some(Node::Object(obj)) => obj.list.extend(items),
            _ => return self.fail("APPEND to something that is not a list"),
        }
        Ok(())
    }

    pub(super) fn key_repr(&self, key: Value) -> Option<KeyRepr> {
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
    pub(super) fn set_items(&mut self, target: Value, items: Vec<Value>) -> PResult<()> {
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

    pub(super) fn build(&mut self, target: Value, state: Value) -> PResult<()> {
        match self.node_mut(target) {
            Some(Node::Object(obj)) => obj.state = Some(state),
            // OrderedDict state carries `_metadata` (module versions); tensors and
            // parameters carry Python attributes. Neither changes the structure read here.
            Some(_) => {}
            None => return self.fail("BUILD on a value that is not an object"),
        }
        Ok(())
    }

    pub(super) fn persistent_load(&mut self, pid: Value) -> PResult<Value> {
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

    pub(super) fn bytes_text(&self, v: Value) -> Option<String> {
        match v {
            Value::Bytes { start, len } => Some(
                String::from_utf8_lossy(&self.data[start as usize..(start + len) as usize])
                    .into_owned(),
            ),
            _ => None,
        }
    }

    pub(super) fn instantiate(&mut self, class: Value, args: Value) -> PResult<Value> {
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
    pub(super) fn reduce(&mut self, callable: Value, args: Value, depth: usize) -> PResult<Value> {
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

    pub(super) fn rebuild_tensor(
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

pub(super) fn dict_insert(dict: &mut Dict, key: Value, value: Value, repr: Option<KeyRepr>) {
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

pub(super) fn is_dict_class(module: &str, name: &str) -> bool {
    matches!(
        (module, name),
        ("collections", "OrderedDict") | ("builtins" | "__builtin__", "dict")
    )
}

/// The element type of a torch storage class (`torch/storage.py`,
/// `_dtype_to_storage_type_map`); `UntypedStorage` holds bytes.
pub fn storage_dtype(storage_type: &str) -> Option<&'static str> {
    if let Some(d) = DType::from_storage_class(storage_type) {
        return Some(d.name());
    }
    // Quantized storages have no plain dtype; their names are kept for the message that
    // refuses them.
    Some(match storage_type {
        "QInt8Storage" => "qint8",
        "QUInt8Storage" => "quint8",
        "QInt32Storage" => "qint32",
        "QUInt4x2Storage" => "quint4x2",
        "QUInt2x4Storage" => "quint2x4",
        _ => return None,
    })
}

pub(super) fn parse_int_text(l: &[u8]) -> Value {
    match std::str::from_utf8(l)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
    {
        Some(i) => Value::Int(i),
        None => Value::BigInt,
    }
}

pub(super) fn decode_long(b: &[u8]) -> Value {
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
pub(super) fn decode_raw_unicode_escape(b: &[u8]) -> String {
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
