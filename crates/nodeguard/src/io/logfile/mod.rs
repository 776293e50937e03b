//! Per-app log files: each app's stdout and stderr appended as whole lines, rotated by size.
//!
//! # Who writes, on which thread
//!
//! [`LogFiles`] is plain synchronous std I/O and is `Send`. It is meant to be owned by the one
//! output writer thread in `output.rs`, next to the terminal: that thread already receives every
//! app's lines whole, in order, from the reader tasks. For each line it calls
//! [`LogFiles::write_line`] on that app's `LogFiles`, and once the queue is drained (the end of a
//! batch) it calls [`LogFiles::flush`], so `nodeguard logs` sees a line within one batch. Apps are
//! never blocked by disk or by readers of the files: their pipes are drained by async tasks into a
//! bounded queue, and only a disk slower than the apps' output (the queue full) pushes back on
//! them; lines are then delayed, never dropped. Dropping a `LogFiles` flushes it, so buffered
//! lines survive an app's removal and the writer's shutdown.
//!
//! # Rotation
//!
//! Before a line would take a file past [`LogSpec::max_size`], `x.log` is renamed `x.log.1` (after
//! `x.log.1` → `x.log.2` … up to [`LogSpec::keep`], deleting the oldest) and a new `x.log` is
//! started. A line is never split across files: a line longer than `max_size` gets a file of its
//! own. If a rename fails, the line goes to the current file anyway (a log over its size beats a
//! lost line) and rotation is retried after another `max_size` bytes. Sizes count the bytes the
//! disk took: on a full disk a failed or short write adds only what was written, so a file that
//! never filled is never rotated (and no empty rotated files pile up).
//!
//! # Symlinks
//!
//! Every log file (and `daemon.log`, see [`open_log_file`]) is opened with `O_NOFOLLOW` and must
//! be a regular file: a symlink or fifo planted at a log's path is refused with an error, so the
//! supervisor never appends to whatever file a link points at. Renames and deletions during
//! rotation act on the names themselves and never follow links either.

mod daemon_log;
mod writer;

pub use daemon_log::DaemonLog;
#[allow(unused_imports)]
use writer::*;
pub use writer::{open_log_file, open_private_regular, LogFiles};

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::core::date_format::{DateFormat, LocalTime};
use crate::platform;
use std::sync::Arc;

/// Default size at which a log file is rotated: 10 MiB, the same as pm2-logrotate's `max_size`
/// (PM2 core itself never rotates; its logs grow until someone installs that module or flushes).
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;

/// Default number of rotated files kept per stream: 5, against pm2-logrotate's `retain` of 30.
/// With two streams per app that bounds an app at 2 × 6 × 10 MiB = 120 MiB, which stays modest
/// with many apps or `-i N` clusters (pm2-logrotate's defaults allow 310 MiB per stream).
pub const DEFAULT_KEEP: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot create log directory {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot open log file {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot write log file {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read log file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
}

/// Which of the app's streams a line came from; it goes to the same stream of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Stdout,
    Stderr,
}

/// Which of an app's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

impl From<StreamKind> for Stream {
    fn from(kind: StreamKind) -> Self {
        match kind {
            StreamKind::Stdout => Stream::Out,
            StreamKind::Stderr => Stream::Err,
        }
    }
}

/// Where and how one app's output is logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSpec {
    pub out_path: PathBuf,
    /// May equal `out_path`: both streams then share one file (and one rotation).
    pub err_path: PathBuf,
    /// Rotate before a file would exceed this many bytes; 0 never rotates.
    pub max_size: u64,
    /// Rotated files kept per stream (`x.log.1` … `x.log.<keep>`); 0 keeps none.
    pub keep: usize,
    /// Prefix every line with an RFC 3339 UTC timestamp and a space.
    pub timestamps: bool,
    /// Prefix every line with its local time in this format and a space (PM2's
    /// `log_date_format`); wins over `timestamps`.
    pub date_format: Option<Arc<DateFormat>>,
    /// A third file getting both streams' lines, interleaved as they come (PM2's `log_file`).
    pub combined_path: Option<PathBuf>,
    /// Each line as a JSON object, as PM2's `log_type: 'json'` writes it (see
    /// [`LogFiles::write_record_of`]).
    pub json: bool,
}

