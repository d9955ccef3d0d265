//! Lightning-style checkpoints written back as `torch.save` archives: only the renamed
//! state-dict key strings in `data.pkl` change; every other entry (optimizer states,
//! hyper-parameters, callbacks, loops, epoch) and every storage record is copied as it is.
//!
//! The key strings are re-encoded in place by [`crate::format::pickle::rewrite_strings`],
//! which keeps the pickle's memo intact; the zip entries are copied byte for byte with
//! their CRCs, in file order, re-aligned as `torch.save` aligns them.

use super::{ApplySummary, TensorData};
use crate::error::{Error, Result};
use crate::format::zip_writer::ZipWriter;
use crate::format::{pickle, torch_zip};
use crate::mapping::ResolvedEntry;
use crate::output::OutputFile;
use crate::spec::ModelSpec;
use std::collections::{HashMap, HashSet};

const FORMAT: &str = "torch.save zip";

/// Writes `source` with the state-dict keys of `resolved` renamed to `out`.
pub(super) fn write(
    source: &ModelSpec,
    resolved: &[ResolvedEntry],
    data: &TensorData,
    out: &mut OutputFile,
) -> Result<ApplySummary> {
    let path = std::path::Path::new(&source.path);
    if let Some(e) = resolved.iter().find(|e| e.transform.is_some()) {
        return Err(Error::Unsupported {
            path: path.into(),
            message: format!(
                "'{}' has a transform ({}), but a checkpoint written back as .pth/.ckpt keeps every storage as it is; write the state dict to .safetensors instead",
                source.tensors[e.source_index].original_name,
                e.transform.as_ref().map(|t| t.describe()).unwrap_or_default()
            ),
        });
    }
    let key = source
        .state_dict_key
        .as_deref()
        .unwrap_or(torch_zip::TOP_LEVEL_KEY);
    let archive = torch_zip::open(path, Some(key))?;
    let (Some((fi, layout)), true) = (
        &data.zip,
        archive.byteorder.as_deref().unwrap_or("little") == "little",
    ) else {
        return Err(Error::Unsupported {
            path: path.into(),
            message: "only little-endian torch.save archives can be rewritten".into(),
        });
    };
    let spans: HashMap<&str, &torch_zip::StateDictEntry> = archive
        .tensors
        .iter()
        .map(|t| (t.key.as_str(), t))
        .collect();

    let mut edits = Vec::with_capacity(resolved.len());
    let mut renamed_keys = HashSet::new();
    for e in resolved {
        let key = &source.tensors[e.source_index].original_name;
        let entry = spans.get(key.as_str()).ok_or_else(|| {
            Error::corrupt(
                path,
                FORMAT,
                format!("state-dict key '{key}' is not in the archive's state dict"),
            )
        })?;
        let span = entry.key_span.clone().ok_or_else(|| Error::Unsupported {
            path: path.into(),
            message: format!("state-dict key '{key}' is not a plain string in data.pkl and cannot be renamed in place; write to .safetensors"),
        })?;
        if key != &e.target {
            edits.push((span, e.target.clone()));
        }
        renamed_keys.insert(key.as_str());
    }
    // A new name equal to a key that stays would make two entries of one dict.
    let targets: HashSet<&str> = resolved.iter().map(|e| e.target.as_str()).collect();
    if let Some(clash) = archive
        .tensors
        .iter()
        .find(|t| !renamed_keys.contains(t.key.as_str()) && targets.contains(t.key.as_str()))
    {
        return Err(Error::invalid(
            "mapping",
            format!("'{}' is a target name and also an unmapped key of {}'s state dict, which stays; map that key too", clash.key, source.path),
        ));
    }
    let rewrite = pickle::rewrite_strings(&archive.data_pkl, &edits)
        .map_err(|e| Error::corrupt(path, FORMAT, format!("data.pkl: {e}")))?;

    let pkl_name = archive.layout.entry_name("data.pkl");
    let dest = out.dest().to_path_buf();
    let io = |e: std::io::Error| Error::io(&dest, e);
    // Entries in file order, folders (which torch.save never writes) left out.
    let mut entries: Vec<_> = layout
        .entries
        .iter()
        .filter(|e| !e.name.ends_with('/'))
        .collect();
    entries.sort_by_key(|e| e.data_start);
    let total: u64 = entries.iter().map(|e| e.size).sum();
    let progress = crate::progress::Progress::bytes(total, "writing");
    let mut zip = ZipWriter::new(out.file());
    for record in entries {
        let name = &record.name;
        if *name == pkl_name {
            zip.write_entry(name, &rewrite.data).map_err(io)?;
        } else {
            zip.start_entry(name, record.size).map_err(io)?;
            data.copy_range(*fi, record.data_start, record.size, zip.file(), &dest, None)?;
            zip.finish_entry(record.crc32).map_err(io)?;
        }
        progress.inc(record.size);
    }
    zip.finish().map_err(io)?;
    progress.finish();
    Ok(ApplySummary {
        output: dest.clone(),
        format: "pth",
        renamed: resolved.len(),
        transformed: 0,
        conversions: 0,
        converted: 0,
        kept: source.tensors.len() - resolved.len(),
        dropped: 0,
        preserved_checkpoint: true,
        bytes: 0,
    })
}
