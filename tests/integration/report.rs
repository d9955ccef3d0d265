//! Reports people read, as the `weightmap` binary prints them: the `map` analysis, the
//! side-by-side trees and `explain`, on the committed demo pair (models/demo_source.pth,
//! a torch.save checkpoint, against models/demo_target.pt, a TorchScript model).
//!
//! Output is compared exactly with snapshot files in tests/integration/snapshots/. Run with
//! `UPDATE_SNAPSHOTS=1` to rewrite them after an intended change, and read the diff.
//! The binary's stdout is a pipe here, so colors must be off without any flag.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::repo as root;

/// Runs the binary in the repository root (so paths in the output are the relative ones
/// given here), with a clean color environment.
fn weightmap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weightmap"))
        .args(args)
        .current_dir(root())
        .env_remove("NO_COLOR")
        .output()
        .expect("run weightmap")
}

/// Writes the HTML report of `source` → `target` into `dir` and returns the data the page
/// carries (its `wm-data` JSON).
fn page_data(source: &Path, target: &Path, dir: &Path) -> serde_json::Value {
    let page = dir.join("page.html");
    stdout_ok(&[
        "report",
        source.to_str().unwrap(),
        target.to_str().unwrap(),
        "-o",
        page.to_str().unwrap(),
    ]);
    let html = std::fs::read_to_string(&page).unwrap();
    let open = "<script type=\"application/json\" id=\"wm-data\">";
    let start = html.find(open).unwrap() + open.len();
    let end = start + html[start..].find("</script>").unwrap();
    serde_json::from_str(&html[start..end]).unwrap()
}

fn stdout_ok(args: &[&str]) -> String {
    let out = weightmap(args);
    assert!(
        out.status.success(),
        "weightmap {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Compares `actual` with tests/integration/snapshots/NAME, or rewrites it when UPDATE_SNAPSHOTS=1.
/// A mismatch leaves the actual text beside the test artifacts for a diff.
fn check_snapshot(name: &str, actual: &str) {
    let path = root().join("tests/integration/snapshots").join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        eprintln!("updated {}", path.display());
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_SNAPSHOTS=1 to create it",
            path.display()
        )
    });
    if expected != actual {
        let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../test-artifacts");
        std::fs::create_dir_all(&artifacts).unwrap();
        let saved = artifacts.join(format!("{name}.actual"));
        std::fs::write(&saved, actual).unwrap();
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{name} differs from {} at line {}:\n  expected: {:?}\n  actual:   {:?}\nactual output saved to {}; \
             if the change is intended, rerun with UPDATE_SNAPSHOTS=1",
            path.display(),
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first),
            saved.display()
        );
    }
}

const SOURCE: &str = "models/demo_source.pth";
const TARGET: &str = "models/demo_target.pt";

#[test]
fn map_analysis_snapshot() {
    let out = stdout_ok(&["map", SOURCE, TARGET, "--all"]);
    assert!(
        !out.contains('\x1b'),
        "colors must be off when stdout is not a terminal"
    );
    check_snapshot("map_demo.txt", &out);
}

#[test]
fn map_analysis_top_limits_rows_and_says_so() {
    let all = stdout_ok(&["map", SOURCE, TARGET, "--all"]);
    let top = stdout_ok(&["map", SOURCE, TARGET, "--top", "3"]);
    check_snapshot("map_demo_top3.txt", &top);
    let rows = |s: &str| {
        s.lines()
            .filter(|l| l.contains(" → ") || l.contains("  GROUP") || l.contains("  INDIV"))
            .count()
    };
    assert!(
        rows(&top) < rows(&all),
        "--top 3 shows fewer rows than --all"
    );
    assert!(top.contains("--all lists every one"), "{top}");
}

