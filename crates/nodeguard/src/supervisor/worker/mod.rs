//! One task per app: owns the child process and its monitor connection, turns what happens into
//! [`Event`]s for the pure [`Worker`] state machine, performs the actions it returns, and publishes
//! a snapshot after every step.

mod commands;
mod failure;
mod hooks;
mod profile;
mod reports;
mod share;
mod snapshot;
mod spawn;
#[cfg(test)]
mod tests;

pub use commands::{CommandError, CommandResult, WorkerCommand};
use commands::{Goal, Waiter};
pub use failure::watch_task;
pub use profile::{ProfileResult, MAX_CPU_DURATION};
pub use snapshot::WorkerSnapshot;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use nodeguard_proto::control::{AppEvent, AppStatus};
use nodeguard_proto::worker::{LoopDelay, MemoryUsage, SupervisorMessage, WorkerMessage};
use nodeguard_proto::{encode_frame, MAX_WORKER_FRAME};

use crate::config::AppSpec;
use crate::core::exit::{human, ExitKind};
use crate::core::machine::{Action, Event, Phase, Report, StopSignal, Worker, SPAWN_FAILED};
use crate::io::forensics::{self, StackTap};
use crate::io::listen::SharedListeners;
use crate::io::monitor_socket::{MonitorConnection, TokenRegistry};
use crate::io::output::{Origin, OutputSink};
use crate::io::proctree::{self, TreeSnapshot};
use crate::platform;
use crate::supervisor::events::{BusEvent, Detail, EventBus, Happening};
use crate::supervisor::spawner::{ExitFuture, Launch};

/// What every worker task shares.
pub struct WorkerContext {
    /// Starts the app's processes (the spawner thread; a fake child in tests).
    pub spawner: Arc<dyn Launch>,
    pub registry: Arc<TokenRegistry>,
    pub output: OutputSink,
    /// Tracks the output-copying tasks, so shutdown can wait for the last lines.
    pub output_tasks: TaskTracker,
    pub preload: Option<PathBuf>,
    pub worker_socket: PathBuf,
    pub color: bool,
    /// The apps' process trees, rescanned every second.
    pub tree: watch::Receiver<Arc<TreeSnapshot>>,
    /// Origin of the ping schedule every app shares (see [`crate::core::machine::on_grid`]).
    pub ping_grid: Instant,
    /// Where every app's state changes and reports are published.
    pub events: EventBus,
    /// Worker sockets for apps run as another user.
    pub user_sockets: Arc<crate::io::user_sockets::UserSockets>,
    /// The home directory (profiles go to its `profiles/`).
    pub home: PathBuf,
    /// Runs the apps' event hooks (idle, with no task, until one has an event).
    pub hooks: Arc<crate::supervisor::hooks::Hooks>,
}

/// Handle kept by the supervisor for one app.
pub struct WorkerHandle {
    /// Unique among the supervisor's handles (an instance and its reload replacement share an
    /// id, not a key); set by the supervisor.
    pub key: u64,
    pub spec: Arc<AppSpec>,
    pub snapshot: watch::Receiver<WorkerSnapshot>,
    pub commands: mpsc::Sender<WorkerCommand>,
    pub tree: watch::Receiver<Arc<TreeSnapshot>>,
}

impl WorkerHandle {
    /// The app's status now.
    pub fn status(&self) -> AppStatus {
        let tree = self.tree.borrow().clone();
        self.snapshot
            .borrow()
            .to_status(&self.spec, Instant::now(), &tree)
    }
}

/// Events kept per app for `describe`.
pub const EVENT_HISTORY: usize = 50;

/// Where a worker begins: fresh, or restored from the state file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Origins {
    pub restarts: u64,
    pub hangs: u64,
    /// Begin stopped instead of spawning at once.
    pub stopped: bool,
    /// A reload's replacement: until its first ready, failing means errored, not restarted.
    pub fail_fast: bool,
}

