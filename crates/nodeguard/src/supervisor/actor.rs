//! The actor that owns the app table: control commands in, one command per app task out, replies
//! once each app's command is done.

use crate::config::{self, AppSpec};
use crate::io::listen::SharedListeners;
use crate::supervisor::worker::{
    CommandResult, Origins, WorkerCommand, WorkerContext, WorkerHandle, WorkerTask,
};
use nodeguard_proto::control::{
    AppDefinition, AppDescription, AppStatus, Command, Outcome, Target,
};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use super::*;
use crate::io::home::HomeWatch;
use crate::io::logfile::timestamp;
use crate::supervisor::events::Happening;
use nodeguard_proto::control::AppEvent;
use tokio::sync::broadcast;

/// The actor that owns the app table.
pub(super) struct Supervisor {
    pub(super) apps: Vec<WorkerHandle>,
    pub(super) next_key: u64,
    /// Each cluster-mode app's listening sockets, by app name, for the app's life.
    pub(super) listeners: HashMap<String, Arc<SharedListeners>>,
    /// The watch and cron tasks of apps that have them, by app name: cancelled with the app.
    pub(super) triggers: HashMap<String, tokio_util::sync::CancellationToken>,
    /// Apps a reload is running for.
    pub(super) reloading: HashSet<String>,
    /// Where reload tasks send their requests to the actor.
    pub(super) internal: mpsc::UnboundedSender<Internal>,
    pub(super) next_id: u32,
    pub(super) context: Arc<WorkerContext>,
    pub(super) tasks: TaskTracker,
    pub(super) shutdown: Shutdown,
    /// The state file, when this supervisor keeps one (the daemon).
    pub(super) state_file: Option<PathBuf>,
    /// Whether the home is still ours: the state file is never written into a home that another
    /// supervisor may have made anew.
    pub(super) home_watch: HomeWatch,
    /// Ids of apps an operator stopped: saved as stopped.
    pub(super) stopped: HashSet<u32>,
    /// Restarts plus hangs of every app as last written to the state file.
    pub(super) saved_counts: std::cell::Cell<u64>,
    /// The state file's writer (the daemon): group commit of every change.
    pub(super) persister: Option<persist::Persister>,
    /// When to look whether counters changed since the last write (a state event was seen).
    pub(super) counts_due: Option<tokio::time::Instant>,
    /// Set by `kill`: the state file it wrote is the one to resurrect from, whatever happens while
    /// the apps stop.
    pub(super) state_final: bool,
    /// End the run once every app has come to rest on its own.
    pub(super) exit_when_done: bool,
    /// Why the run ended, if every app came to rest on its own: whether all ended cleanly.
    pub(super) apps_finished: Option<bool>,
}

impl Supervisor {
    /// Serves control requests until shutdown has begun and every app's task has ended, so that
    /// `status` keeps answering while apps stop.
    pub(super) async fn run(
        &mut self,
        mut inbox: mpsc::Receiver<ControlRequest>,
        mut internal: mpsc::UnboundedReceiver<Internal>,
    ) {
        let tasks = self.tasks.clone();
        let mut events = self.context.events.subscribe();
        let mut closing = false;
        loop {
            tokio::select! {
                _ = self.shutdown.graceful.cancelled(), if !closing => {
                    closing = true;
                    // Spawns still queued from a start storm are not begun.
                    self.context.spawner.cancel_pending();
                    tasks.close();
                }
                _ = sleep_until_some(self.counts_due), if self.counts_due.is_some() => {
                    self.counts_due = None;
                    if !closing {
                        self.persist_new_counts();
                    }
                }
                _ = tasks.wait(), if closing => return,
                Some(request) = inbox.recv() => self.handle(request),
                Some(message) = internal.recv() => self.on_internal(message),
                received = events.recv(), if (self.exit_when_done || self.state_file.is_some()) && !closing => {
                    let state_changed = match received {
                        Ok(event) => matches!(event.what, Happening::State { .. }),
                        // Missed some: whatever they were, look again.
                        Err(broadcast::error::RecvError::Lagged(_)) => true,
                        // The bus lives in the context this actor holds: it cannot close first.
                        Err(broadcast::error::RecvError::Closed) => false,
                    };
                    if state_changed {
                        if self.exit_when_done {
                            self.end_if_all_finished();
                        }
                        // Counters are saved on a short timer, not per event (a start storm
                        // is thousands of events; each check is a pass over the table).
                        if self.state_file.is_some() && self.counts_due.is_none() {
                            self.counts_due = Some(
                                tokio::time::Instant::now() + persist::COUNTS_SAVE_DELAY,
                            );
                        }
                    }
                }
            }
        }
    }

