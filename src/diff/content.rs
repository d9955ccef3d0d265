//! Tensor content: streamed from the file in bounded chunks, hashed, compared byte for
//! byte and measured.
//!
//! Every reader here holds at most [`CHUNK_BYTES`] of a tensor at a time, except for
//! strided views (a saved `.t()`) and transposed pairs, which are read whole: those are
//! bounded by one tensor, never by the file.

use crate::apply::data::{Bytes, TensorData, CHUNK_BYTES};
use crate::error::{Error, Result};
use crate::spec::{dtype_size, TensorInfo};
use half::{bf16, f16};
use std::os::unix::fs::FileExt;
use xxhash_rust::xxh3::Xxh3;

/// A tensor's row-major bytes, handed out a chunk at a time.
struct Chunks<'a> {
    data: &'a TensorData,
    source: Source,
    element_size: usize,
    nbytes: u64,
    done: u64,
}

enum Source {
    /// A contiguous byte range of file `file` starting at `start`.
    Range { file: usize, start: u64 },
    /// A strided view, gathered whole.
    Whole(Vec<u8>),
}

impl<'a> Chunks<'a> {
    fn open(data: &'a TensorData, t: &TensorInfo) -> Result<Self> {
        let source = match data.locate(t)? {
            Bytes::Range { file, start, .. } => Source::Range { file, start },
            Bytes::Strided { .. } => Source::Whole(data.read(t)?),
        };
        Ok(Chunks {
            data,
            source,
            element_size: dtype_size(&t.dtype).max(1),
            nbytes: t.nbytes(),
            done: 0,
        })
    }

    /// The next `elements` elements (fewer at the end, none when done) into `buf`.
    fn next_elements(&mut self, elements: usize, buf: &mut Vec<u8>) -> Result<bool> {
        let n = ((self.nbytes - self.done) as usize).min(elements * self.element_size);
        if n == 0 {
            return Ok(false);
        }
        buf.resize(n, 0);
        match &self.source {
            Source::Range { file, start } => {
                let (path, f) = &self.data.files[*file];
                f.read_exact_at(buf, start + self.done).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        Error::corrupt(
                            path,
                            "checkpoint",
                            "tensor data ends past the end of the file (truncated?)",
                        )
                    } else {
                        Error::io(path, e)
                    }
                })?;
            }
            Source::Whole(bytes) => {
                let at = self.done as usize;
                buf.copy_from_slice(&bytes[at..at + n]);
            }
        }
        self.done += n as u64;
        Ok(true)
    }

    /// Elements per chunk for this tensor.
    fn chunk_elements(&self) -> usize {
        (CHUNK_BYTES / self.element_size).max(1)
    }
}

/// The xxh3 hash of the row-major bytes of `t`, read once in bounded chunks.
pub(crate) fn hash(data: &TensorData, t: &TensorInfo) -> Result<u64> {
    let mut chunks = Chunks::open(data, t)?;
    let mut hasher = Xxh3::new();
    let mut buf = Vec::new();
    let n = chunks.chunk_elements();
    while chunks.next_elements(n, &mut buf)? {
        hasher.update(&buf);
    }
    Ok(hasher.digest())
}

