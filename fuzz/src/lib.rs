//! weightmap's pure-Rust readers and writers, compiled from ../src by path, and the
//! helpers the fuzz targets share. `crate::` paths in the included files resolve here as
//! in the main crate.
#![allow(dead_code, unused_imports, clippy::all)]

#[path = "../../src/dtype.rs"]
pub mod dtype;
#[path = "../../src/error.rs"]
pub mod error;
#[path = "../../src/output.rs"]
pub mod output;
#[path = "../../src/progress.rs"]
pub mod progress;
#[path = "../../src/spec.rs"]
pub mod spec;

pub use error::{Error, Result};

/// `crate::format` of the main crate: every file format, read and write.
#[path = "../../src/format/mod.rs"]
pub mod format;

// The read-stage modules that need no libtorch, gathered under `read` for `crate::read::`
// paths, with the formats the targets call by their old names.
#[path = "../../src/read/spec_json.rs"]
pub mod spec_json;
#[path = "../../src/read/torchscript_archive.rs"]
pub mod torchscript_archive;

/// `crate::read` of the main crate (its libtorch-free part).
pub mod read {
    pub use super::format::{pickle, safetensors, torch_zip};
    pub use super::spec_json::read_spec_json;
    pub use super::{spec_json, torchscript_archive};
}

#[path = "../../src/apply/mod.rs"]
pub mod apply;
#[path = "../../src/mapping/mod.rs"]
pub mod mapping;

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
