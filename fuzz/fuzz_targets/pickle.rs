#![no_main]
//! The pickle machine: any bytes give a tree or an error, within the limits.
use libfuzzer_sys::fuzz_target;
use weightmap_fuzz::read::{pickle, torchscript_archive};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = pickle::parse(data) {
        let _ = p.type_name(p.root());
    }
    let _ = torchscript_archive::check_pickle(data);
});
