//! `torch.save` zip checkpoints (`.pth`, `.pt`, `.bin`, Lightning `.ckpt`): the pickle
//! and the zip's central directory only, never tensor data.
//!
//! Layout written by `torch.serialization._save` (PyTorch ≥ 1.6): a zip (stored, not
//! compressed) whose entries all sit in one folder of arbitrary name (`archive/`, or the
//! file's stem): `<prefix>/data.pkl` is the pickled object tree, `<prefix>/data/<key>`
//! holds the bytes of storage `<key>`, plus `<prefix>/byteorder`, `<prefix>/version`,
//! `<prefix>/.data/serialization_id` and friends. Tensors in `data.pkl` refer to their
//! storage by persistent id (see [`super::pickle`]).
//!
//! [`open`] returns the parsed [`TorchArchive`] (entries, storage records, `data.pkl`
//! bytes, the parsed pickle, the chosen state dict and its tensors with the byte span of
//! each key), which the apply stage uses to rewrite a checkpoint; [`read`] turns it into
//! a [`ModelSpec`]; [`read_layout`] reads only the central directory ([`ArchiveLayout`]),
//! for copying storage records byte for byte.

use super::pickle::{self, Pickle, TensorRef, Value};
use crate::error::{Error, Result};
use crate::spec::{dtype_size, DataLocation, Format, ModelSpec, TensorInfo, TensorKind};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const FORMAT: &str = "torch.save zip";

/// Largest `data.pkl` read into memory. The pickle holds only structure (about 100
/// bytes a tensor), so even checkpoints with millions of tensors stay well below this.
pub const MAX_DATA_PKL_BYTES: u64 = 512 << 20;

/// Keys under which checkpoints keep their state dict, most likely first: Lightning
/// (`state_dict`), common training scripts (`model`, `model_state_dict`, `module`,
/// `net`) and EMA weights (`ema`, `state_dict_ema`, `model_ema`).
pub const STATE_DICT_KEYS: &[&str] = &[
    "state_dict",
    "model",
    "model_state_dict",
    "module",
    "ema",
    "state_dict_ema",
    "model_ema",
    "net",
];

/// Keys of training state that are never the model's state dict, and are not searched
/// (Lightning callbacks keep dicts of metric tensors, optimizers keep moment tensors).
pub const NON_MODEL_KEYS: &[&str] = &[
    "optimizer",
    "optimizers",
    "optimizer_states",
    "optimizer_state_dict",
    "lr_schedulers",
    "scheduler",
    "callbacks",
    "loops",
    "hyper_parameters",
    "hparams",
];

/// How many dict levels below the top are searched for a state dict.
pub const SEARCH_DEPTH: usize = 3;

/// How a state dict that is not at the top level is named in `alternatives`, and the
/// key that picks the top level (`--state-dict-key .`).
pub const TOP_LEVEL_KEY: &str = ".";

/// One entry of the zip's central directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveEntry {
    /// The full entry name (`archive/data/0`).
    pub name: String,
    /// Uncompressed size in bytes.
    pub size: u64,
    /// Compressed size in bytes (equal to `size` for stored entries, as torch writes).
    pub compressed_size: u64,
    /// Whether the entry is stored uncompressed (then its bytes are `data_start ..
    /// data_start + size` of the file and can be copied or mapped directly).
    pub stored: bool,
    /// Offset of the entry's data in the file (after its local header).
    pub data_start: u64,
    /// CRC-32 of the entry's uncompressed bytes, from the central directory (copied
    /// unchanged when the apply stage writes the entry again).
    pub crc32: u32,
}

/// The central directory of a `torch.save` zip: its entries, the folder they sit in and
/// the storage records. Read without the pickle ([`read_layout`]) by the apply stage,
/// which copies storage bytes straight from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveLayout {
    /// The folder all entries sit in (`archive`), without the slash; empty if none.
    pub prefix: String,
    /// Every zip entry, in central-directory order.
    pub entries: Vec<ArchiveEntry>,
    /// The storage records (`<prefix>/data/<key>`), in entry order.
    pub records: Vec<StorageRecord>,
    /// Index into `records` by storage key.
    record_index: HashMap<String, usize>,
}

impl ArchiveLayout {
    /// The zip entry name of `rel` inside the archive folder (`data.pkl` →
    /// `archive/data.pkl`).
    pub fn entry_name(&self, rel: &str) -> String {
        join(&self.prefix, rel)
    }

