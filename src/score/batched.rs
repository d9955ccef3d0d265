//! Batched candidate scoring: the cheap part of the similarity for whole tiles of
//! (source, target) pairs at once, on the CPU (a native loop) or a CUDA device (tensor
//! operations with libtorch).
//!
//! Scoring every source tensor against every target tensor pair by pair with string
//! metrics is what makes the naive approach unusable on 92,000-tensor checkpoints. The
//! approximate score here is built from features computed once per tensor:
//!
//! - name tokens and character trigrams (token Jaccard, trigram Dice);
//! - the leaf name (`weight`, `bias`, ...), the exact shape, and the shape up to a
//!   permutation (transpose candidates) as integer ids;
//! - the numeric components of the name (layer, block and expert indices) compared slot by
//!   slot as integers, depth and relative position;
//! - optionally the structure already matched ([`Context`]): for each source tensor the
//!   target-tree intervals of its matched ancestors' counterparts, for each target tensor
//!   its place in the target tree (is the target inside?).
//!
//! On the CPU (`native.rs`) each row keeps a running top-k and skips blocks of columns whose
//! upper bound is below its k-th best; the name part is computed once per pair of masked
//! names. On a CUDA device (`torch.rs`, behind the `libtorch` feature) overlaps are matrix
//! products of 0/1 incidence matrices and the rest broadcast comparisons.
//!
//! Tensors only meet tensors of the same shape class (the sorted dimensions, so a
//! transpose stays a candidate); each class is a tile, on the device split into row and
//! column chunks of at most [`TILE_ELEMS`] pairs, on the CPU held to one top-k list per
//! row, so memory stays bounded whatever the model size. Per
//! source tensor the `k` best targets are kept ([`top_candidates`]); the exact, expensive
//! score (string metrics, the mapping engine's composite) is then computed only for those
//! candidates, in parallel ([`rerank`]).
//!
//! The approximate score of a pair is
//! `w.shape * shape + w.name * (jaccard + dice + leaf) / 3 + w.hierarchy * hierarchy`, with
//! `hierarchy = (indices + depth + position) / 3`, or with a context
//! `(indices + depth + position + CONTEXT_WEIGHT * context) / (3 + CONTEXT_WEIGHT)`, each
//! sub-score in [0, 1]; [`approx_score`] computes it pair by pair (the reference both paths
//! are tested against; the native path shares its code and gives the same bits). All
//! arithmetic is exact small-integer counting or single IEEE operations in a fixed order.

use crate::device::Device;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::spec::TensorInfo;
use rayon::prelude::*;
use std::collections::HashMap;

mod native;
#[cfg(feature = "libtorch")]
mod torch;

/// Default number of candidates kept per source tensor.
pub const DEFAULT_TOP_K: usize = 8;

/// Numeric name components compared (layer, block, expert, ... indices); deeper ones are ignored.
pub const MAX_INDICES: usize = 4;

/// Character n-gram length of the name features.
pub const NGRAM: usize = 3;

/// Most (source, target) pairs scored in one tensor operation: bounds memory (a few f32
/// matrices of this many elements live at once, 16 MB each) whatever the model size.
pub const TILE_ELEMS: usize = 1 << 22;

/// Most source rows per chunk; smaller chunks keep the column side large for the matrix product.
pub const ROW_CHUNK: usize = 512;

/// Depth difference at which the depth sub-score reaches 0.
pub const DEPTH_SPAN: f32 = 4.0;

/// Shape sub-score of a pair whose dimensions are the same up to a permutation (transpose).
pub const PERMUTED_SHAPE_SCORE: f32 = 0.7;

/// Shape sub-score of a pair that is equal only after dropping size-1 dimensions
/// (a 1×1 convolution against a linear layer); only with [`CandidateOptions::reshape`].
pub const RESHAPE_SHAPE_SCORE: f32 = 0.5;

/// Extra candidates fetched beyond `k` so that ties at the k-th place are kept whole.
pub const TIE_SLACK: usize = 8;

/// Most matched ancestors compared per source tensor (the nearest ones).
pub const MAX_CONTEXT: usize = 8;

