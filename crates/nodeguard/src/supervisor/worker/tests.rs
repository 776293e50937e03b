//! The app task against a fake child on paused time: what each command's reply waits for, a
//! restart while a stop waits, the restart budget running out, a fail-fast replacement that exits
//! before it is ready, and what the event bus carries. The child is a [`Launch`] whose processes
//! exit when the test says so; no process is started and no real time passes.

use std::future::Future;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::platform::ProcessSpec;
use nodeguard_proto::control::AppState;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::*;
use crate::core::machine::{RestartPolicy, Timing};
use crate::io::output::{self, Destinations, OutputWriter};
use crate::io::proctree::ChildSet;
use crate::supervisor::events::{BusEvent, EventBus, Happening};
use crate::supervisor::spawner::Launched;

const MS: Duration = Duration::from_millis(1);
/// Above Linux's largest possible pid (2^22): a signal the task sends to a fake finds no process.
const FAKE_PID_BASE: u32 = (1 << 22) + 100;
/// Bounds a wait that should end at once; on paused time it costs nothing when all is well.
const DEADLINE: Duration = Duration::from_secs(600);

/// A fake process: the test ends it with a code or a signal.
struct FakeProcess {
    pid: u32,
    exit: oneshot::Sender<io::Result<ExitStatus>>,
}

impl FakeProcess {
    fn exits_with_code(self, code: i32) {
        let _ = self.exit.send(Ok(ExitStatus::from_raw(code << 8)));
    }

    fn dies_by_signal(self, signal: i32) {
        let _ = self.exit.send(Ok(ExitStatus::from_raw(signal)));
    }
}

/// Hands every launch to the test instead of starting a process.
struct FakeLauncher {
    next_pid: AtomicU32,
    launched: mpsc::UnboundedSender<FakeProcess>,
    children: ChildSet,
}

impl Launch for FakeLauncher {
    fn launch(
        &self,
        _command: ProcessSpec,
        _spawn_key: u64,
    ) -> Pin<Box<dyn Future<Output = io::Result<Launched>> + Send + '_>> {
        let pid = self.next_pid.fetch_add(1, Ordering::Relaxed);
        let (exit, exited) = oneshot::channel();
        let _ = self.launched.send(FakeProcess { pid, exit });
        Box::pin(async move {
            Ok(Launched {
                pid,
                stdout: None,
                stderr: None,
                exit: Box::pin(async move {
                    exited
                        .await
                        .unwrap_or_else(|_| Err(io::Error::other("the test dropped the process")))
                }),
            })
        })
    }

    fn forget(&self, _pid: u32) {}

    fn children(&self) -> ChildSet {
        self.children.clone()
    }
}

struct Harness {
    handle: WorkerHandle,
    launched: mpsc::UnboundedReceiver<FakeProcess>,
    events: broadcast::Receiver<BusEvent>,
    stop: CancellationToken,
    task: JoinHandle<()>,
    _tree: watch::Sender<Arc<TreeSnapshot>>,
    _writer: OutputWriter,
}

fn timing(policy: RestartPolicy) -> Timing {
    Timing {
        heartbeat_interval: 1_000 * MS,
        heartbeat_timeout: 1_000 * MS,
        heartbeat_misses: 3,
        start_grace: 200 * MS,
        kill_timeout: 500 * MS,
        policy,
    }
}

fn spec(timing: Timing) -> AppSpec {
    AppSpec {
        id: 0,
        name: "app".into(),
        script: PathBuf::from("/nonexistent/app.js"),
        args: Vec::new(),
        node: PathBuf::from("/nonexistent/node"),
        node_args: Vec::new(),
        cwd: PathBuf::from("/"),
        env: Vec::new(),
        caller_env: None,
        filter_env: None,
        timing,
        out_file: None,
        error_file: None,
        disable_logs: false,
        log_timestamps: false,
        log_json: false,
        hang_show_query: false,
        heap_snapshot_on_memory_restart: false,
        profile_on_stall: None,
        instances: 1,
        cluster: false,
        instance: 0,
        listen: Vec::new(),
        wait_ready: false,
        listen_timeout: 8_000 * MS,
        watch: None,
        cron_restart: None,
        kill_signal: crate::core::machine::StopSignal::Terminate,
        shutdown_with_message: false,
        interpreter: None,
        interpreter_args: Vec::new(),
        instance_vars: crate::config::InstanceVars::default(),
        namespace: None,
        run_as: None,
        log_date_format: None,
        log_file: None,
        pid_file: None,
        hooks: Vec::new().into(),
    }
}

