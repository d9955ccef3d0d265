//! Pickles built opcode by opcode, against what CPython's pickle does with them.

use super::opcodes::op;
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