/// Weight of the context sub-score in the hierarchy part, against 1 for each of indices,
/// depth and position: half of it, as in the exact score ([`crate::score::HIER_W_CONTEXT`]).
pub const CONTEXT_WEIGHT: f32 = 3.0;

/// Context sub-score of a source tensor without matched ancestors (as the exact score's
/// [`crate::score::CONTEXT_UNKNOWN`]).
pub const CONTEXT_UNKNOWN: f32 = 0.5;

/// Where tensors sit in the structure matched so far, so that the approximate score ranks
/// targets inside the counterpart of a source's module first, as the exact score does.
/// The target tree is numbered in pre-order: a module covers the interval `[start, end)`
/// of the numbers of its subtree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    /// Per source tensor: the target-tree intervals of the counterparts of its matched
    /// ancestors, nearest first (at most [`MAX_CONTEXT`] are used).
    pub source: Vec<Vec<(i64, i64)>>,
    /// Per target tensor: the pre-order number of its module (-1: outside every interval).
    pub target: Vec<i64>,
}

impl Context {
    /// The intervals of source tensor `i` that count (the nearest [`MAX_CONTEXT`]).
    fn spans(&self, i: usize) -> &[(i64, i64)] {
        &self.source[i][..self.source[i].len().min(MAX_CONTEXT)]
    }
}

/// How many context intervals a source tensor has, and how many of them hold the target
/// module `key`.
fn context_hits(spans: &[(i64, i64)], key: i64) -> (usize, usize) {
    let inside = spans
        .iter()
        .filter(|(lo, hi)| *lo <= key && key < *hi)
        .count();
    (spans.len(), inside)
}

/// Placeholder for an absent index slot: sources and targets use different values so
/// that two absent slots never count as agreeing.
const NO_INDEX_SOURCE: i64 = -1;
const NO_INDEX_TARGET: i64 = -2;

/// Weights of the three parts of the approximate score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApproxWeights {
    /// Weight of the shape sub-score.
    pub shape: f32,
    /// Weight of the name sub-score (token Jaccard, trigram Dice, leaf equality).
    pub name: f32,
    /// Weight of the hierarchy sub-score (indices, depth, position).
    pub hierarchy: f32,
}

impl Default for ApproxWeights {
    /// The mapping engine's default composite: 0.5 shape, 0.3 name, 0.2 hierarchy.
    fn default() -> Self {
        ApproxWeights {
            shape: 0.5,
            name: 0.3,
            hierarchy: 0.2,
        }
    }
}

/// Options of [`top_candidates`].
#[derive(Debug, Clone)]
pub struct CandidateOptions {
    /// Candidates kept per source tensor (ties at the last place are kept too).
    pub k: usize,
    /// Where the tensor work runs.
    pub device: Device,
    /// Weights of the approximate score.
    pub weights: ApproxWeights,
    /// Also pair shapes that agree after dropping size-1 dimensions (`[o, i, 1, 1]` ↔ `[o, i]`).
    pub reshape: bool,
    /// Most pairs scored in one tensor operation ([`TILE_ELEMS`] by default; smaller
    /// values trade speed for memory).
    pub tile_elems: usize,
}

impl Default for CandidateOptions {
    fn default() -> Self {
        CandidateOptions {
            k: DEFAULT_TOP_K,
            device: Device::Cpu,
            weights: ApproxWeights::default(),
            reshape: false,
            tile_elems: TILE_ELEMS,
        }
    }
}

/// A set of source tensors that may only pair with a set of target tensors (a structural
/// block, e.g. one layer against its counterpart). Indices into the two tensor lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Source tensor indices.
    pub source: Vec<usize>,
    /// Target tensor indices.
    pub target: Vec<usize>,
}

impl Block {
    /// The block of everything: `n` sources against `m` targets.
    pub fn all(n: usize, m: usize) -> Self {
        Block {
            source: (0..n).collect(),
            target: (0..m).collect(),
        }
    }
}

/// One candidate target of a source tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Index of the target tensor.
    pub target: usize,
    /// The approximate score from the tensor path.
    pub approx: f32,
    /// The exact score, once [`rerank`] has computed it (else equal to `approx`).
    pub exact: f64,
}

