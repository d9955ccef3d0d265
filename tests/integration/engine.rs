//! The mapping engine on small hand-built models: structure, look-alikes, transposes,
//! fused and stacked tensors, groups, constraints, strategies and the output formats.

use weightmap::mapper::{
    parse_incompatible, ConversionKind, Mapper, MapperOptions, MappingResult, MatchType, OrderKind,
    Resolution, Strategy, SuggestOptions, TensorOrder, Transform, UnmatchedReason,
};
use weightmap::score::ScoreWeights;
use weightmap::spec::{Format, ModelSpec, TensorInfo, TensorKind};

/// A spec from (name, shape) pairs in order.
fn spec(format: Format, tensors: &[(&str, &[i64])]) -> ModelSpec {
    let mut list: Vec<(&str, &[i64])> = tensors.to_vec();
    if matches!(format, Format::Safetensors) {
        // A safetensors file lists its keys alphabetically.
        list.sort_by(|a, b| a.0.cmp(b.0));
    }
    ModelSpec {
        path: "test".into(),
        format,
        state_dict_key: None,
        alternatives: vec![],
        stripped_prefixes: vec![],
        tensors: list
            .iter()
            .enumerate()
            .map(|(i, (n, s))| {
                let dtype = if n.ends_with("num_batches_tracked") {
                    "int64"
                } else {
                    "float32"
                };
                TensorInfo::new(n, s.to_vec(), dtype, TensorKind::Unknown, i)
            })
            .collect(),
    }
}

fn bn(prefix: &str, c: i64, out: &mut Vec<(String, Vec<i64>)>) {
    for leaf in ["weight", "bias", "running_mean", "running_var"] {
        out.push((format!("{prefix}.{leaf}"), vec![c]));
    }
    out.push((format!("{prefix}.num_batches_tracked"), vec![]));
}

fn to_spec(format: Format, v: &[(String, Vec<i64>)]) -> ModelSpec {
    let refs: Vec<(&str, &[i64])> = v.iter().map(|(n, s)| (n.as_str(), s.as_slice())).collect();
    spec(format, &refs)
}

fn map(source: ModelSpec, target: ModelSpec) -> MappingResult {
    map_with(
        source,
        target,
        MapperOptions::default(),
        SuggestOptions::default(),
    )
}

fn map_with(
    source: ModelSpec,
    target: ModelSpec,
    options: MapperOptions,
    opts: SuggestOptions,
) -> MappingResult {
    Mapper::new(source, target, options)
        .unwrap()
        .suggest_mapping(&opts)
        .unwrap()
}

fn target_of<'a>(r: &'a MappingResult, source: &str) -> Option<&'a str> {
    r.mappings
        .iter()
        .find(|m| m.source == source)
        .map(|m| m.target.as_str())
}

/// A ResNet-like stack: `stages` stages of two blocks, each conv+bn, conv+bn, with equal
/// shapes inside a stage (look-alikes everywhere).
fn resnet_like(renamed: bool, format: Format) -> ModelSpec {
    let mut v = vec![];
    let widths = [8i64, 8, 8];
    for (s, &w) in widths.iter().enumerate() {
        for b in 0..2 {
            let p = if renamed {
                format!("encoder.stages.{s}.blocks.{b}")
            } else {
                format!("layer{}.{b}", s + 1)
            };
            let (c1, n1, c2, n2) = if renamed {
                ("conv_a", "norm_a", "conv_b", "norm_b")
            } else {
                ("conv1", "bn1", "conv2", "bn2")
            };
            if renamed {
                // Registered in reverse: registration order is not execution order here.
                v.push((format!("{p}.{c2}.weight"), vec![w, w, 3, 3]));
                bn(&format!("{p}.{n2}"), w, &mut v);
                v.push((format!("{p}.{c1}.weight"), vec![w, w, 3, 3]));
                bn(&format!("{p}.{n1}"), w, &mut v);
            } else {
                v.push((format!("{p}.{c1}.weight"), vec![w, w, 3, 3]));
                bn(&format!("{p}.{n1}"), w, &mut v);
                v.push((format!("{p}.{c2}.weight"), vec![w, w, 3, 3]));
                bn(&format!("{p}.{n2}"), w, &mut v);
            }
        }
    }
    let head = if renamed { "classifier" } else { "fc" };
    v.push((format!("{head}.weight"), vec![10, 8]));
    v.push((format!("{head}.bias"), vec![10]));
    to_spec(format, &v)
}

