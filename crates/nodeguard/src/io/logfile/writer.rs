//! Writing app logs: batched appends of whole lines, rotation by size, files opened without
//! following symlinks, and the byte count kept to what the disk took.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::*;

/// Bytes gathered per file before a write to disk (the writer also writes at the end of each batch).
pub(super) const BUFFER: usize = 64 * 1024;

/// A file written in batches: bytes gather in memory until [`BUFFER`] of them are waiting or the
/// batch is flushed. Unlike a `BufWriter`, the buffer is let go at each flush, so an app that is
/// quiet holds no buffer between batches (two 64 KiB `BufWriter`s per app kept at least a page of
/// each resident for every app). Dropping it writes what is waiting.
///
/// It counts the bytes the file really holds: a write the disk refuses (full, failing) adds only
/// what it took, and a line it cut short is ended with a newline before the next one.
pub(super) struct Batched {
    pub(super) file: File,
    pub(super) pending: Vec<u8>,
    /// Bytes in the file: its size at open plus every byte a write call took since.
    pub(super) on_disk: u64,
    /// The last write stopped mid-line: the next one starts with a newline.
    pub(super) torn: bool,
}

impl Batched {
    pub(super) fn new(file: File, on_disk: u64) -> Self {
        Self {
            file,
            pending: Vec::new(),
            on_disk,
            torn: false,
        }
    }

    /// Bytes in the file plus bytes waiting to be written.
    pub(super) fn len(&self) -> u64 {
        self.on_disk.saturating_add(self.pending.len() as u64)
    }

    pub(super) fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.pending.len() + bytes.len() > BUFFER {
            self.write_pending()?;
            if bytes.len() >= BUFFER {
                return self.write_counted(bytes);
            }
        }
        self.pending.extend_from_slice(bytes);
        Ok(())
    }

    /// Writes what is waiting; on an error those bytes are dropped (the caller reports it), so a
    /// failing disk cannot make the buffer grow.
    pub(super) fn write_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let written = self.write_counted(&pending);
        // Keep the allocation for the next batch, as before.
        self.pending = pending;
        self.pending.clear();
        written
    }

    /// Writes `bytes` to the file, adding to `on_disk` exactly what each write call took.
    pub(super) fn write_counted(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.torn {
            self.write_raw(b"\n")?;
            self.torn = false;
        }
        let start = self.on_disk;
        let result = self.write_raw(bytes);
        if result.is_err() {
            // The disk took part of `bytes`: cut the file back to the last whole line it took.
            let taken = usize::try_from(self.on_disk.saturating_sub(start)).unwrap_or(usize::MAX);
            let taken = bytes.get(..taken).unwrap_or(bytes);
            if taken.last().is_some_and(|&last| last != b'\n') {
                let whole = taken
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |at| at + 1) as u64;
                match self.file.set_len(start.saturating_add(whole)) {
                    Ok(()) => self.on_disk = start.saturating_add(whole),
                    Err(_) => self.torn = true,
                }
            }
        }
        result
    }

    pub(super) fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        write_counting(&mut self.file, bytes, &mut self.on_disk)
    }

    /// Writes what is waiting and lets the buffer go.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        let written = self.write_pending();
        self.pending = Vec::new();
        written
    }
}

impl Drop for Batched {
    fn drop(&mut self) {
        // Nobody is left to report to; the line is lost only if the disk refuses it.
        let _ = self.write_pending();
    }
}

/// One open log file.
pub(super) struct Sink {
    pub(super) path: PathBuf,
    pub(super) file: Batched,
    /// Bytes of the file not counted towards rotation: after a failed rotation, the file's size
    /// then, so the next attempt comes another `max_size` bytes later.
    pub(super) rotation_base: u64,
}

