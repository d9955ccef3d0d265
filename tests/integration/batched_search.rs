//! The batched candidate search on the CPU needs no libtorch (these run under
//! `--no-default-features` too): a flattened target, where structure cannot pair layers
//! and every expert projection has hundreds of look-alikes, maps by it without a wrong
//! pair and further than the exact search's capped lists.

use weightmap::mapper::{CandidateSearch, Mapper, MapperOptions, SuggestOptions};
use weightmap::spec::{Format, ModelSpec};

/// A mixture-of-experts decoder in Hugging Face naming and, flattened into one module
/// level, in another naming (`layers_3_feed_forward_experts_5_w1.weight`), with its truth.
fn flattened_pair(layers: usize, experts: usize) -> (ModelSpec, ModelSpec, Vec<(String, String)>) {
    let (mut src, mut tgt, mut truth) = (vec![], vec![], vec![]);
    for l in 0..layers {
        for e in 0..experts {
            for (a, b, shape) in [
                ("gate_proj", "w1", vec![24, 16]),
                ("down_proj", "w2", vec![16, 24]),
                ("up_proj", "w3", vec![24, 16]),
            ] {
                let s = format!("model.layers.{l}.mlp.experts.{e}.{a}.weight");
                let t = format!("layers_{l}_feed_forward_experts_{e}_{b}.weight");
                src.push((s.clone(), shape.clone()));
                tgt.push((t.clone(), shape));
                truth.push((s, t));
            }
        }
    }
    src.sort();
    let spec = |v: &[(String, Vec<i64>)], format| {
        let list: Vec<(&str, Vec<i64>)> = v.iter().map(|(n, s)| (n.as_str(), s.clone())).collect();
        ModelSpec::from_shapes("test", format, &list)
    };
    (
        spec(&src, Format::Safetensors),
        spec(&tgt, Format::SpecJson),
        truth,
    )
}

#[test]
fn batched_search_runs_on_the_cpu_without_libtorch() {
    let (source, target, truth) = flattened_pair(6, 40);
    let run = |candidates| {
        let options = MapperOptions {
            candidates,
            ..Default::default()
        };
        Mapper::new(source.clone(), target.clone(), options)
            .unwrap()
            .suggest_mapping(&SuggestOptions::default())
            .unwrap()
    };
    let count = |r: &weightmap::mapper::MappingResult| {
        let right = r
            .mappings
            .iter()
            .filter(|m| truth.iter().any(|(s, t)| *s == m.source && *t == m.target))
            .count();
        (right, r.mappings.len() - right)
    };
    let batched = run(CandidateSearch::Batched);
    let exact = run(CandidateSearch::Exact);
    let auto = run(CandidateSearch::Auto);
    assert_eq!(batched.scoring.search, "batched");
    assert_eq!(batched.scoring.device, "cpu");
    let ((br, bw), (er, ew)) = (count(&batched), count(&exact));
    assert_eq!((bw, ew), (0, 0), "nothing maps wrong");
    assert!(
        br > er,
        "the batched search ranks every look-alike: {br} right vs {er} of {}",
        truth.len()
    );
    // Past the exact search's cap, auto is the batched search, also without libtorch.
    assert_eq!(auto.scoring.search, "batched");
    assert_eq!(auto.mappings, batched.mappings);
}
