//! The state directory (`NODEGUARD_HOME`): a private `run/` folder holding the sockets and the lock
//! that keeps two supervisors off the same home.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::io::platform;

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
    #[error("another nodeguard supervisor is running on {} (pid {pid}); stop it or use another --home", home.display())]
    AlreadyRunning { home: PathBuf, pid: String },
    #[error("socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter --home", .0.display())]
    SocketPathTooLong(PathBuf),
}

/// A prepared state directory, locked for this supervisor until dropped.
pub struct Home {
    pub paths: HomePaths,
    _lock: File,
}

impl Home {
    /// Creates the private run directory, takes the lock, and clears stale sockets.
    pub fn prepare(home: &Path) -> Result<Self, HomeError> {
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
        platform::ensure_private_dir(&paths.run_dir).map_err(prepare_err)?;
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&paths.lock_file)
            .map_err(prepare_err)?;
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
        for socket in [&paths.control_socket, &paths.worker_socket] {
            match std::fs::remove_file(socket) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(prepare_err(e)),
            }
        }
        Ok(Self { paths, _lock: lock })
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.paths.control_socket);
        let _ = std::fs::remove_file(&self.paths.worker_socket);
    }
}
