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
//! ([`approx_score`]), so the values are bit-identical to it.

use super::{
    name_part, rest_part, Candidate, CandidateOptions, Context, Features, MAX_CONTEXT, MAX_INDICES,
    TIE_SLACK,
};
use crate::progress::Progress;
use rayon::prelude::*;
use std::collections::HashMap;

/// Source rows per parallel work item: small enough to balance two to a hundred cores,
/// large enough that the per-item name table is shared by many rows.
const ROWS_PER_ITEM: usize = 64;

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

/// Scores `rows` (source tensors) against `cols` (target tensors of the same shape class)
/// and appends each row's best `options.k + TIE_SLACK` to `out`.
#[allow(clippy::too_many_arguments)]
pub(super) fn score_tile(
    s: &Features,
    t: &Features,
    rows: &[usize],
    cols: &[usize],
    options: &CandidateOptions,
    context: Option<&Context>,
    out: &mut [Vec<Candidate>],
    progress: &Progress,
) {
    let w = options.weights;
    let fetch = options.k + TIE_SLACK;
    // Distinct name keys of the columns.
    let mut col_keys: HashMap<NameKey<'_>, u32> = HashMap::new();
    let mut key_cols: Vec<usize> = vec![];
    let mut c = Columns {
        target: Vec::with_capacity(cols.len()),
        key: Vec::with_capacity(cols.len()),
        shape: Vec::with_capacity(cols.len()),
        permuted: Vec::with_capacity(cols.len()),
        indices: Vec::with_capacity(cols.len()),
        n_indices: Vec::with_capacity(cols.len()),
        depth: Vec::with_capacity(cols.len()),
        position: Vec::with_capacity(cols.len()),
        context: Vec::with_capacity(cols.len()),
    };
    for &j in cols {
        let next = col_keys.len() as u32;
        let key = *col_keys.entry(name_key(t, j)).or_insert_with(|| {
            key_cols.push(j);
            next
        });
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
    let results: Vec<Vec<(usize, Vec<(f32, usize)>)>> = order
        .par_chunks(ROWS_PER_ITEM)
        .map(|chunk| {
            // The name part of each of this chunk's distinct row keys against every column key.
            let mut tables: Vec<(usize, Vec<f32>)> = vec![];
            let mut done = Vec::with_capacity(chunk.len());
            for &(key, i) in chunk {
                if tables.last().map(|x| x.0) != Some(key) {
                    let table = key_cols.iter().map(|&j| name_part(s, i, t, j)).collect();
                    tables.push((key, table));
                }
                let table = &tables.last().expect("pushed above").1;
                let spans =
                    context.map(|ctx| &ctx.source[i][..ctx.source[i].len().min(MAX_CONTEXT)]);
                let mut top = TopK::new(fetch);
                for q in 0..c.target.len() {
                    let ctx = spans.map(|spans| {
                        let key = c.context[q];
                        spans
                            .iter()
                            .filter(|(lo, hi)| *lo <= key && key < *hi)
                            .count()
                    });
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
                        spans.map(|x| x.len()).zip(ctx),
                        &w,
                    );
                    if top.admits(score, c.target[q]) {
                        top.push(score, c.target[q]);
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
