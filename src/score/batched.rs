//! Batched candidate scoring as tensor operations, on the CPU or a CUDA device.
//!
//! Scoring every source tensor against every target tensor pair by pair with string
//! metrics is what makes the naive approach unusable on 92,000-tensor checkpoints. Here
//! the cheap part of the similarity is computed for whole tiles at once with libtorch:
//!
//! - name tokens and character trigrams as 0/1 incidence matrices, their overlaps by one
//!   matrix product (token Jaccard, trigram Dice);
//! - the leaf name (`weight`, `bias`, ...), the exact shape, and the shape up to a
//!   permutation (transpose candidates) as integer ids compared by broadcasting;
//! - the numeric components of the name (layer, block and expert indices) compared slot by
//!   slot as integers, depth and relative position as vectors compared by broadcasting;
//! - optionally the structure already matched ([`Context`]): for each source tensor the
//!   target-tree intervals of its matched ancestors' counterparts, for each target tensor
//!   its place in the target tree, compared by broadcasting (is the target inside?).
//!
//! Tensors only meet tensors of the same shape class (the sorted dimensions, so a
//! transpose stays a candidate); each class is a tile, split into row and column chunks of
//! at most [`TILE_ELEMS`] pairs, so memory stays bounded whatever the model size. Per
//! source tensor the `k` best targets are kept ([`top_candidates`]); the exact, expensive
//! score (string metrics, the mapping engine's composite) is then computed only for those
//! candidates, in parallel ([`rerank`]).
//!
//! The approximate score of a pair is
//! `w.shape * shape + w.name * (jaccard + dice + leaf) / 3 + w.hierarchy * hierarchy`, with
//! `hierarchy = (indices + depth + position) / 3`, or with a context
//! `(indices + depth + position + CONTEXT_WEIGHT * context) / (3 + CONTEXT_WEIGHT)`, each
//! sub-score in [0, 1]; [`approx_score`] computes it pair by pair (the reference the tensor
//! path is tested against). All arithmetic is exact small-integer counting or
//! single IEEE operations in a fixed order, so the CPU and CUDA paths give the same values.

use crate::device::Device;
use crate::error::{Error, Result};
use crate::libtorch::tch_device;
use crate::progress::Progress;
use crate::spec::TensorInfo;
use rayon::prelude::*;
use std::collections::HashMap;
use tch::{Kind, TchError, Tensor};

mod native;

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
    let ctx = context.map(|c| {
        let spans = &c.source[i][..c.source[i].len().min(MAX_CONTEXT)];
        let key = c.target[j];
        let inside = spans
            .iter()
            .filter(|(lo, hi)| *lo <= key && key < *hi)
            .count();
        (spans.len(), inside)
    });
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

fn torch_err(e: TchError) -> Error {
    Error::Torch {
        context: "scoring candidates".into(),
        message: e.to_string().lines().next().unwrap_or("").to_string(),
    }
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
        Device::Cuda(_) => Engine::Torch,
    };
    top_candidates_with(s, t, blocks, options, context, engine)
}