/// Source rows and target columns of one tile (a block's tensors of one shape class).
/// What every tile of one search shares: both sides' features, the options and the
/// structure matched so far.
#[derive(Clone, Copy)]
pub(super) struct Search<'a> {
    s: &'a Features,
    t: &'a Features,
    options: &'a CandidateOptions,
    context: Option<&'a Context>,
}

type Tile = (Vec<usize>, Vec<usize>);

/// The features of one side (source or target), computed once.
#[derive(Debug, Clone)]
pub struct Features {
    tokens: Vec<Vec<u32>>,
    ngrams: Vec<Vec<u32>>,
    indices: Vec<[i64; MAX_INDICES]>,
    n_indices: Vec<f32>,
    depth: Vec<f32>,
    position: Vec<f32>,
    leaf: Vec<i64>,
    shape: Vec<i64>,
    permuted: Vec<i64>,
    class: Vec<i64>,
}

/// Vocabularies shared by both sides, so that equal strings get equal ids.
#[derive(Default)]
struct Vocab {
    words: HashMap<String, u32>,
    ngrams: HashMap<String, u32>,
    leaves: HashMap<String, i64>,
    shapes: HashMap<Vec<i64>, i64>,
}

fn intern<K: std::hash::Hash + Eq, V: Copy + TryFrom<usize>>(map: &mut HashMap<K, V>, key: K) -> V
where
    <V as TryFrom<usize>>::Error: std::fmt::Debug,
{
    let next = map.len();
    // Vocabularies hold at most a few million entries, far below u32::MAX.
    *map.entry(key)
        .or_insert_with(|| V::try_from(next).expect("vocabulary size fits"))
}

/// Splits a name into lowercase tokens at `.`, `_`, `-` and other punctuation; purely
/// numeric components are indices, not tokens (`layers.3.w1` → `layers`, `w1`).
pub fn name_tokens(name: &str) -> Vec<String> {
    let mut out: Vec<String> = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty() && !p.bytes().all(|b| b.is_ascii_digit()))
        .map(|p| p.to_ascii_lowercase())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Maximal runs of ASCII digits that stand alone between punctuation (`.`, `_`, `-`, ...)
