//! Dummy inputs of a forward pass (tracing, verifying): parsed from `SHAPE[:DTYPE[:LO-HI]]`
//! strings, filled with seeded random values; the libtorch layer makes tensors of them.
//!
//! Syntax: `SHAPE[:DTYPE[:LO-HI]]`
//! - `SHAPE`: dimensions joined by `x` (`1x3x224x224`, `1x16`), each at least 1;
//! - `DTYPE`: `f32` (the default), `f64`, `f16`, `bf16`, `i64`, `i32`, `i16`, `i8`, `u8`,
//!   `bool`, or the torch names (`float32`, `int64`, ...);
//! - `LO-HI` (also `LO..HI`): integer inputs take values in `[LO, HI)` (token ids:
//!   `1x16:i64:0-1000`), float inputs are uniform in `[LO, HI)`.
//!
//! Without a range, floats are standard normal and integers are 0 or 1 (`[0, 2)`, an index
//! every embedding accepts). Values come from a fixed-seed generator: the same spec gives
//! the same tensor on every run and machine.

use crate::dtype::DType;
use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// Largest number of elements of one dummy input (256 MiB of float32): a typo such as
/// `1x3x2240x2240x10` fails with a clear message instead of exhausting memory.
pub const MAX_INPUT_ELEMENTS: u64 = 1 << 26;

/// Default value range of integer inputs without an explicit range: 0 and 1, valid indices
/// for any embedding.
const DEFAULT_INT_RANGE: (f64, f64) = (0.0, 2.0);

/// Seed of the first input; input `i` uses `INPUT_SEED + i`.
pub const INPUT_SEED: u64 = 0x5EED_7EA5;

/// One dummy input: shape, dtype and optional value range.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    /// The shape.
    pub shape: Vec<i64>,
    /// The element type.
    pub kind: DType,
    /// Values in `[lo, hi)`; `None` for the defaults (standard normal, or 0/1 for integers).
    pub range: Option<(f64, f64)>,
}

impl InputSpec {
    /// An input of `shape` and `kind` with an optional `[lo, hi)` value range, validated as
    /// the parser validates it.
    pub fn new(shape: Vec<i64>, kind: DType, range: Option<(f64, f64)>) -> Result<Self> {
        let spec = InputSpec { shape, kind, range };
        spec.validate()?;
        Ok(spec)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Error::invalid("--input", format!("{self}: {m}"));
        if self.shape.is_empty() || self.shape.iter().any(|&d| d < 1) {
            return Err(bad("every dimension must be at least 1".into()));
        }
        let numel = self.numel();
        if numel > MAX_INPUT_ELEMENTS {
            return Err(bad(format!(
                "{numel} elements is more than the {MAX_INPUT_ELEMENTS} allowed for a dummy input"
            )));
        }
        if let Some((lo, hi)) = self.range {
            if !lo.is_finite() || !hi.is_finite() || lo >= hi {
                return Err(bad(format!(
                    "the range {lo}-{hi} is empty; give LO-HI with LO < HI"
                )));
            }
            if self.kind.is_integer() && (lo.fract() != 0.0 || hi.fract() != 0.0) {
                return Err(bad("an integer input needs an integer range".into()));
            }
        }
        Ok(())
    }

    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.shape
            .iter()
            .fold(1u64, |acc, &d| acc.saturating_mul(d.max(0) as u64))
    }

    /// The values, filled from the generator seeded with `seed`, in row-major order:
    /// integers (`[lo, hi)`, 0/1 by default) for integer and bool dtypes, else floats
    /// (uniform in `[lo, hi)`, standard normal by default), to be cast to [`Self::kind`].
    pub fn values(&self, seed: u64) -> Result<InputValues> {
        self.validate()?;
        let n = self.numel() as usize;
        let mut rng = SplitMix64(seed);
        Ok(if self.kind.is_integer() {
            let (lo, hi) = self.range.unwrap_or(DEFAULT_INT_RANGE);
            let (lo, span) = (lo as i64, (hi - lo) as u64);
            InputValues::Int((0..n).map(|_| lo + (rng.next() % span) as i64).collect())
        } else {
            InputValues::Float(match self.range {
                Some((lo, hi)) => (0..n)
                    .map(|_| (lo + rng.unit() * (hi - lo)) as f32)
                    .collect(),
                None => (0..n).map(|_| rng.normal() as f32).collect(),
            })
        })
    }
}

/// The values of a dummy input before the cast to its dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum InputValues {
    /// Integer values (integer and bool dtypes).
    Int(Vec<i64>),
    /// Float values.
    Float(Vec<f32>),
}

