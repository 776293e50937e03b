//! What one supervisor run is given: the apps, where its home is, how output is shown and kept,
//! and how it presents itself to a service manager.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::AppSpec;
use crate::io::systemd::Notifier;

/// Everything a supervisor run needs.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub home: PathBuf,
    pub apps: Vec<AppSpec>,
    /// The monitor's preload script, passed to node as `--require`; `None` runs apps as they are.
    pub preload: Option<PathBuf>,
    pub color: bool,
    /// Print app output on the terminal (foreground mode).
    pub terminal_output: bool,
    /// Also write app output to `<home>/logs/` (always in the daemon).
    pub log_files: bool,
    /// Keep the app list in `<home>/dump.json` (the daemon does; foreground mode does not).
    pub persist: bool,
    /// End once every app has come to rest on its own (foreground mode, so a container exits
    /// when its apps are done or given up on); the daemon keeps running.
    pub exit_when_done: bool,
    /// HTTP endpoints, systemd notifications, resurrect at start.
    pub service: ServiceOptions,
}

/// How the supervisor presents itself to a service manager (systemd, Kubernetes, Prometheus).
#[derive(Debug, Clone, Default)]
pub struct ServiceOptions {
    /// Serve `/healthz`, `/readyz`, `/metrics` and the dashboard on this address (`--http`).
    pub http: Option<std::net::SocketAddr>,
    /// The dashboard's bearer token for write actions (`--http-token-file`); none: read-only.
    pub http_token: Option<Arc<crate::io::dashboard::Token>>,
    /// Notify systemd (`NOTIFY_SOCKET` was set).
    pub notify: Option<Arc<Notifier>>,
    /// Bring back the saved apps at start (`daemon --resurrect`).
    pub resurrect: bool,
}
