use super::*;

fn w(s: &str) -> Token {
    Token::Word(s.into())
}

#[test]
fn tokenize_splits_and_canonicalizes() {
    assert_eq!(
        tokenize("bert.encoder.layer.10.attention.self.query"),
        vec![
            w("bert"),
            w("encoder"),
            w("block"),
            Token::Num(10),
            w("attn"),
            w("self"),
            w("q")
        ]
    );
    assert_eq!(tokenize("LayerNorm"), vec![w("norm")]);
    assert_eq!(tokenize("sa_layer_norm"), vec![w("sa"), w("norm")]);
    assert_eq!(tokenize("conv1"), vec![w("conv"), Token::Num(1)]);
    assert_eq!(
        tokenize("layers.0.attention.wq"),
        vec![w("block"), Token::Num(0), w("attn"), w("q")]
    );
    assert_eq!(tokenize("feed_forward.w1"), vec![w("mlp"), w("gate")]);
    assert_eq!(
        tokenize("post_attention_layernorm"),
        vec![w("post"), w("norm")]
    );
}

#[test]
fn numbers_are_structure() {
    let a = tokenize("blocks.3.mlp.fc1");
    let b = tokenize("blocks.4.mlp.fc1");
    let c = tokenize("layers.3.mlp.fc1");
    assert!(token_jaccard(&a, &c) > token_jaccard(&a, &b));
    assert_eq!(token_jaccard(&a, &a), 1.0);
}

#[test]
fn generic_tokens_weigh_less() {
    let q = tokenize("q_proj");
    let wq = tokenize("wq");
    let j = token_jaccard(&q, &wq);
    assert!((j - 1.0 / (1.0 + GENERIC_TOKEN_WEIGHT)).abs() < 1e-9, "{j}");
}

#[test]
fn fast_name_metrics_equal_references() {
    // Pseudo-random ASCII names over a small alphabet (many matches), all lengths up
    // to the 64-byte limit and past it (fallback), compared with the reference.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut name = |n: usize| -> String {
        (0..n)
            .map(|_| b"ab.c_1"[(next() % 6) as usize] as char)
            .collect()
    };
    for la in 0..70 {
        for lb in [0, 1, 2, la / 2, la, la + 3, 80] {
            let (a, b) = (name(la), name(lb));
            assert_eq!(
                normalized_levenshtein(&a, &b),
                strsim::normalized_levenshtein(&a, &b),
                "{a:?} {b:?}"
            );
        }
    }
    assert_eq!(normalized_levenshtein("", ""), 1.0);
    // The diagonal longest-common-substring against the textbook table.
    let table = |a: &[u8], b: &[u8]| {
        let mut best = 0;
        let mut prev = vec![0usize; b.len() + 1];
        for &x in a {
            let mut cur = vec![0usize; b.len() + 1];
            for (j, &y) in b.iter().enumerate() {
                cur[j + 1] = if x == y { prev[j] + 1 } else { 0 };
                best = best.max(cur[j + 1]);
            }
            prev = cur;
        }
        best as f64 / a.len().max(b.len()).max(1) as f64
    };
    for la in 0..40 {
        for lb in [0, 1, 2, la / 2, la, la + 3, 45] {
            let (a, b) = (name(la), name(lb));
            let want = table(a.as_bytes(), b.as_bytes());
            assert_eq!(substring_similarity(&a, &b), want, "{a:?} {b:?}");
        }
    }
    assert_eq!(
        normalized_levenshtein("é.weight", "e.weight"),
        1.0 - 1.0 / 8.0
    );
}

#[test]
fn substring_and_edit() {
    assert_eq!(substring_similarity("abcdef", "xxcdeyy"), 3.0 / 7.0);
    assert_eq!(substring_similarity("", "a"), 0.0);
    let long_a = "x".repeat(200) + "abc";
    assert_eq!(substring_similarity(&long_a, "zabcz"), 3.0 / 203.0);
    assert_eq!(substring_similarity("zabcz", &long_a), 3.0 / 203.0);
    assert_eq!(substring_similarity("abc", "abc"), 1.0);
    assert_eq!(substring_similarity("ab", "xab"), 2.0 / 3.0);
    assert_eq!(substring_similarity("abx", "b"), 1.0 / 3.0);
}

#[test]
fn shape_relations() {
    assert_eq!(
        shape_relation(&[3, 4], &[3, 4], false),
        Some(ShapeRelation::Equal)
    );
    assert_eq!(
        shape_relation(&[3, 4], &[4, 3], false),
        Some(ShapeRelation::Transpose)
    );
    assert_eq!(shape_relation(&[8, 4, 1, 1], &[8, 4], false), None);
    assert_eq!(
        shape_relation(&[8, 4, 1, 1], &[8, 4], true),
        Some(ShapeRelation::Reshape)
    );
    assert_eq!(shape_relation(&[8, 4, 1, 1], &[4, 8], true), None);
    assert_eq!(loose_shape(&[96, 32]), vec![32, 96]);
}

