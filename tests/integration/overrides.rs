//! Correcting a decision: `map -o` keeps an existing file without `--force`; `--pin`,
//! `--forbid` and `--rules` constrain the engine and the rest is re-solved; `explain`
//! reviews an edited mapping; HF targets whose keys start with `model.` take the mapping
//! `map` wrote; `map --state-dict-key` and the note saying which nested dict was used.

use crate::support::{corpus, python, run_python, s, weightmap};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn case(name: &str) -> Option<PathBuf> {
    let dir = corpus()?.join(name);
    assert!(dir.join("case.json").is_file(), "no corpus case {name}");
    Some(dir)
}

fn ok(args: &[&str]) -> String {
    let out = weightmap(args);
    assert!(
        out.status.success(),
        "weightmap {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A mapping file's one-to-one entries (`{"mapping": {...}}` of version 2).
fn read_json(p: &Path) -> Value {
    let v: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    v.get("mapping").cloned().unwrap_or(v)
}

/// The target of `source` in a mapping file (plain or with a transform).
fn target_of<'a>(mapping: &'a Value, source: &str) -> Option<&'a str> {
    match mapping.get(source)? {
        Value::String(t) => Some(t),
        other => other.get("target")?.as_str(),
    }
}

/// Two mapped pairs whose sources and targets all have the same shape: (s1, t1, s2, t2).
fn two_alike(report: &Value) -> (String, String, String, String) {
    let maps = report["mappings"].as_array().unwrap();
    for (i, a) in maps.iter().enumerate() {
        for b in &maps[i + 1..] {
            if a["source_shape"] == b["source_shape"]
                && a["target_shape"] == b["target_shape"]
                && a["source_shape"] == a["target_shape"]
            {
                let f = |v: &Value, k: &str| v[k].as_str().unwrap().to_string();
                return (
                    f(a, "source"),
                    f(a, "target"),
                    f(b, "source"),
                    f(b, "target"),
                );
            }
        }
    }
    panic!("no two mapped pairs of the same shape");
}

