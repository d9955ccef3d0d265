//! From structure to result, in seven steps ([`run`]): scored assignment of leftover
//! units, tensor pairs with transforms and orientation evidence, scores and confidence,
//! the threshold and the strategy, and a reason for every tensor left over.
//!
//! The steps share one [`State`]; its methods live beside the step they serve:
//! [`context`] (scoring a pair in the context of what is matched), [`leftovers`] (the
//! scored assignment of what structure left over, exact or batched candidates) and
//! [`reasons`] (transforms, unmatched reasons, `explain`).

mod context;
mod leftovers;
mod reasons;

use super::relations::{detect_stacks, orphans, Found};
use super::side::SideModel;
use super::structure::{Incompat, Matcher, Structure};
use super::{
    Alternative, Candidate, CandidateSearch, Explanation, Mapper, MappingResult, Match, MatchType,
    ModelSummary, OrderKind, Resolution, ScoringSummary, Strategy, SuggestOptions, Transform,
    Unmatched, UnmatchedReason, CONSERVATIVE_MIN_SCORE, MAX_ALTERNATIVES, MAX_EXACT_CANDIDATES,
    REVIEW_MIN_MARGIN,
};
use crate::assign::{assign, Edge};
use crate::error::Result;
use crate::progress::Progress;
use crate::score::batched::Features;
use crate::score::{
    candidate, loose_shape, roles_compatible, score_pair, score_upper_bound, PairContext, Role,
    ScoreBreakdown, ScoreWeights, ShapeRelation,
};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// Two leftover pairings closer than this in score are a tie: neither is taken.
pub(crate) const TIE_MARGIN: f64 = 0.01;
/// Most candidates scored to explain why a tensor is unmatched.
const MAX_REASON_CANDIDATES: usize = 32;
/// Most targets scored per match for its confidence and alternatives.
const MAX_ALTERNATIVES_SCORED: usize = 16;

/// A tensor pair before scoring.
#[derive(Debug, Clone)]
struct TPair {
    s: usize,
    t: usize,
    resolution: Resolution,
    detail: String,
    group: bool,
}

/// Everything needed after the mapping is made (for `explain`).
pub(crate) struct State<'a> {
    s: SideModel<'a>,
    t: SideModel<'a>,
    st: Structure,
    weights: ScoreWeights,
    allow_reshape: bool,
    incompat: Incompat,
    t_to_s: HashMap<usize, usize>,
    subtree_cache: std::sync::Mutex<HashMap<usize, std::sync::Arc<Vec<usize>>>>,
    search: CandidateSearch,
    device: crate::device::Device,
    /// (source, target) tensor pairs the user forbade: never scored, so never formed.
    forbid: HashSet<(usize, usize)>,
    /// The batched score's features of both sides, computed the first time it runs.
    features: std::sync::OnceLock<(Features, Features)>,
    /// Each side's tensors by shape key (see [`State::shape_peers`]), built the first time
    /// a reason is looked for: comparing shapes once per shape class, not once per pair.
    shape_index: std::sync::OnceLock<[HashMap<Vec<i64>, Vec<usize>>; 2]>,
    /// Shape candidates by (source side, role, dtype class, shape), see
    /// [`State::shape_candidates`].
    reason_classes: std::sync::Mutex<ReasonClasses>,
}

