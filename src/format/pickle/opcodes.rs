//! The opcodes (named as in CPython's `pickletools.py`) and a cursor that reads one
//! opcode and its argument at a time, bounds-checked.

use super::*;

// Opcodes, named as in pickletools.py.
pub(crate) mod op {
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
pub(super) enum Arg<'a> {
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
pub(super) struct Op<'a> {
    pub(super) code: u8,
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) arg: Arg<'a>,
}

pub(super) struct Cursor<'a> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
    pub(super) start: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn take(&mut self, n: u64) -> PResult<&'a [u8]> {
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
    pub(super) fn u8(&mut self) -> PResult<u64> {
        Ok(self.take(1)?[0] as u64)
    }
    pub(super) fn u16(&mut self) -> PResult<u64> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as u64)
    }
    pub(super) fn u32(&mut self) -> PResult<u64> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64)
    }
    pub(super) fn i32(&mut self) -> PResult<i64> {
        let b = self.take(4)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
    }
    pub(super) fn u64(&mut self) -> PResult<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    pub(super) fn line(&mut self) -> PResult<&'a [u8]> {
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
    pub(super) fn counted_i32(&mut self) -> PResult<&'a [u8]> {
        let n = self.i32()?;
        if n < 0 {
            return err(self.start, format!("negative length {n}"));
        }
        self.take(n as u64)
    }
}

/// Decodes the opcode at `pos`.
pub(super) fn read_op(data: &[u8], pos: usize) -> PResult<Op<'_>> {
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