    /// Foreground mode: once every app is at rest and at least one came there on its own (none
    /// is running, starting or backing off, and not all were stopped by an operator), the run
    /// is over.
    pub(super) fn end_if_all_finished(&mut self) {
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
    pub(super) fn add_app(
        &mut self,
        spec: AppSpec,
        origins: &[Origins],
    ) -> Result<Vec<usize>, String> {
        self.add_app_with_ids(spec, origins, &[])
    }

    /// [`Self::add_app`], instance `i` taking `ids[i]` when there is one (ids saved after a
    /// `scale`, which need not be consecutive), else `spec.id + i`.
    pub(super) fn add_app_with_ids(
        &mut self,
        spec: AppSpec,
        origins: &[Origins],
        ids: &[u32],
    ) -> Result<Vec<usize>, String> {
        let listeners = match self.listeners.get(&spec.name) {
            Some(listeners) => listeners.clone(),
            None => {
                let bound = if spec.shares_on_request() {
                    SharedListeners::on_request()
                } else {
                    SharedListeners::bind(&spec.listen).map_err(|e| e.to_string())?
                };
                let bound = Arc::new(bound);
                if !bound.is_empty() {
                    self.listeners.insert(spec.name.clone(), bound.clone());
                }
                bound
            }
        };
        if (spec.watch.is_some() || spec.cron_restart.is_some())
            && !self.triggers.contains_key(&spec.name)
        {
            let stop = self.shutdown.graceful.child_token();
            triggers::start(&spec, &self.internal, &stop);
            self.triggers.insert(spec.name.clone(), stop);
        }
        let mut indexes = Vec::new();
        for instance in 0..spec.instances.max(1) {
            let origin = origins
                .get(instance as usize)
                .or(origins.last())
                .copied()
                .unwrap_or_default();
            let instance_spec = AppSpec {
                // Below `end_id`, which `from_definition` checked to fit in a u32.
                id: ids
                    .get(instance as usize)
                    .copied()
                    .unwrap_or(spec.id.saturating_add(instance)),
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
    pub(super) fn insert(
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

    /// Runs `task` watched (see [`crate::supervisor::worker::watch_task`]): should it fail, the actor hears of it
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
            if let Some(why) = crate::supervisor::worker::watch_task(run, snapshot, name).await {
                let _ = internal.send(Internal::TaskFailed { key, why });
            }
        });
        self.apps.insert(index, handle);
        key
    }

    /// Lets go of the listening sockets of apps no longer in the table (the sockets close once
    /// their last process has ended).
    pub(super) fn release_listeners(&mut self) {
        if self.listeners.is_empty() && self.triggers.is_empty() {
            return;
        }
        let names: HashSet<&str> = self.apps.iter().map(|h| h.spec.name.as_str()).collect();
        self.listeners
            .retain(|name, _| names.contains(name.as_str()));
        self.triggers.retain(|name, stop| {
            let kept = names.contains(name.as_str());
            if !kept {
                stop.cancel();
            }
            kept
        });
    }

    pub(super) fn on_internal(&mut self, message: Internal) {
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
                let _ = handle
                    .commands
                    .try_send(WorkerCommand::Record(Box::new(event)));
                self.insert_task(index, task, handle);
            }
            Internal::Trigger { name, why } => self.on_trigger(name, why),
            Internal::Snapshot { reply } => {
                let _ = reply.send(self.snapshot_for_writer());
            }
            Internal::ReloadDone { names } => {
                for name in names {
                    self.reloading.remove(&name);
                }
            }
        }
    }

