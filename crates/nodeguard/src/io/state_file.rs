//! The daemon's state file (`<home>/dump.json`): every app's definition, id, counters and whether
//! it was stopped. Written atomically (temp file, fsync, rename), so a crash mid-write leaves the
//! previous file whole; a file that is corrupt anyway is set aside and reported, never fatal.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use nodeguard_proto::control::AppDefinition;

/// File name of the state file inside the home directory.
pub const STATE_FILE: &str = "dump.json";
/// Version of the state file's format.
pub const STATE_VERSION: u32 = 1;

/// The saved app list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    pub version: u32,
    pub apps: Vec<SavedApp>,
}

/// One saved app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedApp {
    pub id: u32,
    pub definition: AppDefinition,
    /// Summed over the instances.
    pub restarts: u64,
    pub hangs: u64,
    /// Stopped by an operator: brought back stopped.
    pub stopped: bool,
    /// Each instance's own counters, in instance order, for an app with several instances (empty
    /// otherwise, and in files written before there were instances: then the first instance gets
    /// the sums).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceCounts>,
    /// Each instance's id, in instance order, for an app with several instances: after a
    /// `scale` they need not be consecutive. Empty in files written before `scale` (then the
    /// ids are `id` onwards).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<u32>,
}

/// The restart and hang counters of one instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceCounts {
    pub restarts: u64,
    pub hangs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("{} is corrupt ({reason}); it was set aside as {}", path.display(), backup.display())]
    Corrupt {
        path: PathBuf,
        backup: PathBuf,
        reason: String,
    },
}

/// Where the state file of a home lives.
pub fn state_path(home: &Path) -> PathBuf {
    home.join(STATE_FILE)
}

/// How many temporary names [`write`] tries before it gives up (each one taken means a file we did
/// not make sits there).
const TEMP_ATTEMPTS: u32 = 16;

