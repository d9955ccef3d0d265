//! What the end-to-end tests share: the repository root, the binary, the project's Python
//! oracle and the benchmark corpus (each optional, with a message saying why a test skips).

#![allow(dead_code)] // each test file uses part of it

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The project's Python (torch, safetensors), or `None` with a message.
pub fn python() -> Option<PathBuf> {
    let p = repo().join(".venv/bin/python");
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "skipped: no Python oracle at {} (run scripts/setup.sh)",
            p.display()
        );
        None
    }
}

/// The benchmark corpus (`../shared/bench/corpus`), or `None` with a message.
pub fn corpus() -> Option<PathBuf> {
    let p = repo().join("../shared/bench/corpus");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("skipped: no benchmark corpus at {}", p.display());
        None
    }
}

/// The corpus' case folders (those with a case.json), sorted, or `None` with a message.
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

/// Runs the binary in the repository root.
pub fn weightmap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weightmap"))
        .current_dir(repo())
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
