//! Element types: one table that every format and the libtorch layer translate through
//! (torch's names, the short names `--input` takes, safetensors' codes, `torch.save`'s
//! legacy storage classes, element sizes).
//!
//! Sources: torch's dtype names (`torch/_tensor_str.py` prints them), safetensors' `Dtype`
//! enum (`safetensors/src/tensor.rs`), and `_dtype_to_storage_type_map` in
//! `torch/storage.py`.

/// One element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// `float64`.
    F64,
    /// `float32`.
    F32,
    /// `float16`.
    F16,
    /// `bfloat16`.
    BF16,
    /// `int64`.
    I64,
    /// `int32`.
    I32,
    /// `int16`.
    I16,
    /// `int8`.
    I8,
    /// `uint64`.
    U64,
    /// `uint32`.
    U32,
    /// `uint16`.
    U16,
    /// `uint8`.
    U8,
    /// `bool`.
    Bool,
    /// `float8_e4m3fn`.
    F8E4M3,
    /// `float8_e5m2`.
    F8E5M2,
    /// `float8_e8m0fnu`.
    F8E8M0,
    /// `float8_e4m3fnuz`.
    F8E4M3Fnuz,
    /// `float8_e5m2fnuz`.
    F8E5M2Fnuz,
    /// `complex64`.
    C64,
    /// `complex128`.
    C128,
}

/// A row of [`TABLE`]: the dtype, torch's name, other accepted names, the safetensors
/// code, the legacy storage class, the element size in bytes.
type Row = (
    DType,
    &'static str,
    &'static [&'static str],
    Option<&'static str>,
    Option<&'static str>,
    usize,
);

/// Every dtype's row.
const TABLE: &[Row] = &[
    (
        DType::F64,
        "float64",
        &["f64", "double"],
        Some("F64"),
        Some("DoubleStorage"),
        8,
    ),
    (
        DType::F32,
        "float32",
        &["f32", "float"],
        Some("F32"),
        Some("FloatStorage"),
        4,
    ),
    (
        DType::F16,
        "float16",
        &["f16", "half"],
        Some("F16"),
        Some("HalfStorage"),
        2,
    ),
    (
        DType::BF16,
        "bfloat16",
        &["bf16"],
        Some("BF16"),
        Some("BFloat16Storage"),
        2,
    ),
    (
        DType::I64,
        "int64",
        &["i64", "long"],
        Some("I64"),
        Some("LongStorage"),
        8,
    ),
    (
        DType::I32,
        "int32",
        &["i32", "int"],
        Some("I32"),
        Some("IntStorage"),
        4,
    ),
    (
        DType::I16,
        "int16",
        &["i16", "short"],
        Some("I16"),
        Some("ShortStorage"),
        2,
    ),
    (
        DType::I8,
        "int8",
        &["i8"],
        Some("I8"),
        Some("CharStorage"),
        1,
    ),
    (DType::U64, "uint64", &["u64"], Some("U64"), None, 8),
    (DType::U32, "uint32", &["u32"], Some("U32"), None, 4),
    (DType::U16, "uint16", &["u16"], Some("U16"), None, 2),
    (
        DType::U8,
        "uint8",
        &["u8", "byte"],
        Some("U8"),
        Some("ByteStorage"),
        1,
    ),
    (
        DType::Bool,
        "bool",
        &[],
        Some("BOOL"),
        Some("BoolStorage"),
        1,
    ),
    (
        DType::F8E4M3,
        "float8_e4m3fn",
        &[],
        Some("F8_E4M3"),
        None,
        1,
    ),
    (DType::F8E5M2, "float8_e5m2", &[], Some("F8_E5M2"), None, 1),
    (
        DType::F8E8M0,
        "float8_e8m0fnu",
        &[],
        Some("F8_E8M0"),
        None,
        1,
    ),
    (DType::F8E4M3Fnuz, "float8_e4m3fnuz", &[], None, None, 1),
    (DType::F8E5M2Fnuz, "float8_e5m2fnuz", &[], None, None, 1),
    (
        DType::C64,
        "complex64",
        &[],
        Some("C64"),
        Some("ComplexFloatStorage"),
        8,
    ),
    (
        DType::C128,
        "complex128",
        &[],
        None,
        Some("ComplexDoubleStorage"),
        16,
    ),
];

impl DType {
    fn row(self) -> &'static Row {
        TABLE
            .iter()
            .find(|r| r.0 == self)
            .expect("every DType has a row")
    }

    /// Parses torch's name or a short name (`float32`, `f32`, `int64`, `i64`, `half`...),
    /// in any case.
    pub fn parse(name: &str) -> Option<DType> {
        let name = name.trim().to_ascii_lowercase();
        TABLE
            .iter()
            .find(|r| r.1 == name || r.2.contains(&name.as_str()))
            .map(|r| r.0)
    }

    /// Torch's name (`float32`).
    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// The short name (`f32`), or torch's name where there is none.
    pub fn short_name(self) -> &'static str {
        self.row().2.first().copied().unwrap_or(self.row().1)
    }

    /// The safetensors code (`F32`), if safetensors has one.
    pub fn safetensors_code(self) -> Option<&'static str> {
        self.row().3
    }

    /// The dtype of a safetensors code.
    pub fn from_safetensors_code(code: &str) -> Option<DType> {
        TABLE.iter().find(|r| r.3 == Some(code)).map(|r| r.0)
    }

    /// The legacy storage class `torch.save` names (`FloatStorage`), if there is one.
    pub fn storage_class(self) -> Option<&'static str> {
        self.row().4
    }

    /// The dtype of a storage class; `UntypedStorage` holds bytes.
    pub fn from_storage_class(class: &str) -> Option<DType> {
        if class == "UntypedStorage" {
            return Some(DType::U8);
        }
        TABLE.iter().find(|r| r.4 == Some(class)).map(|r| r.0)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        self.row().5
    }

    /// Integer or bool (values are counts or indices, not measurements).
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            DType::I64
                | DType::I32
                | DType::I16
                | DType::I8
                | DType::U64
                | DType::U32
                | DType::U16
                | DType::U8
                | DType::Bool
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_every_table() {
        for row in TABLE {
            let d = row.0;
            assert_eq!(DType::parse(d.name()), Some(d));
            assert_eq!(DType::parse(d.short_name()), Some(d));
            if let Some(code) = d.safetensors_code() {
                assert_eq!(DType::from_safetensors_code(code), Some(d));
            }
            if let Some(class) = d.storage_class() {
                assert_eq!(DType::from_storage_class(class), Some(d));
            }
        }
        assert_eq!(DType::parse("LONG"), Some(DType::I64));
        assert_eq!(DType::from_storage_class("UntypedStorage"), Some(DType::U8));
        assert_eq!(DType::parse("f99"), None);
    }
}