#[test]
fn renamed_repeated_blocks_map_by_structure_and_indices() {
    for format in [Format::TorchZip, Format::Safetensors] {
        let r = map(
            resnet_like(false, format),
            resnet_like(true, Format::TorchScript),
        );
        // Every tensor maps, 1-based layer1..3 onto 0-based stages.0..2, conv1 onto conv_a.
        assert_eq!(
            r.mappings.len(),
            r.source.tensors,
            "{format:?}: {:?}",
            r.unmatched_source
        );
        assert_eq!(
            target_of(&r, "layer1.0.conv1.weight"),
            Some("encoder.stages.0.blocks.0.conv_a.weight")
        );
        assert_eq!(
            target_of(&r, "layer3.1.bn2.running_var"),
            Some("encoder.stages.2.blocks.1.norm_b.running_var")
        );
        assert_eq!(
            target_of(&r, "layer2.0.bn1.num_batches_tracked"),
            Some("encoder.stages.1.blocks.0.norm_a.num_batches_tracked")
        );
        assert_eq!(target_of(&r, "fc.weight"), Some("classifier.weight"));
        // Look-alike blocks decided by the indices in their names, and reported as such.
        let m = r
            .mappings
            .iter()
            .find(|m| m.source == "layer2.1.conv2.weight")
            .unwrap();
        assert_eq!(
            m.resolution,
            Resolution::NameIndices,
            "{}",
            m.resolution_detail
        );
        assert!(m.resolution_detail.contains("look-alikes"));
        assert_eq!(m.match_type, MatchType::Individual);
        let g = r
            .mappings
            .iter()
            .find(|m| m.source == "layer2.1.bn2.weight")
            .unwrap();
        assert_eq!(g.match_type, MatchType::Group);
        assert!(g.score >= 0.6 && g.score <= 1.0);
    }
}

/// A block of two same-shape norms around an attention weight, from a checkpoint (file
/// order: input_ln, attn, post_ln).
fn two_norms_from_a_checkpoint() -> ModelSpec {
    spec(
        Format::TorchZip,
        &[
            ("blk.input_ln.weight", &[4]),
            ("blk.attn.w.weight", &[4, 6]),
            ("blk.post_ln.weight", &[4]),
        ],
    )
}

#[test]
fn file_order_does_not_decide_against_the_targets_registration_order() {
    // The source's file order (registration order) against the target's execution order,
    // where the target registered its two norms in the other order than it runs them: two
    // libraries' registration habits would decide, so nothing is guessed.
    let src = two_norms_from_a_checkpoint();
    let tgt = spec(
        Format::TorchScript,
        &[
            ("b.attn.x.weight", &[4, 6]),
            ("b.q_norm.weight", &[4]),
            ("b.p_norm.weight", &[4]),
        ],
    );
    let options = MapperOptions {
        target_order: Some(TensorOrder {
            kind: OrderKind::Static,
            names: vec![
                "b.p_norm.weight".into(),
                "b.attn.x.weight".into(),
                "b.q_norm.weight".into(),
            ],
        }),
        ..Default::default()
    };
    let r = map_with(src, tgt, options, SuggestOptions::default());
    assert_eq!(target_of(&r, "blk.attn.w.weight"), Some("b.attn.x.weight"));
    for n in ["blk.input_ln.weight", "blk.post_ln.weight"] {
        assert!(
            target_of(&r, n).is_none(),
            "{n} was decided by file order: {:#?}",
            r.mappings
                .iter()
                .map(|m| (&m.source, &m.target, m.resolution, &m.resolution_detail))
                .collect::<Vec<_>>()
        );
        let u = r.unmatched_source.iter().find(|u| u.name == n).unwrap();
        assert!(
            matches!(u.reason, UnmatchedReason::Ambiguous { .. }),
            "{n}: {:?}",
            u.reason
        );
    }
    assert!(r.settle_hint().is_some());
}

