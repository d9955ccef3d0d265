use super::*;

fn info(names: &[(&str, Vec<i64>)]) -> Vec<TensorInfo> {
    crate::spec::ModelSpec::from_shapes("test", crate::spec::Format::SpecJson, names).tensors
}

/// A small decoder in two namings with shared and transposed shapes and shuffled order.
fn pair_of_models(layers: usize, experts: usize) -> (Vec<TensorInfo>, Vec<TensorInfo>) {
    let mut src = vec![("model.embed_tokens.weight".to_string(), vec![50, 8])];
    let mut tgt = vec![("tok_embeddings.weight".to_string(), vec![50, 8])];
    for l in 0..layers {
        for (a, b, shape) in [
            ("self_attn.q_proj.weight", "attention.wq.weight", vec![8, 8]),
            ("self_attn.k_proj.weight", "attention.wk.weight", vec![8, 8]),
            ("self_attn.o_proj.bias", "attention.wo.bias", vec![8]),
        ] {
            src.push((format!("model.layers.{l}.{a}"), shape.clone()));
            tgt.push((format!("layers.{l}.{b}"), shape));
        }
        for e in 0..experts {
            src.push((
                format!("model.layers.{l}.mlp.experts.{e}.down_proj.weight"),
                vec![8, 16],
            ));
            tgt.push((
                format!("layers.{l}.feed_forward.experts.{e}.w2.weight"),
                vec![16, 8],
            ));
            src.push((
                format!("model.layers.{l}.mlp.experts.{e}.up_proj.weight"),
                vec![16, 8],
            ));
            tgt.push((
                format!("layers.{l}.feed_forward.experts.{e}.w3.weight"),
                vec![16, 8],
            ));
        }
        tgt.push((format!("layers.{l}.attention_norm.weight"), vec![8]));
        src.push((format!("model.layers.{l}.input_layernorm.weight"), vec![8]));
    }
    src.sort();
    let to = |v: &Vec<(String, Vec<i64>)>| {
        info(
            &v.iter()
                .map(|(n, s)| (n.as_str(), s.clone()))
                .collect::<Vec<_>>(),
        )
    };
    (to(&src), to(&tgt))
}

#[test]
fn name_features() {
    assert_eq!(
        name_tokens("model.layers.3.mlp.experts.17.w1"),
        vec!["experts", "layers", "mlp", "model", "w1"]
    );
    assert_eq!(
        name_indices("model.layers.3.mlp.experts.17.w1"),
        vec![3, 17]
    );
    assert_eq!(name_indices("conv1.weight"), Vec::<i64>::new());
    // Flattened names keep their indices; digits inside words are not indices.
    assert_eq!(name_indices("layers_3_experts_17_w1.weight"), vec![3, 17]);
    assert_eq!(
        name_ngrams("layers_3_w1"),
        name_ngrams("layers_12_w1"),
        "indices are masked wherever they stand"
    );
    assert_ne!(name_ngrams("w1"), name_ngrams("w2"));
    let g = name_ngrams("a.12.b");
    for want in ["^a.", "a.#", ".#.", "#.b", ".b$"] {
        assert!(g.contains(&want.to_string()), "{want} in {g:?}");
    }
    assert_eq!(
        g.len(),
        5,
        "digits are masked, not n-grams of their own: {g:?}"
    );
}

/// A context where each layer is a module numbered by its index: a source tensor of
/// layer L sits in the counterpart of layer L and in an outer module covering
/// everything; tensors outside layers have no matched ancestor.
fn layer_context(src: &[TensorInfo], tgt: &[TensorInfo]) -> Context {
    let layer = |name: &str| name_indices(name).first().copied();
    Context {
        source: src
            .iter()
            .map(|t| match layer(&t.name) {
                Some(l) => vec![(l, l + 1), (0, 1000)],
                None => vec![],
            })
            .collect(),
        target: tgt.iter().map(|t| layer(&t.name).unwrap_or(-1)).collect(),
    }
}

#[test]
fn tensor_path_equals_pairwise_reference() {
    let (src, tgt) = pair_of_models(3, 4);
    let context = layer_context(&src, &tgt);
    for ctx in [None, Some(&context)] {
        #[cfg(feature = "libtorch")]
        check_against_reference(&src, &tgt, ctx, Engine::Torch);
        check_against_reference(&src, &tgt, ctx, Engine::Native);
    }
}

