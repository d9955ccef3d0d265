use super::*;
use crate::spec::Format;
use serde_json::json;

fn spec(names: &[(&str, Vec<i64>)]) -> ModelSpec {
    ModelSpec::from_shapes("s.pth", Format::SpecJson, names)
}

#[test]
fn parses_flat_extended_wrapped_and_version_2_forms() {
    let flat = Mapping::from_json(&json!({"a.weight": "b.weight", "skip": null})).unwrap();
    assert_eq!(
        flat.entries,
        vec![MappingEntry {
            source: "a.weight".into(),
            target: "b.weight".into(),
            transform: None
        }]
    );
    let ext = Mapping::from_json(&json!({"mapping": {
        "a": {"target": "b", "transform": "transpose"},
        "c": {"target": "d", "transform": {"reshape": [4, -1]}},
        "e": {"target": null}
    }}))
    .unwrap();
    assert_eq!(ext.entries.len(), 2);
    assert_eq!(ext.entries[0].transform, Some(Transform::Transpose));
    assert_eq!(
        ext.entries[1].transform,
        Some(Transform::Reshape(vec![4, -1]))
    );
    assert!(
        Mapping::from_json(&json!({"a": {"target": "b", "transform": "flip"}}))
            .unwrap_err()
            .contains("flip")
    );
    assert!(Mapping::from_json(&json!(["a"])).is_err());

    // Version 2 round-trips, conversions included; the corpus' `source`/`target`
    // spelling of a conversion is read too.
    let mut with = ext.clone();
    let mut c = Conversion::new(
        ConversionKind::Split,
        vec!["qkv".into()],
        vec!["q".into(), "k".into()],
        0,
    );
    c.sizes = Some(vec![2, 2]);
    c.confidence = Some(0.95);
    c.reason = Some("the name spells them".into());
    with.conversions.push(c);
    let v = with.to_json();
    assert_eq!(v["format"], FORMAT);
    assert_eq!(v["version"], 2);
    assert_eq!(Mapping::from_json(&v).unwrap(), with);
    let corpus = Mapping::from_json(&json!({"format": FORMAT, "version": 2, "mapping": {},
        "conversions": [{"kind": "stack", "source": ["a", "b"], "target": ["ab"], "dim": 0}]}))
    .unwrap();
    assert_eq!(corpus.conversions[0].sources, vec!["a", "b"]);
    let e =
        Mapping::from_json(&json!({"format": FORMAT, "version": 3, "mapping": {}})).unwrap_err();
    assert!(e.contains("version 3"), "{e}");
    let e = Mapping::from_json(&json!({"format": FORMAT, "version": 2, "mapping": {},
        "conversions": [{"kind": "shuffle", "sources": ["a"], "targets": ["b"]}]}))
    .unwrap_err();
    assert!(e.contains("conversions[0]") && e.contains("shuffle"), "{e}");
}

#[test]
fn transform_shapes() {
    assert_eq!(
        Transform::Transpose.output_shape(&[3, 5]).unwrap(),
        vec![5, 3]
    );
    assert!(Transform::Transpose.output_shape(&[3, 5, 1]).is_err());
    assert_eq!(
        Transform::Reshape(vec![8, -1])
            .output_shape(&[8, 4, 1, 1])
            .unwrap(),
        vec![8, 4]
    );
    assert!(Transform::Reshape(vec![8, 5])
        .output_shape(&[8, 4])
        .is_err());
    assert!(Transform::Reshape(vec![-1, -1])
        .output_shape(&[8, 4])
        .is_err());
}

fn conv(kind: ConversionKind, n_src: usize, n_tgt: usize, dim: usize) -> Conversion {
    let names = |p: &str, n: usize| (0..n).map(|i| format!("{p}{i}")).collect();
    Conversion::new(kind, names("s", n_src), names("t", n_tgt), dim)
}

#[test]
fn layouts_of_every_kind_and_their_inverses() {
    // concat along dim 1: blocks side by side.
    let l = conv(ConversionKind::Concat, 2, 1, 1)
        .layout(&[vec![3, 2], vec![3, 4]])
        .unwrap();
    assert_eq!(l.whole, vec![3, 6]);
    assert_eq!(l.blocks[1], (vec![3, 4], vec![0, 2]));
    // split: the inverse.
    let mut split = conv(ConversionKind::Split, 1, 2, 1);
    split.sizes = Some(vec![2, 4]);
    let s = split.layout(&[vec![3, 6]]).unwrap();
    assert_eq!(s.blocks, l.blocks);
    assert_eq!(s.parts, vec![vec![3, 2], vec![3, 4]]);
    // stack along a new dim 1, and unstack.
    let l = conv(ConversionKind::Stack, 3, 1, 1)
        .layout(&[vec![2, 5], vec![2, 5], vec![2, 5]])
        .unwrap();
    assert_eq!(l.whole, vec![2, 3, 5]);
    assert_eq!(l.blocks[2], (vec![2, 1, 5], vec![0, 2, 0]));
    let u = conv(ConversionKind::Unstack, 1, 3, 1)
        .layout(&[vec![2, 3, 5]])
        .unwrap();
    assert_eq!(u.blocks, l.blocks);
    assert_eq!(u.parts[0], vec![2, 5]);
    // stack_of_concat (2 experts of w1 [4, 3], w3 [2, 3]), and split_of_unstack.
    let mut soc = conv(ConversionKind::StackOfConcat, 4, 1, 0);
    (soc.group_size, soc.concat_dim) = (Some(2), Some(0));
    let shapes = vec![vec![4, 3], vec![2, 3], vec![4, 3], vec![2, 3]];
    let l = soc.layout(&shapes).unwrap();
    assert_eq!(l.whole, vec![2, 6, 3]);
    assert_eq!(l.blocks[3], (vec![1, 2, 3], vec![1, 4, 0]));
    let mut sou = conv(ConversionKind::SplitOfUnstack, 1, 4, 0);
    (sou.group_size, sou.concat_dim, sou.sizes) = (Some(2), Some(0), Some(vec![4, 2]));
    let u = sou.layout(&[vec![2, 6, 3]]).unwrap();
    assert_eq!(u.blocks, l.blocks);
    assert_eq!(u.parts, shapes);
    // Per-part transpose: parts [3, 4] go in as [4, 3].
    let mut t = conv(ConversionKind::Stack, 2, 1, 0);
    t.transpose = true;
    assert_eq!(
        t.layout(&[vec![3, 4], vec![3, 4]]).unwrap().whole,
        vec![2, 4, 3]
    );
}