impl Sink {
    pub(super) fn open(path: &Path) -> Result<Self, LogError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_private_dirs(parent).map_err(|source| LogError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let open_err = |source| LogError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut file = open_append(path).map_err(open_err)?;
        let size = file.metadata().map_err(open_err)?.len();
        // A previous run that died mid-line left a fragment; end it so our first line stays whole.
        let torn = size > 0 && last_byte(&mut file).map_err(open_err)? != Some(b'\n');
        let mut batched = Batched::new(file, size);
        batched.torn = torn;
        Ok(Self {
            path: path.to_path_buf(),
            file: batched,
            rotation_base: 0,
        })
    }

    /// Bytes that count towards rotation: in the file or waiting to be written.
    pub(super) fn size(&self) -> u64 {
        self.file.len().saturating_sub(self.rotation_base)
    }

    pub(super) fn write_record(
        &mut self,
        record: &[u8],
        max_size: u64,
        keep: usize,
    ) -> Result<(), LogError> {
        let len = record.len() as u64;
        let size = self.size();
        if max_size > 0 && size > 0 && size.saturating_add(len) > max_size {
            self.rotate(keep)?;
        }
        self.append(record)
    }

    pub(super) fn append(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        self.file
            .write_all(bytes)
            .map_err(|source| LogError::Write {
                path: self.path.clone(),
                source,
            })
    }

    pub(super) fn flush(&mut self) -> Result<(), LogError> {
        self.file.flush().map_err(|source| LogError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// Moves the current file to `.1` (or deletes it when `keep` is 0) and starts a new one.
    pub(super) fn rotate(&mut self, keep: usize) -> Result<(), LogError> {
        self.flush()?;
        if self.file.on_disk == 0 {
            // Nothing reached the disk (it refused every write): a rotation would only keep an
            // empty file.
            return Ok(());
        }
        let reopened = shift_rotated(&self.path, keep).and_then(|()| open_append(&self.path));
        match reopened {
            Ok(file) => {
                self.file = Batched::new(file, 0);
                self.rotation_base = 0;
            }
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "log rotation failed; writing on to the current file");
                // The next attempt comes after another `max_size` bytes.
                self.rotation_base = self.file.on_disk;
            }
        }
        Ok(())
    }

    /// Empties the log: the current file is replaced by an empty one, rotated files are deleted.
    pub(super) fn clear(&mut self, keep: usize) -> Result<(), LogError> {
        self.flush()?;
        let write_err = |source| LogError::Write {
            path: self.path.clone(),
            source,
        };
        remove_rotated_from(&self.path, 1, keep).map_err(write_err)?;
        remove_if_exists(&self.path).map_err(write_err)?;
        let file = open_append(&self.path).map_err(|source| LogError::Open {
            path: self.path.clone(),
            source,
        })?;
        self.file = Batched::new(file, 0);
        self.rotation_base = 0;
        Ok(())
    }
}

/// `x.log.<keep>` is deleted, `.i` → `.i+1`, then `x.log` → `x.log.1` (deleted when `keep` is 0).
/// Rotated files past `keep`, left by an earlier, larger `keep`, are deleted too.
pub(super) fn shift_rotated(path: &Path, keep: usize) -> io::Result<()> {
    if keep == 0 {
        remove_rotated_from(path, 1, 0)?;
        return remove_if_exists(path);
    }
    remove_rotated_from(path, keep, keep)?;
    for index in (1..keep).rev() {
        match fs::rename(rotated_path(path, index), rotated_path(path, index + 1)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
    }
    fs::rename(path, rotated_path(path, 1))
}

/// Deletes `.first`, `.first+1`, … while they exist, and always up to `.keep`.
pub(super) fn remove_rotated_from(path: &Path, first: usize, keep: usize) -> io::Result<()> {
    let mut index = first.max(1);
    loop {
        let existed = match fs::remove_file(rotated_path(path, index)) {
            Ok(()) => true,
            Err(error) if error.kind() == io::ErrorKind::NotFound => false,
            Err(error) => return Err(error),
        };
        if !existed && index >= keep {
            return Ok(());
        }
        index += 1;
    }
}

pub(super) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Opens (creating it 0600 if missing) a log file for appending, refusing to follow a symlink at
/// `path` and refusing anything but a regular file there (a fifo would block the writer).
pub fn open_log_file(path: &Path) -> io::Result<File> {
    open_append(path)
}

pub(super) fn open_append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    // Readable too, so a leftover fragment can be seen through the same descriptor.
    options.read(true).create(true).append(true);
    open_private_regular(path, options)
}

