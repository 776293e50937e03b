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

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::collections::{HashMap, HashSet};

use nodeguard_proto::control::{
    AppDefinition, AppDescription, AppEvent, AppStatus, Command, Outcome, Target,
};

use crate::config::{self, AppSpec, SupervisorConfig};
use crate::control;
use crate::home::{Home, HomeError, HomeWatch};
use crate::listen::SharedListeners;
use crate::logfile::timestamp;
use crate::output;
use crate::platform;
use crate::proctree;
use crate::spawner::Spawner;
use crate::state::{self, InstanceCounts, SavedApp, SavedState, STATE_VERSION};
use crate::worker::{
    CommandResult, Origins, WorkerCommand, WorkerContext, WorkerHandle, WorkerSnapshot, WorkerTask,
};
use crate::workers::{self, TokenRegistry};

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
        error: crate::listen::ListenError,
    },
}

/// A control command on its way to the supervisor actor, with the channel for its answer.
pub struct ControlRequest {
    pub command: Command,
    pub reply: oneshot::Sender<Outcome>,
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
            crate::http::bind(address)
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
    if let Err(error) = platform::become_subreaper() {
        tracing::warn!(%error, "cannot become a child subreaper; escaped grandchildren go to init");
    }
    let children = proctree::ChildSet::default();
    let spawner = Spawner::start(children.clone()).map_err(SupervisorError::Thread)?;
    let scanner_stop = CancellationToken::new();
    let _scanner_stop = scanner_stop.clone().drop_guard();
    let tree = proctree::start(children, scanner_stop);
    let destinations = output::Destinations {
        terminal: config.terminal_output,
        log_home: config.log_files.then(|| home.paths.home.clone()),
    };
    let (output_sink, output_writer) =
        output::start(destinations).map_err(SupervisorError::Thread)?;
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
        tree,
        ping_grid: tokio::time::Instant::now(),
        changes: watch::Sender::new(0),
    });

    let servers = CancellationToken::new();
    tokio::spawn(reopen_logs_on_request(
        shutdown.reopen_logs.clone(),
        context.output.clone(),
        servers.clone(),
    ));
    let control_tasks = TaskTracker::new();
    let (requests, inbox) = mpsc::channel(REQUEST_QUEUE);
    tokio::spawn(workers::serve(worker_listener, registry, servers.clone()));
    // Service-manager integration (see http.rs and systemd.rs): both ask the actor through the
    // same queue as the control socket, so they see whether the supervision loop really answers.
    let probe = crate::health::Probe::new(requests.clone());
    if let Some(listener) = http_listener {
        tokio::spawn(crate::http::serve(listener, probe.clone(), servers.clone()));
    }
    if let Some(notifier) = config.service.notify.clone() {
        let stopping = shutdown.graceful.clone();
        tokio::spawn(crate::systemd::notify(notifier, probe, stopping));
    }
    let home_lost = Arc::new(std::sync::OnceLock::new());
    tokio::spawn(watch_home(
        home.watch(),
        home_lost.clone(),
        shutdown.clone(),
        servers.clone(),
    ));
    tokio::spawn(control::serve(
        control_listener,
        requests,
        control_tasks.clone(),
        servers.clone(),
    ));

    let (internal, internal_inbox) = mpsc::unbounded_channel();
    let mut supervisor = Supervisor {
        apps: Vec::new(),
        next_key: 0,
        listeners,
        reloading: HashSet::new(),
        internal,
        next_id: 0,
        context: context.clone(),
        tasks: TaskTracker::new(),
        shutdown: shutdown.clone(),
        state_file: config.persist.then(|| state::state_path(&home.paths.home)),
        home_watch: home.watch(),
        stopped: HashSet::new(),
        saved_counts: std::cell::Cell::new(0),
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
        let (reply, answer) = oneshot::channel();
        supervisor.resurrect(reply);
        tokio::spawn(log_resurrected(answer));
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

/// Logs how `daemon --resurrect` went: a missing state file is no error (nothing saved yet).
async fn log_resurrected(answer: oneshot::Receiver<Outcome>) {
    match answer.await {
        Ok(Outcome::Done { apps }) => tracing::info!("resurrected {} saved app(s)", apps.len()),
        Ok(Outcome::Error { message }) if message.starts_with("nothing to resurrect") => {
            tracing::info!("{message}")
        }
        Ok(Outcome::Error { message }) => tracing::error!("resurrect: {message}"),
        Ok(_) | Err(_) => {}
    }
}

/// The actor that owns the app table.
struct Supervisor {
    apps: Vec<WorkerHandle>,
    next_key: u64,
    /// Each cluster-mode app's listening sockets, by app name, for the app's life.
    listeners: HashMap<String, Arc<SharedListeners>>,
    /// Apps a reload is running for.
    reloading: HashSet<String>,
    /// Where reload tasks send their requests to the actor.
    internal: mpsc::UnboundedSender<Internal>,
    next_id: u32,
    context: Arc<WorkerContext>,
    tasks: TaskTracker,
    shutdown: Shutdown,
    /// The state file, when this supervisor keeps one (the daemon).
    state_file: Option<PathBuf>,
    /// Whether the home is still ours: the state file is never written into a home that another
    /// supervisor may have made anew.
    home_watch: HomeWatch,
    /// Ids of apps an operator stopped: saved as stopped.
    stopped: HashSet<u32>,
    /// Restarts plus hangs of every app as last written to the state file.
    saved_counts: std::cell::Cell<u64>,
    /// Set by `kill`: the state file it wrote is the one to resurrect from, whatever happens while
    /// the apps stop.
    state_final: bool,
    /// End the run once every app has come to rest on its own.
    exit_when_done: bool,
    /// Why the run ended, if every app came to rest on its own: whether all ended cleanly.
    apps_finished: Option<bool>,
}

/// What an awaiting task needs to report on an app once its command is done.
struct Watched {
    spec: Arc<AppSpec>,
    snapshot: watch::Receiver<WorkerSnapshot>,
    tree: watch::Receiver<Arc<proctree::TreeSnapshot>>,
}

impl Watched {
    fn status(&self) -> AppStatus {
        let tree = self.tree.borrow().clone();
        self.snapshot
            .borrow()
            .to_status(&self.spec, tokio::time::Instant::now(), &tree)
    }
}

impl Supervisor {
    /// Serves control requests until shutdown has begun and every app's task has ended, so that
    /// `status` keeps answering while apps stop.
    async fn run(
        &mut self,
        mut inbox: mpsc::Receiver<ControlRequest>,
        mut internal: mpsc::UnboundedReceiver<Internal>,
    ) {
        let tasks = self.tasks.clone();
        let mut changes = self.context.changes.subscribe();
        let mut closing = false;
        loop {
            tokio::select! {
                _ = self.shutdown.graceful.cancelled(), if !closing => {
                    closing = true;
                    tasks.close();
                }
                _ = tasks.wait(), if closing => return,
                Some(request) = inbox.recv() => self.handle(request),
                Some(message) = internal.recv() => self.on_internal(message),
                Ok(()) = changes.changed(), if (self.exit_when_done || self.state_file.is_some()) && !closing => {
                    if self.exit_when_done {
                        self.end_if_all_finished();
                    }
                    self.persist_new_counts();
                }
            }
        }
    }

    /// Foreground mode: once every app is at rest and at least one came there on its own (none
    /// is running, starting or backing off, and not all were stopped by an operator), the run
    /// is over.
    fn end_if_all_finished(&mut self) {
        let mut any_finished = false;
        let mut all_clean = true;
        for app in &self.apps {
            let snapshot = app.snapshot.borrow();
            if !matches!(
                snapshot.state,
                nodeguard_proto::control::AppState::Stopped
                    | nodeguard_proto::control::AppState::Errored
            ) {
                return;
            }
            if let Some(clean) = snapshot.finished {
                any_finished = true;
                all_clean &= clean;
            }
        }
        if !any_finished {
            return;
        }
        self.apps_finished = Some(all_clean);
        if all_clean {
            tracing::info!("every app has finished; exiting");
        } else {
            tracing::warn!("every app has finished or been given up on; exiting");
        }
        self.shutdown.graceful.cancel();
    }

    /// Adds every instance of `spec` (binding its listen addresses first) and starts their tasks;
    /// `origins[i]` (or the last one) is where instance `i` begins. Ids are `spec.id` onwards.
    fn add_app(&mut self, spec: AppSpec, origins: &[Origins]) -> Result<Vec<usize>, String> {
        let listeners = match self.listeners.get(&spec.name) {
            Some(listeners) => listeners.clone(),
            None => {
                let bound = SharedListeners::bind(&spec.listen).map_err(|e| e.to_string())?;
                let bound = Arc::new(bound);
                if !bound.is_empty() {
                    self.listeners.insert(spec.name.clone(), bound.clone());
                }
                bound
            }
        };
        let mut indexes = Vec::new();
        for instance in 0..spec.instances.max(1) {
            let origin = origins
                .get(instance as usize)
                .or(origins.last())
                .copied()
                .unwrap_or_default();
            let instance_spec = AppSpec {
                // Below `end_id`, which `from_definition` checked to fit in a u32.
                id: spec.id.saturating_add(instance),
                instance,
                ..spec.clone()
            };
            let index = self.apps.len();
            self.insert(index, Arc::new(instance_spec), origin, listeners.clone());
            indexes.push(index);
        }
        // Bound above to catch a taken port now; an app that begins stopped does not hold it.
        let instances = usize::try_from(spec.instances.max(1)).unwrap_or(usize::MAX);
        let all_stopped = (0..instances).all(|i| {
            origins
                .get(i)
                .or(origins.last())
                .is_some_and(|origin| origin.stopped)
        });
        if all_stopped {
            listeners.close_if_unused();
        }
        Ok(indexes)
    }

    /// Starts one instance's task and puts its handle at `index` of the table; returns its key.
    fn insert(
        &mut self,
        index: usize,
        spec: Arc<AppSpec>,
        origins: Origins,
        listeners: Arc<SharedListeners>,
    ) -> u64 {
        if origins.stopped {
            self.stopped.insert(spec.id);
        }
        let (task, handle) = WorkerTask::new(spec, self.context.clone(), origins, listeners);
        self.insert_task(index, task, handle)
    }

    /// Runs `task` watched (see [`crate::worker::watch_task`]): should it fail, the actor hears of it
    /// and puts an errored entry in its place. Puts `handle` at `index`; returns its key.
    fn insert_task(&mut self, index: usize, task: WorkerTask, mut handle: WorkerHandle) -> u64 {
        self.next_key += 1;
        handle.key = self.next_key;
        let key = self.next_key;
        let run =
            tokio::spawn(task.run(self.shutdown.graceful.clone(), self.shutdown.force.clone()));
        let snapshot = handle.snapshot.clone();
        let name = handle.spec.display_name();
        let internal = self.internal.clone();
        self.tasks.spawn(async move {
            if let Some(why) = crate::worker::watch_task(run, snapshot, name).await {
                let _ = internal.send(Internal::TaskFailed { key, why });
            }
        });
        self.apps.insert(index, handle);
        key
    }

    /// Lets go of the listening sockets of apps no longer in the table (the sockets close once
    /// their last process has ended).
    fn release_listeners(&mut self) {
        let apps = &self.apps;
        self.listeners
            .retain(|name, _| apps.iter().any(|handle| &handle.spec.name == name));
    }

    fn on_internal(&mut self, message: Internal) {
        match message {
            Internal::AddReplacement { old, reply } => {
                let Some(index) = self.apps.iter().position(|h| h.key == old) else {
                    let _ = reply.send(None);
                    return;
                };
                if self.shutdown.graceful.is_cancelled() {
                    let _ = reply.send(None);
                    return;
                }
                let spec = self.apps[index].spec.clone();
                let (restarts, hangs) = {
                    let snapshot = self.apps[index].snapshot.borrow();
                    (snapshot.restarts, snapshot.hangs)
                };
                let listeners = self.listeners.get(&spec.name).cloned().unwrap_or_default();
                let origins = Origins {
                    restarts,
                    hangs,
                    stopped: false,
                    fail_fast: true,
                };
                self.insert(index + 1, spec, origins, listeners);
                let _ = reply.send(Some(Member::of(&self.apps[index + 1])));
            }
            Internal::Retire { key, reply } => {
                let Some(index) = self.apps.iter().position(|h| h.key == key) else {
                    let _ = reply.send(None);
                    return;
                };
                let handle = self.apps.remove(index);
                let (done, answer) = oneshot::channel();
                // Its queue takes at least this one command: a full queue means a stuck task,
                // and then the handle's drop closes the channel and ends the task anyway.
                let _ = handle.commands.try_send(WorkerCommand::Remove(done));
                let _ = reply.send(Some(answer));
            }
            Internal::TaskFailed { key, why } => {
                let Some(index) = self.apps.iter().position(|h| h.key == key) else {
                    return;
                };
                if self.shutdown.graceful.is_cancelled() {
                    self.apps.remove(index);
                    return;
                }
                // The entry stays, errored with the reason, under a fresh task that obeys
                // stop, restart and delete.
                let old = self.apps.remove(index);
                let (restarts, hangs) = {
                    let snapshot = old.snapshot.borrow();
                    (snapshot.restarts, snapshot.hangs)
                };
                let listeners = self
                    .listeners
                    .get(&old.spec.name)
                    .cloned()
                    .unwrap_or_default();
                let origins = Origins {
                    restarts,
                    hangs,
                    stopped: true,
                    fail_fast: false,
                };
                let (task, handle) =
                    WorkerTask::new(old.spec.clone(), self.context.clone(), origins, listeners);
                let task = task.begin_errored(why.clone());
                let event = AppEvent {
                    at: timestamp(std::time::SystemTime::now()),
                    kind: "errored".to_string(),
                    message: why,
                };
                let _ = handle.commands.try_send(WorkerCommand::Record(event));
                self.insert_task(index, task, handle);
            }
            Internal::ReloadDone { names } => {
                for name in names {
                    self.reloading.remove(&name);
                }
            }
        }
    }

    fn handle(&mut self, request: ControlRequest) {
        let ControlRequest { command, reply } = request;
        let starts_processes = matches!(
            command,
            Command::Start { .. } | Command::Restart { .. } | Command::Reload { .. }
        );
        if starts_processes && self.shutdown.graceful.is_cancelled() {
            let message = "the supervisor is shutting down".to_string();
            let _ = reply.send(Outcome::Error { message });
            return;
        }
        let outcome = match command {
            Command::Status => Outcome::Status {
                apps: self.apps.iter().map(WorkerHandle::status).collect(),
            },
            Command::Ping => Outcome::Pong {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_string(),
            },
            Command::Start { apps } => return self.start(apps, reply),
            Command::Stop { target } => {
                return self.command_each(&target, Change::Stop, reply, WorkerCommand::Stop)
            }
            Command::Restart { target } => {
                return self.command_each(&target, Change::Run, reply, WorkerCommand::Restart)
            }
            Command::Delete { target } => {
                return self.command_each(&target, Change::Forget, reply, WorkerCommand::Remove)
            }
            Command::Reload { target } => return self.reload(&target, reply),
            Command::Flush { target } => return self.flush(&target, reply),
            Command::Describe { target } => return self.describe(&target, reply),
            Command::Save => match self.persist() {
                Ok(()) => Outcome::Done {
                    apps: self.apps.iter().map(WorkerHandle::status).collect(),
                },
                Err(message) => Outcome::Error { message },
            },
            Command::Resurrect => return self.resurrect(reply),
            Command::Kill => return self.kill(reply),
        };
        let _ = reply.send(outcome);
    }

    fn start(&mut self, definitions: Vec<AppDefinition>, reply: oneshot::Sender<Outcome>) {
        let mut specs = Vec::new();
        let mut taken: Vec<String> = self.apps.iter().map(|a| a.spec.name.clone()).collect();
        for definition in definitions {
            match self.spec_from(definition, &taken) {
                Ok(spec) => {
                    taken.push(spec.name.clone());
                    specs.push(spec);
                }
                Err(message) => {
                    let _ = reply.send(Outcome::Error { message });
                    return;
                }
            }
        }
        let mut pending = Vec::new();
        for spec in specs {
            let indexes = match self.add_app(spec, &[Origins::default()]) {
                Ok(indexes) => indexes,
                Err(message) => {
                    // Apps added before this one keep running; say which one failed.
                    let message = match self.persist_checked() {
                        Ok(()) => message,
                        Err(unsaved) => format!("{message}; {unsaved}"),
                    };
                    let _ = reply.send(Outcome::Error { message });
                    return;
                }
            };
            for index in indexes {
                let handle = &self.apps[index];
                let (done, answer) = oneshot::channel();
                // A fresh task has an empty queue.
                let _ = handle.commands.try_send(WorkerCommand::Start(done));
                pending.push((watched(handle), answer));
            }
        }
        let saved = self.persist_checked();
        tokio::spawn(report_saved_when_done(pending, saved, reply));
    }

    fn spec_from(
        &mut self,
        definition: AppDefinition,
        taken: &[String],
    ) -> Result<AppSpec, String> {
        let script = PathBuf::from(&definition.script);
        let name = match definition.name.clone() {
            Some(name) if taken.contains(&name) => {
                return Err(format!("an app named '{name}' already exists"))
            }
            // The name rules (length, control characters, `all`, numbers) are checked with the
            // rest of the definition, which may come from any client of the control socket.
            Some(name) => name,
            None => config::unique_name(&script, taken),
        };
        let spec =
            AppSpec::from_definition(self.next_id, name, definition).map_err(|e| e.to_string())?;
        self.next_id = spec.end_id();
        Ok(spec)
    }

    /// Sends a command to every app the target names and answers once all have acted. With
    /// `forget`, the apps leave the table at once.
    fn command_each(
        &mut self,
        target: &Target,
        change: Change,
        reply: oneshot::Sender<Outcome>,
        make: fn(oneshot::Sender<CommandResult>) -> WorkerCommand,
    ) {
        let chosen: Vec<usize> = (0..self.apps.len())
            .filter(|&i| matches_target(&self.apps[i], target))
            .collect();
        if chosen.is_empty() {
            let message = no_match(target);
            let _ = reply.send(Outcome::Error { message });
            return;
        }
        let mut pending = Vec::new();
        for &index in &chosen {
            let handle = &self.apps[index];
            let (done, answer) = oneshot::channel();
            if let Err(error) = handle.commands.try_send(make(done)) {
                let message = format!("app '{}' is busy: {error}", handle.spec.name);
                let _ = reply.send(Outcome::Error { message });
                return;
            }
            pending.push((watched(handle), answer));
        }
        let ids: Vec<u32> = chosen.iter().map(|&i| self.apps[i].spec.id).collect();
        if matches!(change, Change::Forget) {
            let names: HashSet<&str> = chosen
                .iter()
                .map(|&i| self.apps[i].spec.name.as_str())
                .collect();
            if let Some(name) = names.iter().find(|n| self.reloading.contains(**n)) {
                let message = format!("a reload of '{name}' is running; delete it afterwards");
                let _ = reply.send(Outcome::Error { message });
                return;
            }
        }
        match change {
            Change::Stop => self.stopped.extend(ids),
            Change::Run => self.stopped.retain(|id| !ids.contains(id)),
            Change::Forget => {
                self.stopped.retain(|id| !ids.contains(id));
                let mut index = 0;
                self.apps.retain(|_| {
                    let keep = !chosen.contains(&index);
                    index += 1;
                    keep
                });
                self.release_listeners();
            }
        }
        let saved = self.persist_checked();
        tokio::spawn(report_saved_when_done(pending, saved, reply));
    }

    /// Starts a rolling reload of the target's apps in its own task (see [`reload_task`]).
    fn reload(&mut self, target: &Target, reply: oneshot::Sender<Outcome>) {
        let mut groups: Vec<ReloadGroup> = Vec::new();
        for handle in self.apps.iter().filter(|h| matches_target(h, target)) {
            let member = Member::of(handle);
            match groups.iter_mut().find(|g| g.name == handle.spec.name) {
                Some(group) => group.members.push(member),
                None => groups.push(ReloadGroup {
                    name: handle.spec.name.clone(),
                    rolling: !handle.spec.listen.is_empty(),
                    members: vec![member],
                }),
            }
        }
        if groups.is_empty() {
            let message = no_match(target);
            let _ = reply.send(Outcome::Error { message });
            return;
        }
        if let Some(group) = groups.iter().find(|g| self.reloading.contains(&g.name)) {
            let message = format!("a reload of '{}' is already running", group.name);
            let _ = reply.send(Outcome::Error { message });
            return;
        }
        for group in &groups {
            self.reloading.insert(group.name.clone());
            for member in &group.members {
                self.stopped.remove(&member.watched.spec.id);
            }
        }
        let saved = self.persist_checked();
        let (done, answer) = oneshot::channel();
        tokio::spawn(reload_task(groups, self.internal.clone(), done));
        tokio::spawn(forward_saved(answer, saved, reply));
    }

    /// Empties the target's log files.
    fn flush(&mut self, target: &Target, reply: oneshot::Sender<Outcome>) {
        let chosen: Vec<&WorkerHandle> = self
            .apps
            .iter()
            .filter(|handle| matches_target(handle, target))
            .collect();
        if chosen.is_empty() && !target.is_all() {
            let message = no_match(target);
            let _ = reply.send(Outcome::Error { message });
            return;
        }
        let names: Vec<Arc<str>> = chosen.iter().map(|h| h.spec.name.as_str().into()).collect();
        let apps: Vec<AppStatus> = chosen.iter().map(|h| h.status()).collect();
        let output = self.context.output.clone();
        tokio::spawn(async move {
            for name in names {
                output.clear(name).await;
            }
            let _ = reply.send(Outcome::Done { apps });
        });
    }

    /// The target's definitions, statuses and recent events.
    fn describe(&mut self, target: &Target, reply: oneshot::Sender<Outcome>) {
        let mut pending = Vec::new();
        for handle in self.apps.iter().filter(|h| matches_target(h, target)) {
            let (events, answer) = oneshot::channel();
            if handle
                .commands
                .try_send(WorkerCommand::Describe(events))
                .is_ok()
            {
                pending.push((watched(handle), answer));
            }
        }
        if pending.is_empty() {
            let message = no_match(target);
            let _ = reply.send(Outcome::Error { message });
            return;
        }
        tokio::spawn(async move {
            let mut apps = Vec::new();
            for (app, answer) in pending {
                apps.push(AppDescription {
                    status: app.status(),
                    definition: app.spec.definition(),
                    events: answer.await.unwrap_or_default(),
                });
            }
            let _ = reply.send(Outcome::Described { apps });
        });
    }

    /// Writes the app list to the state file, if this supervisor keeps one.
    fn persist(&self) -> Result<(), String> {
        let Some(path) = &self.state_file else {
            return Err("this supervisor keeps no state file (foreground mode)".to_string());
        };
        // One entry per app (not per instance): its first instance's id, the counters summed
        // and per instance, and stopped only if every instance was stopped.
        let mut apps: Vec<SavedApp> = Vec::new();
        let mut seen_keys = HashSet::new();
        for handle in &self.apps {
            let snapshot = handle.snapshot.borrow();
            let stopped = self.stopped.contains(&handle.spec.id);
            // A reload's replacement shares its instance's id: count the instance once.
            if !seen_keys.insert((handle.spec.name.clone(), handle.spec.instance)) {
                continue;
            }
            let app = match apps
                .iter_mut()
                .position(|a| a.definition.name.as_deref() == Some(handle.spec.name.as_str()))
            {
                Some(index) => &mut apps[index],
                None => {
                    apps.push(SavedApp {
                        id: handle.spec.id - handle.spec.instance,
                        definition: handle.spec.definition(),
                        restarts: 0,
                        hangs: 0,
                        stopped: true,
                        instances: Vec::new(),
                    });
                    let last = apps.len() - 1;
                    &mut apps[last]
                }
            };
            app.restarts += snapshot.restarts;
            app.hangs += snapshot.hangs;
            app.stopped &= stopped;
            app.id = app.id.min(handle.spec.id - handle.spec.instance);
            if handle.spec.instances > 1 {
                let slot = handle.spec.instance as usize;
                if app.instances.len() <= slot {
                    app.instances.resize(slot + 1, InstanceCounts::default());
                }
                app.instances[slot] = InstanceCounts {
                    restarts: snapshot.restarts,
                    hangs: snapshot.hangs,
                };
            }
        }
        let saved = SavedState {
            version: STATE_VERSION,
            apps,
        };
        if let Some(reason) = self.home_watch.lost() {
            return Err(format!("not writing {}: {reason}", path.display()));
        }
        state::write(path, &saved).map_err(|e| e.to_string())?;
        self.saved_counts.set(self.counts());
        Ok(())
    }

    /// Restarts plus hangs of every app now.
    fn counts(&self) -> u64 {
        self.apps
            .iter()
            .map(|handle| {
                let snapshot = handle.snapshot.borrow();
                snapshot.restarts + snapshot.hangs
            })
            .sum()
    }

    /// Writes the state file when a restart or hang was counted since it was last written, so
    /// that a daemon killed without warning is resurrected with its counters.
    fn persist_new_counts(&self) {
        if self.state_file.is_some()
            && !self.state_final
            && self.counts() != self.saved_counts.get()
        {
            self.persist_or_warn();
        }
    }

    /// Keeps the state file in step with the app table for a command that changed it: the error
    /// (also logged) is the one line that command's answer must carry, since apps that are not
    /// saved are lost at the next `resurrect`. Ok when this supervisor keeps no state file.
    fn persist_checked(&self) -> Result<(), String> {
        if self.state_file.is_none() {
            return Ok(());
        }
        self.persist().map_err(|error| {
            let message = format!(
                "the app list was not saved ({error}): the change took effect, but `resurrect` \
                 would not see it; make room and run `nodeguard save`"
            );
            tracing::error!("{message}");
            message
        })
    }

    /// Keeps the state file in step with the app table; a failure is logged, not fatal.
    fn persist_or_warn(&self) {
        if self.state_file.is_some() {
            if let Err(error) = self.persist() {
                tracing::warn!("{error}");
            }
        }
    }

    /// Brings back the saved apps that are not in the table, with their ids and counters.
    fn resurrect(&mut self, reply: oneshot::Sender<Outcome>) {
        let Some(path) = self.state_file.clone() else {
            let message = "this supervisor keeps no state file (foreground mode)".to_string();
            let _ = reply.send(Outcome::Error { message });
            return;
        };
        let saved = match state::read(&path) {
            Ok(Some(saved)) => saved,
            Ok(None) => {
                let message = format!("nothing to resurrect: {} does not exist", path.display());
                let _ = reply.send(Outcome::Error { message });
                return;
            }
            Err(error) => {
                tracing::error!("{error}");
                let _ = reply.send(Outcome::Error {
                    message: error.to_string(),
                });
                return;
            }
        };
        let mut pending = Vec::new();
        let mut problems = Vec::new();
        for app in saved.apps {
            let name = app.definition.name.clone().unwrap_or_default();
            if self.apps.iter().any(|h| h.spec.name == name) {
                continue;
            }
            // Bounded before the id scan: a crafted count (u32::MAX) is refused by
            // `from_definition` below, not scanned id by id first.
            let instances = app.definition.instances.clamp(1, config::MAX_INSTANCES);
            let taken = |id: u32| self.apps.iter().any(|h| h.spec.id == id);
            let id = if (app.id..app.id.saturating_add(instances)).any(taken) {
                self.next_id
            } else {
                app.id
            };
            let spec = match AppSpec::from_definition(id, name.clone(), app.definition) {
                Ok(spec) => spec,
                Err(error) => {
                    problems.push(format!("{}: {error}", config::shown_name(&name)));
                    continue;
                }
            };
            self.next_id = self.next_id.max(spec.end_id());
            // Each instance gets its own counters back; a file with only the sums (one instance,
            // or written before instances were saved) gives them to the first.
            let origins: Vec<Origins> = if app.instances.len() == spec.instances as usize {
                app.instances
                    .iter()
                    .map(|counts| Origins {
                        restarts: counts.restarts,
                        hangs: counts.hangs,
                        stopped: app.stopped,
                        fail_fast: false,
                    })
                    .collect()
            } else {
                vec![
                    Origins {
                        restarts: app.restarts,
                        hangs: app.hangs,
                        stopped: app.stopped,
                        fail_fast: false,
                    },
                    Origins {
                        stopped: app.stopped,
                        ..Origins::default()
                    },
                ]
            };
            let indexes = match self.add_app(spec, &origins) {
                Ok(indexes) => indexes,
                Err(error) => {
                    problems.push(format!("{}: {error}", config::shown_name(&name)));
                    continue;
                }
            };
            for index in indexes {
                let handle = &self.apps[index];
                let (done, answer) = oneshot::channel();
                if app.stopped {
                    let _ = done.send(Ok(()));
                } else {
                    let _ = handle.commands.try_send(WorkerCommand::Start(done));
                }
                pending.push((watched(handle), answer));
            }
        }
        let saved = self.persist_checked();
        if !problems.is_empty() {
            let mut message = format!("could not bring back: {}", problems.join("; "));
            if let Err(unsaved) = saved {
                message = format!("{message}; {unsaved}");
            }
            let _ = reply.send(Outcome::Error { message });
            return;
        }
        tokio::spawn(report_saved_when_done(pending, saved, reply));
    }

    /// Saves the app list (so `resurrect` brings it back), stops every app, answers, then ends
    /// the supervisor.
    fn kill(&mut self, reply: oneshot::Sender<Outcome>) {
        // Stopping apps whose list cannot be saved would lose them for good: refuse instead.
        if let Err(error) = self.persist() {
            let message = format!(
                "nothing was stopped: the app list cannot be saved for `resurrect` ({error}); \
                 free the disk, or stop the apps with `nodeguard delete all` first"
            );
            tracing::error!("kill refused: {message}");
            let _ = reply.send(Outcome::Error { message });
            return;
        }
        self.state_final = true;
        let mut pending = Vec::new();
        self.listeners.clear();
        for handle in self.apps.drain(..) {
            let (done, answer) = oneshot::channel();
            if handle
                .commands
                .try_send(WorkerCommand::Remove(done))
                .is_ok()
            {
                pending.push((watched(&handle), answer));
            }
        }
        let graceful = self.shutdown.graceful.clone();
        tokio::spawn(async move {
            report_when_done(pending, reply).await;
            graceful.cancel();
        });
    }
}

/// What a command does to an app's place in the table and its saved state.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// It stays, saved as stopped.
    Stop,
    /// It stays, saved as running.
    Run,
    /// It leaves the table.
    Forget,
}