/// How the tiles are scored: libtorch tensor operations (on any device), or the native
/// loop (CPU only), which gives the same values without materializing a matrix per
/// sub-score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Native,
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
    let _guard = tch::no_grad_guard();
    for (rows, cols) in &tiles {
        match engine {
            Engine::Native => {
                native::score_tile(s, t, rows, cols, options, context, &mut out, &progress)
            }
            Engine::Torch => score_tile(s, t, rows, cols, options, context, &mut out, &progress)
                .map_err(torch_err)?,
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

/// A dense 0/1 incidence matrix (rows × vocabulary) of id lists, over a local vocabulary.
fn incidence(lists: &[&[u32]], local: &HashMap<u32, usize>, width: usize) -> Vec<f32> {
    let mut m = vec![0f32; lists.len() * width];
    for (r, l) in lists.iter().enumerate() {
        for id in l.iter() {
            if let Some(&c) = local.get(id) {
                m[r * width + c] = 1.0;
            }
        }
    }
    m
}

fn tensor_f32(v: &[f32], shape: &[i64], device: Device) -> std::result::Result<Tensor, TchError> {
    Tensor::f_from_slice(v)?
        .f_reshape(shape)?
        .f_to(tch_device(device))
}

fn tensor_i64(v: &[i64], shape: &[i64], device: Device) -> std::result::Result<Tensor, TchError> {
    Tensor::f_from_slice(v)?
        .f_reshape(shape)?
        .f_to(tch_device(device))
}

/// Where x > 0: scale * inter / x; elsewhere 1 (both sets empty).
fn ratio_or_one(
    inter: &Tensor,
    union: &Tensor,
    scale: f64,
) -> std::result::Result<Tensor, TchError> {
    let positive = union.f_gt(0.0)?;
    let value = inter.f_mul_scalar(scale)?.f_div(&union.f_clamp_min(1.0)?)?;
    value.f_where_self(&positive, &Tensor::f_ones_like(&value)?)
}

/// One side's per-tensor columns of a chunk, on the device.
struct ChunkSide {
    tokens: Tensor,
    ngrams: Tensor,
    n_tokens: Tensor,
    n_ngrams: Tensor,
    indices: Tensor,
    n_indices: Tensor,
    depth: Tensor,
    position: Tensor,
    leaf: Tensor,
    shape: Tensor,
    permuted: Tensor,
}

fn chunk_side(
    f: &Features,
    ids: &[usize],
    tok_local: &HashMap<u32, usize>,
    ng_local: &HashMap<u32, usize>,
    device: Device,
) -> std::result::Result<ChunkSide, TchError> {
    let n = ids.len() as i64;
    let (vt, vn) = (tok_local.len().max(1), ng_local.len().max(1));
    let toks: Vec<&[u32]> = ids.iter().map(|&i| f.tokens[i].as_slice()).collect();
    let ngs: Vec<&[u32]> = ids.iter().map(|&i| f.ngrams[i].as_slice()).collect();
    let pick = |v: &[f32]| ids.iter().map(|&i| v[i]).collect::<Vec<f32>>();
    let pick_i = |v: &[i64]| ids.iter().map(|&i| v[i]).collect::<Vec<i64>>();
    let idx: Vec<i64> = ids.iter().flat_map(|&i| f.indices[i]).collect();
    Ok(ChunkSide {
        tokens: tensor_f32(&incidence(&toks, tok_local, vt), &[n, vt as i64], device)?,
        ngrams: tensor_f32(&incidence(&ngs, ng_local, vn), &[n, vn as i64], device)?,
        n_tokens: tensor_f32(
            &toks.iter().map(|l| l.len() as f32).collect::<Vec<_>>(),
            &[n],
            device,
        )?,
        n_ngrams: tensor_f32(
            &ngs.iter().map(|l| l.len() as f32).collect::<Vec<_>>(),
            &[n],
            device,
        )?,
        indices: tensor_i64(&idx, &[n, MAX_INDICES as i64], device)?,
        n_indices: tensor_f32(&pick(&f.n_indices), &[n], device)?,
        depth: tensor_f32(&pick(&f.depth), &[n], device)?,
        position: tensor_f32(&pick(&f.position), &[n], device)?,
        leaf: tensor_i64(&pick_i(&f.leaf), &[n], device)?,
        shape: tensor_i64(&pick_i(&f.shape), &[n], device)?,
        permuted: tensor_i64(&pick_i(&f.permuted), &[n], device)?,
    })
}

/// Rows as a column vector, columns as a row vector: the pairwise broadcast.
fn pair<F>(a: &Tensor, b: &Tensor, op: F) -> std::result::Result<Tensor, TchError>
where
    F: Fn(&Tensor, &Tensor) -> std::result::Result<Tensor, TchError>,
{
    op(&a.f_unsqueeze(1)?, &b.f_unsqueeze(0)?)
}

#[allow(clippy::too_many_arguments)]
fn score_tile(
    s: &Features,
    t: &Features,
    rows: &[usize],
    cols: &[usize],
    options: &CandidateOptions,
    context: Option<&Context>,
    out: &mut [Vec<Candidate>],
    progress: &Progress,
) -> std::result::Result<(), TchError> {
    let dev = options.device;
    let w = options.weights;
    let row_chunk = rows
        .len()
        .min(ROW_CHUNK)
        .min(options.tile_elems / (options.k + TIE_SLACK))
        .max(1);
    let col_chunk = (options.tile_elems / row_chunk)
        .max(options.k + TIE_SLACK)
        .max(1);
    let fetch = options.k + TIE_SLACK;
    for cols in cols.chunks(col_chunk) {
        // The local vocabularies: ids that occur in this chunk's targets (others cannot overlap).
        let mut tok_local: HashMap<u32, usize> = HashMap::new();
        let mut ng_local: HashMap<u32, usize> = HashMap::new();
        for &j in cols {
            for &id in &t.tokens[j] {
                let n = tok_local.len();
                tok_local.entry(id).or_insert(n);
            }
            for &id in &t.ngrams[j] {
                let n = ng_local.len();
                ng_local.entry(id).or_insert(n);
            }
        }
        let c = chunk_side(t, cols, &tok_local, &ng_local, dev)?;
        let c_key = match context {
            Some(ctx) => Some(tensor_i64(
                &cols.iter().map(|&j| ctx.target[j]).collect::<Vec<_>>(),
                &[cols.len() as i64],
                dev,
            )?),
            None => None,
        };
        let c_tokens_t = c.tokens.f_tr()?;
        let c_ngrams_t = c.ngrams.f_tr()?;
        for rows in rows.chunks(row_chunk) {
            let r = chunk_side(s, rows, &tok_local, &ng_local, dev)?;
            // Name: token Jaccard, trigram Dice, leaf equality.
            let ti = r.tokens.f_mm(&c_tokens_t)?;
            let tu = pair(&r.n_tokens, &c.n_tokens, |a, b| a.f_add(b))?.f_sub(&ti)?;
            let jac = ratio_or_one(&ti, &tu, 1.0)?;
            let ni = r.ngrams.f_mm(&c_ngrams_t)?;
            let nu = pair(&r.n_ngrams, &c.n_ngrams, |a, b| a.f_add(b))?;
            let dice = ratio_or_one(&ni, &nu, 2.0)?;
            let leaf = pair(&r.leaf, &c.leaf, |a, b| a.f_eq_tensor(b))?.f_to_kind(Kind::Float)?;
            let name = jac.f_add(&dice)?.f_add(&leaf)?.f_div_scalar(3.0)?;
            // Shape: equal, permuted, or reshaped (the tile guarantees the same class).
            let same = pair(&r.shape, &c.shape, |a, b| a.f_eq_tensor(b))?;
            let perm = pair(&r.permuted, &c.permuted, |a, b| a.f_eq_tensor(b))?;
            let ones = Tensor::f_ones_like(&name)?;
            let shape = ones.f_where_self(
                &same,
                &ones
                    .f_mul_scalar(PERMUTED_SHAPE_SCORE as f64)?
                    .f_where_self(&perm, &ones.f_mul_scalar(RESHAPE_SHAPE_SCORE as f64)?)?,
            )?;
            // Hierarchy: index slots agreeing, depth, relative position.
            let mut agree = Tensor::f_zeros_like(&name)?;
            for slot in 0..MAX_INDICES as i64 {
                let a = r.indices.f_select(1, slot)?;
                let b = c.indices.f_select(1, slot)?;
                agree =
                    agree.f_add(&pair(&a, &b, |x, y| x.f_eq_tensor(y))?.f_to_kind(Kind::Float)?)?;
            }
            let denom = pair(&r.n_indices, &c.n_indices, |a, b| a.f_maximum(b))?;
            let indices = ratio_or_one(&agree, &denom, 1.0)?;
            let depth = pair(&r.depth, &c.depth, |a, b| a.f_sub(b))?
                .f_abs()?
                .f_clamp_max(DEPTH_SPAN as f64)?
                .f_div_scalar(DEPTH_SPAN as f64)?
                .f_neg()?
                .f_add_scalar(1.0)?;
            let position = pair(&r.position, &c.position, |a, b| a.f_sub(b))?
                .f_abs()?
                .f_neg()?
                .f_add_scalar(1.0)?;
            let base = indices.f_add(&depth)?.f_add(&position)?;
            let hier = match (context, &c_key) {
                (Some(ctx), Some(key)) => {
                    let inside = context_inside(ctx, rows, key, dev)?;
                    base.f_add(&inside.f_mul_scalar(CONTEXT_WEIGHT as f64)?)?
                        .f_div_scalar(3.0 + CONTEXT_WEIGHT as f64)?
                }
                _ => base.f_div_scalar(3.0)?,
            };
            let score = shape
                .f_mul_scalar(w.shape as f64)?
                .f_add(&name.f_mul_scalar(w.name as f64)?)?
                .f_add(&hier.f_mul_scalar(w.hierarchy as f64)?)?;
            let k = fetch.min(cols.len()) as i64;
            let (values, idx) = score.f_topk(k, 1, true, true)?;
            let values: Vec<f32> = Vec::try_from(&values.f_reshape([-1])?.f_to(tch::Device::Cpu)?)?;
            let idx: Vec<i64> = Vec::try_from(&idx.f_reshape([-1])?.f_to(tch::Device::Cpu)?)?;
            for (ri, &src) in rows.iter().enumerate() {
                for q in 0..k as usize {
                    let p = ri * k as usize + q;
                    let approx = values[p];
                    out[src].push(Candidate {
                        target: cols[idx[p] as usize],
                        approx,
                        exact: approx as f64,
                    });
                }
            }
            progress.inc(rows.len() as u64);
        }
    }
    Ok(())
}

/// The context sub-score of `rows` (source tensors) against the target keys of a column
/// chunk: the share of each source's matched-ancestor intervals that contain the target
/// ([`CONTEXT_UNKNOWN`] without any), as a rows × columns matrix.
fn context_inside(
    ctx: &Context,
    rows: &[usize],
    key: &Tensor,
    dev: Device,
) -> std::result::Result<Tensor, TchError> {
    let n = rows.len() as i64;
    let slots = MAX_CONTEXT as i64;
    // Absent slots are the empty interval [0, 0), which contains nothing.
    let mut lo = vec![0i64; rows.len() * MAX_CONTEXT];
    let mut hi = vec![0i64; rows.len() * MAX_CONTEXT];
    let mut count = vec![0f32; rows.len()];
    for (r, &i) in rows.iter().enumerate() {
        for (d, &(a, b)) in ctx.source[i].iter().take(MAX_CONTEXT).enumerate() {
            lo[r * MAX_CONTEXT + d] = a;
            hi[r * MAX_CONTEXT + d] = b;
        }
        count[r] = ctx.source[i].len().min(MAX_CONTEXT) as f32;
    }
    let lo = tensor_i64(&lo, &[n, slots, 1], dev)?;
    let hi = tensor_i64(&hi, &[n, slots, 1], dev)?;
    let k = key.f_reshape([1, 1, -1])?;
    let inside = k
        .f_ge_tensor(&lo)?
        .f_logical_and(&k.f_lt_tensor(&hi)?)?
        .f_to_kind(Kind::Float)?
        .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Float)?;
    let count = tensor_f32(&count, &[n, 1], dev)?;
    let share = inside.f_div(&count.f_clamp_min(1.0)?)?;
    let unknown = Tensor::f_full_like(&share, CONTEXT_UNKNOWN as f64)?;
    share.f_where_self(&count.f_gt(0.0)?, &unknown)
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
