//! Tensor data of a checkpoint: where each tensor's bytes are, streamed in bounded chunks
//! or read whole (one tensor at a time) for transforms and for `verify`.
//!
//! A model spec records each tensor's [`DataLocation`]: a byte range of a safetensors file,
//! or a storage record of a `torch.save` zip plus the view's element offset and strides.
//! `torch.save` writes records uncompressed (`STORED`, see PyTorch's
//! `caffe2/serialize/inline_container.cc`), so a record is a plain byte range of the zip
//! file too: its start is the local header's data offset, found through the central
//! directory.

use crate::error::{Error, Result};
use crate::format::torch_zip::{self, ArchiveLayout};
use crate::spec::{dtype_size, DataLocation, Format, ModelSpec, TensorInfo};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Size of the buffer used when data has to pass through memory (checksums, gathers):
/// large enough for full disk throughput, small enough that memory stays flat.
pub const CHUNK_BYTES: usize = 8 << 20;

/// Size of one kernel copy (`copy_file_range`) before its disk write is started.
const COPY_SLICE_BYTES: u64 = 64 << 20;

/// Where one tensor's bytes are, as the apply stage needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bytes {
    /// The tensor is one contiguous byte range of a file (row-major, little-endian).
    Range {
        /// Index into [`TensorData::files`].
        file: usize,
        /// Offset of the first byte in the file.
        start: u64,
        /// Number of bytes.
        len: u64,
    },
    /// A strided view of a storage record (a saved `.t()` or a slice): the elements have
    /// to be gathered.
    Strided {
        /// Index into [`TensorData::files`].
        file: usize,
        /// Offset of the storage record's first byte in the file.
        storage_start: u64,
        /// Storage offset of the view, in elements.
        offset: u64,
        /// Strides of the view, in elements.
        stride: Vec<i64>,
        /// Element size in bytes.
        element_size: usize,
    },
}

/// An opened checkpoint whose tensor bytes can be read.
pub struct TensorData {
    /// The files the data lives in (one, or the shards of a sharded safetensors).
    pub files: Vec<(PathBuf, File)>,
    /// The zip layout, for `torch.save` sources, with the index of its file in `files`.
    pub zip: Option<(usize, ArchiveLayout)>,
    file_index: HashMap<String, usize>,
}

/// Row-major (contiguous) strides of `shape`.
pub fn contiguous_strides(shape: &[i64]) -> Vec<i64> {
    let mut strides = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1].max(1);
    }
    strides
}

/// Whether a view of `shape` with `stride` visits memory in row-major order without gaps
/// (dimensions of size 1 may have any stride).
fn is_contiguous(shape: &[i64], stride: &[i64]) -> bool {
    let mut expected = 1i64;
    for (&d, &s) in shape.iter().zip(stride).rev() {
        if d == 0 {
            return true;
        }
        if d != 1 && s != expected {
            return false;
        }
        expected *= d;
    }
    true
}

/// The layout of the `torch.save` zip at `path`, whose entries must all be stored
/// uncompressed (as `torch.save` writes them) to be copied as byte ranges. With
/// `records_only` (a TorchScript archive, whose code entries are deflated and never
/// copied), only the storage records must be.
fn stored_layout(path: &Path, records_only: bool) -> Result<ArchiveLayout> {
    let layout = torch_zip::read_layout(path)?;
    let unstored = if records_only {
        layout
            .records
            .iter()
            .map(|r| &layout.entries[r.entry])
            .find(|e| !e.stored)
    } else {
        layout.entries.iter().find(|e| !e.stored)
    };
    if let Some(e) = unstored {
        return Err(Error::Unsupported {
            path: path.into(),
            message: format!(
                "entry '{}' is compressed; torch.save stores entries uncompressed: re-save the checkpoint with torch.save",
                e.name
            ),
        });
    }
    Ok(layout)
}

