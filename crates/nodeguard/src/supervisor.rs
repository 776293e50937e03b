//! Runs a set of apps: prepares the state directory, binds the worker and control sockets, and
//! runs the supervisor actor, which owns the table of apps (one [`WorkerTask`] each) and carries
//! out control commands. On shutdown it waits until every app has stopped and its last output line
//! is written.
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

use std::collections::HashSet;

use nodeguard_proto::control::{
    AppDefinition, AppDescription, AppStatus, Command, Outcome, Target,
};

use crate::config::{self, AppSpec, SupervisorConfig};
use crate::control;
use crate::home::{Home, HomeError};
use crate::output;
use crate::platform;
use crate::proctree;
use crate::spawner::Spawner;
use crate::state::{self, SavedApp, SavedState, STATE_VERSION};
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
    /// Set when the run ended because every app came to rest on its own: whether all ended
    /// cleanly.
    pub apps_finished: Option<bool>,
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
    let home = Home::prepare(&config.home)?;
    let worker_listener = bind(&home.paths.worker_socket)?;
    let control_listener = bind(&home.paths.control_socket)?;
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
    let control_tasks = TaskTracker::new();
    let (requests, inbox) = mpsc::channel(REQUEST_QUEUE);
    tokio::spawn(workers::serve(worker_listener, registry, servers.clone()));
    tokio::spawn(control::serve(
        control_listener,
        requests,
        control_tasks.clone(),
        servers.clone(),
    ));

    let mut supervisor = Supervisor {
        apps: Vec::new(),
        next_id: 0,
        context: context.clone(),
        tasks: TaskTracker::new(),
        shutdown: shutdown.clone(),
        state_file: config.persist.then(|| state::state_path(&home.paths.home)),
        stopped: HashSet::new(),
        saved_counts: std::cell::Cell::new(0),
        state_final: false,
        exit_when_done: config.exit_when_done,
        apps_finished: None,
    };
    for spec in config.apps {
        supervisor.next_id = supervisor.next_id.max(spec.id + 1);
        supervisor.add(spec, Origins::default());
    }
    tracing::info!(
        home = %home.paths.home.display(),
        "supervising {} app(s)",
        supervisor.apps.len()
    );
    let tasks = supervisor.tasks.clone();
    supervisor.run(inbox).await;
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
    })
}

/// The actor that owns the app table.
struct Supervisor {
    apps: Vec<WorkerHandle>,
    next_id: u32,
    context: Arc<WorkerContext>,
    tasks: TaskTracker,
    shutdown: Shutdown,
    /// The state file, when this supervisor keeps one (the daemon).
    state_file: Option<PathBuf>,
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
    async fn run(&mut self, mut inbox: mpsc::Receiver<ControlRequest>) {
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

    fn add(&mut self, spec: AppSpec, origins: Origins) -> &WorkerHandle {
        if origins.stopped {
            self.stopped.insert(spec.id);
        }
        let (task, handle) = WorkerTask::new(spec, self.context.clone(), origins);
        self.tasks
            .spawn(task.run(self.shutdown.graceful.clone(), self.shutdown.force.clone()));
        self.apps.push(handle);
        &self.apps[self.apps.len() - 1]
    }

    fn handle(&mut self, request: ControlRequest) {
        let ControlRequest { command, reply } = request;
        let starts_processes = matches!(command, Command::Start { .. } | Command::Restart { .. });
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
            let handle = self.add(spec, Origins::default());
            let (done, answer) = oneshot::channel();
            // A fresh task has an empty queue.
            let _ = handle.commands.try_send(WorkerCommand::Start(done));
            pending.push((watched(handle), answer));
        }
        self.persist_or_warn();
        tokio::spawn(report_when_done(pending, reply));
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
            Some(name) if name.is_empty() || name == "all" || name.parse::<u32>().is_ok() => {
                return Err(format!(
                    "'{name}' cannot be an app name (it would read as a target)"
                ))
            }
            Some(name) => name,
            None => config::unique_name(&script, taken),
        };
        let spec =
            AppSpec::from_definition(self.next_id, name, definition).map_err(|e| e.to_string())?;
        self.next_id += 1;
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
            let message = if target.is_all() {
                "there are no apps".to_string()
            } else {
                format!("no app named or numbered '{}'", target.0)
            };
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
            }
        }
        self.persist_or_warn();
        tokio::spawn(report_when_done(pending, reply));
    }

    /// Empties the target's log files.
    fn flush(&mut self, target: &Target, reply: oneshot::Sender<Outcome>) {
        let chosen: Vec<&WorkerHandle> = self
            .apps
            .iter()
            .filter(|handle| matches_target(handle, target))
            .collect();
        if chosen.is_empty() && !target.is_all() {
            let message = format!("no app named or numbered '{}'", target.0);
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
            let message = format!("no app named or numbered '{}'", target.0);
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
        let apps = self
            .apps
            .iter()
            .map(|handle| {
                let snapshot = handle.snapshot.borrow();
                SavedApp {
                    id: handle.spec.id,
                    definition: handle.spec.definition(),
                    restarts: snapshot.restarts,
                    hangs: snapshot.hangs,
                    stopped: self.stopped.contains(&handle.spec.id),
                }
            })
            .collect();
        let saved = SavedState {
            version: STATE_VERSION,
            apps,
        };
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
            let id = if self.apps.iter().any(|h| h.spec.id == app.id) {
                self.next_id
            } else {
                app.id
            };
            let spec = match AppSpec::from_definition(id, name.clone(), app.definition) {
                Ok(spec) => spec,
                Err(error) => {
                    problems.push(format!("{name}: {error}"));
                    continue;
                }
            };
            self.next_id = self.next_id.max(id + 1);
            let origins = Origins {
                restarts: app.restarts,
                hangs: app.hangs,
                stopped: app.stopped,
            };
            let handle = self.add(spec, origins);
            let (done, answer) = oneshot::channel();
            if app.stopped {
                let _ = done.send(Ok(()));
            } else {
                let _ = handle.commands.try_send(WorkerCommand::Start(done));
            }
            pending.push((watched(handle), answer));
        }
        self.persist_or_warn();
        if !problems.is_empty() {
            let _ = reply.send(Outcome::Error {
                message: format!("could not bring back: {}", problems.join("; ")),
            });
            return;
        }
        tokio::spawn(report_when_done(pending, reply));
    }

    /// Saves the app list (so `resurrect` brings it back), stops every app, answers, then ends
    /// the supervisor.
    fn kill(&mut self, reply: oneshot::Sender<Outcome>) {
        self.persist_or_warn();
        self.state_final = true;
        let mut pending = Vec::new();
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

fn matches_target(handle: &WorkerHandle, target: &Target) -> bool {
    target.is_all()
        || handle.spec.name == target.0
        || target.0.parse::<u32>().ok() == Some(handle.spec.id)
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