/// Writes `state` to `path` atomically: into a new temporary file beside it (created exclusively,
/// mode 0600, never through a symbolic link), synced, then renamed over `path`.
pub fn write(path: &Path, state: &SavedState) -> Result<(), StateError> {
    let write_err = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let (file, temp) = create_temp(path).map_err(write_err)?;
    let result = (|| {
        // Streamed: thousands of apps make megabytes, not held whole in memory first.
        let mut writer = io::BufWriter::with_capacity(64 * 1024, file);
        serde_json::to_writer_pretty(&mut writer, state).map_err(io::Error::other)?;
        writer.flush()?;
        let file = writer
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        if let Some(dir) = path.parent() {
            // Make the rename itself durable.
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(write_err)
}

/// Creates a fresh temporary file beside `path`: `O_CREAT | O_EXCL` (so whatever sits at the name
/// already, a symbolic link included, is never opened) and `O_NOFOLLOW`, mode 0600 (the file holds
/// every app's environment).
fn create_temp(path: &Path) -> io::Result<(File, PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut last_error = None;
    for _ in 0..TEMP_ATTEMPTS {
        let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let temp = path.with_extension(format!(
            "json.tmp-{}-{nanos:08x}-{serial}",
            std::process::id()
        ));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)
        {
            Ok(file) => return Ok((file, temp)),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => last_error = Some(error),
            Err(error) => return Err(error),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no free temporary name")))
}

/// Reads the state file (never through a symbolic link): `Ok(None)` if there is none. A corrupt
/// file is renamed to `dump.json.corrupt-<unix seconds>` (with `-<n>` added when that name is
/// taken, so an earlier backup is never overwritten) and reported.
pub fn read(path: &Path) -> Result<Option<SavedState>, StateError> {
    let read_err = |source| StateError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = match open_no_follow(path) {
        Ok(mut file) => {
            let mut bytes = Vec::new();
            io::Read::read_to_end(&mut file, &mut bytes).map_err(read_err)?;
            bytes
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(read_err(source)),
    };
    let reason = match serde_json::from_slice::<SavedState>(&bytes) {
        Ok(state) if state.version == STATE_VERSION => return Ok(Some(state)),
        Ok(state) => format!("format version {} is not {STATE_VERSION}", state.version),
        Err(error) => error.to_string(),
    };
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let backup = set_aside(path, &format!("json.corrupt-{seconds}"))?;
    Err(StateError::Corrupt {
        path: path.to_path_buf(),
        backup,
        reason,
    })
}

/// Opens `path` for reading unless it is a symbolic link.
fn open_no_follow(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// How many numbered backup names [`set_aside`] tries.
const BACKUP_ATTEMPTS: u32 = 1000;

/// Moves `path` to the first free name of `<path with extension>`, `…-1`, `…-2`, …: linked under
/// the new name (which fails rather than replace an existing file), then unlinked.
fn set_aside(path: &Path, extension: &str) -> Result<PathBuf, StateError> {
    let mut backup = path.with_extension(extension);
    for attempt in 1..=BACKUP_ATTEMPTS {
        match fs::hard_link(path, &backup) {
            Ok(()) => {
                fs::remove_file(path).map_err(|source| StateError::Write {
                    path: path.to_path_buf(),
                    source,
                })?;
                return Ok(backup);
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                backup = path.with_extension(format!("{extension}-{attempt}"));
            }
            Err(source) => {
                return Err(StateError::Write {
                    path: backup,
                    source,
                })
            }
        }
    }
    Err(StateError::Write {
        path: backup,
        source: io::Error::other("every backup name is taken"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ng-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn sample() -> SavedState {
        SavedState {
            version: STATE_VERSION,
            apps: vec![SavedApp {
                id: 3,
                definition: AppDefinition {
                    name: Some("api".into()),
                    script: "/srv/api.js".into(),
                    args: vec!["--port".into(), "80".into()],
                    node: "/usr/bin/node".into(),
                    node_args: vec![],
                    cwd: "/srv".into(),
                    env: vec![("A".into(), "1".into())],
                    caller_env: Some(vec![("PATH".into(), "/usr/bin".into())]),
                    filter_env: Some(vec!["AWS_".into()]),
                    out_file: None,
                    error_file: Some("/var/log/api.err".into()),
                    disable_logs: false,
                    log_timestamps: true,
                    log_json: true,
                    hang_show_query: true,
                    heap_snapshot_on_memory_restart: false,
                    profile_on_stall_ms: None,
                    autorestart: Some("on-failure".into()),
                    max_restarts: Some(5),
                    restart_window_ms: Some(30_000),
                    max_memory: Some(200 << 20),
                    clean_exit_codes: Some(vec![0, 3]),
                    min_uptime_ms: Some(2_000),
                    restart_delay_ms: Some(250),
                    backoff_base_ms: Some(100),
                    heartbeat_interval_ms: 1000,
                    heartbeat_timeout_ms: 1000,
                    heartbeat_misses: 3,
                    start_grace_ms: 5000,
                    kill_timeout_ms: 5000,
                    instances: 4,
                    cluster: true,
                    listen: vec!["127.0.0.1:8080".into()],
                    wait_ready: true,
                    listen_timeout_ms: Some(3000),
                    watch: vec!["/srv/api/src".into()],
                    ignore_watch: vec!["*.log".into()],
                    watch_delay_ms: Some(500),
                    cron_restart: Some("0 3 * * *".into()),
                    kill_signal: Some("SIGINT".into()),
                    shutdown_with_message: true,
                    interpreter: Some("none".into()),
                    interpreter_args: vec!["-u".into()],
                    instance_var: None,
                    increment_var: None,
                    namespace: None,
                    uid: Some("ann".into()),
                    gid: None,
                    log_date_format: None,
                    log_file: None,
                    pid_file: None,
                    on_event: Vec::new(),
                },
                restarts: 4,
                hangs: 1,
                stopped: true,
                instances: vec![
                    InstanceCounts {
                        restarts: 3,
                        hangs: 1,
                    },
                    InstanceCounts {
                        restarts: 1,
                        hangs: 0,
                    },
                    InstanceCounts::default(),
                    InstanceCounts::default(),
                ],
                ids: vec![3, 4, 9, 10],
            }],
        }
    }

    #[test]
    fn a_written_state_reads_back_the_same() {
        let dir = temp_dir("round-trip");
        let path = state_path(&dir);
        write(&path, &sample()).unwrap();
        assert_eq!(read(&path).unwrap(), Some(sample()));
        let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temp files left behind");
    }

    #[test]
    fn a_file_without_per_instance_counters_still_reads() {
        let dir = temp_dir("no-instances");
        let path = state_path(&dir);
        let mut text = serde_json::to_value(sample()).unwrap();
        text["apps"][0].as_object_mut().unwrap().remove("instances");
        fs::write(&path, text.to_string()).unwrap();
        let read_back = read(&path).unwrap().unwrap();
        assert!(read_back.apps[0].instances.is_empty());
        assert_eq!(read_back.apps[0].restarts, 4);
    }

    #[test]
    fn no_file_is_no_state() {
        let dir = temp_dir("missing");
        assert_eq!(read(&state_path(&dir)).unwrap(), None);
    }

    #[test]
    fn a_corrupt_file_is_set_aside_and_reported() {
        let dir = temp_dir("corrupt");
        let path = state_path(&dir);
        fs::write(&path, b"{\"version\": 1, \"apps\": [tru").unwrap();
        let Err(StateError::Corrupt { backup, .. }) = read(&path) else {
            panic!("not reported as corrupt");
        };
        assert!(!path.exists());
        assert_eq!(
            fs::read(&backup).unwrap(),
            b"{\"version\": 1, \"apps\": [tru"
        );
        assert_eq!(read(&path).unwrap(), None);
    }

    #[test]
    fn the_state_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("mode");
        let path = state_path(&dir);
        write(&path, &sample()).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "dump.json is {mode:o}");
    }

    #[test]
    fn a_symlink_planted_at_the_old_temporary_name_is_not_followed() {
        let dir = temp_dir("planted-temp");
        let path = state_path(&dir);
        let victim = dir.join("victim");
        fs::write(&victim, b"keep").unwrap();
        let planted = path.with_extension(format!("json.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        write(&path, &sample()).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_file());
        assert_eq!(read(&path).unwrap(), Some(sample()));
    }

    #[test]
    fn a_second_corrupt_file_keeps_the_first_backup() {
        let dir = temp_dir("corrupt-twice");
        let path = state_path(&dir);
        fs::write(&path, b"first").unwrap();
        let Err(StateError::Corrupt { backup: first, .. }) = read(&path) else {
            panic!("first not reported as corrupt");
        };
        fs::write(&path, b"second").unwrap();
        let Err(StateError::Corrupt { backup: second, .. }) = read(&path) else {
            panic!("second not reported as corrupt");
        };
        assert_ne!(first, second);
        assert_eq!(fs::read(&first).unwrap(), b"first");
        assert_eq!(fs::read(&second).unwrap(), b"second");
    }

    #[test]
    fn a_symlinked_state_file_is_not_read() {
        let dir = temp_dir("symlinked-read");
        let path = state_path(&dir);
        let elsewhere = dir.join("elsewhere.json");
        fs::write(&elsewhere, serde_json::to_vec(&sample()).unwrap()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        assert!(matches!(read(&path), Err(StateError::Read { .. })));
    }
}
