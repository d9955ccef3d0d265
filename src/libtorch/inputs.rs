//! Dummy input tensors for tracing and verifying, made from [`InputSpec`]s.

use super::{kind, tch_device};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::input::{InputSpec, InputValues, INPUT_SEED};
use tch::Tensor;

/// The tensor (on the CPU) of `spec`, filled from the generator seeded with `seed`.
pub fn tensor(spec: &InputSpec, seed: u64) -> Result<Tensor> {
    let kind = kind(spec.kind).ok_or_else(|| {
        Error::invalid(
            "input",
            format!(
                "{spec}: libtorch has no tensor type for {}",
                spec.kind.name()
            ),
        )
    })?;
    let t = match spec.values(seed)? {
        InputValues::Int(v) => Tensor::from_slice(&v),
        InputValues::Float(v) => Tensor::from_slice(&v),
    };
    Ok(t.reshape(&spec.shape).to_kind(kind))
}

/// Builds the inputs for `specs` on `device`, input `i` seeded with `INPUT_SEED + i`.
pub fn make_inputs(specs: &[InputSpec], device: Device) -> Result<Vec<Tensor>> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| Ok(tensor(s, INPUT_SEED + i as u64)?.to_device(tch_device(device))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn tensors_have_the_dtype_shape_and_seeded_values() {
        let s: InputSpec = "4x8:i64:3-7".parse().unwrap();
        let a = tensor(&s, 1).unwrap();
        assert_eq!(a.kind(), Kind::Int64);
        assert_eq!(a.size(), vec![4, 8]);
        assert!(a.min().int64_value(&[]) >= 3 && a.max().int64_value(&[]) < 7);
        assert!(a.equal(&tensor(&s, 1).unwrap()));
        let h: InputSpec = "2x3:f16".parse().unwrap();
        assert_eq!(tensor(&h, 0).unwrap().kind(), Kind::Half);
    }
}
