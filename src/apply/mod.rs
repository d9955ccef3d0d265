//! The apply stage: writes the adapted checkpoint, every mapped tensor under its target
//! name, as safetensors or as a `torch.save` archive that `torch.load(weights_only=True)`
//! reads.
//!
//! Plain renames never hold a tensor in memory: bytes go from the source file to the
//! output in bounded chunks (or file to file in the kernel). Only transformed tensors and
//! strided views are read whole, one at a time. The output is written to a temporary file
//! beside it and renamed into place when complete ([`crate::output::OutputFile`]).
//!
//! A Lightning-style checkpoint (the state dict nested under a key, beside optimizer
//! states, hyper-parameters, callbacks) written back as `.ckpt`/`.pth` keeps everything but
//! the renamed state-dict keys as it was: only the key strings in `data.pkl` change, every
//! storage record is copied as it is ([`preserve`]).

mod convert;
pub mod data;
mod preserve;

pub use crate::mapping::{
    Conversion, ConversionKind, Mapping, MappingEntry, ResolvedEntry, Transform,
};
pub use data::TensorData;

use crate::error::{Error, Result};
use crate::format::pickle_writer::{self, storage_class, TensorEntry};
use crate::format::zip_writer::ZipWriter;
use crate::output::OutputFile;
use crate::spec::{dtype_size, DataLocation, Format, ModelSpec};
use data::{Bytes, CHUNK_BYTES};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The format of the written checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// A safetensors file.
    Safetensors,
    /// A `torch.save` zip archive (`.pth`, `.pt`, `.bin`, `.ckpt`).
    Pth,
}

impl OutputFormat {
    /// The format named by `--format` (`safetensors`, `pth`).
    pub fn parse(name: &str) -> Result<OutputFormat> {
        match name {
            "safetensors" => Ok(OutputFormat::Safetensors),
            "pth" | "pt" | "torch" => Ok(OutputFormat::Pth),
            _ => Err(Error::invalid(
                "--format",
                format!("'{name}'; accepted: safetensors, pth"),
            )),
        }
    }

    /// The format an output path's extension implies: `.safetensors`, or `.pth`, `.pt`,
    /// `.bin`, `.ckpt`.
    pub fn from_path(path: &Path) -> Result<OutputFormat> {
        match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
            Some("safetensors") => Ok(OutputFormat::Safetensors),
            Some("pth" | "pt" | "bin" | "ckpt") => Ok(OutputFormat::Pth),
            _ => Err(Error::invalid(
                "output",
                format!(
                    "cannot tell the format from the name {}; use .safetensors, .pth, .pt, .bin or .ckpt, or pass --format",
                    path.display()
                ),
            )),
        }
    }

    /// The name used in summaries.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Safetensors => "safetensors",
            OutputFormat::Pth => "pth",
        }
    }
}

/// Options of [`apply`].
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// The output format; `None` takes it from the output's extension.
    pub format: Option<OutputFormat>,
    /// Write unmapped source tensors too, under their names as stored.
    pub keep_unmapped: bool,
    /// Overwrite an existing output.
    pub force: bool,
    /// Write the output even when the mapping maps nothing (a checkpoint of unmapped or no
    /// tensors); without it an empty mapping is refused, as it is most likely a mistake.
    pub allow_empty: bool,
}

/// What [`apply`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApplySummary {
    /// The written file.
    pub output: PathBuf,
    /// Its format name.
    pub format: &'static str,
    /// Tensors written under a new name, data unchanged.
    pub renamed: usize,
    /// Tensors written under a new name with their data transformed.
    pub transformed: usize,
    /// Conversions executed (split, concat, stack, ...).
    pub conversions: usize,
    /// Target tensors the conversions wrote.
    pub converted: usize,
    /// Unmapped tensors written under their own names.
    pub kept: usize,
    /// Unmapped tensors left out.
    pub dropped: usize,
    /// True when the source's other entries (optimizer states, hyper-parameters, ...) were
    /// carried over unchanged (Lightning-style checkpoints written as `.pth`/`.ckpt`).
    pub preserved_checkpoint: bool,
    /// Size of the written file in bytes.
    pub bytes: u64,
}

/// One tensor of the output.
#[derive(Debug, Clone)]
struct OutTensor {
    name: String,
    recipe: Recipe,
    dtype: String,
    shape: Vec<i64>,
}

