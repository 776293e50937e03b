//! One task per app: owns the child process and its monitor connection, turns what happens into
//! [`Event`]s for the pure [`Worker`] state machine, performs the actions it returns, and publishes
//! a snapshot after every step.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use nodeguard_proto::control::{AppEvent, AppState, AppStatus};
use nodeguard_proto::worker::{LoopDelay, MemoryUsage, SupervisorMessage, WorkerMessage};
use nodeguard_proto::{
    encode_frame, ENV_APP_NAME, ENV_INSTANCE, ENV_LISTEN, ENV_SOCKET, ENV_TOKEN, ENV_WAIT_READY,
    MAX_WORKER_FRAME,
};

use crate::config::AppSpec;
use crate::exit::{human, ExitKind};
use crate::forensics::{self, StackTap};
use crate::listen::SharedListeners;
use crate::logfile::timestamp;
use crate::machine::{
    Action, Event, HangEvidence, Phase, Report, StackPlan, StopSignal, Worker, SPAWN_FAILED,
    STACK_TIMEOUT,
};
use crate::output::{prefix_for, Origin, OutputSink, StreamKind};
use crate::platform;
use crate::proctree::{self, TreeSnapshot};
use crate::spawner::Spawner;
use crate::workers::{new_token, MonitorConnection, TokenRegistry};

/// What every worker task shares.
pub struct WorkerContext {
    pub spawner: Spawner,
    pub registry: Arc<TokenRegistry>,
    pub output: OutputSink,
    /// Tracks the output-copying tasks, so shutdown can wait for the last lines.
    pub output_tasks: TaskTracker,
    pub preload: Option<PathBuf>,
    pub worker_socket: PathBuf,
    pub color: bool,
    /// The apps' process trees, rescanned every second.
    pub tree: watch::Receiver<Arc<TreeSnapshot>>,
    /// Origin of the ping schedule every app shares (see [`crate::machine::on_grid`]).
    pub ping_grid: Instant,
    /// Bumped whenever any app's snapshot changes.
    pub changes: watch::Sender<u64>,
}

/// What `status` shows of one app, kept with `Instant`s and turned into ages on demand.
#[derive(Debug, Clone)]
pub struct WorkerSnapshot {
    pub state: AppState,
    pub pid: Option<u32>,
    pub restarts: u64,
    pub hangs: u64,
    pub spawned_at: Option<Instant>,
    pub monitored: bool,
    pub memory: Option<MemoryUsage>,
    pub loop_delay: Option<LoopDelay>,
    pub last_pong_at: Option<Instant>,
    pub pong_round_trip: Option<Duration>,
    pub last_exit: Option<String>,
    /// Came to rest on its own: cleanly or not (see [`Worker::finished`]).
    pub finished: Option<bool>,
}

impl WorkerSnapshot {
    fn initial() -> Self {
        Self {
            state: AppState::Starting,
            pid: None,
            restarts: 0,
            hangs: 0,
            spawned_at: None,
            monitored: false,
            memory: None,
            loop_delay: None,
            last_pong_at: None,
            pong_round_trip: None,
            last_exit: None,
            finished: None,
        }
    }

