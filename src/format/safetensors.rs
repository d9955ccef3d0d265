//! safetensors, single file and sharded: the JSON header only, never the data.
//!
//! Format: an 8-byte little-endian header length N, N bytes of JSON
//! (`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`),
//! then the data. See <https://github.com/huggingface/safetensors#format>.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::spec::{DataLocation, Format, ModelSpec, TensorInfo, TensorKind};
use std::io::Read;
use std::path::Path;

/// Largest header accepted, as in the safetensors crate (`MAX_HEADER_SIZE`).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

const FORMAT: &str = "safetensors";

/// Maps a safetensors dtype string to torch's dtype name.
pub fn torch_dtype(st: &str) -> Option<&'static str> {
    DType::from_safetensors_code(st).map(DType::name)
}

/// Maps torch's dtype name to the safetensors dtype string.
pub fn safetensors_dtype(torch: &str) -> Option<&'static str> {
    DType::parse(torch).and_then(DType::safetensors_code)
}

/// One tensor entry of a safetensors header, in header order.
#[derive(Debug, Clone)]
pub struct HeaderEntry {
    /// Tensor name.
    pub name: String,
    /// safetensors dtype string (`F32`, `BF16`, ...).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<i64>,
    /// Byte range relative to the start of the data section.
    pub data_offsets: (u64, u64),
}

/// A parsed safetensors header.
#[derive(Debug, Clone)]
pub struct Header {
    /// Length of the JSON header in bytes (the data starts at `8 + header_len`).
    pub header_len: u64,
    /// Tensors in header order.
    pub entries: Vec<HeaderEntry>,
    /// The optional `__metadata__` string map.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Reads and validates the header of the safetensors file at `path`: reads 8 + N bytes,
/// checks every tensor's dtype, that its byte range matches its shape, that the ranges
/// tile the data section without gaps or overlaps, and that the file is long enough.
pub fn read_header(path: &Path) -> Result<Header> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut len8 = [0u8; 8];
    file.read_exact(&mut len8)
        .map_err(|_| Error::corrupt(path, FORMAT, "shorter than the 8-byte header length"))?;
    let n = u64::from_le_bytes(len8);
    if n > MAX_HEADER_BYTES {
        return Err(Error::corrupt(
            path,
            FORMAT,
            format!("header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit"),
        ));
    }
    if n > file_len - 8 {
        return Err(Error::corrupt(
            path,
            FORMAT,
            format!(
                "header declares {n} bytes but only {} follow (truncated file?)",
                file_len - 8
            ),
        ));
    }
    let mut buf = vec![0u8; n as usize];
    file.read_exact(&mut buf).map_err(|e| Error::io(path, e))?;
    let value: serde_json::Value = super::json::from_slice(&buf).map_err(|e| {
        // A repeated tensor name is valid JSON but an invalid header.
        let what = if e.is_data() {
            "header"
        } else {
            "header is not valid JSON"
        };
        Error::corrupt(path, FORMAT, format!("{what}: {e}"))
    })?;
    let obj = value
        .as_object()
        .ok_or_else(|| Error::corrupt(path, FORMAT, "header is not a JSON object"))?;
    let data_len = file_len - 8 - n;
    let mut entries = Vec::with_capacity(obj.len());
    let mut metadata = None;
    for (name, v) in obj {
        if name == "__metadata__" {
            metadata = v.as_object().cloned();
            continue;
        }
        let bad = |what: String| Error::corrupt(path, FORMAT, format!("tensor '{name}': {what}"));
        let dtype = v
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| bad("no dtype".into()))?;
        let elem = torch_dtype(dtype)
            .map(crate::spec::dtype_size)
            .ok_or_else(|| bad(format!("unknown dtype {dtype}")))?;
        let shape: Vec<i64> = v
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("no shape".into()))?
            .iter()
            .map(|d| {
                d.as_u64()
                    .filter(|&d| d <= i64::MAX as u64)
                    .map(|d| d as i64)
            })
            .collect::<Option<_>>()
            .ok_or_else(|| bad("shape entries must be non-negative integers".into()))?;
        let offs = v
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .filter(|o| o.len() == 2)
            .and_then(|o| Some((o[0].as_u64()?, o[1].as_u64()?)))
            .ok_or_else(|| bad("data_offsets must be [begin, end]".into()))?;
        let numel = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| bad("shape overflows".into()))?;
        let nbytes = numel
            .checked_mul(elem as u64)
            .ok_or_else(|| bad("size overflows".into()))?;
        if offs.1 < offs.0 || offs.1 - offs.0 != nbytes {
            return Err(bad(format!(
                "data_offsets {:?} hold {} bytes but the shape needs {nbytes}",
                offs,
                offs.1.saturating_sub(offs.0)
            )));
        }
        if offs.1 > data_len {
            return Err(bad(format!(
                "data ends at byte {} but the data section has {data_len} (truncated file?)",
                offs.1
            )));
        }
        entries.push(HeaderEntry {
            name: name.clone(),
            dtype: dtype.to_string(),
            shape,
            data_offsets: offs,
        });
    }
    // The ranges must tile the data section: sort by offset and check for overlaps.
    let mut ranges: Vec<(u64, u64, &str)> = entries
        .iter()
        .map(|e| (e.data_offsets.0, e.data_offsets.1, e.name.as_str()))
        .collect();
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(Error::corrupt(
                path,
                FORMAT,
                format!("tensors '{}' and '{}' overlap", w[0].2, w[1].2),
            ));
        }
    }
    Ok(Header {
        header_len: n,
        entries,
        metadata,
    })
}