/// The candidates of one class of tensors, by (source side, active only, role, dtype
/// class, shape).
type ReasonClasses =
    HashMap<(bool, bool, Role, &'static str, Vec<i64>), std::sync::Arc<Vec<usize>>>;

/// What one round of leftover assignment found.
struct Leftovers {
    pairs: Vec<TPair>,
    /// Per source tensor left in a tie: the target tensors it tied with.
    ambiguous_s: HashMap<usize, Vec<usize>>,
    /// Per target tensor left in a tie: the source tensors it tied with.
    ambiguous_t: HashMap<usize, Vec<usize>>,
    /// How the round ran.
    scoring: ScoringSummary,
}

/// A candidate unit of a leftover unit (index into the leftover targets), its score and
/// the tensor pairs it makes.
type ScoredCandidate = (usize, f64, Vec<(usize, usize)>);

/// Leftover tensors meet by role; a bare parameter may become a module's weight.
fn key_role(r: Role) -> Role {
    if r == Role::Param {
        Role::Weight
    } else {
        r
    }
}

/// What settles a decision taken by a checkpoint's key order.
const FILE_ORDER_HINT: &str = "a TorchScript export of the source (`weightmap map SOURCE.pt ...`) or `--source-order FILE` would settle it";

/// How doubtful a resolution is (higher = more doubtful), to report the weakest step.
fn doubt(r: Resolution) -> u8 {
    match r {
        Resolution::Unique => 0,
        Resolution::Names => 1,
        Resolution::Elimination => 2,
        Resolution::Relation => 3,
        Resolution::ExecutionOrder => 3,
        Resolution::BlockRule | Resolution::OrdinalFamily | Resolution::SiblingAnchor => 3,
        Resolution::NameIndices => 4,
        Resolution::Similarity => 5,
        Resolution::Score => 6,
        Resolution::FileOrder => 7,
        Resolution::Pinned => 0,
    }
}

pub(crate) fn run<'a>(m: &'a Mapper, opts: &SuggestOptions) -> Result<(MappingResult, State<'a>)> {
    let allow_reshape = m.options.shape_tolerance > 0.0;
    let use_names = opts.strategy != Strategy::ShapeOnly;
    let weights = if use_names {
        opts.weights
    } else {
        opts.weights.without_names()
    };
    let threshold = if opts.strategy == Strategy::Conservative {
        opts.threshold.max(CONSERVATIVE_MIN_SCORE)
    } else {
        opts.threshold
    };
    let mut clock = crate::progress::StageClock::start();
    let mut s_active: Vec<bool> = m.source.tensors.iter().map(|t| t.persistent).collect();
    let mut t_active: Vec<bool> = m.target.tensors.iter().map(|t| t.persistent).collect();
    // Pinned tensors leave the problem on both sides; the engine solves the rest.
    let constraints = m
        .options
        .constraints
        .resolve(&m.source, &m.target, allow_reshape)?;
    for &(si, ti) in &constraints.pins {
        s_active[si] = false;
        t_active[ti] = false;
    }
    if m.options.constraints.exclusive {
        s_active.iter_mut().for_each(|a| *a = false);
        t_active.iter_mut().for_each(|a| *a = false);
    }

    // 1. Stacks among orphans, taken out before structure. The two sides are prepared
    // in parallel; when no stack is found the first preparation is kept as it is.
    let (s0, t0) = rayon::join(
        || SideModel::new(&m.source, m.options.source_order.as_ref(), s_active.clone()),
        || SideModel::new(&m.target, m.options.target_order.as_ref(), t_active.clone()),
    );
    let so = orphans(&s0, &t0, allow_reshape);
    let to = orphans(&t0, &s0, allow_reshape);
    let stacks = detect_stacks(&s0, &t0, &so, &to);
    let (s, t) = if stacks.is_empty() {
        (s0, t0)
    } else {
        drop((s0, t0));
        let mut sa = s_active;
        let mut ta = t_active;
        for f in &stacks {
            f.source_tensors.iter().for_each(|&i| sa[i] = false);
            f.target_tensors.iter().for_each(|&i| ta[i] = false);
        }
        rayon::join(
            || SideModel::new(&m.source, m.options.source_order.as_ref(), sa),
            || SideModel::new(&m.target, m.options.target_order.as_ref(), ta),
        )
    };
    let incompat = Incompat::new(&m.options.incompatible);

    clock.lap("sides");
    // 2. Structure.
    // (Each pass draws its own bar.)
    let st = {
        let first = Matcher::new(&s, &t, use_names, &incompat, None).run();
        // Blocks decided early cannot use the renamings of blocks decided later: when the
        // complete set of renamings settles something the first pass missed, once more.
        if first.rules_would_help() {
            Matcher::new(&s, &t, use_names, &incompat, Some(&first.book)).run()
        } else {
            first
        }
    };
    let mut state = State {
        s,
        t,
        st,
        weights,
        allow_reshape,
        incompat,
        t_to_s: HashMap::new(),
        subtree_cache: Default::default(),
        search: m.options.candidates,
        device: m.options.device,
        forbid: constraints.forbid,
        features: Default::default(),
        shape_index: Default::default(),
        reason_classes: Default::default(),
    };
    let relations: Vec<Found> = stacks
        .into_iter()
        .chain(state.st.relations.iter().cloned())
        .collect();

    clock.lap("structure");
    // 3. Tensor pairs from unit pairs.
    let mut pairs: Vec<TPair> = vec![];
    let mut missing_s: HashMap<usize, String> = HashMap::new();
    let mut missing_t: HashMap<usize, String> = HashMap::new();
    // Unit pairs structure formed with a forbidden tensor pair go back to the scored
    // assignment, where the veto holds.
    let (reopen_s, reopen_t): (Vec<usize>, Vec<usize>) = state
        .st
        .unit_pairs
        .iter()
        .filter(|up| state.units_forbidden(up.s, up.t))
        .map(|up| (up.s, up.t))
        .unzip();
    for up in &state.st.unit_pairs {
        if reopen_s.contains(&up.s) {
            continue;
        }
        let (a, b) = (&state.s.units[up.s], &state.t.units[up.t]);
        let (detail, resolution) = state.chain_detail(up.s, up.resolution, &up.detail);
        let group = a.tensors.len() > 1 || b.tensors.len() > 1;
        let mut used_t = HashSet::new();
        for &(role, si) in &a.tensors {
            let found = b
                .tensors
                .iter()
                .find(|(r, ti)| *r == role && !used_t.contains(ti))
                .or_else(|| {
                    (a.tensors.len() == 1
                        && b.tensors.len() == 1
                        && roles_compatible(role, b.tensors[0].0))
                    .then_some(&b.tensors[0])
                });
            match found {
                Some(&(_, ti))
                    if candidate(&state.s.feats[si], &state.t.feats[ti], allow_reshape)
                        .is_some() =>
                {
                    used_t.insert(ti);
                    pairs.push(TPair {
                        s: si,
                        t: ti,
                        resolution,
                        detail: detail.clone(),
                        group,
                    });
                }
                _ => {
                    missing_s.insert(si, b.label.clone());
                }
            }
        }
        for &(_, ti) in &b.tensors {
            if !used_t.contains(&ti) {
                missing_t.insert(ti, a.label.clone());
            }
        }
    }

    state.st.left_s.extend(reopen_s);
    state.st.left_t.extend(reopen_t);

    // 4. Leftover units: scored assignment; ties stay open.
    let none = HashSet::new();
    let first = state.assign_leftovers(&pairs, &none, &none)?;
    let (mut ambiguous_s, mut ambiguous_t, mut scoring) =
        (first.ambiguous_s, first.ambiguous_t, first.scoring);
    let paired_some = !first.pairs.is_empty();
    pairs.extend(first.pairs);
    // A second round for the tensors the first left free in units it paired in part (a
    // router's bias that the other side keeps in a sub-module of its own); tensors left
    // tied in the first round stay as they are.
    if paired_some {
        let held_s: HashSet<usize> = ambiguous_s.keys().copied().collect();
        let held_t: HashSet<usize> = ambiguous_t.keys().copied().collect();
        let more = state.assign_leftovers(&pairs, &held_s, &held_t)?;
        pairs.extend(more.pairs);
        for (k, v) in more.ambiguous_s {
            ambiguous_s.entry(k).or_insert(v);
        }
        for (k, v) in more.ambiguous_t {
            ambiguous_t.entry(k).or_insert(v);
        }
        scoring.exact_pairs += more.scoring.exact_pairs;
        if more.scoring.search == CandidateSearch::Batched.name() {
            scoring.search = more.scoring.search;
            scoring.device = more.scoring.device;
        }
    }

    pairs.extend(constraints.pins.iter().map(|&(s, t)| TPair {
        s,
        t,
        resolution: Resolution::Pinned,
        detail: "pinned by the user".into(),
        group: false,
    }));

    clock.lap("scored");
    // 5. Transforms, orientation evidence, scores.
    let evidence = state.orientation_evidence(&pairs);
    let scored: Vec<(TPair, Option<Transform>, Option<String>, ScoreBreakdown)> = pairs
        .par_iter()
        .filter_map(|p| {
            let (transform, flag) = state.transform_of(p, &evidence);
            let b = match state.pair_score(p.s, p.t) {
                Some(b) => b,
                // A pin across roles (a weight pinned to a bias) is not a candidate the
                // engine would score, but the user decided it: kept, scored by its shapes
                // (checked when the pin was read).
                None if p.resolution == Resolution::Pinned => pinned_breakdown(
                    &state.s.spec.tensors[p.s].shape,
                    &state.t.spec.tensors[p.t].shape,
                ),
                None => return None,
            };
            Some((p.clone(), transform, flag, b))
        })
        .collect();
    for (p, ..) in &scored {
        state.t_to_s.insert(p.t, p.s);
    }
    let progress = Progress::new(scored.len() as u64, "reviewing pairs");
    // A pair decided by scores whose margin comes from a file's key order alone (the order
    // part of the score, with a checkpoint's registration order on one side) is flagged;
    // where the target registered the tied candidates in another order than it runs them,
    // two libraries' registration habits would decide: the pair is refused.
    let weak_order = [&state.s, &state.t]
        .iter()
        .any(|side| matches!(side.order_kind, OrderKind::File | OrderKind::Registration));
    let refused: Mutex<Vec<(usize, usize, Vec<String>)>> = Mutex::new(vec![]);
    // Each match with its (source, target) tensor indices, so that the steps below look
    // nothing up by name.
    let mut indexed: Vec<(usize, usize, Match)> = scored
        .par_iter()
        .map(|(p, transform, flag, b)| {
            progress.inc(1);
            let alts = if opts.alternatives || p.resolution == Resolution::Score {
                state.alternatives(p.s, p.t)
            } else {
                vec![]
            };
            let mut flag = flag.clone();
            if weak_order && p.resolution == Resolution::Score && b.order.is_some() {
                let own = b.total_without_order(&weights);
                let tied: Vec<usize> = alts
                    .iter()
                    // Within the margin a pair decided by scores needs to go unreviewed.
                    .filter(|(_, a)| a.total_without_order(&weights) > own - REVIEW_MIN_MARGIN)
                    .map(|a| a.0)
                    .collect();
                let t = &state.t;
                let disagrees = |other: usize| match (t.exec[p.t], t.exec[other], t.pos[p.t], t.pos[other]) {
                    (Some(e1), Some(e2), Some(r1), Some(r2)) => (e1 < e2) != (r1 < r2),
                    _ => false,
                };
                if tied.iter().any(|&o| disagrees(o)) {
                    let mut names: Vec<String> = std::iter::once(p.t)
                        .chain(tied.iter().copied())
                        .map(|i| m.target.tensors[i].original_name.clone())
                        .collect();
                    names.dedup();
                    refused.lock().unwrap_or_else(|e| e.into_inner()).push((p.s, p.t, names));
                } else if !tied.is_empty() && flag.is_none() {
                    flag = Some(format!(
                        "decided by file order only: without the checkpoint's key order, {} scores about as well; {FILE_ORDER_HINT}",
                        m.target.tensors[tied[0]].original_name
                    ));
                }
            }
            let best_alt = alts.first().map(|a| a.1.total);
            let confidence = p.resolution.confidence().unwrap_or(match best_alt {
                Some(x) => (b.total - x).clamp(0.0, 1.0),
                None => b.total.clamp(0.0, 1.0),
            });
            let sf = &m.source.tensors[p.s];
            let tf = &m.target.tensors[p.t];
            (p.s, p.t, Match {
                source: sf.name.clone(),
                source_original: sf.original_name.clone(),
                target: tf.original_name.clone(),
                source_shape: sf.shape.clone(),
                target_shape: tf.shape.clone(),
                score: b.total,
                breakdown: *b,
                transform: transform.clone(),
                match_type: if p.group {
                    MatchType::Group
                } else {
                    MatchType::Individual
                },
                resolution: p.resolution,
                resolution_detail: p.detail.clone(),
                confidence,
                alternatives: alts
                    .iter()
                    .take(MAX_ALTERNATIVES)
                    .map(|(ti, ab)| Alternative {
                        target: m.target.tensors[*ti].original_name.clone(),
                        score: ab.total,
                    })
                    .collect(),
                ambiguous: flag.or_else(|| {
                    (p.resolution == Resolution::FileOrder).then(|| {
                        format!("decided by file order only: look-alikes told apart by the checkpoint's key order (registration order, usually but not always execution order); {FILE_ORDER_HINT}")
                    })
                }),
            })
        })
        .collect();
    progress.finish();

    clock.lap("alternatives");
    // 6. Threshold and strategy.
    let mut rejected_s: HashMap<usize, UnmatchedReason> = HashMap::new();
    let mut rejected_t: HashMap<usize, UnmatchedReason> = HashMap::new();
    for (si, ti, candidates) in refused.into_inner().unwrap_or_else(|e| e.into_inner()) {
        let source = m.source.tensors[si].original_name.clone();
        rejected_s.insert(si, UnmatchedReason::Ambiguous { candidates });
        rejected_t.insert(
            ti,
            UnmatchedReason::Ambiguous {
                candidates: vec![source],
            },
        );
    }

    indexed.retain(|x| !rejected_s.contains_key(&x.0));
    indexed.retain(|&(si, ti, ref x)| {
        let why: Option<UnmatchedReason> = if x.resolution == Resolution::Pinned {
            None
        } else if x.score < threshold {
            Some(UnmatchedReason::BelowThreshold {
                candidate: String::new(),
                score: x.score,
                threshold,
            })
        } else if opts.strategy == Strategy::Conservative {
            // The same definition as every report's "needs review".
            let low = x.needs_review();
            low.map(|why| UnmatchedReason::LowConfidence {
                candidate: String::new(),
                why,
            })
        } else {
            None
        };
        match why {
            None => true,
            Some(r) => {
                let with = |r: &UnmatchedReason, c: &str| match r.clone() {
                    UnmatchedReason::BelowThreshold {
                        score, threshold, ..
                    } => UnmatchedReason::BelowThreshold {
                        candidate: c.to_string(),
                        score,
                        threshold,
                    },
                    UnmatchedReason::LowConfidence { why, .. } => UnmatchedReason::LowConfidence {
                        candidate: c.to_string(),
                        why,
                    },
                    other => other,
                };
                rejected_s.insert(si, with(&r, &x.target));
                rejected_t.insert(ti, with(&r, &x.source_original));
                false
            }
        }
    });
    let matched_s: HashSet<usize> = indexed.iter().map(|x| x.0).collect();
    let matched_t: HashSet<usize> = indexed.iter().map(|x| x.1).collect();
    state.t_to_s.retain(|t, _| matched_t.contains(t));
    indexed.sort_by_key(|x| m.source.tensors[x.0].position);
    let mappings: Vec<Match> = indexed.into_iter().map(|x| x.2).collect();

    // 7. Reasons.
    let mut rel_s: HashMap<usize, usize> = HashMap::new();
    let mut rel_t: HashMap<usize, usize> = HashMap::new();
    for (k, f) in relations.iter().enumerate() {
        f.source_tensors.iter().for_each(|&i| {
            rel_s.insert(i, k);
        });
        f.target_tensors.iter().for_each(|&i| {
            rel_t.insert(i, k);
        });
    }
    let tied_s = tied_partner(&m.source, &matched_s);
    let tied_t = tied_partner(&m.target, &matched_t);
    // The same reasons, in the same order of precedence, for either side.
    let unmatched = |is_source: bool| -> Vec<Unmatched> {
        let (spec, other, matched, rel, rejected, missing, tied, ambiguous) = if is_source {
            (
                &m.source,
                &m.target,
                &matched_s,
                &rel_s,
                &rejected_s,
                &missing_s,
                &tied_s,
                &ambiguous_s,
            )
        } else {
            (
                &m.target,
                &m.source,
                &matched_t,
                &rel_t,
                &rejected_t,
                &missing_t,
                &tied_t,
                &ambiguous_t,
            )
        };
        // In parallel: where thousands of tensors have no counterpart (a layer the
        // target dropped), each looks through its class of candidates.
        let per_tensor = |(i, tensor): (usize, &crate::spec::TensorInfo)| {
            if matched.contains(&i) {
                return None;
            }
            let reason = if let Some(&k) = rel.get(&i) {
                UnmatchedReason::Converted {
                    conversion: relations[k].relation.clone(),
                }
            } else if !tensor.persistent {
                UnmatchedReason::NotInStateDict
            } else if let Some(r) = rejected.get(&i) {
                r.clone()
            } else if let Some(c) = missing.get(&i) {
                UnmatchedReason::MissingInCounterpart {
                    counterpart: c.clone(),
                }
            } else if let Some(to) = tied.get(&i) {
                UnmatchedReason::Tied { to: to.clone() }
            } else if let Some(c) = ambiguous.get(&i) {
                UnmatchedReason::Ambiguous {
                    candidates: c
                        .iter()
                        .map(|&o| other.tensors[o].original_name.clone())
                        .collect(),
                }
            } else {
                match state.open_reason(i, is_source, &matched_s, &matched_t) {
                    UnmatchedReason::NoShapeCandidate => match other.find(&tensor.name) {
                        Some(o) => UnmatchedReason::Mismatched {
                            other: other.tensors[o].original_name.clone(),
                            shape: tensor.shape.clone(),
                            other_shape: other.tensors[o].shape.clone(),
                        },
                        None => UnmatchedReason::NoShapeCandidate,
                    },
                    reason => reason,
                }
            };
            Some(Unmatched {
                name: tensor.name.clone(),
                original_name: tensor.original_name.clone(),
                shape: tensor.shape.clone(),
                reason,
            })
        };
        spec.tensors
            .par_iter()
            .enumerate()
            .filter_map(per_tensor)
            .collect()
    };
    let unmatched_source = unmatched(true);
    let unmatched_target = unmatched(false);

    let summary = |spec: &crate::spec::ModelSpec, side: &SideModel| ModelSummary {
        path: spec.path.clone(),
        format: spec.format.name().to_string(),
        tensors: spec.tensors.len(),
        order: side.order_kind,
        stripped_prefixes: spec.stripped_prefixes.clone(),
    };
    clock.lap("reasons");
    let result = MappingResult {
        source: summary(&m.source, &state.s),
        target: summary(&m.target, &state.t),
        strategy: opts.strategy,
        threshold,
        weights,
        mappings,
        unmatched_source,
        unmatched_target,
        conversions: relations.into_iter().map(|f| f.relation).collect(),
        scoring,
        block_rules: state.st.book.rules(),
    };
    Ok((result, state))
}