    /// The storage record with key `key`.
    pub fn record(&self, key: &str) -> Option<&StorageRecord> {
        self.record_index.get(key).map(|&i| &self.records[i])
    }

    /// The zip entry holding storage `key`.
    pub fn record_entry(&self, key: &str) -> Option<&ArchiveEntry> {
        self.record(key).map(|r| &self.entries[r.entry])
    }
}

/// A storage record, `<prefix>/data/<key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRecord {
    /// The storage key (the persistent id's key).
    pub key: String,
    /// Index into [`ArchiveLayout::entries`].
    pub entry: usize,
    /// Size in bytes.
    pub size: u64,
}

/// One tensor of the chosen state dict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDictEntry {
    /// The key exactly as written in the file.
    pub key: String,
    /// Byte span, in `data.pkl`, of the opcode that pushed the key string: pass it with
    /// the new name to [`pickle::rewrite_strings`] to rename the key in place.
    pub key_span: Option<Range<usize>>,
    /// Whether the key string is also used elsewhere in the pickle through the memo;
    /// [`pickle::rewrite_strings`] handles it (keeps the other uses), this only says so.
    pub key_shared: bool,
    /// The tensor: storage, dtype, offset (in elements of `tensor.dtype`), shape, stride.
    pub tensor: TensorRef,
    /// Index of the earlier entry this one shares storage, offset, shape and stride with.
    pub tied_to: Option<usize>,
}

/// A parsed `torch.save` archive: everything the apply stage needs to rewrite it.
#[derive(Debug, Clone)]
pub struct TorchArchive {
    /// The file.
    pub path: PathBuf,
    /// Its central directory: entries, folder, storage records.
    pub layout: ArchiveLayout,
    /// Content of `<prefix>/byteorder` (`little`/`big`), when present.
    pub byteorder: Option<String>,
    /// The bytes of `<prefix>/data.pkl`.
    pub data_pkl: Vec<u8>,
    /// The parsed `data.pkl`.
    pub pickle: Pickle,
    /// Path of dict keys from the top level to the state dict (empty: the top level).
    pub state_dict_path: Vec<String>,
    /// The state dict's key as reported (`state_dict_path` joined with dots), or
    /// `None` for the top level.
    pub state_dict_key: Option<String>,
    /// Other dicts that look like state dicts ([`TOP_LEVEL_KEY`] for the top level).
    pub alternatives: Vec<String>,
    /// The tensors of the state dict, in file order.
    pub tensors: Vec<StateDictEntry>,
    /// Keys of the state dict whose values are not tensors (`_extra_state`, ...).
    pub skipped: Vec<String>,
}

impl TorchArchive {
    /// The model spec of the chosen state dict (names as written; not normalized).
    pub fn to_spec(&self) -> ModelSpec {
        let mut tensors = Vec::with_capacity(self.tensors.len());
        for (i, e) in self.tensors.iter().enumerate() {
            let mut info = tensor_info(&e.key, &e.tensor, i);
            info.tied_to = e.tied_to.map(|j| self.tensors[j].key.clone());
            tensors.push(info);
        }
        ModelSpec {
            path: self.path.display().to_string(),
            format: Format::TorchZip,
            state_dict_key: self.state_dict_key.clone(),
            alternatives: self.alternatives.clone(),
            stripped_prefixes: vec![],
            tensors,
        }
    }
}

/// The tensor `t` of a `torch.save` zip as a [`TensorInfo`] named `name`, with its data
/// location (storage record, element offset, strides).
pub fn tensor_info(name: &str, t: &TensorRef, position: usize) -> TensorInfo {
    let mut info = TensorInfo::new(
        name,
        t.shape.clone(),
        &t.dtype,
        TensorKind::Unknown,
        position,
    );
    // `offset` counts elements of the tensor's dtype; for an untyped (byte) storage
    // (`_rebuild_tensor_v3`) that is not the storage's own type.
    let storage_dtype = if t.storage.storage_type == "UntypedStorage" {
        &t.dtype
    } else {
        &t.storage.dtype
    };
    info.location = Some(DataLocation::TorchStorage {
        key: t.storage.key.clone(),
        storage_dtype: storage_dtype.clone(),
        offset: t.offset,
        stride: t.stride.clone(),
    });
    info
}

