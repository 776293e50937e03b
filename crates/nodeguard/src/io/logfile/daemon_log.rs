//! The daemon's own log: `daemon.log` rotated by the same rules as app logs when the daemon's
//! stderr is that file.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::*;

/// The daemon's own log, `<home>/daemon.log`, rotated by the same rules as app logs. `start`
/// opens it as the daemon's stdout and stderr; the daemon then adopts it ([`DaemonLog::adopt`]):
/// its log lines are written here and counted, the file is rotated before a line would take it
/// past `max_size`, and each new file is also put in place of the mirrored descriptors (stdout
/// and stderr), so anything else written there (a panic message) lands in the current file too.
#[derive(Debug)]
pub struct DaemonLog {
    pub(super) path: PathBuf,
    pub(super) max_size: u64,
    pub(super) keep: usize,
    /// Descriptors made to point at each new file.
    pub(super) mirrors: Vec<i32>,
    pub(super) current: std::sync::Mutex<Option<DaemonLogFile>>,
}

#[derive(Debug)]
pub(super) struct DaemonLogFile {
    pub(super) file: File,
    /// Bytes the file holds.
    pub(super) size: u64,
}

impl DaemonLog {
    /// Takes over `path` when our stderr is that very file (as `start` launches the daemon);
    /// `None` when stderr goes elsewhere (a terminal, the journal), which is then left alone.
    #[cfg(unix)]
    pub fn adopt(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let ours = fs::symlink_metadata(path).ok()?;
        let stderr = rustix::fs::fstat(io::stderr()).ok()?;
        let same = ours.is_file() && ours.dev() == stderr.st_dev && ours.ino() == stderr.st_ino;
        if !same {
            return None;
        }
        Self::open(path, DEFAULT_MAX_SIZE, DEFAULT_KEEP, vec![1, 2]).ok()
    }

    #[cfg(not(unix))]
    pub fn adopt(_path: &Path) -> Option<Self> {
        None
    }

    /// Opens `path` for appending (never through a symlink) and points `mirrors` at it.
    pub fn open(path: &Path, max_size: u64, keep: usize, mirrors: Vec<i32>) -> io::Result<Self> {
        let log = Self {
            path: path.to_path_buf(),
            max_size,
            keep,
            mirrors,
            current: std::sync::Mutex::new(None),
        };
        let opened = log.open_current()?;
        *log.lock() = Some(opened);
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Option<DaemonLogFile>> {
        // A panic while holding the lock leaves the state usable: it is only a file and a count.
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn open_current(&self) -> io::Result<DaemonLogFile> {
        let file = open_append(&self.path)?;
        let size = file.metadata()?.len();
        #[cfg(unix)]
        for &fd in &self.mirrors {
            use std::os::fd::AsRawFd;
            // SAFETY: dup2 on a descriptor we own onto a number we were told to mirror; it
            // atomically replaces what that number pointed at.
            if unsafe { libc::dup2(file.as_raw_fd(), fd) } == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(DaemonLogFile { file, size })
    }

    /// Closes the file and opens the one now at its path (SIGHUP after an external `mv`).
    pub fn reopen(&self) -> io::Result<()> {
        let opened = self.open_current()?;
        *self.lock() = Some(opened);
        Ok(())
    }

    /// Appends `bytes` (one whole log line or more), rotating first if they would take the file
    /// past `max_size`. Counts only what the file took.
    pub fn write_record(&self, bytes: &[u8]) -> io::Result<()> {
        let mut current = self.lock();
        let size = current.as_ref().map_or(0, |c| c.size);
        let len = bytes.len() as u64;
        if self.max_size > 0 && size > 0 && size.saturating_add(len) > self.max_size {
            match shift_rotated(&self.path, self.keep).and_then(|()| self.open_current()) {
                Ok(opened) => *current = Some(opened),
                Err(error) => {
                    // Say so in the log itself, and postpone the next attempt by another
                    // max_size bytes rather than failing on every line.
                    if let Some(current) = current.as_mut() {
                        current.size = 0;
                        let note = format!(
                            "nodeguard: cannot rotate {}: {error}\n",
                            self.path.display()
                        );
                        let _ =
                            write_counting(&mut current.file, note.as_bytes(), &mut current.size);
                    }
                }
            }
        }
        let Some(current) = current.as_mut() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        write_counting(&mut current.file, bytes, &mut current.size)
    }
}
