#![no_main]
//! The torch.save zip reader: central directory, data.pkl, state dict search.
use libfuzzer_sys::fuzz_target;
use weightmap_fuzz::read::torch_zip;

fuzz_target!(|data: &[u8]| {
    let path = weightmap_fuzz::scratch("input.pth", data);
    if let Ok(archive) = torch_zip::open(&path, None) {
        let _ = archive.to_spec();
    }
});
