//! Scoring a tensor pair in the context of what is already matched: pair scores and
//! their upper bounds, module context, candidate targets, alternatives, unit scores.

use super::*;

impl<'a> State<'a> {
    /// The detail of a unit pair with the order-based decisions of its ancestors, and the
    /// most doubtful resolution along the way.
    pub(super) fn chain_detail(
        &self,
        su: usize,
        own: Resolution,
        own_detail: &str,
    ) -> (String, Resolution) {
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
                        | Resolution::BlockRule
                        | Resolution::OrdinalFamily
                        | Resolution::SiblingAnchor
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
    pub(super) fn pair_score(&self, si: usize, ti: usize) -> Option<ScoreBreakdown> {
        if self.forbid.contains(&(si, ti)) {
            return None;
        }
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
    pub(super) fn pair_upper_bound(&self, si: usize, ti: usize) -> Option<f64> {
        if self.forbid.contains(&(si, ti)) {
            return None;
        }
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

    /// Whether target tensor `ti` is among [`Self::subtree_tensors`] of target node `b`.
    fn in_subtree(&self, ti: usize, b: usize) -> bool {
        let Some(u) = self.t.unit_of[ti] else {
            return false;
        };
        let mut cur = Some(self.t.units[u].node);
        while let Some(x) = cur {
            if x == b {
                return true;
            }
            cur = self.t.nodes[x].parent;
        }
        false
    }

    /// Active target tensors in the subtree of target node `b`.
    pub(super) fn subtree_tensors(&self, b: usize) -> std::sync::Arc<Vec<usize>> {
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
    pub(super) fn scored_candidates(
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

    /// The target modules matched to the source tensor `si`'s ancestors, nearest first,
    /// then the target root: where its counterpart is looked for, in that order.
    pub(super) fn matched_scopes(&self, si: usize) -> Vec<usize> {
        let mut scopes: Vec<usize> = self
            .s
            .ancestors_of_tensor(si)
            .into_iter()
            .filter_map(|a| self.st.node_pairs.get(&a).copied())
            .collect();
        scopes.push(0);
        scopes
    }

    /// Candidate targets of source tensor `si`, nearest context first, up to `limit`
    /// (all when `limit` is `None`), unscored.
    pub(super) fn candidate_targets(
        &self,
        si: usize,
        limit: Option<usize>,
        exclude: Option<usize>,
    ) -> Vec<usize> {
        let sf = &self.s.feats[si];
        let scopes = self.matched_scopes(si);
        let mut chosen: Vec<usize> = vec![];
        let mut seen: HashSet<usize> = HashSet::new();
        // The candidates of `si`'s class, for scopes larger than the class: the same
        // tensors in the same (index) order as a scan of the scope, without the scan.
        let class = self.candidate_class(si, true, false);
        'scopes: for b in scopes {
            let subtree = self.subtree_tensors(b);
            let in_scope: Box<dyn Iterator<Item = usize>> = if class.len() < subtree.len() {
                Box::new(class.iter().copied().filter(|&ti| self.in_subtree(ti, b)))
            } else {
                Box::new(subtree.iter().copied())
            };
            for ti in in_scope {
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
    pub(super) fn alternatives(&self, si: usize, ti: usize) -> Vec<(usize, ScoreBreakdown)> {
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

    /// Whether two units hold a tensor pair the user forbade.
    pub(super) fn units_forbidden(&self, su: usize, tu: usize) -> bool {
        !self.forbid.is_empty()
            && self.s.units[su].tensors.iter().any(|&(_, si)| {
                self.t.units[tu]
                    .tensors
                    .iter()
                    .any(|&(_, ti)| self.forbid.contains(&(si, ti)))
            })
    }

    /// Score of a unit pair: mean over the tensor pairs it makes (None if incompatible).
    /// Tensors already taken (`taken_s`, `taken_t`) are left out of both units.
    pub(super) fn unit_score(
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
}