/// Reads the object tree of any `torch.save` zip (not only state dicts): its layout and
/// parsed `data.pkl`. Nothing is imported or executed (the pickle reader refuses to
/// call globals), so this is `torch.load(weights_only=True)` without the tensor data.
pub fn read_object(path: &Path) -> Result<(ArchiveLayout, Pickle)> {
    let corrupt = |m: String| Error::corrupt(path, FORMAT, m);
    let (mut zip, layout) = open_layout(path)?;
    let data_pkl = read_data_pkl(path, &mut zip, &layout)?;
    let pickle = pickle::parse(&data_pkl).map_err(|e| corrupt(format!("data.pkl: {e}")))?;
    Ok((layout, pickle))
}

/// The bytes of an archive's `data.pkl`, refused past [`MAX_DATA_PKL_BYTES`] before any
/// is read.
fn read_data_pkl(path: &Path, zip: &mut Zip, layout: &ArchiveLayout) -> Result<Vec<u8>> {
    let corrupt = |m: String| Error::corrupt(path, FORMAT, m);
    let pkl_index = layout
        .entries
        .iter()
        .position(|e| e.name == layout.entry_name("data.pkl"))
        .ok_or_else(|| corrupt("no data.pkl entry".into()))?;
    if layout.entries[pkl_index].size > MAX_DATA_PKL_BYTES {
        return Err(corrupt(format!(
            "data.pkl declares {} bytes, more than the {MAX_DATA_PKL_BYTES}-byte limit",
            layout.entries[pkl_index].size
        )));
    }
    read_entry(zip, pkl_index, MAX_DATA_PKL_BYTES).map_err(|m| corrupt(format!("data.pkl: {m}")))
}

/// Tells a `torch.save` zip from a TorchScript archive by its entry names.
pub fn classify_zip(path: &Path) -> Result<Format> {
    let (zip, _) = open_zip(path, |m| Error::corrupt(path, "zip", m))?;
    let names: Vec<&str> = zip.file_names().collect();
    if names
        .iter()
        .any(|n| n.ends_with("/constants.pkl") || n.contains("/code/"))
    {
        Ok(Format::TorchScript)
    } else if names.iter().any(|n| n.ends_with("data.pkl")) {
        Ok(Format::TorchZip)
    } else {
        Err(Error::UnknownFormat {
            path: path.into(),
            message: "a zip archive without data.pkl: not a torch.save checkpoint".into(),
        })
    }
}

/// Reads a `torch.save` zip checkpoint's state dict (see [`open`]).
pub fn read(path: &Path, state_dict_key: Option<&str>) -> Result<ModelSpec> {
    Ok(open(path, state_dict_key)?.to_spec())
}

/// Reads the central directory of the `torch.save` zip at `path` (not the pickle):
/// entries, folder and storage records. Every entry must lie inside the file.
pub fn read_layout(path: &Path) -> Result<ArchiveLayout> {
    Ok(open_layout(path)?.1)
}

/// An open zip whose entries are read at explicit offsets ([`FileAt`]).
pub(crate) type Zip = zip::ZipArchive<FileAt>;

/// A file read at explicit offsets (`pread`): clones share the open file but each keeps
/// its own position, so threads read one archive side by side, and a seek costs no system
/// call. Sequential small reads (the zip's central directory, a record at a time) go
/// through a read-ahead window that doubles while the reads stay sequential; a seek
/// elsewhere starts it small again, so the local header before a tensor's bytes does not
/// pull those bytes in.
#[derive(Debug, Clone)]
pub(crate) struct FileAt {
    file: Arc<File>,
    len: u64,
    pos: u64,
    window: Vec<u8>,
    window_start: u64,
    next_window: usize,
}

/// The read-ahead window after a seek: a zip local header's fixed part (30 bytes).
const FIRST_WINDOW: usize = 64;
/// The largest read-ahead window, and the read size from which reads bypass it.
const MAX_WINDOW: usize = 64 << 10;

impl FileAt {
    fn new(file: File, len: u64) -> FileAt {
        FileAt {
            file: Arc::new(file),
            len,
            pos: 0,
            window: Vec::new(),
            window_start: 0,
            next_window: FIRST_WINDOW,
        }
    }
}

