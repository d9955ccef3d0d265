//! The CPU path of the batched candidate search: a tiled loop in Rust with a running
//! top-k per source row, in parallel over row chunks.
//!
//! On the CPU, libtorch's element-wise operations materialize a dozen rows × columns
//! matrices per tile and spend much of their time in thread hand-offs; here each pair is
//! scored once, in registers, and only pairs that beat the row's current k-th best are
//! kept. The name part of the score (token Jaccard, trigram Dice, leaf) depends only on
//! a tensor's name with its indices masked, so it is computed once per pair of distinct
//! masked names, which in a model of repeated layers and experts is a handful per tile.
//! Every score is computed by the same function as the pairwise reference
//! ([`super::approx_score`]), so the values are bit-identical to it.

use super::{
    combine, context_hits, name_part, rest_part, shape_score, ApproxWeights, Candidate, Features,
    Search, MAX_INDICES, TIE_SLACK,
};
use crate::progress::Progress;
use rayon::prelude::*;
use std::collections::HashMap;

/// Source rows per parallel work item: small enough to balance two to a hundred cores,
/// large enough that the per-item name table is shared by many rows.
const ROWS_PER_ITEM: usize = 64;

/// Columns per block: the unit of pruning. Each block has an upper bound of the score a
/// row can reach in it; a row skips the blocks whose bound is below its current k-th best.
const BLOCK: usize = 64;

/// The columns of a tile gathered next to each other, so that the inner loop reads
/// memory in order.
struct Columns {
    target: Vec<usize>,
    key: Vec<u32>,
    shape: Vec<i64>,
    permuted: Vec<i64>,
    indices: Vec<[i64; MAX_INDICES]>,
    n_indices: Vec<f32>,
    depth: Vec<f32>,
    position: Vec<f32>,
    context: Vec<i64>,
}

/// The identity of a tensor's name part: its token ids, trigram ids and leaf id.
type NameKey<'a> = (&'a [u32], &'a [u32], i64);

fn name_key(f: &Features, i: usize) -> NameKey<'_> {
    (&f.tokens[i], &f.ngrams[i], f.leaf[i])
}

/// A source row and its best (score, target) pairs.
type RowTop = (usize, Vec<(f32, usize)>);

/// A source row's best candidates so far, best first by (score, lower target index).
struct TopK {
    cap: usize,
    list: Vec<(f32, usize)>,
}

impl TopK {
    fn new(cap: usize) -> Self {
        TopK {
            cap,
            list: Vec::with_capacity(cap + 1),
        }
    }

    fn full(&self) -> bool {
        self.list.len() >= self.cap
    }

    /// The score of the last kept candidate (only when full).
    fn worst(&self) -> f32 {
        self.list.last().map_or(f32::NEG_INFINITY, |x| x.0)
    }

    /// Whether (score, target) would enter the list.
    #[inline]
    fn admits(&self, score: f32, target: usize) -> bool {
        match self.list.last() {
            Some(&(v, j)) if self.list.len() >= self.cap => score > v || (score == v && target < j),
            _ => true,
        }
    }

    fn push(&mut self, score: f32, target: usize) {
        let at = self
            .list
            .partition_point(|&(v, j)| v > score || (v == score && j < target));
        self.list.insert(at, (score, target));
        self.list.truncate(self.cap);
    }
}

/// What every column of a block has at best, for the upper bound of a row's score there.
struct Bound {
    /// The distinct name keys of the block.
    keys: Vec<u32>,
    /// The distinct (shape, permuted shape) ids of the block.
    shapes: Vec<(i64, i64)>,
    /// Per index slot: a 64-bit hash set of the values present.
    values: [u64; MAX_INDICES],
    min_n_indices: f32,
    depth: (f32, f32),
    position: (f32, f32),
    context: (i64, i64),
}

