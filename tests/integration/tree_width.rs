//! `tree` fits `COLUMNS` and lists numbered modules in numeric order.

use crate::support::{repo, s};
use std::process::Command;

fn tree(args: &[&str], columns: Option<&str>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weightmap"));
    cmd.current_dir(repo())
        .arg("tree")
        .args(args)
        .env_remove("COLUMNS");
    if let Some(c) = columns {
        cmd.env("COLUMNS", c);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A model spec of 12 numbered blocks, written in name order (as safetensors sorts keys).
fn twelve_blocks(dir: &std::path::Path) -> std::path::PathBuf {
    // Shapes differ, so that the blocks are not collapsed into one pattern.
    let mut names: Vec<(String, usize)> = (0..12)
        .map(|i| {
            (
                format!("encoder.blocks.{i}.attention.query_key_value.weight"),
                i + 1,
            )
        })
        .collect();
    names.sort();
    let tensors: Vec<serde_json::Value> = names
        .iter()
        .map(|(n, d)| serde_json::json!({"name": n, "shape": [d, 32], "dtype": "float32"}))
        .collect();
    let path = dir.join("blocks.json");
    std::fs::write(&path, serde_json::json!({"tensors": tensors}).to_string()).unwrap();
    path
}

#[test]
fn tree_fits_columns_and_orders_indices_numerically() {
    let dir = tempfile::tempdir().unwrap();
    let spec = twelve_blocks(dir.path());
    let demo = ["models/demo_source.pth", "models/demo_target_state.pth"];
    for width in [40usize, 60, 100] {
        let w = width.to_string();
        for out in [tree(&demo, Some(&w)), tree(&[s(&spec)], Some(&w))] {
            for line in out.lines() {
                assert!(line.chars().count() <= width, "COLUMNS={width}: {line:?}");
            }
        }
    }
    // Without COLUMNS and not on a terminal, nothing is cut.
    let whole = tree(&demo, None);
    assert!(whole.lines().any(|l| l.chars().count() > 100), "{whole}");
    assert!(!whole.contains('…'), "{whole}");
    let one = tree(&[s(&spec)], Some("60"));
    let numbers: Vec<u32> = one
        .lines()
        .filter_map(|l| l.trim_start().split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(numbers, (0..12).collect::<Vec<_>>(), "{one}");
}

/// `tree SOURCE TARGET` marks every pair `map` finds, also on HF targets whose names are
/// written with a `model.` prefix the engine strips.
#[cfg(feature = "libtorch")]
#[test]
fn tree_marks_every_pair_map_finds_on_corpus_cases() {
    let Some(cases) = crate::support::corpus_cases() else {
        return;
    };
    for case in cases {
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(case.join("case.json")).unwrap()).unwrap();
        if meta["source"]["num_tensors"].as_u64().unwrap_or(u64::MAX) > 500 {
            continue; // the large cases take long and add nothing here
        }
        let (src, tgt) = (case.join("source.safetensors"), case.join("target.pt"));
        let map = crate::support::weightmap(&["map", s(&src), s(&tgt), "--json"]);
        assert!(
            map.status.success(),
            "{}",
            String::from_utf8_lossy(&map.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&map.stdout).unwrap();
        let converted: std::collections::BTreeSet<&str> = report["conversions"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["sources"].as_array().unwrap())
            .map(|n| n.as_str().unwrap())
            .collect();
        let matched = report["counts"]["matched"].as_u64().unwrap() + converted.len() as u64;
        let text = tree(&[s(&src), s(&tgt)], None);
        let summary = text
            .lines()
            .find(|l| l.contains(" pairs; "))
            .unwrap_or_else(|| panic!("no summary line:\n{text}"));
        // "N pairs; a of b source and c of d target tensors unmatched"
        let words: Vec<&str> = summary.split(' ').collect();
        let source_unmatched: u64 = words[2].parse().unwrap();
        let source_total: u64 = words[4].parse().unwrap();
        assert!(
            source_total - source_unmatched >= matched,
            "{}: tree marks {} source tensors, map paired {matched}\n{summary}",
            case.display(),
            source_total - source_unmatched
        );
    }
}
