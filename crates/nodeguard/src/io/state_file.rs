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

/// Writes `state` to `path` atomically.
pub fn write(path: &Path, state: &SavedState) -> Result<(), StateError> {
    let write_err = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| write_err(io::Error::other(e)))?;
    let temp = path.with_extension(format!("json.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(&bytes)?;
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

/// Reads the state file: `Ok(None)` if there is none. A corrupt file is renamed to
/// `dump.json.corrupt-<unix seconds>` and reported.
pub fn read(path: &Path) -> Result<Option<SavedState>, StateError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let reason = match serde_json::from_slice::<SavedState>(&bytes) {
        Ok(state) if state.version == STATE_VERSION => return Ok(Some(state)),
        Ok(state) => format!("format version {} is not {STATE_VERSION}", state.version),
        Err(error) => error.to_string(),
    };
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let backup = path.with_extension(format!("json.corrupt-{seconds}"));
    fs::rename(path, &backup).map_err(|source| StateError::Write {
        path: backup.clone(),
        source,
    })?;
    Err(StateError::Corrupt {
        path: path.to_path_buf(),
        backup,
        reason,
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
                    out_file: None,
                    error_file: Some("/var/log/api.err".into()),
                    log_timestamps: true,
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
                    listen: vec!["127.0.0.1:8080".into()],
                    wait_ready: true,
                    listen_timeout_ms: Some(3000),
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
}
