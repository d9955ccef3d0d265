//! From structure to result: scored assignment of leftover units, tensor pairs with
//! transforms and orientation evidence, scores and confidence, the threshold and the
//! strategy, and a reason for every tensor left over.

use super::fused::{detect_stacks, orphans, Found};
use super::model::SideModel;
use super::structure::{Incompat, Matcher, Structure};
use super::{
    Alternative, Candidate, CandidateSearch, Explanation, Mapper, MappingResult, Match, MatchType,
    ModelSummary, Resolution, ScoringSummary, Strategy, SuggestOptions, Transform, Unmatched,
    UnmatchedReason, CONSERVATIVE_MIN_MARGIN, CONSERVATIVE_MIN_SCORE, MAX_ALTERNATIVES,
    MAX_EXACT_CANDIDATES,
};
use crate::assign::{assign, Edge};
use crate::error::Result;
use crate::progress::Progress;
use crate::score::{
    candidate, loose_shape, roles_compatible, score_pair, score_upper_bound, PairContext, Role,
    ScoreBreakdown, ScoreWeights, ShapeRelation,
};
use crate::score_tensor::{self, ApproxWeights, Block, CandidateOptions, Features};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};

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
    device: tch::Device,
    /// The batched score's features of both sides, computed the first time it runs.
    features: std::sync::OnceLock<(Features, Features)>,
}

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

