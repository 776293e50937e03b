//! The state directory (`NODEGUARD_HOME`): a private `run/` folder holding the sockets and the lock
//! that keeps two supervisors off the same home.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::platform::{self, PrivatePathError};

/// Longest Unix socket path the kernel accepts (`sun_path` is 108 bytes with a terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Paths inside a state directory.
#[derive(Debug, Clone)]
pub struct HomePaths {
    pub home: PathBuf,
    pub run_dir: PathBuf,
    pub control_socket: PathBuf,
    pub worker_socket: PathBuf,
    pub lock_file: PathBuf,
}

impl HomePaths {
    pub fn new(home: &Path) -> Self {
        let run_dir = home.join("run");
        Self {
            home: home.to_path_buf(),
            control_socket: run_dir.join("control.sock"),
            worker_socket: run_dir.join("worker.sock"),
            lock_file: run_dir.join("supervisor.lock"),
            run_dir,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("cannot prepare state directory {}: {source}", path.display())]
    Prepare { path: PathBuf, source: io::Error },
    #[error("refusing the state directory: {0}")]
    Unsafe(PrivatePathError),
    #[error("another nodeguard supervisor is running on {} (pid {pid}); stop it or use another --home", home.display())]
    AlreadyRunning { home: PathBuf, pid: String },
    #[error("socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter --home", .0.display())]
    SocketPathTooLong(PathBuf),
}

impl From<PrivatePathError> for HomeError {
    fn from(error: PrivatePathError) -> Self {
        match error {
            PrivatePathError::Io { path, source } => Self::Prepare { path, source },
            unsafe_path => Self::Unsafe(unsafe_path),
        }
    }
}

/// Makes sure `home` is fit to hold our state, creating it if missing: a real directory (not a
/// symbolic link), ours, writable by nobody else, and private (one others can read is tightened
/// to 0700). Every entry point checks this before reading or writing anything inside.
pub fn ensure_private_home(home: &Path) -> Result<(), HomeError> {
    platform::ensure_private_dir(home)?;
    Ok(())
}

/// A prepared state directory, locked for this supervisor until dropped.
pub struct Home {
    pub paths: HomePaths,
    /// Held open: the lock lasts as long as the descriptor.
    _lock: File,
    watch: HomeWatch,
}

impl Home {
    /// Checks the home (see [`ensure_private_home`]), creates the private `run/` directory (and
    /// `logs/` when `with_logs`: app logs go there), takes the lock, and clears stale sockets.
    pub fn prepare(home: &Path, with_logs: bool) -> Result<Self, HomeError> {
        let paths = HomePaths::new(home);
        let prepare_err = |source| HomeError::Prepare {
            path: paths.run_dir.clone(),
            source,
        };
        for socket in [&paths.control_socket, &paths.worker_socket] {
            if socket.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(HomeError::SocketPathTooLong(socket.clone()));
            }
        }
        ensure_private_home(home)?;
        platform::ensure_private_dir(&paths.run_dir)?;
        if with_logs {
            platform::ensure_private_dir(&crate::io::logfile::logs_dir(home))?;
        }
        let mut lock = platform::open_private_file(&paths.lock_file, false)?;
        if !platform::try_lock_exclusive(&lock).map_err(prepare_err)? {
            let mut pid = String::new();
            let _ = lock.read_to_string(&mut pid);
            return Err(HomeError::AlreadyRunning {
                home: home.to_path_buf(),
                pid: pid.trim().to_string(),
            });
        }
        lock.set_len(0).map_err(prepare_err)?;
        lock.rewind().map_err(prepare_err)?;
        write!(lock, "{}", std::process::id()).map_err(prepare_err)?;
        // Ours now: what monitors of an earlier supervisor recorded can go.
        crate::io::sourcemap::prepare_recorded_dir(&paths.run_dir)?;
        for socket in [&paths.control_socket, &paths.worker_socket] {
            match std::fs::remove_file(socket) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(prepare_err(e)),
            }
        }
        let watch = HomeWatch {
            lock_file: paths.lock_file.clone(),
            control_socket: paths.control_socket.clone(),
            lock_identity: platform::open_file_identity(&lock).map_err(prepare_err)?,
        };
        Ok(Self {
            paths,
            _lock: lock,
            watch,
        })
    }

    /// What tells whether this home is still ours (see [`HomeWatch::lost`]).
    pub fn watch(&self) -> HomeWatch {
        self.watch.clone()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        // A home that was removed (and maybe made anew by another supervisor) is not ours to
        // clean: its sockets would be the new supervisor's.
        if self.watch.lock_is_ours() {
            let _ = std::fs::remove_file(&self.paths.control_socket);
            let _ = std::fs::remove_file(&self.paths.worker_socket);
        }
    }
}

/// Tells whether the home a supervisor prepared is still its own: its lock file is the one it
/// locked and its control socket is there. A home removed under a running supervisor (or whose
/// `run/` was) leaves the supervisor unreachable, and a `start` would then make the home anew
/// with a second supervisor on it; the first must notice, write nothing more there, and exit.
#[derive(Debug, Clone)]
pub struct HomeWatch {
    lock_file: PathBuf,
    control_socket: PathBuf,
    lock_identity: (u64, u64),
}

impl HomeWatch {
    fn lock_is_ours(&self) -> bool {
        platform::file_identity(&self.lock_file) == Some(self.lock_identity)
    }

    /// Why the home is no longer ours, if it is not: checked periodically by the supervisor and
    /// before each write of the state file.
    pub fn lost(&self) -> Option<String> {
        if !self.lock_is_ours() {
            return Some(format!(
                "the state directory's lock file {} was removed or replaced",
                self.lock_file.display()
            ));
        }
        if platform::file_identity(&self.control_socket).is_none() {
            return Some(format!(
                "the control socket {} was removed",
                self.control_socket.display()
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ng-home-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_home_removed_and_made_anew_is_no_longer_ours_and_its_new_sockets_stay() {
        let dir = scratch("lost");
        let home = Home::prepare(&dir, true).unwrap();
        std::fs::write(&home.paths.control_socket, b"").unwrap();
        let watch = home.watch();
        assert_eq!(watch.lost(), None);
        assert!(dir.join("logs").is_dir());

        std::fs::remove_dir_all(&dir).unwrap();
        assert!(watch.lost().is_some_and(|why| why.contains("lock file")));
        // Another supervisor makes the home anew at the same path.
        let paths = HomePaths::new(&dir);
        std::fs::create_dir_all(&paths.run_dir).unwrap();
        std::fs::write(&paths.lock_file, b"999").unwrap();
        std::fs::write(&paths.control_socket, b"").unwrap();
        assert!(watch.lost().is_some());
        drop(home);
        assert!(
            paths.control_socket.exists(),
            "the old supervisor removed the new one's socket"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_removed_control_socket_is_noticed() {
        let dir = scratch("socket");
        let home = Home::prepare(&dir, false).unwrap();
        std::fs::write(&home.paths.control_socket, b"").unwrap();
        let watch = home.watch();
        assert_eq!(watch.lost(), None);
        std::fs::remove_file(&home.paths.control_socket).unwrap();
        assert!(watch
            .lost()
            .is_some_and(|why| why.contains("control socket")));
        drop(home);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