impl Read for FileAt {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let window_end = self.window_start + self.window.len() as u64;
        if !(self.window_start..window_end).contains(&self.pos) {
            if out.len() >= MAX_WINDOW {
                let n = self.file.read_at(out, self.pos)?;
                self.pos += n as u64;
                return Ok(n);
            }
            // Sequential: the window grows; anywhere else it starts small again.
            self.next_window = if self.pos == window_end && !self.window.is_empty() {
                (self.next_window * 2).min(MAX_WINDOW)
            } else {
                FIRST_WINDOW
            };
            let size = self.next_window.max(out.len());
            let size = size.min(self.len.saturating_sub(self.pos) as usize);
            self.window.resize(size, 0);
            let n = self.file.read_at(&mut self.window, self.pos)?;
            self.window.truncate(n);
            self.window_start = self.pos;
            if n == 0 {
                return Ok(0);
            }
        }
        let at = (self.pos - self.window_start) as usize;
        let n = out.len().min(self.window.len() - at);
        out[..n].copy_from_slice(&self.window[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for FileAt {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start of the file",
            )
        })?;
        Ok(self.pos)
    }
}

/// What identifies one version of a file: its path, device and inode (a file replaced by a
/// rename is another), length, and modification and change times (to the nanosecond).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileKey {
    path: PathBuf,
    inode: (u64, u64),
    len: u64,
    times: [(i64, i64); 2],
}

impl FileKey {
    /// The key of the file at `path` with metadata `meta`.
    pub(crate) fn new(path: &Path, meta: &std::fs::Metadata) -> FileKey {
        use std::os::unix::fs::MetadataExt;
        FileKey {
            path: path.to_path_buf(),
            inode: (meta.dev(), meta.ino()),
            len: meta.len(),
            times: [
                (meta.mtime(), meta.mtime_nsec()),
                (meta.ctime(), meta.ctime_nsec()),
            ],
        }
    }
}

/// The zips opened in this process: each version of a file is opened once (detecting the
/// format, checking a TorchScript archive and reading its header each need it), and its
/// layout read once; a clone of the open zip reads entries independently.
static OPENED: Mutex<Vec<(FileKey, Zip, Option<ArchiveLayout>)>> = Mutex::new(Vec::new());

/// The zip at `path`, opened once per version of the file; `unreadable` words the error of
/// a file that is no zip.
fn open_zip(path: &Path, unreadable: impl Fn(String) -> Error) -> Result<(Zip, FileKey)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    let key = FileKey::new(path, &meta);
    if let Ok(cache) = OPENED.lock() {
        if let Some((_, zip, _)) = cache.iter().find(|(k, ..)| *k == key) {
            return Ok((zip.clone(), key));
        }
    }
    let zip = zip::ZipArchive::new(FileAt::new(file, meta.len()))
        .map_err(|e| unreadable(e.to_string()))?;
    if let Ok(mut cache) = OPENED.lock() {
        cache.push((key.clone(), zip.clone(), None));
    }
    Ok((zip, key))
}

/// Opens the zip at `path` and reads its layout; the open zip serves to read entries.
pub(crate) fn open_layout(path: &Path) -> Result<(Zip, ArchiveLayout)> {
    let (zip, key) = open_zip(path, |m| {
        Error::corrupt(path, FORMAT, format!("unreadable zip: {m}"))
    })?;
    if let Ok(cache) = OPENED.lock() {
        if let Some((_, _, Some(layout))) = cache.iter().find(|(k, ..)| *k == key) {
            return Ok((zip, layout.clone()));
        }
    }
    let (zip, layout) = read_layout_of(path, zip, key.len)?;
    if let Ok(mut cache) = OPENED.lock() {
        if let Some(cached) = cache.iter_mut().find(|(k, ..)| *k == key) {
            cached.2 = Some(layout.clone());
        }
    }
    Ok((zip, layout))
}

