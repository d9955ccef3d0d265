#![no_main]
//! The safetensors header reader.
use libfuzzer_sys::fuzz_target;
use weightmap_fuzz::read::safetensors;

fuzz_target!(|data: &[u8]| {
    let path = weightmap_fuzz::scratch("input.safetensors", data);
    let _ = safetensors::read(&path);
});