impl OutTensor {
    fn nbytes(&self) -> u64 {
        self.shape.iter().product::<i64>().max(0) as u64 * dtype_size(&self.dtype) as u64
    }
}

/// Where an output tensor's bytes come from.
#[derive(Debug, Clone)]
enum Recipe {
    /// One source tensor, transformed or not.
    Copy {
        source: usize,
        transform: Option<Transform>,
    },
    /// Output `part` of resolved conversion `conversion`.
    Convert { conversion: usize, part: usize },
}

/// Writes `source`'s tensors under the names of `mapping` to `out`. With `target`, every
/// mapped name must exist there with the same shape (after the transform).
pub fn apply(
    source: &ModelSpec,
    mapping: &Mapping,
    target: Option<&ModelSpec>,
    out: &Path,
    options: &ApplyOptions,
    mapping_context: &str,
) -> Result<ApplySummary> {
    let format = match options.format {
        Some(f) => f,
        None => OutputFormat::from_path(out)?,
    };
    let crate::mapping::Resolved {
        entries: resolved,
        conversions,
    } = mapping.resolve(source, target, mapping_context)?;
    if resolved.is_empty() && conversions.is_empty() && !options.allow_empty {
        return Err(Error::invalid(
            "mapping",
            format!(
                "{mapping_context} maps no tensor, so the output would hold none of the target's names; check the mapping, or pass --allow-empty to write it anyway"
            ),
        ));
    }
    let data = TensorData::open(source)?;
    // The data files, and the file the spec was read from (a sharded index).
    let mut inputs: Vec<PathBuf> = data.files.iter().map(|(p, _)| p.clone()).collect();
    inputs.push(PathBuf::from(&source.path));
    let input_refs: Vec<&Path> = inputs.iter().map(|p| p.as_path()).collect();

    if format == OutputFormat::Pth
        && source.format == Format::TorchZip
        && source.state_dict_key.is_some()
    {
        if let Some(c) = conversions.first() {
            return Err(Error::Unsupported {
                path: out.into(),
                message: format!(
                    "{mapping_context} has {} conversion(s) (e.g. {}); a checkpoint written back as .pth/.ckpt keeps its other entries and can only rename its state-dict keys: write the converted weights to .safetensors instead (-o {})",
                    conversions.len(),
                    c.conversion.describe(),
                    out.with_extension("safetensors").display()
                ),
            });
        }
        let mut file = OutputFile::create(out, &input_refs, options.force)?;
        let mut summary = preserve::write(source, &resolved, &data, &mut file)?;
        summary.output = out.to_path_buf();
        summary.bytes = file.file().metadata().map_err(|e| Error::io(out, e))?.len();
        file.commit()?;
        return Ok(summary);
    }

    let mut by_source: HashMap<usize, &ResolvedEntry> = HashMap::new();
    for e in &resolved {
        by_source.insert(e.source_index, e);
    }
    // A conversion's outputs are written where its first source was, the other sources
    // of it are consumed.
    let mut conversion_of: HashMap<usize, (usize, bool)> = HashMap::new();
    for (ci, c) in conversions.iter().enumerate() {
        for (k, &si) in c.sources.iter().enumerate() {
            conversion_of.insert(si, (ci, k == 0));
        }
    }
    let mut tensors = Vec::with_capacity(source.tensors.len());
    let (mut renamed, mut transformed, mut kept, mut dropped, mut converted) = (0, 0, 0, 0, 0);
    for (i, t) in source.tensors.iter().enumerate() {
        if let Some(&(ci, first)) = conversion_of.get(&i) {
            if first {
                let c = &conversions[ci];
                for (part, (name, shape)) in c
                    .conversion
                    .targets
                    .iter()
                    .zip(c.target_shapes())
                    .enumerate()
                {
                    converted += 1;
                    tensors.push(OutTensor {
                        name: name.clone(),
                        recipe: Recipe::Convert {
                            conversion: ci,
                            part,
                        },
                        dtype: c.dtype.clone(),
                        shape,
                    });
                }
            }
            continue;
        }
        match by_source.get(&i) {
            Some(e) => {
                if e.transform.is_some() {
                    transformed += 1;
                } else {
                    renamed += 1;
                }
                tensors.push(OutTensor {
                    name: e.target.clone(),
                    recipe: Recipe::Copy {
                        source: i,
                        transform: e.transform.clone(),
                    },
                    dtype: t.dtype.clone(),
                    shape: e.shape.clone(),
                });
            }
            None if options.keep_unmapped => {
                kept += 1;
                tensors.push(OutTensor {
                    name: t.original_name.clone(),
                    recipe: Recipe::Copy {
                        source: i,
                        transform: None,
                    },
                    dtype: t.dtype.clone(),
                    shape: t.shape.clone(),
                });
            }
            None => dropped += 1,
        }
    }
    let mut names = HashSet::new();
    for t in &tensors {
        if !names.insert(t.name.as_str()) {
            return Err(Error::invalid(
                "mapping",
                format!(
                    "{mapping_context}: '{}' is both a mapped target name and an unmapped source tensor kept by --keep-unmapped; drop --keep-unmapped or map it elsewhere",
                    t.name
                ),
            ));
        }
    }
    for t in &tensors {
        let supported = match format {
            OutputFormat::Safetensors => {
                crate::format::safetensors::safetensors_dtype(&t.dtype).is_some()
            }
            OutputFormat::Pth => storage_class(&t.dtype).is_some(),
        };
        if !supported || dtype_size(&t.dtype) == 0 {
            return Err(Error::Unsupported {
                path: out.into(),
                message: format!(
                    "tensor '{}': dtype {} cannot be written as {}",
                    t.name,
                    t.dtype,
                    format.name()
                ),
            });
        }
    }
    let job = Job {
        source,
        data: &data,
        conversions: &conversions,
    };

    let mut file = OutputFile::create(out, &input_refs, options.force)?;
    match format {
        OutputFormat::Safetensors => write_safetensors(&job, &tensors, &mut file)?,
        OutputFormat::Pth => write_pth(&job, &tensors, &mut file)?,
    }
    let bytes = file.file().metadata().map_err(|e| Error::io(out, e))?.len();
    file.commit()?;
    Ok(ApplySummary {
        output: out.to_path_buf(),
        format: format.name(),
        renamed,
        transformed,
        conversions: conversions.len(),
        converted,
        kept,
        dropped,
        preserved_checkpoint: false,
        bytes,
    })
}

