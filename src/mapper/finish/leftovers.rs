//! The scored one-to-one assignment of the units structure left over: candidates found
//! exactly or by the batched score, assigned optimally, ties left open.

use super::*;
use crate::score::batched::{self, ApproxWeights, Block, CandidateOptions};

impl<'a> State<'a> {
    /// Scored one-to-one assignment of the units structure left over: the pairs and, per
    /// tensor, the candidates it tied with. Tensors in `held_s` / `held_t` are treated as
    /// taken. Errors only where the batched score fails on its device.
    pub(super) fn assign_leftovers(
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
        let partial = |units: &[crate::mapper::side::Unit], taken: &HashSet<usize>| -> Vec<usize> {
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
        // It depends only on the unit's set of (role, shape) keys, so units of one class
        // share one list: a flattened model's thousands of look-alike units would
        // otherwise each hold a copy of a list of thousands (gigabytes at 37k tensors).
        let row_keys: Vec<Vec<(Role, Vec<i64>)>> = left_s
            .par_iter()
            .map(|&su| {
                let mut keys: Vec<(Role, Vec<i64>)> = free_s(su)
                    .map(|(r, si)| (key_role(r), key_shape(&self.s.spec.tensors[si].shape)))
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                keys
            })
            .collect();
        let mut class_of_keys: HashMap<&[(Role, Vec<i64>)], usize> = HashMap::new();
        let row_class: Vec<usize> = row_keys
            .iter()
            .map(|k| {
                let next = class_of_keys.len();
                *class_of_keys.entry(k.as_slice()).or_insert(next)
            })
            .collect();
        let mut class_keys: Vec<&[(Role, Vec<i64>)]> = vec![&[]; class_of_keys.len()];
        for (k, c) in class_of_keys {
            class_keys[c] = k;
        }
        let class_lists: Vec<Vec<usize>> = class_keys
            .par_iter()
            .map(|keys| {
                let mut cands: Vec<usize> = keys
                    .iter()
                    .filter_map(|k| index.get(k))
                    .flatten()
                    .copied()
                    .collect();
                cands.sort_unstable();
                cands.dedup();
                cands
            })
            .collect();
        let exact_rows: Vec<&[usize]> = row_class
            .iter()
            .map(|&c| class_lists[c].as_slice())
            .collect();
        let batched = !left_s.is_empty()
            && match self.search {
                CandidateSearch::Exact => false,
                CandidateSearch::Batched => true,
                CandidateSearch::Auto => class_lists.iter().any(|c| c.len() > MAX_EXACT_CANDIDATES),
            };
        let cand_rows: Vec<Vec<usize>> = if batched {
            self.batched_candidates(&left_s, &left_t, &taken_s, &taken_t, &exact_rows)?
        } else {
            let progress = Progress::new(left_s.len() as u64, "candidates");
            let rows = exact_rows
                .par_iter()
                .zip(left_s.par_iter())
                .map(|(cands, &su)| {
                    progress.inc(1);
                    self.nearest_in_context(su, cands, &left_t)
                })
                .collect();
            progress.finish();
            rows
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
                self.device.to_string()
            } else {
                String::new()
            },
            leftover_units: left_s.len(),
            exact_pairs: cand_rows.iter().map(Vec::len).sum(),
        };
        let progress = Progress::new(left_s.len() as u64, "scoring units");
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
        progress.finish();
        let assigned = assign(left_s.len(), &edges);
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
    pub(super) fn nearest_in_context(
        &self,
        su: usize,
        cands: &[usize],
        left_t: &[usize],
    ) -> Vec<usize> {
        if cands.len() <= MAX_EXACT_CANDIDATES {
            return cands.to_vec();
        }
        let scopes = self.matched_scopes(self.s.units[su].tensors[0].1);
        let mut kept: Vec<usize> = vec![];
        for b in scopes {
            let path = &self.t.nodes[b].path;
            for &k in cands {
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
    pub(super) fn matched_context(
        from: &SideModel,
        to: &SideModel,
        pairs: &HashMap<usize, usize>,
        tensors: impl Iterator<Item = usize>,
    ) -> batched::Context {
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
        batched::Context { source, target }
    }

    /// The batched search's candidates of each leftover unit (indices into `left_t`): the
    /// units of the top-k targets of its free tensors by the batched approximate score,
    /// computed on the chosen device (a native loop on the CPU, libtorch on CUDA), one block per role so that
    /// only same-role tensors meet. Kept only where the exact search would also have
    /// looked (same role, same shape), so batched candidates are a subset of exact ones;
    /// a unit whose approximate ranking ends in a tie it had to cut gets the exact list.
    pub(super) fn batched_candidates(
        &self,
        left_s: &[usize],
        left_t: &[usize],
        taken_s: &HashSet<usize>,
        taken_t: &HashSet<usize>,
        exact_rows: &[&[usize]],
    ) -> Result<Vec<Vec<usize>>> {
        let (fs, ft) = self.features.get_or_init(|| {
            batched::features(
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
        let lists = batched::top_candidates_from(fs, ft, &blocks, &options, Some(&context))?;
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
        let reverse = batched::top_candidates_from(
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
                if free.iter().any(|&si| batched::ties_cut(&lists[si], k)) {
                    return self.nearest_in_context(su, exact, left_t);
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
}
