//! What PyTorch itself says about the trace fixtures and the bench targets, shared by
//! tests/trace.rs and tests/torchscript.rs.
//!
//! Fixtures: models/trace_expected.json, written by scripts/make_trace_fixtures.py.
//! Bench targets: the same script run now with `--bench-out` (the bench is read-only and
//! large, so its expectations are not committed); `None` when the bench or the project's
//! Python is absent (see [`crate::support::missing`]).

#![allow(dead_code)] // each test file uses part of it

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub use crate::support::repo as root;

/// models/trace_expected.json: {fixture: {file, inputs, state_dict, hook_order, ...}}.
pub fn fixtures() -> serde_json::Map<String, Value> {
    let path = root().join("models/trace_expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

/// {case: {inputs, state_dict, profiler_order, untouched}} for every bench target.pt.
pub fn bench() -> Option<&'static serde_json::Map<String, Value>> {
    static BENCH: OnceLock<Option<serde_json::Map<String, Value>>> = OnceLock::new();
    BENCH
        .get_or_init(|| {
            crate::support::corpus()?;
            let python = crate::support::python()?;
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("bench.json");
            let status = Command::new(&python)
                .arg(root().join("scripts/make_trace_fixtures.py"))
                .arg("--bench-out")
                .arg(&out)
                .stderr(std::process::Stdio::null())
                .status()
                .expect("run scripts/make_trace_fixtures.py");
            assert!(
                status.success(),
                "scripts/make_trace_fixtures.py --bench-out failed: {status}"
            );
            let text = std::fs::read_to_string(&out).unwrap();
            Some(
                serde_json::from_str::<Value>(&text)
                    .unwrap()
                    .as_object()
                    .unwrap()
                    .clone(),
            )
        })
        .as_ref()
}

pub fn bench_target(case: &str) -> PathBuf {
    root()
        .join("../shared/bench/corpus")
        .join(case)
        .join("target.pt")
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The first name of each state-dict name's tensor (itself unless it is a tied alias).
pub fn canonical_names(state_dict: &Value) -> std::collections::HashMap<String, String> {
    state_dict
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_string();
            let first = e["tied_to"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| name.clone());
            (name, first)
        })
        .collect()
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}
