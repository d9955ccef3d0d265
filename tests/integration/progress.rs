//! Progress on standard error: each stage names itself with a count and a total, only on a
//! terminal; `--quiet` and pipes stay silent. A pseudo-terminal comes from util-linux's
//! `script`, and `WEIGHTMAP_PROGRESS_AFTER_MS=0` shows bars at once (they normally wait a
//! second, longer than these small models take).

use crate::support::{missing, repo, s};
use std::path::Path;
use std::process::Command;

/// Runs the binary with `args` on a pseudo-terminal (stdout and stderr both go to it) and
/// returns everything it drew; `None` when `script` is not installed.
fn on_terminal(args: &[&str]) -> Option<String> {
    if !Path::new("/usr/bin/script").is_file() {
        return missing("util-linux `script` (a pseudo-terminal for the progress test)");
    }
    let cmd = std::iter::once(env!("CARGO_BIN_EXE_weightmap"))
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("/usr/bin/script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(repo())
        .env("WEIGHTMAP_PROGRESS_AFTER_MS", "0")
        .env_remove("COLUMNS")
        .output()
        .expect("run script");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

const STAGES: [&str; 4] = [
    "loading TorchScript",
    "tracing tensors",
    "structure",
    "reviewing pairs",
];

fn map_args(out: &Path) -> Vec<String> {
    [
        "map",
        "models/demo_source.pth",
        "models/demo_target.pt",
        "--input",
        "1x3x32x32",
        // Traced whatever the mapping needs (auto traces only when order would settle
        // something), so that loading and tracing show.
        "--order",
        "dynamic",
        "--force",
        "-o",
        s(out),
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn a_terminal_sees_each_stage_with_a_count_and_a_total() {
    let dir = tempfile::tempdir().unwrap();
    let args = map_args(&dir.path().join("m.json"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some(drawn) = on_terminal(&args) else {
        return;
    };
    for stage in STAGES {
        assert!(drawn.contains(stage), "no '{stage}' bar in:\n{drawn}");
    }
    // Counts come with their totals: the demo target has 44 tensors, 36 module levels.
    let counted = |stage: &str, total: &str| {
        drawn
            .split('\r')
            .any(|line| line.contains(stage) && line.contains(&format!("/{total} ")))
    };
    assert!(counted("tracing tensors", "44"), "{drawn}");
    assert!(counted("reviewing pairs", "44"), "{drawn}");

    // Writing counts bytes.
    let written = dir.path().join("out.safetensors");
    let mapping = dir.path().join("m.json");
    let Some(drawn) = on_terminal(&[
        "apply",
        "models/demo_source.pth",
        "--mapping",
        s(&mapping),
        "-o",
        s(&written),
    ]) else {
        return;
    };
    assert!(
        drawn
            .split('\r')
            .any(|l| l.contains("writing") && l.contains("KiB/")),
        "{drawn}"
    );

    // --quiet draws nothing, even on a terminal.
    let mut quiet = args.clone();
    quiet.push("--quiet");
    let drawn = on_terminal(&quiet).unwrap();
    for stage in STAGES {
        assert!(!drawn.contains(stage), "--quiet drew '{stage}':\n{drawn}");
    }
}

#[test]
fn a_pipe_sees_no_progress() {
    let dir = tempfile::tempdir().unwrap();
    let args = map_args(&dir.path().join("m.json"));
    let out = Command::new(env!("CARGO_BIN_EXE_weightmap"))
        .args(&args)
        .current_dir(repo())
        .env("WEIGHTMAP_PROGRESS_AFTER_MS", "0")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.trim().is_empty(),
        "stderr of a piped run: {stderr:?}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        STAGES.iter().all(|st| !stdout.contains(st)) && !stdout.contains('\r'),
        "{stdout}"
    );
}
