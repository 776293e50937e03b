//! Runs a set of apps: prepares the state directory, binds the worker and control sockets, and
//! runs the supervisor actor, which owns the table of apps (one [`WorkerTask`] each) and carries
//! out control commands. On shutdown it waits until every app has stopped and its last output line
//! is written.
//!
//! Cluster mode: an app with N instances is N handles sharing a name (and consecutive ids); its
//! listen addresses are bound here once and shared by them. A rolling reload runs as its own task
//! (see [`reload_task`]) and asks the actor, through internal messages, to add a replacement next
//! to an instance and later to retire the old one, so the table is only ever touched here.
//!
//! Library code installs no signal handlers and never exits the process: the caller passes a
//! [`Shutdown`] and decides what signals mean.

mod actor;
pub mod api;
pub mod events;
pub mod hooks;
mod live;
mod persist;
mod reload;
mod replies;
mod scale;
pub mod settings;
pub mod spawner;
mod triggers;
pub mod worker;

use actor::Supervisor;
pub use api::ControlRequest;
use persist::Saved;
use reload::{reload_task, Internal, Member, ReloadGroup, Verb};
use replies::{
    forward_saved, matches_target, no_match, report_saved_when_done, report_when_done, watched,
    Watched,
};
pub use settings::{ServiceOptions, SupervisorConfig};

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::collections::{HashMap, HashSet};

use nodeguard_proto::control::Outcome;

use crate::io::control_server;
use crate::io::home::{Home, HomeError, HomeWatch};
use crate::io::listen::SharedListeners;
use crate::io::monitor_socket::{self, TokenRegistry};
use crate::io::output;
use crate::io::proctree;
use crate::io::state_file::{self};
use crate::platform;
use crate::supervisor::spawner::Spawner;
use crate::supervisor::worker::{Origins, WorkerContext};

/// How long shutdown waits for output pipes that something outside the app's process group still
/// holds open.
pub const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long shutdown waits for control connections to finish writing their answers.
pub const CONTROL_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Control requests queued for the supervisor actor.
const REQUEST_QUEUE: usize = 64;

/// Two-stage stop: `graceful` stops every app with SIGTERM and the kill timeout; `force` sends
/// SIGKILL at once. Also carries the one other thing a signal asks of a running supervisor:
/// `reopen_logs` (SIGHUP) closes every app's log files and opens them again at their paths.
#[derive(Clone, Default)]
pub struct Shutdown {
    pub graceful: CancellationToken,
    pub force: CancellationToken,
    pub reopen_logs: Arc<tokio::sync::Notify>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub forced: bool,
    /// Set when the run ended because every app came to rest on its own: whether all ended
    /// cleanly.
    pub apps_finished: Option<bool>,
    /// Set when the run ended because the home was removed or replaced under it: why.
    pub home_lost: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error("cannot listen on {}: {source}", path.display())]
    Bind { path: PathBuf, source: io::Error },
    #[error("cannot start a supervisor thread: {0}")]
    Thread(io::Error),
    #[error("cannot serve HTTP on {address}: {source}")]
    Http {
        address: std::net::SocketAddr,
        source: io::Error,
    },
    /// Its cause is part of the message (one line), not a separate source.
    #[error("{app}: {error}")]
    Listen {
        app: String,
        error: crate::io::listen::ListenError,
    },
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

