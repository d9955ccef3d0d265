#![no_main]
//! The mapping JSON reader, resolved against a small source and target (transforms, shape
//! arithmetic, duplicate checks).
use libfuzzer_sys::fuzz_target;
use weightmap_fuzz::apply::Mapping;
use weightmap_fuzz::spec::{Format, ModelSpec, TensorInfo, TensorKind};

fn spec(names: &[(&str, &[i64])]) -> ModelSpec {
    let tensors = names
        .iter()
        .enumerate()
        .map(|(i, (n, s))| TensorInfo::new(n, s.to_vec(), "float32", TensorKind::Unknown, i))
        .collect();
    ModelSpec::new("fuzz", Format::SpecJson, tensors)
}

fuzz_target!(|data: &[u8]| {
    let path = weightmap_fuzz::scratch("mapping.json", data);
    let Ok(mapping) = Mapping::load(&path) else {
        return;
    };
    let source = spec(&[
        ("a.w", &[128, 32]),
        ("a.b", &[32]),
        ("c", &[4, 8, 1, 1]),
        ("s", &[]),
    ]);
    let target = spec(&[
        ("x.w", &[32, 128]),
        ("x.b", &[32]),
        ("y", &[4, 8]),
        ("z", &[4096]),
    ]);
    let _ = mapping.resolve(&source, None, "fuzz");
    let _ = mapping.resolve(&source, Some(&target), "fuzz");
    let _ = Mapping::from_json(&mapping.to_json());
});