/// The score of a pinned pair the engine does not score: its shape part alone.
fn pinned_breakdown(source: &[i64], target: &[i64]) -> ScoreBreakdown {
    let relation =
        crate::score::shape_relation(source, target, true).unwrap_or(ShapeRelation::Reshape);
    ScoreBreakdown::shape_only(relation, relation.score())
}

/// For each tensor sharing storage with a matched tensor (tied weights, in either
/// direction of `tied_to`), the name of that matched tensor.
fn tied_partner(spec: &crate::spec::ModelSpec, matched: &HashSet<usize>) -> HashMap<usize, String> {
    let index: HashMap<&str, usize> = spec
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    // Group tensors by the first tensor of their storage.
    let root = |i: usize| {
        spec.tensors[i]
            .tied_to
            .as_deref()
            .and_then(|n| index.get(n).copied())
            .unwrap_or(i)
    };
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for i in 0..spec.tensors.len() {
        groups.entry(root(i)).or_default().push(i);
    }
    let mut out = HashMap::new();
    for members in groups.values().filter(|g| g.len() > 1) {
        if let Some(&hit) = members.iter().find(|i| matched.contains(i)) {
            for &i in members.iter().filter(|i| !matched.contains(i)) {
                out.insert(i, spec.tensors[hit].original_name.clone());
            }
        }
    }
    out
}
