//! A zip writer for `torch.save`-compatible archives: every entry stored uncompressed with
//! its data aligned to [`RECORD_ALIGNMENT`] bytes, zip64 where sizes or offsets need it.
//!
//! This follows PyTorch's `PyTorchStreamWriter` (`caffe2/serialize/inline_container.cc`):
//! records are `STORED`, and the local header carries an extra field with id `FB` whose
//! padding puts the record's first byte at a multiple of 64, so that readers can memory-map
//! records (`torch.load(mmap=True)`). The zip format itself is PKWARE's APPNOTE.TXT
//! (sections 4.3.7 local header, 4.3.12 central directory, 4.3.14–4.3.16 zip64 end records).

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};

/// Alignment of every record's data, as `PyTorchStreamWriter` writes it (`kFieldAlignment`).
pub const RECORD_ALIGNMENT: u64 = 64;

/// Header id of the padding extra field (`FB`, as PyTorch writes it).
const PADDING_EXTRA_ID: u16 = 0x4246;
/// Header id of the zip64 extended information extra field.
const ZIP64_EXTRA_ID: u16 = 0x0001;
/// Sizes and offsets at or above this are stored in zip64 extra fields.
const ZIP64_LIMIT: u64 = 0xFFFF_FFFF;
/// Entry counts at or above this need the zip64 end of central directory.
const ZIP64_COUNT_LIMIT: usize = 0xFFFF;
/// General purpose flag bit 11: names are UTF-8.
const FLAG_UTF8: u16 = 1 << 11;
/// MS-DOS date of 1980-01-01 (the zip epoch): a fixed date keeps outputs reproducible.
const DOS_DATE: u16 = (1 << 5) | 1;

struct CentralEntry {
    name: String,
    offset: u64,
    size: u64,
    crc32: u32,
}

/// Writes a zip file entry by entry. Sizes are declared up front (tensor sizes are known),
/// the CRC-32 is patched into the local header once the data is written.
pub struct ZipWriter<'a> {
    out: &'a mut File,
    pos: u64,
    entries: Vec<CentralEntry>,
    open: Option<(u64, u64)>,
}

fn version_needed(zip64: bool) -> u16 {
    if zip64 {
        45
    } else {
        20
    }
}