    /// A watch or cron trigger: restarts the app (reloads it with zero downtime when it has
    /// listen addresses or shares them on request), unless an operator stopped it, a reload of
    /// it is running, or the supervisor is shutting down.
    fn on_trigger(&mut self, name: String, why: String) {
        let instances: Vec<&WorkerHandle> =
            self.apps.iter().filter(|h| h.spec.name == name).collect();
        let Some(first) = instances.first() else {
            return;
        };
        if self.shutdown.graceful.is_cancelled()
            || self.reloading.contains(&name)
            || instances.iter().all(|h| self.stopped.contains(&h.spec.id))
        {
            return;
        }
        let reload = first.spec.reloads_rolling();
        let message = format!("{why}: {}", if reload { "reloading" } else { "restarting" });
        tracing::info!(app = %name, "{message}");
        for handle in &instances {
            let event = AppEvent {
                at: timestamp(std::time::SystemTime::now()),
                kind: "trigger".to_string(),
                message: message.clone(),
            };
            let _ = handle
                .commands
                .try_send(WorkerCommand::Record(Box::new(event)));
        }
        let target = Target(name.clone());
        let (reply, answer) = oneshot::channel();
        if reload {
            self.reload(&target, Verb::Reload, reply);
        } else {
            self.command_each(&target, Change::Run, reply, WorkerCommand::Restart);
        }
        tokio::spawn(async move {
            if let Ok(Outcome::Error { message }) = answer.await {
                tracing::warn!(app = %name, "{message}");
            }
        });
    }

    pub(super) fn handle(&mut self, request: ControlRequest) {
        let ControlRequest { command, reply } = request;
        let starts_processes = matches!(
            command,
            Command::Start { .. }
                | Command::Restart { .. }
                | Command::Reload { .. }
                | Command::Scale { .. }
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
            Command::Start { apps, caller_env } => {
                return self.start(with_caller_env(apps, caller_env), reply)
            }
            Command::Stop { target } => {
                return self.command_each(&target, Change::Stop, reply, WorkerCommand::Stop)
            }
            Command::Restart { target, update_env } => {
                if let Err(message) = self.update_env(&target, update_env) {
                    let _ = reply.send(Outcome::Error { message });
                    return;
                }
                // Cluster apps roll over their instances, like a reload.
                let rolling = self
                    .apps
                    .iter()
                    .any(|h| matches_target(h, &target) && h.spec.reloads_rolling());
                if rolling {
                    return self.reload(&target, Verb::Restart, reply);
                }
                return self.command_each(&target, Change::Run, reply, WorkerCommand::Restart);
            }
            Command::Delete { target } => {
                return self.command_each(&target, Change::Forget, reply, WorkerCommand::Remove)
            }
            Command::Reload { target, update_env } => {
                // A reload that will be refused must not change the environment either.
                let busy = self
                    .apps
                    .iter()
                    .filter(|h| matches_target(h, &target))
                    .find(|h| self.reloading.contains(&h.spec.name));
                if let (Some(handle), Some(_)) = (busy, &update_env) {
                    let message = format!("a reload of '{}' is already running", handle.spec.name);
                    let _ = reply.send(Outcome::Error { message });
                    return;
                }
                if let Err(message) = self.update_env(&target, update_env) {
                    let _ = reply.send(Outcome::Error { message });
                    return;
                }
                return self.reload(&target, Verb::Reload, reply);
            }
            Command::Flush { target } => return self.flush(&target, reply),
            Command::Reset { target } => {
                return self.command_each(&target, Change::Keep, reply, WorkerCommand::Reset)
            }
            Command::Describe { target } => return self.describe(&target, reply),
            Command::Profile {
                target,
                kind,
                duration_ms,
            } => return self.profile(&target, kind, duration_ms, reply),
            Command::Scale {
                target,
                count,
                relative,
            } => return self.scale(&target, count, relative, reply),
            Command::Save => match self.persist() {
                Ok(()) => Outcome::Done {
                    apps: self.apps.iter().map(WorkerHandle::status).collect(),
                },
                Err(error) => Outcome::Error {
                    message: error.to_string(),
                },
            },
            Command::Resurrect => return self.resurrect(reply),
            Command::Kill => return self.kill(reply),
            // The control server streams the events; the actor says which apps they are for.
            Command::Events { target } => self.events_of(target.as_ref()),
        };
        let _ = reply.send(outcome);
    }

