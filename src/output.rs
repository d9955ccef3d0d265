//! Safe writing of an output file: a temporary file in the output's folder, synced and
//! renamed into place only when complete, so that an error or a crash never leaves a
//! partial file under the output's name, and the source is never written over.
//!
//! The temporary file is named `.weightmap-<pid>-XXXXXX.tmp`. SIGINT and SIGTERM remove
//! it before the process ends (a watcher thread, [`signal_hook`]); after a `kill -9` or a
//! power cut, the next output written to the same folder removes leftovers whose process
//! has ended, and reports those it cannot attribute.

use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

/// Permissions of the written file (temporary files are created private, 0600).
const OUTPUT_MODE: u32 = 0o644;

/// An output being written; dropped without [`OutputFile::commit`], it removes itself.
pub struct OutputFile {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
    _pending: Pending,
}

/// Takes a temporary file off the signal watcher's list when the output is dropped.
struct Pending(PathBuf);

impl Drop for Pending {
    fn drop(&mut self) {
        set_pending(&self.0, false);
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Start of every temporary file's name; the process id and a random part follow.
const TMP_PREFIX: &str = ".weightmap-";
/// End of every temporary file's name.
const TMP_SUFFIX: &str = ".tmp";

/// Temporary files being written, removed by the signal watcher on SIGINT/SIGTERM.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static WATCH: Once = Once::new();

/// Starts, once, a thread that waits for SIGINT or SIGTERM, removes the pending temporary
/// files and ends the process as the signal would have. The work happens on a thread,
/// not in a signal handler, so it may take locks and call the file system.
fn watch_signals() {
    WATCH.call_once(|| {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
            return; // Without the watcher an interrupt leaves a file the next run reports.
        };
        std::thread::spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
                for path in pending.iter() {
                    let _ = std::fs::remove_file(path);
                }
                // Ends the process with the signal (exit status 128 + signal), the lock held
                // so that no commit renames a file after its removal.
                let _ = signal_hook::low_level::emulate_default_handler(signal);
                std::process::exit(128 + signal);
            }
        });
    });
}

fn set_pending(path: &Path, pending: bool) {
    let mut list = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    if pending {
        list.push(path.to_path_buf());
    } else {
        list.retain(|p| p != path);
    }
}

/// The process id in a temporary file's name (`.weightmap-<pid>-XXXXXX.tmp`); `None` for
/// other names, including those of older versions (`.weightmap-XXXXXX.tmp`).
fn temp_owner(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(TMP_PREFIX)?.strip_suffix(TMP_SUFFIX)?;
    let (pid, random) = rest.split_once('-')?;
    (!random.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        .then(|| pid.parse().ok())
        .flatten()
}

/// True when no process `pid` exists (`kill(pid, 0)` fails with ESRCH).
fn process_ended(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let r = unsafe { libc::kill(pid, 0) };
    r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Removes the temporary files in `dir` left by weightmap processes that have ended
/// (a `kill -9`, a crash) and reports, on stderr, those whose owner cannot be told.
/// Files of running processes are left alone.
fn clean_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(TMP_PREFIX) || !name.ends_with(TMP_SUFFIX) {
            continue;
        }
        let path = entry.path();
        match temp_owner(name) {
            Some(pid) if pid > 0 && pid != std::process::id() as i32 => {
                if process_ended(pid) && std::fs::remove_file(&path).is_ok() {
                    eprintln!(
                        "weightmap: removed {}, left by an interrupted run (process {pid} has ended)",
                        path.display()
                    );
                }
            }
            Some(_) => {}
            None => eprintln!(
                "weightmap: {} looks like the leftover of an interrupted run; remove it if no weightmap is running",
                path.display()
            ),
        }
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
            // Renaming over a FIFO or a device (/dev/null as root) would replace it with a
            // regular file; only a regular file (or a link, which the rename replaces, not
            // what it points to) may be overwritten.
            let kind = meta.file_type();
            let followed = std::fs::metadata(dest).map(|m| m.is_file()).unwrap_or(true);
            if !(kind.is_file() || kind.is_symlink()) || !followed {
                return Err(Error::invalid(
                    "output",
                    format!(
                        "{} exists and is not a regular file (a FIFO, device or socket); weightmap only replaces regular files, give another name",
                        dest.display()
                    ),
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
        clean_stale(&dir);
        watch_signals();
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{TMP_PREFIX}{}-", std::process::id()))
            .suffix(TMP_SUFFIX)
            .tempfile_in(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        set_pending(tmp.path(), true);
        Ok(OutputFile {
            _pending: Pending(tmp.path().to_path_buf()),
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
        let tmp_path = self.tmp.path().to_path_buf();
        {
            // Held across the rename: the signal watcher either removes the temporary
            // file before it, or finds it renamed and gone from the list.
            let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
            self.tmp
                .persist(&dest)
                .map_err(|e| Error::io(&dest, e.error))?;
            pending.retain(|p| p != &tmp_path);
        }
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
