//! The libtorch path of the batched candidate search: each tile as tensor operations on
//! the chosen device (the CUDA path; on the CPU the native loop of `native.rs` gives
//! the same lists faster).

use super::{
    Candidate, CandidateOptions, Context, Features, Search, CONTEXT_UNKNOWN, CONTEXT_WEIGHT,
    DEPTH_SPAN, MAX_CONTEXT, MAX_INDICES, PERMUTED_SHAPE_SCORE, RESHAPE_SHAPE_SCORE, ROW_CHUNK,
    TIE_SLACK,
};
use crate::device::Device;
use crate::error::Error;
use crate::libtorch::tch_device;
use crate::progress::Progress;
use std::collections::HashMap;
use tch::{Kind, TchError, Tensor};

fn torch_err(e: TchError) -> Error {
    Error::Torch {
        context: "scoring candidates".into(),
        message: e.to_string().lines().next().unwrap_or("").to_string(),
    }
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

/// Scores `rows` against `cols` (one shape class) as tensor operations and appends each
/// row's best `options.k + TIE_SLACK` of every column chunk to `out`.
pub(super) fn score_tile(
    search: &Search<'_>,
    rows: &[usize],
    cols: &[usize],
    out: &mut [Vec<Candidate>],
    progress: &Progress,
) -> crate::error::Result<()> {
    let Search {
        s,
        t,
        options,
        context,
    } = *search;
    let _guard = tch::no_grad_guard();
    tile(s, t, rows, cols, options, context, out, progress).map_err(torch_err)
}

#[allow(clippy::too_many_arguments)]
fn tile(
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