fn check_against_reference(
    src: &[TensorInfo],
    tgt: &[TensorInfo],
    ctx: Option<&Context>,
    engine: Engine,
) {
    let opts = CandidateOptions {
        k: 3,
        ..Default::default()
    };
    let (fs, ft) = features(src, tgt, false);
    let all = [Block::all(src.len(), tgt.len())];
    let got = top_candidates_with(&fs, &ft, &all, &opts, ctx, engine).unwrap();
    for (i, list) in got.iter().enumerate() {
        let mut reference: Vec<(f32, usize)> = (0..tgt.len())
            .filter_map(|j| approx_score(&fs, i, &ft, j, &opts.weights, ctx).map(|v| (v, j)))
            .collect();
        reference.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        assert!(
            !list.is_empty(),
            "{} has candidates of its shape",
            src[i].name
        );
        // Every returned score equals the pairwise computation.
        for c in list {
            let r = approx_score(&fs, i, &ft, c.target, &opts.weights, ctx).unwrap();
            assert!(
                (r - c.approx).abs() < 1e-5,
                "{} -> {}: tensor {} vs reference {}",
                src[i].name,
                tgt[c.target].name,
                c.approx,
                r
            );
        }
        // The kept set is the true top k (ties at the k-th place may add more).
        let kth = reference[(opts.k.min(reference.len())) - 1].0;
        assert!(list.len() >= opts.k.min(reference.len()));
        assert!(
            list.iter().all(|c| c.approx >= kth - 1e-5),
            "{}: a candidate below the k-th best",
            src[i].name
        );
        let must: Vec<usize> = reference
            .iter()
            .filter(|(v, _)| *v > kth + 1e-5)
            .map(|(_, j)| *j)
            .collect();
        assert!(
            must.iter().all(|j| list.iter().any(|c| c.target == *j)),
            "{}: a better target is missing",
            src[i].name
        );
    }
}

#[test]
fn best_candidate_is_the_counterpart_and_transposes_stay_candidates() {
    let (src, tgt) = pair_of_models(4, 3);
    let mut got = top_candidates(
        &src,
        &tgt,
        &[Block::all(src.len(), tgt.len())],
        &CandidateOptions::default(),
    )
    .unwrap();
    rerank(&mut got, |i, j| {
        exact_name_similarity(&src[i].name, &tgt[j].name)
    });
    let down = src
        .iter()
        .position(|t| t.name == "model.layers.2.mlp.experts.1.down_proj.weight")
        .unwrap();
    assert!(
        got[down].iter().all(|c| tgt[c.target].shape == vec![16, 8]),
        "transposed shapes are the candidates"
    );
    let best_approx = got[down]
        .iter()
        .max_by(|a, b| a.approx.total_cmp(&b.approx))
        .unwrap();
    assert_eq!(
        tgt[best_approx.target].name,
        "layers.2.feed_forward.experts.1.w2.weight"
    );
    // The exact re-rank sorted each list by the exact score.
    for list in &got {
        assert!(list.windows(2).all(|w| w[0].exact >= w[1].exact));
    }
}

#[test]
fn context_ranks_targets_in_the_matched_module_first() {
    // With the layer index cut from the names, layers look alike; the matched
    // structure says which layer's counterpart a tensor sits in.
    let (src, tgt) = pair_of_models(4, 2);
    let mut context = layer_context(&src, &tgt);
    let layer = |t: &TensorInfo| t.name.contains("layers.").then(|| name_indices(&t.name)[0]);
    let (src_layer, tgt_layer): (Vec<_>, Vec<_>) = (
        src.iter().map(layer).collect(),
        tgt.iter().map(layer).collect(),
    );
    let strip = |v: Vec<TensorInfo>| -> Vec<TensorInfo> {
        v.into_iter()
            .map(|mut t| {
                if let Some(l) = layer(&t) {
                    t.name = t.name.replacen(&format!("layers.{l}."), "layers.", 1);
                }
                t
            })
            .collect()
    };
    let (src, tgt) = (strip(src), strip(tgt));
    assert!(src.iter().all(|t| name_indices(&t.name).len() <= 1));
    let all = [Block::all(src.len(), tgt.len())];
    let opts = CandidateOptions {
        k: 1,
        ..Default::default()
    };
    let (fs, ft) = features(&src, &tgt, false);
    let got = top_candidates_from(&fs, &ft, &all, &opts, Some(&context)).unwrap();
    for (i, list) in got.iter().enumerate() {
        if src_layer[i].is_some() {
            assert!(
                list.iter().all(|c| tgt_layer[c.target] == src_layer[i]),
                "{} of layer {:?}: {:?}",
                src[i].name,
                src_layer[i],
                list.iter().map(|c| tgt_layer[c.target]).collect::<Vec<_>>()
            );
        }
    }
    // A context of the wrong size is refused, not read out of bounds.
    context.target.pop();
    assert!(top_candidates_from(&fs, &ft, &all, &opts, Some(&context)).is_err());
}

