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
    let mut names: Vec<String> = (0..12)
        .map(|i| format!("encoder.blocks.{i}.attention.query_key_value.weight"))
        .collect();
    names.sort();
    let tensors: Vec<serde_json::Value> = names
        .iter()
        .map(|n| serde_json::json!({"name": n, "shape": [96, 32], "dtype": "float32"}))
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