impl TensorData {
    /// Opens the data files of `spec` (which must have been read from a checkpoint, so
    /// that each tensor has a location).
    pub fn open(spec: &ModelSpec) -> Result<TensorData> {
        let mut data = TensorData {
            files: vec![],
            zip: None,
            file_index: HashMap::new(),
        };
        for t in &spec.tensors {
            let path = match &t.location {
                Some(DataLocation::Safetensors { file, .. }) => file.clone(),
                Some(DataLocation::TorchStorage { .. }) => spec.path.clone(),
                None => {
                    return Err(Error::Unsupported {
                        path: spec.path.clone().into(),
                        message: format!(
                            "tensor '{}' has no data in this file (a model spec or TorchScript model); give a checkpoint (.pth, .safetensors)",
                            t.original_name
                        ),
                    })
                }
            };
            if !data.file_index.contains_key(&path) {
                let f = File::open(&path).map_err(|e| Error::io(&path, e))?;
                data.file_index.insert(path.clone(), data.files.len());
                data.files.push((PathBuf::from(&path), f));
            }
            if matches!(t.location, Some(DataLocation::TorchStorage { .. })) && data.zip.is_none() {
                data.zip = Some((
                    data.file_index[&path],
                    stored_layout(Path::new(&spec.path), spec.format == Format::TorchScript)?,
                ));
            }
        }
        Ok(data)
    }

    fn corrupt(&self, file: usize, message: String) -> Error {
        Error::corrupt(&self.files[file].0, "checkpoint", message)
    }

    /// Where the bytes of `t` are; checks that they lie inside the file.
    pub fn locate(&self, t: &TensorInfo) -> Result<Bytes> {
        let element_size = dtype_size(&t.dtype);
        let nbytes = t.nbytes();
        match &t.location {
            Some(DataLocation::Safetensors { file, start, end }) => {
                let fi = *self.file_index.get(file.as_str()).ok_or_else(|| {
                    Error::invalid("tensor data", format!("'{file}' was not opened"))
                })?;
                if end < start || end - start != nbytes {
                    return Err(self.corrupt(
                        fi,
                        format!(
                            "tensor '{}': data range {start}..{end} does not hold {nbytes} bytes",
                            t.original_name
                        ),
                    ));
                }
                Ok(Bytes::Range {
                    file: fi,
                    start: *start,
                    len: nbytes,
                })
            }
            Some(DataLocation::TorchStorage {
                key,
                storage_dtype,
                offset,
                stride,
            }) => {
                let (fi, zip) = match &self.zip {
                    Some((fi, zip)) => (*fi, zip),
                    None => {
                        return Err(Error::invalid(
                            "tensor data",
                            "a torch storage location outside a torch.save source",
                        ))
                    }
                };
                let record = zip.record_entry(key).ok_or_else(|| {
                    self.corrupt(
                        fi,
                        format!(
                            "tensor '{}': storage record '{key}' is missing from the archive",
                            t.original_name
                        ),
                    )
                })?;
                if storage_dtype != &t.dtype || element_size == 0 {
                    return Err(Error::Unsupported {
                        path: self.files[fi].0.clone(),
                        message: format!(
                            "tensor '{}': dtype {} over a {storage_dtype} storage cannot be copied byte for byte",
                            t.original_name, t.dtype
                        ),
                    });
                }
                if stride.len() != t.shape.len() {
                    return Err(self.corrupt(
                        fi,
                        format!(
                            "tensor '{}': {} strides for {} dimensions",
                            t.original_name,
                            stride.len(),
                            t.shape.len()
                        ),
                    ));
                }
                // The last element the view touches must lie inside the record.
                let span: i64 = if t.numel == 0 {
                    0
                } else {
                    1 + t
                        .shape
                        .iter()
                        .zip(stride)
                        .map(|(&d, &s)| (d - 1) * s.max(0))
                        .sum::<i64>()
                };
                let end = (*offset + span as u64) * element_size as u64;
                if stride.iter().any(|&s| s < 0) || end > record.size {
                    return Err(self.corrupt(
                        fi,
                        format!(
                            "tensor '{}': view (offset {offset}, shape {:?}, stride {stride:?}) reaches byte {end} of a {}-byte storage",
                            t.original_name, t.shape, record.size
                        ),
                    ));
                }
                if is_contiguous(&t.shape, stride) {
                    Ok(Bytes::Range {
                        file: fi,
                        start: record.data_start + offset * element_size as u64,
                        len: nbytes,
                    })
                } else {
                    Ok(Bytes::Strided {
                        file: fi,
                        storage_start: record.data_start,
                        offset: *offset,
                        stride: stride.clone(),
                        element_size,
                    })
                }
            }
            None => Err(Error::Unsupported {
                path: PathBuf::new(),
                message: format!("tensor '{}' has no data location", t.original_name),
            }),
        }
    }

