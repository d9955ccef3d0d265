//! Every command's `--json` output is one JSON object whose `schema_version` is the shared
//! version the README documents.

use crate::support::{s, weightmap};

/// The version the README's "JSON schemas" section documents.
fn documented_version() -> u64 {
    let readme = std::fs::read_to_string(crate::support::repo().join("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.contains("schema_version") && l.contains("is currently"))
        .expect("the README says which schema_version is current");
    let digits: String = line
        .split("is currently")
        .nth(1)
        .unwrap()
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

fn json_of(args: &[&str]) -> serde_json::Value {
    let out = weightmap(args);
    assert!(
        out.status.success(),
        "weightmap {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("weightmap {args:?} --json is not JSON: {e}"))
}

#[test]
fn every_json_output_carries_the_documented_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let mapping = dir.path().join("m.json");
    let report = dir.path().join("r.json");
    let out = dir.path().join("out.safetensors");
    let (src, tgt) = ("models/demo_source.pth", "models/demo_target_state.pth");
    let ok = weightmap(&[
        "map",
        src,
        tgt,
        "-o",
        s(&mapping),
        "--report",
        s(&report),
        "--quiet",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let mut commands: Vec<Vec<&str>> = vec![
        vec!["inspect", src, "--json"],
        vec!["map", src, tgt, "--json"],
        vec!["explain", src, tgt, "conv1.weight", "--json"],
        vec!["explain", src, tgt, "fc.weight", "--json"],
        vec![
            "apply",
            src,
            "--mapping",
            s(&mapping),
            "-o",
            s(&out),
            "--json",
        ],
        vec!["diff", src, s(&out), "--json"],
    ];
    if cfg!(feature = "libtorch") {
        commands.push(vec!["trace", "models/demo_target.pt", "--json"]);
        commands.push(vec!["verify", s(&out), "models/demo_target.pt", "--json"]);
    }
    let version = documented_version();
    let mut documents: Vec<(String, serde_json::Value)> = commands
        .iter()
        .map(|args| (args[0].to_string(), json_of(args)))
        .collect();
    documents.push((
        "map --report".into(),
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap(),
    ));
    for (what, doc) in &documents {
        let object = doc
            .as_object()
            .unwrap_or_else(|| panic!("{what}: not an object"));
        assert_eq!(
            object.keys().next().map(String::as_str),
            Some("schema_version"),
            "{what}: schema_version comes first"
        );
        assert_eq!(object["schema_version"].as_u64(), Some(version), "{what}");
    }
    // `report --from` reads the versioned report back.
    let html = dir.path().join("r.html");
    let back = weightmap(&["report", "--from", s(&report), "-o", s(&html)]);
    assert!(
        back.status.success(),
        "{}",
        String::from_utf8_lossy(&back.stderr)
    );
}
