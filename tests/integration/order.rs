//! What execution order adds to `weightmap map`, and the `--order` flag.
//!
//! Fixtures (scripts/make_order_fixtures.py): a source stack `layers.0..2` of look-alike
//! Linear(8, 8) layers, and a target with the same layers named gamma, alpha, beta
//! (registration order) that runs them beta, alpha, gamma. Names and shapes cannot tell the
//! layers apart; only the target's execution order can, for a .safetensors source (keys
//! sorted, no order of its own) as for a .pth one.

use crate::support::{repo, weightmap};
use serde_json::{Map, Value};

const TARGET: &str = "models/order_target.pt";
const SOURCES: [&str; 2] = ["models/order_source.safetensors", "models/order_source.pth"];
/// A dummy input for the target's forward: a batch of two 8-wide rows.
const INPUT: &str = "2x8";

/// The truth: {source name: target name}.
fn truth() -> Map<String, Value> {
    let text = std::fs::read_to_string(repo().join("models/order_truth.json")).unwrap();
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

/// `weightmap map SOURCE TARGET --json` with `extra` flags; the JSON report.
fn report(source: &str, extra: &[&str]) -> Value {
    let mut args = vec!["map", source, TARGET, "--json"];
    args.extend_from_slice(extra);
    let out = weightmap(&args);
    assert!(
        out.status.success(),
        "weightmap {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The report's pairs as {source name: target name}.
fn pairs(report: &Value) -> Map<String, Value> {
    report["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["source"].as_str().unwrap().to_string(),
                m["target"].clone(),
            )
        })
        .collect()
}

#[test]
fn execution_order_maps_look_alikes_exactly() {
    for source in SOURCES {
        for extra in [
            &[][..],
            &["--order", "static"][..],
            &["--order", "dynamic", "--input", INPUT][..],
            &["--input", INPUT][..],
        ] {
            let r = report(source, extra);
            assert_eq!(pairs(&r), truth(), "{source} {extra:?}");
            let want = if extra.contains(&INPUT) {
                "dynamic"
            } else {
                "static"
            };
            assert_eq!(r["target"]["order"], want, "{source} {extra:?}");
            assert!(
                r["mappings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|m| m["ambiguous"].is_null()),
                "{source} {extra:?}: nothing should be flagged"
            );
        }
    }
}

#[test]
fn without_order_the_look_alikes_stay_unmatched_as_ambiguous() {
    for source in SOURCES {
        let r = report(source, &["--order", "none"]);
        assert_eq!(r["source"]["order"], "none");
        assert_eq!(r["target"]["order"], "none");
        // Nothing guessed: no pair at all rather than a coin toss among look-alikes.
        assert!(pairs(&r).is_empty(), "{source}: {:?}", pairs(&r));
        let unmatched = r["unmatched_source"].as_array().unwrap();
        assert_eq!(unmatched.len(), truth().len(), "{source}");
        for u in unmatched {
            assert_eq!(u["reason"]["kind"], "ambiguous", "{source}: {u}");
            let name = u["name"].as_str().unwrap();
            let right = &truth()[name];
            assert!(
                u["reason"]["candidates"]
                    .as_array()
                    .unwrap()
                    .contains(right),
                "{source}: {name}'s candidates should include {right}"
            );
        }
    }
}

#[test]
fn registration_order_is_weaker_and_says_so() {
    // Registered gamma, alpha, beta but run beta, alpha, gamma: going by registration gets the
    // outer two layers swapped, and every such pair is flagged as decided by that weak order.
    for source in SOURCES {
        let r = report(source, &["--order", "registration"]);
        assert_eq!(r["target"]["order"], "registration");
        let got = pairs(&r);
        let truth = truth();
        assert_eq!(got.len(), truth.len(), "{source}");
        let wrong: Vec<&String> = got.keys().filter(|k| got[*k] != truth[*k]).collect();
        assert_eq!(wrong.len(), 4, "{source}: {got:?}");
        assert!(wrong.iter().all(|k| !k.starts_with("layers.1.")));
        for m in r["mappings"].as_array().unwrap() {
            let why = m["ambiguous"].as_str().unwrap_or("");
            assert!(why.contains("registration order"), "{source}: {m}");
        }
    }
}

#[test]
fn order_flags_are_checked_before_reading() {
    let no_input = weightmap(&["map", SOURCES[0], TARGET, "--order", "dynamic"]);
    assert!(!no_input.status.success());
    let err = String::from_utf8_lossy(&no_input.stderr);
    assert!(
        err.contains("--order") && err.contains("dynamic") && err.contains("input"),
        "{err}"
    );

    let stray = weightmap(&[
        "map", SOURCES[0], TARGET, "--order", "static", "--input", INPUT,
    ]);
    assert!(!stray.status.success());
    let err = String::from_utf8_lossy(&stray.stderr);
    assert!(
        err.contains("--input") && err.contains("auto or dynamic"),
        "{err}"
    );

    let bad = weightmap(&["map", SOURCES[0], TARGET, "--order", "sideways"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("sideways"));
}

#[test]
fn explicit_dynamic_order_fails_loudly_when_forward_fails() {
    // auto falls back to the static order with a warning; dynamic asked for is an error.
    let auto = weightmap(&["map", SOURCES[0], TARGET, "--input", "2x5", "--quiet"]);
    assert!(
        auto.status.success(),
        "{}",
        String::from_utf8_lossy(&auto.stderr)
    );
    let dynamic = weightmap(&[
        "map", SOURCES[0], TARGET, "--order", "dynamic", "--input", "2x5",
    ]);
    assert!(!dynamic.status.success());
    let err = String::from_utf8_lossy(&dynamic.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one readable line: {err}");
}

/// `--order auto` traces a TorchScript model only when names and shapes leave something
/// that order settles: the demo target (every pair decided by names and structure) keeps
/// its registration order and says it was not traced; the look-alike layers here are
/// traced, and mapped exactly. The library's `map_files` does the same as the command.
#[test]
fn auto_traces_only_when_the_mapping_needs_order() {
    let demo = report_of(&[
        "map",
        "models/demo_source.pth",
        "models/demo_target.pt",
        "--json",
    ]);
    assert_eq!(
        demo.0["target"]["order"], "registration",
        "the demo needs no trace"
    );
    assert!(demo.1.contains("not traced"), "{}", demo.1);

    let traced = report_of(&["map", SOURCES[0], TARGET, "--json"]);
    assert_eq!(
        traced.0["target"]["order"], "static",
        "look-alikes need the trace"
    );
    assert!(
        traced.1.contains("traced for its execution order"),
        "{}",
        traced.1
    );
    assert_eq!(pairs(&traced.0), truth());

    use weightmap::mapper::OrderKind;
    use weightmap::pipeline::{map_files, MapRequest};
    let order_of = |s: &str, t: &str| {
        let request = MapRequest::new(&repo().join(s), &repo().join(t));
        map_files(&request).unwrap().target.order
    };
    assert_eq!(
        order_of("models/demo_source.pth", "models/demo_target.pt"),
        OrderKind::Registration
    );
    assert_eq!(order_of(SOURCES[0], TARGET), OrderKind::Static);
}

/// Told that an earlier mapping of the same request needs the order (what the build
/// without libtorch hands over), auto traces at once: even a pair that names and shapes
/// decide gets its target traced, nothing is left deferred, and the note says why.
#[test]
fn auto_traces_at_once_when_the_order_is_known_to_be_needed() {
    use weightmap::mapper::OrderKind;
    use weightmap::pipeline::{prepare, MapRequest};
    let mut request = MapRequest::new(
        &repo().join("models/demo_source.pth"),
        &repo().join("models/demo_target.pt"),
    );
    let lazy = prepare(&request).unwrap();
    assert!(lazy.order_deferred());
    assert!(lazy.mapper.options().target_order.is_none());

    request.order_needed = Some("2 look-alikes left ambiguous".into());
    let mut eager = prepare(&request).unwrap();
    assert!(!eager.order_deferred());
    assert!(eager.mapper.options().target_order.is_some());
    assert!(
        eager.notes.iter().any(|n| n
            .ends_with("traced for its execution order (2 look-alikes left ambiguous without it)")),
        "{:?}",
        eager.notes
    );
    let result = eager
        .suggest_mapping(&request.suggest)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(result.target.order, OrderKind::Static);
}

/// Runs weightmap with `args`, which must succeed: its JSON report and its stderr.
fn report_of(args: &[&str]) -> (Value, String) {
    let out = weightmap(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "weightmap {args:?} failed: {stderr}");
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}