fn watched(handle: &WorkerHandle) -> Watched {
    Watched {
        spec: handle.spec.clone(),
        snapshot: handle.snapshot.clone(),
        tree: handle.tree.clone(),
    }
}

/// Why a command found no app for `target`.
fn no_match(target: &Target) -> String {
    if target.is_all() {
        "there are no apps".to_string()
    } else {
        format!("no app named or numbered '{}'", target.0)
    }
}

fn matches_target(handle: &WorkerHandle, target: &Target) -> bool {
    target.is_all()
        || handle.spec.name == target.0
        || target.0.parse::<u32>().ok() == Some(handle.spec.id)
}

/// [`report_when_done`], but an app list that could not be saved (`saved`) makes the answer an
/// error as well.
async fn report_saved_when_done(
    pending: Vec<(Watched, oneshot::Receiver<CommandResult>)>,
    saved: Result<(), String>,
    reply: oneshot::Sender<Outcome>,
) {
    let (done, answer) = oneshot::channel();
    report_when_done(pending, done).await;
    forward_saved(answer, saved, reply).await;
}

/// Passes a command's answer on; an app list that could not be saved (`saved`) makes it an error.
async fn forward_saved(
    answer: oneshot::Receiver<Outcome>,
    saved: Result<(), String>,
    reply: oneshot::Sender<Outcome>,
) {
    let Ok(outcome) = answer.await else {
        return;
    };
    let outcome = match (outcome, saved) {
        (outcome, Ok(())) => outcome,
        (Outcome::Error { message }, Err(unsaved)) => Outcome::Error {
            message: format!("{message}; {unsaved}"),
        },
        (_, Err(unsaved)) => Outcome::Error { message: unsaved },
    };
    let _ = reply.send(outcome);
}