/// Whether two tensors of the same dtype and shape are equal byte for byte, reading each
/// once and stopping at the first chunk that differs.
pub(crate) fn equal(
    da: &TensorData,
    ta: &TensorInfo,
    db: &TensorData,
    tb: &TensorInfo,
) -> Result<bool> {
    if ta.nbytes() != tb.nbytes() {
        return Ok(false);
    }
    let mut ca = Chunks::open(da, ta)?;
    let mut cb = Chunks::open(db, tb)?;
    let (mut ba, mut bb) = (Vec::new(), Vec::new());
    let n = ca.chunk_elements();
    while ca.next_elements(n, &mut ba)? & cb.next_elements(n, &mut bb)? {
        if ba != bb {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Numeric differences between two tensors paired with each other.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Largest |a − b| over the elements.
    pub max_abs_diff: f64,
    /// ‖a − b‖₂ / ‖a‖₂ (‖a − b‖₂ itself when ‖a‖₂ is 0).
    pub rel_l2: f64,
    /// Cosine similarity of a and b as vectors (1 when both are all zeros).
    pub cosine: f64,
    /// Fraction of the elements that differ.
    pub frac_differ: f64,
}

/// Running sums of [`Stats`].
#[derive(Default)]
struct Sums {
    max_abs: f64,
    diff2: f64,
    a2: f64,
    b2: f64,
    ab: f64,
    differ: u64,
    n: u64,
}

impl Sums {
    fn add(&mut self, a: &[f64], b: &[f64]) {
        for (&x, &y) in a.iter().zip(b) {
            let d = x - y;
            // NaN never equals anything; f64::max ignores it in the maximum.
            self.max_abs = self.max_abs.max(d.abs());
            self.diff2 += d * d;
            self.a2 += x * x;
            self.b2 += y * y;
            self.ab += x * y;
            // Bitwise-different NaNs and -0.0 vs 0.0 count as equal values here.
            self.differ += u64::from(x != y && !(x.is_nan() && y.is_nan()));
        }
        self.n += a.len() as u64;
    }

    fn finish(self) -> Stats {
        let (na, nb) = (self.a2.sqrt(), self.b2.sqrt());
        let diff = self.diff2.sqrt();
        Stats {
            max_abs_diff: self.max_abs,
            rel_l2: if na > 0.0 { diff / na } else { diff },
            cosine: match (na > 0.0, nb > 0.0) {
                (true, true) => self.ab / (na * nb),
                (false, false) => 1.0,
                _ => 0.0,
            },
            frac_differ: if self.n == 0 {
                0.0
            } else {
                self.differ as f64 / self.n as f64
            },
        }
    }
}

/// Decodes little-endian elements of `dtype` into `out`; false for a dtype without a
/// numeric reading here (complex, float8).
fn decode(dtype: &str, bytes: &[u8], out: &mut Vec<f64>) -> bool {
    out.clear();
    macro_rules! each {
        ($n:expr, $f:expr) => {
            out.extend(bytes.chunks_exact($n).map(|c| $f(c.try_into().unwrap())))
        };
    }
    match dtype {
        "float32" => each!(4, |c| f32::from_le_bytes(c) as f64),
        "float64" => each!(8, f64::from_le_bytes),
        "float16" => each!(2, |c| f16::from_le_bytes(c).to_f64()),
        "bfloat16" => each!(2, |c| bf16::from_le_bytes(c).to_f64()),
        "int64" => each!(8, |c| i64::from_le_bytes(c) as f64),
        "int32" => each!(4, |c| i32::from_le_bytes(c) as f64),
        "int16" => each!(2, |c| i16::from_le_bytes(c) as f64),
        "int8" => each!(1, |c: [u8; 1]| c[0] as i8 as f64),
        "uint8" => each!(1, |c: [u8; 1]| c[0] as f64),
        "uint16" => each!(2, |c| u16::from_le_bytes(c) as f64),
        "uint32" => each!(4, |c| u32::from_le_bytes(c) as f64),
        "uint64" => each!(8, |c| u64::from_le_bytes(c) as f64),
        "bool" => each!(1, |c: [u8; 1]| f64::from(c[0] != 0)),
        _ => return false,
    }
    true
}

/// How B's elements line up with A's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Same row-major order (same shape, or a reshape of the same elements).
    Same,
    /// B is A transposed (2-D).
    Transposed,
}

/// The differences between `ta` (in A) and `tb` (in B), each converted to f64 (so a
/// float16 B is compared after converting it back to A's float32), or `None` when the
/// element counts differ or a dtype has no numeric reading.
pub(crate) fn measure(
    da: &TensorData,
    ta: &TensorInfo,
    db: &TensorData,
    tb: &TensorInfo,
    layout: Layout,
) -> Result<Option<Stats>> {
    if ta.numel != tb.numel {
        return Ok(None);
    }
    let (mut va, mut vb) = (Vec::new(), Vec::new());
    let mut sums = Sums::default();
    match layout {
        Layout::Transposed => {
            let (Some(&rows), Some(&cols), 2) = (ta.shape.first(), ta.shape.get(1), ta.shape.len())
            else {
                return Ok(None);
            };
            if !decode(&ta.dtype, &da.read(ta)?, &mut va)
                || !decode(&tb.dtype, &db.read(tb)?, &mut vb)
            {
                return Ok(None);
            }
            // B[c][r] is A[r][c]: put B back in A's order.
            let (rows, cols) = (rows as usize, cols as usize);
            let back: Vec<f64> = (0..rows * cols)
                .map(|k| vb[(k % cols) * rows + k / cols])
                .collect();
            sums.add(&va, &back);
        }
        Layout::Same => {
            let mut ca = Chunks::open(da, ta)?;
            let mut cb = Chunks::open(db, tb)?;
            let n = ca.chunk_elements().min(cb.chunk_elements());
            let (mut ba, mut bb) = (Vec::new(), Vec::new());
            while ca.next_elements(n, &mut ba)? & cb.next_elements(n, &mut bb)? {
                if !decode(&ta.dtype, &ba, &mut va) || !decode(&tb.dtype, &bb, &mut vb) {
                    return Ok(None);
                }
                sums.add(&va, &vb);
            }
        }
    }
    Ok(Some(sums.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_a_known_difference() {
        let mut s = Sums::default();
        s.add(&[1.0, 2.0, 3.0, 4.0], &[1.0, 2.0, 3.0, 4.5]);
        let st = s.finish();
        assert_eq!(st.max_abs_diff, 0.5);
        assert_eq!(st.frac_differ, 0.25);
        assert!((st.rel_l2 - 0.5 / 30f64.sqrt()).abs() < 1e-12);
        assert!(st.cosine < 1.0 && st.cosine > 0.99);
    }

    #[test]
    fn zeros_against_zeros_are_equal() {
        let mut s = Sums::default();
        s.add(&[0.0, 0.0], &[0.0, 0.0]);
        let st = s.finish();
        assert_eq!((st.cosine, st.rel_l2, st.frac_differ), (1.0, 0.0, 0.0));
    }

    #[test]
    fn half_precision_decodes_to_its_value() {
        let mut out = Vec::new();
        assert!(decode(
            "float16",
            &f16::from_f32(0.5).to_le_bytes(),
            &mut out
        ));
        assert!(decode(
            "bfloat16",
            &bf16::from_f32(-2.0).to_le_bytes(),
            &mut out
        ));
        assert_eq!(out, vec![-2.0]);
        assert!(!decode("complex64", &[0; 8], &mut out));
    }
}