    /// The wire form, with ages measured at `now` and the process tree from `tree`.
    pub fn to_status(&self, spec: &AppSpec, now: Instant, tree: &TreeSnapshot) -> AppStatus {
        let age_ms = |at: Instant| crate::duration::millis(now.saturating_duration_since(at));
        let descendants = self.pid.and_then(|pid| tree.of(pid));
        let tree_rss = self.memory.map(|memory| {
            memory
                .rss
                .saturating_add(descendants.map_or(0, |tree| tree.descendants_rss))
        });
        let processes = self
            .pid
            .map(|_| 1 + descendants.map_or(0, |tree| tree.descendants.len() as u32));
        AppStatus {
            name: spec.name.clone(),
            id: spec.id,
            instance: spec.shown_instance(),
            script: spec.script.display().to_string(),
            pid: self.pid,
            state: self.state,
            restarts: self.restarts,
            hangs: self.hangs,
            uptime_ms: self.pid.and(self.spawned_at).map(age_ms),
            monitored: self.monitored,
            memory: self.memory,
            tree_rss,
            processes,
            loop_delay_ms: self.loop_delay.map(|d| d.p99_ms),
            loop_delay: self.loop_delay,
            last_pong_ms: self.last_pong_at.map(age_ms),
            pong_rtt_ms: self.pong_round_trip.map(|d| d.as_secs_f64() * 1_000.0),
            last_exit: self.last_exit.clone(),
        }
    }
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

/// The answer to a command: `Err` says why the effect did not happen.
pub type CommandResult = Result<(), String>;

/// An operator's request to one app. Each reply is sent once the effect has happened.
#[derive(Debug)]
pub enum WorkerCommand {
    /// Start if stopped or errored; replies once the process runs.
    Start(oneshot::Sender<CommandResult>),
    /// Stop gracefully; replies once the process has exited.
    Stop(oneshot::Sender<CommandResult>),
    /// Replace the process; replies once the new one runs.
    Restart(oneshot::Sender<CommandResult>),
    /// Stop and end the task; replies once the process has exited.
    Remove(oneshot::Sender<CommandResult>),
    /// The recent events, at once.
    Describe(oneshot::Sender<Vec<AppEvent>>),
    /// Adds an event to the history (e.g. a reload that was aborted), and logs it.
    Record(AppEvent),
    /// Puts the history of the instance this one replaces before its own (reloads).
    Inherit(Vec<AppEvent>),
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

/// What a waiting reply needs to see.
#[derive(Debug, Clone, Copy)]
enum Goal {
    /// A ready process of at least this spawn generation.
    Running { generation: u64 },
    /// Stopped or errored.
    AtRest,
}

struct Waiter {
    goal: Goal,
    reply: oneshot::Sender<CommandResult>,
}

/// The task that supervises one app.
pub struct WorkerTask {
    spec: Arc<AppSpec>,
    ctx: Arc<WorkerContext>,
    machine: Worker,
    child: Option<Child>,
    connection: Option<MonitorConnection>,
    connections: mpsc::Receiver<MonitorConnection>,
    deliver: mpsc::Sender<MonitorConnection>,
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
    /// The current process's [`proctree::ENV_SPAWN_KEY`].
    spawn_key: u64,
    /// Holds a lease on `listeners` (from its first spawn until it comes to rest).
    leased: bool,
}

/// Waits for an app's task to end; if it ended by a panic (or was cancelled) rather than
/// returning, SIGKILLs the process group of the last pid it published, logs the failure and
/// returns why, so the supervisor can put an errored entry in its place.
pub async fn watch_task(
    task: tokio::task::JoinHandle<()>,
    snapshot: watch::Receiver<WorkerSnapshot>,
    name: String,
) -> Option<String> {
    let error = task.await.err()?;
    let why = if error.is_panic() {
        let payload = error.into_panic();
        let text = payload
            .downcast_ref::<&str>()
            .map(|text| (*text).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string());
        format!("the supervisor's task for this app failed ({text})")
    } else {
        "the supervisor's task for this app was cancelled".to_string()
    };
    let pid = snapshot.borrow().pid;
    if let Some(pid) = pid {
        if let Err(error) = platform::signal_group(pid, StopSignal::Kill) {
            tracing::error!(%error, pid, "cannot kill the process group of a failed app task");
        }
    }
    tracing::error!(app = %name, ?pid, "{why}; its process group was killed");
    Some(why)
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
            events: VecDeque::with_capacity(EVENT_HISTORY),
            begin_stopped: origins.stopped,
            listeners,
            origin: None,
            tap: None,
            capture: None,
            spawn_key: 0,
            leased: false,
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

    /// A task for an app whose previous task failed: it begins at rest, errored with `why`, and
    /// from there obeys start, restart, stop and delete as any other.
    pub fn begin_errored(mut self, why: String) -> Self {
        self.machine.last_exit = Some(why.clone());
        self.machine.phase = Phase::Errored { why };
        self.begin_stopped = true;
        self
    }

    /// Supervises the app until it is removed, or `stop` (graceful) or `force` fires, and it has
    /// come to rest.
    pub async fn run(mut self, stop: CancellationToken, force: CancellationToken) {
        let span = tracing::info_span!("app", name = %self.spec.display_name());
        async move {
            self.begin().await;
            let mut stop_seen = false;
            let mut force_seen = false;
            loop {
                if self.ending && self.machine.is_at_rest() {
                    break;
                }
                let deadline = self.machine.next_deadline();
                let event = tokio::select! {
                    biased;
                    status = wait_child(&mut self.child) => {
                        self.child = None;
                        self.connection = None;
                        self.forget_token();
                        self.end_tree();
                        if let Some(silent_for) = self.capture.take() {
                            self.report_stack(silent_for).await;
                        }
                        match status {
                            Ok(status) => Event::Exited { status: ExitKind::from_status(status) },
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
                        self.connection = Some(connection);
                        Event::MonitorConnected
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
                    Some(command) = self.commands.recv(), if !self.ending => match self.on_command(command) {
                        Some(event) => event,
                        None => continue,
                    },
                    _ = sleep_until(deadline), if deadline.is_some() => Event::Timer {
                        scheduled: deadline.unwrap_or_else(Instant::now),
                    },
                };
                self.handle(event).await;
            }
            for waiter in self.waiters.drain(..) {
                let result = match waiter.goal {
                    Goal::AtRest => Ok(()),
                    Goal::Running { .. } => Err("the app was stopped".to_string()),
                };
                let _ = waiter.reply.send(result);
            }
            self.forget_token();
        }
        .instrument(span)
        .await
    }

    /// Registers the command's reply and returns the event it means for the machine, if any.
    fn on_command(&mut self, command: WorkerCommand) -> Option<Event> {
        let next_generation = self.generation + 1;
        let (event, goal, reply) = match command {
            WorkerCommand::Start(reply) => {
                let generation = if self.machine.is_at_rest() {
                    next_generation
                } else {
                    self.generation
                };
                (Event::Start, Goal::Running { generation }, reply)
            }
            WorkerCommand::Restart(reply) => (
                Event::Restart,
                Goal::Running {
                    generation: next_generation,
                },
                reply,
            ),
            WorkerCommand::Stop(reply) => (Event::Stop, Goal::AtRest, reply),
            WorkerCommand::Remove(reply) => {
                self.ending = true;
                (Event::Stop, Goal::AtRest, reply)
            }
            WorkerCommand::Describe(reply) => {
                let _ = reply.send(self.events.iter().cloned().collect());
                return None;
            }
            WorkerCommand::Record(event) => {
                tracing::info!("{}: {}", event.kind, event.message);
                self.remember(event);
                return None;
            }
            WorkerCommand::Inherit(earlier) => {
                let mut events: VecDeque<AppEvent> = earlier.into();
                events.append(&mut self.events);
                while events.len() > EVENT_HISTORY {
                    events.pop_front();
                }
                self.events = events;
                return None;
            }
        };
        self.waiters.push(Waiter { goal, reply });
        Some(event)
    }

    /// Answers every waiter whose goal was reached or can no longer be.
    fn resolve_waiters(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        let phase = &self.machine.phase;
        let generation = self.generation;
        let last_exit = self.machine.last_exit.clone().unwrap_or_default();
        let mut still_waiting = Vec::new();
        for waiter in self.waiters.drain(..) {
            let result = match (waiter.goal, phase) {
                (Goal::AtRest, Phase::Stopped | Phase::Errored { .. }) => Some(Ok(())),
                (Goal::Running { generation: wanted }, Phase::Live { ready: true, .. })
                    if generation >= wanted =>
                {
                    Some(Ok(()))
                }
                (Goal::Running { .. }, Phase::Errored { why }) => Some(Err(why.clone())),
                (Goal::Running { .. }, Phase::Stopped) => {
                    Some(Err("stopped before it was running".to_string()))
                }
                (Goal::Running { generation: wanted }, Phase::Backoff { .. })
                    if generation >= wanted && last_exit.starts_with(SPAWN_FAILED) =>
                {
                    Some(Err(format!(
                        "could not start ({last_exit}); retrying after a backoff within the \
                         restart budget"
                    )))
                }
                (Goal::Running { generation: wanted }, Phase::Backoff { .. })
                    if generation >= wanted =>
                {
                    Some(Err(format!("exited while starting ({last_exit})")))
                }
                _ => None,
            };
            match result {
                Some(result) => {
                    let _ = waiter.reply.send(result);
                }
                None => still_waiting.push(waiter),
            }
        }
        self.waiters = still_waiting;
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
        message: Result<Option<WorkerMessage>, crate::framed::FrameError>,
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
                let descendants_rss = self
                    .machine
                    .pid()
                    .and_then(|pid| self.ctx.tree.borrow().of(pid).map(|t| t.descendants_rss));
                Some(Event::Pong {
                    rss: Some(memory.rss.saturating_add(descendants_rss.unwrap_or(0))),
                    stack_on_sigint,
                })
            }
            Ok(Some(WorkerMessage::Ready)) => Some(Event::Ready),
            Ok(Some(WorkerMessage::ProbeReply { seq, queued_ms, .. })) => Some(Event::ProbeReply {
                seq,
                queued_for: queued_ms
                    .filter(|ms| ms.is_finite() && *ms >= 0.0)
                    .and_then(|ms| Duration::try_from_secs_f64(ms / 1_000.0).ok()),
            }),
            Ok(Some(WorkerMessage::Hello { .. })) => {
                tracing::warn!("monitor sent a second hello; ignoring it");
                None
            }
            Ok(None) => {
                self.connection = None;
                Some(Event::MonitorLost)
            }
            Err(error) => {
                tracing::warn!(%error, "dropping the monitor connection");
                self.connection = None;
                Some(Event::MonitorLost)
            }
        }
    }

    /// Steps the machine with `event` and every event its actions produce, then publishes.
    async fn handle(&mut self, event: Event) {
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

    /// The current process missed its ready timeout: whoever waits for it to run (`start`) hears
    /// why now, instead of waiting through restarts that may never get ready either. A reload's
    /// fail-fast replacement is answered when it rests errored.
    fn fail_starting_waiters(&mut self, waited: Duration) {
        if self.machine.fail_fast {
            return;
        }
        let spec = &self.spec;
        let what = if spec.listen.is_empty() {
            "call ready() (wait-ready)".to_string()
        } else {
            let addresses: Vec<String> = spec.listen.iter().map(ToString::to_string).collect();
            format!("listen on {}", addresses.join(", "))
        };
        // `start` puts the app's name before it.
        let who = match spec.shown_instance() {
            Some(instance) => format!("instance {instance} "),
            None => String::new(),
        };
        let why = format!(
            "{who}did not {what} within {}; it was killed and is restarted within the restart \
             budget",
            human(waited)
        );
        let generation = self.generation;
        let mut still_waiting = Vec::new();
        for waiter in self.waiters.drain(..) {
            match waiter.goal {
                Goal::Running { generation: wanted } if generation >= wanted => {
                    let _ = waiter.reply.send(Err(why.clone()));
                }
                _ => still_waiting.push(waiter),
            }
        }
        self.waiters = still_waiting;
    }

    async fn perform(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Spawn => Some(self.spawn().await),
            Action::SignalGroup { pgid, signal } => {
                if let Err(error) = platform::signal_group(pgid, signal) {
                    tracing::error!(%error, pgid, ?signal, "cannot signal the process group");
                }
                None
            }
            Action::SendPing { seq } => self.send(SupervisorMessage::Ping { seq }),
            Action::SendProbe { seq } => self.send(SupervisorMessage::Probe { seq }),
            Action::RequestShutdown { pgid } => {
                if !self.send_shutdown() {
                    if let Err(error) = platform::signal_group(pgid, StopSignal::Terminate) {
                        tracing::error!(%error, pgid, "cannot signal the process group");
                    }
                }
                None
            }
            Action::CaptureStack { pid } => {
                if let Some(tap) = &self.tap {
                    tap.arm();
                }
                if let Err(error) = platform::interrupt(pid) {
                    tracing::error!(%error, pid, "cannot send SIGINT for the stack");
                }
                None
            }
            Action::Report(report) => {
                if let Report::NotReady { waited, .. } = report {
                    self.fail_starting_waiters(waited);
                }
                let note = self.hang_note(&report);
                self.log(report);
                if let Some(text) = note {
                    self.note(text).await;
                }
                None
            }
        }
    }

    /// The main process exited: forgets its pid and ends what is left of its tree. First its
    /// process group (a graceful stop asked the main process alone, through the monitor), then
    /// the descendants that left the group: those the last scan saw, and orphans carrying the
    /// spawn key. That sweep reads the whole process table (a millisecond or more), so after an
    /// unexpected exit it runs on the blocking pool while the restart goes ahead; after a stop it
    /// runs here, so it is done before a supervisor that is shutting down exits.
    fn end_tree(&mut self) {
        let Some(pid) = self.machine.pid() else {
            return;
        };
        self.ctx.spawner.forget(pid);
        if let Err(error) = platform::signal_group(pid, StopSignal::Kill) {
            tracing::warn!(%error, pid, "cannot end what is left of the process group");
        }
        let tree = self.ctx.tree.borrow().clone();
        proctree::end_known_descendants(tree.of(pid));
        let (spawn_key, children) = (self.spawn_key, self.ctx.spawner.children().clone());
        if matches!(self.machine.phase, Phase::Live { .. }) && !self.ending {
            tokio::task::spawn_blocking(move || proctree::end_orphans_by_key(spawn_key, &children));
        } else {
            proctree::end_orphans_by_key(spawn_key, &children);
        }
    }

    /// For a hang: remembers to collect the stack, or returns the line saying why there is none.
    fn hang_note(&mut self, report: &Report) -> Option<String> {
        let Report::Hung {
            silent_for, stack, ..
        } = report
        else {
            return None;
        };
        let why = match stack {
            StackPlan::Requested => {
                self.capture = Some(*silent_for);
                return None;
            }
            StackPlan::AppHandlesSigint => {
                "the app listens for SIGINT, which turns off Node's --trace-sigint"
            }
            StackPlan::ProcessUnresponsive => {
                "the process did not answer at all (not even the monitor's own thread)"
            }
        };
        Some(forensics::summary(*silent_for, Err(why)))
    }

    /// The hung process exited after SIGINT (or SIGKILL at the deadline): reads the stack it
    /// printed and records where it was stuck.
    async fn report_stack(&mut self, silent_for: Duration) {
        if let Phase::Stopping { pid, .. } = self.machine.phase {
            // Whatever else holds the stderr pipe goes now, so the pipe ends.
            let _ = platform::signal_group(pid, StopSignal::Kill);
        }
        let Some(tap) = self.tap.clone() else {
            return;
        };
        let lines = tap.finish(STACK_DRAIN).await;
        let text = match forensics::parse_trace(&lines, &self.spec.cwd) {
            Some(frames) => forensics::summary(silent_for, Ok(&frames)),
            None => forensics::summary(
                silent_for,
                Err(&format!(
                    "the process printed none within {} of SIGINT",
                    human(STACK_TIMEOUT)
                )),
            ),
        };
        self.note(text).await;
    }

    /// Records a forensic line: in `describe`, the supervisor's log, and the app's own log.
    async fn note(&mut self, text: String) {
        tracing::error!("{text}");
        self.record("stack", text.clone());
        if let Some(origin) = &self.origin {
            self.ctx
                .output
                .note(origin, format!("[nodeguard] {text}"))
                .await;
        }
    }

    fn record(&mut self, kind: &str, message: String) {
        self.remember(AppEvent {
            at: timestamp(SystemTime::now()),
            kind: kind.to_string(),
            message,
        });
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

    async fn spawn(&mut self) -> Event {
        self.generation += 1;
        if !self.leased && !self.listeners.is_empty() {
            if let Err(error) = self.listeners.acquire() {
                return Event::SpawnFailed {
                    error: error.to_string(),
                };
            }
            self.leased = true;
        }
        self.forget_token();
        self.metrics = Metrics::default();
        let token = match new_token() {
            Ok(token) => token,
            Err(error) => {
                return Event::SpawnFailed {
                    error: format!("cannot make a token: {error}"),
                }
            }
        };
        self.ctx
            .registry
            .register(token.clone(), self.generation, self.deliver.clone());
        self.token = Some(token.clone());

        let spec = self.spec.clone();
        let mut command = Command::new(&spec.node);
        // A hung process then prints its JS stack on SIGINT (see `forensics`).
        command.arg("--trace-sigint");
        if let Some(preload) = &self.ctx.preload {
            command.arg("--require").arg(preload);
        }
        command
            .args(&spec.node_args)
            .arg(&spec.script)
            .args(&spec.args)
            .current_dir(&spec.cwd)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env(ENV_SOCKET, &self.ctx.worker_socket)
            .env(ENV_TOKEN, &token)
            .env(ENV_APP_NAME, &spec.name)
            .env(ENV_INSTANCE, spec.instance.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        platform::configure_child(&mut command);
        if !self.listeners.is_empty() {
            command.env(ENV_LISTEN, self.listeners.env_value());
            platform::inherit_fds(&mut command, self.listeners.fds());
        }
        if spec.wait_ready {
            command.env(ENV_WAIT_READY, "1");
        }

        let spawn_key = NEXT_SPAWN_KEY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.spawn_key = spawn_key;
        command.env(proctree::ENV_SPAWN_KEY, spawn_key.to_string());
        match self.ctx.spawner.spawn(command, spawn_key).await {
            Ok(mut child) => {
                let Some(pid) = child.id() else {
                    return Event::SpawnFailed {
                        error: "the process exited before it could be tracked".into(),
                    };
                };
                let origin = Origin {
                    app: spec.name.as_str().into(),
                    prefix: prefix_for(&spec.display_name(), spec.id as usize, self.ctx.color),
                    out_file: spec.out_file.clone().map(Arc::new),
                    error_file: spec.error_file.clone().map(Arc::new),
                    timestamps: spec.log_timestamps,
                };
                let tap = Arc::new(StackTap::default());
                if let Some(stdout) = child.stdout.take() {
                    let sink = self.ctx.output.clone();
                    let task = sink.copy_lines(stdout, origin.clone(), StreamKind::Stdout, None);
                    self.ctx.output_tasks.spawn(task);
                }
                if let Some(stderr) = child.stderr.take() {
                    let sink = self.ctx.output.clone();
                    let task = sink.copy_lines(
                        stderr,
                        origin.clone(),
                        StreamKind::Stderr,
                        Some(tap.clone()),
                    );
                    self.ctx.output_tasks.spawn(task);
                }
                self.origin = Some(origin);
                self.tap = Some(tap);
                self.capture = None;
                self.child = Some(child);
                Event::Spawned { pid }
            }
            Err(error) => {
                self.forget_token();
                Event::SpawnFailed {
                    error: format!("cannot start {}: {error}", spec.node.display()),
                }
            }
        }
    }

    fn forget_token(&mut self) {
        if let Some(token) = self.token.take() {
            self.ctx.registry.forget(&token);
        }
    }

    fn publish(&self) {
        let machine = &self.machine;
        let (state, pid, spawned_at, last_pong_at, round_trip) = match &machine.phase {
            Phase::Spawning => (AppState::Starting, None, None, None, None),
            Phase::Live {
                pid,
                spawned_at,
                ready,
                heartbeat,
            } => (
                if *ready {
                    AppState::Running
                } else {
                    AppState::Starting
                },
                Some(*pid),
                Some(*spawned_at),
                heartbeat.last_pong_at,
                heartbeat.last_round_trip,
            ),
            Phase::Stopping {
                pid, spawned_at, ..
            } => (
                AppState::Stopping,
                Some(*pid),
                Some(*spawned_at),
                None,
                None,
            ),
            Phase::Backoff { .. } => (AppState::Backoff, None, None, None, None),
            Phase::Stopped => (AppState::Stopped, None, None, None, None),
            Phase::Errored { .. } => (AppState::Errored, None, None, None, None),
        };
        let monitored = self.connection.is_some();
        self.snapshot.send_modify(|snapshot| {
            snapshot.state = state;
            snapshot.pid = pid;
            snapshot.spawned_at = spawned_at;
            snapshot.restarts = machine.restarts;
            snapshot.hangs = machine.hangs;
            snapshot.monitored = monitored;
            snapshot.finished = if machine.is_at_rest() {
                machine.finished
            } else {
                None
            };
            snapshot.last_exit = match &machine.phase {
                Phase::Errored { why } => Some(why.clone()),
                _ => machine.last_exit.clone(),
            };
            if pid.is_none() {
                snapshot.memory = None;
                snapshot.loop_delay = None;
                snapshot.last_pong_at = None;
                snapshot.pong_round_trip = None;
            } else {
                if self.metrics.memory.is_some() {
                    snapshot.memory = self.metrics.memory;
                    snapshot.loop_delay = self.metrics.loop_delay;
                }
                if last_pong_at.is_some() {
                    snapshot.last_pong_at = last_pong_at;
                    snapshot.pong_round_trip = round_trip;
                }
            }
        });
        self.ctx.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Keeps an event in the bounded history.
    fn remember(&mut self, event: AppEvent) {
        if self.events.len() == EVENT_HISTORY {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Logs a report and keeps it in the event history.
    fn log(&mut self, report: Report) {
        let (kind, message) = self.describe_report(&report);
        self.record(kind, message);
        match report {
            Report::Started { pid } => tracing::info!(pid, "started"),
            Report::Ready { pid, after } => tracing::info!(pid, "ready after {}", human(after)),
            Report::NotReady { pid, waited } => tracing::error!(
                pid,
                "not ready within {}; killing it",
                human(waited)
            ),
            Report::Exited {
                pid,
                status,
                uptime,
                restart_in,
            } => match restart_in {
                Some(delay) if delay.is_zero() => {
                    tracing::warn!(pid, "exited with {status} after {}; restarting", human(uptime))
                }
                Some(delay) => tracing::warn!(
                    pid,
                    "exited with {status} after {}; restarting in {}",
                    human(uptime),
                    human(delay)
                ),
                None => tracing::warn!(pid, "exited with {status} after {}", human(uptime)),
            },
            Report::Hung {
                pid,
                silent_for,
                misses,
                evidence,
                ..
            } => tracing::error!(
                pid,
                "hung: event loop silent for {} ({misses} heartbeats missed; {}); killing and restarting",
                human(silent_for),
                evidence_text(evidence)
            ),
            Report::HangDisproved { misses, queued_for } => tracing::warn!(
                "{misses} heartbeats missed, but {}: not a hang",
                disproof_text(queued_for)
            ),
            Report::StackTimeout { pid } => tracing::warn!(
                pid,
                "no stack within {} of SIGINT; sending SIGKILL",
                human(STACK_TIMEOUT)
            ),
            Report::KillTimeout { pid } => tracing::warn!(
                pid,
                "still running {} after SIGTERM; sending SIGKILL",
                human(self.spec.timing.kill_timeout)
            ),
            Report::Stopped { pid, status } => tracing::info!(pid, "stopped ({status})"),
            Report::SpawnFailed { error } => tracing::error!("{error}"),
            Report::MemoryExceeded { pid, rss, limit } => tracing::warn!(
                pid,
                "memory: rss {} over the limit of {}; restarting gracefully",
                crate::render::bytes(rss),
                crate::render::bytes(limit)
            ),
            Report::GaveUp { restarts, window } => tracing::error!(
                "{restarts} failures within {}: over the restart budget; giving up until an operator restarts it",
                human(window)
            ),
            Report::Unmonitored => tracing::warn!(
                "no monitor connected within {}; hang detection is off for this process",
                human(self.spec.timing.start_grace)
            ),
            Report::LateCheckVoided { late_by } => tracing::warn!(
                "supervisor ran {} late; not counting a missed heartbeat",
                human(late_by)
            ),
        }
    }
}

impl WorkerTask {
    /// The event-history form of a report: its kind and one line.
    fn describe_report(&self, report: &Report) -> (&'static str, String) {
        match report {
            Report::Started { pid } => ("started", format!("pid {pid}")),
            Report::Ready { pid, after } => ("ready", format!("pid {pid}: ready after {}", human(*after))),
            Report::NotReady { pid, waited } => (
                "not_ready",
                format!(
                    "pid {pid}: not ready within {} (no listen on the shared socket, or no \
                     monitor.ready() with wait-ready); killed",
                    human(*waited)
                ),
            ),
            Report::Exited {
                pid,
                status,
                uptime,
                restart_in,
            } => (
                "exited",
                match restart_in {
                    Some(delay) if delay.is_zero() => {
                        format!("pid {pid}: {status} after {}; restarted at once", human(*uptime))
                    }
                    Some(delay) => format!(
                        "pid {pid}: {status} after {}; restart in {} (backoff)",
                        human(*uptime),
                        human(*delay)
                    ),
                    None => format!("pid {pid}: {status} after {}", human(*uptime)),
                },
            ),
            Report::Hung {
                pid,
                silent_for,
                misses,
                evidence,
                ..
            } => (
                "hung",
                format!(
                    "pid {pid}: event loop silent for {} ({misses} heartbeats missed; {}); killed and restarted",
                    human(*silent_for),
                    evidence_text(*evidence)
                ),
            ),
            Report::HangDisproved { misses, queued_for } => (
                "hang_disproved",
                format!(
                    "{misses} heartbeats missed, but {}: not a hang",
                    disproof_text(*queued_for)
                ),
            ),
            Report::StackTimeout { pid } => (
                "stack_timeout",
                format!("pid {pid}: no stack within {} of SIGINT; sent SIGKILL", human(STACK_TIMEOUT)),
            ),
            Report::KillTimeout { pid } => (
                "kill_timeout",
                format!(
                    "pid {pid}: still running {} after SIGTERM; sent SIGKILL",
                    human(self.spec.timing.kill_timeout)
                ),
            ),
            Report::Stopped { pid, status } => ("stopped", format!("pid {pid}: {status}")),
            Report::SpawnFailed { error } => ("spawn_failed", error.clone()),
            Report::MemoryExceeded { pid, rss, limit } => (
                "memory",
                format!(
                    "pid {pid}: rss {} over the limit of {}; restarting gracefully",
                    crate::render::bytes(*rss),
                    crate::render::bytes(*limit)
                ),
            ),
            Report::GaveUp { restarts, window } => (
                "errored",
                format!(
                    "{restarts} failures within {}: over the restart budget; not restarting until an operator does",
                    human(*window)
                ),
            ),
            Report::Unmonitored => (
                "unmonitored",
                "no monitor connected; hang detection is off for this process".to_string(),
            ),
            Report::LateCheckVoided { late_by } => (
                "late_check",
                format!("supervisor ran {} late; a heartbeat check was voided", human(*late_by)),
            ),
        }
    }
}

/// What confirmed a hang, for its log line.
fn evidence_text(evidence: HangEvidence) -> String {
    match evidence {
        HangEvidence::StuckInJs { queued_for } => {
            format!("a ping waited {} for the JS thread", human(queued_for))
        }
        HangEvidence::NoAnswer => "the monitor's own thread did not answer either".to_string(),
    }
}

/// Why missed heartbeats were not the app's fault, for its log line.
fn disproof_text(queued_for: Option<Duration>) -> String {
    match queued_for {
        Some(queued_for) => format!(
            "the monitor had the latest ping for only {}",
            human(queued_for)
        ),
        None => "the monitor had no ping waiting for JS".to_string(),
    }
}

async fn wait_child(child: &mut Option<Child>) -> std::io::Result<std::process::ExitStatus> {
    match child {
        Some(child) => child.wait().await,
        None => std::future::pending().await,
    }
}

async fn read_connection(
    connection: &mut Option<MonitorConnection>,
) -> Result<Option<WorkerMessage>, crate::framed::FrameError> {
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

#[cfg(test)]
mod tests {
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