impl Harness {
    /// An app task for `spec` with a fake launcher, started as `origins` say.
    fn start(spec: AppSpec, origins: Origins) -> Self {
        let (launched_tx, launched) = mpsc::unbounded_channel();
        let (tree_tx, tree) = watch::channel(Arc::new(TreeSnapshot::default()));
        let (output, writer) = output::start(Destinations {
            terminal: false,
            log_home: None,
        })
        .expect("the output writer thread starts");
        let bus = EventBus::default();
        let events = bus.subscribe();
        let registry = Arc::new(crate::io::monitor_socket::TokenRegistry::default());
        let user_sockets = Arc::new(crate::io::user_sockets::UserSockets::new(
            registry.clone(),
            tokio_util::sync::CancellationToken::new(),
        ));
        let ctx = Arc::new(WorkerContext {
            spawner: Arc::new(FakeLauncher {
                next_pid: AtomicU32::new(FAKE_PID_BASE),
                launched: launched_tx,
                children: ChildSet::default(),
            }),
            registry: registry.clone(),
            output,
            output_tasks: TaskTracker::new(),
            preload: None,
            worker_socket: PathBuf::from("/nonexistent/worker.sock"),
            home: PathBuf::from("/nonexistent"),
            color: false,
            tree,
            ping_grid: Instant::now(),
            events: bus,
            user_sockets,
            hooks: Arc::new(crate::supervisor::hooks::Hooks::new(ChildSet::default())),
        });
        let (task, handle) = WorkerTask::new(
            Arc::new(spec),
            ctx,
            origins,
            Arc::new(SharedListeners::default()),
        );
        let stop = CancellationToken::new();
        let task = tokio::spawn(task.run(stop.clone(), CancellationToken::new()));
        Self {
            handle,
            launched,
            events,
            stop,
            task,
            _tree: tree_tx,
            _writer: writer,
        }
    }

    async fn next_process(&mut self) -> FakeProcess {
        tokio::time::timeout(DEADLINE, self.launched.recv())
            .await
            .expect("the task launches a process in time")
            .expect("the launcher is alive")
    }

    async fn until(&mut self, what: &str, goal: impl FnMut(&WorkerSnapshot) -> bool) {
        tokio::time::timeout(DEADLINE, self.handle.snapshot.wait_for(goal))
            .await
            .unwrap_or_else(|_| panic!("the app never became {what}"))
            .expect("the task is alive");
    }

    async fn command(
        &self,
        make: fn(oneshot::Sender<CommandResult>) -> WorkerCommand,
    ) -> oneshot::Receiver<CommandResult> {
        let (reply, answer) = oneshot::channel();
        self.handle
            .commands
            .send(make(reply))
            .await
            .expect("the task takes commands");
        answer
    }

    /// The kinds of the reports published so far, in order.
    fn report_kinds(&mut self) -> Vec<String> {
        let mut kinds = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            if let Happening::Report { kind, .. } = event.what {
                kinds.push(kind);
            }
        }
        kinds
    }

    async fn shut_down(self) {
        self.stop.cancel();
        drop(self.launched);
        let _ = tokio::time::timeout(DEADLINE, self.task).await;
    }
}

async fn answer(reply: oneshot::Receiver<CommandResult>) -> CommandResult {
    tokio::time::timeout(DEADLINE, reply)
        .await
        .expect("the command is answered in time")
        .unwrap_or(Err(CommandError::TaskEnded))
}

fn running(snapshot: &WorkerSnapshot) -> bool {
    snapshot.state == AppState::Running
}