impl LogSpec {
    /// `<home>/logs/<app>-out.log` and `<app>-err.log` with the default rotation, no timestamps.
    /// The name is escaped as in a URL: bytes other than ASCII letters, digits, `.`, `_` and `-`
    /// become `%XX` (`a/b` → `a%2Fb`), so a name cannot reach outside the logs directory and
    /// two names never share a file (`a/b` and `a-b` stay apart).
    pub fn default_for(home: &Path, app_name: &str) -> Self {
        let name = log_file_stem(app_name);
        let dir = logs_dir(home);
        Self {
            out_path: dir.join(format!("{name}-out.log")),
            err_path: dir.join(format!("{name}-err.log")),
            max_size: DEFAULT_MAX_SIZE,
            keep: DEFAULT_KEEP,
            timestamps: false,
            date_format: None,
            json: false,
            combined_path: None,
        }
    }

    /// `<home>/logs/<app>-combined.log`: where `log_file: true` (`-l` without a path) puts both
    /// streams. The `-combined.log` ending keeps it apart from every app's `-out.log`/`-err.log`.
    pub fn default_combined(home: &Path, app_name: &str) -> PathBuf {
        logs_dir(home).join(format!("{}-combined.log", log_file_stem(app_name)))
    }
}

/// The local time (the supervisor's `TZ`, as PM2's dayjs uses) of now, worked out once per
/// second: each line then costs a clock read and a few digits.
/// The rendering of the last stamp is kept too: lines of a flood within one millisecond (or one
/// second, for a format without `SSS`) copy it instead of rendering again.
#[derive(Debug, Default)]
pub struct LocalClock {
    second: Option<i64>,
    time: LocalTime,
    /// (second, millisecond) that `stamp` was rendered for.
    rendered: Option<(i64, u32)>,
    stamp: Vec<u8>,
}

impl LocalClock {
    /// Appends now, in local time, as `format`.
    pub fn stamp(&mut self, format: &DateFormat, out: &mut Vec<u8>) {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let second = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
        let millis = if format.uses_millis() {
            since.subsec_millis()
        } else {
            0
        };
        if self.rendered != Some((second, millis)) {
            if self.second != Some(second) {
                self.time = local_time(second);
                self.second = Some(second);
            }
            self.time.millis = millis;
            self.stamp.clear();
            format.render(&self.time, &mut self.stamp);
            self.rendered = Some((second, millis));
        }
        out.extend_from_slice(&self.stamp);
    }
}

/// `second` (since the epoch) broken down in local time.
pub fn local_time(second: i64) -> LocalTime {
    use chrono::{Datelike, Offset, TimeZone, Timelike};
    match chrono::Local.timestamp_opt(second, 0).earliest() {
        Some(time) => LocalTime {
            year: time.year(),
            month: time.month(),
            day: time.day(),
            hour: time.hour(),
            minute: time.minute(),
            second: time.second(),
            millis: 0,
            offset_seconds: time.offset().fix().local_minus_utc(),
        },
        None => LocalTime::default(),
    }
}

/// An app name as the start of its log files' names: ASCII letters, digits, `.`, `_` and `-` as
/// they are, every other byte `%XX`; a leading `.` too, so no name makes a hidden file.
pub fn log_file_stem(app_name: &str) -> String {
    let mut stem = String::with_capacity(app_name.len());
    for (index, byte) in app_name.bytes().enumerate() {
        let plain = byte.is_ascii_alphanumeric()
            || matches!(byte, b'_' | b'-')
            || (byte == b'.' && index > 0);
        if plain {
            stem.push(char::from(byte));
        } else {
            stem.push_str(&format!("%{byte:02X}"));
        }
    }
    stem
}