/// Waits for every app's answer, then sends `Done` with their statuses, or an `Error` naming each
/// app whose command failed.
async fn report_when_done(
    pending: Vec<(Watched, oneshot::Receiver<CommandResult>)>,
    reply: oneshot::Sender<Outcome>,
) {
    let mut failures = Vec::new();
    let mut apps = Vec::new();
    for (app, answer) in pending {
        match answer.await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => failures.push(format!("{}: {why}", app.spec.name)),
            Err(_) => failures.push(format!("{}: the app's task ended", app.spec.name)),
        }
        apps.push(app.status());
    }
    let outcome = if failures.is_empty() {
        Outcome::Done { apps }
    } else {
        Outcome::Error {
            message: failures.join("; "),
        }
    };
    let _ = reply.send(outcome);
}

/// A request from a reload task to the actor.
enum Internal {
    /// Add a fail-fast replacement for the instance with key `old`, right after it in the table.
    /// `None` if that instance is gone or the supervisor is shutting down.
    AddReplacement {
        old: u64,
        reply: oneshot::Sender<Option<Member>>,
    },
    /// Take the instance out of the table and stop it; the receiver answers once it has exited.
    Retire {
        key: u64,
        reply: oneshot::Sender<Option<oneshot::Receiver<CommandResult>>>,
    },
    /// The reload of these apps is over.
    ReloadDone { names: Vec<String> },
    /// The task of the instance with this key ended by a panic; its process group was killed.
    TaskFailed { key: u64, why: String },
}