fn value_bit(v: i64) -> u64 {
    1u64 << ((v as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58)
}

/// The distance from `x` to the interval `[lo, hi]`, rounded no higher than any
/// `|x - y|` with `y` inside it.
fn gap(x: f32, (lo, hi): (f32, f32)) -> f32 {
    if x < lo {
        lo - x
    } else if x > hi {
        x - hi
    } else {
        0.0
    }
}

impl Bound {
    fn of(c: &Columns, range: std::ops::Range<usize>) -> Bound {
        let mut b = Bound {
            keys: vec![],
            shapes: vec![],
            values: [0; MAX_INDICES],
            min_n_indices: f32::INFINITY,
            depth: (f32::INFINITY, f32::NEG_INFINITY),
            position: (f32::INFINITY, f32::NEG_INFINITY),
            context: (i64::MAX, i64::MIN),
        };
        for q in range {
            if !b.keys.contains(&c.key[q]) {
                b.keys.push(c.key[q]);
            }
            let shape = (c.shape[q], c.permuted[q]);
            if !b.shapes.contains(&shape) {
                b.shapes.push(shape);
            }
            for (slot, &v) in c.indices[q].iter().enumerate() {
                b.values[slot] |= value_bit(v);
            }
            b.min_n_indices = b.min_n_indices.min(c.n_indices[q]);
            b.depth = (b.depth.0.min(c.depth[q]), b.depth.1.max(c.depth[q]));
            b.position = (
                b.position.0.min(c.position[q]),
                b.position.1.max(c.position[q]),
            );
            b.context = (b.context.0.min(c.context[q]), b.context.1.max(c.context[q]));
        }
        b
    }

    /// The most source `i` can score against any column of the block: `combine` of the
    /// best sub-scores the block offers (each a bound of its own).
    fn upper(
        &self,
        s: &Features,
        i: usize,
        table: &[f32],
        spans: Option<&[(i64, i64)]>,
        w: &ApproxWeights,
    ) -> f32 {
        let name = self
            .keys
            .iter()
            .map(|&k| table[k as usize])
            .fold(f32::NEG_INFINITY, f32::max);
        let shape = self
            .shapes
            .iter()
            .map(|&(sh, perm)| shape_score(s, i, sh, perm))
            .fold(f32::NEG_INFINITY, f32::max);
        // Slots whose value may occur in the block; the denominator is at least the
        // larger of the source's count and the block's smallest.
        let agree = s.indices[i]
            .iter()
            .zip(self.values.iter())
            .filter(|(&v, &set)| v >= 0 && set & value_bit(v) != 0)
            .count() as f32;
        let denom = s.n_indices[i].max(self.min_n_indices);
        let indices = if denom > 0.0 {
            (agree / denom).min(1.0)
        } else {
            1.0
        };
        let context = spans.map(|spans| {
            let (lo, hi) = self.context;
            let inside = spans.iter().filter(|(a, b)| *a <= hi && lo < *b).count();
            (spans.len(), inside)
        });
        combine(
            name,
            shape,
            indices,
            gap(s.depth[i], self.depth),
            gap(s.position[i], self.position),
            context,
            w,
        )
    }
}

/// Scores `rows` (source tensors) against `cols` (target tensors of the same shape class)
/// and appends each row's best `options.k + TIE_SLACK` to `out`.
pub(super) fn score_tile(
    search: &Search<'_>,
    rows: &[usize],
    cols: &[usize],
    out: &mut [Vec<Candidate>],
    progress: &Progress,
) {
    let Search {
        s,
        t,
        options,
        context,
    } = *search;
    let w = options.weights;
    let fetch = options.k + TIE_SLACK;
    // Distinct name keys of the columns.
    let mut col_keys: HashMap<NameKey<'_>, u32> = HashMap::new();
    let mut key_cols: Vec<usize> = vec![];
    let keyed: Vec<(u32, usize)> = cols
        .iter()
        .map(|&j| {
            let next = col_keys.len() as u32;
            let key = *col_keys.entry(name_key(t, j)).or_insert_with(|| {
                key_cols.push(j);
                next
            });
            (key, j)
        })
        .collect();
    // Columns that look alike side by side (same name key and shape, near in position),
    // so that each block's bound is tight.
    let mut sorted = keyed;
    sorted.sort_by(|a, b| {
        (a.0, t.shape[a.1], t.permuted[a.1])
            .cmp(&(b.0, t.shape[b.1], t.permuted[b.1]))
            .then(t.position[a.1].total_cmp(&t.position[b.1]))
            .then(a.1.cmp(&b.1))
    });
    let n = sorted.len();
    let mut c = Columns {
        target: Vec::with_capacity(n),
        key: Vec::with_capacity(n),
        shape: Vec::with_capacity(n),
        permuted: Vec::with_capacity(n),
        indices: Vec::with_capacity(n),
        n_indices: Vec::with_capacity(n),
        depth: Vec::with_capacity(n),
        position: Vec::with_capacity(n),
        context: Vec::with_capacity(n),
    };
    for &(key, j) in &sorted {
        c.target.push(j);
        c.key.push(key);
        c.shape.push(t.shape[j]);
        c.permuted.push(t.permuted[j]);
        c.indices.push(t.indices[j]);
        c.n_indices.push(t.n_indices[j]);
        c.depth.push(t.depth[j]);
        c.position.push(t.position[j]);
        c.context.push(context.map_or(-1, |ctx| ctx.target[j]));
    }
    let blocks: Vec<(std::ops::Range<usize>, Bound)> = (0..n)
        .step_by(BLOCK)
        .map(|a| {
            let r = a..(a + BLOCK).min(n);
            (r.clone(), Bound::of(&c, r))
        })
        .collect();
    // Rows grouped by name key, so that a work item meets few distinct keys.
    let mut row_keys: HashMap<NameKey<'_>, usize> = HashMap::new();
    let mut order: Vec<(usize, usize)> = rows
        .iter()
        .map(|&i| {
            let next = row_keys.len();
            (*row_keys.entry(name_key(s, i)).or_insert(next), i)
        })
        .collect();
    order.sort_unstable();
    let results: Vec<Vec<RowTop>> = order
        .par_chunks(ROWS_PER_ITEM)
        .map(|chunk| {
            // The name part of each of this chunk's distinct row keys against every column key.
            let mut tables: Vec<(usize, Vec<f32>)> = vec![];
            let mut done = Vec::with_capacity(chunk.len());
            let mut bounds: Vec<(f32, usize)> = Vec::with_capacity(blocks.len());
            for &(key, i) in chunk {
                if tables.last().map(|x| x.0) != Some(key) {
                    let table = key_cols.iter().map(|&j| name_part(s, i, t, j)).collect();
                    tables.push((key, table));
                }
                let table = &tables.last().expect("pushed above").1;
                let spans = context.map(|ctx| ctx.spans(i));
                bounds.clear();
                bounds.extend(
                    blocks
                        .iter()
                        .enumerate()
                        .map(|(b, (_, bound))| (bound.upper(s, i, table, spans, &w), b)),
                );
                bounds.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                let mut top = TopK::new(fetch);
                for &(upper, b) in &bounds {
                    // A block can enter only with a score at least its bound; equal to the
                    // k-th it may still win on the lower target index.
                    if top.full() && upper < top.worst() {
                        break;
                    }
                    for q in blocks[b].0.clone() {
                        let ctx = spans.map(|spans| context_hits(spans, c.context[q]));
                        let score = rest_part(
                            s,
                            i,
                            table[c.key[q] as usize],
                            c.shape[q],
                            c.permuted[q],
                            &c.indices[q],
                            c.n_indices[q],
                            c.depth[q],
                            c.position[q],
                            ctx,
                            &w,
                        );
                        if top.admits(score, c.target[q]) {
                            top.push(score, c.target[q]);
                        }
                    }
                }
                done.push((i, top.list));
            }
            progress.inc(chunk.len() as u64);
            done
        })
        .collect();
    for (i, list) in results.into_iter().flatten() {
        out[i].extend(list.into_iter().map(|(approx, target)| Candidate {
            target,
            approx,
            exact: approx as f64,
        }));
    }
}
