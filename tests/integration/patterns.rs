//! Long unmatched lists collapse into index patterns that expand back to exactly the
//! unmatched tensors (`map`'s text against its `--json`).

use crate::support::{s, weightmap};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Every name a pattern line stands for: `{a..b}` and `{a,b}` vary independently, `{=K}`
/// repeats the K-th brace (the notation of `weightmap::report::patterns`).
pub(crate) fn expand(pattern: &str) -> Vec<String> {
    let mut combos: Vec<(String, Vec<u64>)> = vec![(String::new(), vec![])];
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        let close = open + rest[open..].find('}').unwrap();
        let text = &rest[..open];
        let inner = &rest[open + 1..close];
        combos = combos
            .into_iter()
            .flat_map(|(s, seen)| {
                let s = s + text;
                if let Some(k) = inner.strip_prefix('=') {
                    let v = seen[k.parse::<usize>().unwrap() - 1];
                    return vec![(format!("{s}{v}"), seen)];
                }
                let mut values = vec![];
                for part in inner.split(',') {
                    match part.split_once("..") {
                        Some((a, b)) => {
                            values.extend(a.parse::<u64>().unwrap()..=b.parse::<u64>().unwrap())
                        }
                        None => values.push(part.parse().unwrap()),
                    }
                }
                values
                    .into_iter()
                    .map(|v| {
                        let mut seen = seen.clone();
                        seen.push(v);
                        (format!("{s}{v}"), seen)
                    })
                    .collect()
            })
            .collect();
        rest = &rest[close + 1..];
    }
    combos.into_iter().map(|(s, _)| s + rest).collect()
}

#[test]
fn moe_unmatched_lists_collapse_into_patterns_that_expand_back() {
    // Every MoE case of the corpus (tagged so), whatever it is called.
    let mut checked = 0;
    let Some(cases) = crate::support::corpus_cases() else {
        return;
    };
    for case in cases {
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(case.join("case.json")).unwrap()).unwrap();
        let moe = meta["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|x| x == "moe"));
        if !moe {
            continue;
        }
        let (src, tgt) = (
            case.join("source.safetensors"),
            case.join("target_state.pth"),
        );
        let json = weightmap(&["map", s(&src), s(&tgt), "--json"]);
        assert!(
            json.status.success(),
            "{}",
            String::from_utf8_lossy(&json.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        let text = weightmap(&["map", s(&src), s(&tgt)]);
        let text = String::from_utf8(text.stdout).unwrap();
        for (side, title) in [
            ("unmatched_source", "Unmatched source tensors"),
            ("unmatched_target", "Unmatched target tensors"),
        ] {
            let expected: BTreeSet<String> = report[side]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["name"].as_str().unwrap().to_string())
                .collect();
            if expected.len() < 8 {
                continue;
            }
            let section: Vec<&str> = text
                .lines()
                .skip_while(|l| !l.starts_with(title))
                .skip(1)
                .take_while(|l| l.starts_with("  ") && !l.contains("N× NAME"))
                .collect();
            let mut names = BTreeSet::new();
            let mut listed = 0;
            for line in &section {
                let line = line.trim_start();
                let (count, rest) = match line.split_once("× ") {
                    Some((n, rest)) if n.chars().all(|c| c.is_ascii_digit()) => {
                        (n.parse::<usize>().unwrap(), rest)
                    }
                    _ => (1, line),
                };
                let name_pattern = rest.split(' ').next().unwrap();
                let expanded = expand(name_pattern);
                assert_eq!(
                    expanded.len(),
                    count,
                    "{line}: the count is what it stands for"
                );
                listed += count;
                names.extend(expanded);
            }
            assert_eq!(
                listed,
                expected.len(),
                "{}: every tensor once",
                case.display()
            );
            assert_eq!(
                names,
                expected,
                "{}: the patterns expand to the unmatched",
                case.display()
            );
            assert!(
                section.len() * 4 <= expected.len(),
                "{}: {} lines for {} unmatched tensors:\n{}",
                case.display(),
                section.len(),
                expected.len(),
                section.join("\n")
            );
            checked += 1;
        }
    }
    if checked == 0 {
        crate::support::missing::<()>("a corpus case tagged moe with 8+ unmatched tensors");
    }
}

/// Two model specs whose unmatched tensors repeat across 8 numbered blocks: the target's
/// `blocks.N.gate.weight` and the source's `layers.N.old.bias` have no counterpart.
/// Returns (source, target). (The HTML tests that use it need libtorch.)
#[cfg_attr(not(feature = "libtorch"), allow(dead_code))]
pub(crate) fn repeated_unmatched_specs(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let spec = |tensors: Vec<(String, Vec<i64>)>| {
        let tensors: Vec<serde_json::Value> = tensors
            .into_iter()
            .map(|(n, s)| serde_json::json!({"name": n, "shape": s, "dtype": "float32"}))
            .collect();
        serde_json::json!({"format": "spec_json", "tensors": tensors}).to_string()
    };
    let (mut s_list, mut t_list) = (vec![], vec![]);
    for i in 0..8 {
        s_list.push((format!("layers.{i}.fc.weight"), vec![4, 8]));
        s_list.push((format!("layers.{i}.old.bias"), vec![7]));
        t_list.push((format!("blocks.{i}.fc.weight"), vec![4, 8]));
        t_list.push((format!("blocks.{i}.gate.weight"), vec![6, 6]));
    }
    let (source, target) = (dir.join("source.json"), dir.join("target.json"));
    std::fs::write(&source, spec(s_list)).unwrap();
    std::fs::write(&target, spec(t_list)).unwrap();
    (source, target)
}