/// One instance as a reload task sees it.
struct Member {
    key: u64,
    commands: mpsc::Sender<WorkerCommand>,
    watched: Watched,
}

impl Member {
    fn of(handle: &WorkerHandle) -> Self {
        Self {
            key: handle.key,
            commands: handle.commands.clone(),
            watched: watched(handle),
        }
    }

    fn pid(&self) -> Option<u32> {
        self.watched.snapshot.borrow().pid
    }

    /// Adds an event to this instance's `describe` history.
    async fn record(&self, kind: &str, message: String) {
        let event = AppEvent {
            at: timestamp(std::time::SystemTime::now()),
            kind: kind.to_string(),
            message,
        };
        let _ = self.commands.send(WorkerCommand::Record(event)).await;
    }
}

/// The instances of one app that a reload covers.
struct ReloadGroup {
    name: String,
    /// Shared listen addresses: replace each instance while the others serve. Otherwise each
    /// instance binds its own port and is restarted (stopped, then started) in turn.
    rolling: bool,
    members: Vec<Member>,
}

/// Reloads each group in turn and answers: `Reloaded`, or an error at the first replacement that
/// failed (its old instance and all not yet replaced keep running).
async fn reload_task(
    groups: Vec<ReloadGroup>,
    actor: mpsc::UnboundedSender<Internal>,
    reply: oneshot::Sender<Outcome>,
) {
    let names: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
    let mut notes = Vec::new();
    let mut apps = Vec::new();
    let mut failure = None;
    for group in &groups {
        let result = if group.rolling {
            reload_rolling(group, &actor, &mut apps).await
        } else {
            notes.push(format!(
                "{}: no --listen address, so its instances each bind their own port: restarted \
                 them one at a time (stop, then start), which is not zero-downtime",
                group.name
            ));
            restart_in_turn(group, &mut apps).await
        };
        match result {
            Ok(note) => notes.push(note),
            Err(message) => {
                failure = Some(message);
                break;
            }
        }
    }
    let _ = actor.send(Internal::ReloadDone { names });
    let outcome = match failure {
        Some(message) => Outcome::Error { message },
        None => Outcome::Reloaded { apps, notes },
    };
    let _ = reply.send(outcome);
}