/// The bytes of `data` (row-major, `shape`) after `transform`.
pub fn transform_bytes(
    data: Vec<u8>,
    shape: &[i64],
    element_size: usize,
    transform: &Transform,
) -> Vec<u8> {
    match transform {
        // Same elements, same order: only the header changes.
        Transform::Reshape(_) => data,
        Transform::Transpose => {
            let (rows, cols) = (shape[0] as usize, shape[1] as usize);
            let mut out = vec![0u8; data.len()];
            for r in 0..rows {
                for c in 0..cols {
                    let from = (r * cols + c) * element_size;
                    let to = (c * rows + r) * element_size;
                    out[to..to + element_size].copy_from_slice(&data[from..from + element_size]);
                }
            }
            out
        }
    }
}

/// What the writers read from: the source, its data, the resolved conversions.
struct Job<'a> {
    source: &'a ModelSpec,
    data: &'a TensorData,
    conversions: &'a [crate::mapping::ResolvedConversion],
}

/// Writes tensor `t`'s (transformed or converted) bytes to `out`; returns their CRC-32
/// when `crc` (zip entries need it; safetensors does not, and then plain renames are
/// copied file to file by the kernel).
fn write_tensor(
    job: &Job,
    t: &OutTensor,
    out: &mut std::fs::File,
    dest: &Path,
    crc: bool,
) -> Result<u32> {
    let data = job.data;
    let bytes = match &t.recipe {
        Recipe::Convert { conversion, part } => {
            convert::output_bytes(job.source, data, &job.conversions[*conversion], *part)?
        }
        Recipe::Copy { source, transform } => {
            let info = &job.source.tensors[*source];
            if let (None, Bytes::Range { file, start, len }) = (transform, data.locate(info)?) {
                let mut hasher = crc.then(crc32fast::Hasher::new);
                data.copy_range(file, start, len, out, dest, hasher.as_mut())?;
                return Ok(hasher.map(|h| h.finalize()).unwrap_or(0));
            }
            let mut bytes = data.read(info)?;
            if let Some(tr) = transform {
                bytes = transform_bytes(bytes, &info.shape, dtype_size(&info.dtype), tr);
            }
            bytes
        }
    };
    {
        {
            for chunk in bytes.chunks(CHUNK_BYTES) {
                out.write_all(chunk).map_err(|e| Error::io(dest, e))?;
            }
            Ok(if crc { crc32fast::hash(&bytes) } else { 0 })
        }
    }
}