impl<'a> ZipWriter<'a> {
    /// A writer at the start of `out` (an empty file).
    pub fn new(out: &'a mut File) -> ZipWriter<'a> {
        ZipWriter {
            out,
            pos: 0,
            entries: vec![],
            open: None,
        }
    }

    /// Starts entry `name` of `size` bytes; the caller then writes exactly `size` bytes to
    /// [`ZipWriter::file`] and calls [`ZipWriter::finish_entry`] with their CRC-32.
    pub fn start_entry(&mut self, name: &str, size: u64) -> io::Result<()> {
        assert!(
            self.open.is_none(),
            "finish_entry before starting another entry"
        );
        let zip64 = size >= ZIP64_LIMIT;
        let offset = self.pos;
        let mut extra = Vec::new();
        if zip64 {
            extra.extend_from_slice(&ZIP64_EXTRA_ID.to_le_bytes());
            extra.extend_from_slice(&16u16.to_le_bytes());
            extra.extend_from_slice(&size.to_le_bytes());
            extra.extend_from_slice(&size.to_le_bytes());
        }
        // Pad so that the data starts on an alignment boundary; the padding field has a
        // 4-byte header, so it may need to span into the next boundary.
        let before = offset + 30 + name.len() as u64 + extra.len() as u64 + 4;
        let pad = (RECORD_ALIGNMENT - before % RECORD_ALIGNMENT) % RECORD_ALIGNMENT;
        extra.extend_from_slice(&PADDING_EXTRA_ID.to_le_bytes());
        extra.extend_from_slice(&(pad as u16).to_le_bytes());
        extra.extend(std::iter::repeat_n(b'Z', pad as usize));

        let mut h = Vec::with_capacity(30 + name.len() + extra.len());
        h.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        h.extend_from_slice(&version_needed(zip64).to_le_bytes());
        h.extend_from_slice(&FLAG_UTF8.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes()); // method: stored
        h.extend_from_slice(&0u16.to_le_bytes()); // time
        h.extend_from_slice(&DOS_DATE.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes()); // CRC-32, patched in finish_entry
        let small = if zip64 {
            ZIP64_LIMIT as u32
        } else {
            size as u32
        };
        h.extend_from_slice(&small.to_le_bytes());
        h.extend_from_slice(&small.to_le_bytes());
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        h.extend_from_slice(name.as_bytes());
        h.extend_from_slice(&extra);
        self.out.write_all(&h)?;
        self.pos += h.len() as u64;
        debug_assert_eq!(self.pos % RECORD_ALIGNMENT, 0);
        self.entries.push(CentralEntry {
            name: name.to_string(),
            offset,
            size,
            crc32: 0,
        });
        self.open = Some((offset, self.pos + size));
        Ok(())
    }

    /// The file to write the open entry's data to.
    pub fn file(&mut self) -> &mut File {
        self.out
    }

    /// Ends the open entry: checks that its declared size was written and patches its CRC.
    pub fn finish_entry(&mut self, crc32: u32) -> io::Result<()> {
        let (offset, end) = self.open.take().expect("an entry is open");
        let at = self.out.stream_position()?;
        if at != end {
            let (name, size) = self
                .entries
                .last()
                .map(|e| (e.name.as_str(), e.size))
                .unwrap_or(("", 0));
            let written = at as i64 - (end - size) as i64;
            return Err(io::Error::other(format!(
                "zip entry '{name}': {written} bytes written, {size} declared"
            )));
        }
        self.out.seek(SeekFrom::Start(offset + 14))?;
        self.out.write_all(&crc32.to_le_bytes())?;
        self.out.seek(SeekFrom::Start(end))?;
        self.pos = end;
        if let Some(e) = self.entries.last_mut() {
            e.crc32 = crc32;
        }
        Ok(())
    }

    /// Writes a whole small entry from memory.
    pub fn write_entry(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.start_entry(name, data.len() as u64)?;
        self.out.write_all(data)?;
        self.finish_entry(crc32fast::hash(data))
    }

    /// Writes the central directory and end records.
    pub fn finish(self) -> io::Result<()> {
        let cd_start = self.pos;
        let mut cd = Vec::new();
        for e in &self.entries {
            let mut extra = Vec::new();
            let big_size = e.size >= ZIP64_LIMIT;
            let big_offset = e.offset >= ZIP64_LIMIT;
            if big_size || big_offset {
                let mut fields = Vec::new();
                if big_size {
                    fields.extend_from_slice(&e.size.to_le_bytes());
                    fields.extend_from_slice(&e.size.to_le_bytes());
                }
                if big_offset {
                    fields.extend_from_slice(&e.offset.to_le_bytes());
                }
                extra.extend_from_slice(&ZIP64_EXTRA_ID.to_le_bytes());
                extra.extend_from_slice(&(fields.len() as u16).to_le_bytes());
                extra.extend_from_slice(&fields);
            }
            let zip64 = big_size || big_offset;
            let size32 = if big_size {
                ZIP64_LIMIT as u32
            } else {
                e.size as u32
            };
            let offset32 = if big_offset {
                ZIP64_LIMIT as u32
            } else {
                e.offset as u32
            };
            cd.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            cd.extend_from_slice(&version_needed(zip64).to_le_bytes()); // made by (MS-DOS)
            cd.extend_from_slice(&version_needed(zip64).to_le_bytes());
            cd.extend_from_slice(&FLAG_UTF8.to_le_bytes());
            cd.extend_from_slice(&0u16.to_le_bytes());
            cd.extend_from_slice(&0u16.to_le_bytes());
            cd.extend_from_slice(&DOS_DATE.to_le_bytes());
            cd.extend_from_slice(&e.crc32.to_le_bytes());
            cd.extend_from_slice(&size32.to_le_bytes());
            cd.extend_from_slice(&size32.to_le_bytes());
            cd.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            cd.extend_from_slice(&(extra.len() as u16).to_le_bytes());
            cd.extend_from_slice(&0u16.to_le_bytes()); // comment length
            cd.extend_from_slice(&0u16.to_le_bytes()); // disk number
            cd.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
            cd.extend_from_slice(&0u32.to_le_bytes()); // external attributes
            cd.extend_from_slice(&offset32.to_le_bytes());
            cd.extend_from_slice(e.name.as_bytes());
            cd.extend_from_slice(&extra);
        }
        let cd_size = cd.len() as u64;
        let count = self.entries.len();
        let zip64_end =
            count >= ZIP64_COUNT_LIMIT || cd_start >= ZIP64_LIMIT || cd_size >= ZIP64_LIMIT;
        if zip64_end {
            let end64 = cd_start + cd_size;
            cd.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
            cd.extend_from_slice(&44u64.to_le_bytes()); // size of the rest of this record
            cd.extend_from_slice(&45u16.to_le_bytes());
            cd.extend_from_slice(&45u16.to_le_bytes());
            cd.extend_from_slice(&0u32.to_le_bytes());
            cd.extend_from_slice(&0u32.to_le_bytes());
            cd.extend_from_slice(&(count as u64).to_le_bytes());
            cd.extend_from_slice(&(count as u64).to_le_bytes());
            cd.extend_from_slice(&cd_size.to_le_bytes());
            cd.extend_from_slice(&cd_start.to_le_bytes());
            cd.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
            cd.extend_from_slice(&0u32.to_le_bytes());
            cd.extend_from_slice(&end64.to_le_bytes());
            cd.extend_from_slice(&1u32.to_le_bytes());
        }
        let count16 = if zip64_end { 0xFFFF } else { count as u16 };
        cd.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        cd.extend_from_slice(&0u16.to_le_bytes());
        cd.extend_from_slice(&0u16.to_le_bytes());
        cd.extend_from_slice(&count16.to_le_bytes());
        cd.extend_from_slice(&count16.to_le_bytes());
        cd.extend_from_slice(
            &(if zip64_end {
                ZIP64_LIMIT as u32
            } else {
                cd_size as u32
            })
            .to_le_bytes(),
        );
        cd.extend_from_slice(
            &(if zip64_end {
                ZIP64_LIMIT as u32
            } else {
                cd_start as u32
            })
            .to_le_bytes(),
        );
        cd.extend_from_slice(&0u16.to_le_bytes());
        self.out.write_all(&cd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn entries_are_aligned_stored_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.zip");
        let mut f = File::create(&path).unwrap();
        let mut w = ZipWriter::new(&mut f);
        w.write_entry("archive/data.pkl", b"hello").unwrap();
        let big: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        w.start_entry("archive/data/0", big.len() as u64).unwrap();
        w.file().write_all(&big).unwrap();
        w.finish_entry(crc32fast::hash(&big)).unwrap();
        w.finish().unwrap();
        drop(f);
        let mut z = zip::ZipArchive::new(File::open(&path).unwrap()).unwrap();
        for (name, want) in [
            ("archive/data.pkl", b"hello".to_vec()),
            ("archive/data/0", big),
        ] {
            let mut e = z.by_name(name).unwrap();
            assert_eq!(e.data_start() % RECORD_ALIGNMENT, 0);
            assert_eq!(e.compression(), zip::CompressionMethod::Stored);
            let mut got = vec![];
            e.read_to_end(&mut got).unwrap();
            assert_eq!(got, want);
        }
    }
}
