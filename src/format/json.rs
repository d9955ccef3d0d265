//! JSON files: bounded reads and atomic writes (model specs, sharded-safetensors indexes,
//! execution orders, mappings, reports).

use crate::error::{Error, Result};
use crate::output::OutputFile;
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// Largest JSON file (index or model spec) read whole; model specs of 100k tensors are ~30 MB.
pub const MAX_JSON_BYTES: u64 = 1 << 30;

/// Reads a JSON file whole, bounded by [`MAX_JSON_BYTES`].
pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if len > MAX_JSON_BYTES {
        return Err(Error::corrupt(
            path,
            "JSON",
            format!("{len} bytes is larger than the {MAX_JSON_BYTES}-byte limit"),
        ));
    }
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&text).map_err(|e| Error::corrupt(path, "JSON", e.to_string()))
}

/// Writes `value` as pretty JSON (and a final newline) to `path`, through a temporary file
/// renamed into place: no partial file on failure. An existing `path` is replaced.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut out = OutputFile::create(path, &[], true)?;
    let mut writer = std::io::BufWriter::new(out.file());
    serde_json::to_writer_pretty(&mut writer, value).map_err(|e| Error::io(path, e.into()))?;
    writer.write_all(b"\n").map_err(|e| Error::io(path, e))?;
    writer.flush().map_err(|e| Error::io(path, e))?;
    drop(writer);
    out.commit()
}