/// How doubtful a resolution is (higher = more doubtful), to report the weakest step.
fn doubt(r: Resolution) -> u8 {
    match r {
        Resolution::Unique => 0,
        Resolution::Names => 1,
        Resolution::Elimination => 2,
        Resolution::Relation => 3,
        Resolution::ExecutionOrder => 3,
        Resolution::NameIndices => 4,
        Resolution::Similarity => 5,
        Resolution::Score => 6,
        Resolution::FileOrder => 7,
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
    let s_active: Vec<bool> = m.source.tensors.iter().map(|t| t.persistent).collect();
    let t_active: Vec<bool> = m.target.tensors.iter().map(|t| t.persistent).collect();

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

    // 2. Structure.
    let st = Progress::while_running("matching", || {
        Matcher::new(&s, &t, use_names, &incompat).run()
    });
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
        features: Default::default(),
    };
    let relations: Vec<Found> = stacks
        .into_iter()
        .chain(state.st.relations.iter().cloned())
        .collect();

    // 3. Tensor pairs from unit pairs.
    let mut pairs: Vec<TPair> = vec![];
    let mut missing_s: HashMap<usize, String> = HashMap::new();
    let mut missing_t: HashMap<usize, String> = HashMap::new();
    for up in &state.st.unit_pairs {
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

    // 5. Transforms, orientation evidence, scores.
    let evidence = state.orientation_evidence(&pairs);
    let scored: Vec<(TPair, Transform, Option<String>, ScoreBreakdown)> = pairs
        .par_iter()
        .filter_map(|p| {
            let (transform, flag) = state.transform_of(p, &evidence);
            let b = state.pair_score(p.s, p.t)?;
            Some((p.clone(), transform, flag, b))
        })
        .collect();
    for (p, ..) in &scored {
        state.t_to_s.insert(p.t, p.s);
    }
    let progress = Progress::new(scored.len() as u64, "scoring");
    let mut mappings: Vec<Match> = scored
        .par_iter()
        .map(|(p, transform, flag, b)| {
            progress.inc(1);
            let alts = state.alternatives(p.s, p.t);
            let best_alt = alts.first().map(|a| a.1.total);
            let confidence = match best_alt {
                Some(x) => (b.total - x).max(0.0),
                None => b.total,
            };
            let sf = &m.source.tensors[p.s];
            let tf = &m.target.tensors[p.t];
            Match {
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
                ambiguous: flag.clone().or_else(|| {
                    (p.resolution == Resolution::FileOrder)
                        .then(|| "look-alikes told apart by file/registration order only, which is usually but not always execution order".to_string())
                }),
            }
        })
        .collect();
    progress.finish();

    // 6. Threshold and strategy.
    let mut rejected_s: HashMap<usize, UnmatchedReason> = HashMap::new();
    let mut rejected_t: HashMap<usize, UnmatchedReason> = HashMap::new();
    let index_s: HashMap<&str, usize> = m
        .source
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let index_t: HashMap<&str, usize> = m
        .target
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.original_name.as_str(), i))
        .collect();
    mappings.retain(|x| {
        let why: Option<UnmatchedReason> = if x.score < threshold {
            Some(UnmatchedReason::BelowThreshold {
                candidate: String::new(),
                score: x.score,
                threshold,
            })
        } else if opts.strategy == Strategy::Conservative {
            let low = if x.ambiguous.is_some() {
                Some("flagged ambiguous".to_string())
            } else if x.resolution == Resolution::FileOrder {
                Some("look-alikes told apart by file order only".to_string())
            } else if x.resolution == Resolution::Score && x.confidence < CONSERVATIVE_MIN_MARGIN {
                Some(format!("margin {:.3} to the runner-up", x.confidence))
            } else {
                None
            };
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
                let (si, ti) = (index_s[x.source.as_str()], index_t[x.target.as_str()]);
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
    let matched_s: HashSet<usize> = mappings
        .iter()
        .map(|x| index_s[x.source.as_str()])
        .collect();
    let matched_t: HashSet<usize> = mappings
        .iter()
        .map(|x| index_t[x.target.as_str()])
        .collect();
    state.t_to_s.retain(|t, _| matched_t.contains(t));
    mappings.sort_by_key(|x| m.source.tensors[index_s[x.source.as_str()]].position);

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
        let mut out = vec![];
        for (i, tensor) in spec.tensors.iter().enumerate() {
            if matched.contains(&i) {
                continue;
            }
            let reason = if let Some(&k) = rel.get(&i) {
                UnmatchedReason::ManyToOne {
                    relation: relations[k].relation.clone(),
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
                state.open_reason(i, is_source, &matched_s, &matched_t)
            };
            out.push(Unmatched {
                name: tensor.name.clone(),
                original_name: tensor.original_name.clone(),
                shape: tensor.shape.clone(),
                reason,
            });
        }
        out
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
    let result = MappingResult {
        source: summary(&m.source, &state.s),
        target: summary(&m.target, &state.t),
        strategy: opts.strategy,
        threshold,
        weights,
        mappings,
        unmatched_source,
        unmatched_target,
        many_to_one: relations.into_iter().map(|f| f.relation).collect(),
        scoring,
    };
    Ok((result, state))
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

impl<'a> State<'a> {
    /// The detail of a unit pair with the order-based decisions of its ancestors, and the
    /// most doubtful resolution along the way.
    fn chain_detail(&self, su: usize, own: Resolution, own_detail: &str) -> (String, Resolution) {
        let mut detail = own_detail.to_string();
        let mut worst = own;
        let mut cur = Some(self.s.units[su].node);
        while let Some(x) = cur {
            if x == 0 {
                break;
            }
            if let Some((r, d)) = self.st.node_detail.get(&x) {
                if matches!(
                    r,
                    Resolution::ExecutionOrder
                        | Resolution::NameIndices
                        | Resolution::FileOrder
                        | Resolution::Similarity
                ) {
                    let b = self.st.node_pairs[&x];
                    detail.push_str(&format!(
                        "; module {} ↔ {}: {d}",
                        self.s.nodes[x].path, self.t.nodes[b].path
                    ));
                }
                if doubt(*r) > doubt(worst) {
                    worst = *r;
                }
            }
            cur = self.s.nodes[x].parent;
        }
        (detail, worst)
    }

    /// The exact score of source tensor `si` against target tensor `ti` in the structure
    /// matched so far (`None` when they are not candidates).
    fn pair_score(&self, si: usize, ti: usize) -> Option<ScoreBreakdown> {
        let ctx = self.pair_context(si, ti);
        score_pair(
            &self.s.feats[si],
            &self.t.feats[ti],
            &ctx,
            &self.weights,
            self.allow_reshape,
        )
    }

    /// A bound [`Self::pair_score`]'s total never exceeds, without the string metrics.
    fn pair_upper_bound(&self, si: usize, ti: usize) -> Option<f64> {
        let ctx = self.pair_context(si, ti);
        score_upper_bound(
            &self.s.feats[si],
            &self.t.feats[ti],
            &ctx,
            &self.weights,
            self.allow_reshape,
        )
    }

    /// Module context and local order ranks of a pair.
    pub(crate) fn pair_context(&self, si: usize, ti: usize) -> PairContext {
        let (mut count, mut agree) = (0usize, 0usize);
        let mut nearest: Option<(usize, usize)> = None;
        for a in self.s.ancestors_of_tensor(si) {
            if let Some(&b) = self.st.node_pairs.get(&a) {
                count += 1;
                if self.t.tensor_inside(ti, &self.t.nodes[b].path) {
                    agree += 1;
                    if nearest.is_none() {
                        nearest = Some((a, b));
                    }
                } else if nearest.is_none() {
                    nearest = Some((usize::MAX, usize::MAX));
                }
            }
        }
        let local = |rank: Option<f64>, span: Option<(f64, f64)>| match (rank, span) {
            (Some(r), Some((lo, hi))) if hi > lo => Some((r - lo) / (hi - lo)),
            _ => None,
        };
        let (source_rank, target_rank) = match nearest {
            Some((a, b)) if a != usize::MAX => (
                local(self.s.rank[si], self.s.nodes[a].rank_span),
                local(self.t.rank[ti], self.t.nodes[b].rank_span),
            ),
            _ => (self.s.rank[si], self.t.rank[ti]),
        };
        PairContext {
            context: (count > 0).then(|| agree as f64 / count as f64),
            source_rank,
            target_rank,
        }
    }

    /// Active target tensors in the subtree of target node `b`.
    fn subtree_tensors(&self, b: usize) -> std::sync::Arc<Vec<usize>> {
        if let Some(v) = self
            .subtree_cache
            .lock()
            .ok()
            .and_then(|c| c.get(&b).cloned())
        {
            return v;
        }
        let mut out = vec![];
        let mut stack = vec![b];
        while let Some(x) = stack.pop() {
            for &u in &self.t.nodes[x].units {
                out.extend(self.t.units[u].tensors.iter().map(|x| x.1));
            }
            stack.extend(self.t.nodes[x].children.iter().copied());
        }
        out.sort_unstable();
        let v = std::sync::Arc::new(out);
        if let Ok(mut c) = self.subtree_cache.lock() {
            c.insert(b, v.clone());
        }
        v
    }

    /// Candidate targets of source tensor `si`, nearest context first, up to `limit`
    /// (all when `limit` is `None`), scored, best first.
    fn scored_candidates(
        &self,
        si: usize,
        limit: Option<usize>,
        exclude: Option<usize>,
    ) -> Vec<(usize, ScoreBreakdown)> {
        let chosen = self.candidate_targets(si, limit, exclude);
        let mut out: Vec<(usize, ScoreBreakdown)> = chosen
            .into_iter()
            .filter_map(|ti| self.pair_score(si, ti).map(|b| (ti, b)))
            .collect();
        out.sort_by(|a, b| b.1.total.total_cmp(&a.1.total).then(a.0.cmp(&b.0)));
        out
    }

    /// Candidate targets of source tensor `si`, nearest context first, up to `limit`
    /// (all when `limit` is `None`), unscored.
    fn candidate_targets(
        &self,
        si: usize,
        limit: Option<usize>,
        exclude: Option<usize>,
    ) -> Vec<usize> {
        let sf = &self.s.feats[si];
        let mut scopes: Vec<usize> = self
            .s
            .ancestors_of_tensor(si)
            .into_iter()
            .filter_map(|a| self.st.node_pairs.get(&a).copied())
            .collect();
        scopes.push(0);
        let mut chosen: Vec<usize> = vec![];
        let mut seen: HashSet<usize> = HashSet::new();
        'scopes: for b in scopes {
            for &ti in self.subtree_tensors(b).iter() {
                if Some(ti) == exclude || seen.contains(&ti) {
                    continue;
                }
                if candidate(sf, &self.t.feats[ti], self.allow_reshape).is_some()
                    && !self
                        .incompat
                        .forbidden(&self.s.spec.tensors[si].name, &self.t.spec.tensors[ti].name)
                {
                    seen.insert(ti);
                    chosen.push(ti);
                    if limit.is_some_and(|l| chosen.len() >= l) {
                        break 'scopes;
                    }
                }
            }
        }
        chosen
    }

    /// The best [`MAX_ALTERNATIVES`] of the first [`MAX_ALTERNATIVES_SCORED`] candidates
    /// of `si` other than `ti`, best first: the same as the head of
    /// [`Self::scored_candidates`], but candidates whose upper bound cannot reach the
    /// ones kept are never scored exactly (one call per match: it adds up at scale).
    fn alternatives(&self, si: usize, ti: usize) -> Vec<(usize, ScoreBreakdown)> {
        let mut bounded: Vec<(usize, f64)> = self
            .candidate_targets(si, Some(MAX_ALTERNATIVES_SCORED), Some(ti))
            .into_iter()
            .filter_map(|t| self.pair_upper_bound(si, t).map(|b| (t, b)))
            .collect();
        bounded.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut out: Vec<(usize, ScoreBreakdown)> = vec![];
        for (t, bound) in bounded {
            if out.len() >= MAX_ALTERNATIVES {
                // Ties are broken by index, so a bound equal to the last kept total
                // could still displace it: stop only when strictly below.
                if out[MAX_ALTERNATIVES - 1].1.total > bound {
                    break;
                }
            }
            if let Some(b) = self.pair_score(si, t) {
                out.push((t, b));
                out.sort_by(|a, b| b.1.total.total_cmp(&a.1.total).then(a.0.cmp(&b.0)));
            }
        }
        out.truncate(MAX_ALTERNATIVES);
        out
    }

    /// Score of a unit pair: mean over the tensor pairs it makes (None if incompatible).
    /// Tensors already taken (`taken_s`, `taken_t`) are left out of both units.
    fn unit_score(
        &self,
        su: usize,
        tu: usize,
        taken_s: &HashSet<usize>,
        taken_t: &HashSet<usize>,
    ) -> Option<(f64, Vec<(usize, usize)>)> {
        let (a, b) = (&self.s.units[su], &self.t.units[tu]);
        if self.incompat.forbidden(&a.label, &b.label) {
            return None;
        }
        let a_free: Vec<(Role, usize)> = a
            .tensors
            .iter()
            .copied()
            .filter(|x| !taken_s.contains(&x.1))
            .collect();
        let b_free: Vec<(Role, usize)> = b
            .tensors
            .iter()
            .copied()
            .filter(|x| !taken_t.contains(&x.1))
            .collect();
        let mut pairs = vec![];
        let mut total = 0.0;
        for &(role, si) in &a_free {
            let hit = b_free.iter().find(|(r, _)| *r == role).or_else(|| {
                (a_free.len() == 1 && b_free.len() == 1 && roles_compatible(role, b_free[0].0))
                    .then_some(&b_free[0])
            });
            if let Some(&(_, ti)) = hit {
                // A shared role whose shapes disagree makes the modules different kinds.
                let sc = self.pair_score(si, ti)?;
                total += sc.total;
                pairs.push((si, ti));
            }
        }
        if pairs.is_empty() {
            return None;
        }
        Some((total / pairs.len() as f64, pairs))
    }

    /// Scored one-to-one assignment of the units structure left over: the pairs and, per
    /// tensor, the candidates it tied with. Tensors in `held_s` / `held_t` are treated as
    /// taken. Errors only where the batched score fails on its device.
    fn assign_leftovers(
        &self,
        existing: &[TPair],
        held_s: &HashSet<usize>,
        held_t: &HashSet<usize>,
    ) -> Result<Leftovers> {
        let mut taken_t: HashSet<usize> = existing.iter().map(|p| p.t).collect();
        let mut taken_s: HashSet<usize> = existing.iter().map(|p| p.s).collect();
        taken_s.extend(held_s);
        taken_t.extend(held_t);
        // Units that structure paired with a tensor left over (a router's bias that the
        // other side keeps in a sub-module of its own) offer their free tensors too.
        let partial = |units: &[super::model::Unit], taken: &HashSet<usize>| -> Vec<usize> {
            (0..units.len())
                .filter(|&u| {
                    let t = &units[u].tensors;
                    t.iter().any(|x| taken.contains(&x.1))
                        && t.iter().any(|x| !taken.contains(&x.1))
                })
                .collect()
        };
        let mut left_s: Vec<usize> = self
            .st
            .left_s
            .iter()
            .copied()
            .filter(|&u| {
                self.s.units[u]
                    .tensors
                    .iter()
                    .all(|x| !taken_s.contains(&x.1))
            })
            .collect();
        left_s.extend(partial(&self.s.units, &taken_s));
        let mut left_t: Vec<usize> = self
            .st
            .left_t
            .iter()
            .copied()
            .filter(|&u| {
                self.t.units[u]
                    .tensors
                    .iter()
                    .all(|x| !taken_t.contains(&x.1))
            })
            .collect();
        left_t.extend(partial(&self.t.units, &taken_t));
        let free_s = |u: usize| {
            self.s.units[u]
                .tensors
                .iter()
                .copied()
                .filter(|x| !taken_s.contains(&x.1))
        };
        let free_t = |u: usize| {
            self.t.units[u]
                .tensors
                .iter()
                .copied()
                .filter(|x| !taken_t.contains(&x.1))
        };
        // Index target units by (role, loose shape) of their tensors; with a shape
        // tolerance, size-1 dimensions are dropped first so that reshapes meet.
        let key_shape = |shape: &[i64]| -> Vec<i64> {
            if self.allow_reshape {
                loose_shape(
                    &shape
                        .iter()
                        .copied()
                        .filter(|&d| d != 1)
                        .collect::<Vec<_>>(),
                )
            } else {
                loose_shape(shape)
            }
        };
        let mut index: HashMap<(Role, Vec<i64>), Vec<usize>> = HashMap::new();
        for (k, &u) in left_t.iter().enumerate() {
            for (r, ti) in free_t(u) {
                let e = index
                    .entry((key_role(r), key_shape(&self.t.spec.tensors[ti].shape)))
                    .or_default();
                if e.last() != Some(&k) {
                    e.push(k);
                }
            }
        }
        // Every same-role, same-shape candidate unit of each leftover unit: the exact list.
        let exact_rows: Vec<Vec<usize>> = left_s
            .par_iter()
            .map(|&su| {
                let mut cands: Vec<usize> = free_s(su)
                    .filter_map(|(r, si)| {
                        index.get(&(key_role(r), key_shape(&self.s.spec.tensors[si].shape)))
                    })
                    .flatten()
                    .copied()
                    .collect();
                cands.sort_unstable();
                cands.dedup();
                cands
            })
            .collect();
        let batched = !left_s.is_empty()
            && match self.search {
                CandidateSearch::Exact => false,
                CandidateSearch::Batched => true,
                CandidateSearch::Auto => exact_rows.iter().any(|c| c.len() > MAX_EXACT_CANDIDATES),
            };
        let cand_rows: Vec<Vec<usize>> = if batched {
            self.batched_candidates(&left_s, &left_t, &taken_s, &taken_t, &exact_rows)?
        } else {
            exact_rows
                .into_par_iter()
                .zip(left_s.par_iter())
                .map(|(cands, &su)| self.nearest_in_context(su, cands, &left_t))
                .collect()
        };
        let scoring = ScoringSummary {
            search: if batched {
                CandidateSearch::Batched
            } else {
                CandidateSearch::Exact
            }
            .name()
            .to_string(),
            device: if batched {
                crate::trace::device_name(self.device)
            } else {
                String::new()
            },
            leftover_units: left_s.len(),
            exact_pairs: cand_rows.iter().map(Vec::len).sum(),
        };
        let progress = Progress::new(left_s.len() as u64, "solving");
        let rows: Vec<Vec<ScoredCandidate>> = left_s
            .par_iter()
            .zip(cand_rows)
            .map(|(&su, cands)| {
                progress.inc(1);
                cands
                    .into_iter()
                    .filter_map(|k| {
                        self.unit_score(su, left_t[k], &taken_s, &taken_t)
                            .map(|(sc, p)| (k, sc, p))
                    })
                    .collect()
            })
            .collect();
        let mut edges = vec![];
        let mut cell: HashMap<(usize, usize), f64> = HashMap::new();
        for (r, row) in rows.iter().enumerate() {
            for (k, sc, _) in row {
                edges.push(Edge {
                    row: r,
                    col: *k,
                    score: *sc,
                });
                cell.insert((r, *k), *sc);
            }
        }
        let assigned = assign(left_s.len(), &edges);
        progress.finish();
        let row_of_col: HashMap<usize, usize> = assigned.iter().map(|a| (a.col, a.row)).collect();
        let col_of_row: HashMap<usize, usize> = assigned.iter().map(|a| (a.row, a.col)).collect();
        let mut rows_of_col: HashMap<usize, Vec<(usize, f64)>> = HashMap::new();
        for (&(r, c), &sc) in &cell {
            rows_of_col.entry(c).or_default().push((r, sc));
        }
        // The score of a swap's other half; a pair the candidate search did not keep (the
        // batched search prunes) is scored now, so a tie it would hide is still seen.
        let swap_cell = |r: usize, c: usize| -> f64 {
            cell.get(&(r, c)).copied().unwrap_or_else(|| {
                self.unit_score(left_s[r], left_t[c], &taken_s, &taken_t)
                    .map_or(f64::NEG_INFINITY, |x| x.0)
            })
        };
        let mut out = vec![];
        let mut amb_s: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut amb_t: HashMap<usize, Vec<usize>> = HashMap::new();
        for a in &assigned {
            // A swap with another candidate that costs less than TIE_MARGIN is a tie.
            let mut ties_t: Vec<usize> = vec![];
            for (k, sc, _) in &rows[a.row] {
                if *k == a.col {
                    continue;
                }
                let loss = match row_of_col.get(k) {
                    Some(&r2) => {
                        a.score + cell.get(&(r2, *k)).copied().unwrap_or(0.0)
                            - sc
                            - swap_cell(r2, a.col)
                    }
                    None => a.score - sc,
                };
                if loss < TIE_MARGIN {
                    ties_t.push(*k);
                }
            }
            let mut ties_s: Vec<usize> = vec![];
            for &(r2, sc2) in rows_of_col.get(&a.col).into_iter().flatten() {
                if r2 == a.row {
                    continue;
                }
                let loss = match col_of_row.get(&r2) {
                    Some(&c2) => {
                        a.score + cell.get(&(r2, c2)).copied().unwrap_or(0.0)
                            - sc2
                            - swap_cell(a.row, c2)
                    }
                    None => a.score - sc2,
                };
                if loss < TIE_MARGIN {
                    ties_s.push(r2);
                }
            }
            ties_s.sort_unstable();
            let pair_list = &rows[a.row]
                .iter()
                .find(|x| x.0 == a.col)
                .map(|x| x.2.clone())
                .unwrap_or_default();
            if ties_t.is_empty() && ties_s.is_empty() {
                let group = self.s.units[left_s[a.row]].tensors.len() > 1;
                for &(si, ti) in pair_list {
                    out.push(TPair {
                        s: si,
                        t: ti,
                        resolution: Resolution::Score,
                        detail: format!(
                            "scored {:.3}, margin {:.3} to the runner-up",
                            a.score, a.margin
                        ),
                        group,
                    });
                }
            } else {
                let su = left_s[a.row];
                let mut tu_all: Vec<usize> = vec![left_t[a.col]];
                tu_all.extend(ties_t.iter().map(|&k| left_t[k]));
                let mut su_all: Vec<usize> = vec![su];
                su_all.extend(ties_s.iter().map(|&r| left_s[r]));
                let t_tensors: Vec<usize> = tu_all
                    .iter()
                    .flat_map(|&u| free_t(u).map(|x| x.1))
                    .collect();
                let s_tensors: Vec<usize> = su_all
                    .iter()
                    .flat_map(|&u| free_s(u).map(|x| x.1))
                    .collect();
                for (_, si) in free_s(su) {
                    let role = self.s.feats[si].role;
                    amb_s.insert(
                        si,
                        t_tensors
                            .iter()
                            .copied()
                            .filter(|&t| self.t.feats[t].role == role)
                            .collect(),
                    );
                }
                for (_, ti) in free_t(left_t[a.col]) {
                    let role = self.t.feats[ti].role;
                    amb_t.insert(
                        ti,
                        s_tensors
                            .iter()
                            .copied()
                            .filter(|&s| self.s.feats[s].role == role)
                            .collect(),
                    );
                }
            }
        }
        Ok(Leftovers {
            pairs: out,
            ambiguous_s: amb_s,
            ambiguous_t: amb_t,
            scoring,
        })
    }

    /// The exact search's candidates of leftover unit `su` (indices into `left_t`): all of
    /// them up to [`MAX_EXACT_CANDIDATES`], else those in the nearest matched context first.
    fn nearest_in_context(&self, su: usize, cands: Vec<usize>, left_t: &[usize]) -> Vec<usize> {
        if cands.len() <= MAX_EXACT_CANDIDATES {
            return cands;
        }
        let si = self.s.units[su].tensors[0].1;
        let mut scopes: Vec<usize> = self
            .s
            .ancestors_of_tensor(si)
            .into_iter()
            .filter_map(|a| self.st.node_pairs.get(&a).copied())
            .collect();
        scopes.push(0);
        let mut kept: Vec<usize> = vec![];
        for b in scopes {
            let path = &self.t.nodes[b].path;
            for &k in &cands {
                if kept.len() < MAX_EXACT_CANDIDATES
                    && !kept.contains(&k)
                    && self
                        .t
                        .tensor_inside(self.t.units[left_t[k]].tensors[0].1, path)
                {
                    kept.push(k);
                }
            }
            if kept.len() >= MAX_EXACT_CANDIDATES {
                break;
            }
        }
        kept
    }

    /// The structure matched so far, for the batched score from side `from` to side `to`
    /// (`pairs`: matched nodes of `from` to their counterparts in `to`): the `to` tree
    /// numbered in pre-order, and for each of `tensors` of `from` the intervals of its
    /// matched ancestors' counterparts (the same ancestors [`Self::pair_context`] counts).
    fn matched_context(
        from: &SideModel,
        to: &SideModel,
        pairs: &HashMap<usize, usize>,
        tensors: impl Iterator<Item = usize>,
    ) -> score_tensor::Context {
        let nodes = &to.nodes;
        let (mut start, mut end) = (vec![0i64; nodes.len()], vec![0i64; nodes.len()]);
        let mut next = 0i64;
        // Iterative pre-order walk: (node, children done).
        let mut stack = vec![(0usize, false)];
        while let Some((x, done)) = stack.pop() {
            if done {
                end[x] = next;
                continue;
            }
            start[x] = next;
            next += 1;
            stack.push((x, true));
            stack.extend(nodes[x].children.iter().rev().map(|&c| (c, false)));
        }
        let target = (0..to.spec.tensors.len())
            .map(|ti| {
                to.unit_of[ti]
                    .map(|u| start[to.units[u].node])
                    .unwrap_or(-1)
            })
            .collect();
        let mut source = vec![vec![]; from.spec.tensors.len()];
        for si in tensors {
            source[si] = from
                .ancestors_of_tensor(si)
                .into_iter()
                .filter_map(|a| pairs.get(&a))
                .map(|&b| (start[b], end[b]))
                .collect();
        }
        score_tensor::Context { source, target }
    }

    /// The batched search's candidates of each leftover unit (indices into `left_t`): the
    /// units of the top-k targets of its free tensors by the batched approximate score,
    /// computed as tensor operations on the chosen device, one block per role so that
    /// only same-role tensors meet. Kept only where the exact search would also have
    /// looked (same role, same shape), so batched candidates are a subset of exact ones;
    /// a unit whose approximate ranking ends in a tie it had to cut gets the exact list.
    fn batched_candidates(
        &self,
        left_s: &[usize],
        left_t: &[usize],
        taken_s: &HashSet<usize>,
        taken_t: &HashSet<usize>,
        exact_rows: &[Vec<usize>],
    ) -> Result<Vec<Vec<usize>>> {
        let (fs, ft) = self.features.get_or_init(|| {
            score_tensor::features(
                &self.s.spec.tensors,
                &self.t.spec.tensors,
                self.allow_reshape,
            )
        });
        let mut by_role: HashMap<Role, Block> = HashMap::new();
        for &su in left_s {
            for &(r, si) in &self.s.units[su].tensors {
                if !taken_s.contains(&si) {
                    by_role
                        .entry(key_role(r))
                        .or_insert_with(|| Block::all(0, 0))
                        .source
                        .push(si);
                }
            }
        }
        let mut col_of: HashMap<usize, usize> = HashMap::new();
        for (k, &tu) in left_t.iter().enumerate() {
            for &(r, ti) in &self.t.units[tu].tensors {
                if !taken_t.contains(&ti) {
                    col_of.insert(ti, k);
                    if let Some(b) = by_role.get_mut(&key_role(r)) {
                        b.target.push(ti);
                    }
                }
            }
        }
        let mut blocks: Vec<(Role, Block)> = by_role.into_iter().collect();
        blocks.sort_by_key(|(r, _)| *r);
        let blocks: Vec<Block> = blocks.into_iter().map(|(_, b)| b).collect();
        let w = &self.weights;
        let options = CandidateOptions {
            device: self.device,
            weights: ApproxWeights {
                shape: w.shape as f32,
                name: w.name as f32,
                hierarchy: w.hierarchy as f32,
            },
            reshape: self.allow_reshape,
            ..Default::default()
        };
        let context = Self::matched_context(
            &self.s,
            &self.t,
            &self.st.node_pairs,
            blocks.iter().flat_map(|b| b.source.iter().copied()),
        );
        let lists = score_tensor::top_candidates_from(fs, ft, &blocks, &options, Some(&context))?;
        // The same from the target side: a pair either side ranks high is kept, so that a
        // source whose own top k is filled by look-alikes elsewhere still meets the target
        // it competes for (the exact scores then see the tie).
        let inverse: HashMap<usize, usize> =
            self.st.node_pairs.iter().map(|(&a, &b)| (b, a)).collect();
        let reverse_blocks: Vec<Block> = blocks
            .iter()
            .map(|b| Block {
                source: b.target.clone(),
                target: b.source.clone(),
            })
            .collect();
        let reverse_context = Self::matched_context(
            &self.t,
            &self.s,
            &inverse,
            reverse_blocks.iter().flat_map(|b| b.source.iter().copied()),
        );
        let reverse = score_tensor::top_candidates_from(
            ft,
            fs,
            &reverse_blocks,
            &options,
            Some(&reverse_context),
        )?;
        // Per source tensor: the target tensors that ranked it among their best.
        let mut chosen_by: HashMap<usize, Vec<usize>> = HashMap::new();
        for (ti, list) in reverse.iter().enumerate() {
            for c in list {
                chosen_by.entry(c.target).or_default().push(ti);
            }
        }
        let k = options.k;
        Ok(left_s
            .par_iter()
            .zip(exact_rows.par_iter())
            .map(|(&su, exact)| {
                let free: Vec<usize> = self.s.units[su]
                    .tensors
                    .iter()
                    .map(|x| x.1)
                    .filter(|si| !taken_s.contains(si))
                    .collect();
                // Where the approximate score could not tell many targets apart, its
                // top k is an arbitrary few of them, which would hide the ties the exact
                // scores must see: that unit gets the exact search's list.
                if free.iter().any(|&si| score_tensor::ties_cut(&lists[si], k)) {
                    return self.nearest_in_context(su, exact.clone(), left_t);
                }
                let mut cands: Vec<usize> = free
                    .iter()
                    .flat_map(|&si| {
                        lists[si]
                            .iter()
                            .map(|c| c.target)
                            .chain(chosen_by.get(&si).into_iter().flatten().copied())
                    })
                    .filter_map(|ti| col_of.get(&ti).copied())
                    .filter(|k| exact.binary_search(k).is_ok())
                    .collect();
                cands.sort_unstable();
                cands.dedup();
                cands
            })
            .collect())
    }

    /// Per matched source module: (transposed, direct) counts of non-square 2-D weights
    /// below it, and the global counts under the root key 0.
    fn orientation_evidence(&self, pairs: &[TPair]) -> HashMap<usize, (usize, usize)> {
        let mut ev: HashMap<usize, (usize, usize)> = HashMap::new();
        for p in pairs {
            let (ss, ts) = (
                &self.s.spec.tensors[p.s].shape,
                &self.t.spec.tensors[p.t].shape,
            );
            if self.s.feats[p.s].role != Role::Weight || ss.len() != 2 || ss[0] == ss[1] {
                continue;
            }
            let transposed = match crate::score::shape_relation(ss, ts, false) {
                Some(ShapeRelation::Transpose) => true,
                Some(ShapeRelation::Equal) => false,
                _ => continue,
            };
            let mut keys: Vec<usize> = self
                .s
                .ancestors_of_tensor(p.s)
                .into_iter()
                .filter(|a| self.st.node_pairs.contains_key(a))
                .collect();
            keys.push(0);
            for k in keys {
                let e = ev.entry(k).or_default();
                if transposed {
                    e.0 += 1;
                } else {
                    e.1 += 1;
                }
            }
        }
        ev
    }

    /// The transform of a pair and, for square weights, the orientation flag.
    fn transform_of(
        &self,
        p: &TPair,
        ev: &HashMap<usize, (usize, usize)>,
    ) -> (Transform, Option<String>) {
        let (ss, ts) = (
            &self.s.spec.tensors[p.s].shape,
            &self.t.spec.tensors[p.t].shape,
        );
        match crate::score::shape_relation(ss, ts, self.allow_reshape) {
            Some(ShapeRelation::Transpose) => (Transform::Transpose, None),
            Some(ShapeRelation::Reshape) => (
                Transform::Reshape {
                    from: ss.clone(),
                    to: ts.clone(),
                },
                None,
            ),
            _ => {
                let square =
                    ss.len() == 2 && ss[0] == ss[1] && self.s.feats[p.s].role == Role::Weight;
                let global = ev.get(&0).copied().unwrap_or_default();
                if !square || global.0 == 0 {
                    return (Transform::None, None);
                }
                let dims = format!("[{}, {}]", ss[0], ss[1]);
                for a in self.s.ancestors_of_tensor(p.s) {
                    let Some(&(tr, di)) = ev.get(&a) else {
                        continue;
                    };
                    let b = self.st.node_pairs[&a];
                    let scope = format!("{} ↔ {}", self.s.nodes[a].path, self.t.nodes[b].path);
                    return if di == 0 {
                        (
                            Transform::Transpose,
                            Some(format!("square weight {dims}: its shape cannot tell its orientation; transposed because all {tr} non-square 2-D weights matched under {scope} are transposed")),
                        )
                    } else if tr > 0 {
                        (
                            Transform::None,
                            Some(format!("square weight {dims}: its shape cannot tell its orientation and the evidence under {scope} is mixed ({tr} non-square 2-D weights transposed, {di} not); kept as is")),
                        )
                    } else {
                        (Transform::None, None)
                    };
                }
                (
                    Transform::None,
                    Some(format!("square weight {dims}: its shape cannot tell its orientation; {} non-square 2-D weights elsewhere are transposed, none near it; kept as is", global.0)),
                )
            }
        }
    }

    /// Why an unmatched tensor with no recorded reason is unmatched.
    fn open_reason(
        &self,
        i: usize,
        is_source: bool,
        matched_s: &HashSet<usize>,
        matched_t: &HashSet<usize>,
    ) -> UnmatchedReason {
        let (me, other) = if is_source {
            (&self.s, &self.t)
        } else {
            (&self.t, &self.s)
        };
        let f = &me.feats[i];
        let mut any_shape = false;
        let mut allowed: Vec<usize> = vec![];
        for (j, g) in other.feats.iter().enumerate() {
            if !other.active[j] {
                continue;
            }
            let c = if is_source {
                candidate(f, g, self.allow_reshape)
            } else {
                candidate(g, f, self.allow_reshape)
            };
            if c.is_none() {
                continue;
            }
            any_shape = true;
            let (sn, tn) = if is_source {
                (&self.s.spec.tensors[i].name, &self.t.spec.tensors[j].name)
            } else {
                (&self.s.spec.tensors[j].name, &self.t.spec.tensors[i].name)
            };
            if !self.incompat.forbidden(sn, tn) {
                allowed.push(j);
            }
        }
        if !any_shape {
            return UnmatchedReason::NoShapeCandidate;
        }
        if allowed.is_empty() {
            return UnmatchedReason::IncompatibleComponent;
        }
        // The best allowed candidate by score, among the nearest in order when there are
        // many (scoring every same-shape tensor of a large model is not needed to say why).
        if allowed.len() > MAX_REASON_CANDIDATES {
            let my_rank = me.rank[i];
            if let Some(r) = my_rank {
                allowed.sort_by(|&a, &b| {
                    let d = |k: usize| other.rank[k].map_or(f64::MAX, |x| (x - r).abs());
                    d(a).total_cmp(&d(b))
                });
            }
            allowed.truncate(MAX_REASON_CANDIDATES);
        }
        let best = allowed
            .iter()
            .filter_map(|&j| {
                let (si, ti) = if is_source { (i, j) } else { (j, i) };
                self.pair_score(si, ti).map(|b| (j, b.total))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
        let Some((j, _)) = best else {
            return UnmatchedReason::NoShapeCandidate;
        };
        let taken = if is_source {
            matched_t.contains(&j)
        } else {
            matched_s.contains(&j)
        };
        let other_name = |k: usize| other.spec.tensors[k].original_name.clone();
        if taken {
            let by = if is_source {
                self.t_to_s
                    .get(&j)
                    .map(|&s| self.s.spec.tensors[s].original_name.clone())
            } else {
                // The target this source went to.
                self.t_to_s
                    .iter()
                    .find(|(_, &s)| s == j)
                    .map(|(&t, _)| self.t.spec.tensors[t].original_name.clone())
            };
            UnmatchedReason::LostTo {
                candidate: other_name(j),
                taken_by: by.unwrap_or_default(),
            }
        } else {
            let free: Vec<String> = allowed
                .iter()
                .filter(|&&k| {
                    !(if is_source {
                        matched_t.contains(&k)
                    } else {
                        matched_s.contains(&k)
                    })
                })
                .take(4)
                .map(|&k| other_name(k))
                .collect();
            UnmatchedReason::Ambiguous { candidates: free }
        }
    }

    /// Everything about one source tensor.
    pub(crate) fn explain(
        &self,
        m: &Mapper,
        result: &MappingResult,
        i: usize,
        _opts: &SuggestOptions,
    ) -> Explanation {
        let name = &m.source.tensors[i].name;
        let candidates = self
            .scored_candidates(i, None, None)
            .into_iter()
            .map(|(ti, b)| Candidate {
                target: m.target.tensors[ti].original_name.clone(),
                shape: m.target.tensors[ti].shape.clone(),
                breakdown: b,
                taken_by: self
                    .t_to_s
                    .get(&ti)
                    .map(|&s| m.source.tensors[s].original_name.clone()),
            })
            .collect();
        Explanation {
            source: name.clone(),
            shape: m.source.tensors[i].shape.clone(),
            matched: result.mappings.iter().find(|x| &x.source == name).cloned(),
            unmatched: result
                .unmatched_source
                .iter()
                .find(|x| &x.name == name)
                .map(|x| x.reason.clone()),
            candidates,
        }
    }
}