#[test]
fn map_output_is_not_overwritten_without_force() {
    let Some(dir) = case("resnet_refactor") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mapping.json");
    std::fs::write(&out, "{\"edited\": \"by hand\"}").unwrap();
    let args = |force: bool| {
        let mut a = vec![
            s(&dir.join("source.pth")).to_string(),
            s(&dir.join("target.pt")).to_string(),
            "-o".into(),
            s(&out).to_string(),
            "--quiet".into(),
        ];
        if force {
            a.push("--force".into());
        }
        a
    };
    let refused = weightmap(
        &["map"]
            .into_iter()
            .chain(args(false).iter().map(String::as_str))
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        refused.status.code(),
        Some(2),
        "an existing -o must be refused"
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("--force"), "the error says what to do: {err}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "{\"edited\": \"by hand\"}"
    );
    ok(&["map"]
        .into_iter()
        .chain(args(true).iter().map(String::as_str))
        .collect::<Vec<_>>());
    assert!(read_json(&out).as_object().unwrap().len() > 100);
}

#[test]
fn pin_moves_a_pair_forbid_vetoes_one_and_rules_pin() {
    let Some(dir) = case("resnet_refactor") else {
        return;
    };
    let (src, tgt) = (dir.join("source.pth"), dir.join("target.pt"));
    let report: Value = serde_json::from_str(&ok(&["map", s(&src), s(&tgt), "--json"])).unwrap();
    let (s1, t1, s2, t2) = two_alike(&report);
    let tmp = tempfile::tempdir().unwrap();

    // --pin s1=t2: s1 goes there, reported as pinned; t1 is re-solved (s2 takes it, as
    // the only free look-alike).
    let out = tmp.path().join("pinned.json");
    let pin = format!("{s1}={t2}");
    let text = ok(&["map", s(&src), s(&tgt), "--pin", &pin, "-o", s(&out)]);
    let m = read_json(&out);
    assert_eq!(target_of(&m, &s1), Some(t2.as_str()));
    assert_ne!(target_of(&m, &s2), Some(t2.as_str()));
    assert!(text.contains("Pinned by you (1"), "{text}");
    let pinned: Value =
        serde_json::from_str(&ok(&["map", s(&src), s(&tgt), "--pin", &pin, "--json"])).unwrap();
    assert_eq!(pinned["counts"]["pinned"], 1);
    let row = pinned["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == s1.as_str())
        .unwrap();
    assert_eq!(row["resolution"], "pinned");

    // --forbid s1=t1: never that pair; the rest still maps.
    let out = tmp.path().join("forbid.json");
    let forbid = format!("{s1}={t1}");
    ok(&["map", s(&src), s(&tgt), "--forbid", &forbid, "-o", s(&out)]);
    let m = read_json(&out);
    assert_ne!(target_of(&m, &s1), Some(t1.as_str()));
    assert!(m.as_object().unwrap().len() > 100);

    // --rules: an HF key_mapping renaming s1 to t2 pins that pair.
    let rules = tmp.path().join("rules.json");
    let pattern = format!("^{}$", regex_escape(&s1));
    std::fs::write(&rules, serde_json::json!({ pattern: t2 }).to_string()).unwrap();
    let out = tmp.path().join("ruled.json");
    ok(&["map", s(&src), s(&tgt), "--rules", s(&rules), "-o", s(&out)]);
    assert_eq!(target_of(&read_json(&out), &s1), Some(t2.as_str()));

    // explain --mapping reviews an edited mapping as it is.
    let edited = tmp.path().join("edited.json");
    std::fs::write(
        &edited,
        serde_json::json!({ s1.clone(): t2.clone() }).to_string(),
    )
    .unwrap();
    let e: Value = serde_json::from_str(&ok(&[
        "explain",
        s(&src),
        s(&tgt),
        &s1,
        "--mapping",
        s(&edited),
        "--json",
    ]))
    .unwrap();
    assert_eq!(e["matched"]["target"], t2.as_str());

    // Unknown names and malformed pairs are refused with the flag named.
    let bad = weightmap(&["map", s(&src), s(&tgt), "--pin", "nope.weight=x"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nope.weight"));
    let bad = weightmap(&["map", s(&src), s(&tgt), "--pin", "no-equals-sign"]);
    assert_eq!(bad.status.code(), Some(2));
}

fn regex_escape(name: &str) -> String {
    name.replace('.', r"\.")
}

#[test]
fn hf_target_with_model_prefix_takes_the_mapping_map_wrote() {
    let Some(dir) = case("mixtral_hub2hf_v5") else {
        return;
    };
    let (src, tgt) = (dir.join("source.safetensors"), dir.join("target.pt"));
    let tmp = tempfile::tempdir().unwrap();
    let mapping = tmp.path().join("m.json");
    ok(&["map", s(&src), s(&tgt), "-o", s(&mapping), "--quiet"]);
    let m = read_json(&mapping);
    assert!(
        m.as_object()
            .unwrap()
            .values()
            .any(|v| v.as_str().is_some_and(|t| t.starts_with("model."))),
        "map writes the target's names as written"
    );
    let tree = ok(&["tree", s(&src), s(&tgt), "--mapping", s(&mapping)]);
    assert!(!tree.is_empty());
    let out = tmp.path().join("out.safetensors");
    ok(&[
        "apply",
        s(&src),
        "--mapping",
        s(&mapping),
        "--target",
        s(&tgt),
        "-o",
        s(&out),
    ]);
    assert!(out.is_file());
}

#[test]
fn map_takes_and_names_the_nested_state_dict() {
    let Some(py) = python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, target) = (tmp.path().join("l.ckpt"), tmp.path().join("t.pth"));
    run_python(
        &py,
        r#"
import sys, torch
sd = {"enc.weight": torch.randn(8, 4), "enc.bias": torch.randn(8), "head.weight": torch.randn(3, 8)}
ema = {k + "_ema": v.clone() for k, v in sd.items()}
torch.save({"state_dict": sd, "ema": ema, "epoch": 3}, sys.argv[1])
torch.save({"encoder.weight": torch.randn(8, 4), "encoder.bias": torch.randn(8), "classifier.weight": torch.randn(3, 8)}, sys.argv[2])
"#,
        &[s(&ckpt), s(&target)],
    );
    let out = weightmap(&["map", s(&ckpt), s(&target), "--json"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the state dict under 'state_dict'") && err.contains("ema"),
        "map says which nested dict it used and which others exist: {err}"
    );
    let out = weightmap(&[
        "map",
        s(&ckpt),
        s(&target),
        "--state-dict-key",
        "ema",
        "--json",
    ]);
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = report["mappings"][0]["source"].as_str().unwrap();
    assert!(first.ends_with("_ema"), "{first}");
    let out = weightmap(&["map", s(&ckpt), s(&target), "--state-dict-key", "nope"]);
    assert!(!out.status.success());
}