/// Opens `path` with `options`, creating it 0600, without following a symlink at its last
/// component (`O_NOFOLLOW`) or blocking on a fifo (`O_NONBLOCK`), and refuses anything but a
/// regular file there. Log files and pid files, which may sit at paths the user chose, go through
/// here.
pub fn open_private_regular(path: &Path, mut options: OpenOptions) -> io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    }
    let file = options.open(path).map_err(|error| {
        #[cfg(unix)]
        if error.raw_os_error() == Some(libc::ELOOP) {
            return io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is a symbolic link; refusing to follow it",
            );
        }
        error
    })?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is not a regular file",
        ));
    }
    Ok(file)
}

pub(super) fn create_private_dirs(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// The file's last byte (`None` when empty), read through the open file itself (a pread, so the
/// append position is untouched) rather than by opening its path again.
pub(super) fn last_byte(file: &mut File) -> io::Result<Option<u8>> {
    let len = file.metadata()?.len();
    let Some(at) = len.checked_sub(1) else {
        return Ok(None);
    };
    let mut last = [0u8];
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut last, at)?;
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek, SeekFrom};
        file.seek(SeekFrom::Start(at))?;
        file.read_exact(&mut last)?;
    }
    Ok(Some(last[0]))
}

/// One app's log files. See the module docs for the threading design.
pub struct LogFiles {
    pub(super) spec: LogSpec,
    /// `None` when its path is /dev/null (PM2's way to keep no log): nothing is opened or written.
    pub(super) out: Option<Sink>,
    /// `None` when both streams go to one file, or when its path is /dev/null (`err_null`).
    pub(super) err: Option<Sink>,
    pub(super) err_null: bool,
    /// Both streams, interleaved (PM2's `log_file`).
    pub(super) combined: Option<Sink>,
    pub(super) record: Vec<u8>,
    pub(super) clock: LocalClock,
}

