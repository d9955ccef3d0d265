//! Writes the `data.pkl` of a `torch.save` archive holding a state dict: a protocol-2
//! pickle of an `OrderedDict` whose values are `torch._utils._rebuild_tensor_v2` calls on
//! persistent storage ids, the exact shape `torch.save` produces and the only globals
//! `torch.load(weights_only=True)` needs.
//!
//! Opcodes are those of CPython's `Lib/pickletools.py`; the tensor layout is
//! `torch/serialization.py` (`_save`, `persistent_id`: `('storage', storage_type, key,
//! location, numel)`) and `torch/_tensor.py` (`_reduce_ex_internal`: `_rebuild_tensor_v2(
//! storage, storage_offset, size, stride, requires_grad, backward_hooks)`).

use crate::dtype::DType;
use std::collections::HashMap;

// The opcodes, from the reader's table (one table for both directions).
use super::pickle::op::{
    BINGET, BININT, BININT1, BININT2, BINPERSID, BINPUT, BINUNICODE, EMPTY_TUPLE, GLOBAL, LONG1,
    LONG_BINGET, LONG_BINPUT, MARK, NEWFALSE, PROTO, REDUCE, SETITEMS, STOP, TUPLE, TUPLE1, TUPLE2,
    TUPLE3,
};

/// The storage class `torch.save` names for a dtype (`torch.FloatStorage` for float32);
/// `None` for dtypes without a legacy storage class.
pub fn storage_class(dtype: &str) -> Option<&'static str> {
    DType::parse(dtype).and_then(DType::storage_class)
}

/// One tensor of the state dict: a view of a storage record.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    /// The state-dict key.
    pub name: String,
    /// The storage record key (`<archive>/data/<key>`).
    pub storage_key: String,
    /// The dtype (torch name); it must have a [`storage_class`].
    pub dtype: String,
    /// Elements in the whole storage.
    pub storage_numel: u64,
    /// Storage offset of the view, in elements.
    pub offset: u64,
    /// Shape of the view.
    pub shape: Vec<i64>,
    /// Strides of the view, in elements.
    pub stride: Vec<i64>,
}

struct Pickler {
    out: Vec<u8>,
    memo: HashMap<String, u32>,
    next_memo: u32,
}

impl Pickler {
    fn memoize(&mut self) -> u32 {
        let id = self.next_memo;
        self.next_memo += 1;
        if id < 256 {
            self.out.extend_from_slice(&[BINPUT, id as u8]);
        } else {
            self.out.push(LONG_BINPUT);
            self.out.extend_from_slice(&id.to_le_bytes());
        }
        id
    }

    fn get(&mut self, id: u32) {
        if id < 256 {
            self.out.extend_from_slice(&[BINGET, id as u8]);
        } else {
            self.out.push(LONG_BINGET);
            self.out.extend_from_slice(&id.to_le_bytes());
        }
    }

    /// A memoized value (global or string): written once, fetched from the memo after.
    fn memoized(&mut self, key: String, write: impl FnOnce(&mut Vec<u8>)) {
        if let Some(&id) = self.memo.get(&key) {
            self.get(id);
        } else {
            write(&mut self.out);
            let id = self.memoize();
            self.memo.insert(key, id);
        }
    }

    fn global(&mut self, module: &str, name: &str) {
        self.memoized(format!("g:{module}.{name}"), |out| {
            out.push(GLOBAL);
            out.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        });
    }

    fn string(&mut self, s: &str) {
        self.out.push(BINUNICODE);
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    fn int(&mut self, v: i64) {
        if (0..256).contains(&v) {
            self.out.extend_from_slice(&[BININT1, v as u8]);
        } else if (0..65536).contains(&v) {
            self.out.push(BININT2);
            self.out.extend_from_slice(&(v as u16).to_le_bytes());
        } else if i32::try_from(v).is_ok() {
            self.out.push(BININT);
            self.out.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            // LONG1: little-endian two's complement, 8 bytes are always enough for i64.
            self.out.extend_from_slice(&[LONG1, 8]);
            self.out.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn int_tuple(&mut self, values: &[i64]) {
        match values.len() {
            0 => self.out.push(EMPTY_TUPLE),
            n => {
                if n > 3 {
                    self.out.push(MARK);
                }
                for &v in values {
                    self.int(v);
                }
                self.out.push(match n {
                    1 => TUPLE1,
                    2 => TUPLE2,
                    3 => TUPLE3,
                    _ => TUPLE,
                });
            }
        }
    }

    fn ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.out.push(EMPTY_TUPLE);
        self.out.push(REDUCE);
    }
}

/// The `data.pkl` bytes of a state dict holding `tensors`, in order. Every dtype must have
/// a [`storage_class`] (checked by the caller, which knows the file to name in the error).
pub fn state_dict_pickle(tensors: &[TensorEntry]) -> Vec<u8> {
    let mut p = Pickler {
        out: vec![PROTO, 2],
        memo: HashMap::new(),
        next_memo: 0,
    };
    p.ordered_dict();
    p.memoize();
    if !tensors.is_empty() {
        p.out.push(MARK);
        for t in tensors {
            p.string(&t.name);
            p.global("torch._utils", "_rebuild_tensor_v2");
            p.out.push(MARK);
            // The persistent id: ('storage', torch.XStorage, key, 'cpu', numel).
            p.out.push(MARK);
            p.memoized("s:storage".into(), |out| {
                out.push(BINUNICODE);
                out.extend_from_slice(&7u32.to_le_bytes());
                out.extend_from_slice(b"storage");
            });
            p.global("torch", storage_class(&t.dtype).unwrap_or("FloatStorage"));
            p.string(&t.storage_key);
            p.memoized("s:cpu".into(), |out| {
                out.push(BINUNICODE);
                out.extend_from_slice(&3u32.to_le_bytes());
                out.extend_from_slice(b"cpu");
            });
            p.int(t.storage_numel as i64);
            p.out.push(TUPLE);
            p.out.push(BINPERSID);
            p.int(t.offset as i64);
            p.int_tuple(&t.shape);
            p.int_tuple(&t.stride);
            p.out.push(NEWFALSE); // requires_grad
            p.ordered_dict(); // backward hooks
            p.out.push(TUPLE);
            p.out.push(REDUCE);
        }
        p.out.push(SETITEMS);
    }
    p.out.push(STOP);
    p.out
}
