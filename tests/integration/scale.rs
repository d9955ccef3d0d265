//! Scale: header-only DeepSeek-V3- and Qwen3-MoE-shaped cases (scripts/make_scale_cases.py)
//! are read without touching data, the module tree is linear in wide models, and the
//! batched candidate scoring finds every ground-truth counterpart.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use weightmap::score::batched::{self, Block, CandidateOptions};
use weightmap::spec::{Format, ModelSpec, TensorInfo, TensorKind};
use weightmap::{read_model, ReadOptions};

use crate::support::repo as root;

/// Writes the small scale cases into a temporary folder with the generator script; `None`
/// when the project's Python is missing (see [`crate::support::missing`]).
fn make_cases(cases: &str) -> Option<tempfile::TempDir> {
    let dir = tempfile::tempdir().expect("temp dir");
    let python = crate::support::python()?;
    let status = Command::new(&python)
        .arg(root().join("scripts/make_scale_cases.py"))
        .arg(dir.path())
        .args(["--cases", cases])
        .stdout(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => Some(dir),
        other => panic!(
            "could not run scripts/make_scale_cases.py with {}: {other:?}",
            python.display()
        ),
    }
}

fn truth(case: &Path) -> HashMap<String, String> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(case.join("case.json")).unwrap()).unwrap();
    v["ground_truth"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn header_only_cases_read_without_data() {
    let Some(dir) = make_cases("deepseek_v3_1k,qwen3_moe_1k") else {
        return;
    };
    for case in ["deepseek_v3_1k", "qwen3_moe_1k"] {
        let d = dir.path().join(case);
        let gt = truth(&d);
        let single = read_model(&d.join("source.safetensors"), &ReadOptions::default()).unwrap();
        let sharded = read_model(
            &d.join("source_sharded/model.safetensors.index.json"),
            &ReadOptions::default(),
        )
        .unwrap();
        let target = read_model(&d.join("target.json"), &ReadOptions::default()).unwrap();
        let target_st = read_model(&d.join("target.safetensors"), &ReadOptions::default()).unwrap();
        assert_eq!(single.format, Format::Safetensors);
        assert_eq!(sharded.format, Format::SafetensorsSharded);
        assert_eq!(target.format, Format::SpecJson);
        assert_eq!(single.tensors.len(), gt.len());
        assert_eq!(sharded.tensors.len(), gt.len());
        // The target spec adds one non-persistent buffer; its safetensors form has only the state dict.
        assert_eq!(target.tensors.len(), gt.len() + 1);
        assert_eq!(target.tensors.iter().filter(|t| !t.persistent).count(), 1);
        assert_eq!(target_st.tensors.len(), gt.len());
        // The files declare gigabytes but hold (almost) nothing: the data is a sparse hole.
        let declared = std::fs::metadata(d.join("source.safetensors"))
            .unwrap()
            .len();
        assert!(declared > 1 << 30, "{case}: {declared} bytes declared");
        let by_name: HashMap<&str, &TensorInfo> = target
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        for t in &sharded.tensors {
            // Ground truth uses the names as written (normalization may strip `model.`).
            let counterpart = by_name[gt[&t.original_name].as_str()];
            assert_eq!(
                t.shape, counterpart.shape,
                "{} and {}",
                t.original_name, counterpart.name
            );
            assert_eq!(t.dtype, counterpart.dtype);
        }
        // Hugging Face order: sorted by name, so the position carries nothing.
        assert!(single
            .tensors
            .windows(2)
            .all(|w| w[0].original_name < w[1].original_name));
    }
}

#[test]
fn module_tree_of_a_wide_model() {
    // 20,000 top-level modules: a per-child linear search would be quadratic here.
    let n = 20_000;
    let tensors: Vec<TensorInfo> = (0..2 * n)
        .map(|i| {
            let leaf = if i % 2 == 0 { "weight" } else { "bias" };
            TensorInfo::new(
                &format!("m{}.{leaf}", (i / 2 * 7919) % n),
                vec![4],
                "float32",
                TensorKind::Parameter,
                i,
            )
        })
        .collect();
    let spec = ModelSpec::new("wide", Format::SpecJson, tensors);
    let start = std::time::Instant::now();
    let tree = spec.module_tree();
    let elapsed = start.elapsed();
    assert_eq!(tree.children.len(), n);
    assert_eq!(tree.tensor_count(), 2 * n);
    // Children in order of first appearance, each with its weight then its bias.
    for (k, child) in tree.children.iter().enumerate() {
        assert_eq!(child.name, format!("m{}", (k * 7919) % n));
        assert_eq!(child.path, child.name);
        assert_eq!(child.tensors, vec![2 * k, 2 * k + 1]);
    }
    eprintln!("module_tree of {} tensors: {elapsed:?}", 2 * n);
}

#[test]
fn batched_candidates_contain_every_counterpart() {
    let Some(dir) = make_cases("qwen3_moe_1k") else {
        return;
    };
    let d = dir.path().join("qwen3_moe_1k");
    let gt = truth(&d);
    let src = read_model(&d.join("source.safetensors"), &ReadOptions::default()).unwrap();
    let tgt = read_model(&d.join("target.json"), &ReadOptions::default()).unwrap();
    let index: HashMap<&str, usize> = tgt
        .tensors
        .iter()
        .enumerate()
        .map(|(j, t)| (t.name.as_str(), j))
        .collect();
    let opts = CandidateOptions::default();
    let cands = batched::top_candidates(
        &src.tensors,
        &tgt.tensors,
        &[Block::all(src.tensors.len(), tgt.tensors.len())],
        &opts,
    )
    .unwrap();
    let mut first = 0;
    for (i, t) in src.tensors.iter().enumerate() {
        let want = index[gt[&t.original_name].as_str()];
        let pos = cands[i].iter().position(|c| c.target == want);
        assert!(
            pos.is_some(),
            "{} -> {} not among its {} candidates",
            t.original_name,
            gt[&t.original_name],
            cands[i].len()
        );
        first += usize::from(pos == Some(0));
    }
    eprintln!(
        "{first} of {} counterparts ranked first by the approximate score alone",
        src.tensors.len()
    );
}

#[test]
fn deepseek_case_maps_renamed_leaves_and_split_biases() {
    // The target calls the FP8 block scale `scale` (a second weight of the module) where
    // the source says `weight_scale_inv`, and keeps the router's correction bias as the
    // gate's own `bias`: both must map, and nothing may map wrong.
    let Some(dir) = make_cases("deepseek_v3_1k") else {
        return;
    };
    let case = dir.path().join("deepseek_v3_1k");
    let mapper = weightmap::pipeline::prepare(&weightmap::pipeline::MapRequest::new(
        &case.join("source_sharded/model.safetensors.index.json"),
        &case.join("target.json"),
    ))
    .expect("mapper")
    .mapper;
    let result = mapper
        .suggest_mapping(&weightmap::mapper::SuggestOptions::default())
        .expect("mapping");
    let got: HashMap<String, String> = result
        .mappings
        .iter()
        .map(|m| (m.source_original.clone(), m.target.clone()))
        .collect();
    let truth = truth(&case);
    let wrong: Vec<_> = got
        .iter()
        .filter(|(s, t)| truth.get(*s).is_some_and(|want| want != *t))
        .collect();
    assert!(wrong.is_empty(), "mapped wrong: {wrong:?}");
    for leaf in ["weight_scale_inv", "e_score_correction_bias"] {
        let expected: Vec<&String> = truth.keys().filter(|s| s.ends_with(leaf)).collect();
        assert!(!expected.is_empty(), "no {leaf} in the case");
        let missing: Vec<&&String> = expected.iter().filter(|s| !got.contains_key(**s)).collect();
        assert!(missing.is_empty(), "{leaf} left unmapped: {missing:?}");
    }
}

/// Right, wrong and unmapped counts of a mapping file against the case's ground truth,
/// and the unmapped source names.
fn score_mapping(case: &Path, mapping: &Path) -> (usize, usize, Vec<String>) {
    let truth = truth(case);
    let got: serde_json::Value =
        serde_json::from_slice(&std::fs::read(mapping).expect("mapping written")).unwrap();
    // Version 2: the one-to-one entries are under "mapping".
    let got = got["mapping"].as_object().unwrap();
    let target_of = |s: &str| {
        got.get(s).map(|v| {
            v.as_str()
                .or_else(|| v["target"].as_str())
                .unwrap()
                .to_string()
        })
    };
    let (mut right, mut wrong, mut unmapped) = (0, 0, vec![]);
    for (s, t) in &truth {
        match target_of(s) {
            Some(x) if &x == t => right += 1,
            Some(_) => wrong += 1,
            None => unmapped.push(s.clone()),
        }
    }
    (right, wrong, unmapped)
}

#[test]
fn target_execution_order_from_a_file_maps_every_tensor() {
    // Both norms of a decoder layer have the hidden size; the source (sorted safetensors)
    // has no order, and the names mislead (`post_attention_layernorm` shares more with
    // `attn_norm` than with `ffn_norm`). The target's traced order, given as a file,
    // places each norm before its module: with it every tensor maps right; without it the
    // norms stay unmatched, and nothing maps wrong either way.
    let Some(dir) = make_cases("qwen3_moe_1k,deepseek_v3_1k") else {
        return;
    };
    for case in ["qwen3_moe_1k", "deepseek_v3_1k"] {
        let d = dir.path().join(case);
        let n = truth(&d).len();
        let src = d.join("source_sharded/model.safetensors.index.json");
        let (tgt, order) = (d.join("target.json"), d.join("target.order.json"));
        let out = d.join("with_order.json");
        let run = crate::support::weightmap(&[
            "map",
            crate::support::s(&src),
            crate::support::s(&tgt),
            "--target-order",
            crate::support::s(&order),
            "-o",
            crate::support::s(&out),
            "--quiet",
        ]);
        assert!(run.status.success(), "{case}: {run:?}");
        let (right, wrong, unmapped) = score_mapping(&d, &out);
        assert_eq!((right, wrong), (n, 0), "{case}: unmapped {unmapped:?}");

        let out = d.join("without_order.json");
        let run = crate::support::weightmap(&[
            "map",
            crate::support::s(&src),
            crate::support::s(&tgt),
            "-o",
            crate::support::s(&out),
            "--quiet",
        ]);
        assert!(run.status.success(), "{case}: {run:?}");
        let (right, wrong, unmapped) = score_mapping(&d, &out);
        assert_eq!(wrong, 0, "{case}");
        assert_eq!(right + unmapped.len(), n);
        assert!(!unmapped.is_empty(), "{case}: the norms need order");
        assert!(
            unmapped.iter().all(|s| s.ends_with("layernorm.weight")),
            "{case}: only the layer norms wait for order: {unmapped:?}"
        );
    }
}

#[test]
fn an_order_file_of_another_model_is_refused() {
    let Some(dir) = make_cases("qwen3_moe_1k,deepseek_v3_1k") else {
        return;
    };
    let (q, d) = (
        dir.path().join("qwen3_moe_1k"),
        dir.path().join("deepseek_v3_1k"),
    );
    let out = q.join("refused.json");
    let foreign = d.join("target.order.json");
    let run = crate::support::weightmap(&[
        "map",
        crate::support::s(&q.join("source.safetensors")),
        crate::support::s(&q.join("target.json")),
        "--target-order",
        crate::support::s(&foreign),
        "-o",
        crate::support::s(&out),
    ]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(
        err.contains(crate::support::s(&foreign)) && err.contains("another model"),
        "{err}"
    );
    assert!(!out.exists(), "no output on error");
    // Not an order at all: the file is named, with what to do.
    let bogus = q.join("case.json");
    let run = crate::support::weightmap(&[
        "map",
        crate::support::s(&q.join("source.safetensors")),
        crate::support::s(&q.join("target.json")),
        "--target-order",
        crate::support::s(&bogus),
    ]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_ne!(run.status.code(), Some(0));
    assert!(
        err.contains(crate::support::s(&bogus)) && err.contains("weightmap trace"),
        "{err}"
    );
}

#[test]
fn batched_search_maps_a_flattened_target_without_a_wrong_pair() {
    // Module levels flattened into one name (`layers_3_feed_forward_experts_17_w1.weight`):
    // structure cannot pair layers, so thousands of look-alike units reach the scored
    // stage. The exact search can score only the first 64 same-shape candidates of each;
    // the batched search ranks them all (indices in the flattened names included) and
    // keeps the best from both sides. Both must leave the misleading norms unmatched
    // rather than guess; batched maps far more, and neither maps anything wrong.
    let Some(dir) = make_cases("qwen3_moe_1k") else {
        return;
    };
    let d = dir.path().join("qwen3_moe_1k");
    let truth = truth(&d);
    let source = read_model(&d.join("source.safetensors"), &ReadOptions::default()).unwrap();
    let mut target = read_model(&d.join("target.json"), &ReadOptions::default()).unwrap();
    for t in target.tensors.iter_mut() {
        if let Some((module, leaf)) = t.name.clone().rsplit_once('.') {
            t.rename(&format!("{}.{leaf}", module.replace('.', "_")));
        }
    }
    let run = |candidates| {
        let options = weightmap::mapper::MapperOptions {
            candidates,
            ..Default::default()
        };
        weightmap::mapper::Mapper::new(source.clone(), target.clone(), options)
            .unwrap()
            .suggest_mapping(&weightmap::mapper::SuggestOptions::default())
            .unwrap()
    };
    let count = |r: &weightmap::mapper::MappingResult| {
        let (mut right, mut wrong) = (0, 0);
        for m in &r.mappings {
            // Reports name targets as written in the file (the spec's original names).
            if truth[&m.source_original] == m.target {
                right += 1;
            } else {
                wrong += 1;
            }
        }
        (right, wrong)
    };
    let exact = run(weightmap::mapper::CandidateSearch::Exact);
    let batched = run(weightmap::mapper::CandidateSearch::Batched);
    let auto = run(weightmap::mapper::CandidateSearch::Auto);
    let (er, ew) = count(&exact);
    let (br, bw) = count(&batched);
    eprintln!(
        "flattened target, {} tensors: exact {er} right {ew} wrong ({} unit pairs scored), batched {br} right {bw} wrong ({} pairs)",
        truth.len(),
        exact.scoring.exact_pairs,
        batched.scoring.exact_pairs
    );
    assert_eq!((ew, bw), (0, 0), "nothing maps wrong");
    assert!(br > er, "batched ranks all candidates: {br} vs {er}");
    assert!(batched.scoring.exact_pairs < exact.scoring.exact_pairs);
    // Past 64 candidates per unit, auto is the batched search.
    assert_eq!(auto.scoring.search, "batched");
    assert_eq!(auto.mappings, batched.mappings);
    // The batched score on CUDA gives the same mapping as on the CPU (where a GPU exists).
    let device = weightmap::Device::Cuda(0);
    match weightmap::libtorch::check_device(device) {
        Ok(()) => {
            let options = weightmap::mapper::MapperOptions {
                candidates: weightmap::mapper::CandidateSearch::Batched,
                device,
                ..Default::default()
            };
            let mut on_cuda =
                weightmap::mapper::Mapper::new(source.clone(), target.clone(), options)
                    .unwrap()
                    .suggest_mapping(&weightmap::mapper::SuggestOptions::default())
                    .unwrap();
            assert_eq!(on_cuda.scoring.device, "cuda:0");
            on_cuda.scoring = batched.scoring.clone();
            assert_eq!(on_cuda, batched, "CUDA and CPU mappings differ");
        }
        Err(e) => eprintln!("CUDA comparison skipped: {e}"),
    }
    // Whatever is left is the layer norms, which the names mislead about.
    let unmatched: Vec<&str> = batched
        .unmatched_source
        .iter()
        .map(|u| u.original_name.as_str())
        .collect();
    assert!(
        unmatched.iter().all(|s| s.ends_with("layernorm.weight")),
        "{unmatched:?}"
    );
}

/// DeepSeek's own conversion drops the multi-token-prediction layer: its source tensors
/// have no counterpart, reach the scored stage and must stay unmapped, on a single-file
/// and a sharded safetensors target, while every other tensor maps right.
#[test]
fn a_dropped_layer_stays_unmapped_on_single_and_sharded_targets() {
    let Some(dir) = make_cases("deepseek_v3_nomtp_1k") else {
        return;
    };
    let d = dir.path().join("deepseek_v3_nomtp_1k");
    let case: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("case.json")).unwrap()).unwrap();
    let dropped: Vec<&str> = case["unmapped_source_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(
        dropped.len() > 100,
        "the MTP layer is dropped: {}",
        dropped.len()
    );
    let n = truth(&d).len();
    let src = d.join("source_sharded/model.safetensors.index.json");
    for target in [
        d.join("target.safetensors"),
        d.join("target_sharded/model.safetensors.index.json"),
    ] {
        let out = d.join("mapping.json");
        let _ = std::fs::remove_file(&out);
        let run = crate::support::weightmap(&[
            "map",
            crate::support::s(&src),
            crate::support::s(&target),
            "--target-order",
            crate::support::s(&d.join("target.order.json")),
            "-o",
            crate::support::s(&out),
            "--quiet",
        ]);
        assert!(run.status.success(), "{}: {run:?}", target.display());
        let (right, wrong, unmapped) = score_mapping(&d, &out);
        assert_eq!((right, wrong), (n, 0), "{}: {unmapped:?}", target.display());
        let got: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        let mapped: Vec<&&str> = dropped
            .iter()
            .filter(|s| got["mapping"].get(**s).is_some())
            .collect();
        assert!(mapped.is_empty(), "dropped tensors mapped: {mapped:?}");
    }
}