    /// Reads the whole tensor `t` as contiguous row-major little-endian bytes. Memory is
    /// bounded by the tensor's size (plus the storage span it views, for strided views).
    pub fn read(&self, t: &TensorInfo) -> Result<Vec<u8>> {
        let nbytes = usize::try_from(t.nbytes())
            .map_err(|_| Error::invalid("tensor", "too large for this machine"))?;
        let located = self.locate(t)?;
        if nbytes == 0 {
            // An empty tensor: its strides may be anything, there is nothing to read.
            return Ok(Vec::new());
        }
        match located {
            Bytes::Range { file, start, len } => {
                let mut buf = vec![0u8; len as usize];
                self.files[file]
                    .1
                    .read_exact_at(&mut buf, start)
                    .map_err(|e| Error::io(&self.files[file].0, e))?;
                Ok(buf)
            }
            Bytes::Strided {
                file,
                storage_start,
                offset,
                stride,
                element_size,
            } => {
                // Read the span the view touches once, then gather in row-major order.
                let span: i64 = 1 + t
                    .shape
                    .iter()
                    .zip(&stride)
                    .map(|(&d, &s)| (d - 1) * s)
                    .sum::<i64>();
                let mut storage = vec![0u8; span as usize * element_size];
                self.files[file]
                    .1
                    .read_exact_at(&mut storage, storage_start + offset * element_size as u64)
                    .map_err(|e| Error::io(&self.files[file].0, e))?;
                let mut out = Vec::with_capacity(nbytes);
                let mut index = vec![0i64; t.shape.len()];
                for _ in 0..t.numel {
                    let at: i64 = index.iter().zip(&stride).map(|(i, s)| i * s).sum();
                    let at = at as usize * element_size;
                    out.extend_from_slice(&storage[at..at + element_size]);
                    for d in (0..index.len()).rev() {
                        index[d] += 1;
                        if index[d] < t.shape[d] {
                            break;
                        }
                        index[d] = 0;
                    }
                }
                Ok(out)
            }
        }
    }

    /// Copies bytes `start..start+len` of data file `file` to `out`, in bounded chunks.
    /// With `crc`, the bytes pass through memory and update it; without, the kernel copies
    /// file to file (`copy_file_range`, through `std::io::copy`) where it can.
    pub fn copy_range(
        &self,
        file: usize,
        start: u64,
        len: u64,
        out: &mut File,
        out_path: &Path,
        crc: Option<&mut crc32fast::Hasher>,
    ) -> Result<()> {
        let (path, src) = &self.files[file];
        let mut at = out.stream_position().map_err(|e| Error::io(out_path, e))?;
        let mut done = 0u64;
        match crc {
            None => {
                let mut src = src;
                src.seek(SeekFrom::Start(start))
                    .map_err(|e| Error::io(path, e))?;
                // In slices, so that the disk writes of one overlap the copy of the next.
                while done < len {
                    let n = (len - done).min(COPY_SLICE_BYTES);
                    let copied =
                        std::io::copy(&mut src.take(n), out).map_err(|e| Error::io(out_path, e))?;
                    if copied != n {
                        return Err(Error::corrupt(
                            path,
                            "checkpoint",
                            format!(
                                "truncated: {len} bytes expected at offset {start}, {} found",
                                done + copied
                            ),
                        ));
                    }
                    crate::output::start_writeback(out, at, n);
                    at += n;
                    done += n;
                }
            }
            Some(hasher) => {
                let mut buf = vec![0u8; CHUNK_BYTES.min(len as usize)];
                while done < len {
                    let n = ((len - done) as usize).min(buf.len());
                    src.read_exact_at(&mut buf[..n], start + done)
                        .map_err(|e| Error::io(path, e))?;
                    hasher.update(&buf[..n]);
                    out.write_all(&buf[..n])
                        .map_err(|e| Error::io(out_path, e))?;
                    crate::output::start_writeback(out, at, n as u64);
                    at += n as u64;
                    done += n as u64;
                }
            }
        }
        Ok(())
    }
}