/// Splits `LO-HI` or `LO..HI`, allowing negative bounds (`-1-1`, `-5--2`).
fn parse_range(text: &str) -> Option<(f64, f64)> {
    if let Some((lo, hi)) = text.split_once("..") {
        return Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?));
    }
    // The separator is a '-' right after a digit or '.', so a leading minus stays a sign.
    let bytes = text.as_bytes();
    let at = (1..bytes.len())
        .find(|&i| bytes[i] == b'-' && (bytes[i - 1].is_ascii_digit() || bytes[i - 1] == b'.'))?;
    Some((
        text[..at].trim().parse().ok()?,
        text[at + 1..].trim().parse().ok()?,
    ))
}

impl FromStr for InputSpec {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |m: &str| {
            Error::invalid(
                "--input",
                format!("'{text}': {m}; expected SHAPE[:DTYPE[:LO-HI]] such as 1x3x224x224 or 1x16:i64:0-1000"),
            )
        };
        let mut parts = text.trim().splitn(3, ':');
        let shape_text = parts.next().unwrap_or("");
        let shape = shape_text
            .split(['x', 'X'])
            .map(|d| d.trim().parse::<i64>().ok().filter(|&d| d >= 1))
            .collect::<Option<Vec<i64>>>()
            .ok_or_else(|| bad("the shape must be positive integers joined by 'x'"))?;
        let kind = match parts.next() {
            Some(name) => {
                DType::parse(name).ok_or_else(|| bad(&format!("unknown dtype '{name}'")))?
            }
            None => DType::F32,
        };
        let range = match parts.next() {
            Some(r) => {
                Some(parse_range(r).ok_or_else(|| bad(&format!("cannot read the range '{r}'")))?)
            }
            None => None,
        };
        InputSpec::new(shape, kind, range)
    }
}

impl fmt::Display for InputSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape: Vec<String> = self.shape.iter().map(i64::to_string).collect();
        write!(f, "{}", shape.join("x"))?;
        if self.kind != DType::F32 || self.range.is_some() {
            write!(f, ":{}", self.kind.short_name())?;
        }
        if let Some((lo, hi)) = self.range {
            write!(f, ":{lo}-{hi}")?;
        }
        Ok(())
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, well-mixed generator, so that dummy inputs
/// depend on nothing but the seed (not on libtorch's global RNG state).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) from the top 53 bits.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1]: ln is finite
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shapes_dtypes_and_ranges() {
        let s: InputSpec = "1x3x224x224".parse().unwrap();
        assert_eq!(
            (s.shape.clone(), s.kind, s.range),
            (vec![1, 3, 224, 224], DType::F32, None)
        );
        let s: InputSpec = "1x16:i64:0-1000".parse().unwrap();
        assert_eq!(
            (s.shape.clone(), s.kind, s.range),
            (vec![1, 16], DType::I64, Some((0.0, 1000.0)))
        );
        let s: InputSpec = "2x4:float32:-1-1".parse().unwrap();
        assert_eq!(s.range, Some((-1.0, 1.0)));
        let s: InputSpec = "2:f32:-5..-2".parse().unwrap();
        assert_eq!(s.range, Some((-5.0, -2.0)));
        assert_eq!(
            "1x16:i64:0-1000".parse::<InputSpec>().unwrap().to_string(),
            "1x16:i64:0-1000"
        );
        assert_eq!("1x3".parse::<InputSpec>().unwrap().to_string(), "1x3");
    }

    #[test]
    fn rejects_bad_specs_with_the_expected_syntax() {
        for bad in [
            "",
            "1x0",
            "ax3",
            "1x3:f99",
            "1x3:i64:5-2",
            "1x3:i64:0.5-2",
            "100000x100000",
            "1x3:i64:zz",
        ] {
            let err = bad.parse::<InputSpec>().unwrap_err().to_string();
            assert!(err.contains("--input"), "{bad}: {err}");
        }
    }

    #[test]
    fn values_are_seeded_and_in_range() {
        let s: InputSpec = "4x8:i64:3-7".parse().unwrap();
        let InputValues::Int(a) = s.values(1).unwrap() else {
            panic!("integer values expected")
        };
        assert!(a.iter().all(|&v| (3..7).contains(&v)));
        assert_eq!(s.values(1).unwrap(), InputValues::Int(a.clone()));
        assert_ne!(s.values(2).unwrap(), InputValues::Int(a));
        let f: InputSpec = "1000".parse().unwrap();
        let InputValues::Float(t) = f.values(0).unwrap() else {
            panic!("float values expected")
        };
        let mean = t.iter().sum::<f32>() / t.len() as f32;
        let var = t.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / t.len() as f32;
        assert!(mean.abs() < 0.2 && (var.sqrt() - 1.0).abs() < 0.2);
    }
}