#[tokio::test(start_paused = true)]
async fn a_restart_replies_only_once_the_new_process_runs() {
    let mut app = Harness::start(spec(timing(RestartPolicy::default())), Origins::default());
    let first = app.next_process().await;
    app.until("running", running).await;

    let mut restarted = app.command(WorkerCommand::Restart).await;
    app.until("stopping", |s| s.state == AppState::Stopping)
        .await;
    assert!(
        restarted.try_recv().is_err(),
        "no answer while the old process is still there"
    );
    first.dies_by_signal(libc::SIGTERM);
    let second = app.next_process().await;
    assert_eq!(answer(restarted).await, Ok(()));
    assert_eq!(app.handle.snapshot.borrow().pid, Some(second.pid));
    assert_eq!(app.handle.snapshot.borrow().state, AppState::Running);
    app.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_while_a_stop_waits_answers_the_stop_at_once() {
    let mut app = Harness::start(spec(timing(RestartPolicy::default())), Origins::default());
    let first = app.next_process().await;
    app.until("running", running).await;

    let stopped = app.command(WorkerCommand::Stop).await;
    app.until("stopping", |s| s.state == AppState::Stopping)
        .await;
    let restarted = app.command(WorkerCommand::Restart).await;
    assert_eq!(
        answer(stopped).await,
        Err(CommandError::Superseded { by: "restart" })
    );
    first.dies_by_signal(libc::SIGTERM);
    let second = app.next_process().await;
    assert_eq!(answer(restarted).await, Ok(()));
    assert_eq!(app.handle.snapshot.borrow().pid, Some(second.pid));
    app.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn a_stop_replies_once_the_process_has_exited_and_it_stays_stopped() {
    let mut app = Harness::start(spec(timing(RestartPolicy::default())), Origins::default());
    let first = app.next_process().await;
    app.until("running", running).await;

    let mut stopped = app.command(WorkerCommand::Stop).await;
    app.until("stopping", |s| s.state == AppState::Stopping)
        .await;
    assert!(stopped.try_recv().is_err(), "no answer before the exit");
    first.dies_by_signal(libc::SIGTERM);
    assert_eq!(answer(stopped).await, Ok(()));
    assert_eq!(app.handle.snapshot.borrow().state, AppState::Stopped);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        app.launched.try_recv().is_err(),
        "a stopped app is not started again"
    );
    app.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_spends_the_budget_then_rests_errored_and_a_start_waiting_fails() {
    let policy = RestartPolicy {
        max_restarts: 2,
        ..RestartPolicy::default()
    };
    let mut app = Harness::start(spec(timing(policy)), Origins::default());
    let waiting = app.command(WorkerCommand::Start).await;
    let mut launches = 0;
    loop {
        tokio::select! {
            process = app.launched.recv() => {
                launches += 1;
                process.expect("the launcher is alive").exits_with_code(1);
            }
            result = app.handle.snapshot.wait_for(|s| s.state == AppState::Errored) => {
                result.expect("the task is alive");
                break;
            }
        }
    }
    assert_eq!(
        launches, 3,
        "the first start and the two restarts the budget allows"
    );
    match answer(waiting).await {
        Err(CommandError::ExitedWhileStarting { last_exit }) => {
            assert!(last_exit.contains("exit code 1"), "{last_exit}")
        }
        other => panic!("a start waiting through a crash loop fails: {other:?}"),
    }
    let kinds = app.report_kinds();
    assert_eq!(
        kinds.iter().filter(|kind| *kind == "exited").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|kind| *kind == "started").count(),
        3,
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|kind| kind == "errored"), "{kinds:?}");

    // An operator's start brings an errored app back.
    let started = app.command(WorkerCommand::Start).await;
    let _fourth = app.next_process().await;
    assert_eq!(answer(started).await, Ok(()));
    app.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn a_fail_fast_replacement_that_exits_before_ready_rests_errored_without_a_restart() {
    let origins = Origins {
        fail_fast: true,
        ..Origins::default()
    };
    let mut app = Harness::start(spec(timing(RestartPolicy::default())), origins);
    let started = app.command(WorkerCommand::Start).await;
    app.next_process().await.exits_with_code(1);
    match answer(started).await {
        Err(CommandError::Errored { why }) => assert!(why.contains("exit code 1"), "{why}"),
        other => panic!("the reload sees the replacement fail: {other:?}"),
    }
    assert_eq!(app.handle.snapshot.borrow().state, AppState::Errored);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        app.launched.try_recv().is_err(),
        "no restart of a fail-fast instance"
    );
    app.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn the_bus_carries_each_state_change_once() {
    let mut app = Harness::start(spec(timing(RestartPolicy::default())), Origins::default());
    let first = app.next_process().await;
    app.until("running", running).await;
    first.exits_with_code(3);
    let _second = app.next_process().await;
    app.until("running again", |s| {
        s.state == AppState::Running && s.restarts == 1
    })
    .await;
    let mut states = Vec::new();
    while let Ok(event) = app.events.try_recv() {
        assert_eq!((&*event.app, event.id, event.instance), ("app", 0, None));
        if let Happening::State {
            state, restarts, ..
        } = event.what
        {
            states.push((state, restarts));
        }
    }
    // No state is announced twice in a row: only changes go on the bus.
    assert!(
        states.windows(2).all(|pair| pair[0] != pair[1]),
        "{states:?}"
    );
    assert_eq!(states.last(), Some(&(AppState::Running, 1)), "{states:?}");
    assert!(states.contains(&(AppState::Starting, 0)), "{states:?}");
    app.shut_down().await;
}