/// The layout of an open zip of `file_len` bytes: every entry must lie inside the file.
fn read_layout_of(path: &Path, mut zip: Zip, file_len: u64) -> Result<(Zip, ArchiveLayout)> {
    let corrupt = |m: String| Error::corrupt(path, FORMAT, m);
    let mut entries = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        let f = zip
            .by_index_raw(i)
            .map_err(|e| corrupt(format!("zip entry {i}: {e}")))?;
        let entry = ArchiveEntry {
            name: f.name().to_string(),
            size: f.size(),
            compressed_size: f.compressed_size(),
            stored: f.compression() == zip::CompressionMethod::Stored,
            data_start: f.data_start(),
            crc32: f.crc32(),
        };
        if entry
            .data_start
            .checked_add(entry.compressed_size)
            .is_none_or(|end| end > file_len)
        {
            return Err(corrupt(format!(
                "entry {} ends past the end of the file ({} bytes; truncated?)",
                entry.name, file_len
            )));
        }
        entries.push(entry);
    }

    let pkl = entries
        .iter()
        .find(|e| {
            e.name == "data.pkl"
                || e.name
                    .strip_suffix("/data.pkl")
                    .is_some_and(|p| !p.contains('/'))
        })
        .ok_or_else(|| Error::UnknownFormat {
            path: path.into(),
            message: "a zip without <folder>/data.pkl: not a torch.save checkpoint".into(),
        })?;
    let prefix = pkl
        .name
        .strip_suffix("data.pkl")
        .unwrap_or("")
        .trim_end_matches('/')
        .to_string();
    let data_dir = join(&prefix, "data/");
    let records: Vec<StorageRecord> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let key = e.name.strip_prefix(&data_dir)?;
            (!key.is_empty() && !key.contains('/')).then(|| StorageRecord {
                key: key.to_string(),
                entry: i,
                size: e.size,
            })
        })
        .collect();

    let record_index = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.key.clone(), i))
        .collect();
    let layout = ArchiveLayout {
        prefix,
        entries,
        records,
        record_index,
    };
    Ok((zip, layout))
}

/// Opens a `torch.save` zip: reads the central directory and `data.pkl` (never the
/// storage records), finds the state dict (`state_dict_key` picks another: a dotted
/// path such as `ema` or `model.ema`, or [`TOP_LEVEL_KEY`]), and checks that every
/// tensor's storage record exists and is large enough.
pub fn open(path: &Path, state_dict_key: Option<&str>) -> Result<TorchArchive> {
    let corrupt = |m: String| Error::corrupt(path, FORMAT, m);
    let (mut zip, layout) = open_layout(path)?;
    let data_pkl = read_data_pkl(path, &mut zip, &layout)?;
    let byteorder = match layout
        .entries
        .iter()
        .position(|e| e.name == layout.entry_name("byteorder"))
    {
        Some(i) => {
            let b = read_entry(&mut zip, i, 16).map_err(|m| corrupt(format!("byteorder: {m}")))?;
            Some(String::from_utf8_lossy(&b).trim().to_string())
        }
        None => None,
    };

    let pickle = pickle::parse(&data_pkl).map_err(|e| corrupt(format!("data.pkl: {e}")))?;
    let choice = choose_state_dict(&pickle, path, state_dict_key)?;

    let mut tensors = Vec::new();
    let mut skipped = Vec::new();
    let mut seen: HashMap<ViewKey, usize> = HashMap::new();
    let items = pickle.dict(choice.value).unwrap_or(&[]);
    for &(k, v) in items {
        let Some(key) = pickle.str(k) else {
            skipped.push(format!("{k:?}"));
            continue;
        };
        let Some(tensor) = pickle.tensor(v) else {
            skipped.push(key.to_string());
            continue;
        };
        let span = pickle.string_span(k);
        let index = tensors.len();
        let tied_to = match seen.entry((
            &tensor.storage.key,
            tensor.offset,
            &tensor.shape,
            &tensor.stride,
        )) {
            std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(index);
                None
            }
        };
        tensors.push(StateDictEntry {
            key: key.to_string(),
            key_span: span.as_ref().map(|s| s.span.clone()),
            key_shared: span.is_some_and(|s| s.shared),
            tensor: tensor.clone(),
            tied_to,
        });
    }

    // Every tensor must fit in its storage record; checked from the central directory.
    for e in &tensors {
        let t = &e.tensor;
        if crate::spec::checked_numel(&t.shape).is_none() {
            return Err(corrupt(format!(
                "tensor '{}': shape {:?} has a negative dimension or more elements than a 64-bit count holds",
                e.key, t.shape
            )));
        }
        let record = layout.entry_name(&format!("data/{}", t.storage.key));
        let Some(have) = layout.record(&t.storage.key).map(|r| r.size) else {
            return Err(corrupt(format!(
                "tensor '{}' refers to storage record {record}, which the archive does not contain",
                e.key
            )));
        };
        let need = required_bytes(t).ok_or_else(|| {
            corrupt(format!(
                "tensor '{}': shape {:?} with stride {:?} overflows",
                e.key, t.shape, t.stride
            ))
        })?;
        if need > have {
            return Err(corrupt(format!(
                "tensor '{}' needs {need} bytes of storage record {record}, which has {have} (truncated or corrupt archive)",
                e.key
            )));
        }
    }

    Ok(TorchArchive {
        path: path.to_path_buf(),
        layout,
        byteorder,
        data_pkl,
        state_dict_key: if choice.path.is_empty() {
            None
        } else {
            Some(choice.path.join("."))
        },
        state_dict_path: choice.path,
        alternatives: choice.alternatives,
        pickle,
        tensors,
        skipped,
    })
}