    pub(super) fn start(
        &mut self,
        definitions: Vec<AppDefinition>,
        reply: oneshot::Sender<Outcome>,
    ) {
        let mut specs = Vec::new();
        // One set for the whole command: a name check per app, not a pass over the table.
        let mut taken: HashSet<String> = self.apps.iter().map(|a| a.spec.name.clone()).collect();
        // The apps of one `start` share their caller's environment: kept once, not per app.
        let mut shared_env: Option<Arc<[(String, String)]>> = None;
        for definition in definitions {
            match self.spec_from(definition, &taken) {
                Ok(mut spec) => {
                    if let Some(env) = &spec.caller_env {
                        match &shared_env {
                            Some(shared) if shared == env => spec.caller_env = Some(shared.clone()),
                            _ => shared_env = Some(env.clone()),
                        }
                    }
                    taken.insert(spec.name.clone());
                    specs.push(spec);
                }
                Err(message) => {
                    let _ = reply.send(Outcome::Error { message });
                    return;
                }
            }
        }
        if let Err(message) = self.check_fd_budget(&specs) {
            // Nothing was added: the ids taken for these apps are free again.
            self.next_id = specs
                .iter()
                .map(|spec| spec.id)
                .min()
                .unwrap_or(self.next_id);
            let _ = reply.send(Outcome::Error { message });
            return;
        }
        let mut pending = Vec::new();
        for spec in specs {
            let indexes = match self.add_app(spec, &[Origins::default()]) {
                Ok(indexes) => indexes,
                Err(message) => {
                    // Apps added before this one keep running; say which one failed.
                    let saved = self.persist_checked();
                    tokio::spawn(async move {
                        let message = match saved.wait().await {
                            Ok(()) => message,
                            Err(unsaved) => format!("{message}; {unsaved}"),
                        };
                        let _ = reply.send(Outcome::Error { message });
                    });
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

    /// Refuses a start whose processes would need more open files than the supervisor has left
    /// under its `RLIMIT_NOFILE` (see [`crate::platform::open_files`]): a clear answer now, not
    /// apps errored one by one with "Too many open files".
    fn check_fd_budget(&self, specs: &[AppSpec]) -> Result<(), String> {
        let apps: u64 = specs
            .iter()
            .map(|spec| u64::from(spec.instances.max(1)))
            .sum();
        let needed: u64 = specs
            .iter()
            .map(|spec| u64::from(spec.instances.max(1)) * fds_per_app(spec))
            .sum();
        let Some(budget) = crate::platform::open_files() else {
            return Ok(());
        };
        let left = budget.left().saturating_sub(FD_RESERVE);
        if needed <= left {
            return Ok(());
        }
        Err(format!(
            "cannot start {} more app{}: {} more open files needed, {} left \
             (RLIMIT_NOFILE {}, {} open, {} kept for the supervisor); raise the hard limit \
             (ulimit -Hn, or LimitNOFILE= in a systemd unit) and restart the daemon \
             (nodeguard kill, then start again)",
            crate::core::units::group_digits(apps),
            if apps == 1 { "" } else { "s" },
            crate::core::units::group_digits(needed),
            crate::core::units::group_digits(left),
            crate::core::units::group_digits(budget.limit),
            crate::core::units::group_digits(budget.open),
            FD_RESERVE,
        ))
    }

    /// `--update-env`: the target's apps are given `caller_env` in place of the environment they
    /// were started with, for their next processes (the restart or reload that follows). Their
    /// own `env` stays, and still wins over it.
    pub(super) fn update_env(
        &mut self,
        target: &Target,
        caller_env: Option<Vec<(String, String)>>,
    ) -> Result<(), String> {
        let Some(caller_env) = caller_env else {
            return Ok(());
        };
        config::env::check_vars("update_env", &caller_env)?;
        let caller_env: Arc<[(String, String)]> = Arc::from(caller_env);
        for handle in self.apps.iter_mut().filter(|h| matches_target(h, target)) {
            let caller_env = match handle.spec.filter_env.as_deref() {
                Some(prefixes) => Arc::from(config::env::filtered(&caller_env, Some(prefixes))),
                None => caller_env.clone(),
            };
            let spec = Arc::new(AppSpec {
                caller_env: Some(caller_env),
                ..(*handle.spec).clone()
            });
            handle
                .commands
                .try_send(WorkerCommand::Respec(spec.clone()))
                .map_err(|error| format!("app '{}' is busy: {error}", handle.spec.name))?;
            handle.spec = spec;
        }
        Ok(())
    }

    pub(super) fn spec_from(
        &mut self,
        definition: AppDefinition,
        taken: &HashSet<String>,
    ) -> Result<AppSpec, String> {
        let script = PathBuf::from(&definition.script);
        let name = match definition.name.clone() {
            Some(name) if taken.contains(&name) => {
                return Err(format!("an app named '{name}' already exists"))
            }
            // The name rules (length, control characters, `all`, numbers) are checked with the
            // rest of the definition, which may come from any client of the control socket.
            Some(name) => name,
            None => config::unique_name(&script, |name| taken.contains(name)),
        };
        let spec =
            AppSpec::from_definition(self.next_id, name, definition).map_err(|e| e.to_string())?;
        self.next_id = spec.end_id();
        Ok(spec)
    }

    /// Sends a command to every app the target names and answers once all have acted. With
    /// `forget`, the apps leave the table at once.
    pub(super) fn command_each(
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
        if target.is_all() && matches!(change, Change::Stop | Change::Forget) {
            // `stop all` or `delete all` during a start storm: the spawns still queued are
            // dropped at once (those apps rest stopped) instead of run one by one first.
            self.context.spawner.cancel_pending();
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
        let ids: HashSet<u32> = chosen.iter().map(|&i| self.apps[i].spec.id).collect();
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
            Change::Keep => {}
            Change::Stop => self.stopped.extend(ids),
            Change::Run => self.stopped.retain(|id| !ids.contains(id)),
            Change::Forget => {
                self.stopped.retain(|id| !ids.contains(id));
                let chosen: HashSet<usize> = chosen.into_iter().collect();
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

    /// Starts a rolling reload (or a restart that rolls over its cluster apps) of the target's
    /// apps in its own task (see [`reload_task`]).
    pub(super) fn reload(&mut self, target: &Target, verb: Verb, reply: oneshot::Sender<Outcome>) {
        let mut groups: Vec<ReloadGroup> = Vec::new();
        for handle in self.apps.iter().filter(|h| matches_target(h, target)) {
            let member = Member::of(handle);
            match groups.iter_mut().find(|g| g.name == handle.spec.name) {
                Some(group) => group.members.push(member),
                None => groups.push(ReloadGroup {
                    name: handle.spec.name.clone(),
                    rolling: handle.spec.reloads_rolling(),
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
            let message = format!("a reload or restart of '{}' is already running", group.name);
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
        tokio::spawn(reload_task(groups, verb, self.internal.clone(), done));
        tokio::spawn(forward_saved(answer, saved, reply));
    }

    /// Empties the target's log files.
    pub(super) fn flush(&mut self, target: &Target, reply: oneshot::Sender<Outcome>) {
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

    /// The apps an `events` stream is for: every one (none yet is fine) with no target or `all`,
    /// else the target's, which must exist.
    fn events_of(&self, target: Option<&Target>) -> Outcome {
        let apps: Vec<AppStatus> = self
            .apps
            .iter()
            .filter(|h| target.is_none_or(|target| matches_target(h, target)))
            .map(WorkerHandle::status)
            .collect();
        match target {
            Some(target) if apps.is_empty() && !target.is_all() => Outcome::Error {
                message: no_match(target),
            },
            _ => Outcome::Done { apps },
        }
    }

    /// A profile of each of the target's processes, taken in parallel; answered once all are
    /// written (or failed).
    pub(super) fn profile(
        &mut self,
        target: &Target,
        kind: nodeguard_proto::worker::ProfileKind,
        duration_ms: Option<u64>,
        reply: oneshot::Sender<Outcome>,
    ) {
        use crate::supervisor::worker::MAX_CPU_DURATION;
        use nodeguard_proto::worker::ProfileKind;
        let duration = match kind {
            ProfileKind::Cpu => std::time::Duration::from_millis(duration_ms.unwrap_or(10_000)),
            ProfileKind::Heap => std::time::Duration::ZERO,
        };
        if kind == ProfileKind::Cpu && (duration.is_zero() || duration > MAX_CPU_DURATION) {
            let message = format!(
                "a CPU profile lasts from 1 ms to {}",
                crate::core::exit::human(MAX_CPU_DURATION)
            );
            let _ = reply.send(Outcome::Error { message });
            return;
        }
        let mut pending = Vec::new();
        let mut errors = Vec::new();
        for handle in self.apps.iter().filter(|h| matches_target(h, target)) {
            let label = handle.spec.display_name();
            let (answer, answered) = oneshot::channel();
            let command = WorkerCommand::Profile {
                kind,
                duration,
                reply: answer,
            };
            match handle.commands.try_send(command) {
                Ok(()) => pending.push((label, answered)),
                Err(_) => errors.push(format!("{label}: too busy to take a command now")),
            }
        }
        if pending.is_empty() && errors.is_empty() {
            let message = no_match(target);
            let _ = reply.send(Outcome::Error { message });
            return;
        }
        tokio::spawn(async move {
            let mut profiles = Vec::new();
            for (label, answered) in pending {
                match answered.await {
                    Ok(Ok(file)) => profiles.push(file),
                    Ok(Err(why)) => errors.push(format!("{label}: {why}")),
                    Err(_) => errors.push(format!("{label}: its task ended")),
                }
            }
            let outcome = if profiles.is_empty() {
                Outcome::Error {
                    message: format!("no profile taken: {}", errors.join("; ")),
                }
            } else {
                Outcome::Profiled { profiles, errors }
            };
            let _ = reply.send(outcome);
        });
    }

    /// The target's definitions, statuses and recent events.
    pub(super) fn describe(&mut self, target: &Target, reply: oneshot::Sender<Outcome>) {
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

    /// Saves the app list (so `resurrect` brings it back), stops every app, answers, then ends
    /// the supervisor.
    pub(super) fn kill(&mut self, reply: oneshot::Sender<Outcome>) {
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
        // Spawns still queued from a start storm are dropped, not run one by one first.
        self.context.spawner.cancel_pending();
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
pub(super) enum Change {
    /// Whether it runs does not change (`reset`).
    Keep,
    /// It stays, saved as stopped.
    Stop,
    /// It stays, saved as running.
    Run,
    /// It leaves the table.
    Forget,
}

/// Open files the supervisor holds for each running app: the read ends of its stdout and stderr
/// pipes (none for a stream discarded by `disable_logs` or a /dev/null log file), the pidfd its
/// exit is awaited on, and the monitor's connection for an app Node runs. (Log files are opened
/// on an app's first output line; they are counted as they open, in the files open now.)
pub(super) fn fds_per_app(spec: &AppSpec) -> u64 {
    let monitor = u64::from(spec.interpreter.as_deref() != Some(crate::config::command::NONE));
    let pipes = u64::from(!spec.discards_stdout()) + u64::from(!spec.discards_stderr());
    1 + pipes + monitor
}

/// Open files kept free beyond the apps' needs: control connections, log files, the state file.
pub(super) const FD_RESERVE: u64 = 64;

/// The apps of a start, each given the environment their start sent once for all of them
/// (those that carry their own keep it).
fn with_caller_env(
    mut apps: Vec<AppDefinition>,
    shared: Option<Vec<(String, String)>>,
) -> Vec<AppDefinition> {
    if let Some(shared) = shared {
        for app in apps.iter_mut().filter(|app| app.caller_env.is_none()) {
            app.caller_env = Some(shared.clone());
        }
    }
    apps
}

/// Sleeps until `deadline` (forever when there is none).
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