#[test]
fn blocks_restrict_pairs() {
    let (src, tgt) = pair_of_models(2, 2);
    let s0: Vec<usize> = (0..src.len())
        .filter(|&i| src[i].name.contains("layers.0."))
        .collect();
    let t1: Vec<usize> = (0..tgt.len())
        .filter(|&j| tgt[j].name.contains("layers.1."))
        .collect();
    let got = top_candidates(
        &src,
        &tgt,
        &[Block {
            source: s0.clone(),
            target: t1.clone(),
        }],
        &CandidateOptions::default(),
    )
    .unwrap();
    for (i, list) in got.iter().enumerate() {
        if !s0.contains(&i) {
            assert!(list.is_empty());
        }
        assert!(list.iter().all(|c| t1.contains(&c.target)));
    }
    assert!(s0.iter().all(|&i| !got[i].is_empty()));
}

#[cfg(feature = "libtorch")]
#[test]
fn small_tiles_give_the_same_candidates() {
    let (src, tgt) = pair_of_models(3, 5);
    let all = [Block::all(src.len(), tgt.len())];
    let (fs, ft) = features(&src, &tgt, false);
    let big = top_candidates_with(
        &fs,
        &ft,
        &all,
        &CandidateOptions::default(),
        None,
        Engine::Torch,
    )
    .unwrap();
    // 3 rows x 16 columns per operation: many row and column chunks, merged.
    let small = top_candidates_with(
        &fs,
        &ft,
        &all,
        &CandidateOptions {
            tile_elems: 48,
            ..Default::default()
        },
        None,
        Engine::Torch,
    )
    .unwrap();
    assert_eq!(big, small);
}

/// A deterministic pseudo-random case: names from a few templates with random layer and
/// expert indices (some flattened), a few shapes (transposes included), random nesting
/// depth, and a random context of matched intervals. `variety` limits the templates and
/// shapes drawn from: with 1, every pair differs only in indices, position and context,
/// where a too-low bound of the native path's pruning would show.
fn random_case(
    n: usize,
    m: usize,
    seed: u64,
    variety: usize,
) -> (Vec<TensorInfo>, Vec<TensorInfo>, Context) {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move |below: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % below as u64) as usize
    };
    let shapes = [vec![16, 8], vec![8, 16], vec![8, 8], vec![8]];
    let src_templates = [
        "model.layers.{l}.mlp.experts.{e}.gate_proj.weight",
        "model.layers.{l}.mlp.experts.{e}.down_proj.weight",
        "model.layers.{l}.self_attn.q_proj.weight",
        "model.layers.{l}.input_layernorm.weight",
        "model.norm.weight",
    ];
    let tgt_templates = [
        "layers_{l}_feed_forward_experts_{e}_w1.weight",
        "layers.{l}.feed_forward.experts.{e}.w2.weight",
        "layers_{l}_attention_wq.weight",
        "layers.{l}.attention_norm.weight",
        "norm.weight",
    ];
    let mut make = |count: usize, templates: &[&str]| -> Vec<(String, Vec<i64>)> {
        (0..count)
            .map(|_| {
                let name = templates[next(variety.min(templates.len()))]
                    .replace("{l}", &next(6).to_string())
                    .replace("{e}", &next(5).to_string());
                (name, shapes[next(variety.min(shapes.len()))].clone())
            })
            .collect()
    };
    let (src, tgt) = (make(n, &src_templates), make(m, &tgt_templates));
    let to = |v: &Vec<(String, Vec<i64>)>| {
        info(
            &v.iter()
                .map(|(n, s)| (n.as_str(), s.clone()))
                .collect::<Vec<_>>(),
        )
    };
    let context = Context {
        source: (0..n)
            .map(|_| {
                (0..next(4))
                    .map(|_| {
                        let lo = next(m) as i64;
                        (lo, lo + 1 + next(m / 4) as i64)
                    })
                    .collect()
            })
            .collect(),
        target: (0..m).map(|_| next(m + 1) as i64 - 1).collect(),
    };
    (to(&src), to(&tgt), context)
}

