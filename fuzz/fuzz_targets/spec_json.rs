#![no_main]
//! The model spec JSON reader.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = weightmap_fuzz::scratch("spec.json", data);
    let _ = weightmap_fuzz::read::read_spec_json(&path);
});