#[test]
fn roles_gate_candidates() {
    assert_eq!(leaf_role("in_proj_weight"), (Role::Weight, Some("in_proj")));
    assert_eq!(leaf_role("gamma").0, Role::Weight);
    assert_eq!(leaf_role("cls_token").0, Role::Param);
    let a = TensorFeatures::new("a.weight", "weight", &[4], "float32", 1);
    let b = TensorFeatures::new("b.bias", "bias", &[4], "float32", 1);
    let c = TensorFeatures::new(
        "c.num_batches_tracked",
        "num_batches_tracked",
        &[],
        "int64",
        1,
    );
    let d = TensorFeatures::new("d.weight", "weight", &[], "float32", 1);
    assert!(candidate(&a, &b, false).is_none());
    assert!(candidate(&a, &a, false).is_some());
    assert!(candidate(&d, &c, false).is_none());
}

#[test]
fn weights_validate_and_normalize() {
    let w: ScoreWeights = "shape=1,name=1,hierarchy=2".parse().unwrap();
    assert!((w.hierarchy - 0.5).abs() < 1e-12);
    assert!("shape=-1".parse::<ScoreWeights>().is_err());
    assert!("shape=0,name=0,hierarchy=0"
        .parse::<ScoreWeights>()
        .is_err());
    assert!("size=1".parse::<ScoreWeights>().is_err());
    assert!("shape".parse::<ScoreWeights>().is_err());
    let d = ScoreWeights::default();
    assert!((d.shape + d.name + d.hierarchy - 1.0).abs() < 1e-12);
}

#[test]
fn upper_bound_never_below_score() {
    let names = [
        "model.layers.3.mlp.experts.17.gate_proj.weight",
        "layers.3.ffn.experts.17.w1.weight",
        "layers.3.ffn.experts.7.w1.weight",
        "encoder.blocks.0.attn.qkv.weight",
        "w",
        "layers.3.ffn.experts.17.w1.weight",
    ];
    let w = ScoreWeights::default();
    let ctx = PairContext {
        context: Some(0.5),
        ..Default::default()
    };
    for a in names {
        for b in names {
            let s = TensorFeatures::new(a, "weight", &[4, 8], "float32", 3);
            let t = TensorFeatures::new(b, "weight", &[4, 8], "float32", 4);
            let exact = score_pair(&s, &t, &ctx, &w, false).unwrap().total;
            let bound = score_upper_bound(&s, &t, &ctx, &w, false).unwrap();
            assert!(bound >= exact, "{a} {b}: {bound} < {exact}");
        }
    }
    let s = TensorFeatures::new("a.weight", "weight", &[4, 8], "float32", 1);
    let t = TensorFeatures::new("a.weight", "weight", &[5, 8], "float32", 1);
    assert!(score_upper_bound(&s, &t, &ctx, &w, false).is_none());
}

#[test]
fn score_prefers_matching_names_and_context() {
    let s = TensorFeatures::new(
        "layer1.0.conv1.weight",
        "weight",
        &[8, 8, 3, 3],
        "float32",
        3,
    );
    let good = TensorFeatures::new(
        "stages.0.blocks.0.conv1.weight",
        "weight",
        &[8, 8, 3, 3],
        "float32",
        5,
    );
    let bad = TensorFeatures::new(
        "stages.3.blocks.1.conv2.weight",
        "weight",
        &[8, 8, 3, 3],
        "float32",
        5,
    );
    let w = ScoreWeights::default();
    let in_ctx = PairContext {
        context: Some(1.0),
        ..Default::default()
    };
    let out_ctx = PairContext {
        context: Some(0.0),
        ..Default::default()
    };
    let g = score_pair(&s, &good, &in_ctx, &w, false).unwrap();
    let b = score_pair(&s, &bad, &out_ctx, &w, false).unwrap();
    assert!(g.total > b.total);
    assert!(g.name > b.name);
    assert!(g.hierarchy > b.hierarchy);
    assert!(g.total <= 1.0 && b.total >= 0.0);
    let t = TensorFeatures::new("x.weight", "weight", &[3, 3, 8, 8], "float32", 1);
    assert!(score_pair(&s, &t, &in_ctx, &w, false).is_none());
}

#[test]
fn order_counts_when_known() {
    let s = TensorFeatures::new("a.weight", "weight", &[4], "float32", 1);
    let w = ScoreWeights::default();
    let near = PairContext {
        context: Some(1.0),
        source_rank: Some(0.1),
        target_rank: Some(0.12),
    };
    let far = PairContext {
        context: Some(1.0),
        source_rank: Some(0.1),
        target_rank: Some(0.9),
    };
    let a = score_pair(&s, &s, &near, &w, false).unwrap();
    let b = score_pair(&s, &s, &far, &w, false).unwrap();
    assert!(a.total > b.total);
    assert!(b.order.unwrap() < a.order.unwrap());
}