/// The task that supervises one app.
pub struct WorkerTask {
    spec: Arc<AppSpec>,
    ctx: Arc<WorkerContext>,
    machine: Worker,
    /// The running process's exit, while it runs.
    child: Option<ExitFuture>,
    connection: Option<MonitorConnection>,
    /// Boxed: a channel holds a block of 32 slots from its creation, idle or not.
    connections: mpsc::Receiver<Box<MonitorConnection>>,
    deliver: mpsc::Sender<Box<MonitorConnection>>,
    generation: u64,
    token: Option<String>,
    snapshot: watch::Sender<WorkerSnapshot>,
    metrics: Metrics,
    commands: mpsc::Receiver<WorkerCommand>,
    waiters: Vec<Waiter>,
    /// Set by shutdown or removal: the task ends once the app is at rest.
    ending: bool,
    events: VecDeque<AppEvent>,
    begin_stopped: bool,
    /// The app's supervisor-owned listening sockets, inherited by every process spawned.
    listeners: Arc<SharedListeners>,
    /// Where the current process's output goes (for the supervisor's notes about it).
    origin: Option<Origin>,
    /// Watches the current process's stderr for the JS stack it prints when asked.
    tap: Option<Arc<StackTap>>,
    /// How long the loop was silent, set when the current process was hung and asked for its stack.
    capture: Option<Duration>,
    /// The HTTP requests the current process was handling at the latest probe (for a hang).
    hang_requests: Vec<String>,
    /// The stack the monitor sent, until it is reported.
    stack_frames: Option<Vec<String>>,
    /// The current process's last stderr lines when its hang was confirmed, for the hang's report.
    hang_tail: Vec<String>,
    /// The kernel OOM killer's part in the exit being handled.
    oom: Option<hooks::OomKill>,
    /// When the current process was spawned (the monotonic clock, in microseconds), and the
    /// cgroup's OOM-kill count then.
    spawned_micros: u64,
    oom_baseline: Option<u64>,
    /// The monitor's connection was gone or closed while its stack was awaited.
    capture_lost: bool,
    /// The monitor's interrupt missed its deadline for the current capture (then the process is
    /// killed, and its connection closing afterwards is no news).
    interrupt_timed_out: bool,
    /// The current process's [`proctree::ENV_SPAWN_KEY`].
    spawn_key: u64,
    /// Holds a lease on `listeners` (from its first spawn until it comes to rest).
    leased: bool,
    /// The profile streaming in from the monitor, if any.
    profile: Option<profile::ActiveProfile>,
    /// The spawn generation whose memory breach already had its heap snapshot.
    memory_snapshot_for: Option<u64>,
    /// What the memory event says about its heap snapshot.
    memory_note: Option<String>,
    /// When the last stall profile was taken.
    last_stall_profile: Option<Instant>,
    /// An event to step right after the current one.
    deferred: Option<Event>,
    /// The orphan sweep of the exited process's spawn key waits for its exit's report (see
    /// [`Self::end_tree`]; the key is still `spawn_key` until the next spawn).
    sweep_pending: bool,
    /// The spawn was cancelled (`stop all`, `kill` during a start storm): the starts queued
    /// before the command that cancelled it are answered "stopped before it was running", not
    /// run; the next other command ends this.
    drop_starts: bool,
}

/// Keys for [`proctree::ENV_SPAWN_KEY`], unique within this supervisor.
static NEXT_SPAWN_KEY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// How long to wait, after a hung process exited, for the last of its stderr.
const STACK_DRAIN: Duration = Duration::from_millis(250);

/// Commands queued for one worker before the supervisor waits.
const COMMAND_QUEUE: usize = 16;

#[derive(Default)]
struct Metrics {
    memory: Option<MemoryUsage>,
    loop_delay: Option<LoopDelay>,
}