/// Stop-then-start for apps without shared sockets, one instance at a time.
async fn restart_in_turn(group: &ReloadGroup, apps: &mut Vec<AppStatus>) -> Result<String, String> {
    for member in &group.members {
        let (done, answer) = oneshot::channel();
        if member
            .commands
            .send(WorkerCommand::Restart(done))
            .await
            .is_err()
        {
            return Err(format!(
                "{}: the app was removed during the reload",
                group.name
            ));
        }
        match answer.await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err(format!("reload of {} failed: {why}", group.name)),
            Err(_) => return Err(format!("{}: the app's task ended", group.name)),
        }
        apps.push(member.watched.status());
    }
    Ok(format!(
        "{}: restarted {} instance(s)",
        group.name,
        group.members.len()
    ))
}

/// For each instance: start a replacement, wait until it is ready, then retire (drain) the old
/// one. Never fewer ready instances than before. Returns a one-line summary.
async fn reload_rolling(
    group: &ReloadGroup,
    actor: &mpsc::UnboundedSender<Internal>,
    apps: &mut Vec<AppStatus>,
) -> Result<String, String> {
    let name = &group.name;
    let mut draining = Vec::new();
    let mut replaced = 0;
    let mut outcome = Ok(());
    for old in &group.members {
        let instance = old.watched.spec.instance;
        let (ask, answer) = oneshot::channel();
        let _ = actor.send(Internal::AddReplacement {
            old: old.key,
            reply: ask,
        });
        let Ok(Some(new)) = answer.await else {
            outcome = Err(format!(
                "reload of {name} stopped: instance {instance} is gone or the supervisor is \
                 shutting down"
            ));
            break;
        };
        let (done, started) = oneshot::channel();
        let result = match new.commands.send(WorkerCommand::Start(done)).await {
            Ok(()) => started
                .await
                .unwrap_or_else(|_| Err("its task ended".to_string())),
            Err(_) => Err("its task ended".to_string()),
        };
        match result {
            Ok(()) => {
                let old_pid = old.pid();
                let new_pid = new.pid();
                // `describe` keeps the instance's history across the reload.
                let (ask, history) = oneshot::channel();
                if old
                    .commands
                    .send(WorkerCommand::Describe(ask))
                    .await
                    .is_ok()
                {
                    if let Ok(events) = history.await {
                        let _ = new.commands.send(WorkerCommand::Inherit(events)).await;
                    }
                }
                let (ask, answer) = oneshot::channel();
                let _ = actor.send(Internal::Retire {
                    key: old.key,
                    reply: ask,
                });
                if let Ok(Some(exited)) = answer.await {
                    draining.push(exited);
                }
                new.record(
                    "reloaded",
                    format!(
                        "replaced pid {} of instance {instance}; the old process drains",
                        old_pid.map_or_else(|| "-".to_string(), |p| p.to_string())
                    ),
                )
                .await;
                tracing::info!(app = %name, instance, ?old_pid, ?new_pid, "reload: replaced an instance");
                apps.push(new.watched.status());
                replaced += 1;
            }
            Err(why) => {
                let (ask, answer) = oneshot::channel();
                let _ = actor.send(Internal::Retire {
                    key: new.key,
                    reply: ask,
                });
                if let Ok(Some(exited)) = answer.await {
                    let _ = exited.await;
                }
                let kept = group.members.len() - replaced;
                let message = format!(
                    "reload of {name} aborted: the new instance {instance} did not become ready: \
                     {why}; the old process(es) of {kept} instance(s) keep serving{}",
                    if replaced > 0 {
                        format!(" ({replaced} instance(s) already run the new version)")
                    } else {
                        String::new()
                    }
                );
                tracing::error!("{message}");
                for member in &group.members[replaced..] {
                    member.record("reload_aborted", message.clone()).await;
                }
                outcome = Err(message);
                break;
            }
        }
    }
    // The old processes finish their in-flight requests before the command returns.
    for exited in draining {
        let _ = exited.await;
    }
    outcome.map(|()| {
        format!(
            "{name}: reloaded {replaced} instance(s), each replacement ready before its old \
             process was drained"
        )
    })
}