#[test]
fn execution_order_decides_look_alikes_without_index_names() {
    // Two norms of one shape whose names say nothing that ties them together; the target's
    // execution order and the source's file order agree.
    let src = two_norms_from_a_checkpoint();
    let tgt = spec(
        Format::TorchScript,
        &[
            ("b.attn.x.weight", &[4, 6]),
            ("b.first_norm.weight", &[4]),
            ("b.second_norm.weight", &[4]),
        ],
    );
    let order = TensorOrder {
        kind: OrderKind::Static,
        names: vec![
            "b.first_norm.weight".into(),
            "b.attn.x.weight".into(),
            "b.second_norm.weight".into(),
        ],
    };
    let options = MapperOptions {
        target_order: Some(order),
        ..Default::default()
    };
    let r = map_with(src.clone(), tgt.clone(), options, SuggestOptions::default());
    assert_eq!(
        target_of(&r, "blk.input_ln.weight"),
        Some("b.first_norm.weight")
    );
    assert_eq!(
        target_of(&r, "blk.post_ln.weight"),
        Some("b.second_norm.weight")
    );

    // The same source from a safetensors file has no order: the norms stay unmatched,
    // with the reason, rather than being guessed.
    let mut st = src;
    st.format = Format::Safetensors;
    let r = map(st, tgt);
    assert_eq!(target_of(&r, "blk.attn.w.weight"), Some("b.attn.x.weight"));
    for n in ["blk.input_ln.weight", "blk.post_ln.weight"] {
        assert!(target_of(&r, n).is_none(), "{n} was guessed");
        let u = r.unmatched_source.iter().find(|u| u.name == n).unwrap();
        assert!(
            matches!(u.reason, UnmatchedReason::Ambiguous { .. }),
            "{:?}",
            u.reason
        );
    }
}

#[test]
fn transposed_weights_and_square_ones_are_flagged() {
    // GPT-2 Conv1D [in, out] against Linear [out, in]; c_proj is square.
    let mut src = vec![];
    let mut tgt = vec![];
    for i in 0..2 {
        src.push((format!("h.{i}.attn.c_attn.weight"), vec![8, 24]));
        src.push((format!("h.{i}.attn.c_attn.bias"), vec![24]));
        src.push((format!("h.{i}.attn.c_proj.weight"), vec![8, 8]));
        src.push((format!("h.{i}.attn.c_proj.bias"), vec![8]));
        tgt.push((format!("h.{i}.attn.c_attn.weight"), vec![24, 8]));
        tgt.push((format!("h.{i}.attn.c_attn.bias"), vec![24]));
        tgt.push((format!("h.{i}.attn.c_proj.weight"), vec![8, 8]));
        tgt.push((format!("h.{i}.attn.c_proj.bias"), vec![8]));
    }
    let r = map(
        to_spec(Format::TorchZip, &src),
        to_spec(Format::TorchScript, &tgt),
    );
    assert_eq!(r.mappings.len(), 8);
    for m in &r.mappings {
        assert_eq!(m.source, m.target);
        if m.source.ends_with("c_attn.weight") {
            assert_eq!(m.transform, Some(Transform::Transpose));
            assert!(m.ambiguous.is_none());
        }
        if m.source.ends_with("c_proj.weight") {
            assert_eq!(
                m.transform,
                Some(Transform::Transpose),
                "square weight follows its transposed siblings"
            );
            let why = m
                .ambiguous
                .as_deref()
                .expect("square weight must be flagged");
            assert!(
                why.contains("square") && why.contains("transposed"),
                "{why}"
            );
        }
    }
    let json = r.to_mapping_json();
    assert_eq!(json["version"], 2);
    assert_eq!(
        json["mapping"]["h.0.attn.c_proj.weight"]["transform"],
        "transpose"
    );
    assert_eq!(
        json["mapping"]["h.0.attn.c_attn.bias"],
        "h.0.attn.c_attn.bias"
    );

    // Without any transposed sibling, a square weight is copied as is, unflagged.
    let plain = spec(
        Format::TorchZip,
        &[("a.weight", &[8, 8]), ("b.weight", &[8, 4])],
    );
    let r = map(plain.clone(), plain);
    assert!(r
        .mappings
        .iter()
        .all(|m| m.transform.is_none() && m.ambiguous.is_none()));
}

