#![no_main]
//! Writers' round trip: a safetensors input the reader accepts is written by apply (as
//! safetensors and as a torch.save zip, every tensor renamed), and both outputs read back
//! with the same names, shapes, dtypes and bytes.
use libfuzzer_sys::fuzz_target;
use weightmap_fuzz::apply::{self, data::TensorData, ApplyOptions, Mapping, MappingEntry};
use weightmap_fuzz::read::{safetensors, torch_zip};
use weightmap_fuzz::spec::ModelSpec;

/// Inputs larger than this are skipped: the round trip copies every byte.
const MAX_INPUT: usize = 1 << 20;

fn contents(spec: &ModelSpec) -> Vec<(String, Vec<i64>, String, Vec<u8>)> {
    let data = TensorData::open(spec).expect("open written file");
    spec.tensors
        .iter()
        .map(|t| {
            let bytes = data.read(t).expect("read written tensor");
            (
                t.original_name.clone(),
                t.shape.clone(),
                t.dtype.clone(),
                bytes,
            )
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    let path = weightmap_fuzz::scratch("source.safetensors", data);
    let Ok(source) = safetensors::read(&path) else {
        return;
    };
    let Ok(source_data) = TensorData::open(&source) else {
        return;
    };
    let mut want = Vec::new();
    for t in &source.tensors {
        let Ok(bytes) = source_data.read(t) else {
            return;
        };
        want.push((
            format!("renamed.{}", t.original_name),
            t.shape.clone(),
            t.dtype.clone(),
            bytes,
        ));
    }
    let mapping = Mapping {
        entries: source
            .tensors
            .iter()
            .map(|t| MappingEntry {
                source: t.original_name.clone(),
                target: format!("renamed.{}", t.original_name),
                transform: None,
            })
            .collect(),
        conversions: vec![],
    };
    let options = ApplyOptions {
        force: true,
        allow_empty: true,
        ..Default::default()
    };
    let dir = weightmap_fuzz::scratch_dir();
    for out in ["out.safetensors", "out.pth"] {
        let out = dir.join(out);
        let Ok(_) = apply::apply(&source, &mapping, None, &out, &options, "fuzz") else {
            // Refusals (an unsupported dtype, say) are fine; a written file must read back.
            continue;
        };
        let back = if out.extension().unwrap() == "pth" {
            torch_zip::read(&out, None)
        } else {
            safetensors::read(&out)
        }
        .unwrap_or_else(|e| panic!("apply wrote {} that does not read back: {e}", out.display()));
        let mut got = contents(&back);
        let mut want = want.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{} differs from its source", out.display());
    }
});