/// The app name a log file stem was made from by [`log_file_stem`], if it was made by it.
pub fn app_name_of_stem(stem: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(stem.len());
    let mut rest = stem.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail.get(..2)?;
            let hex = std::str::from_utf8(hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    let name = String::from_utf8(bytes).ok()?;
    (log_file_stem(&name) == stem).then_some(name)
}

/// `<home>/logs`.
pub fn logs_dir(home: &Path) -> PathBuf {
    home.join("logs")
}

/// Creates `<home>/logs` if needed and makes sure it is ours and private (0700).
/// [`LogFiles::open`] creates missing directories 0700 itself but leaves existing ones alone.
pub fn prepare_logs_dir(home: &Path) -> Result<PathBuf, LogError> {
    let dir = logs_dir(home);
    platform::ensure_private_dir(&dir).map_err(|source| LogError::CreateDir {
        path: dir.clone(),
        source: io::Error::other(source),
    })?;
    Ok(dir)
}

/// The `index`th rotated file of `path`: `x.log` → `x.log.<index>`; index 0 is `path` itself.
pub fn rotated_path(path: &Path, index: usize) -> PathBuf {
    if index == 0 {
        return path.to_path_buf();
    }
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{index}"));
    PathBuf::from(name)
}

/// `time` as RFC 3339 in UTC with milliseconds, e.g. `2024-02-29T12:34:56.789Z`.
pub fn timestamp(time: SystemTime) -> String {
    // Times before 1970 do not occur on a sane clock; they print as the epoch.
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> Self {
            static COUNT: AtomicUsize = AtomicUsize::new(0);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos();
            let dir = std::env::temp_dir().join(format!(
                "nodeguard-{tag}-{}-{}-{nanos}",
                std::process::id(),
                COUNT.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&dir).expect("create temp dir");
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) fn spec(dir: &Path, max_size: u64, keep: usize) -> LogSpec {
        LogSpec {
            out_path: dir.join("app-out.log"),
            err_path: dir.join("app-err.log"),
            max_size,
            keep,
            timestamps: false,
            date_format: None,
            json: false,
            combined_path: None,
        }
    }

    pub(crate) fn line(i: usize) -> Vec<u8> {
        format!("line {i:05} {}", "x".repeat(i % 50)).into_bytes()
    }

    fn lines_of(path: &Path) -> Vec<Vec<u8>> {
        let data = fs::read(path).expect("read log");
        assert!(
            data.is_empty() || data.ends_with(b"\n"),
            "file ends mid-line"
        );
        data.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    #[test]
    fn burst_of_10000_lines_all_there_none_split() {
        let dir = TempDir::new("burst");
        let spec = spec(&dir.0, DEFAULT_MAX_SIZE, DEFAULT_KEEP);
        let mut logs = LogFiles::open(spec.clone()).expect("open");
        for i in 0..10_000 {
            logs.write_line(Stream::Out, &line(i)).expect("write");
            logs.write_line(Stream::Err, &line(i)).expect("write");
        }
        drop(logs); // flushes
        let expected: Vec<_> = (0..10_000).map(line).collect();
        assert_eq!(lines_of(&spec.out_path), expected);
        assert_eq!(lines_of(&spec.err_path), expected);
    }

    #[test]
    fn rotation_keeps_keep_files_and_never_splits_a_line() {
        let dir = TempDir::new("rotate");
        let spec = spec(&dir.0, 4096, 3);
        let mut logs = LogFiles::open(spec.clone()).expect("open");
        for i in 0..10_000 {
            logs.write_line(Stream::Out, &line(i)).expect("write");
        }
        logs.flush().expect("flush");
        let path = &spec.out_path;
        assert!(!rotated_path(path, 4).exists());
        let mut all = Vec::new();
        for index in (0..=3).rev() {
            let file = rotated_path(path, index);
            let size = fs::metadata(&file).expect("rotated file").len();
            assert!(size <= 4096, "{} is {size} bytes", file.display());
            // A rotated file was full: the next line (at most 61 bytes) did not fit.
            assert!(
                index == 0 || size > 4096 - 61,
                "{} is {size} bytes",
                file.display()
            );
            all.extend(lines_of(&file));
        }
        // The four files hold a contiguous run of whole lines ending with the last one.
        let first = 10_000 - all.len();
        let expected: Vec<_> = (first..10_000).map(line).collect();
        assert_eq!(all, expected);
        assert!(!spec.err_path.exists() || lines_of(&spec.err_path).is_empty());
    }

    #[test]
    fn a_line_longer_than_max_size_gets_a_file_of_its_own() {
        let dir = TempDir::new("long");
        let spec = spec(&dir.0, 100, 2);
        let mut logs = LogFiles::open(spec.clone()).expect("open");
        let long = vec![b'y'; 500];
        logs.write_line(Stream::Out, b"before").expect("write");
        logs.write_line(Stream::Out, &long).expect("write");
        logs.write_line(Stream::Out, b"after").expect("write");
        logs.flush().expect("flush");
        let path = &spec.out_path;
        assert_eq!(lines_of(&rotated_path(path, 2)), vec![b"before".to_vec()]);
        assert_eq!(lines_of(&rotated_path(path, 1)), vec![long]);
        assert_eq!(lines_of(path), vec![b"after".to_vec()]);
    }

    #[test]
    fn keep_zero_keeps_no_history() {
        let dir = TempDir::new("keep0");
        let spec = spec(&dir.0, 64, 0);
        let mut logs = LogFiles::open(spec.clone()).expect("open");
        for i in 0..100 {
            logs.write_line(Stream::Out, &line(i)).expect("write");
        }
        logs.flush().expect("flush");
        assert!(!rotated_path(&spec.out_path, 1).exists());
        assert_eq!(lines_of(&spec.out_path).last(), Some(&line(99)));
    }

    #[test]
    fn json_lines_are_pm2s_objects_with_the_text_escaped() {
        let dir = TempDir::new("json");
        let mut spec = spec(&dir.0, 0, 0);
        spec.json = true;
        let mut logs = LogFiles::open(spec.clone()).expect("open");
        logs.write_record_of(Stream::Out, b"said \"hi\"\t\\ \xff", Some(("a/b", 7)))
            .expect("write");
        logs.write_record_of(Stream::Err, b"{not json}", Some(("a/b", 8)))
            .expect("write");
        drop(logs);
        let out = lines_of(&spec.out_path);
        assert_eq!(out.len(), 1);
        let record: serde_json::Value = serde_json::from_slice(&out[0]).expect("a JSON object");
        assert_eq!(record["message"], "said \"hi\"\t\\ \u{fffd}");
        assert_eq!(record["type"], "out");
        assert_eq!(record["process_id"], 7);
        assert_eq!(record["app_name"], "a/b");
        let stamp = record["timestamp"].as_str().expect("a timestamp");
        assert!(stamp.ends_with('Z') && stamp.len() == 24, "{stamp}");
        let err: serde_json::Value =
            serde_json::from_slice(&lines_of(&spec.err_path)[0]).expect("a JSON object");
        assert_eq!(
            (err["message"].as_str(), err["type"].as_str()),
            (Some("{not json}"), Some("err"))
        );
    }

    #[test]
    fn combined_log_gets_both_streams_whole_and_rotates_like_the_others() {
        let dir = TempDir::new("combined");
        let mut spec = spec(&dir.0, 4096, 2);
        let combined = dir.0.join("app-combined.log");
        spec.combined_path = Some(combined.clone());
        spec.date_format = Some(Arc::new(
            DateFormat::parse("YYYY-MM-DD HH:mm:ss.SSS Z").expect("format"),
        ));
        let mut logs = LogFiles::open(spec.clone()).expect("open");
        for i in 0..2_000 {
            logs.write_line(Stream::Out, &line(i)).expect("write");
            logs.write_line(Stream::Err, &line(i)).expect("write");
        }
        drop(logs);
        let mut all = Vec::new();
        for index in (0..=2).rev() {
            let file = rotated_path(&combined, index);
            assert!(fs::metadata(&file).expect("rotated").len() <= 4096);
            all.extend(lines_of(&file));
        }
        assert!(!rotated_path(&combined, 3).exists(), "keep 2");
        // The newest lines, each whole, out then err, each after its stamp.
        let bodies: Vec<Vec<u8>> = all
            .iter()
            .map(|l| {
                let text = String::from_utf8(l.clone()).expect("utf8");
                let (_, body) = text.split_at(31);
                assert_eq!(text.as_bytes()[30], b' ', "{text}");
                body.as_bytes().to_vec()
            })
            .collect();
        let last = 1_999;
        let every: Vec<Vec<u8>> = (0..=last).flat_map(|i| [line(i), line(i)]).collect();
        let expected = every[every.len() - bodies.len()..].to_vec();
        assert_eq!(bodies, expected);
        LogFiles::open(LogSpec {
            combined_path: Some(spec.out_path.clone()),
            ..spec
        })
        .err()
        .expect("the combined file cannot be the out file");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(timestamp(leap), "2024-02-29T12:34:56.789Z");
        let end_of_feb = UNIX_EPOCH + Duration::from_secs(951_782_399);
        assert_eq!(timestamp(end_of_feb), "2000-02-28T23:59:59.000Z");
        let century = UNIX_EPOCH + Duration::from_secs(4_102_444_800);
        assert_eq!(timestamp(century), "2100-01-01T00:00:00.000Z");

        let dir = TempDir::new("stamps");
        let mut spec = spec(&dir.0, DEFAULT_MAX_SIZE, DEFAULT_KEEP);
        spec.timestamps = true;
        let mut logs = LogFiles::open(spec.clone()).expect("open");
        logs.write_line(Stream::Err, b"hello").expect("write");
        drop(logs);
        let lines = lines_of(&spec.err_path);
        assert_eq!(lines.len(), 1);
        let text = String::from_utf8(lines[0].clone()).expect("utf8");
        let (stamp, rest) = text.split_once(' ').expect("a space after the stamp");
        assert_eq!(rest, "hello");
        assert_eq!(stamp.len(), 24, "{stamp}");
        let shape: String = stamp
            .chars()
            .map(|c| if c.is_ascii_digit() { 'd' } else { c })
            .collect();
        assert_eq!(shape, "dddd-dd-ddTdd:dd:dd.dddZ");
    }

    #[test]
    fn reopening_ends_a_leftover_fragment_and_appends() {
        let dir = TempDir::new("reopen");
        let spec = spec(&dir.0, DEFAULT_MAX_SIZE, DEFAULT_KEEP);
        fs::write(&spec.out_path, b"old\npartial").expect("seed");
        let mut logs = LogFiles::open(spec.clone()).expect("open");
        logs.write_line(Stream::Out, b"new").expect("write");
        drop(logs);
        assert_eq!(
            fs::read(&spec.out_path).expect("read"),
            b"old\npartial\nnew\n"
        );
    }

    #[test]
    fn same_path_for_both_streams_is_one_file() {
        let dir = TempDir::new("merged");
        let mut spec = spec(&dir.0, DEFAULT_MAX_SIZE, DEFAULT_KEEP);
        spec.err_path = spec.out_path.clone();
        let mut logs = LogFiles::open(spec.clone()).expect("open");
        logs.write_line(Stream::Out, b"a").expect("write");
        logs.write_line(Stream::Err, b"b").expect("write");
        logs.write_line(Stream::Out, b"c").expect("write");
        drop(logs);
        assert_eq!(fs::read(&spec.out_path).expect("read"), b"a\nb\nc\n");
    }

    #[test]
    fn clear_empties_current_and_rotated_files() {
        let dir = TempDir::new("clear");
        let spec = spec(&dir.0, 256, 2);
        let mut logs = LogFiles::open(spec.clone()).expect("open");
        for i in 0..100 {
            logs.write_line(Stream::Out, &line(i)).expect("write");
        }
        logs.clear().expect("clear");
        logs.write_line(Stream::Out, b"fresh").expect("write");
        logs.flush().expect("flush");
        assert!(!rotated_path(&spec.out_path, 1).exists());
        assert_eq!(lines_of(&spec.out_path), vec![b"fresh".to_vec()]);
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_at_a_log_path_is_refused_and_its_target_untouched() {
        let dir = TempDir::new("symlink");
        let spec = spec(&dir.0, DEFAULT_MAX_SIZE, DEFAULT_KEEP);
        let target = dir.0.join("victim");
        fs::write(&target, b"precious\n").expect("seed");
        std::os::unix::fs::symlink(&target, &spec.out_path).expect("plant");
        let error = match LogFiles::open(spec.clone()) {
            Ok(_) => panic!("opened a log file through a symlink"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("symbolic link"), "{error}");
        assert_eq!(fs::read(&target).expect("read"), b"precious\n");

        // A rotated name that is a link is replaced, never written through.
        fs::remove_file(&spec.out_path).expect("unplant");
        std::os::unix::fs::symlink(&target, rotated_path(&spec.out_path, 1)).expect("plant");
        let mut small = spec.clone();
        small.max_size = 64;
        let mut logs = LogFiles::open(small).expect("open");
        for i in 0..10 {
            logs.write_line(Stream::Out, &line(i)).expect("write");
        }
        drop(logs);
        assert_eq!(fs::read(&target).expect("read"), b"precious\n");
    }

    /// A tmpfs of `kib` KiB mounted on a fresh directory, unmounted on drop. Needs root (the
    /// suite runs as root); anything else fails the test loudly.
    struct TinyDisk(TempDir);

    impl TinyDisk {
        fn mount(kib: u32) -> Self {
            let dir = TempDir::new("tinydisk");
            let status = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={kib}k,mode=0700")])
                .arg("tmpfs")
                .arg(&dir.0)
                .status()
                .expect("run mount (the test needs root and mount(8))");
            assert!(
                status.success(),
                "cannot mount a tmpfs (the test needs root): {status}"
            );
            Self(dir)
        }
    }

    impl Drop for TinyDisk {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0 .0)
                .status();
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_counts_only_written_bytes_and_leaves_no_empty_rotated_files() {
        let disk = TinyDisk::mount(64);
        let spec = spec(&disk.0 .0, 40 * 1024, 5);
        let mut logs = LogFiles::open(spec.clone()).expect("open");
        let mut failures = 0;
        for batch in 0..400 {
            for i in 0..10 {
                if logs.write_line(Stream::Out, &line(batch * 10 + i)).is_err() {
                    failures += 1;
                }
            }
            if logs.flush().is_err() {
                failures += 1;
            }
        }
        assert!(failures > 0, "the 64 KiB disk never filled");
        let on_disk = fs::metadata(&spec.out_path).expect("log").len();
        assert_eq!(
            logs.out.as_ref().map_or(0, Sink::size),
            on_disk,
            "the size counter counts lost bytes"
        );
        drop(logs);
        for index in 1..=5 {
            let rotated = rotated_path(&spec.out_path, index);
            if let Ok(meta) = fs::metadata(&rotated) {
                assert!(meta.len() > 0, "{} is empty", rotated.display());
            }
        }
        // What reached the disk is whole lines: a write the disk cut short was cut back.
        let data = fs::read(&spec.out_path).expect("read");
        for piece in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert!(
                piece.starts_with(b"line "),
                "{}",
                String::from_utf8_lossy(piece)
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn new_directories_are_private_and_names_are_sanitized() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("private");
        let spec = LogSpec::default_for(&dir.0, "../evil/app");
        assert_eq!(
            spec.out_path,
            dir.0.join("logs").join("%2E.%2Fevil%2Fapp-out.log")
        );
        let logs = LogFiles::open(spec.clone()).expect("open");
        drop(logs);
        let mode = fs::metadata(dir.0.join("logs"))
            .expect("dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let mode = fs::metadata(&spec.out_path)
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            prepare_logs_dir(&dir.0).expect("prepare"),
            dir.0.join("logs")
        );
    }

    #[test]
    fn log_file_names_are_escaped_and_distinct() {
        assert_eq!(log_file_stem("web-1.api_x"), "web-1.api_x");
        assert_eq!(log_file_stem("a/b"), "a%2Fb");
        assert_eq!(log_file_stem("a-b"), "a-b");
        assert_eq!(log_file_stem("a b"), "a%20b");
        assert_eq!(log_file_stem("../x"), "%2E.%2Fx");
        assert_eq!(log_file_stem("50%"), "50%25");
        assert_eq!(log_file_stem("é"), "%C3%A9");
        for name in ["a/b", "a-b", "a b", "../x", "50%", "é", ".hidden"] {
            assert_eq!(
                app_name_of_stem(&log_file_stem(name)).as_deref(),
                Some(name)
            );
        }
        assert_eq!(app_name_of_stem("a%2"), None);
        assert_eq!(
            app_name_of_stem("a%2fb"),
            None,
            "not the form log_file_stem writes"
        );
    }
}