#[test]
fn fused_qkv_is_reported_not_forced() {
    let src = spec(
        Format::TorchZip,
        &[
            ("blocks.0.norm1.weight", &[6]),
            ("blocks.0.attn.qkv.weight", &[18, 6]),
            ("blocks.0.attn.qkv.bias", &[18]),
            ("blocks.0.attn.proj.weight", &[6, 6]),
            ("blocks.0.attn.proj.bias", &[6]),
        ],
    );
    let tgt = spec(
        Format::TorchScript,
        &[
            ("layers.0.attention.q_proj.weight", &[6, 6]),
            ("layers.0.attention.q_proj.bias", &[6]),
            ("layers.0.attention.k_proj.weight", &[6, 6]),
            ("layers.0.attention.k_proj.bias", &[6]),
            ("layers.0.attention.v_proj.weight", &[6, 6]),
            ("layers.0.attention.v_proj.bias", &[6]),
            ("layers.0.attention.o_proj.weight", &[6, 6]),
            ("layers.0.attention.o_proj.bias", &[6]),
            ("layers.0.layernorm_before.weight", &[6]),
        ],
    );
    let r = map(src, tgt);
    assert_eq!(
        target_of(&r, "blocks.0.attn.proj.weight"),
        Some("layers.0.attention.o_proj.weight")
    );
    assert_eq!(
        target_of(&r, "blocks.0.norm1.weight"),
        Some("layers.0.layernorm_before.weight")
    );
    assert!(target_of(&r, "blocks.0.attn.qkv.weight").is_none());
    let u = r
        .unmatched_source
        .iter()
        .find(|u| u.name == "blocks.0.attn.qkv.weight")
        .unwrap();
    match &u.reason {
        UnmatchedReason::Converted { conversion } => {
            assert_eq!(conversion.kind, ConversionKind::Split);
            assert_eq!(conversion.dim, 0);
            assert!(conversion.ambiguous.is_none());
            assert!(
                conversion
                    .reason
                    .as_deref()
                    .unwrap_or("")
                    .contains("spells"),
                "{conversion:?}"
            );
            assert_eq!(
                conversion.targets,
                vec![
                    "layers.0.attention.q_proj.weight",
                    "layers.0.attention.k_proj.weight",
                    "layers.0.attention.v_proj.weight"
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    let t = r
        .unmatched_target
        .iter()
        .find(|u| u.name == "layers.0.attention.k_proj.bias")
        .unwrap();
    assert!(matches!(t.reason, UnmatchedReason::Converted { .. }));
    // The mapping file says it all: the op, its parts in order, their sizes.
    let file = r.to_mapping_json();
    let c = &file["conversions"][0];
    assert_eq!(c["kind"], "split");
    assert_eq!(c["sizes"].as_array().unwrap().len(), 3);
}

#[test]
fn a_concat_whose_order_names_cannot_settle_is_flagged() {
    // `mix` does not spell `a_lin`, `b_lin`: the order inside it is not settled by names.
    let src = spec(
        Format::Safetensors,
        &[
            ("blocks.0.unit.a_lin.weight", &[4, 6]),
            ("blocks.0.unit.b_lin.weight", &[2, 6]),
            ("blocks.0.norm.weight", &[6]),
        ],
    );
    let tgt = spec(
        Format::TorchScript,
        &[
            ("blocks.0.unit.mix.weight", &[6, 6]),
            ("blocks.0.norm.weight", &[6]),
        ],
    );
    let r = map(src, tgt);
    assert_eq!(r.conversions.len(), 1, "{:?}", r.conversions);
    let c = &r.conversions[0];
    assert_eq!(c.kind, ConversionKind::Concat);
    let why = c
        .ambiguous
        .as_deref()
        .expect("an unsettled order must be flagged");
    assert!(why.contains("not settled by names"), "{why}");
    assert!(c.confidence.unwrap() < 0.9);
}

#[test]
fn stacked_experts_are_reported_not_forced() {
    let mut src = vec![];
    for e in 0..4 {
        src.push((format!("layers.0.moe.experts.{e}.w1.weight"), vec![6, 4]));
        src.push((format!("layers.0.moe.experts.{e}.w2.weight"), vec![4, 6]));
        src.push((format!("layers.0.moe.experts.{e}.w3.weight"), vec![6, 4]));
    }
    src.push(("layers.0.moe.gate.weight".into(), vec![4, 4]));
    let tgt = vec![
        ("layers.0.mlp.gate.weight".to_string(), vec![4, 4]),
        (
            "layers.0.mlp.experts.gate_up_proj".to_string(),
            vec![4, 12, 4],
        ),
        ("layers.0.mlp.experts.down_proj".to_string(), vec![4, 4, 6]),
    ];
    let r = map(
        to_spec(Format::Safetensors, &src),
        to_spec(Format::TorchScript, &tgt),
    );
    assert_eq!(
        target_of(&r, "layers.0.moe.gate.weight"),
        Some("layers.0.mlp.gate.weight")
    );
    assert_eq!(r.mappings.len(), 1);
    let kinds: Vec<ConversionKind> = r.conversions.iter().map(|m| m.kind).collect();
    assert!(
        kinds.contains(&ConversionKind::Stack) && kinds.contains(&ConversionKind::StackOfConcat),
        "{kinds:?}"
    );
    let soc = r
        .conversions
        .iter()
        .find(|m| m.kind == ConversionKind::StackOfConcat)
        .unwrap();
    assert_eq!(soc.group_size, Some(2));
    assert_eq!(soc.concat_dim, Some(0));
    assert_eq!(
        &soc.sources[..2],
        &[
            "layers.0.moe.experts.0.w1.weight",
            "layers.0.moe.experts.0.w3.weight"
        ]
    );
    assert!(r
        .unmatched_source
        .iter()
        .all(|u| matches!(u.reason, UnmatchedReason::Converted { .. })));
}

#[test]
fn groups_tolerate_a_missing_leaf() {
    // An old checkpoint without num_batches_tracked still maps its BatchNorm.
    let src = spec(
        Format::TorchZip,
        &[
            ("bn.weight", &[4]),
            ("bn.bias", &[4]),
            ("bn.running_mean", &[4]),
            ("bn.running_var", &[4]),
        ],
    );
    let mut v = vec![];
    bn("norm", 4, &mut v);
    let r = map(src, to_spec(Format::TorchScript, &v));
    assert_eq!(r.mappings.len(), 4);
    assert_eq!(target_of(&r, "bn.running_var"), Some("norm.running_var"));
    let u = &r.unmatched_target[0];
    assert_eq!(u.name, "norm.num_batches_tracked");
    assert!(
        matches!(u.reason, UnmatchedReason::MissingInCounterpart { .. }),
        "{:?}",
        u.reason
    );
}

#[test]
fn incompatible_components_are_a_hard_constraint() {
    let src = spec(
        Format::TorchZip,
        &[
            ("backbone.proj.weight", &[5, 5]),
            ("head.fc.weight", &[3, 5]),
        ],
    );
    let tgt = spec(
        Format::TorchScript,
        &[
            ("classifier.proj.weight", &[5, 5]),
            ("encoder.fc.weight", &[3, 5]),
        ],
    );
    let free = map(src.clone(), tgt.clone());
    assert_eq!(free.mappings.len(), 2);
    let options = MapperOptions {
        incompatible: parse_incompatible("backbone,encoder:head,classifier").unwrap(),
        ..Default::default()
    };
    let r = map_with(src, tgt, options, SuggestOptions::default());
    assert!(r.mappings.is_empty(), "{:?}", r.as_dict());
    assert!(r
        .unmatched_source
        .iter()
        .all(|u| u.reason == UnmatchedReason::IncompatibleComponent));
    assert!(parse_incompatible("backbone").is_err());
    assert!(parse_incompatible("a:").is_err());
}

#[test]
fn strategies_and_threshold() {
    let src = spec(
        Format::TorchZip,
        &[("alpha.weight", &[7, 3]), ("beta.weight", &[2, 9])],
    );
    let tgt = spec(
        Format::TorchScript,
        &[("zeta.weight", &[7, 3]), ("omega.weight", &[2, 9])],
    );
    let best = map(src.clone(), tgt.clone());
    assert_eq!(best.mappings.len(), 2);
    let shape_only = map_with(
        src.clone(),
        tgt.clone(),
        MapperOptions::default(),
        SuggestOptions {
            strategy: Strategy::ShapeOnly,
            ..Default::default()
        },
    );
    assert_eq!(shape_only.mappings.len(), 2);
    assert_eq!(shape_only.weights.name, 0.0);
    // A threshold above every score leaves everything unmatched, each with its score.
    let strict = map_with(
        src,
        tgt,
        MapperOptions::default(),
        SuggestOptions {
            threshold: 0.99,
            ..Default::default()
        },
    );
    assert!(strict.mappings.is_empty());
    for u in &strict.unmatched_source {
        match &u.reason {
            UnmatchedReason::BelowThreshold {
                score,
                threshold,
                candidate,
            } => {
                assert!(score < threshold && !candidate.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }
    assert!("conservative".parse::<Strategy>().is_ok());
    assert!("greedy".parse::<Strategy>().is_err());
    assert!(SuggestOptions {
        threshold: 1.5,
        ..Default::default()
    }
    .validate()
    .is_err());
    assert!("shape=1,name=-1".parse::<ScoreWeights>().is_err());
}

#[test]
fn conservative_drops_flagged_and_weak_pairs() {
    let mut src = vec![];
    let mut tgt = vec![];
    for i in 0..2 {
        src.push((format!("h.{i}.c_fc.weight"), vec![4, 12]));
        src.push((format!("h.{i}.c_proj.weight"), vec![4, 4]));
        tgt.push((format!("h.{i}.c_fc.weight"), vec![12, 4]));
        tgt.push((format!("h.{i}.c_proj.weight"), vec![4, 4]));
    }
    let s = to_spec(Format::TorchZip, &src);
    let t = to_spec(Format::TorchScript, &tgt);
    let best = map(s.clone(), t.clone());
    let cons = map_with(
        s,
        t,
        MapperOptions::default(),
        SuggestOptions {
            strategy: Strategy::Conservative,
            ..Default::default()
        },
    );
    assert!(cons.threshold >= 0.75);
    assert!(cons.mappings.len() < best.mappings.len());
    assert!(cons
        .mappings
        .iter()
        .all(|m| m.ambiguous.is_none() && m.score >= 0.75));
    assert!(cons
        .unmatched_source
        .iter()
        .any(|u| matches!(u.reason, UnmatchedReason::LowConfidence { .. })));
}

#[test]
fn outputs_and_explain() {
    let s = resnet_like(false, Format::TorchZip);
    let t = resnet_like(true, Format::TorchScript);
    let mapper = Mapper::new(s, t, MapperOptions::default()).unwrap();
    let opts = SuggestOptions::default();
    let r = mapper.suggest_mapping(&opts).unwrap();
    let dict = r.as_dict();
    assert_eq!(dict.len(), r.mappings.len());
    assert_eq!(dict["fc.bias"], "classifier.bias");
    let report = r.to_report_json();
    assert_eq!(report["counts"]["matched"], r.mappings.len());
    assert_eq!(report["coverage"], 1.0);
    let first = &report["mappings"][0];
    for key in [
        "source",
        "target",
        "score",
        "source_shape",
        "target_shape",
        "match_type",
        "breakdown",
        "confidence",
        "alternatives",
    ] {
        assert!(!first[key].is_null(), "report lacks {key}");
    }
    // `null` when the tensor is copied as is, as in the mapping file.
    assert!(first.as_object().unwrap().contains_key("transform"));
    // Alternatives are sorted and never the chosen target; confidence is the margin for a
    // pair decided by scores, the trust in its evidence for one decided by structure.
    for m in &r.mappings {
        assert!(m.alternatives.iter().all(|a| a.target != m.target));
        assert!(m.alternatives.windows(2).all(|w| w[0].score >= w[1].score));
        match (m.resolution.confidence(), m.alternatives.first()) {
            (Some(c), _) => assert_eq!(m.confidence, c, "{m:?}"),
            (None, Some(a)) => {
                assert!((m.confidence - (m.score - a.score).clamp(0.0, 1.0)).abs() < 1e-9)
            }
            (None, None) => assert!((m.confidence - m.score.clamp(0.0, 1.0)).abs() < 1e-9),
        }
    }
    let e = mapper.explain("layer2.1.conv1.weight", &opts).unwrap();
    assert_eq!(
        e.matched.as_ref().unwrap().target,
        "encoder.stages.1.blocks.1.conv_a.weight"
    );
    assert!(e.candidates.len() >= 2);
    assert!(e
        .candidates
        .windows(2)
        .all(|w| w[0].breakdown.total >= w[1].breakdown.total));
    let own = e
        .candidates
        .iter()
        .find(|c| c.target == "encoder.stages.1.blocks.1.conv_a.weight")
        .unwrap();
    assert_eq!(own.taken_by.as_deref(), Some("layer2.1.conv1.weight"));
    assert!(mapper.explain("no.such.tensor", &opts).is_err());
}

#[test]
fn bad_options_are_refused() {
    let s = spec(Format::TorchZip, &[("a.weight", &[2])]);
    let bad = MapperOptions {
        shape_tolerance: 2.0,
        ..Default::default()
    };
    assert!(Mapper::new(s.clone(), s.clone(), bad).is_err());
    let bad = MapperOptions {
        incompatible: vec![(vec![], vec!["x".into()])],
        ..Default::default()
    };
    assert!(Mapper::new(s.clone(), s, bad).is_err());
}

#[test]
fn reshape_only_with_tolerance() {
    let src = spec(Format::TorchZip, &[("proj.weight", &[6, 4, 1, 1])]);
    let tgt = spec(Format::TorchScript, &[("fc.weight", &[6, 4])]);
    let r = map(src.clone(), tgt.clone());
    assert!(r.mappings.is_empty());
    assert_eq!(
        r.unmatched_source[0].reason,
        UnmatchedReason::NoShapeCandidate
    );
    let options = MapperOptions {
        shape_tolerance: 0.5,
        ..Default::default()
    };
    let r = map_with(
        src,
        tgt,
        options,
        SuggestOptions {
            threshold: 0.3,
            ..Default::default()
        },
    );
    assert_eq!(r.mappings.len(), 1);
    assert_eq!(
        r.mappings[0].transform,
        Some(Transform::Reshape(vec![6, 4]))
    );
    assert_eq!(
        r.to_mapping_json()["mapping"]["proj.weight"]["transform"]["reshape"],
        serde_json::json!([6, 4])
    );
}

#[test]
fn relational_names_use_execution_order() {
    // `post_attention_layernorm` comes after attention: with the target's execution order
    // that decides the two norms even from an alphabetical (safetensors) source.
    let src = spec(
        Format::Safetensors,
        &[
            ("layers.0.input_layernorm.weight", &[4]),
            ("layers.0.self_attn.q_proj.weight", &[4, 4]),
            ("layers.0.post_attention_layernorm.weight", &[4]),
            ("layers.0.mlp.up_proj.weight", &[8, 4]),
        ],
    );
    let names = [
        "layers.0.attention.wq.weight",
        "layers.0.feed_forward.w3.weight",
        "layers.0.attention_norm.weight",
        "layers.0.ffn_norm.weight",
    ];
    let tgt = spec(
        Format::TorchScript,
        &[
            (names[0], &[4, 4]),
            (names[1], &[8, 4]),
            (names[2], &[4]),
            (names[3], &[4]),
        ],
    );
    // Execution: attention_norm, attention, ffn_norm, feed_forward.
    let order = TensorOrder {
        kind: OrderKind::Static,
        names: vec![
            names[2].into(),
            names[0].into(),
            names[3].into(),
            names[1].into(),
        ],
    };
    let options = MapperOptions {
        target_order: Some(order),
        ..Default::default()
    };
    let r = map_with(src.clone(), tgt.clone(), options, SuggestOptions::default());
    assert_eq!(
        target_of(&r, "layers.0.post_attention_layernorm.weight"),
        Some("layers.0.ffn_norm.weight")
    );
    assert_eq!(
        target_of(&r, "layers.0.input_layernorm.weight"),
        Some("layers.0.attention_norm.weight")
    );
    let m = r
        .mappings
        .iter()
        .find(|m| m.source == "layers.0.post_attention_layernorm.weight")
        .unwrap();
    assert_eq!(m.resolution, Resolution::Relation);
    // Without an execution order nothing tells them apart: both stay unmatched.
    let r = map(src, tgt);
    assert!(target_of(&r, "layers.0.input_layernorm.weight").is_none());
    assert!(target_of(&r, "layers.0.post_attention_layernorm.weight").is_none());
    assert_eq!(
        target_of(&r, "layers.0.self_attn.q_proj.weight"),
        Some("layers.0.attention.wq.weight")
    );
}

#[test]
fn same_name_other_shape_is_mismatched_in_pytorch_words() {
    let src = spec(
        Format::TorchZip,
        &[("head.weight", &[100, 48]), ("body.weight", &[48, 48])],
    );
    let tgt = spec(
        Format::TorchScript,
        &[("head.weight", &[10, 48]), ("body.weight", &[48, 48])],
    );
    let r = map(src, tgt);
    let head = r
        .unmatched_source
        .iter()
        .find(|u| u.name == "head.weight")
        .unwrap();
    assert!(matches!(head.reason, UnmatchedReason::Mismatched { .. }));
    assert!(
        head.reason
            .describe()
            .starts_with("MISMATCHED [100,48] vs [10,48]"),
        "{}",
        head.reason.describe()
    );
}