/// The lists [`top_candidates_from`] promises, from the pairwise reference: best first by
/// (score, lower target), `k` kept and ties with the k-th up to `k + TIE_SLACK`.
fn reference_lists(
    fs: &Features,
    ft: &Features,
    k: usize,
    w: &ApproxWeights,
    ctx: Option<&Context>,
) -> Vec<Vec<(usize, f32)>> {
    (0..fs.leaf.len())
        .map(|i| {
            let mut all: Vec<(usize, f32)> = (0..ft.leaf.len())
                .filter_map(|j| approx_score(fs, i, ft, j, w, ctx).map(|v| (j, v)))
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            if all.len() > k {
                let kth = all[k - 1].1;
                let end = all
                    .iter()
                    .position(|c| c.1 < kth)
                    .unwrap_or(all.len())
                    .clamp(k, k + TIE_SLACK);
                all.truncate(end);
            }
            all
        })
        .collect()
}

#[test]
fn native_path_gives_the_reference_top_k_bit_for_bit() {
    for (seed, variety) in [(0, 5), (1, 5), (2, 1), (3, 1), (4, 2)] {
        let (src, tgt, context) = random_case(300, 700, seed, variety);
        let (fs, ft) = features(&src, &tgt, false);
        let all = [Block::all(src.len(), tgt.len())];
        for k in [1, 3, 8] {
            let opts = CandidateOptions {
                k,
                ..Default::default()
            };
            for ctx in [None, Some(&context)] {
                let got = top_candidates_with(&fs, &ft, &all, &opts, ctx, Engine::Native).unwrap();
                let want = reference_lists(&fs, &ft, k, &opts.weights, ctx);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let g: Vec<(usize, f32)> = g.iter().map(|c| (c.target, c.approx)).collect();
                    assert_eq!(&g, w, "seed {seed}, k {k}, row {i} ({})", src[i].name);
                }
            }
        }
    }
}

#[cfg(feature = "libtorch")]
#[test]
fn native_top_k_equals_the_libtorch_top_k() {
    let (src, tgt, context) = random_case(400, 350, 7, 5);
    let (fs, ft) = features(&src, &tgt, false);
    let all = [Block::all(src.len(), tgt.len())];
    let opts = CandidateOptions {
        k: 4,
        tile_elems: 4096,
        ..Default::default()
    };
    for ctx in [None, Some(&context)] {
        let native = top_candidates_with(&fs, &ft, &all, &opts, ctx, Engine::Native).unwrap();
        let torch = top_candidates_with(&fs, &ft, &all, &opts, ctx, Engine::Torch).unwrap();
        let mut compared = 0;
        for (i, (a, b)) in native.iter().zip(&torch).enumerate() {
            assert_eq!(a.len(), b.len(), "row {i}");
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x.approx - y.approx).abs() < 1e-5,
                    "row {i}: {x:?} vs {y:?}"
                );
            }
            // Where no two scores are within rounding of each other, the order is the same.
            let close = a
                .windows(2)
                .any(|w| (w[0].approx - w[1].approx).abs() < 1e-5)
                || b.windows(2)
                    .any(|w| (w[0].approx - w[1].approx).abs() < 1e-5);
            if !close {
                let ta: Vec<usize> = a.iter().map(|c| c.target).collect();
                let tb: Vec<usize> = b.iter().map(|c| c.target).collect();
                assert_eq!(ta, tb, "row {i} ({})", src[i].name);
                compared += 1;
            }
        }
        assert!(
            compared > src.len() / 2,
            "too many near-ties to compare: {compared}"
        );
    }
}
