//! Safe writing of an output file: a temporary file in the output's folder, synced and
//! renamed into place only when complete, so that an error or a crash never leaves a
//! partial file under the output's name, and the source is never written over.

use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Permissions of the written file (temporary files are created private, 0600).
const OUTPUT_MODE: u32 = 0o644;

/// An output being written; dropped without [`OutputFile::commit`], it removes itself.
pub struct OutputFile {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

impl OutputFile {
    /// Prepares to write `dest`. Refuses when `dest` is one of `inputs` (same path or same
    /// file through a link), and when it exists and `force` is false.
    pub fn create(dest: &Path, inputs: &[&Path], force: bool) -> Result<OutputFile> {
        for input in inputs {
            let same_path = match (dest.canonicalize(), input.canonicalize()) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            };
            if same_path || same_file(dest, input) {
                return Err(Error::invalid(
                    "output",
                    format!(
                        "{} is the input {}; write to a new file",
                        dest.display(),
                        input.display()
                    ),
                ));
            }
        }
        if let Ok(meta) = std::fs::symlink_metadata(dest) {
            if meta.is_dir() {
                return Err(Error::invalid(
                    "output",
                    format!("{} is a directory; give a file name", dest.display()),
                ));
            }
            if !force {
                return Err(Error::invalid(
                    "output",
                    format!("{} exists; pass --force to overwrite it", dest.display()),
                ));
            }
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".weightmap-")
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        Ok(OutputFile {
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    /// The file to write to.
    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// The final path (for error messages).
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Syncs the data, renames the temporary file to the output's name and syncs the
    /// folder, so that the rename itself survives a crash.
    pub fn commit(self) -> Result<()> {
        let dest = self.dest;
        let f = self.tmp.as_file();
        f.sync_all().map_err(|e| Error::io(&dest, e))?;
        f.set_permissions(std::fs::Permissions::from_mode(OUTPUT_MODE))
            .map_err(|e| Error::io(&dest, e))?;
        self.tmp
            .persist(&dest)
            .map_err(|e| Error::io(&dest, e.error))?;
        if let Some(dir) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Not every filesystem lets a folder be opened for syncing; the data is already
            // safe, so a failure here is not an error.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

/// Smallest range worth a writeback request: below this the syscall costs more than it saves.
const WRITEBACK_MIN_BYTES: u64 = 4 << 20;

/// Asks the kernel to start writing bytes `start..start+len` of `file` to disk now, without
/// waiting (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so that disk writes overlap the
/// copying and the final fsync has little left to do. Advisory: errors are ignored.
pub(crate) fn start_writeback(file: &File, start: u64, len: u64) {
    use std::os::fd::AsRawFd;
    if len < WRITEBACK_MIN_BYTES {
        return;
    }
    // SAFETY: a plain syscall on a file descriptor this process owns; no memory is passed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            start as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}
