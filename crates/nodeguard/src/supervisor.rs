//! Runs a set of apps: prepares the state directory, binds the worker and control sockets, starts
//! one [`WorkerTask`] per app, and on shutdown waits until every app has stopped and its last
//! output line is written.
//!
//! Library code installs no signal handlers and never exits the process: the caller passes a
//! [`Shutdown`] and decides what signals mean.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::SupervisorConfig;
use crate::control::{self, AppTable};
use crate::home::{Home, HomeError};
use crate::output;
use crate::platform;
use crate::spawner::Spawner;
use crate::worker::{WorkerContext, WorkerTask};
use crate::workers::{self, TokenRegistry};

/// How long shutdown waits for output pipes that something outside the app's process group still
/// holds open.
pub const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Two-stage stop: `graceful` stops every app with SIGTERM and the kill timeout; `force` sends
/// SIGKILL at once.
#[derive(Clone, Default)]
pub struct Shutdown {
    pub graceful: CancellationToken,
    pub force: CancellationToken,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSummary {
    pub forced: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error("cannot listen on {}: {source}", path.display())]
    Bind { path: PathBuf, source: io::Error },
    #[error("cannot start a supervisor thread: {0}")]
    Thread(io::Error),
}

fn bind(path: &Path) -> Result<UnixListener, SupervisorError> {
    let bind_err = |source| SupervisorError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    platform::make_owner_only(path).map_err(bind_err)?;
    Ok(listener)
}

/// Supervises `config.apps` until `shutdown` fires and every app has stopped.
pub async fn run(
    config: SupervisorConfig,
    shutdown: Shutdown,
) -> Result<RunSummary, SupervisorError> {
    let home = Home::prepare(&config.home)?;
    let worker_listener = bind(&home.paths.worker_socket)?;
    let control_listener = bind(&home.paths.control_socket)?;
    let spawner = Spawner::start().map_err(SupervisorError::Thread)?;
    let (output_sink, output_writer) = output::start().map_err(SupervisorError::Thread)?;
    let registry = Arc::new(TokenRegistry::default());
    let output_tasks = TaskTracker::new();
    let context = Arc::new(WorkerContext {
        spawner,
        registry: registry.clone(),
        output: output_sink,
        output_tasks: output_tasks.clone(),
        preload: config.preload.clone(),
        worker_socket: home.paths.worker_socket.clone(),
        color: config.color,
    });

    let servers = CancellationToken::new();
    let worker_tasks = TaskTracker::new();
    let mut handles = Vec::with_capacity(config.apps.len());
    for spec in config.apps {
        let (task, handle) = WorkerTask::new(spec, context.clone());
        handles.push(handle);
        worker_tasks.spawn(task.run(shutdown.graceful.clone(), shutdown.force.clone()));
    }
    worker_tasks.close();
    let table = Arc::new(AppTable { apps: handles });
    tokio::spawn(workers::serve(worker_listener, registry, servers.clone()));
    tokio::spawn(control::serve(control_listener, table, servers.clone()));
    tracing::info!(
        home = %home.paths.home.display(),
        "supervising {} app(s)",
        worker_tasks.len()
    );

    worker_tasks.wait().await;
    servers.cancel();
    output_tasks.close();
    let drained = tokio::time::timeout(OUTPUT_DRAIN_TIMEOUT, output_tasks.wait())
        .await
        .is_ok();
    // Dropping the last sink lets the writer thread finish the queue and end.
    drop(context);
    if drained {
        let _ = tokio::task::spawn_blocking(move || output_writer.join()).await;
    } else {
        tracing::warn!("app output still open after every app stopped; not waiting for it");
    }
    drop(home);
    Ok(RunSummary {
        forced: shutdown.force.is_cancelled(),
    })
}