/// What makes two tensors the same view: storage key, offset, shape, stride.
type ViewKey<'a> = (&'a str, u64, &'a [i64], &'a [i64]);

fn join(prefix: &str, rel: &str) -> String {
    if prefix.is_empty() {
        rel.to_string()
    } else {
        format!("{prefix}/{rel}")
    }
}

pub(crate) fn read_entry(
    zip: &mut Zip,
    index: usize,
    limit: u64,
) -> std::result::Result<Vec<u8>, String> {
    let f = zip.by_index(index).map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(f.size().min(limit) as usize);
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > limit {
        return Err(format!("larger than the {limit}-byte limit"));
    }
    Ok(buf)
}

/// Bytes of storage a tensor view reaches: (offset + 1 + Σ (size−1)·stride) elements,
/// or none for an empty tensor. `None` on overflow.
pub fn required_bytes(t: &TensorRef) -> Option<u64> {
    let elem = dtype_size(&t.dtype).max(1) as u128;
    if t.shape.contains(&0) {
        return Some(0);
    }
    let mut last: u128 = t.offset as u128;
    for (&n, &s) in t.shape.iter().zip(&t.stride) {
        last = last.checked_add((n as u128 - 1).checked_mul(s as u128)?)?;
    }
    u64::try_from((last + 1).checked_mul(elem)?).ok()
}

/// A dict found while searching for the state dict.
struct Candidate {
    path: Vec<String>,
    value: Value,
    tensors: usize,
    entries: usize,
}

impl Candidate {
    fn name(&self) -> String {
        if self.path.is_empty() {
            TOP_LEVEL_KEY.to_string()
        } else {
            self.path.join(".")
        }
    }
    /// "Mostly tensors": at least half the values (state dicts may hold `_extra_state`).
    fn looks_like_state_dict(&self) -> bool {
        self.tensors > 0 && self.tensors * 2 >= self.entries
    }
    fn rank(&self) -> (usize, usize) {
        let last = self.path.last().map(String::as_str);
        let priority = match last {
            None => 0,
            Some(k) => {
                1 + STATE_DICT_KEYS
                    .iter()
                    .position(|p| *p == k)
                    .unwrap_or(STATE_DICT_KEYS.len())
            }
        };
        (priority, self.path.len())
    }
}

struct Choice {
    path: Vec<String>,
    value: Value,
    alternatives: Vec<String>,
}

/// Every dict reachable from the top level through string keys, breadth first, at most
/// [`SEARCH_DEPTH`] levels down, each dict once (pickles may share or nest dicts in cycles).
fn find_dicts(p: &Pickle) -> Vec<Candidate> {
    let mut out = Vec::new();
    let mut visited = HashSet::new();
    let mut queue = VecDeque::from([(p.root(), Vec::<String>::new())]);
    while let Some((value, path)) = queue.pop_front() {
        let (Some(items), Value::Node(id)) = (p.dict(value), value) else {
            continue;
        };
        if !visited.insert(id) {
            continue;
        }
        let tensors = items.iter().filter(|(_, v)| p.tensor(*v).is_some()).count();
        if path.len() < SEARCH_DEPTH {
            for &(k, v) in items {
                if let (Some(key), Some(_)) = (p.str(k), p.dict(v)) {
                    if !NON_MODEL_KEYS.contains(&key) {
                        let mut child = path.clone();
                        child.push(key.to_string());
                        queue.push_back((v, child));
                    }
                }
            }
        }
        out.push(Candidate {
            path,
            value,
            tensors,
            entries: items.len(),
        });
    }
    out
}