/// Reads a single safetensors file's header into a model spec (header order).
pub fn read(path: &Path) -> Result<ModelSpec> {
    let header = read_header(path)?;
    let mut spec = ModelSpec {
        path: path.display().to_string(),
        format: Format::Safetensors,
        state_dict_key: None,
        alternatives: vec![],
        stripped_prefixes: vec![],
        tensors: Vec::with_capacity(header.entries.len()),
    };
    push_entries(&mut spec, path, &header);
    Ok(spec)
}

fn push_entries(spec: &mut ModelSpec, file: &Path, header: &Header) {
    for e in &header.entries {
        push_entry(spec, file, header, &e.name, e);
    }
}

/// Adds the tensor `e` of `file` (whose header is `header`) to `spec` under `name`, with
/// the location of its bytes.
fn push_entry(spec: &mut ModelSpec, file: &Path, header: &Header, name: &str, e: &HeaderEntry) {
    let base = 8 + header.header_len;
    let dtype = torch_dtype(&e.dtype).unwrap_or("unknown");
    let mut t = TensorInfo::new(
        name,
        e.shape.clone(),
        dtype,
        TensorKind::Unknown,
        spec.tensors.len(),
    );
    t.location = Some(DataLocation::Safetensors {
        file: file.display().to_string(),
        start: base + e.data_offsets.0,
        end: base + e.data_offsets.1,
    });
    spec.tensors.push(t);
}

/// Refuses a shard that resolves (through symbolic links) to a file outside the index's
/// folder: an index names files beside it, and a link to `/etc/passwd` or another user's
/// files is not a shard. A shard may also resolve to the folder the index itself resolves
/// to: the Hugging Face hub cache links both the index and its shards into `blobs/`.
fn check_inside(index_path: &Path, dir: &Path, file: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let real_dir = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    let real_index = index_path
        .canonicalize()
        .map_err(|e| Error::io(index_path, e))?;
    let real = file.canonicalize().map_err(|e| Error::io(file, e))?;
    let parent = real.parent();
    if parent != Some(real_dir.as_path()) && parent != real_index.parent() {
        return Err(Error::corrupt(
            index_path,
            "safetensors index",
            format!(
                "shard {} resolves to {}, outside the index's folder {}; copy the shard beside the index",
                file.display(),
                real.display(),
                real_dir.display()
            ),
        ));
    }
    Ok(())
}

/// Reads sharded safetensors through its `*.safetensors.index.json`: every shard's
/// header, tensors in the index's `weight_map` order.
pub fn read_sharded(index_path: &Path) -> Result<ModelSpec> {
    let value = super::json::read_json(index_path)?;
    let weight_map = value
        .get("weight_map")
        .and_then(|w| w.as_object())
        .ok_or_else(|| {
            Error::corrupt(
                index_path,
                "safetensors index",
                "\"weight_map\" is not an object",
            )
        })?;
    let dir = index_path.parent().unwrap_or(Path::new("."));
    // Shards in order of first mention, each header read once.
    let mut shards: Vec<(String, Header)> = Vec::new();
    let shard_count = weight_map
        .values()
        .filter_map(|v| v.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len();
    let progress = crate::progress::Progress::new(shard_count as u64, "reading shards");
    let mut order: Vec<(String, usize)> = Vec::with_capacity(weight_map.len());
    for (name, shard) in weight_map {
        let shard = shard.as_str().ok_or_else(|| {
            Error::corrupt(
                index_path,
                "safetensors index",
                format!("weight_map['{name}'] is not a file name"),
            )
        })?;
        if shard.contains('/') || shard.contains('\\') || shard == ".." {
            return Err(Error::corrupt(
                index_path,
                "safetensors index",
                format!("shard name '{shard}' must be a file beside the index"),
            ));
        }
        let si = match shards.iter().position(|(s, _)| s == shard) {
            Some(i) => i,
            None => {
                let file = dir.join(shard);
                check_inside(index_path, dir, &file)?;
                let h = read_header(&file)?;
                shards.push((shard.to_string(), h));
                progress.inc(1);
                shards.len() - 1
            }
        };
        order.push((name.clone(), si));
    }
    progress.finish();
    let mut spec = ModelSpec {
        path: index_path.display().to_string(),
        format: Format::SafetensorsSharded,
        state_dict_key: None,
        alternatives: vec![],
        stripped_prefixes: vec![],
        tensors: Vec::with_capacity(order.len()),
    };
    let lookup: Vec<std::collections::HashMap<&str, &HeaderEntry>> = shards
        .iter()
        .map(|(_, h)| h.entries.iter().map(|e| (e.name.as_str(), e)).collect())
        .collect();
    for (name, si) in &order {
        let (shard, header) = &shards[*si];
        let e = lookup[*si]
            .get(name.as_str())
            .ok_or_else(|| Error::MissingKey {
                context: dir.join(shard).display().to_string(),
                key: name.clone(),
                hint: format!(
                    " (the index {} lists it in this shard)",
                    index_path.display()
                ),
            })?;
        push_entry(&mut spec, &dir.join(shard), header, name, e);
    }
    Ok(spec)
}
