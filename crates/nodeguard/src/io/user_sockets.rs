//! Worker sockets for apps run as another user (`uid`): such a process cannot reach the worker
//! socket inside the supervisor's private home (0700), and the home is not loosened for it.
//! Instead each such user gets a socket of its own, made when that user's first app spawns: in
//! a directory the supervisor makes (owner root, mode 0711: nobody else may list or change it),
//! owned by that user with mode 0600 (only that user, and root, may connect), and accepting only
//! peers of that uid. The per-spawn token still proves which spawn a connection is; the kernel
//! still names the connected pid. The directory goes when the supervisor ends.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use crate::io::monitor_socket::{self, new_token, TokenRegistry};

/// The per-user worker sockets of one supervisor.
pub struct UserSockets {
    registry: Arc<TokenRegistry>,
    cancel: CancellationToken,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    dir: Option<PathBuf>,
    sockets: HashMap<u32, PathBuf>,
}

impl UserSockets {
    /// Sockets made later hand their connections to `registry`'s spawns and close at `cancel`.
    pub fn new(registry: Arc<TokenRegistry>, cancel: CancellationToken) -> Self {
        Self {
            registry,
            cancel,
            state: Mutex::default(),
        }
    }

    /// The socket for apps of user `uid` (group `gid`), made and served on first use; needs a
    /// tokio runtime.
    pub fn path_for(&self, uid: u32, gid: u32) -> io::Result<PathBuf> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(path) = state.sockets.get(&uid) {
            return Ok(path.clone());
        }
        let dir = match &state.dir {
            Some(dir) => dir.clone(),
            None => {
                // A fresh name, created exclusively (never one that someone else made).
                let dir = std::env::temp_dir().join(format!("nodeguard-users-{}", new_token()?));
                std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
                state.dir = Some(dir.clone());
                dir
            }
        };
        let path = dir.join(format!("uid-{uid}.sock"));
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
        tokio::spawn(monitor_socket::serve(
            listener,
            self.registry.clone(),
            self.cancel.clone(),
            uid,
        ));
        state.sockets.insert(uid, path.clone());
        Ok(path)
    }
}

impl Drop for UserSockets {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(dir) = state.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