#[test]
fn layouts_refuse_what_does_not_fit() {
    let e = conv(ConversionKind::Stack, 2, 1, 0)
        .layout(&[vec![2, 5], vec![2, 4]])
        .unwrap_err();
    assert!(e.contains("[2, 4]"), "{e}");
    let e = conv(ConversionKind::Concat, 2, 1, 0)
        .layout(&[vec![2, 5], vec![2, 4]])
        .unwrap_err();
    assert!(e.contains("part 1"), "{e}");
    let e = conv(ConversionKind::Split, 1, 2, 0)
        .layout(&[vec![4]])
        .unwrap_err();
    assert!(e.contains("sizes"), "{e}");
    let e = conv(ConversionKind::Unstack, 1, 3, 0)
        .layout(&[vec![2, 4]])
        .unwrap_err();
    assert!(e.contains("2 slices for 3 targets"), "{e}");
    let e = conv(ConversionKind::Concat, 2, 2, 0)
        .layout(&[vec![1], vec![1]])
        .unwrap_err();
    assert!(e.contains("exactly one target"), "{e}");
}

#[test]
fn resolve_checks_keys_targets_shapes_and_dtypes() {
    let mut src = spec(&[
        ("conv1.weight", vec![4, 3]),
        ("bn1.weight", vec![4]),
        ("a", vec![4]),
        ("b", vec![4]),
    ]);
    src.tensors[0].original_name = "module.conv1.weight".into();
    let tgt = spec(&[
        ("stem.weight", vec![3, 4]),
        ("stem.bn.weight", vec![4]),
        ("ab", vec![2, 4]),
    ]);
    let m = Mapping::from_json(&json!({"format": FORMAT, "version": 2, "mapping": {
        "module.conv1.weight": {"target": "stem.weight", "transform": "transpose"},
        "bn1.weight": "stem.bn.weight"
    }, "conversions": [{"kind": "stack", "sources": ["a", "b"], "targets": ["ab"]}]}))
    .unwrap();
    let r = m.resolve(&src, Some(&tgt), "m.json").unwrap();
    assert_eq!(r.entries[0].source_index, 0);
    assert_eq!(r.entries[0].shape, vec![3, 4]);
    assert_eq!(r.conversions[0].sources, vec![2, 3]);
    assert_eq!(r.conversions[0].target_shapes(), vec![vec![2, 4]]);

    let e = Mapping::from_json(&json!({"module.conv1.weigth": "stem.weight"}))
        .unwrap()
        .resolve(&src, None, "m.json")
        .unwrap_err()
        .to_string();
    assert!(e.contains("did you mean 'module.conv1.weight'"), "{e}");
    let e = Mapping::from_json(&json!({"conv1.weight": "x", "bn1.weight": "x"}))
        .unwrap()
        .resolve(&src, None, "m.json")
        .unwrap_err()
        .to_string();
    assert!(e.contains("both map to 'x'"), "{e}");
    let e = Mapping::from_json(&json!({"conv1.weight": "stem.weight"}))
        .unwrap()
        .resolve(&src, Some(&tgt), "m.json")
        .unwrap_err()
        .to_string();
    assert!(e.contains("target expects [3, 4]"), "{e}");
    // A source used by an entry and a conversion.
    let e = Mapping::from_json(&json!({"mapping": {"a": "stem.bn.weight"},
        "conversions": [{"kind": "stack", "sources": ["a", "b"], "targets": ["ab"]}]}))
    .unwrap()
    .resolve(&src, None, "m.json")
    .unwrap_err()
    .to_string();
    assert!(e.contains("same source tensor"), "{e}");
    // Parts of different dtypes, named.
    src.tensors[3].dtype = "float16".into();
    let e = m
        .resolve(&src, Some(&tgt), "m.json")
        .unwrap_err()
        .to_string();
    assert!(e.contains("'a' is float32 but 'b' is float16"), "{e}");
}
