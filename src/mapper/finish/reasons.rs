//! Why: orientation evidence and transforms of pairs, the reason each open tensor stays
//! unmatched, and `explain`'s view of one source tensor.

use super::*;

impl<'a> State<'a> {
    /// Per matched source module: (transposed, direct) counts of non-square 2-D weights
    /// below it, and the global counts under the root key 0.
    pub(super) fn orientation_evidence(&self, pairs: &[TPair]) -> HashMap<usize, (usize, usize)> {
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
    pub(super) fn transform_of(
        &self,
        p: &TPair,
        ev: &HashMap<usize, (usize, usize)>,
    ) -> (Option<Transform>, Option<String>) {
        let (ss, ts) = (
            &self.s.spec.tensors[p.s].shape,
            &self.t.spec.tensors[p.t].shape,
        );
        match crate::score::shape_relation(ss, ts, self.allow_reshape) {
            Some(ShapeRelation::Transpose) => (Some(Transform::Transpose), None),
            Some(ShapeRelation::Reshape) => (Some(Transform::Reshape(ts.clone())), None),
            _ => {
                let square =
                    ss.len() == 2 && ss[0] == ss[1] && self.s.feats[p.s].role == Role::Weight;
                let global = ev.get(&0).copied().unwrap_or_default();
                if !square || global.0 == 0 {
                    return (None, None);
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
                            Some(Transform::Transpose),
                            Some(format!("square weight {dims}: its shape cannot tell its orientation; transposed because all {tr} non-square 2-D weights matched under {scope} are transposed")),
                        )
                    } else if tr > 0 {
                        (
                            None,
                            Some(format!("square weight {dims}: its shape cannot tell its orientation and the evidence under {scope} is mixed ({tr} non-square 2-D weights transposed, {di} not); kept as is")),
                        )
                    } else {
                        (None, None)
                    };
                }
                (
                    None,
                    Some(format!("square weight {dims}: its shape cannot tell its orientation; {} non-square 2-D weights elsewhere are transposed, none near it; kept as is", global.0)),
                )
            }
        }
    }

    /// The shape key of the index: the shape, or with reshapes allowed the shape without
    /// its size-1 dimensions (so that every shape relation is a lookup).
    fn shape_key(&self, shape: &[i64]) -> Vec<i64> {
        if self.allow_reshape {
            shape.iter().copied().filter(|&d| d != 1).collect()
        } else {
            shape.to_vec()
        }
    }

    /// Tensors of one side (`target_side`: the target's, else the source's) whose shape may
    /// relate to `shape` (equal, transposed, or reshaped when allowed), in index order: a
    /// superset of the shape candidates, found by lookup instead of a scan of the model.
    pub(super) fn shape_peers(&self, shape: &[i64], target_side: bool) -> Vec<usize> {
        let index = self.shape_index.get_or_init(|| {
            [&self.s, &self.t].map(|side| {
                let mut m: HashMap<Vec<i64>, Vec<usize>> = HashMap::new();
                for (j, g) in side.feats.iter().enumerate() {
                    m.entry(self.shape_key(&g.shape)).or_default().push(j);
                }
                m
            })
        });
        let index = &index[usize::from(target_side)];
        let mut keys = vec![self.shape_key(shape)];
        if shape.len() == 2 {
            keys.push(self.shape_key(&[shape[1], shape[0]]));
        }
        keys.dedup();
        let mut peers: Vec<usize> = keys
            .iter()
            .filter_map(|k| index.get(k))
            .flatten()
            .copied()
            .collect();
        peers.sort_unstable();
        peers.dedup();
        peers
    }

    /// The active tensors of the other side that are candidates of tensor `i` (role, dtype
    /// class and shape, [`candidate`]), in index order. They depend on those three alone,
    /// so each class is scanned once and shared by its tensors: the unmatched layer of a
    /// large model holds thousands of tensors of one class, each with tens of thousands
    /// of same-shape peers.
    fn shape_candidates(&self, i: usize, is_source: bool) -> std::sync::Arc<Vec<usize>> {
        self.candidate_class(i, is_source, true)
    }

    /// The tensors of the other side that are candidates of tensor `i` (see
    /// [`Self::shape_candidates`]), only the active ones when `active_only`; cached per class.
    pub(super) fn candidate_class(
        &self,
        i: usize,
        is_source: bool,
        active_only: bool,
    ) -> std::sync::Arc<Vec<usize>> {
        let (me, other) = if is_source {
            (&self.s, &self.t)
        } else {
            (&self.t, &self.s)
        };
        let f = &me.feats[i];
        let key = (
            is_source,
            active_only,
            f.role,
            f.dtype_class,
            f.shape.clone(),
        );
        if let Some(hit) = self
            .reason_classes
            .lock()
            .ok()
            .and_then(|c| c.get(&key).cloned())
        {
            return hit;
        }
        let found: Vec<usize> = self
            .shape_peers(&f.shape, is_source)
            .into_iter()
            .filter(|&j| {
                let g = &other.feats[j];
                (!active_only || other.active[j])
                    && if is_source {
                        candidate(f, g, self.allow_reshape)
                    } else {
                        candidate(g, f, self.allow_reshape)
                    }
                    .is_some()
            })
            .collect();
        let found = std::sync::Arc::new(found);
        if let Ok(mut c) = self.reason_classes.lock() {
            c.insert(key, found.clone());
        }
        found
    }

    /// Why an unmatched tensor with no recorded reason is unmatched.
    pub(super) fn open_reason(
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
        let class = self.shape_candidates(i, is_source);
        if class.is_empty() {
            return UnmatchedReason::NoShapeCandidate;
        }
        let mut allowed: Vec<usize> = class
            .iter()
            .copied()
            .filter(|&j| {
                let (sn, tn) = if is_source {
                    (&self.s.spec.tensors[i].name, &self.t.spec.tensors[j].name)
                } else {
                    (&self.s.spec.tensors[j].name, &self.t.spec.tensors[i].name)
                };
                !self.incompat.forbidden(sn, tn)
            })
            .collect();
        if allowed.is_empty() {
            return UnmatchedReason::IncompatibleComponent;
        }
        // The best allowed candidate by score, among the nearest in order when there are
        // many (scoring every same-shape tensor of a large model is not needed to say why).
        if allowed.len() > MAX_REASON_CANDIDATES {
            let my_rank = me.rank[i];
            if let Some(r) = my_rank {
                // The nearest by rank, ties by index (`allowed` is in index order): the
                // head of a stable sort, found in linear time.
                let d = |k: usize| other.rank[k].map_or(f64::MAX, |x| (x - r).abs());
                let by = |a: &usize, b: &usize| d(*a).total_cmp(&d(*b)).then(a.cmp(b));
                allowed.select_nth_unstable_by(MAX_REASON_CANDIDATES, by);
                allowed.truncate(MAX_REASON_CANDIDATES);
                allowed.sort_by(by);
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
