//! The mapping engine on the benchmark corpus (`../shared/bench`), scored by the corpus'
//! own `score.py`: on every case, from both `source.pth` and `source.safetensors`, no wrong
//! pair, at least 95% of the one-to-one ground truth mapped, transposes flagged, and the
//! keys of split/concat/stack transforms reported unmatched with that reason.
//!
//! Needs the corpus and the Python with torch (see [`crate::support::missing`]).

use crate::support::{bench_dir, corpus_cases, python};
use std::process::Command;
use weightmap::mapper::{
    CandidateSearch, Mapper, MapperOptions, SuggestOptions, TensorOrder, UnmatchedReason,
};

/// Least share of the one-to-one ground truth that must be mapped.
const MIN_RECALL: f64 = 0.95;

#[test]
fn corpus_cases_score_perfect_precision() {
    let (Some(bench), Some(python)) = (bench_dir(), python()) else {
        return;
    };
    let cases = corpus_cases().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = vec![];
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let truth: serde_json::Value =
            serde_json::from_slice(&std::fs::read(case.join("case.json")).unwrap()).unwrap();
        let target_path = case.join("target.pt");
        let target_order = Some(TensorOrder::from(
            &weightmap::trace::execution_order(&target_path, &[], weightmap::Device::Cpu).unwrap(),
        ));
        for source in ["source.pth", "source.safetensors"] {
            let read = weightmap::ReadOptions::default();
            let s = weightmap::read_model(&case.join(source), &read).unwrap();
            let t = weightmap::read_model(&target_path, &read).unwrap();
            let options = MapperOptions {
                target_order: target_order.clone(),
                ..Default::default()
            };
            let result = Mapper::new(s, t, options)
                .unwrap()
                .suggest_mapping(&SuggestOptions::default())
                .unwrap();
            let pred = tmp.path().join(format!("{name}_{source}.json"));
            std::fs::write(
                &pred,
                serde_json::to_vec(&result.to_mapping_json()).unwrap(),
            )
            .unwrap();
            let out = Command::new(&python)
                .arg(bench.join("score.py"))
                .arg(case)
                .arg(&pred)
                .arg("--json")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "score.py failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let (p, rec) = (
                r["precision"].as_f64().unwrap(),
                r["recall"].as_f64().unwrap(),
            );
            eprintln!(
                "{name:28} {source:19} P={p:.4} R={rec:.4} strict_F1={}",
                r["strict_f1"]
            );
            if p != 1.0 || rec < MIN_RECALL {
                failures.push(format!("{name} {source}: precision {p}, recall {rec}"));
            }
            if r["transpose_flag_correct"] != r["transpose_pairs"] {
                failures.push(format!(
                    "{name} {source}: transposes flagged {} of {}",
                    r["transpose_flag_correct"], r["transpose_pairs"]
                ));
            }
            if r["mapped_unmappable_source_keys"] != 0 {
                failures.push(format!(
                    "{name} {source}: {} unmappable source keys mapped",
                    r["mapped_unmappable_source_keys"]
                ));
            }
            // Keys of many-to-many transforms: unmatched, with that reason.
            for tr in truth["transforms"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["kind"] != "transpose")
            {
                for key in tr["source"].as_array().unwrap() {
                    let key = key.as_str().unwrap();
                    let u = result
                        .unmatched_source
                        .iter()
                        .find(|u| u.original_name == key);
                    if !matches!(
                        u.map(|u| &u.reason),
                        Some(UnmatchedReason::Converted { .. })
                    ) {
                        failures.push(format!(
                            "{name} {source}: {key} ({}) not reported as split/stacked: {:?}",
                            tr["kind"],
                            u.map(|u| &u.reason)
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn batched_candidates_give_the_exact_mapping() {
    // The batched search keeps only the top-k targets per source tensor by a tensor-path
    // approximate score; on every corpus case, from both sources, with execution order,
    // without any order and on shapes alone (which leave far more to the scored stage),
    // the mapping must be the one the exact search gives.
    let Some(cases) = corpus_cases() else {
        return;
    };
    let none = weightmap::mapper::TensorOrder {
        kind: weightmap::mapper::OrderKind::None,
        names: vec![],
    };
    let (mut runs, mut leftover_units, mut batched_pairs, mut exact_pairs) = (0, 0, 0, 0);
    let mut failures = vec![];
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let target_path = case.join("target.pt");
        let traced = Some(TensorOrder::from(
            &weightmap::trace::execution_order(&target_path, &[], weightmap::Device::Cpu).unwrap(),
        ));
        for source in ["source.pth", "source.safetensors"] {
            let read = weightmap::ReadOptions::default();
            let s = weightmap::read_model(&case.join(source), &read).unwrap();
            let t = weightmap::read_model(&target_path, &read).unwrap();
            for (setting, order, strategy) in [
                (
                    "traced",
                    traced.clone(),
                    weightmap::mapper::Strategy::BestMatch,
                ),
                (
                    "no order",
                    Some(none.clone()),
                    weightmap::mapper::Strategy::BestMatch,
                ),
                (
                    "shape only",
                    Some(none.clone()),
                    weightmap::mapper::Strategy::ShapeOnly,
                ),
            ] {
                let run = |candidates| {
                    let options = MapperOptions {
                        target_order: order.clone(),
                        source_order: order
                            .clone()
                            .filter(|o| o.kind == weightmap::mapper::OrderKind::None),
                        candidates,
                        ..Default::default()
                    };
                    Mapper::new(s.clone(), t.clone(), options)
                        .unwrap()
                        .suggest_mapping(&SuggestOptions {
                            strategy,
                            ..Default::default()
                        })
                        .unwrap()
                };
                let exact = run(CandidateSearch::Exact);
                let mut batched = run(CandidateSearch::Batched);
                runs += 1;
                assert_eq!(exact.scoring.search, "exact");
                leftover_units += batched.scoring.leftover_units;
                batched_pairs += batched.scoring.exact_pairs;
                exact_pairs += exact.scoring.exact_pairs;
                if batched.scoring.leftover_units > 0 {
                    assert_eq!(
                        batched.scoring.search, "batched",
                        "{name} {source} {setting}"
                    );
                }
                batched.scoring = exact.scoring.clone();
                if batched != exact {
                    let a = exact.as_dict();
                    let b = batched.as_dict();
                    let diff: Vec<String> = a
                        .iter()
                        .filter(|(k, v)| b.get(*k) != Some(*v))
                        .map(|(k, v)| format!("{k}: exact {v}, batched {:?}", b.get(k)))
                        .chain(
                            b.iter()
                                .filter(|(k, _)| !a.contains_key(*k))
                                .map(|(k, v)| format!("{k}: exact none, batched {v}")),
                        )
                        .take(5)
                        .collect();
                    failures.push(format!(
                        "{name} {source} {setting}: the mappings differ ({} vs {} pairs): {}",
                        exact.mappings.len(),
                        batched.mappings.len(),
                        if diff.is_empty() {
                            "same pairs, other scores or reasons".to_string()
                        } else {
                            diff.join("; ")
                        }
                    ));
                }
            }
        }
    }
    eprintln!(
        "{runs} runs: {leftover_units} leftover units; unit pairs scored exactly: {exact_pairs} exact search, {batched_pairs} batched"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The comparison is not vacuous: the scored stage had work, and batched pruned it.
    assert!(leftover_units > 100, "{leftover_units} leftover units");
    assert!(batched_pairs < exact_pairs);
}
