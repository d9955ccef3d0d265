//! Unit tests of `tree`.
use super::*;
use crate::spec::Format;

fn spec(path: &str, names: &[(&str, Vec<i64>)]) -> ModelSpec {
    ModelSpec::from_shapes(path, Format::SpecJson, names)
}

#[test]
fn common_module_is_the_shared_prefix() {
    assert_eq!(common_module("a.b.c", "a.b.d"), "a.b");
    assert_eq!(common_module("a.b", "a.b"), "a.b");
    assert_eq!(common_module("x", "y"), "");
}

#[test]
fn side_by_side_marks_counterparts_and_unmatched() {
    let s = spec(
        "s",
        &[
            ("layer1.0.conv.weight", vec![4, 4]),
            ("layer1.0.bn.running_mean", vec![4]),
            ("head.bias", vec![3]),
        ],
    );
    let t = spec(
        "t",
        &[
            ("stages.0.block.conv.weight", vec![4, 4]),
            ("stages.0.block.norm.running_mean", vec![4]),
            ("fc.bias", vec![7]),
        ],
    );
    let pairs = [
        TreePair {
            source: 0,
            target: 0,
            score: Some(1.0),
        },
        TreePair {
            source: 1,
            target: 1,
            score: None,
        },
    ];
    let out = render_side_by_side(&s, &t, &pairs, &TreeOptions::default());
    assert!(out.contains("✓ layer1  → stages.0.block"), "{out}");
    assert!(
        out.contains("✓ conv  W[4,4]  → stages.0.block.conv"),
        "{out}"
    );
    assert!(out.contains("buf:running_mean[4]"), "{out}");
    assert!(out.contains("✗ head  ✗B[3]"), "{out}");
    assert!(out.contains("│ ✓ stages  → layer1.0"), "{out}");
    assert!(
        out.contains("◐ (top level)") || !out.contains("(top level)"),
        "{out}"
    );
    let folded = render_side_by_side(
        &s,
        &t,
        &pairs,
        &TreeOptions {
            depth: Some(1),
            ..TreeOptions::default()
        },
    );
    assert!(
        folded.contains("✓ layer1  (2 tensors, 2 matched)  → stages.0.block"),
        "{folded}"
    );
    assert!(!folded.contains("conv"), "{folded}");
}

#[test]
fn numbered_siblings_in_numeric_order_among_the_others() {
    let names: Vec<(String, Vec<i64>)> = [
        "embed",
        "layers.0",
        "layers.1",
        "layers.10",
        "layers.2",
        "norm",
    ]
    .iter()
    .enumerate()
    .map(|(i, m)| (format!("{m}.weight"), vec![i as i64 + 1]))
    .collect();
    let names: Vec<(&str, Vec<i64>)> = names.iter().map(|(n, s)| (n.as_str(), s.clone())).collect();
    let out = render_tree(&spec("s", &names), &TreeOptions::default());
    let order: Vec<&str> = out
        .lines()
        .filter_map(|l| l.trim_start().split(' ').next())
        .filter(|w| ["embed", "layers", "norm", "0", "1", "2", "10"].contains(w))
        .collect();
    assert_eq!(
        order,
        ["embed", "layers", "0", "1", "2", "10", "norm"],
        "{out}"
    );
}

#[test]
fn alike_numbered_modules_collapse_into_one_block() {
    let mut names: Vec<(String, Vec<i64>)> = Vec::new();
    for l in 0..4 {
        for e in 0..3 {
            names.push((format!("layers.{l}.experts.{e}.w1.weight"), vec![8, 4]));
        }
        names.push((format!("layers.{l}.gate.weight"), vec![3, 4]));
    }
    names.push(("layers.4.gate.weight".into(), vec![5, 4])); // unlike the others
    let names: Vec<(&str, Vec<i64>)> = names.iter().map(|(n, s)| (n.as_str(), s.clone())).collect();
    let s = spec("s", &names);
    let t = spec("t", &[("g.weight", vec![3, 4])]);
    let pairs: Vec<TreePair> = [3usize, 7, 11, 15]
        .iter()
        .map(|&i| TreePair {
            source: i,
            target: 0,
            score: None,
        })
        .collect();
    let out = render_side_by_side(&s, &t, &pairs, &TreeOptions::default());
    assert!(out.contains("◐ {0..3}  4×  → g"), "{out}");
    assert!(out.contains("    ✗ experts"), "{out}");
    assert!(out.contains("  ✗ 4\n"), "{out}");
    assert_eq!(out.matches("✗ experts").count(), 1, "{out}");
    assert_eq!(out.matches("✗ w1").count(), 1, "{out}");
    assert!(out.contains("{=K}"), "{out}");
    let plain = render_tree(&spec("s", &names[..4]), &TreeOptions::default());
    // One layer: its experts are the outermost run of alike modules.
    assert!(
        plain.contains("  0\n") && plain.contains("{0..2}  3×"),
        "{plain}"
    );
    // Four layers: the experts inside the collapsed layers collapse too.
    assert!(out.contains("      ✗ {0..2}  3×\n"), "{out}");
}

#[test]
fn lines_fit_the_width_and_keep_their_colors() {
    let names: Vec<(String, Vec<i64>)> = (0..3)
        .map(|i| {
            (
                format!("encoder.blocks.{i}.attention.query_key_value.weight"),
                vec![96, 32],
            )
        })
        .collect();
    let names: Vec<(&str, Vec<i64>)> = names.iter().map(|(n, s)| (n.as_str(), s.clone())).collect();
    let s = spec(
        "a/rather/long/path/to/the/source/checkpoint.safetensors",
        &names,
    );
    let t = spec("t.safetensors", &[("qkv.weight", vec![96, 32])]);
    let pairs = [TreePair {
        source: 0,
        target: 0,
        score: None,
    }];
    for width in [30, 60, 80] {
        for color in [false, true] {
            let opts = TreeOptions {
                width: Some(width),
                color,
                ..TreeOptions::default()
            };
            for out in [
                render_side_by_side(&s, &t, &pairs, &opts),
                render_tree(&s, &opts),
            ] {
                for line in out.lines() {
                    let plain = strip_ansi(line);
                    assert!(plain.chars().count() <= width, "{width}: {plain:?}");
                }
                if color {
                    assert!(out.contains("\x1b["), "{out}");
                }
            }
        }
    }
    // Both sides start in the same column on every row.
    let opts = TreeOptions {
        width: Some(60),
        ..TreeOptions::default()
    };
    let out = render_side_by_side(&s, &t, &pairs, &opts);
    let columns: std::collections::BTreeSet<usize> = out
        .lines()
        .filter_map(|l| l.find(COLUMN_SEPARATOR).map(|b| l[..b].chars().count()))
        .collect();
    assert_eq!(columns.len(), 1, "{out}");
    assert!(out.contains(CUT_MARK), "{out}");
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn single_tree_has_badges_and_no_marks() {
    let s = spec(
        "s",
        &[("cls_token", vec![1, 1, 8]), ("blocks.0.fc.bias", vec![8])],
    );
    let out = render_tree(&s, &TreeOptions::default());
    assert!(out.contains("(top level)  cls_token[1,1,8]"), "{out}");
    assert!(out.contains("    fc  B[8]"), "{out}");
    assert!(
        !out.contains(MARK_MATCHED) && !out.contains(MARK_UNMATCHED),
        "{out}"
    );
}
