//! The `weightmap` built without libtorch (these run under `--no-default-features`): it
//! maps without loading libtorch when names and shapes decide, and hands what needs
//! libtorch (an execution order, `verify`, `trace`) to its libtorch build,
//! `weightmap-torch` beside it (`scripts/build.sh` puts it there), before writing anything.

use crate::support::{missing, repo, s};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The look-alike layers that only the target's execution order tells apart
/// (scripts/make_order_fixtures.py).
const ORDER_SOURCE: &str = "models/order_source.safetensors";
const ORDER_TARGET: &str = "models/order_target.pt";

/// Runs `binary` in the repository root with `args` and extra environment `env`.
fn run(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary);
    command
        .current_dir(repo())
        .env_remove("WEIGHTMAP_TORCH_BIN")
        .args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run weightmap")
}

/// The binary under test: the build without libtorch.
fn thin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weightmap"))
}

/// The libtorch build beside it, as scripts/build.sh leaves it.
fn torch_build() -> Option<PathBuf> {
    let path = thin().with_file_name("weightmap-torch");
    if path.is_file() {
        Some(path)
    } else {
        missing(&format!(
            "no libtorch build at {} (scripts/build.sh makes it)",
            path.display()
        ))
    }
}

#[test]
fn maps_without_libtorch_when_names_and_shapes_decide() {
    // No libtorch build to hand anything to: the mapping must not need one.
    let out = run(
        &thin(),
        &[
            "map",
            "models/demo_source.pth",
            "models/demo_target.pt",
            "--json",
        ],
        &[("WEIGHTMAP_TORCH_BIN", "/nonexistent/weightmap-torch")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("not traced"), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("models/demo_mapping_truth.json")).unwrap(),
    )
    .unwrap();
    let truth = truth.as_object().unwrap();
    let mappings = report["mappings"].as_array().unwrap();
    assert_eq!(mappings.len(), truth.len());
    for m in mappings {
        assert_eq!(truth[m["source"].as_str().unwrap()], m["target"], "{m}");
    }
}

#[test]
fn hands_what_needs_libtorch_to_the_libtorch_build() {
    let Some(torch) = torch_build() else { return };
    let dir = tempfile::tempdir().unwrap();
    // An order is needed: the same mapping file as the libtorch build writes itself.
    let (via_thin, direct) = (dir.path().join("a.json"), dir.path().join("b.json"));
    // Each build maps twice: first without the order, then with it. Handed over, the
    // libtorch build is told the order is needed and does not map first again.
    for (binary, out) in [(thin(), &via_thin), (torch.clone(), &direct)] {
        let o = run(
            &binary,
            &["map", ORDER_SOURCE, ORDER_TARGET, "-o", s(out)],
            &[("WEIGHTMAP_TIMINGS", "1")],
        );
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{stderr}");
        assert!(
            stderr.contains("traced for its execution order"),
            "{stderr}"
        );
        let mappings = stderr.matches("timing: structure").count();
        assert_eq!(mappings, 2, "{stderr}");
    }
    assert_eq!(
        std::fs::read_to_string(&via_thin).unwrap(),
        std::fs::read_to_string(&direct).unwrap()
    );
    // verify and trace run in the libtorch build, whatever their flags.
    let adapted = dir.path().join("adapted.safetensors");
    let mapping = dir.path().join("demo.json");
    for args in [
        &[
            "map",
            "models/demo_source.pth",
            "models/demo_target.pt",
            "-o",
            s(&mapping),
        ][..],
        &[
            "apply",
            "models/demo_source.pth",
            "--mapping",
            s(&mapping),
            "-o",
            s(&adapted),
        ],
    ] {
        let o = run(&thin(), args, &[("WEIGHTMAP_TORCH_BIN", "/nonexistent")]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let o = run(
        &thin(),
        &["verify", s(&adapted), "models/demo_target.pt", "--strict"],
        &[],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("PASS"), "{stdout}");
    let o = run(&thin(), &["trace", ORDER_TARGET, "--help"], &[]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("--input"));
}

#[test]
fn says_what_to_build_when_no_libtorch_build_is_found() {
    // A copy of the binary alone in a folder: no weightmap-torch beside it.
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("weightmap");
    std::fs::copy(thin(), &alone).unwrap();
    let out_file = dir.path().join("mapping.json");
    for args in [
        &["map", ORDER_SOURCE, ORDER_TARGET, "-o", s(&out_file)][..],
        &["verify", "x.safetensors", ORDER_TARGET],
    ] {
        let o = run(&alone, args, &[]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("needs libtorch"), "{stderr}");
        assert!(stderr.contains("scripts/build.sh"), "{stderr}");
        assert!(!out_file.exists(), "no partial output");
    }
}