async fn wait_child(child: &mut Option<ExitFuture>) -> std::io::Result<std::process::ExitStatus> {
    match child {
        Some(exit) => exit.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn read_connection(
    connection: &mut Option<MonitorConnection>,
) -> Result<Option<WorkerMessage>, crate::io::framed::FrameError> {
    match connection {
        Some(connection) => connection.reader.next_message().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl WorkerTask {
    pub fn new(
        spec: Arc<AppSpec>,
        ctx: Arc<WorkerContext>,
        origins: Origins,
        listeners: Arc<SharedListeners>,
    ) -> (Self, WorkerHandle) {
        let tree = ctx.tree.clone();
        let (deliver, connections) = mpsc::channel(1);
        let (snapshot, snapshot_rx) = watch::channel(WorkerSnapshot::initial());
        let (command_tx, commands) = mpsc::channel(COMMAND_QUEUE);
        let mut machine = Worker::new(spec.timing);
        machine.ping_grid = Some(ctx.ping_grid);
        machine.restarts = origins.restarts;
        machine.hangs = origins.hangs;
        machine.ready_timeout = spec.ready_timeout();
        machine.fail_fast = origins.fail_fast;
        if origins.stopped {
            machine.phase = Phase::Stopped;
        }
        let task = Self {
            machine,
            spec: spec.clone(),
            ctx,
            child: None,
            connection: None,
            connections,
            deliver,
            generation: 0,
            token: None,
            snapshot,
            metrics: Metrics::default(),
            commands,
            waiters: Vec::new(),
            ending: false,
            // Grows as events come: most apps never fill it, and thousands of apps each holding
            // room for the whole history cost megabytes.
            events: VecDeque::new(),
            begin_stopped: origins.stopped,
            listeners,
            origin: None,
            tap: None,
            hang_tail: Vec::new(),
            oom: None,
            spawned_micros: 0,
            oom_baseline: None,
            capture: None,
            hang_requests: Vec::new(),
            stack_frames: None,
            capture_lost: false,
            interrupt_timed_out: false,
            spawn_key: 0,
            leased: false,
            profile: None,
            memory_snapshot_for: None,
            memory_note: None,
            last_stall_profile: None,
            deferred: None,
            sweep_pending: false,
            drop_starts: false,
        };
        let handle = WorkerHandle {
            key: 0,
            spec,
            snapshot: snapshot_rx,
            commands: command_tx,
            tree,
        };
        (task, handle)
    }

    /// Supervises the app until it is removed, or `stop` (graceful) or `force` fires, and it has
    /// come to rest.
    ///
    /// Not an `async fn`: one would keep the task both as its argument and inside the future it
    /// awaits, a second copy of [`WorkerTask`] in every app's (mostly idle) task.
    pub fn run(
        mut self,
        stop: CancellationToken,
        force: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send {
        let span = tracing::info_span!("app", name = %self.spec.display_name());
        async move {
            Box::pin(self.begin()).await;
            let mut stop_seen = false;
            let mut force_seen = false;
            loop {
                if self.ending && self.machine.is_at_rest() {
                    break;
                }
                let deadline = self.machine.next_deadline();
                let profile_deadline = self.profile.as_ref().map(profile::ActiveProfile::deadline);
                // A heap snapshot holds the JS thread: the heartbeat waits for it (bounded).
                let heartbeat_held = self.profile.as_ref().is_some_and(|p| p.holds_heartbeat())
                    && matches!(self.machine.phase, Phase::Live { .. });
                let event = tokio::select! {
                    biased;
                    status = wait_child(&mut self.child) => {
                        self.child = None;
                        // The pong a memory snapshot held back is moot now.
                        let _ = self.fail_profile("the process exited".into());
                        // The process whose monitor recorded source maps (see io::sourcemap).
                        let maps_pid = self.connection.take().map(|c| c.pid).or(self.machine.pid());
                        self.forget_token();
                        if let (Some(path), Some(pid)) = (self.spec.pid_file_path(), self.machine.pid()) {
                            crate::io::pidfile::remove(&path, pid);
                        }
                        let tree_pids = self.tree_pids();
                        Box::pin(self.end_tree()).await;
                        if let Some(silent_for) = self.capture.take() {
                            if self.machine.capture_by_interrupt {
                                Box::pin(self.report_blocked(silent_for)).await;
                            } else {
                                Box::pin(self.report_stack(silent_for, maps_pid)).await;
                            }
                        }
                        self.forget_maps(maps_pid);
                        match status {
                            Ok(status) => {
                                let status = ExitKind::from_status(status);
                                Box::pin(self.check_oom(status, tree_pids)).await;
                                Event::Exited { status }
                            }
                            Err(error) => {
                                tracing::error!(%error, "lost track of the process");
                                Event::Exited { status: ExitKind::Code(-1) }
                            }
                        }
                    }
                    message = read_connection(&mut self.connection) => match self.on_message(message) {
                        Some(event) => event,
                        None => continue,
                    },
                    Some(connection) = self.connections.recv() => {
                        if connection.generation != self.generation || self.child.is_none() {
                            continue;
                        }
                        let captures = connection.stack_capture;
                        self.connection = Some(*connection);
                        if captures {
                            Box::pin(self.handle(Event::MonitorConnected)).await;
                            Event::MonitorCapturesStack
                        } else {
                            Event::MonitorConnected
                        }
                    }
                    _ = force.cancelled(), if !force_seen => {
                        force_seen = true;
                        stop_seen = true;
                        self.ending = true;
                        Event::ForceStop
                    }
                    _ = stop.cancelled(), if !stop_seen => {
                        stop_seen = true;
                        self.ending = true;
                        Event::Stop
                    }
                    Some(command) = self.commands.recv(), if !self.ending => {
                        if self.drop_starts {
                            if let WorkerCommand::Start(reply) = command {
                                let _ = reply.send(Err(CommandError::StoppedBeforeRunning));
                                continue;
                            }
                            self.drop_starts = false;
                        }
                        match self.on_command(command) {
                            Some(event) => event,
                            None => continue,
                        }
                    }
                    _ = sleep_until(profile_deadline), if profile_deadline.is_some() => match self.on_profile_deadline() {
                        Some(event) => event,
                        None => continue,
                    },
                    _ = sleep_until(deadline), if deadline.is_some() && !heartbeat_held => Event::Timer {
                        scheduled: deadline.unwrap_or_else(Instant::now),
                    },
                };
                // Boxed, here and above: what handling an event awaits (a spawn, a report) is
                // allocated while it runs, not held in every idle app's task all the time.
                Box::pin(self.handle(event)).await;
                if let Some(event) = self.deferred.take() {
                    Box::pin(self.handle(event)).await;
                }
                // An exit the machine did not report (it reports every one of a live process).
                Box::pin(self.sweep_after_exit()).await;
            }
            for waiter in self.waiters.drain(..) {
                let result = match waiter.goal {
                    Goal::AtRest => Ok(()),
                    Goal::Running { .. } => Err(CommandError::AppStopped),
                };
                let _ = waiter.reply.send(result);
            }
            self.forget_token();
        }
        .instrument(span)
    }

    /// The first spawn (unless restored as stopped).
    async fn begin(&mut self) {
        if self.begin_stopped {
            self.publish();
            return;
        }
        let event = self.spawn().await;
        self.handle(event).await;
    }

    fn on_message(
        &mut self,
        message: Result<Option<WorkerMessage>, crate::io::framed::FrameError>,
    ) -> Option<Event> {
        // Every number from the socket is checked before use: a monitor (or anything holding its
        // token) that sends an impossible one loses its connection, as for a malformed frame.
        if let Ok(Some(checked)) = &message {
            if let Err(invalid) = checked.check() {
                tracing::warn!(%invalid, "dropping the monitor connection");
                self.connection = None;
                return Some(Event::MonitorLost);
            }
        }
        match message {
            Ok(Some(WorkerMessage::Pong {
                memory,
                loop_delay,
                stack_on_sigint,
                ..
            })) => {
                self.metrics.memory = Some(memory);
                self.metrics.loop_delay = Some(loop_delay);
                let main = self.machine.pid();
                let tree = main.and_then(|pid| self.ctx.tree.borrow().of(pid).cloned());
                let monitor_in_main = self.connection.as_ref().map(|c| c.pid) == main;
                let rss = match tree {
                    Some(tree) if monitor_in_main => {
                        memory.rss.saturating_add(tree.descendants_rss)
                    }
                    // Under a command (npm start) the monitored process is a descendant, already
                    // in the tree's sum: add the main process's own memory instead.
                    Some(tree) => tree.root_rss.saturating_add(tree.descendants_rss),
                    None => memory.rss,
                };
                let pong = Event::Pong {
                    rss: Some(rss),
                    stack_on_sigint,
                };
                self.profile_on_pong(pong, rss, loop_delay.p99_ms)
            }
            Ok(Some(WorkerMessage::ProfileChunk { id, data })) => self.on_profile_chunk(id, data),
            Ok(Some(WorkerMessage::ProfileDone { id, error, hottest })) => {
                self.on_profile_done(id, error, hottest)
            }
            Ok(Some(WorkerMessage::Ready)) => Some(Event::Ready),
            Ok(Some(WorkerMessage::Share { id, host, port })) => self.on_share(id, host, port),
            Ok(Some(WorkerMessage::ListenedElsewhere { port })) => {
                self.on_listened_elsewhere(port);
                None
            }
            Ok(Some(WorkerMessage::Stack { frames, .. })) => {
                self.stack_frames = Some(frames);
                Some(Event::StackReceived)
            }
            Ok(Some(WorkerMessage::ProbeReply {
                seq,
                queued_ms,
                requests,
                ..
            })) => {
                self.hang_requests = forensics::bounded_requests(requests);
                Some(Event::ProbeReply {
                    seq,
                    queued_for: queued_ms
                        .filter(|ms| ms.is_finite() && *ms >= 0.0)
                        .and_then(|ms| Duration::try_from_secs_f64(ms / 1_000.0).ok()),
                })
            }
            Ok(Some(WorkerMessage::Hello { .. })) => {
                tracing::warn!("monitor sent a second hello; ignoring it");
                None
            }
            Ok(None) => {
                self.connection = None;
                self.monitor_lost_during_profile()
            }
            Err(error) => {
                tracing::warn!(%error, "dropping the monitor connection");
                self.connection = None;
                self.monitor_lost_during_profile()
            }
        }
    }

    /// The monitor's connection ended: so does any profile (a memory restart's held pong is
    /// stepped first, so the restart still happens).
    fn monitor_lost_during_profile(&mut self) -> Option<Event> {
        match self.fail_profile("the monitor's connection ended".into()) {
            Some(pong) => {
                self.deferred = Some(Event::MonitorLost);
                Some(pong)
            }
            None => Some(Event::MonitorLost),
        }
    }

    /// Steps the machine with `event` and every event its actions produce, then publishes.
    async fn handle(&mut self, event: Event) {
        if event == Event::StackReceived {
            self.report_received_stack().await;
        }
        if event == Event::MonitorLost && self.capture.is_some() && !self.interrupt_timed_out {
            self.capture_lost = true;
        }
        let mut queue = VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            let actions = self.machine.step(event, Instant::now());
            for action in actions {
                if let Some(follow_up) = self.perform(action).await {
                    queue.push_back(follow_up);
                }
            }
        }
        if self.leased && self.machine.is_at_rest() {
            self.leased = false;
            self.listeners.release();
        }
        self.publish();
        self.resolve_waiters();
    }

    async fn perform(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Spawn => Some(self.spawn().await),
            Action::SignalGroup { pgid, signal } => {
                // The machine's graceful signal is the app's kill_signal.
                let signal = match signal {
                    StopSignal::Terminate => self.spec.kill_signal,
                    other => other,
                };
                if let Err(error) = platform::signal_group(pgid, signal) {
                    tracing::error!(%error, pgid, ?signal, "cannot signal the process group");
                }
                None
            }
            Action::SendPing { seq } => self.send(SupervisorMessage::Ping { seq }),
            Action::SendProbe { seq } => {
                self.hang_requests.clear();
                self.send(SupervisorMessage::Probe {
                    seq,
                    show_query: self.spec.hang_show_query,
                })
            }
            Action::RequestStack { .. } => {
                let lost = self.send(SupervisorMessage::Stack { seq: 1 });
                self.capture_lost |= self.connection.is_none();
                lost
            }
            Action::RequestShutdown { pgid } => {
                if !self.send_shutdown() {
                    if let Err(error) = platform::signal_group(pgid, self.spec.kill_signal) {
                        tracing::error!(%error, pgid, "cannot signal the process group");
                    }
                }
                None
            }
            Action::CaptureStack { pid } => {
                if let Some(tap) = &self.tap {
                    tap.arm();
                }
                // Under a command (npm start) the monitored process is the app's own Node
                // process, not the spawned launcher: it is the one to print its stack.
                let pid = self.connection.as_ref().map_or(pid, |c| c.pid);
                if let Err(error) = platform::interrupt(pid) {
                    tracing::error!(%error, pid, "cannot send SIGINT for the stack");
                }
                None
            }
            Action::Report(report) => {
                if let Report::NotReady { waited, .. } = report {
                    self.fail_starting_waiters(waited);
                }
                if let Report::InterruptTimeout { .. } = report {
                    // The interrupt's deadline passed with the connection still up: the SIGKILL
                    // that follows closes it, which must not read as a lost connection.
                    self.interrupt_timed_out = true;
                }
                let why_unmonitored = matches!(report, Report::Unmonitored)
                    .then(|| self.spec.unmonitorable())
                    .flatten();
                if let (Report::Hung { .. }, Some(tap)) = (&report, &self.tap) {
                    self.hang_tail = tap.tail();
                }
                let note = self.hang_note(&report);
                let exited = matches!(report, Report::Exited { .. });
                self.log(report);
                if exited {
                    self.sweep_after_exit().await;
                }
                if let Some(text) = note {
                    self.note(text, Vec::new()).await;
                }
                if let Some(why) = why_unmonitored {
                    // The runtime says why (python3 cannot load the monitor): in describe too.
                    tracing::warn!(app = %self.spec.name, "not monitored: {why}");
                    self.record("unmonitored", format!("not monitored: {why}"));
                }
                None
            }
        }
    }

    /// The main process exited: forgets its pid and ends what is left of its tree. First its
    /// process group (a graceful stop asked the main process alone, through the monitor), then
    /// the descendants that left the group: those the last scan saw, and orphans carrying the
    /// spawn key. That sweep reads the supervisor's children (where the kernel does not list them,
    /// the whole process table: a millisecond or more), on the sweeper thread, one look for every
    /// app that exited meanwhile. After a stop it is awaited, so it is done before a supervisor
    /// that is shutting down exits; after an unexpected exit it is asked for once the exit is
    /// published (see [`Self::sweep_after_exit`]) and the restart goes ahead meanwhile.
    async fn end_tree(&mut self) {
        let Some(pid) = self.machine.pid() else {
            return;
        };
        self.ctx.spawner.forget(pid);
        if let Err(error) = platform::signal_group(pid, StopSignal::Kill) {
            tracing::warn!(%error, pid, "cannot end what is left of the process group");
        }
        let tree = self.ctx.tree.borrow().clone();
        proctree::end_known_descendants(tree.of(pid));
        if !matches!(self.machine.phase, Phase::Live { .. }) || self.ending {
            let _ = self.ctx.spawner.end_orphans(self.spawn_key).await;
        } else {
            self.sweep_pending = true;
        }
    }

    /// After an unexpected exit's report: lets the tasks it woke run first (the `events`
    /// streams write it out, the actor notes it), then asks for the orphan sweep of
    /// [`Self::end_tree`]. Started earlier, the sweeper's thread (a read of the supervisor's
    /// children and an allocation per child: thousands at scale) ran on the other core while the
    /// exit was handled and streamed, and took the allocator's lock from under it; on a busy
    /// machine that thread was preempted holding it, and the exit waited milliseconds.
    async fn sweep_after_exit(&mut self) {
        if !std::mem::take(&mut self.sweep_pending) {
            return;
        }
        // The key is taken before the yield; the spawn that changes it comes after this.
        let spawn_key = self.spawn_key;
        tokio::task::yield_now().await;
        // Not awaited: the restart goes ahead meanwhile.
        drop(self.ctx.spawner.end_orphans(spawn_key));
    }

    fn send(&mut self, message: SupervisorMessage) -> Option<Event> {
        let connection = self.connection.as_mut()?;
        let frame = match encode_frame(&message, MAX_WORKER_FRAME) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::error!(%error, "cannot encode a message to the monitor");
                return None;
            }
        };
        // Pings are tiny; a socket too full to take one belongs to a monitor that stopped reading,
        // which the missed pong will reveal. Never block the worker task on it.
        match connection.writer.try_write(&frame) {
            Ok(written) if written == frame.len() => None,
            Ok(_) | Err(_) => {
                tracing::warn!("cannot write to the monitor; dropping the connection");
                self.connection = None;
                Some(Event::MonitorLost)
            }
        }
    }

    /// Writes the shutdown message; false if there is no connection to write it on.
    fn send_shutdown(&mut self) -> bool {
        let Some(connection) = self.connection.as_mut() else {
            return false;
        };
        let Ok(frame) = encode_frame(&SupervisorMessage::Shutdown, MAX_WORKER_FRAME) else {
            return false;
        };
        match connection.writer.try_write(&frame) {
            Ok(written) if written == frame.len() => true,
            // A partial write leaves the stream unusable: drop it and fall back to SIGTERM.
            Ok(_) | Err(_) => {
                tracing::warn!("cannot write the shutdown message; sending SIGTERM instead");
                self.connection = None;
                false
            }
        }
    }

    fn forget_token(&mut self) {
        if let Some(token) = self.token.take() {
            self.ctx.registry.forget(&token);
        }
    }
}

#[cfg(test)]
mod task_failure_tests {
    use super::*;
    use std::os::unix::process::{CommandExt, ExitStatusExt};

    /// A task that panics with a process running: the process group is killed and the reason
    /// comes back for the supervisor to show.
    #[tokio::test]
    async fn a_failed_task_kills_its_process_and_says_why() {
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .process_group(0)
            .spawn()
            .expect("sleep runs");
        let snapshot = WorkerSnapshot {
            pid: Some(child.id()),
            ..WorkerSnapshot::initial()
        };
        let (_publish, watched) = watch::channel(snapshot);
        let task = tokio::spawn(async { panic!("boom from a test") });
        let why = watch_task(task, watched, "app".to_string()).await;
        let why = why.expect("a panic is reported");
        assert!(why.contains("boom from a test"), "{why}");
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
            .expect("wait");
        assert_eq!(status.signal(), Some(9), "{status:?}");

        let (_publish, watched) = watch::channel(WorkerSnapshot::initial());
        let ended = tokio::spawn(async {});
        assert_eq!(watch_task(ended, watched, "app".to_string()).await, None);
    }
}
