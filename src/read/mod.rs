//! The read stage: turns a file of any supported format into a [`ModelSpec`] without
//! reading tensor data.
//!
//! The format is detected from the content, never from the extension:
//! a zip with `data.pkl` is a `torch.save` checkpoint, a zip with `constants.pkl` or
//! `code/` is a TorchScript archive, an 8-byte length followed by `{` is safetensors,
//! and JSON is either a sharded-safetensors index (`weight_map`) or a model spec.

mod spec_json;
pub mod torchscript;
pub mod torchscript_archive;
mod torchscript_pickle;

pub use spec_json::read_spec_json;
pub use torchscript::script_module;

use crate::error::{Error, Result};
use crate::format::json::read_json_kind;
use crate::format::{safetensors, torch_zip};
use crate::spec::{Format, ModelSpec};
use std::io::Read;
use std::path::Path;

/// Options for reading a model.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Pick this nested dict as the state dict instead of the detected one
    /// (e.g. `state_dict_ema`). Dotted paths reach deeper dicts (`model.ema`).
    pub state_dict_key: Option<String>,
    /// Keep wrapper prefixes (`module.`, `_orig_mod.`, ...) instead of stripping them
    /// (the normalize stage's `read_model` strips them).
    pub keep_prefixes: bool,
}

/// Size of the prefix read to detect a file's format.
const SNIFF_BYTES: usize = 64;

/// Detects the format of `path` from its first bytes and, for zips, its entry names.
pub fn detect_format(path: &Path) -> Result<Format> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::UnknownFormat {
            path: path.into(),
            message: "is a directory; give a checkpoint, a TorchScript model, a safetensors file or its *.safetensors.index.json".into(),
        });
    }
    if !meta.is_file() {
        // A FIFO, a device (/dev/zero) or a socket has no length to bound reads by and
        // may never end; none of them is a checkpoint.
        return Err(Error::UnknownFormat {
            path: path.into(),
            message: "not a regular file (a FIFO, device or socket); give a checkpoint file".into(),
        });
    }
    if meta.len() == 0 {
        return Err(Error::UnknownFormat {
            path: path.into(),
            message: "the file is empty".into(),
        });
    }
    let mut head = vec![0u8; SNIFF_BYTES.min(meta.len() as usize)];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| Error::io(path, e))?;

    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return torch_zip::classify_zip(path);
    }
    if head.len() >= 9 && head[8] == b'{' {
        let n = u64::from_le_bytes(head[..8].try_into().unwrap());
        if n >= 2 && n <= meta.len() - 8 {
            return Ok(Format::Safetensors);
        }
        return Err(Error::corrupt(
            path,
            "safetensors",
            format!("header declares {n} bytes but the file has {} after the length prefix (truncated?)", meta.len() - 8),
        ));
    }
    let first = head.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if first == Some(b'{') {
        return json_kind(path);
    }
    if head.starts_with(&[0x80]) && head.len() > 1 && (2..=5).contains(&head[1]) {
        return Ok(Format::TorchLegacy);
    }
    Err(Error::UnknownFormat {
        path: path.into(),
        message: "not a torch.save checkpoint, TorchScript archive, safetensors file, safetensors index or model spec JSON".into(),
    })
}

fn json_kind(path: &Path) -> Result<Format> {
    let kind = read_json_kind(path)?;
    if kind.weight_map {
        Ok(Format::SafetensorsSharded)
    } else if kind.tensors_list {
        Ok(Format::SpecJson)
    } else {
        Err(Error::UnknownFormat {
            path: path.into(),
            message: "JSON but neither a safetensors index (no \"weight_map\") nor a model spec (no \"tensors\" list)".into(),
        })
    }
}

/// Reads `path` into a model spec (names, shapes, dtypes, order) with the names as the
/// file writes them; the normalize stage's `read_model` also strips wrapper prefixes.
pub fn read_raw(path: &Path, options: &ReadOptions) -> Result<ModelSpec> {
    let format = detect_format(path)?;
    if let (Some(key), false) = (&options.state_dict_key, matches!(format, Format::TorchZip)) {
        return Err(Error::invalid(
            "--state-dict-key",
            format!(
                "'{key}' given, but {} is {} with one flat state dict; drop the option",
                path.display(),
                format.name()
            ),
        ));
    }
    let spec = match format {
        Format::TorchZip => torch_zip::read(path, options.state_dict_key.as_deref())?,
        Format::TorchLegacy => {
            return Err(Error::Unsupported {
                path: path.into(),
                message: "legacy (pre-1.6, non-zip) torch.save format; re-save it with torch.save(torch.load(f), f2) in a recent PyTorch".into(),
            })
        }
        Format::Safetensors => safetensors::read(path)?,
        Format::SafetensorsSharded => safetensors::read_sharded(path)?,
        Format::TorchScript => torchscript::read(path)?,
        Format::SpecJson => read_spec_json(path)?,
    };
    Ok(spec)
}