#[test]
fn map_json_stays_machine_readable() {
    let out = stdout_ok(&["map", SOURCE, TARGET, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("--json prints one JSON document");
    assert!(
        v["mappings"].as_array().is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}

#[test]
fn tree_side_by_side_snapshot() {
    let out = stdout_ok(&["tree", SOURCE, TARGET]);
    assert!(!out.contains('\x1b'));
    check_snapshot("tree_demo.txt", &out);
}

#[test]
fn tree_with_mapping_file_and_depth_snapshot() {
    let out = stdout_ok(&[
        "tree",
        SOURCE,
        TARGET,
        "--mapping",
        "models/demo_mapping_truth.json",
        "--depth",
        "2",
    ]);
    check_snapshot("tree_demo_truth_depth2.txt", &out);
}

#[test]
fn tree_of_one_model_snapshot() {
    let out = stdout_ok(&["tree", TARGET]);
    check_snapshot("tree_demo_target.txt", &out);
}

#[test]
fn tree_rejects_a_mapping_that_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"conv1.weight": "no.such.target"}"#).unwrap();
    let out = weightmap(&["tree", SOURCE, TARGET, "--mapping", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no.such.target") && err.contains("bad.json"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "no partial output");
}

#[test]
fn explain_snapshot() {
    let out = stdout_ok(&["explain", SOURCE, TARGET, "layer1.1.conv2.weight"]);
    assert!(!out.contains('\x1b'));
    check_snapshot("explain_demo_layer1.1.conv2.txt", &out);
}

#[test]
fn explain_shows_every_part_with_bars_and_why_alternatives_lost() {
    let out = stdout_ok(&[
        "explain",
        SOURCE,
        TARGET,
        "layer1.0.bn1.weight",
        "--alternatives",
        "2",
    ]);
    for part in [
        "shape (",
        "name",
        "tokens (Jaccard)",
        "edit distance",
        "common substring",
        "hierarchy",
        "depth",
        "path (matched parents)",
        "order",
        "total",
    ] {
        assert!(out.contains(part), "missing {part:?}:\n{out}");
    }
    assert!(out.contains('█') || out.contains('░'), "bars:\n{out}");
    let alternatives = out
        .lines()
        .filter(|l| l.trim_start().starts_with("lost:"))
        .count();
    assert_eq!(
        alternatives, 2,
        "--alternatives 2 lists two, each with why it lost:\n{out}"
    );
}

#[test]
fn explain_unknown_name_suggests_close_ones() {
    let out = weightmap(&["explain", SOURCE, TARGET, "layer1.0.conv1.wieght"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("did you mean 'layer1.0.conv1.weight'"),
        "{err}"
    );
    assert!(err.contains(SOURCE), "names the file: {err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn no_color_and_pipes_disable_escape_codes_but_the_library_can_color() {
    let out = Command::new(env!("CARGO_BIN_EXE_weightmap"))
        .args(["map", SOURCE, TARGET])
        .current_dir(root())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains('\x1b'));

    // The renderer itself colors scores by band when asked.
    use weightmap::mapper::SuggestOptions;
    use weightmap::report::terminal::{map_to_text, MapTextOptions, Rows};
    let mapper = weightmap::pipeline::prepare(&weightmap::pipeline::MapRequest::new(
        &root().join(SOURCE),
        &root().join(TARGET),
    ))
    .unwrap()
    .mapper;
    let result = mapper.suggest_mapping(&SuggestOptions::default()).unwrap();
    let colored = map_to_text(
        &result,
        &MapTextOptions {
            color: true,
            rows: Rows::All,
        },
    );
    let plain = map_to_text(
        &result,
        &MapTextOptions {
            color: false,
            rows: Rows::All,
        },
    );
    assert!(colored.contains("\x1b[32m"), "green scores");
    assert!(!plain.contains('\x1b'));
    let strip = |s: &str| {
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
    };
    assert_eq!(
        strip(&colored),
        plain,
        "color changes nothing but escape codes"
    );
}

/// A threshold above some scores leaves tensors unmatched: the analysis lists them on
/// both sides with the reason, and `explain` says why for one of them.
#[test]
fn unmatched_with_reasons_snapshot() {
    let out = stdout_ok(&["map", SOURCE, TARGET, "--threshold", "0.8", "--top", "5"]);
    assert!(out.contains("below threshold"), "{out}");
    check_snapshot("map_demo_threshold0.8.txt", &out);
    let explained = stdout_ok(&["explain", SOURCE, TARGET, "fc.weight", "--threshold", "0.8"]);
    assert!(
        explained.contains("unmatched") && explained.contains("Best candidate:"),
        "{explained}"
    );
    check_snapshot("explain_demo_unmatched_fc.txt", &explained);
}

/// The HTML report lists the target tree in execution order when the target's is known:
/// models/order_target.pt registers gamma, alpha, beta and runs beta, alpha, gamma.
#[test]
fn html_report_lists_the_target_in_execution_order() {
    let dir = tempfile::tempdir().unwrap();
    let data = page_data(
        Path::new("models/order_source.safetensors"),
        Path::new("models/order_target.pt"),
        dir.path(),
    );
    let modules: Vec<&str> = data["t"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[0].as_str().unwrap().split('.').next().unwrap())
        .collect();
    let mut runs = modules.clone();
    runs.dedup();
    assert_eq!(runs, ["beta", "alpha", "gamma"], "{modules:?}");
}

/// The page gets the unmatched lists collapsed as the terminal prints them: one line per
/// pattern, each with the tensors it stands for, and the patterns expand to exactly those.
#[test]
fn html_report_collapses_unmatched_lists_into_patterns() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target) = crate::patterns::repeated_unmatched_specs(dir.path());
    let data = page_data(&source, &target, dir.path());
    for (side, tensors, unmatched, expected) in [
        ("s", "s", "us", "layers.{0..7}.old.bias"),
        ("t", "t", "ut", "blocks.{0..7}.gate.weight"),
    ] {
        let lines = data["up"][side].as_array().unwrap();
        let names = |indices: &serde_json::Value| -> Vec<String> {
            indices
                .as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    let i = i.as_u64().unwrap() as usize;
                    data[tensors][i][0].as_str().unwrap().to_string()
                })
                .collect()
        };
        assert_eq!(lines.len(), 1, "{side}: one line for 8 tensors: {lines:?}");
        let [pattern, shape, reason, members] = lines[0].as_array().unwrap().as_slice() else {
            panic!("{side}: [pattern, shape, reason, members]: {lines:?}");
        };
        assert_eq!(pattern, expected, "{lines:?}");
        assert!(shape.as_str().unwrap().starts_with('['), "{shape}");
        assert!(!reason.as_str().unwrap().is_empty());
        let mut listed = names(members);
        listed.sort();
        let mut expanded = crate::patterns::expand(pattern.as_str().unwrap());
        expanded.sort();
        assert_eq!(
            listed, expanded,
            "{side}: the members are what the pattern says"
        );
        // ... and exactly the unmatched tensors the page marks.
        let mut marked: Vec<String> = data[unmatched]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                data[tensors][u[0].as_u64().unwrap() as usize][0]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        marked.sort();
        assert_eq!(listed, marked);
    }
}
