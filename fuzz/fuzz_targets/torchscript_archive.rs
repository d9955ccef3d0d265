#![no_main]
//! The TorchScript archive pre-check (zip entries, pickles, code nesting), and the code
//! scanner on raw bytes.
use libfuzzer_sys::fuzz_target;
use weightmap_fuzz::read::torchscript_archive;

fuzz_target!(|data: &[u8]| {
    let path = weightmap_fuzz::scratch("input.pt", data);
    let _ = torchscript_archive::check(&path);
    let _ = torchscript_archive::check_code(data);
});
