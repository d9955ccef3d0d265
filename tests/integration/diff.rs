//! `weightmap diff` end to end, on the fixtures of `scripts/make_diff_fixtures.py`
//! (models/diff/, with models/diff/expected.json saying what was done to B).

use crate::support::{repo, s, weightmap};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    let p = repo().join("models/diff").join(name);
    assert!(
        p.exists(),
        "missing fixture {}: run .venv/bin/python scripts/make_diff_fixtures.py",
        p.display()
    );
    p
}

/// Runs `diff --json A B`; the exit code and the report.
fn diff_json(a: &str, b: &str, extra: &[&str]) -> (i32, Value) {
    let (a, b) = (fixture(a), fixture(b));
    let mut args = vec!["diff", "--json", s(&a), s(&b)];
    args.extend_from_slice(extra);
    let out = weightmap(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), report)
}

fn pairs(report: &Value, key: &str) -> Vec<(String, String)> {
    report[key]
        .as_array()
        .unwrap_or_else(|| panic!("no list '{key}'"))
        .iter()
        .map(|e| {
            (
                e["a"].as_str().unwrap_or("").to_string(),
                e["b"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
}

fn expected_pairs(key: &str) -> Vec<(String, String)> {
    expected()[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn expected_renames() -> BTreeMap<String, String> {
    expected()["renamed"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn a_refactored_export_shows_exactly_what_was_done_to_it() {
    let (code, report) = diff_json("a.pt", "b.pt", &[]);
    assert_eq!(report["schema_version"], 1);
    assert_eq!(code, 1, "B differs from A: exit 1\n{report:#}");
    assert_eq!(report["same_weights"], false);

    assert_eq!(pairs(&report, "changed"), expected_pairs("changed"));
    assert_eq!(pairs(&report, "converted"), expected_pairs("converted"));
    let converted = &report["converted"][0];
    assert_eq!(
        (converted["a_dtype"].as_str(), converted["b_dtype"].as_str()),
        (Some("float32"), Some("float16"))
    );
    // float16 keeps about 3 decimal digits: the error after converting back is small
    // but not zero.
    let err = converted["max_abs_diff"].as_f64().unwrap();
    assert!(err > 0.0 && err < 1e-2, "{converted}");
    let changed = &report["changed"][0];
    assert!(
        changed["max_abs_diff"].as_f64().unwrap() > 1e-3,
        "{changed}"
    );
    assert!(changed["cosine"].as_f64().unwrap() < 1.0);

    let removed: Vec<String> = pairs(&report, "removed").into_iter().map(|p| p.0).collect();
    let added: Vec<String> = pairs(&report, "added").into_iter().map(|p| p.1).collect();
    let names = |key: &str| -> Vec<String> {
        expected()[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(removed, names("removed"));
    assert_eq!(added, names("added"));

    // Every other tensor is identical (same name) or renamed, each to the right name.
    let truth = expected_renames();
    let mut seen = BTreeSet::new();
    for (a, b) in pairs(&report, "identical") {
        assert_eq!(a, b, "identical means the same name");
        assert_eq!(
            truth.get(&a),
            Some(&b),
            "identical {a} is not unchanged in B"
        );
        seen.insert(a);
    }
    for (a, b) in pairs(&report, "renamed") {
        assert_ne!(a, b);
        assert_eq!(truth.get(&a), Some(&b), "{a} renamed to the wrong tensor");
        seen.insert(a);
    }
    assert_eq!(
        seen.len(),
        truth.len(),
        "every unchanged tensor accounted for"
    );
    assert!(!report["renamed"].as_array().unwrap().is_empty());
    assert!(!report["identical"].as_array().unwrap().is_empty());
}

#[test]
fn content_that_is_not_unique_is_left_to_the_engine_and_said() {
    let (_, report) = diff_json("a.pt", "b.pt", &[]);
    let renamed = report["renamed"].as_array().unwrap();
    let by = |how: &str| renamed.iter().filter(|e| e["paired_by"] == how).count();
    assert!(by("content") > 0 && by("engine") > 0, "{report:#}");
    let notes = report["notes"].as_array().unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.as_str().unwrap().contains("not unique")),
        "{notes:?}"
    );
}

#[test]
fn the_same_model_exported_twice_has_no_differences() {
    let (code, report) = diff_json("a.pt", "a_again.pt", &[]);
    assert_eq!(code, 0, "{report:#}");
    for key in ["renamed", "changed", "converted", "added", "removed"] {
        assert_eq!(
            report[key].as_array().unwrap().len(),
            0,
            "{key}: {report:#}"
        );
    }
    assert_eq!(
        report["identical"].as_array().unwrap().len(),
        expected_renames().len() + 3
    );
    let graph = &report["graph"];
    assert_eq!(graph["signature"]["same"], true);
    assert_eq!(graph["op_changes"].as_array().unwrap().len(), 0);
    assert_eq!(graph["moved"].as_array().unwrap().len(), 0);
}

#[test]
fn forward_graphs_of_two_exports_are_compared() {
    let (_, report) = diff_json("a.pt", "b.pt", &[]);
    let changes = report["graph"]["op_changes"].as_array().unwrap();
    // B's forward casts the float16 classifier weight back (aten::to) and no longer
    // averages the dropped buffer (one aten::mean fewer).
    let change = |op: &str| {
        changes
            .iter()
            .find(|c| c["op"] == op)
            .map(|c| (c["a"].as_u64().unwrap(), c["b"].as_u64().unwrap()))
    };
    assert_eq!(change("aten::to"), Some((0, 1)), "{changes:?}");
    assert_eq!(change("aten::mean"), Some((2, 1)), "{changes:?}");
    assert!(
        report["graph"]["ops"]["a"]["aten::conv2d"]
            .as_u64()
            .unwrap()
            >= 4
    );
}

#[test]
fn a_checkpoint_and_safetensors_of_the_same_weights_are_identical() {
    let (code, report) = diff_json("a.pth", "a.safetensors", &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        report["identical"].as_array().unwrap().len(),
        expected_renames().len() + 3
    );
    // And a TorchScript export against its own state dict.
    let (code, report) = diff_json("a.pt", "a.pth", &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["renamed"].as_array().unwrap().len(), 0);
}

#[test]
fn the_same_weights_under_other_names_are_renamed_and_the_same() {
    let (code, report) = diff_json("a.pth", "b_names.safetensors", &[]);
    assert_eq!(
        code, 0,
        "same weights under other names: exit 0\n{report:#}"
    );
    let truth = expected_renames();
    let mut n = 0;
    for key in ["identical", "renamed"] {
        for (a, b) in pairs(&report, key) {
            // The three tensors B's refactor changed keep their A values here.
            let want = truth.get(&a).cloned().unwrap_or_else(|| {
                expected_pairs("changed")
                    .into_iter()
                    .chain(expected_pairs("converted"))
                    .find(|p| p.0 == a)
                    .map(|p| p.1)
                    .unwrap_or_else(|| a.clone())
            });
            assert_eq!(b, want, "{a}");
            n += 1;
        }
    }
    assert_eq!(n, truth.len() + 3);
}

#[test]
fn a_tolerance_makes_a_small_change_close() {
    let (_, strict) = diff_json("a.pt", "b.pt", &[]);
    assert_eq!(strict["changed"][0]["close"], false);
    let (_, loose) = diff_json("a.pt", "b.pt", &["--tolerance", "1"]);
    assert_eq!(loose["changed"][0]["close"], true);
    assert_eq!(loose["converted"][0]["close"], true);
    assert_eq!(loose["tolerance"], 1.0);
}

#[test]
fn the_text_report_starts_with_the_summary_and_html_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("diff.html");
    let (a, b) = (fixture("a.pt"), fixture("b.pt"));
    let out = weightmap(&["diff", s(&a), s(&b), "--report", s(&html)]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap();
    assert!(
        first.contains("renamed")
            && first.contains("1 changed (max abs diff")
            && first.contains("1 converted")
            && first.contains("1 added")
            && first.contains("1 removed"),
        "{text}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("layers.1.conv1.weight") && page.contains("id=\"summary\""));
}

#[test]
fn bad_input_is_refused_with_exit_2_and_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    // A TorchScript archive cut in half.
    let whole = std::fs::read(fixture("a.pt")).unwrap();
    let cut = dir.path().join("cut.pt");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let good = fixture("a.pth");
    let out = weightmap(&["diff", s(&good), s(&cut)]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cut.pt"), "{err}");
    assert!(out.stdout.is_empty());

    // A model spec has names and shapes but no values to compare.
    let spec = dir.path().join("spec.json");
    std::fs::write(
        &spec,
        r#"{"tensors": [{"name": "w", "shape": [2], "dtype": "float32"}]}"#,
    )
    .unwrap();
    let out = weightmap(&["diff", s(&good), s(&spec)]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.json") && err.contains("no values"),
        "{err}"
    );

    // A tensor whose data runs past the end of a safetensors file.
    let st = std::fs::read(fixture("a.safetensors")).unwrap();
    let short = dir.path().join("short.safetensors");
    std::fs::write(&short, &st[..st.len() - 100]).unwrap();
    let out = weightmap(&["diff", s(&good), s(&short)]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("short.safetensors"));

    // A wrong flag value.
    let out = weightmap(&["diff", s(&good), s(&good), "--tolerance=-1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tolerance"));
    // The HTML report is not written when the diff fails.
    let html = dir.path().join("r.html");
    let out = weightmap(&["diff", s(&good), s(&cut), "--report", s(&html)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!html.exists());
}

#[test]
fn map_by_content_pairs_unique_content_first_and_the_engine_the_rest() {
    let (a, b) = (fixture("a.pth"), fixture("b_names.safetensors"));
    let out = weightmap(&["map", "--by-content", "--json", s(&a), s(&b)]);
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let truth = expected_renames();
    let changed: BTreeMap<String, String> = expected_pairs("changed")
        .into_iter()
        .chain(expected_pairs("converted"))
        .collect();
    let mappings = report["mappings"].as_array().unwrap();
    // Every tensor of A but the dropped buffer has its counterpart under B's names.
    assert_eq!(mappings.len(), truth.len() + changed.len() + 1);
    let mut by_content = 0;
    for m in mappings {
        let (src, dst) = (m["source"].as_str().unwrap(), m["target"].as_str().unwrap());
        let want = truth
            .get(src)
            .or_else(|| changed.get(src))
            .map(String::as_str)
            .unwrap_or(src);
        assert_eq!(dst, want, "{src}");
        if m["resolution_detail"]
            .as_str()
            .unwrap()
            .contains("equal content")
        {
            by_content += 1;
        }
    }
    // The BatchNorm tensors left at zeros and ones are not unique: the engine maps them.
    let pairs = report["by_content"]["pairs"].as_u64().unwrap() as usize;
    assert_eq!(pairs, by_content);
    assert!(pairs > 0 && pairs < mappings.len(), "{pairs}");
    assert!(!report["by_content"]["notes"].as_array().unwrap().is_empty());

    // Without values there is no content to compare.
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.json");
    let out = weightmap(&["inspect", "--json", s(&b)]);
    std::fs::write(&spec, &out.stdout).unwrap();
    let out = weightmap(&["map", "--by-content", s(&a), s(&spec)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.json") && err.contains("no values"),
        "{err}"
    );
}