fn choose_state_dict(p: &Pickle, path: &Path, wanted: Option<&str>) -> Result<Choice> {
    let dicts = find_dicts(p);
    let mut candidates: Vec<&Candidate> =
        dicts.iter().filter(|c| c.looks_like_state_dict()).collect();
    candidates.sort_by_key(|c| c.rank());
    let names: Vec<String> = candidates.iter().map(|c| c.name()).collect();

    if let Some(wanted) = wanted {
        let found = dicts.iter().find(|c| c.tensors > 0 && c.name() == wanted);
        let Some(c) = found else {
            let hint = if names.is_empty() {
                "; this file has no dict of tensors".to_string()
            } else {
                format!("; dicts of tensors in this file: {}", names.join(", "))
            };
            return Err(Error::MissingKey {
                context: path.display().to_string(),
                key: wanted.to_string(),
                hint,
            });
        };
        let alternatives = names.into_iter().filter(|n| *n != c.name()).collect();
        return Ok(Choice {
            path: c.path.clone(),
            value: c.value,
            alternatives,
        });
    }

    if let Some(first) = candidates.first() {
        return Ok(Choice {
            path: first.path.clone(),
            value: first.value,
            alternatives: names[1..].to_vec(),
        });
    }
    let root = p.root();
    match p.dict(root) {
        // `torch.save({})`: an empty state dict.
        Some([]) => Ok(Choice {
            path: vec![],
            value: root,
            alternatives: vec![],
        }),
        Some(items) => {
            let keys: Vec<String> = items
                .iter()
                .take(12)
                .map(|(k, _)| p.str(*k).map_or_else(|| p.type_name(*k), str::to_string))
                .collect();
            Err(Error::Unsupported {
                path: path.into(),
                message: format!(
                    "no state dict found: the top-level dict (keys: {}{}) holds no dict of tensors within {SEARCH_DEPTH} levels",
                    keys.join(", "),
                    if items.len() > keys.len() { ", ..." } else { "" }
                ),
            })
        }
        None => {
            let what = p.type_name(root);
            let message = if p.tensor(root).is_some() {
                "the file holds a single tensor, not a state dict".to_string()
            } else if matches!(p.node(root), Some(pickle::Node::Object(_))) {
                format!("the file holds a pickled {what} object, not a state dict (saved with torch.save(model)?); save model.state_dict() instead")
            } else {
                format!("the file holds a {what}, not a state dict")
            };
            Err(Error::Unsupported {
                path: path.into(),
                message,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every read through [`FileAt`] (small, large, after seeks back, forward, from the end,
    /// past the end, on two clones at once) gives the file's own bytes.
    #[test]
    fn file_at_reads_what_the_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bytes");
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let mut a = FileAt::new(file, bytes.len() as u64);
        let mut b = a.clone();
        // (seek, read length): sequential runs, jumps, a large read, the tail.
        let steps: &[(SeekFrom, usize)] = &[
            (SeekFrom::Start(0), 30),
            (SeekFrom::Current(0), 46),
            (SeekFrom::Current(0), 500),
            (SeekFrom::Current(0), 3000),
            (SeekFrom::Start(10), 20),
            (SeekFrom::Start(200_000), 70_000),
            (SeekFrom::End(-100), 1000),
            (SeekFrom::Start(123_456), 1),
            (SeekFrom::Current(-50), 90),
            (SeekFrom::Start(400_000), 10),
        ];
        for (seek, len) in steps {
            for reader in [&mut a, &mut b] {
                let at = reader.seek(*seek).unwrap() as usize;
                let mut got = Vec::new();
                reader.take(*len as u64).read_to_end(&mut got).unwrap();
                let want = &bytes[at.min(bytes.len())..(at + len).min(bytes.len())];
                assert_eq!(got, want, "{seek:?} {len}");
            }
        }
        assert!(a.seek(SeekFrom::End(-400_000)).is_err());
    }

    /// A zip is opened once per version of its file: replaced (here by one of the same
    /// length, within the same clock tick), it is read again.
    #[test]
    fn a_replaced_zip_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.pth");
        let write = |prefix: &str| {
            let tmp = dir.path().join("tmp.pth");
            let mut z = zip::ZipWriter::new(File::create(&tmp).unwrap());
            let stored = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            z.start_file(format!("{prefix}/data.pkl"), stored).unwrap();
            std::io::Write::write_all(&mut z, b"\x80\x02}q\x00.").unwrap();
            z.finish().unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        write("first");
        assert_eq!(open_layout(&path).unwrap().1.prefix, "first");
        assert_eq!(open_layout(&path).unwrap().1.prefix, "first");
        write("other");
        assert_eq!(open_layout(&path).unwrap().1.prefix, "other");
    }
}