/// The safetensors `__metadata__` key under which apply records the transformed tensors
/// (a JSON object {target name: transform}, as a string).
pub const TRANSFORMS_METADATA_KEY: &str = "weightmap.transforms";

/// The safetensors `__metadata__` key under which apply records the conversions it ran
/// (a JSON list of conversions, as a string).
pub const CONVERSIONS_METADATA_KEY: &str = "weightmap.conversions";

/// Alignment of the safetensors header (the format requires data to start at a multiple
/// of 8, padding the JSON with spaces).
const SAFETENSORS_HEADER_ALIGN: usize = 8;

fn write_safetensors(job: &Job, tensors: &[OutTensor], file: &mut OutputFile) -> Result<()> {
    let mut header = serde_json::Map::new();
    let mut metadata = serde_json::Map::new();
    metadata.insert("format".into(), "pt".into());
    // Which tensors were transformed, for `weightmap verify`'s TRANSFORMED list
    // (safetensors metadata values must be strings).
    let transforms: serde_json::Map<String, serde_json::Value> = tensors
        .iter()
        .filter_map(|t| match &t.recipe {
            Recipe::Copy {
                transform: Some(tr),
                ..
            } => Some((t.name.clone(), tr.to_json())),
            _ => None,
        })
        .collect();
    if !transforms.is_empty() {
        metadata.insert(
            TRANSFORMS_METADATA_KEY.into(),
            serde_json::Value::Object(transforms).to_string().into(),
        );
    }
    // Which ops made which tensors, for `weightmap verify`'s CONVERTED list: each
    // conversion without its evidence.
    if !job.conversions.is_empty() {
        let ops: Vec<serde_json::Value> = job
            .conversions
            .iter()
            .map(|c| {
                let mut c = c.conversion.clone();
                (c.confidence, c.reason, c.ambiguous) = (None, None, None);
                serde_json::to_value(c).unwrap_or_default()
            })
            .collect();
        metadata.insert(
            CONVERSIONS_METADATA_KEY.into(),
            serde_json::Value::Array(ops).to_string().into(),
        );
    }
    header.insert("__metadata__".into(), serde_json::Value::Object(metadata));
    let mut offset = 0u64;
    for t in tensors {
        let nbytes = t.nbytes();
        header.insert(
            t.name.clone(),
            serde_json::json!({
                "dtype": crate::format::safetensors::safetensors_dtype(&t.dtype),
                "shape": t.shape,
                "data_offsets": [offset, offset + nbytes],
            }),
        );
        offset += nbytes;
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(header))
        .map_err(|e| Error::invalid("header", e.to_string()))?;
    while json.len() % SAFETENSORS_HEADER_ALIGN != 0 {
        json.push(b' ');
    }
    let dest = file.dest().to_path_buf();
    let f = file.file();
    f.write_all(&(json.len() as u64).to_le_bytes())
        .map_err(|e| Error::io(&dest, e))?;
    f.write_all(&json).map_err(|e| Error::io(&dest, e))?;
    let progress = crate::progress::Progress::bytes(offset, "writing");
    for t in tensors {
        write_tensor(job, t, file.file(), &dest, false)?;
        progress.inc(t.nbytes());
    }
    progress.finish();
    Ok(())
}

/// The top folder of written archives, as recent `torch.save` names it.
const ARCHIVE: &str = "archive";

/// A 40-digit serialization id, as `torch.save` writes one (`.data/serialization_id`),
/// derived from the pickle so that equal outputs are byte-identical.
fn serialization_id(pickle: &[u8]) -> String {
    let a = crc32fast::hash(pickle) as u64;
    let mut h = crc32fast::Hasher::new_with_initial(0x5eed);
    h.update(pickle);
    let b = h.finalize() as u64;
    format!("{:020}{:020}", a * 0x1_0000_0001, b * 0x1_0000_0001)
}

