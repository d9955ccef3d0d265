//! Executes the conversions of a mapping (split, concat, stack, unstack, stack_of_concat,
//! split_of_unstack), one output tensor at a time.
//!
//! Every op is the same copy: each part of the many side is a block (a hyper-rectangle)
//! of the one tensor ([`crate::mapping::Layout`]). An output is built in one buffer of its
//! own size; the bytes of its block (a scatter) or of its parts (a gather) are read from
//! the source file straight into that buffer, one contiguous run at a time, so memory
//! stays at the largest output tensor plus a constant. Only parts that must be reordered
//! anyway (a transposed part, a strided `torch.save` view) pass through a buffer of their
//! own.

use super::data::{contiguous_strides, Bytes, TensorData};
use crate::error::{Error, Result};
use crate::mapping::{ResolvedConversion, Transform};
use crate::spec::{dtype_size, ModelSpec};
use std::os::unix::fs::FileExt;

/// Calls `f(whole, block, len)` for each contiguous run of `block` (placed at `offset` in a
/// row-major tensor of shape `whole`): element offsets in the whole and in the block, and
/// the run's length in elements.
fn runs(
    whole: &[i64],
    block: &[i64],
    offset: &[i64],
    mut f: impl FnMut(u64, u64, u64) -> Result<()>,
) -> Result<()> {
    if block.contains(&0) {
        return Ok(());
    }
    // Dimensions after `k` are whole in the block: a run spans dims k.. at once.
    let k = (0..block.len())
        .rev()
        .find(|&d| block[d] != whole[d])
        .unwrap_or(0);
    let run: i64 = block[k.min(block.len())..].iter().product();
    let (ws, bs) = (contiguous_strides(whole), contiguous_strides(block));
    let mut index = vec![0i64; k];
    loop {
        let mut w: i64 = index
            .iter()
            .zip(&offset[..k])
            .zip(&ws[..k])
            .map(|((i, o), s)| (i + o) * s)
            .sum();
        if k < block.len() {
            w += offset[k] * ws[k];
        }
        let b: i64 = index.iter().zip(&bs[..k]).map(|(i, s)| i * s).sum();
        f(w as u64, b as u64, run as u64)?;
        // Next index over block dims 0..k, last fastest.
        let mut d = k;
        loop {
            if d == 0 {
                return Ok(());
            }
            d -= 1;
            index[d] += 1;
            if index[d] < block[d] {
                break;
            }
            index[d] = 0;
        }
    }
}

/// The row-major bytes of output `part` of conversion `rc` (for a gather, its only output,
/// part 0).
pub(crate) fn output_bytes(
    source: &ModelSpec,
    data: &TensorData,
    rc: &ResolvedConversion,
    part: usize,
) -> Result<Vec<u8>> {
    let es = dtype_size(&rc.dtype);
    let layout = &rc.layout;
    let transpose = rc.conversion.transpose;
    let too_big = || Error::invalid("tensor", "too large for this machine");
    if rc.conversion.kind.gathers() {
        let numel: i64 = layout.whole.iter().product();
        let mut out = vec![0u8; usize::try_from(numel).map_err(|_| too_big())? * es];
        for (i, &si) in rc.sources.iter().enumerate() {
            let info = &source.tensors[si];
            let (block, offset) = &layout.blocks[i];
            match (transpose, data.locate(info)?) {
                (false, Bytes::Range { file, start, .. }) => {
                    let (path, f) = &data.files[file];
                    runs(&layout.whole, block, offset, |w, b, n| {
                        let (w, b, n) = (w as usize * es, b * es as u64, n as usize * es);
                        f.read_exact_at(&mut out[w..w + n], start + b)
                            .map_err(|e| Error::io(path, e))
                    })?;
                }
                _ => {
                    let mut bytes = data.read(info)?;
                    if transpose {
                        bytes =
                            super::transform_bytes(bytes, &info.shape, es, &Transform::Transpose);
                    }
                    runs(&layout.whole, block, offset, |w, b, n| {
                        let (w, b, n) = (w as usize * es, b as usize * es, n as usize * es);
                        out[w..w + n].copy_from_slice(&bytes[b..b + n]);
                        Ok(())
                    })?;
                }
            }
        }
        Ok(out)
    } else {
        let info = &source.tensors[rc.sources[0]];
        let (block, offset) = &layout.blocks[part];
        let numel: i64 = block.iter().product();
        let mut out = vec![0u8; usize::try_from(numel).map_err(|_| too_big())? * es];
        match data.locate(info)? {
            Bytes::Range { file, start, .. } => {
                let (path, f) = &data.files[file];
                runs(&layout.whole, block, offset, |w, b, n| {
                    let (w, b, n) = (w * es as u64, b as usize * es, n as usize * es);
                    f.read_exact_at(&mut out[b..b + n], start + w)
                        .map_err(|e| Error::io(path, e))
                })?;
            }
            Bytes::Strided { .. } => {
                // A strided view has to be gathered whole first (rare: torch.save views).
                let whole = data.read(info)?;
                runs(&layout.whole, block, offset, |w, b, n| {
                    let (w, b, n) = (w as usize * es, b as usize * es, n as usize * es);
                    out[b..b + n].copy_from_slice(&whole[w..w + n]);
                    Ok(())
                })?;
            }
        }
        if transpose {
            // The cut-out block, without its stacked axis, is the part before its transpose.
            let mut cut = layout.parts[part].clone();
            cut.reverse();
            out = super::transform_bytes(out, &cut, es, &Transform::Transpose);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(whole: &[i64], block: &[i64], offset: &[i64]) -> Vec<(u64, u64, u64)> {
        let mut v = vec![];
        runs(whole, block, offset, |w, b, n| {
            v.push((w, b, n));
            Ok(())
        })
        .unwrap();
        v
    }

    #[test]
    fn runs_of_blocks() {
        // Rows 2..4 of a [6, 3]: one run.
        assert_eq!(collect(&[6, 3], &[2, 3], &[2, 0]), vec![(6, 0, 6)]);
        // Columns 1..3 of a [2, 4]: one run per row.
        assert_eq!(
            collect(&[2, 4], &[2, 2], &[0, 1]),
            vec![(1, 0, 2), (5, 2, 2)]
        );
        // Slice 1 of a stacked [3, 2, 2].
        assert_eq!(collect(&[3, 2, 2], &[1, 2, 2], &[1, 0, 0]), vec![(4, 0, 4)]);
        // The whole tensor, and a scalar.
        assert_eq!(collect(&[2, 2], &[2, 2], &[0, 0]), vec![(0, 0, 4)]);
        assert_eq!(collect(&[], &[], &[]), vec![(0, 0, 1)]);
        assert!(collect(&[2, 0], &[2, 0], &[0, 0]).is_empty());
    }
}
