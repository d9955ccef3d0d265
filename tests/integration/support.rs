//! What the integration tests share: the repository root, the binary, the project's Python
//! oracle and the benchmark corpus.
//!
//! A prerequisite that is missing ([`missing`]) fails the test when `WEIGHTMAP_FULL_TESTS=1`
//! (as `.ci/run` sets it, so CI never passes by skipping); elsewhere the test says what is
//! missing and skips, so a partial checkout still runs the rest.

// Without libtorch only the header-only modules run, and they use part of this.
#![cfg_attr(not(feature = "libtorch"), allow(dead_code))]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Says that `what` is missing: a failure under `WEIGHTMAP_FULL_TESTS=1`, else a skip
/// message. Returns `None` so callers can `?`/`let else` on it.
pub fn missing<T>(what: &str) -> Option<T> {
    if std::env::var("WEIGHTMAP_FULL_TESTS").is_ok_and(|v| v == "1") {
        panic!("missing test prerequisite: {what} (WEIGHTMAP_FULL_TESTS=1 makes this a failure; run scripts/setup.sh)");
    }
    eprintln!(
        "skipped: {what} (run scripts/setup.sh; WEIGHTMAP_FULL_TESTS=1 makes this a failure)"
    );
    None
}

/// The project's Python (torch, safetensors), if set up.
pub fn python() -> Option<PathBuf> {
    let p = repo().join(".venv/bin/python");
    if p.exists() {
        Some(p)
    } else {
        missing(&format!("no Python oracle at {}", p.display()))
    }
}

/// The benchmark folder (`../shared/bench`, with `score.py` and `corpus/`), if present.
pub fn bench_dir() -> Option<PathBuf> {
    let p = repo().join("../shared/bench");
    if p.join("score.py").is_file() && p.join("corpus").is_dir() {
        Some(p)
    } else {
        missing(&format!("no benchmark corpus at {}", p.display()))
    }
}

/// The benchmark corpus (`../shared/bench/corpus`), if present.
pub fn corpus() -> Option<PathBuf> {
    Some(bench_dir()?.join("corpus"))
}

/// The corpus' case folders (those with a case.json), sorted; at least one.
pub fn corpus_cases() -> Option<Vec<PathBuf>> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(corpus()?)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").exists())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no case.json in the benchmark corpus");
    Some(cases)
}

/// Runs the binary in the repository root (with no `COLUMNS`, so text is never cut to
/// the width of the terminal the tests run in).
pub fn weightmap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weightmap"))
        .current_dir(repo())
        .env_remove("COLUMNS")
        .args(args)
        .output()
        .expect("run weightmap")
}

/// Runs `script` with `python -c`; its standard output (the test fails if it fails).
pub fn run_python(py: &Path, script: &str, args: &[&str]) -> String {
    let out = Command::new(py)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