fn write_pth(job: &Job, tensors: &[OutTensor], file: &mut OutputFile) -> Result<()> {
    let (source, data) = (job.source, job.data);
    // Untransformed tensors of a torch.save source keep their storage and view (tied
    // weights stay tied, one copy); everything else gets a contiguous storage of its own.
    enum Storage {
        /// A whole source storage record, copied as it is.
        Copy { key: String },
        /// The (transformed) bytes of one output tensor.
        Own { tensor: usize },
    }
    let mut storages: Vec<Storage> = vec![];
    let mut shared: HashMap<String, usize> = HashMap::new();
    let mut entries = Vec::with_capacity(tensors.len());
    for (ti, t) in tensors.iter().enumerate() {
        let copied = match &t.recipe {
            Recipe::Copy {
                source: i,
                transform: None,
            } => Some(&source.tensors[*i]),
            _ => None,
        };
        let reuse = match (copied.and_then(|i| i.location.as_ref()), &data.zip) {
            (
                Some(DataLocation::TorchStorage {
                    key,
                    offset,
                    stride,
                    ..
                }),
                Some((_, zip)),
            ) => {
                let record = zip.record_entry(key).ok_or_else(|| {
                    Error::corrupt(
                        &source.path,
                        "torch.save zip",
                        format!("storage record '{key}' is missing"),
                    )
                })?;
                Some((
                    key.clone(),
                    record.size / dtype_size(&t.dtype) as u64,
                    *offset,
                    stride.clone(),
                ))
            }
            _ => None,
        };
        let (storage, numel, offset, stride) = match reuse {
            Some((key, numel, offset, stride)) => {
                let s = *shared.entry(key.clone()).or_insert_with(|| {
                    storages.push(Storage::Copy { key });
                    storages.len() - 1
                });
                (s, numel, offset, stride)
            }
            None => {
                storages.push(Storage::Own { tensor: ti });
                (
                    storages.len() - 1,
                    t.shape.iter().product::<i64>().max(0) as u64,
                    0,
                    data::contiguous_strides(&t.shape),
                )
            }
        };
        entries.push(TensorEntry {
            name: t.name.clone(),
            storage_key: storage.to_string(),
            dtype: t.dtype.clone(),
            storage_numel: numel,
            offset,
            shape: t.shape.clone(),
            stride,
        });
    }
    let pickle = pickle_writer::state_dict_pickle(&entries);
    let dest = file.dest().to_path_buf();
    let io = |e: std::io::Error| Error::io(&dest, e);
    let total: u64 = tensors.iter().map(OutTensor::nbytes).sum();
    let progress = crate::progress::Progress::bytes(total, "writing");

    let (zip_index, layout) = match &data.zip {
        Some((i, z)) => (Some(*i), Some(z)),
        None => (None, None),
    };
    let f = file.file();
    let mut zip = ZipWriter::new(f);
    zip.write_entry(&format!("{ARCHIVE}/data.pkl"), &pickle)
        .map_err(io)?;
    zip.write_entry(&format!("{ARCHIVE}/.format_version"), b"1")
        .map_err(io)?;
    zip.write_entry(&format!("{ARCHIVE}/.storage_alignment"), b"64")
        .map_err(io)?;
    zip.write_entry(&format!("{ARCHIVE}/byteorder"), b"little")
        .map_err(io)?;
    for (si, storage) in storages.iter().enumerate() {
        let name = format!("{ARCHIVE}/data/{si}");
        match storage {
            Storage::Copy { key, .. } => {
                let (Some(fi), Some(layout)) = (zip_index, layout) else {
                    unreachable!("copies come from a zip source")
                };
                let record = layout.record_entry(key).ok_or_else(|| {
                    Error::corrupt(
                        &source.path,
                        "torch.save zip",
                        format!("storage record '{key}' is missing"),
                    )
                })?;
                zip.start_entry(&name, record.size).map_err(io)?;
                data.copy_range(fi, record.data_start, record.size, zip.file(), &dest, None)?;
                zip.finish_entry(record.crc32).map_err(io)?;
                progress.inc(record.size);
            }
            Storage::Own { tensor } => {
                let t = &tensors[*tensor];
                zip.start_entry(&name, t.nbytes()).map_err(io)?;
                let crc = write_tensor(job, t, zip.file(), &dest, true)?;
                zip.finish_entry(crc).map_err(io)?;
                progress.inc(t.nbytes());
            }
        }
    }
    zip.write_entry(&format!("{ARCHIVE}/version"), b"3\n")
        .map_err(io)?;
    zip.write_entry(
        &format!("{ARCHIVE}/.data/serialization_id"),
        serialization_id(&pickle).as_bytes(),
    )
    .map_err(io)?;
    zip.finish().map_err(io)?;
    progress.finish();
    Ok(())
}
