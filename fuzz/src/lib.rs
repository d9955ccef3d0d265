//! weightmap's pure-Rust readers and writers, compiled from ../src by path, and the
//! helpers the fuzz targets share. `crate::` paths in the included files resolve here as
//! in the main crate.
#![allow(dead_code, unused_imports, clippy::all)]

#[path = "../../src/error.rs"]
pub mod error;
#[path = "../../src/progress.rs"]
pub mod progress;
#[path = "../../src/spec.rs"]
pub mod spec;

pub use error::{Error, Result};

// The read modules that need no libtorch (`src/read/`, less TorchScript loading), at the
// root so that their `super::` paths resolve, and gathered under `read` for `crate::read::`.
#[path = "../../src/read/pickle.rs"]
pub mod pickle;
#[path = "../../src/read/safetensors.rs"]
pub mod safetensors;
#[path = "../../src/read/spec_json.rs"]
pub mod spec_json;
#[path = "../../src/read/strict_json.rs"]
pub mod strict_json;
#[path = "../../src/read/torch_zip.rs"]
pub mod torch_zip;
#[path = "../../src/read/torchscript_archive.rs"]
pub mod torchscript_archive;
pub(crate) use strict_json::read_json;

/// `crate::read` of the main crate.
pub mod read {
    pub use super::spec_json::read_spec_json;
    pub(crate) use super::strict_json::read_json;
    pub use super::{pickle, safetensors, spec_json, strict_json, torch_zip, torchscript_archive};
}

#[path = "../../src/apply/mod.rs"]
pub mod apply;

use std::path::PathBuf;

/// Writes `data` to a file named `name` in this process's scratch folder (in /dev/shm when
/// there is one, so that the fuzzer does not wear the disk); its path.
pub fn scratch(name: &str, data: &[u8]) -> PathBuf {
    let dir = scratch_dir();
    let path = dir.join(name);
    std::fs::write(&path, data).expect("write scratch file");
    path
}

/// This process's scratch folder, made once.
pub fn scratch_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("weightmap-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        dir
    })
    .clone()
}
