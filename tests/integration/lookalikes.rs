//! Look-alikes decided by evidence (issue: one renaming across repeated blocks, siblings
//! anchored in execution order, ordinal families; file order never decides alone).
//!
//! Fixtures (scripts/make_lookalike_fixtures.py, `models/lookalikes/<case>/`), one per class:
//! - `shortcut`: a projection shortcut with the shape of the branch's first conv, registered
//!   first in the source and last in the target (the source's file order points the wrong
//!   way; safetensors keys say nothing);
//! - `moved_block`: stages whose boundary moves by a downsampling step and a block;
//! - `post_norm`: two same-shape norms per block (`attention.output.LayerNorm` /
//!   `output.LayerNorm` against `norm1` / `norm2`);
//! - `pre_norm`: `input_layernorm` / `post_attention_layernorm` against `attn_norm` /
//!   `ffn_norm`;
//! - `repeated_rule`: two linears per layer (`inp` / `out` against `alpha` / `beta`,
//!   registered in the other order) that only the first layer's shapes tell apart: the
//!   other layers follow the same renaming.
//!
//! Every case, from `.pth` and `.safetensors`, must map every tensor right: no wrong pair,
//! nothing left out, and no pair that rests on file order alone.

use crate::support::{repo, s, weightmap};
use serde_json::{Map, Value};
use std::path::Path;

const CASES: [&str; 5] = [
    "shortcut",
    "moved_block",
    "post_norm",
    "pre_norm",
    "repeated_rule",
];

fn truth(dir: &Path) -> Map<String, Value> {
    let text = std::fs::read_to_string(dir.join("case.json")).unwrap();
    let case: Value = serde_json::from_str(&text).unwrap();
    case["ground_truth"].as_object().unwrap().clone()
}