/// Supervises `config.apps` (and whatever control commands add) until `shutdown` fires or a
/// `kill` command arrives, and every app has stopped.
pub async fn run(
    config: SupervisorConfig,
    shutdown: Shutdown,
) -> Result<RunSummary, SupervisorError> {
    let home = Home::prepare(&config.home, config.log_files)?;
    let worker_listener = bind(&home.paths.worker_socket)?;
    let control_listener = bind(&home.paths.control_socket)?;
    let http_listener = match config.service.http {
        Some(address) => Some(
            crate::io::http::bind(address)
                .map_err(|source| SupervisorError::Http { address, source })?,
        ),
        None => None,
    };
    // Every app's listen addresses are bound before any app starts: a port that is taken (or
    // privileged, or an address this host does not have) ends the run at once, with nothing
    // left running and no health endpoint answering for an app that never ran.
    let mut listeners = HashMap::new();
    for spec in &config.apps {
        if spec.listen.is_empty() || listeners.contains_key(&spec.name) {
            continue;
        }
        let bound =
            SharedListeners::bind(&spec.listen).map_err(|error| SupervisorError::Listen {
                app: spec.name.clone(),
                error,
            })?;
        listeners.insert(spec.name.clone(), Arc::new(bound));
    }
    match platform::raise_open_file_limit() {
        Ok((before, after)) if before != after => {
            tracing::debug!(
                ?before,
                ?after,
                "raised the soft limit on open files to the hard one"
            );
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot raise the soft limit on open files"),
    }
    if let Err(error) = platform::become_subreaper() {
        tracing::warn!(%error, "cannot become a child subreaper; escaped grandchildren go to init");
    }
    let children = proctree::ChildSet::default();
    let spawner = Spawner::start(children.clone()).map_err(SupervisorError::Thread)?;
    let scanner_stop = CancellationToken::new();
    let _scanner_stop = scanner_stop.clone().drop_guard();
    let tree = proctree::start(children.clone(), scanner_stop, spawner.sweeper());
    let destinations = output::Destinations {
        terminal: config.terminal_output,
        log_home: config.log_files.then(|| home.paths.home.clone()),
    };
    let (output_sink, output_writer) =
        output::start(destinations).map_err(SupervisorError::Thread)?;
    let registry = Arc::new(TokenRegistry::default());
    let servers = CancellationToken::new();
    let output_tasks = TaskTracker::new();
    let context = Arc::new(WorkerContext {
        spawner: Arc::new(spawner),
        registry: registry.clone(),
        output: output_sink,
        output_tasks: output_tasks.clone(),
        preload: config.preload.clone(),
        worker_socket: home.paths.worker_socket.clone(),
        home: home.paths.home.clone(),
        color: config.color,
        tree,
        ping_grid: tokio::time::Instant::now(),
        events: events::EventBus::default(),
        user_sockets: Arc::new(crate::io::user_sockets::UserSockets::new(
            registry.clone(),
            servers.clone(),
        )),
        hooks: Arc::new(hooks::Hooks::new(children.clone())),
    });

    tokio::spawn(reopen_logs_on_request(
        shutdown.reopen_logs.clone(),
        context.output.clone(),
        servers.clone(),
    ));
    let control_tasks = TaskTracker::new();
    let (requests, inbox) = mpsc::channel(REQUEST_QUEUE);
    tokio::spawn(monitor_socket::serve(
        worker_listener,
        registry,
        servers.clone(),
        platform::current_uid(),
    ));
    // Service-manager integration (see http.rs and systemd.rs): both ask the actor through the
    // same queue as the control socket, so they see whether the supervision loop really answers.
    let probe = crate::io::health::Probe::new(requests.clone());
    if let Some(listener) = http_listener {
        let dashboard = crate::io::dashboard::Dashboard::new(
            live::subscriber(context.events.clone()),
            config.service.http_token.clone(),
        );
        tokio::spawn(crate::io::http::serve(
            listener,
            probe.clone(),
            dashboard,
            servers.clone(),
        ));
    }
    if let Some(notifier) = config.service.notify.clone() {
        let stopping = shutdown.graceful.clone();
        tokio::spawn(crate::io::systemd::notify(notifier, probe, stopping));
    }
    let home_lost = Arc::new(std::sync::OnceLock::new());
    tokio::spawn(watch_home(
        home.watch(),
        home_lost.clone(),
        shutdown.clone(),
        servers.clone(),
    ));
    tokio::spawn(control_server::serve(
        control_listener,
        requests,
        api::EventFeed::new(context.events.clone()),
        control_tasks.clone(),
        servers.clone(),
    ));

    let (internal, internal_inbox) = mpsc::unbounded_channel();
    let state_path = config
        .persist
        .then(|| state_file::state_path(&home.paths.home));
    let persister = state_path
        .clone()
        .map(|path| persist::Persister::start(path, internal.clone()));
    let mut supervisor = Supervisor {
        apps: Vec::new(),
        next_key: 0,
        listeners,
        reloading: HashSet::new(),
        triggers: HashMap::new(),
        internal,
        next_id: 0,
        context: context.clone(),
        tasks: TaskTracker::new(),
        shutdown: shutdown.clone(),
        state_file: state_path,
        home_watch: home.watch(),
        stopped: HashSet::new(),
        saved_counts: std::cell::Cell::new(0),
        persister,
        counts_due: None,
        state_final: false,
        exit_when_done: config.exit_when_done,
        apps_finished: None,
    };
    for spec in config.apps {
        supervisor.next_id = supervisor.next_id.max(spec.end_id());
        if let Err(error) = supervisor.add_app(spec, &[Origins::default()]) {
            tracing::error!("{error}");
        }
    }
    if config.service.resurrect {
        match supervisor.saved_state() {
            Ok(saved) => {
                let (reply, answer) = oneshot::channel();
                supervisor.resurrect_saved(saved, reply);
                tokio::spawn(log_resurrected(answer));
            }
            // Nothing saved yet is no error for a daemon that resurrects at every start.
            Err(error @ persist::ResurrectError::NothingSaved(_)) => tracing::info!("{error}"),
            Err(error) => tracing::error!("resurrect: {error}"),
        }
    }
    tracing::info!(
        home = %home.paths.home.display(),
        "supervising {} app(s)",
        supervisor.apps.len()
    );
    let tasks = supervisor.tasks.clone();
    supervisor.run(inbox, internal_inbox).await;
    let apps_finished = supervisor.apps_finished;
    // The actor holds the worker context (and so an output sink): let it go before draining.
    drop(supervisor);

    tasks.close();
    tasks.wait().await;
    servers.cancel();
    control_tasks.close();
    let _ = tokio::time::timeout(CONTROL_DRAIN_TIMEOUT, control_tasks.wait()).await;
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
        apps_finished,
        home_lost: home_lost.get().cloned(),
    })
}