/// or the ends of the name, as byte ranges: the indices of a name, dotted
/// (`layers.3`) or flattened (`layers_3_w1`); digits inside a word (`w1`, `fc2`) are not.
fn index_runs(name: &str) -> Vec<std::ops::Range<usize>> {
    let b = name.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let alone_before = start == 0 || !b[start - 1].is_ascii_alphanumeric();
            let alone_after = i == b.len() || !b[i].is_ascii_alphanumeric();
            if alone_before && alone_after {
                out.push(start..i);
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The integer values of the name's standalone numbers, outermost first
/// (`model.layers.3.mlp.experts.17.w1` and `layers_3_experts_17_w1` → `[3, 17]`).
pub fn name_indices(name: &str) -> Vec<i64> {
    index_runs(name)
        .into_iter()
        .map(|r| name[r].parse::<i64>().unwrap_or(i64::MAX))
        .collect()
}

/// The set of character trigrams of the name with its standalone numbers replaced by `#`
/// (indices are compared as integers, not as characters), padded with `^` and `$`.
pub fn name_ngrams(name: &str) -> Vec<String> {
    let mut masked = String::with_capacity(name.len() + 2);
    masked.push('^');
    let mut last = 0;
    for r in index_runs(name) {
        masked.push_str(&name[last..r.start]);
        masked.push('#');
        last = r.end;
    }
    masked.push_str(&name[last..]);
    masked.push('$');
    let text: Vec<char> = masked.to_ascii_lowercase().chars().collect();
    let mut out: Vec<String> = text.windows(NGRAM).map(|w| w.iter().collect()).collect();
    out.sort();
    out.dedup();
    out
}

fn shape_class(shape: &[i64], reshape: bool) -> Vec<i64> {
    let mut dims: Vec<i64> = if reshape {
        shape.iter().copied().filter(|&d| d != 1).collect()
    } else {
        shape.to_vec()
    };
    dims.sort_unstable();
    dims
}

/// Computes the features of both sides with shared vocabularies.
pub fn features(
    source: &[TensorInfo],
    target: &[TensorInfo],
    reshape: bool,
) -> (Features, Features) {
    let mut vocab = Vocab::default();
    let s = side_features(source, &mut vocab, reshape, NO_INDEX_SOURCE);
    let t = side_features(target, &mut vocab, reshape, NO_INDEX_TARGET);
    (s, t)
}

fn side_features(
    tensors: &[TensorInfo],
    vocab: &mut Vocab,
    reshape: bool,
    no_index: i64,
) -> Features {
    let n = tensors.len();
    let last = n.saturating_sub(1).max(1) as f32;
    let mut f = Features {
        tokens: Vec::with_capacity(n),
        ngrams: Vec::with_capacity(n),
        indices: Vec::with_capacity(n),
        n_indices: Vec::with_capacity(n),
        depth: Vec::with_capacity(n),
        position: Vec::with_capacity(n),
        leaf: Vec::with_capacity(n),
        shape: Vec::with_capacity(n),
        permuted: Vec::with_capacity(n),
        class: Vec::with_capacity(n),
    };
    for (i, t) in tensors.iter().enumerate() {
        let mut tok: Vec<u32> = name_tokens(&t.name)
            .into_iter()
            .map(|w| intern(&mut vocab.words, w))
            .collect();
        tok.sort_unstable();
        f.tokens.push(tok);
        let mut ng: Vec<u32> = name_ngrams(&t.name)
            .into_iter()
            .map(|g| intern(&mut vocab.ngrams, g))
            .collect();
        ng.sort_unstable();
        f.ngrams.push(ng);
        let idx = name_indices(&t.name);
        let mut slots = [no_index; MAX_INDICES];
        for (slot, v) in slots.iter_mut().zip(idx.iter()) {
            *slot = *v;
        }
        f.indices.push(slots);
        f.n_indices.push(idx.len().min(MAX_INDICES) as f32);
        f.depth.push(t.depth as f32);
        f.position.push(i as f32 / last);
        f.leaf.push(intern(&mut vocab.leaves, t.leaf.clone()));
        f.shape.push(intern(&mut vocab.shapes, t.shape.clone()));
        f.permuted
            .push(intern(&mut vocab.shapes, shape_class(&t.shape, false)));
        f.class
            .push(intern(&mut vocab.shapes, shape_class(&t.shape, reshape)));
    }
    f
}

fn overlap(a: &[u32], b: &[u32]) -> usize {
    // Both sorted and deduplicated.
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

/// The approximate score of source `i` against target `j`, pair by pair: the reference
/// for the tensor path (same formula, same f32 operations), and `None` when the shapes
/// are not in the same class (not a candidate).
pub fn approx_score(
    s: &Features,
    i: usize,
    t: &Features,
    j: usize,
    w: &ApproxWeights,
    context: Option<&Context>,
) -> Option<f32> {
    if s.class[i] != t.class[j] {
        return None;
    }
    let ctx = context.map(|c| context_hits(c.spans(i), c.target[j]));
    Some(rest_part(
        s,
        i,
        name_part(s, i, t, j),
        t.shape[j],
        t.permuted[j],
        &t.indices[j],
        t.n_indices[j],
        t.depth[j],
        t.position[j],
        ctx,
        w,
    ))
}

/// The name sub-score of a pair: token Jaccard, trigram Dice and leaf equality.
fn name_part(s: &Features, i: usize, t: &Features, j: usize) -> f32 {
    let ratio = |inter: f32, union: f32, scale: f32| {
        if union > 0.0 {
            scale * inter / union
        } else {
            1.0
        }
    };
    let ti = overlap(&s.tokens[i], &t.tokens[j]) as f32;
    let jac = ratio(
        ti,
        s.tokens[i].len() as f32 + t.tokens[j].len() as f32 - ti,
        1.0,
    );
    let ni = overlap(&s.ngrams[i], &t.ngrams[j]) as f32;
    let dice = ratio(ni, s.ngrams[i].len() as f32 + t.ngrams[j].len() as f32, 2.0);
    let leaf = if s.leaf[i] == t.leaf[j] { 1.0 } else { 0.0 };
    (jac + dice + leaf) / 3.0
}

/// The whole approximate score of source `i` against a target given by its columns, from
/// the pair's name sub-score and, with a context, (the source's intervals, how many
/// contain the target). One function for the reference and the CPU path, so both give
/// the same bits.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn rest_part(
    s: &Features,
    i: usize,
    name: f32,
    t_shape: i64,
    t_permuted: i64,
    t_indices: &[i64; MAX_INDICES],
    t_n_indices: f32,
    t_depth: f32,
    t_position: f32,
    context: Option<(usize, usize)>,
    w: &ApproxWeights,
) -> f32 {
    let shape = shape_score(s, i, t_shape, t_permuted);
    let agree = s.indices[i]
        .iter()
        .zip(t_indices.iter())
        .filter(|(a, b)| a == b)
        .count() as f32;
    let denom = s.n_indices[i].max(t_n_indices);
    let indices = if denom > 0.0 { agree / denom } else { 1.0 };
    combine(
        name,
        shape,
        indices,
        (s.depth[i] - t_depth).abs(),
        (s.position[i] - t_position).abs(),
        context,
        w,
    )
}

/// The shape sub-score of source `i` against a target of shape id `t_shape` (the same
/// class assumed): equal, permuted, or equal only after dropping size-1 dimensions.
#[inline(always)]
fn shape_score(s: &Features, i: usize, t_shape: i64, t_permuted: i64) -> f32 {
    if s.shape[i] == t_shape {
        1.0
    } else if s.permuted[i] == t_permuted {
        PERMUTED_SHAPE_SCORE
    } else {
        RESHAPE_SHAPE_SCORE
    }
}

/// The approximate score from its sub-scores (depth and position as absolute
/// differences). Every operation is monotone in each argument (non-decreasing in the
/// scores, non-increasing in the differences), also after f32 rounding, so best-case
/// arguments give an upper bound of the score of every pair they cover.
#[inline(always)]
fn combine(
    name: f32,
    shape: f32,
    indices: f32,
    depth_diff: f32,
    position_diff: f32,
    context: Option<(usize, usize)>,
    w: &ApproxWeights,
) -> f32 {
    let depth = 1.0 - depth_diff.min(DEPTH_SPAN) / DEPTH_SPAN;
    let position = 1.0 - position_diff;
    let hier = match context {
        None => (indices + depth + position) / 3.0,
        Some((spans, inside)) => {
            let ctx = if spans == 0 {
                CONTEXT_UNKNOWN
            } else {
                inside as f32 / spans as f32
            };
            (indices + depth + position + CONTEXT_WEIGHT * ctx) / (3.0 + CONTEXT_WEIGHT)
        }
    };
    w.shape * shape + w.name * name + w.hierarchy * hier
}

/// The `k` best targets of every source tensor by the approximate score, computed tile by
/// tile on `options.device`. Only pairs inside one of `blocks` and of the same shape class
/// are scored. The result has one list per source tensor (empty when it has no candidate),
/// best first, ties by target index; ties with the k-th score are kept (up to
/// `k + TIE_SLACK`).
pub fn top_candidates(
    source: &[TensorInfo],
    target: &[TensorInfo],
    blocks: &[Block],
    options: &CandidateOptions,
) -> Result<Vec<Vec<Candidate>>> {
    let (s, t) = features(source, target, options.reshape);
    top_candidates_from(&s, &t, blocks, options, None)
}

/// As [`top_candidates`], from features computed once with [`features`], and with the
/// structure matched so far when `context` is given (its lists must cover every source
/// and target tensor).
pub fn top_candidates_from(
    s: &Features,
    t: &Features,
    blocks: &[Block],
    options: &CandidateOptions,
    context: Option<&Context>,
) -> Result<Vec<Vec<Candidate>>> {
    let engine = match options.device {
        Device::Cpu => Engine::Native,
        #[cfg(feature = "libtorch")]
        Device::Cuda(_) => Engine::Torch,
        #[cfg(not(feature = "libtorch"))]
        Device::Cuda(_) => {
            return Err(Error::NeedsLibtorch {
                what: format!("the batched candidate search on {}", options.device),
                order_needed: None,
            })
        }
    };
    top_candidates_with(s, t, blocks, options, context, engine)
}

/// How the tiles are scored: libtorch tensor operations (on any device), or the native
/// loop (CPU only), which gives the same values without materializing a matrix per
/// sub-score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Native,
    #[cfg(feature = "libtorch")]
    Torch,
}

fn top_candidates_with(
    s: &Features,
    t: &Features,
    blocks: &[Block],
    options: &CandidateOptions,
    context: Option<&Context>,
    engine: Engine,
) -> Result<Vec<Vec<Candidate>>> {
    if let Some(c) = context {
        if c.source.len() != s.leaf.len() || c.target.len() != t.leaf.len() {
            return Err(Error::invalid(
                "context",
                format!(
                    "covers {} source and {} target tensors, the features {} and {}",
                    c.source.len(),
                    c.target.len(),
                    s.leaf.len(),
                    t.leaf.len()
                ),
            ));
        }
    }
    let mut out: Vec<Vec<Candidate>> = vec![Vec::new(); s.leaf.len()];
    if options.k == 0 {
        return Ok(out);
    }
    // Tiles: (block, shape class) → (rows, columns).
    let mut tiles: Vec<Tile> = Vec::new();
    for b in blocks {
        let mut by_class: HashMap<i64, (Vec<usize>, Vec<usize>)> = HashMap::new();
        for &i in &b.source {
            by_class.entry(s.class[i]).or_default().0.push(i);
        }
        for &j in &b.target {
            if let Some(e) = by_class.get_mut(&t.class[j]) {
                e.1.push(j);
            }
        }
        let mut list: Vec<(i64, Tile)> = by_class
            .into_iter()
            .filter(|(_, (r, c))| !r.is_empty() && !c.is_empty())
            .collect();
        list.sort_unstable_by_key(|(c, _)| *c);
        tiles.extend(list.into_iter().map(|(_, rc)| rc));
    }
    let progress = Progress::new(
        tiles.iter().map(|(r, _)| r.len() as u64).sum(),
        "scoring tensors",
    );
    let search = Search {
        s,
        t,
        options,
        context,
    };
    for (rows, cols) in &tiles {
        match engine {
            Engine::Native => native::score_tile(&search, rows, cols, &mut out, &progress),
            #[cfg(feature = "libtorch")]
            Engine::Torch => torch::score_tile(&search, rows, cols, &mut out, &progress)?,
        }
    }
    progress.finish();
    let keep = options.k;
    for list in out.iter_mut() {
        list.sort_by(|a, b| b.approx.total_cmp(&a.approx).then(a.target.cmp(&b.target)));
        list.dedup_by_key(|c| c.target);
        if list.len() > keep {
            let kth = list[keep - 1].approx;
            let end = list
                .iter()
                .position(|c| c.approx < kth)
                .unwrap_or(list.len())
                .clamp(keep, keep + TIE_SLACK);
            list.truncate(end);
        }
    }
    Ok(out)
}

/// Whether a list from [`top_candidates`] with `k` may have lost candidates tied with its
/// k-th: it is full (`k + TIE_SLACK`) and its last equals its k-th. The approximate score
/// could not tell those targets apart, so the list cannot stand for them all.
pub fn ties_cut(list: &[Candidate], k: usize) -> bool {
    k > 0 && list.len() >= k + TIE_SLACK && list[list.len() - 1].approx >= list[k - 1].approx
}

/// Computes `exact(source, target)` for every candidate, in parallel over source tensors,
/// and re-sorts each list by the exact score (best first; ties by approximate score, then
/// target index, so the order is deterministic).
pub fn rerank<F>(candidates: &mut [Vec<Candidate>], exact: F)
where
    F: Fn(usize, usize) -> f64 + Sync,
{
    candidates.par_iter_mut().enumerate().for_each(|(i, list)| {
        for c in list.iter_mut() {
            c.exact = exact(i, c.target);
        }
        list.sort_by(|a, b| {
            b.exact
                .total_cmp(&a.exact)
                .then(b.approx.total_cmp(&a.approx))
                .then(a.target.cmp(&b.target))
        });
    });
}

/// A plain exact name similarity for [`rerank`]: the mean of normalized Levenshtein and
/// Jaro-Winkler similarity (strsim) of the two names.
pub fn exact_name_similarity(a: &str, b: &str) -> f64 {
    (strsim::normalized_levenshtein(a, b) + strsim::jaro_winkler(a, b)) / 2.0
}

#[cfg(test)]
#[path = "batched_tests.rs"]
mod tests;