fn map_json(args: &[&str]) -> Value {
    let out = weightmap(args);
    assert!(
        out.status.success(),
        "weightmap {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn look_alikes_map_exactly_from_every_source_format() {
    for case in CASES {
        let dir = repo().join("models/lookalikes").join(case);
        let truth = truth(&dir);
        for source in ["source.pth", "source.safetensors"] {
            let report = map_json(&[
                "map",
                s(&dir.join(source)),
                s(&dir.join("target.pt")),
                "--json",
            ]);
            let mut wrong = vec![];
            let mut right = 0;
            for m in report["mappings"].as_array().unwrap() {
                let (src, tgt) = (m["source"].as_str().unwrap(), &m["target"]);
                if truth.get(src) == Some(tgt) {
                    right += 1;
                } else {
                    wrong.push(format!("{src} -> {tgt} (truth {:?})", truth.get(src)));
                }
                assert_ne!(
                    m["resolution"], "file_order",
                    "{case} {source}: {src} decided by file order only"
                );
            }
            assert!(wrong.is_empty(), "{case} {source}: wrong pairs {wrong:#?}");
            assert_eq!(
                right,
                truth.len(),
                "{case} {source}: {} of {} tensors mapped; unmatched: {}",
                right,
                truth.len(),
                report["unmatched_source"]
            );
        }
    }
}

/// The decisions say which evidence took them: the shortcut case needs ordinal families
/// (`f.a`/`f.b`/`f.c` against `conv1`/`conv2`/`conv3`) and sibling anchors (each batch norm
/// beside its conv), with no order from a safetensors source.
/// `map CASE/source.safetensors CASE/target.pt --json`, and the detail of every decision.
fn from_safetensors(case: &str) -> (Value, Vec<String>) {
    from_safetensors_with(case, &[])
}

/// [`from_safetensors`] with `extra` flags.
fn from_safetensors_with(case: &str, extra: &[&str]) -> (Value, Vec<String>) {
    let dir = repo().join("models/lookalikes").join(case);
    let (source, target) = (dir.join("source.safetensors"), dir.join("target.pt"));
    let mut args = vec!["map", s(&source), s(&target), "--json"];
    args.extend_from_slice(extra);
    let report = map_json(&args);
    let details = report["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["resolution_detail"].as_str().unwrap().to_string())
        .collect();
    (report, details)
}

#[test]
fn decisions_name_their_evidence() {
    // Sibling anchors need the target's execution order, which `auto` would not trace here
    // (block rules decide every pair without it): ask for it.
    let (_, details) = from_safetensors_with("shortcut", &["--order", "static"]);
    for evidence in ["ordinal family", "sibling anchor"] {
        assert!(
            details.iter().any(|d| d.contains(evidence)),
            "no decision by {evidence}: {details:#?}"
        );
    }
}

/// The renaming induced from the first layer (unique shapes) decides the others, and is
/// kept in the result.
#[test]
fn one_renaming_across_repeated_blocks_is_induced_and_kept() {
    let (report, details) = from_safetensors("repeated_rule");
    assert!(
        details
            .iter()
            .any(|d| d.contains("one renaming across repeated blocks: inp → alpha")),
        "{details:#?}"
    );
    let rules = report["block_rules"].as_array().unwrap();
    let rule = rules
        .iter()
        .find(|r| r["source"] == "inp")
        .unwrap_or_else(|| panic!("no rule for inp: {rules:#?}"));
    assert_eq!(rule["target"], "alpha");
    assert_eq!(rule["source_block"], "layers.#");
    assert_eq!(rule["target_block"], "blocks.#");
}

/// One meaning of "needs review": the `--quiet` line, the terminal list, `--json`'s count
/// and its per-pair field agree, and `--fail-on review` stops on it with status 3 (after
/// printing); `--fail-on unmatched` stops on look-alikes left unmatched.
#[test]
fn needs_review_is_one_count_and_fail_on_stops_on_it() {
    // Registration order only on the target: every look-alike pair rests on it.
    let source = "models/order_source.pth";
    let target = "models/order_target.pt";
    let flags = ["--order", "registration"];
    let json = map_json(&[&["map", source, target, "--json"][..], &flags].concat());
    let flagged = json["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| !m["needs_review"].is_null())
        .count();
    assert!(flagged > 0, "{json}");
    assert_eq!(json["counts"]["needs_review"], flagged);

    let quiet = weightmap(&[&["map", source, target, "--quiet"][..], &flags].concat());
    let line = String::from_utf8_lossy(&quiet.stdout);
    assert!(line.contains(&format!("{flagged} need review")), "{line}");

    let text = weightmap(&[&["map", source, target, "--all"][..], &flags].concat());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("Needs review ({flagged})")),
        "{text}"
    );
    assert!(text.contains("decided by file order only"), "{text}");

    let fail = weightmap(&[&["map", source, target, "--fail-on", "review"][..], &flags].concat());
    assert_eq!(fail.status.code(), Some(3));
    assert!(
        !fail.stdout.is_empty(),
        "the result is printed before failing"
    );
    let err = String::from_utf8_lossy(&fail.stderr);
    assert!(
        err.contains(&format!("{flagged} pairs need review")),
        "{err}"
    );
    let pass = weightmap(
        &[
            &["map", source, target, "--fail-on", "unmatched"][..],
            &flags,
        ]
        .concat(),
    );
    assert_eq!(pass.status.code(), Some(0), "{pass:?}");

    // No order at all: the look-alikes stay unmatched, and say what would settle them.
    let none = ["--order", "none"];
    let json = map_json(
        &[
            &["map", "models/order_source.safetensors", target, "--json"][..],
            &none,
        ]
        .concat(),
    );
    let reasons: Vec<&str> = json["unmatched_source"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["message"].as_str().unwrap())
        .collect();
    assert!(!reasons.is_empty());
    assert!(
        reasons.iter().all(|r| r.contains("ambiguous")),
        "{reasons:?}"
    );
    // What would settle them is said once, with the commands.
    let hint = json["settle_ambiguity"].as_str().unwrap();
    assert!(
        hint.contains("weightmap trace") && hint.contains("--source-order"),
        "{hint}"
    );
    assert!(hint.contains("--order static"), "{hint}");
    let fail = weightmap(
        &[
            &[
                "map",
                "models/order_source.safetensors",
                target,
                "--quiet",
                "--fail-on",
                "unmatched,review",
            ][..],
            &none,
        ]
        .concat(),
    );
    assert_eq!(fail.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&fail.stderr).contains("tensors unmatched"));
}

/// `map` without `--json` or `--report` skips the alternatives of pairs decided by
/// structure (a scoring pass over every pair); the mapping it writes is the same, and the
/// JSON report still lists them.
#[test]
fn the_mapping_is_the_same_with_or_without_alternatives() {
    let dir = repo().join("models/lookalikes/shortcut");
    let tmp = tempfile::tempdir().unwrap();
    let (plain, full, report) = (
        tmp.path().join("plain.json"),
        tmp.path().join("full.json"),
        tmp.path().join("report.json"),
    );
    let (source, target) = (dir.join("source.pth"), dir.join("target.pt"));
    for (out, extra) in [(&plain, None), (&full, Some(&report))] {
        let mut args = vec!["map", s(&source), s(&target), "-o", s(out), "--quiet"];
        if let Some(r) = extra {
            args.extend(["--report", s(r)]);
        }
        let run = weightmap(&args);
        assert!(run.status.success(), "{run:?}");
    }
    assert_eq!(
        std::fs::read(&plain).unwrap(),
        std::fs::read(&full).unwrap()
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(report["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["resolution"] != "score" && !m["alternatives"].as_array().unwrap().is_empty()));
}