/// Passes each request to reopen the log files on to the output writer, until `servers` stops
/// (then it lets its output sink go, so the writer can finish).
async fn reopen_logs_on_request(
    requests: Arc<tokio::sync::Notify>,
    output: output::OutputSink,
    servers: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = servers.cancelled() => return,
            _ = requests.notified() => output.reopen().await,
        }
    }
}

/// How often a supervisor checks that its home is still its own.
const HOME_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Checks every [`HOME_CHECK_INTERVAL`] that the home is still ours (see [`HomeWatch::lost`]);
/// once it is not, nobody can reach this supervisor and another may own the home: it records
/// why and stops every app, so the run ends.
async fn watch_home(
    watch: HomeWatch,
    lost: Arc<std::sync::OnceLock<String>>,
    shutdown: Shutdown,
    servers: CancellationToken,
) {
    let mut interval = tokio::time::interval(HOME_CHECK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = servers.cancelled() => return,
            _ = interval.tick() => {}
        }
        if let Some(reason) = watch.lost() {
            tracing::error!("{reason}: this supervisor can no longer be reached; stopping every app and exiting");
            let _ = lost.set(reason);
            shutdown.graceful.cancel();
            return;
        }
    }
}

/// Logs how `daemon --resurrect` went once the saved apps have started (or failed to).
async fn log_resurrected(answer: oneshot::Receiver<Outcome>) {
    match answer.await {
        Ok(Outcome::Done { apps }) => tracing::info!("resurrected {} saved app(s)", apps.len()),
        Ok(Outcome::Error { message }) => tracing::error!("resurrect: {message}"),
        Ok(_) | Err(_) => {}
    }
}