impl LogFiles {
    /// Opens (creating as needed) both files for appending. Missing directories are created 0700,
    /// files 0600.
    pub fn open(spec: LogSpec) -> Result<Self, LogError> {
        let null = |path: &Path| path == Path::new("/dev/null");
        let out = if null(&spec.out_path) {
            None
        } else {
            Some(Sink::open(&spec.out_path)?)
        };
        let err_null = null(&spec.err_path);
        let err = if spec.err_path == spec.out_path || err_null {
            None
        } else {
            Some(Sink::open(&spec.err_path)?)
        };
        let combined = match &spec.combined_path {
            Some(path) if null(path) => None,
            Some(path) if *path == spec.out_path || *path == spec.err_path => {
                return Err(LogError::Open {
                    path: path.clone(),
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "the combined log_file cannot be the out or error file too",
                    ),
                })
            }
            Some(path) => Some(Sink::open(path)?),
            None => None,
        };
        Ok(Self {
            spec,
            out,
            err,
            err_null,
            combined,
            record: Vec::new(),
            clock: LocalClock::default(),
        })
    }

    pub fn spec(&self) -> &LogSpec {
        &self.spec
    }

    /// Appends `line` and a newline (after a timestamp when asked), rotating first if the file
    /// would exceed its size. Buffered: call [`flush`](Self::flush) at the end of a batch.
    pub fn write_line(&mut self, stream: Stream, line: &[u8]) -> Result<(), LogError> {
        self.write_record_of(stream, line, None)
    }

    /// [`write_line`](Self::write_line) for a line of app `json.0`'s instance `json.1`: with
    /// `LogSpec::json`, the record is PM2's JSON object
    /// `{"message":…,"timestamp":…,"type":"out"|"err","process_id":…,"app_name":…}` (the time in
    /// `log_date_format` when set, else RFC 3339 UTC, as PM2's `toISOString`).
    pub fn write_record_of(
        &mut self,
        stream: Stream,
        line: &[u8],
        json: Option<(&str, u32)>,
    ) -> Result<(), LogError> {
        self.record.clear();
        if let (true, Some((app_name, process_id))) = (self.spec.json, json) {
            let mut stamp = Vec::new();
            match &self.spec.date_format {
                Some(format) => self.clock.stamp(format, &mut stamp),
                None => stamp.extend_from_slice(timestamp(SystemTime::now()).as_bytes()),
            }
            let record = JsonRecord {
                message: &String::from_utf8_lossy(line),
                timestamp: &String::from_utf8_lossy(&stamp),
                kind: match stream {
                    Stream::Out => "out",
                    Stream::Err => "err",
                },
                process_id,
                app_name,
            };
            // Serialising borrowed strings into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut self.record, &record);
        } else if let Some(format) = &self.spec.date_format {
            self.clock.stamp(format, &mut self.record);
            self.record.push(b' ');
        } else if self.spec.timestamps {
            self.record
                .extend_from_slice(timestamp(SystemTime::now()).as_bytes());
            self.record.push(b' ');
        }
        if !(self.spec.json && json.is_some()) {
            self.record.extend_from_slice(line);
        }
        self.record.push(b'\n');
        let sink = match (stream, &mut self.err) {
            (Stream::Err, Some(err)) => Some(err),
            (Stream::Err, None) if self.err_null => None,
            _ => self.out.as_mut(),
        };
        let written = sink.map_or(Ok(()), |sink| {
            sink.write_record(&self.record, self.spec.max_size, self.spec.keep)
        });
        // The combined file gets the line even when the stream's own file refused it.
        let combined = self.combined.as_mut().map_or(Ok(()), |combined| {
            combined.write_record(&self.record, self.spec.max_size, self.spec.keep)
        });
        written.and(combined)
    }

    /// Writes buffered lines to disk. Both files are flushed even if the first fails.
    pub fn flush(&mut self) -> Result<(), LogError> {
        let out = self.out.as_mut().map_or(Ok(()), Sink::flush);
        let err = self.err.as_mut().map_or(Ok(()), Sink::flush);
        let combined = self.combined.as_mut().map_or(Ok(()), Sink::flush);
        out.and(err).and(combined)
    }

    /// Empties the logs (`nodeguard flush`): current files start over empty, rotated ones are
    /// deleted. Readers following a file see it replaced and start on the new one.
    pub fn clear(&mut self) -> Result<(), LogError> {
        let keep = self.spec.keep;
        if let Some(out) = &mut self.out {
            out.clear(keep)?;
        }
        if let Some(err) = &mut self.err {
            err.clear(keep)?;
        }
        if let Some(combined) = &mut self.combined {
            combined.clear(keep)?;
        }
        Ok(())
    }
}

impl Drop for LogFiles {
    fn drop(&mut self) {
        if let Err(error) = self.flush() {
            tracing::warn!(%error, "log lines lost at close");
        }
    }
}

/// Writes all of `bytes`, adding to `count` what each write call took.
pub(super) fn write_counting(file: &mut File, mut bytes: &[u8], count: &mut u64) -> io::Result<()> {
    while !bytes.is_empty() {
        match file.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(taken) => {
                *count = count.saturating_add(taken as u64);
                bytes = bytes.get(taken..).unwrap_or_default();
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// One log line as PM2's `log_type: 'json'` writes it.
#[derive(serde::Serialize)]
struct JsonRecord<'a> {
    message: &'a str,
    timestamp: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    process_id: u32,
    app_name: &'a str,
}
