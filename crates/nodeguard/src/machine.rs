//! The pure per-worker state machine: `step(event, now)` turns what happened into the next phase and
//! a list of actions, with no I/O and no clock of its own, so every decision is table-testable.
//!
//! Hang detection lives here. A ping is sent every heartbeat interval while a monitor is connected;
//! a ping not answered within the heartbeat timeout is a miss, and `misses` consecutive misses mean
//! the event loop is stuck. A miss only counts on the supervisor's own monotonic clock and only
//! when the timer that noticed it fired on time: if the supervisor was stopped or starved (SIGSTOP,
//! an overloaded host), the late check is voided instead of blaming a healthy worker.
//!
//! Before a hang is declared, the monitor's native thread is probed: it answers at once, even
//! while JS is blocked, and says whether a ping is stuck waiting for the JS thread. Only a ping
//! stuck for at least a heartbeat timeout, or no answer at all (the process is frozen), confirms
//! the hang; a monitor with no ping waiting proves the silence was not the app's. A confirmed hang
//! whose process would print its JS stack on SIGINT (`--trace-sigint`) gets a SIGINT first, and
//! SIGKILL after [`STACK_TIMEOUT`] at the latest.
//!
//! Readiness: an ordinary app is ready at its first pong. A cluster-mode app (shared listen
//! addresses, or wait-ready) is ready only at a `Ready` event from its monitor, which must come
//! within the ready timeout; one that misses it is killed. A reload's replacement instance is
//! `fail_fast`: if it exits or misses the timeout before it was ever ready, it rests errored with
//! the reason instead of being restarted, so the reload can abort.

use std::time::Duration;

use tokio::time::Instant;

use crate::duration::MAX_DURATION;

use crate::exit::ExitKind;

/// Default `min_uptime`: an uptime at least this long means the process was healthy, and its next
/// restart is immediate (after `restart_delay`, if set).
pub const STABLE_UPTIME: Duration = Duration::from_secs(1);
/// Default first delay after a quick crash; it doubles with every further quick crash.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The longest delay between restarts of a crash-looping app.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A heartbeat check that runs at least this late (or half the timeout, if larger) is voided.
pub const LATE_TOLERANCE_FLOOR: Duration = Duration::from_millis(50);

/// Longest wait for a hung process to print its JS stack after SIGINT before SIGKILL.
pub const STACK_TIMEOUT: Duration = Duration::from_millis(250);
/// Longest wait for the monitor's native thread to answer a probe (or the heartbeat timeout, if
/// shorter). It answers within microseconds unless the whole process is frozen.
pub const PROBE_TIMEOUT_MAX: Duration = Duration::from_millis(500);

/// How `last_exit` begins when a process could not be started at all.
pub const SPAWN_FAILED: &str = "spawn failed";

/// Default restart budget: more restarts than this within [`DEFAULT_RESTART_WINDOW`] mark the
/// app errored.
pub const DEFAULT_MAX_RESTARTS: u32 = 10;
/// Default window of the restart budget.
pub const DEFAULT_RESTART_WINDOW: Duration = Duration::from_secs(60);

/// Which exits restart the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Autorestart {
    /// Every exit nobody asked for.
    Always,
    /// Every exit but a clean one (an exit code in the policy's clean codes, by default 0).
    OnFailure,
    /// None: an exited app stays stopped.
    Never,
}

impl Autorestart {
    /// From `always`, `on-failure` or `never`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "always" => Ok(Autorestart::Always),
            "on-failure" => Ok(Autorestart::OnFailure),
            "never" => Ok(Autorestart::Never),
            // Quoted as Rust escapes it, so a newline in a file's value cannot split the message.
            other => Err(format!(
                "{other:?} is not an autorestart mode (use always, on-failure or never)"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Autorestart::Always => "always",
            Autorestart::OnFailure => "on-failure",
            Autorestart::Never => "never",
        }
    }
}

/// A set of exit codes, 0 to 255.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitCodes([u64; 4]);

impl Default for ExitCodes {
    /// Just 0.
    fn default() -> Self {
        Self([1, 0, 0, 0])
    }
}

impl ExitCodes {
    pub fn contains(self, code: i32) -> bool {
        u8::try_from(code).is_ok_and(|code| self.0[usize::from(code / 64)] >> (code % 64) & 1 == 1)
    }

    /// The set of `codes`; an error names the first one out of 0–255.
    pub fn from_codes(codes: impl IntoIterator<Item = i64>) -> Result<Self, String> {
        let mut set = [0u64; 4];
        for code in codes {
            let code = u8::try_from(code)
                .map_err(|_| format!("{code} is not an exit code (they run from 0 to 255)"))?;
            set[usize::from(code / 64)] |= 1 << (code % 64);
        }
        Ok(Self(set))
    }

    /// From a comma-separated list such as `0,3,143`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let codes = text
            .split(',')
            .map(|part| {
                part.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("{text:?} is not a list of exit codes (write e.g. 0,3)"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_codes(codes)
    }

    pub fn codes(self) -> Vec<i32> {
        (0..=255).filter(|&code| self.contains(code)).collect()
    }
}

/// When to restart, how soon, when to give up, and the memory limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub autorestart: Autorestart,
    /// Exit codes that count as a clean stop under `on-failure`.
    pub clean_exit_codes: ExitCodes,
    /// An uptime at least this long resets the backoff (PM2's `min_uptime`).
    pub min_uptime: Duration,
    /// Delay before every restart (PM2's `restart_delay`); quick crashes wait at least the backoff.
    pub restart_delay: Duration,
    /// First backoff delay after a quick crash (PM2's `exp_backoff_restart_delay`), doubling up to
    /// [`BACKOFF_MAX`].
    pub backoff_base: Duration,
    /// More restarts than this within `restart_window` mark the app errored; 0 means no limit.
    pub max_restarts: u32,
    pub restart_window: Duration,
    /// RSS in bytes above which the app is restarted gracefully, checked at every heartbeat.
    pub max_memory: Option<u64>,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            autorestart: Autorestart::Always,
            clean_exit_codes: ExitCodes::default(),
            min_uptime: STABLE_UPTIME,
            restart_delay: Duration::ZERO,
            backoff_base: BACKOFF_BASE,
            max_restarts: DEFAULT_MAX_RESTARTS,
            restart_window: DEFAULT_RESTART_WINDOW,
            max_memory: None,
        }
    }
}

/// The timing and policy knobs of one app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub heartbeat_misses: u32,
    pub start_grace: Duration,
    pub kill_timeout: Duration,
    pub policy: RestartPolicy,
}

impl Timing {
    /// Voiding threshold for a late heartbeat check.
    pub fn late_tolerance(&self) -> Duration {
        (self.heartbeat_timeout / 2).max(LATE_TOLERANCE_FLOOR)
    }

    /// How long a probe of the monitor's native thread may take.
    pub fn probe_timeout(&self) -> Duration {
        self.heartbeat_timeout.min(PROBE_TIMEOUT_MAX)
    }
}

/// Heartbeat bookkeeping for one live process.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    pub monitored: bool,
    pub next_ping_at: Instant,
    pub outstanding: Option<OutstandingPing>,
    pub misses: u32,
    pub last_pong_at: Option<Instant>,
    /// Time from the latest answered ping to its pong.
    pub last_round_trip: Option<Duration>,
    pub next_seq: u64,
    /// A probe sent after the last allowed miss, waiting for the native thread's answer.
    pub probe: Option<OutstandingProbe>,
    /// The latest pong said a SIGINT would make Node print the JS stack.
    pub stack_on_sigint: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutstandingProbe {
    pub seq: u64,
    pub deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutstandingPing {
    pub seq: u64,
    pub sent_at: Instant,
    pub deadline: Instant,
}

/// What to do once the current process has exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterExit {
    /// Stay stopped (an operator or shutdown asked for it).
    Stay,
    /// Start again at once (it was killed for hanging).
    Restart,
    /// Rest as errored (it exhausted its restart budget).
    GiveUp,
    /// Rest as errored with `last_exit` as the reason (a fail-fast instance never became ready).
    Fail,
}

/// Where one app's lifecycle is. Each phase carries exactly the data that makes sense in it.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// A spawn was requested and has not reported back yet.
    Spawning,
    /// A process is running. `ready` turns true at its first pong, or at `Ready` for an app with
    /// a ready timeout (or, with no monitor, at the end of the start grace).
    Live {
        pid: u32,
        spawned_at: Instant,
        ready: bool,
        heartbeat: Heartbeat,
    },
    /// A stop signal was sent; waiting for the exit. `kill_at` is when SIGKILL follows.
    /// `capturing`: the signal was SIGINT asking a hung process for its JS stack.
    Stopping {
        pid: u32,
        spawned_at: Instant,
        kill_at: Option<Instant>,
        then: AfterExit,
        capturing: bool,
    },
    /// Waiting out the delay before the next start.
    Backoff {
        until: Instant,
    },
    Stopped,
    Errored {
        why: String,
    },
}

/// Something that happened to the worker, as observed by its task.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Spawned {
        pid: u32,
    },
    SpawnFailed {
        error: String,
    },
    MonitorConnected,
    MonitorLost,
    /// A heartbeat answer, with the app's memory in bytes (its whole process tree) when the pong
    /// carried it, and whether a SIGINT would now print its JS stack.
    Pong {
        rss: Option<u64>,
        stack_on_sigint: bool,
    },
    /// The monitor's native thread answered probe `seq`: the ping waiting for JS has waited
    /// `queued_for` (`None`: no ping is waiting).
    ProbeReply {
        seq: u64,
        queued_for: Option<Duration>,
    },
    /// The monitor says the app serves (listens on its shared socket, or called `ready()`).
    Ready,
    Exited {
        status: ExitKind,
    },
    /// The deadline returned by [`Worker::next_deadline`] (`scheduled`) was reached.
    Timer {
        scheduled: Instant,
    },
    Stop,
    ForceStop,
    /// An operator asked to start a stopped or errored app.
    Start,
    /// An operator asked for a fresh process: graceful stop, then start.
    Restart,
}

/// Which signal to send to the process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Terminate,
    Kill,
}

/// Side effects for the task to perform, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Spawn,
    SignalGroup {
        pgid: u32,
        signal: StopSignal,
    },
    /// Ask the app's monitor to shut down gracefully; if the message cannot be sent, the task
    /// sends SIGTERM to the group instead.
    RequestShutdown {
        pgid: u32,
    },
    SendPing {
        seq: u64,
    },
    SendProbe {
        seq: u64,
    },
    /// SIGINT to the main process only: with `--trace-sigint` Node prints the JS stack and dies.
    CaptureStack {
        pid: u32,
    },
    Report(Report),
}

/// What confirmed a hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangEvidence {
    /// The monitor's native thread reports a ping waiting for the JS thread this long.
    StuckInJs { queued_for: Duration },
    /// Not even the native thread answered a probe: the process is frozen or gone deaf.
    NoAnswer,
}

/// Whether the hung process's JS stack is being asked for, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackPlan {
    Requested,
    /// The app listens for SIGINT itself, which turns Node's `--trace-sigint` off.
    AppHandlesSigint,
    /// The process did not answer a probe; a SIGINT would wait unhandled as well.
    ProcessUnresponsive,
}

/// Things worth a log line.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    Started {
        pid: u32,
    },
    Ready {
        pid: u32,
        after: Duration,
    },
    NotReady {
        pid: u32,
        waited: Duration,
    },
    Exited {
        pid: u32,
        status: ExitKind,
        uptime: Duration,
        restart_in: Option<Duration>,
    },
    Hung {
        pid: u32,
        silent_for: Duration,
        misses: u32,
        evidence: HangEvidence,
        stack: StackPlan,
    },
    /// Heartbeats were missed, but the monitor had no ping waiting for JS: not a hang.
    HangDisproved {
        misses: u32,
        queued_for: Option<Duration>,
    },
    /// The hung process printed no stack within [`STACK_TIMEOUT`]; SIGKILL follows.
    StackTimeout {
        pid: u32,
    },
    KillTimeout {
        pid: u32,
    },
    Stopped {
        pid: u32,
        status: ExitKind,
    },
    SpawnFailed {
        error: String,
    },
    MemoryExceeded {
        pid: u32,
        rss: u64,
        limit: u64,
    },
    GaveUp {
        restarts: usize,
        window: Duration,
    },
    Unmonitored,
    LateCheckVoided {
        late_by: Duration,
    },
}

/// The next ping time `at` moved onto the grid `origin + k × interval`: the latest grid point at
/// or before `at`, if it is still after `now`; else `at` itself (the grid is then reached one ping
/// later). A ping is thus never later than without the grid, and pings stay `interval` apart
/// once on it.
pub fn on_grid(origin: Instant, interval: Duration, at: Instant, now: Instant) -> Instant {
    let step = interval.as_nanos();
    if step == 0 {
        return at;
    }
    let since = at.saturating_duration_since(origin).as_nanos();
    let back = u64::try_from(since % step).map(Duration::from_nanos);
    match back {
        Ok(back) if at - back > now => at - back,
        _ => at,
    }
}

/// `at + by`, never overflowing: `by` is capped at [`MAX_DURATION`] (settings are bounded at
/// parse time; this holds whatever reaches the machine), and should the clock still not
/// represent the sum, the deadline is `at` itself (due at once rather than a panic).
pub fn later(at: Instant, by: Duration) -> Instant {
    at.checked_add(by.min(MAX_DURATION)).unwrap_or(at)
}

/// One app's lifecycle and counters.
#[derive(Debug, Clone)]
pub struct Worker {
    pub timing: Timing,
    pub phase: Phase,
    pub restarts: u64,
    pub hangs: u64,
    /// Quick crashes in a row; drives the backoff.
    pub crash_streak: u32,
    pub last_exit: Option<String>,
    /// Set when the app came to rest on its own (not at an operator's request): whether its end
    /// was clean. `None` while it runs or after an operator stopped it.
    pub finished: Option<bool>,
    /// When recent restarts happened, for the restart budget.
    pub recent_restarts: std::collections::VecDeque<Instant>,
    /// `Some`: readiness comes only from a `Ready` event, within this time of the spawn.
    pub ready_timeout: Option<Duration>,
    /// Until its first ready: an exit or a missed ready timeout ends in `Errored`, no restart.
    pub fail_fast: bool,
    /// Ready timeouts missed in a row. More than `max_restarts` of them end the app errored even
    /// when they are too slow to exceed the budget's window (an 8 s timeout fits 7 in a minute).
    pub not_ready_streak: u32,
    /// Origin of a ping schedule shared by every app of a supervisor: pings after the first go out
    /// at `origin + k × interval`, so apps with the same interval are pinged in one wakeup rather
    /// than each at its own moment (see [`on_grid`]). `None` keeps each app's own cadence.
    pub ping_grid: Option<Instant>,
}

impl Worker {
    /// A worker about to be spawned for the first time.
    pub fn new(timing: Timing) -> Self {
        Self {
            timing,
            phase: Phase::Spawning,
            restarts: 0,
            hangs: 0,
            crash_streak: 0,
            last_exit: None,
            finished: None,
            recent_restarts: std::collections::VecDeque::new(),
            ready_timeout: None,
            fail_fast: false,
            not_ready_streak: 0,
            ping_grid: None,
        }
    }

    /// The earliest instant at which a `Timer` event is due, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Live {
                spawned_at,
                ready,
                heartbeat,
                ..
            } => {
                let mut earliest: Option<Instant> = None;
                let mut consider = |at: Instant| {
                    earliest = Some(earliest.map_or(at, |e| e.min(at)));
                };
                if let Some(probe) = heartbeat.probe {
                    consider(probe.deadline);
                } else if let Some(ping) = heartbeat.outstanding {
                    consider(ping.deadline);
                } else if heartbeat.monitored {
                    consider(heartbeat.next_ping_at);
                }
                if !ready && !heartbeat.monitored {
                    consider(later(*spawned_at, self.timing.start_grace));
                }
                if let (false, Some(timeout)) = (*ready, self.ready_timeout) {
                    consider(later(*spawned_at, timeout));
                }
                earliest
            }
            Phase::Stopping { kill_at, .. } => *kill_at,
            Phase::Backoff { until } => Some(*until),
            Phase::Spawning | Phase::Stopped | Phase::Errored { .. } => None,
        }
    }

    /// The pid of the current process, if one runs.
    pub fn pid(&self) -> Option<u32> {
        match self.phase {
            Phase::Live { pid, .. } | Phase::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// Whether the phase is final until an operator acts.
    pub fn is_at_rest(&self) -> bool {
        matches!(self.phase, Phase::Stopped | Phase::Errored { .. })
    }

    /// Applies one event at `now` and returns the actions to perform.
    pub fn step(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match event {
            Event::Spawned { pid } => self.on_spawned(pid, now, &mut actions),
            Event::SpawnFailed { error } => self.on_spawn_failed(error, now, &mut actions),
            Event::MonitorConnected => {
                if let Phase::Live { heartbeat, .. } = &mut self.phase {
                    heartbeat.monitored = true;
                    heartbeat.next_ping_at = now;
                }
            }
            Event::MonitorLost => {
                if let Phase::Live { heartbeat, .. } = &mut self.phase {
                    heartbeat.monitored = false;
                    heartbeat.outstanding = None;
                    heartbeat.probe = None;
                }
            }
            Event::Pong {
                rss,
                stack_on_sigint,
            } => {
                if let (Some(rss), Some(limit), Phase::Live { pid, .. }) =
                    (rss, self.timing.policy.max_memory, &self.phase)
                {
                    if rss > limit {
                        let pid = *pid;
                        self.last_exit = Some(format!(
                            "restarted: memory {} over the limit of {}",
                            crate::render::bytes(rss),
                            crate::render::bytes(limit)
                        ));
                        actions.push(Action::Report(Report::MemoryExceeded { pid, rss, limit }));
                        if !self.within_budget(now, &mut actions) {
                            actions.push(Action::SignalGroup {
                                pgid: pid,
                                signal: StopSignal::Terminate,
                            });
                            self.stop_after_budget(pid, now);
                            return actions;
                        }
                        self.restarts += 1;
                        self.stop_gracefully(now, AfterExit::Restart, &mut actions);
                        return actions;
                    }
                }
                let ready_at_pong = self.ready_timeout.is_none();
                let mut became_ready = false;
                if let Phase::Live {
                    ready, heartbeat, ..
                } = &mut self.phase
                {
                    if ready_at_pong && !*ready {
                        *ready = true;
                        became_ready = true;
                    }
                    heartbeat.misses = 0;
                    heartbeat.probe = None;
                    heartbeat.stack_on_sigint = stack_on_sigint;
                    if let Some(ping) = heartbeat.outstanding.take() {
                        heartbeat.last_round_trip =
                            Some(now.saturating_duration_since(ping.sent_at));
                    }
                    heartbeat.last_pong_at = Some(now);
                }
                if became_ready {
                    self.fail_fast = false;
                }
            }
            Event::Ready => {
                if let Phase::Live {
                    pid,
                    spawned_at,
                    ready,
                    ..
                } = &mut self.phase
                {
                    if !*ready {
                        *ready = true;
                        self.fail_fast = false;
                        self.not_ready_streak = 0;
                        actions.push(Action::Report(Report::Ready {
                            pid: *pid,
                            after: now.saturating_duration_since(*spawned_at),
                        }));
                    }
                }
            }
            Event::ProbeReply { seq, queued_for } => {
                self.on_probe_reply(seq, queued_for, now, &mut actions)
            }
            Event::Exited { status } => self.on_exited(status, now, &mut actions),
            Event::Timer { scheduled } => self.on_timer(scheduled, now, &mut actions),
            Event::Stop => self.on_stop(now, &mut actions),
            Event::ForceStop => self.on_force_stop(&mut actions),
            Event::Start => {
                if self.is_at_rest() {
                    self.crash_streak = 0;
                    self.not_ready_streak = 0;
                    self.phase = Phase::Spawning;
                    actions.push(Action::Spawn);
                }
            }
            Event::Restart => self.on_restart(now, &mut actions),
        }
        actions
    }

    fn on_spawned(&mut self, pid: u32, now: Instant, actions: &mut Vec<Action>) {
        self.finished = None;
        self.phase = Phase::Live {
            pid,
            spawned_at: now,
            ready: false,
            heartbeat: Heartbeat {
                monitored: false,
                next_ping_at: now,
                outstanding: None,
                misses: 0,
                last_pong_at: None,
                last_round_trip: None,
                next_seq: 1,
                probe: None,
                stack_on_sigint: false,
            },
        };
        actions.push(Action::Report(Report::Started { pid }));
    }

    fn on_exited(&mut self, status: ExitKind, now: Instant, actions: &mut Vec<Action>) {
        match self.phase.clone() {
            Phase::Live {
                pid,
                spawned_at,
                ready,
                ..
            } => {
                let uptime = now.saturating_duration_since(spawned_at);
                self.last_exit = Some(format!("{status} after {}", crate::exit::human(uptime)));
                // Anything the app left in its process group goes with it.
                actions.push(Action::SignalGroup {
                    pgid: pid,
                    signal: StopSignal::Kill,
                });
                if self.fail_fast && !ready {
                    actions.push(Action::Report(Report::Exited {
                        pid,
                        status,
                        uptime,
                        restart_in: None,
                    }));
                    self.phase = Phase::Errored {
                        why: format!(
                            "exited before it was ready ({status} after {})",
                            crate::exit::human(uptime)
                        ),
                    };
                    return;
                }
                let wanted = match self.timing.policy.autorestart {
                    Autorestart::Always => true,
                    Autorestart::OnFailure => !matches!(
                        status,
                        ExitKind::Code(code) if self.timing.policy.clean_exit_codes.contains(code)
                    ),
                    Autorestart::Never => false,
                };
                if !wanted {
                    let policy = self.timing.policy;
                    self.finished = Some(matches!(
                        status,
                        ExitKind::Code(code) if policy.clean_exit_codes.contains(code)
                    ));
                    actions.push(Action::Report(Report::Exited {
                        pid,
                        status,
                        uptime,
                        restart_in: None,
                    }));
                    self.phase = Phase::Stopped;
                    return;
                }
                if !self.within_budget(now, actions) {
                    actions.push(Action::Report(Report::Exited {
                        pid,
                        status,
                        uptime,
                        restart_in: None,
                    }));
                    self.give_up();
                    return;
                }
                self.restarts += 1;
                let delay = self.restart_delay(uptime);
                actions.push(Action::Report(Report::Exited {
                    pid,
                    status,
                    uptime,
                    restart_in: Some(delay),
                }));
                if delay.is_zero() {
                    self.phase = Phase::Spawning;
                    actions.push(Action::Spawn);
                } else {
                    self.phase = Phase::Backoff {
                        until: later(now, delay),
                    };
                }
            }
            Phase::Stopping {
                pid,
                spawned_at,
                then,
                ..
            } => {
                let uptime = now.saturating_duration_since(spawned_at);
                actions.push(Action::SignalGroup {
                    pgid: pid,
                    signal: StopSignal::Kill,
                });
                match then {
                    AfterExit::Stay => {
                        self.last_exit =
                            Some(format!("{status} after {}", crate::exit::human(uptime)));
                        self.phase = Phase::Stopped;
                        actions.push(Action::Report(Report::Stopped { pid, status }));
                    }
                    AfterExit::Restart => {
                        self.phase = Phase::Spawning;
                        actions.push(Action::Spawn);
                    }
                    AfterExit::GiveUp => self.give_up(),
                    AfterExit::Fail => {
                        self.phase = Phase::Errored {
                            why: self.last_exit.clone().unwrap_or_default(),
                        }
                    }
                }
            }
            // No process is ours in these phases; a stray exit changes nothing.
            Phase::Spawning | Phase::Backoff { .. } | Phase::Stopped | Phase::Errored { .. } => {}
        }
    }

    /// A process could not be started (the interpreter missing during an upgrade, too many open
    /// files): a failed start like a crash at once, so it is retried after the backoff within the
    /// restart budget, and errored with the reason once that is spent. A reload's fail-fast
    /// replacement rests errored at once.
    fn on_spawn_failed(&mut self, error: String, now: Instant, actions: &mut Vec<Action>) {
        let why = format!("{SPAWN_FAILED}: {error}");
        self.last_exit = Some(why.clone());
        actions.push(Action::Report(Report::SpawnFailed { error }));
        if !matches!(self.phase, Phase::Spawning) {
            return;
        }
        if self.fail_fast {
            self.finished = Some(false);
            self.phase = Phase::Errored { why };
            return;
        }
        if !self.within_budget(now, actions) {
            self.give_up();
            return;
        }
        self.restarts += 1;
        let delay = self.restart_delay(Duration::ZERO);
        self.phase = Phase::Backoff { until: now + delay };
    }

    /// Records a restart about to happen; false (with a report) if it would exceed the budget.
    fn within_budget(&mut self, now: Instant, actions: &mut Vec<Action>) -> bool {
        let policy = self.timing.policy;
        while self
            .recent_restarts
            .front()
            .is_some_and(|&at| now.saturating_duration_since(at) > policy.restart_window)
        {
            self.recent_restarts.pop_front();
        }
        self.recent_restarts.push_back(now);
        if policy.max_restarts == 0 || self.recent_restarts.len() <= policy.max_restarts as usize {
            return true;
        }
        actions.push(Action::Report(Report::GaveUp {
            restarts: self.recent_restarts.len(),
            window: policy.restart_window,
        }));
        false
    }

    /// The app exhausted its restart budget: errored until an operator starts it.
    fn give_up(&mut self) {
        let policy = self.timing.policy;
        self.finished = Some(false);
        let why = format!(
            "failed {} times within {} (the budget is {} restarts); not restarting until an \
             operator does (last: {})",
            self.recent_restarts.len(),
            crate::exit::human(policy.restart_window),
            policy.max_restarts,
            self.last_exit.clone().unwrap_or_default()
        );
        self.recent_restarts.clear();
        self.phase = Phase::Errored { why };
    }

    /// Over budget while a process still runs: stop it, then rest as errored.
    fn stop_after_budget(&mut self, pid: u32, now: Instant) {
        let spawned_at = match self.phase {
            Phase::Live { spawned_at, .. } => spawned_at,
            _ => now,
        };
        self.phase = Phase::Stopping {
            pid,
            spawned_at,
            kill_at: Some(later(now, self.timing.kill_timeout)),
            then: AfterExit::GiveUp,
            capturing: false,
        };
    }

    /// `restart_delay` after a run of at least `min_uptime`; after a quicker one, the backoff
    /// (doubling from `backoff_base` up to [`BACKOFF_MAX`]) if that is longer.
    fn restart_delay(&mut self, uptime: Duration) -> Duration {
        let policy = self.timing.policy;
        if uptime >= policy.min_uptime {
            self.crash_streak = 0;
            return policy.restart_delay;
        }
        self.crash_streak = self.crash_streak.saturating_add(1);
        let doublings = self.crash_streak.saturating_sub(1).min(16);
        let backoff = policy
            .backoff_base
            .saturating_mul(1 << doublings)
            .min(BACKOFF_MAX.max(policy.backoff_base));
        backoff.max(policy.restart_delay)
    }

    fn on_timer(&mut self, scheduled: Instant, now: Instant, actions: &mut Vec<Action>) {
        let timing = self.timing;
        if let (
            Phase::Live {
                pid,
                spawned_at,
                ready: false,
                ..
            },
            Some(timeout),
        ) = (&self.phase, self.ready_timeout)
        {
            if now >= later(*spawned_at, timeout) {
                let (pid, spawned_at) = (*pid, *spawned_at);
                self.on_not_ready(pid, spawned_at, timeout, now, actions);
                return;
            }
        }
        let grid = self.ping_grid;
        match &mut self.phase {
            Phase::Live {
                spawned_at,
                ready,
                heartbeat,
                ..
            } => {
                let spawned_at = *spawned_at;
                if let Some(probe) = heartbeat.probe {
                    if now >= probe.deadline {
                        let late_by = now.saturating_duration_since(probe.deadline.max(scheduled));
                        if late_by > timing.late_tolerance() {
                            // We were stalled ourselves: the answer may simply not be read yet.
                            let seq = heartbeat.next_seq;
                            heartbeat.next_seq += 1;
                            heartbeat.probe = Some(OutstandingProbe {
                                seq,
                                deadline: later(now, timing.probe_timeout()),
                            });
                            actions.push(Action::Report(Report::LateCheckVoided { late_by }));
                            actions.push(Action::SendProbe { seq });
                        } else {
                            self.declare_hung(now, HangEvidence::NoAnswer, actions);
                        }
                    }
                    return;
                }
                if let Some(ping) = heartbeat.outstanding {
                    if now >= ping.deadline {
                        heartbeat.outstanding = None;
                        let late_by = now.saturating_duration_since(ping.deadline.max(scheduled));
                        if late_by > timing.late_tolerance() {
                            actions.push(Action::Report(Report::LateCheckVoided { late_by }));
                        } else if now >= later(spawned_at, timing.start_grace) || *ready {
                            heartbeat.misses += 1;
                            if heartbeat.misses >= timing.heartbeat_misses {
                                // Ask the native thread before blaming the app.
                                let seq = heartbeat.next_seq;
                                heartbeat.next_seq += 1;
                                heartbeat.probe = Some(OutstandingProbe {
                                    seq,
                                    deadline: later(now, timing.probe_timeout()),
                                });
                                actions.push(Action::SendProbe { seq });
                                return;
                            }
                        }
                    }
                }
                if heartbeat.monitored
                    && heartbeat.outstanding.is_none()
                    && now >= heartbeat.next_ping_at
                {
                    let seq = heartbeat.next_seq;
                    heartbeat.next_seq += 1;
                    heartbeat.outstanding = Some(OutstandingPing {
                        seq,
                        sent_at: now,
                        deadline: later(now, timing.heartbeat_timeout),
                    });
                    let next = later(heartbeat.next_ping_at, timing.heartbeat_interval);
                    // After a stall, resume the cadence from now rather than firing a burst.
                    let next = if next > now {
                        next
                    } else {
                        later(now, timing.heartbeat_interval)
                    };
                    heartbeat.next_ping_at = match grid {
                        Some(origin) => on_grid(origin, timing.heartbeat_interval, next, now),
                        None => next,
                    };
                    actions.push(Action::SendPing { seq });
                }
                if !*ready && !heartbeat.monitored && now >= later(spawned_at, timing.start_grace) {
                    *ready = true;
                    actions.push(Action::Report(Report::Unmonitored));
                }
            }
            Phase::Stopping {
                pid,
                kill_at,
                capturing,
                ..
            } => {
                if kill_at.is_some_and(|at| now >= at) {
                    let pid = *pid;
                    *kill_at = None;
                    actions.push(Action::Report(if *capturing {
                        Report::StackTimeout { pid }
                    } else {
                        Report::KillTimeout { pid }
                    }));
                    *capturing = false;
                    actions.push(Action::SignalGroup {
                        pgid: pid,
                        signal: StopSignal::Kill,
                    });
                }
            }
            Phase::Backoff { until } => {
                if now >= *until {
                    self.phase = Phase::Spawning;
                    actions.push(Action::Spawn);
                }
            }
            Phase::Spawning | Phase::Stopped | Phase::Errored { .. } => {}
        }
    }

    fn on_probe_reply(
        &mut self,
        seq: u64,
        queued_for: Option<Duration>,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let timeout = self.timing.heartbeat_timeout;
        let Phase::Live { heartbeat, .. } = &mut self.phase else {
            return;
        };
        if heartbeat.probe.map(|probe| probe.seq) != Some(seq) {
            return;
        }
        match queued_for {
            Some(queued_for) if queued_for >= timeout => {
                self.declare_hung(now, HangEvidence::StuckInJs { queued_for }, actions)
            }
            _ => {
                let misses = heartbeat.misses;
                heartbeat.probe = None;
                heartbeat.misses = 0;
                actions.push(Action::Report(Report::HangDisproved { misses, queued_for }));
            }
        }
    }

    /// The live process is hung: count it, then ask for its JS stack (SIGINT, SIGKILL after
    /// [`STACK_TIMEOUT`]) when it can print one, or kill it at once.
    fn declare_hung(&mut self, now: Instant, evidence: HangEvidence, actions: &mut Vec<Action>) {
        let Phase::Live {
            pid,
            spawned_at,
            heartbeat,
            ..
        } = &self.phase
        else {
            return;
        };
        let (pid, spawned_at) = (*pid, *spawned_at);
        let silent_for =
            now.saturating_duration_since(heartbeat.last_pong_at.unwrap_or(spawned_at));
        let misses = heartbeat.misses;
        let stack = match evidence {
            HangEvidence::NoAnswer => StackPlan::ProcessUnresponsive,
            HangEvidence::StuckInJs { .. } if heartbeat.stack_on_sigint => StackPlan::Requested,
            HangEvidence::StuckInJs { .. } => StackPlan::AppHandlesSigint,
        };
        self.hangs += 1;
        self.last_exit = Some(format!(
            "killed: event loop silent for {}",
            crate::exit::human(silent_for)
        ));
        actions.push(Action::Report(Report::Hung {
            pid,
            silent_for,
            misses,
            evidence,
            stack,
        }));
        let then = if self.within_budget(now, actions) {
            self.restarts += 1;
            AfterExit::Restart
        } else {
            AfterExit::GiveUp
        };
        let capturing = stack == StackPlan::Requested;
        self.phase = Phase::Stopping {
            pid,
            spawned_at,
            kill_at: capturing.then(|| later(now, STACK_TIMEOUT)),
            then,
            capturing,
        };
        actions.push(if capturing {
            Action::CaptureStack { pid }
        } else {
            Action::SignalGroup {
                pgid: pid,
                signal: StopSignal::Kill,
            }
        });
    }

    /// A process missed its ready timeout: it is killed; a fail-fast one then rests errored, any
    /// other is restarted under the restart budget.
    fn on_not_ready(
        &mut self,
        pid: u32,
        spawned_at: Instant,
        waited: Duration,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        self.last_exit = Some(format!(
            "not ready within {} (it must listen on its shared socket{})",
            crate::exit::human(waited),
            ", or call monitor.ready() with wait-ready"
        ));
        actions.push(Action::Report(Report::NotReady { pid, waited }));
        self.not_ready_streak = self.not_ready_streak.saturating_add(1);
        let max_restarts = self.timing.policy.max_restarts;
        let then = if self.fail_fast {
            AfterExit::Fail
        } else if max_restarts != 0 && self.not_ready_streak > max_restarts {
            actions.push(Action::Report(Report::GaveUp {
                restarts: usize::try_from(self.not_ready_streak).unwrap_or(usize::MAX),
                window: waited.saturating_mul(self.not_ready_streak),
            }));
            self.finished = Some(false);
            self.last_exit = Some(format!(
                "not ready {} times in a row (the budget is {max_restarts} restarts); not \
                 restarting until an operator does (last: {})",
                self.not_ready_streak,
                self.last_exit.clone().unwrap_or_default()
            ));
            self.not_ready_streak = 0;
            AfterExit::Fail
        } else if self.within_budget(now, actions) {
            self.restarts += 1;
            AfterExit::Restart
        } else {
            AfterExit::GiveUp
        };
        self.phase = Phase::Stopping {
            pid,
            spawned_at,
            kill_at: None,
            then,
            capturing: false,
        };
        actions.push(Action::SignalGroup {
            pgid: pid,
            signal: StopSignal::Kill,
        });
    }

    /// A graceful stop of a live process (the shutdown message if a monitor is connected, else
    /// SIGTERM), with SIGKILL due after the kill timeout, then `then`.
    /// Returns false if no process is live.
    fn stop_gracefully(
        &mut self,
        now: Instant,
        then: AfterExit,
        actions: &mut Vec<Action>,
    ) -> bool {
        let Phase::Live {
            pid,
            spawned_at,
            ref heartbeat,
            ..
        } = self.phase
        else {
            return false;
        };
        let monitored = heartbeat.monitored;
        self.phase = Phase::Stopping {
            pid,
            spawned_at,
            kill_at: Some(later(now, self.timing.kill_timeout)),
            then,
            capturing: false,
        };
        actions.push(if monitored {
            Action::RequestShutdown { pgid: pid }
        } else {
            Action::SignalGroup {
                pgid: pid,
                signal: StopSignal::Terminate,
            }
        });
        true
    }

    fn on_stop(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.stop_gracefully(now, AfterExit::Stay, actions) {
            return;
        }
        match &mut self.phase {
            Phase::Live { .. } => {}
            Phase::Stopping { then, .. } => *then = AfterExit::Stay,
            Phase::Backoff { .. } | Phase::Spawning => self.phase = Phase::Stopped,
            Phase::Stopped | Phase::Errored { .. } => {}
        }
    }

    fn on_restart(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.stop_gracefully(now, AfterExit::Restart, actions) {
            return;
        }
        match &mut self.phase {
            Phase::Live { .. } => {}
            Phase::Stopping { then, .. } => *then = AfterExit::Restart,
            Phase::Backoff { .. } | Phase::Stopped | Phase::Errored { .. } => {
                self.crash_streak = 0;
                self.not_ready_streak = 0;
                self.phase = Phase::Spawning;
                actions.push(Action::Spawn);
            }
            Phase::Spawning => {}
        }
    }

    fn on_force_stop(&mut self, actions: &mut Vec<Action>) {
        match &mut self.phase {
            Phase::Live {
                pid, spawned_at, ..
            } => {
                let pid = *pid;
                self.phase = Phase::Stopping {
                    pid,
                    spawned_at: *spawned_at,
                    kill_at: None,
                    then: AfterExit::Stay,
                    capturing: false,
                };
                actions.push(Action::SignalGroup {
                    pgid: pid,
                    signal: StopSignal::Kill,
                });
            }
            Phase::Stopping {
                pid,
                kill_at,
                then,
                capturing,
                ..
            } => {
                let pid = *pid;
                *kill_at = None;
                *then = AfterExit::Stay;
                *capturing = false;
                actions.push(Action::SignalGroup {
                    pgid: pid,
                    signal: StopSignal::Kill,
                });
            }
            Phase::Backoff { .. } | Phase::Spawning => self.phase = Phase::Stopped,
            Phase::Stopped | Phase::Errored { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn timing() -> Timing {
        Timing {
            heartbeat_interval: 100 * MS,
            heartbeat_timeout: 100 * MS,
            heartbeat_misses: 3,
            start_grace: 1_000 * MS,
            kill_timeout: 500 * MS,
            policy: RestartPolicy {
                max_restarts: 0,
                ..RestartPolicy::default()
            },
        }
    }

    /// A worker that was spawned as pid 7 at `t0` and whose monitor connected at once.
    fn connected(t0: Instant) -> Worker {
        let mut worker = Worker::new(timing());
        worker.step(Event::Spawned { pid: 7 }, t0);
        worker.step(Event::MonitorConnected, t0);
        worker
    }

    fn pong() -> Event {
        Event::Pong {
            rss: None,
            stack_on_sigint: false,
        }
    }

    #[test]
    fn on_a_shared_grid_pings_after_the_first_go_out_at_grid_points_never_later() {
        let origin = Instant::now();
        let t0 = origin + 37 * MS;
        let mut worker = Worker::new(timing());
        worker.ping_grid = Some(origin);
        worker.step(Event::Spawned { pid: 7 }, t0);
        worker.step(Event::MonitorConnected, t0);
        // The first ping goes at once.
        assert_eq!(worker.next_deadline(), Some(t0));
        let actions = worker.step(Event::Timer { scheduled: t0 }, t0);
        assert!(matches!(actions[..], [Action::SendPing { .. }]));
        worker.step(pong(), t0 + MS);
        // The next one is at the grid point within one interval, then every interval on the grid.
        let mut expected = origin + 100 * MS;
        for _ in 0..3 {
            assert_eq!(worker.next_deadline(), Some(expected));
            let actions = worker.step(
                Event::Timer {
                    scheduled: expected,
                },
                expected,
            );
            assert!(matches!(actions[..], [Action::SendPing { .. }]));
            worker.step(pong(), expected + MS);
            expected += 100 * MS;
        }
    }

    #[test]
    fn on_grid_picks_the_latest_grid_point_still_ahead_of_now() {
        let origin = Instant::now();
        let interval = 100 * MS;
        // Ahead of now: snapped back.
        assert_eq!(
            on_grid(origin, interval, origin + 250 * MS, origin + 160 * MS),
            origin + 200 * MS
        );
        // The grid point would be in the past: keep the plain time.
        assert_eq!(
            on_grid(origin, interval, origin + 250 * MS, origin + 210 * MS),
            origin + 250 * MS
        );
        // Already on the grid.
        assert_eq!(
            on_grid(origin, interval, origin + 300 * MS, origin + 210 * MS),
            origin + 300 * MS
        );
        // A zero interval has no grid.
        assert_eq!(
            on_grid(origin, Duration::ZERO, origin + 5 * MS, origin),
            origin + 5 * MS
        );
    }

    /// Fires the timer until the last allowed miss sends a probe; returns when and its seq.
    fn until_probe(worker: &mut Worker) -> (Instant, u64) {
        for _ in 0..50 {
            let (at, actions) = fire(worker);
            if let Some(Action::SendProbe { seq }) = actions.last() {
                return (at, *seq);
            }
        }
        panic!("no probe sent");
    }

    /// Fires the timer at exactly its deadline and returns the actions.
    fn fire(worker: &mut Worker) -> (Instant, Vec<Action>) {
        let at = worker.next_deadline().expect("a deadline");
        (at, worker.step(Event::Timer { scheduled: at }, at))
    }

    fn state(worker: &Worker) -> &'static str {
        match &worker.phase {
            Phase::Spawning => "spawning",
            Phase::Live { ready: false, .. } => "starting",
            Phase::Live { ready: true, .. } => "running",
            Phase::Stopping { .. } => "stopping",
            Phase::Backoff { .. } => "backoff",
            Phase::Stopped => "stopped",
            Phase::Errored { .. } => "errored",
        }
    }

    #[test]
    fn a_connected_worker_is_pinged_at_once_and_runs_at_its_first_pong() {
        let t0 = Instant::now();
        let mut worker = connected(t0);
        assert_eq!(state(&worker), "starting");
        let (at, actions) = fire(&mut worker);
        assert_eq!(at, t0);
        assert_eq!(actions, [Action::SendPing { seq: 1 }]);
        worker.step(pong(), t0 + 2 * MS);
        assert_eq!(state(&worker), "running");
        // The next ping keeps the interval's cadence.
        let (at, actions) = fire(&mut worker);
        assert_eq!(at, t0 + 100 * MS);
        assert_eq!(actions, [Action::SendPing { seq: 2 }]);
    }

    #[test]
    fn consecutive_misses_probe_the_monitor_and_a_ping_stuck_in_js_is_a_hang() {
        let t0 = Instant::now();
        let mut worker = connected(t0);
        fire(&mut worker);
        worker.step(pong(), t0 + MS);
        // Pings at 100, 200, 300 ms, each unanswered 100 ms later: the third miss sends a probe.
        let (at, seq) = until_probe(&mut worker);
        assert_eq!(at, t0 + 400 * MS);
        assert_eq!(worker.hangs, 0);
        // The native thread says ping 2 has waited 300 ms for the JS thread.
        let hung = worker.step(
            Event::ProbeReply {
                seq,
                queued_for: Some(300 * MS),
            },
            at + MS,
        );
        assert_eq!(
            hung,
            [
                Action::Report(Report::Hung {
                    pid: 7,
                    // Silent since the pong at 1 ms.
                    silent_for: 400 * MS,
                    misses: 3,
                    evidence: HangEvidence::StuckInJs {
                        queued_for: 300 * MS
                    },
                    // The last pong said SIGINT would print no stack.
                    stack: StackPlan::AppHandlesSigint,
                }),
                Action::SignalGroup {
                    pgid: 7,
                    signal: StopSignal::Kill
                },
            ]
        );
        assert_eq!((worker.hangs, worker.restarts), (1, 1));
        assert_eq!(state(&worker), "stopping");
        // Once the killed process is reaped, it starts again at once.
        let actions = worker.step(
            Event::Exited {
                status: ExitKind::Signal(9),
            },
            t0 + 402 * MS,
        );
        assert!(actions.contains(&Action::Spawn), "{actions:?}");
    }

    #[test]
    fn a_stackable_hang_gets_sigint_then_sigkill_at_the_stack_timeout() {
        let t0 = Instant::now();
        let mut worker = connected(t0);
        fire(&mut worker);
        worker.step(
            Event::Pong {
                rss: None,
                stack_on_sigint: true,
            },
            t0 + MS,
        );
        let (at, seq) = until_probe(&mut worker);
        let actions = worker.step(
            Event::ProbeReply {
                seq,
                queued_for: Some(300 * MS),
            },
            at,
        );
        assert!(matches!(
            actions[0],
            Action::Report(Report::Hung {
                stack: StackPlan::Requested,
                ..
            })
        ));
        assert_eq!(actions[1], Action::CaptureStack { pid: 7 });
        assert_eq!(worker.next_deadline(), Some(at + STACK_TIMEOUT));
        // No stack came: SIGKILL at the deadline, and no kill-timeout wait on top.
        let (when, actions) = fire(&mut worker);
        assert_eq!(when, at + STACK_TIMEOUT);
        assert_eq!(
            actions,
            [
                Action::Report(Report::StackTimeout { pid: 7 }),
                Action::SignalGroup {
                    pgid: 7,
                    signal: StopSignal::Kill
                },
            ]
        );
        assert_eq!(worker.next_deadline(), None);
        let actions = worker.step(
            Event::Exited {
                status: ExitKind::Signal(9),
            },
            when + MS,
        );
        assert!(actions.contains(&Action::Spawn), "{actions:?}");
        assert_eq!(worker.hangs, 1);
    }

    #[test]
    fn a_probe_with_no_ping_waiting_disproves_the_hang() {
        let t0 = Instant::now();
        let mut worker = connected(t0);
        fire(&mut worker);
        worker.step(pong(), t0 + MS);
        let (at, seq) = until_probe(&mut worker);
        // Our pings never reached JS (the supervisor side stalled): not the app's fault.
        let actions = worker.step(
            Event::ProbeReply {
                seq,
                queued_for: None,
            },
            at + MS,
        );
        assert_eq!(
            actions,
            [Action::Report(Report::HangDisproved {
                misses: 3,
                queued_for: None
            })]
        );
        assert_eq!((worker.hangs, state(&worker)), (0, "running"));
        // A ping that only just arrived in JS does not confirm one either.
        let (at, seq) = until_probe(&mut worker);
        worker.step(
            Event::ProbeReply {
                seq,
                queued_for: Some(2 * MS),
            },
            at + MS,
        );
        assert_eq!((worker.hangs, state(&worker)), (0, "running"));
        // Heartbeats resume, and a pong clears everything.
        let (_, actions) = fire(&mut worker);
        assert!(
            matches!(actions[..], [Action::SendPing { .. }]),
            "{actions:?}"
        );
    }

    #[test]
    fn an_unanswered_probe_means_a_frozen_process_and_a_kill_without_a_stack() {
        let t0 = Instant::now();
        let mut worker = connected(t0);
        fire(&mut worker);
        worker.step(
            Event::Pong {
                rss: None,
                stack_on_sigint: true,
            },
            t0 + MS,
        );
        let (at, _) = until_probe(&mut worker);
        let (when, actions) = fire(&mut worker);
        assert_eq!(when, at + timing().probe_timeout());
        assert!(
            matches!(
                actions[0],
                Action::Report(Report::Hung {
                    evidence: HangEvidence::NoAnswer,
                    stack: StackPlan::ProcessUnresponsive,
                    ..
                })
            ),
            "{actions:?}"
        );
        assert_eq!(
            actions[1],
            Action::SignalGroup {
                pgid: 7,
                signal: StopSignal::Kill
            }
        );
    }

    #[test]
    fn a_pong_during_a_probe_cancels_it_and_a_late_probe_check_is_voided() {
        let t0 = Instant::now();
        let mut worker = connected(t0);
        fire(&mut worker);
        worker.step(pong(), t0 + MS);
        let (at, seq) = until_probe(&mut worker);
        worker.step(pong(), at + MS);
        // The probe's answer, arriving after the pong, changes nothing.
        assert!(worker
            .step(
                Event::ProbeReply {
                    seq,
                    queued_for: Some(Duration::from_secs(9))
                },
                at + 2 * MS
            )
            .is_empty());
        assert_eq!((worker.hangs, state(&worker)), (0, "running"));
        // A probe whose check runs 3 s late (we were frozen) is sent again, not decided.
        let (_, _) = until_probe(&mut worker);
        let deadline = worker.next_deadline().expect("probe deadline");
        let actions = worker.step(
            Event::Timer {
                scheduled: deadline,
            },
            deadline + Duration::from_secs(3),
        );
        assert!(
            matches!(
                actions[..],
                [
                    Action::Report(Report::LateCheckVoided { .. }),
                    Action::SendProbe { .. }
                ]
            ),
            "{actions:?}"
        );
        assert_eq!(worker.hangs, 0);
    }

    #[test]
    fn a_pong_resets_the_miss_count() {
        let t0 = Instant::now();
        let mut worker = connected(t0);
        fire(&mut worker);
        worker.step(pong(), t0 + MS);
        for _ in 0..20 {
            // ping, then a miss, alternating with a ping that is answered
            let (_, first) = fire(&mut worker);
            assert!(!first
                .iter()
                .any(|a| matches!(a, Action::Report(Report::Hung { .. }))));
            let (at, _) = fire(&mut worker);
            worker.step(pong(), at + MS);
        }
        assert_eq!(worker.hangs, 0);
    }

    #[test]
    fn a_late_check_is_voided_instead_of_counted() {
        let t0 = Instant::now();
        let mut worker = connected(t0);
        fire(&mut worker);
        worker.step(pong(), t0 + MS);
        // Supervisor frozen for 3 s (SIGSTOP) with a ping outstanding: every check comes late.
        for round in 0..5 {
            let deadline = worker.next_deadline().expect("deadline");
            let now = deadline + Duration::from_secs(3);
            let actions = worker.step(
                Event::Timer {
                    scheduled: deadline,
                },
                now,
            );
            assert!(
                !actions
                    .iter()
                    .any(|a| matches!(a, Action::Report(Report::Hung { .. }))),
                "round {round}: {actions:?}"
            );
        }
        assert_eq!(worker.hangs, 0);
        let Phase::Live { heartbeat, .. } = &worker.phase else {
            panic!("not live");
        };
        assert_eq!(heartbeat.misses, 0);
    }

    #[test]
    fn misses_during_the_start_grace_do_not_count() {
        let t0 = Instant::now();
        let mut worker = connected(t0);
        // No pong at all: the loop is busy loading the app.
        loop {
            let (at, actions) = fire(&mut worker);
            if actions
                .iter()
                .any(|a| matches!(a, Action::Report(Report::Hung { .. })))
            {
                // The first pong is due when the grace (1 s) ends: that check is the first miss,
                // two more intervals make three, and the probe goes unanswered 100 ms later.
                assert_eq!(at, t0 + 1_300 * MS, "hung at {:?}", at - t0);
                break;
            }
        }
    }

    #[test]
    fn an_unmonitored_worker_runs_after_the_grace_without_heartbeats() {
        let t0 = Instant::now();
        let mut worker = Worker::new(timing());
        worker.step(Event::Spawned { pid: 7 }, t0);
        let (at, actions) = fire(&mut worker);
        assert_eq!(at, t0 + 1_000 * MS);
        assert_eq!(actions, [Action::Report(Report::Unmonitored)]);
        assert_eq!(state(&worker), "running");
        assert_eq!(worker.next_deadline(), None);
    }

    #[test]
    fn quick_crashes_back_off_doubling_and_a_stable_run_restarts_at_once() {
        let t0 = Instant::now();
        let mut worker = Worker::new(timing());
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..4 {
            worker.step(Event::Spawned { pid: 7 }, now);
            now += 10 * MS;
            let actions = worker.step(
                Event::Exited {
                    status: ExitKind::Code(1),
                },
                now,
            );
            assert_eq!(state(&worker), "backoff", "{actions:?}");
            let (at, actions) = fire(&mut worker);
            assert_eq!(actions, [Action::Spawn]);
            delays.push(at - now);
            now = at;
        }
        assert_eq!(delays, [100 * MS, 200 * MS, 400 * MS, 800 * MS]);
        assert_eq!(worker.restarts, 4);

        worker.step(Event::Spawned { pid: 8 }, now);
        let actions = worker.step(
            Event::Exited {
                status: ExitKind::Signal(9),
            },
            now + STABLE_UPTIME,
        );
        assert_eq!(
            actions,
            [
                Action::SignalGroup {
                    pgid: 8,
                    signal: StopSignal::Kill
                },
                Action::Report(Report::Exited {
                    pid: 8,
                    status: ExitKind::Signal(9),
                    uptime: STABLE_UPTIME,
                    restart_in: Some(Duration::ZERO),
                }),
                Action::Spawn,
            ]
        );
        assert_eq!(worker.crash_streak, 0);
    }

    #[test]
    fn the_backoff_is_capped() {
        let mut worker = Worker::new(timing());
        worker.crash_streak = 40;
        assert_eq!(worker.restart_delay(MS), BACKOFF_MAX);
    }

    #[test]
    fn stop_asks_for_a_shutdown_then_sigkills_at_the_kill_timeout_and_stays_stopped() {
        let t0 = Instant::now();
        let mut worker = connected(t0);
        let actions = worker.step(Event::Stop, t0 + 10 * MS);
        assert_eq!(actions, [Action::RequestShutdown { pgid: 7 }]);
        let (at, actions) = fire(&mut worker);
        assert_eq!(at, t0 + 510 * MS);
        assert_eq!(
            actions,
            [
                Action::Report(Report::KillTimeout { pid: 7 }),
                Action::SignalGroup {
                    pgid: 7,
                    signal: StopSignal::Kill
                }
            ]
        );
        worker.step(
            Event::Exited {
                status: ExitKind::Signal(9),
            },
            at + MS,
        );
        assert_eq!(state(&worker), "stopped");
        assert!(worker.is_at_rest());
        assert_eq!(worker.restarts, 0);
    }

    #[test]
    fn a_stop_during_a_hang_kill_does_not_restart() {
        let t0 = Instant::now();
        let mut worker = connected(t0);
        while !matches!(worker.phase, Phase::Stopping { .. }) {
            fire(&mut worker);
        }
        worker.step(Event::Stop, t0 + Duration::from_secs(2));
        let actions = worker.step(
            Event::Exited {
                status: ExitKind::Signal(9),
            },
            t0 + Duration::from_secs(2),
        );
        assert!(!actions.contains(&Action::Spawn));
        assert_eq!(state(&worker), "stopped");
    }

    #[test]
    fn force_stop_kills_at_once_and_stop_in_backoff_is_immediate() {
        let t0 = Instant::now();
        let mut worker = connected(t0);
        worker.step(Event::Stop, t0);
        let actions = worker.step(Event::ForceStop, t0 + MS);
        assert_eq!(
            actions,
            [Action::SignalGroup {
                pgid: 7,
                signal: StopSignal::Kill
            }]
        );
        assert_eq!(worker.next_deadline(), None);

        let mut backing_off = Worker::new(timing());
        backing_off.step(Event::Spawned { pid: 9 }, t0);
        backing_off.step(
            Event::Exited {
                status: ExitKind::Code(1),
            },
            t0 + MS,
        );
        assert_eq!(state(&backing_off), "backoff");
        assert!(backing_off.step(Event::Stop, t0 + 2 * MS).is_empty());
        assert_eq!(state(&backing_off), "stopped");
    }

    #[test]
    fn an_operator_restart_stops_gracefully_then_spawns_without_counting_a_crash() {
        let t0 = Instant::now();
        let mut worker = connected(t0);
        let actions = worker.step(Event::Restart, t0);
        assert_eq!(actions, [Action::RequestShutdown { pgid: 7 }]);
        let actions = worker.step(
            Event::Exited {
                status: ExitKind::Signal(15),
            },
            t0 + MS,
        );
        assert!(actions.contains(&Action::Spawn), "{actions:?}");
        assert_eq!(worker.restarts, 0);
    }

    #[test]
    fn start_revives_a_stopped_or_errored_app_and_is_a_no_op_otherwise() {
        let t0 = Instant::now();
        let mut worker = connected(t0);
        assert!(worker.step(Event::Start, t0).is_empty());
        worker.step(Event::ForceStop, t0);
        worker.step(
            Event::Exited {
                status: ExitKind::Signal(9),
            },
            t0,
        );
        assert_eq!(state(&worker), "stopped");
        assert_eq!(worker.step(Event::Start, t0), [Action::Spawn]);
        worker.step(
            Event::SpawnFailed {
                error: "gone".into(),
            },
            t0,
        );
        assert_eq!(worker.step(Event::Restart, t0), [Action::Spawn]);
    }

    fn with_policy(policy: RestartPolicy) -> Worker {
        Worker::new(Timing { policy, ..timing() })
    }

    fn exit_with(worker: &mut Worker, code: i32, at: Instant) -> Vec<Action> {
        worker.step(
            Event::Exited {
                status: ExitKind::Code(code),
            },
            at,
        )
    }

    #[test]
    fn more_restarts_than_the_budget_within_the_window_mark_the_app_errored() {
        let t0 = Instant::now();
        let mut worker = with_policy(RestartPolicy {
            max_restarts: 3,
            restart_window: Duration::from_secs(60),
            ..RestartPolicy::default()
        });
        let mut now = t0;
        for round in 0..3 {
            worker.step(Event::Spawned { pid: 7 }, now);
            now += Duration::from_secs(2);
            let actions = exit_with(&mut worker, 1, now);
            assert!(
                actions.contains(&Action::Spawn),
                "round {round}: {actions:?}"
            );
        }
        worker.step(Event::Spawned { pid: 7 }, now);
        now += Duration::from_secs(2);
        let actions = exit_with(&mut worker, 1, now);
        assert!(!actions.contains(&Action::Spawn), "{actions:?}");
        assert!(actions.contains(&Action::Report(Report::GaveUp {
            restarts: 4,
            window: Duration::from_secs(60)
        })));
        let Phase::Errored { why } = &worker.phase else {
            panic!("not errored: {:?}", worker.phase);
        };
        assert!(why.contains("failed 4 times within 1m00s"), "{why}");
        assert_eq!(worker.restarts, 3);
        assert!(why.contains("exit code 1"), "{why}");
        // An operator's start clears it.
        assert_eq!(worker.step(Event::Start, now), [Action::Spawn]);
    }

    #[test]
    fn restarts_older_than_the_window_leave_the_budget() {
        let t0 = Instant::now();
        let mut worker = with_policy(RestartPolicy {
            max_restarts: 2,
            restart_window: Duration::from_secs(10),
            ..RestartPolicy::default()
        });
        let mut now = t0;
        for round in 0..6 {
            worker.step(Event::Spawned { pid: 7 }, now);
            now += Duration::from_secs(6);
            let actions = exit_with(&mut worker, 1, now);
            assert!(
                actions.contains(&Action::Spawn),
                "round {round}: {actions:?}"
            );
        }
    }

    #[test]
    fn autorestart_on_failure_and_never() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(5);
        let mut on_failure = with_policy(RestartPolicy {
            autorestart: Autorestart::OnFailure,
            ..RestartPolicy::default()
        });
        on_failure.step(Event::Spawned { pid: 7 }, t0);
        assert!(!exit_with(&mut on_failure, 0, later).contains(&Action::Spawn));
        assert_eq!(state(&on_failure), "stopped");
        assert_eq!(on_failure.restarts, 0);
        on_failure.step(Event::Start, later);
        on_failure.step(Event::Spawned { pid: 8 }, later);
        assert!(
            exit_with(&mut on_failure, 2, later + Duration::from_secs(5)).contains(&Action::Spawn)
        );

        let mut never = with_policy(RestartPolicy {
            autorestart: Autorestart::Never,
            ..RestartPolicy::default()
        });
        never.step(Event::Spawned { pid: 7 }, t0);
        assert!(!exit_with(&mut never, 1, later).contains(&Action::Spawn));
        assert_eq!(state(&never), "stopped");
        assert_eq!(never.last_exit.as_deref(), Some("exit code 1 after 5.0s"));
    }

    #[test]
    fn on_failure_treats_the_clean_exit_codes_as_a_stop() {
        let t0 = Instant::now();
        let mut worker = with_policy(RestartPolicy {
            autorestart: Autorestart::OnFailure,
            clean_exit_codes: ExitCodes::parse("0, 3,143").unwrap(),
            ..RestartPolicy::default()
        });
        worker.step(Event::Spawned { pid: 7 }, t0);
        assert!(!exit_with(&mut worker, 3, t0 + Duration::from_secs(2)).contains(&Action::Spawn));
        assert_eq!(state(&worker), "stopped");
        worker.step(Event::Start, t0 + Duration::from_secs(3));
        worker.step(Event::Spawned { pid: 8 }, t0 + Duration::from_secs(3));
        // 0 is only clean when listed: here it is; 4 is not.
        assert!(exit_with(&mut worker, 4, t0 + Duration::from_secs(5)).contains(&Action::Spawn));
        assert_eq!(ExitCodes::parse("0,3,143").unwrap().codes(), [0, 3, 143]);
        assert!(ExitCodes::parse("256").is_err());
        assert!(ExitCodes::parse("a").is_err());
        assert!(!ExitCodes::default().contains(-1));
    }

    #[test]
    fn min_uptime_restart_delay_and_backoff_base_shape_the_delays() {
        let t0 = Instant::now();
        let mut worker = with_policy(RestartPolicy {
            min_uptime: Duration::from_secs(5),
            restart_delay: 300 * MS,
            backoff_base: 200 * MS,
            max_restarts: 0,
            ..RestartPolicy::default()
        });
        let mut at = t0;
        let mut delays = Vec::new();
        // Three runs of 2 s (under min_uptime: quick), then one of 6 s.
        for uptime in [2, 2, 2, 6] {
            worker.step(Event::Spawned { pid: 7 }, at);
            at += Duration::from_secs(uptime);
            exit_with(&mut worker, 1, at);
            let Phase::Backoff { until } = worker.phase else {
                panic!("no backoff: {:?}", worker.phase);
            };
            delays.push(until - at);
            at = until;
            worker.step(Event::Timer { scheduled: at }, at);
        }
        // max(restart_delay, backoff): 300 (200 < 300), 400, 800; a stable run: restart_delay.
        assert_eq!(delays, [300 * MS, 400 * MS, 800 * MS, 300 * MS]);
    }

    #[test]
    fn a_pong_over_the_memory_limit_restarts_gracefully() {
        let t0 = Instant::now();
        let mut worker = with_policy(RestartPolicy {
            max_memory: Some(100 << 20),
            ..RestartPolicy::default()
        });
        worker.step(Event::Spawned { pid: 7 }, t0);
        worker.step(Event::MonitorConnected, t0);
        assert!(worker
            .step(
                Event::Pong {
                    rss: Some(100 << 20),
                    stack_on_sigint: false,
                },
                t0
            )
            .is_empty());
        let actions = worker.step(
            Event::Pong {
                rss: Some((100 << 20) + 1),
                stack_on_sigint: false,
            },
            t0 + MS,
        );
        assert_eq!(
            actions,
            [
                Action::Report(Report::MemoryExceeded {
                    pid: 7,
                    rss: (100 << 20) + 1,
                    limit: 100 << 20
                }),
                Action::RequestShutdown { pgid: 7 },
            ]
        );
        assert_eq!((worker.restarts, worker.hangs), (1, 0));
        let actions = worker.step(
            Event::Exited {
                status: ExitKind::Signal(15),
            },
            t0 + 2 * MS,
        );
        assert!(actions.contains(&Action::Spawn), "{actions:?}");
    }

    #[test]
    fn a_hang_over_the_budget_ends_errored_once_the_process_is_gone() {
        let t0 = Instant::now();
        let mut worker = with_policy(RestartPolicy {
            max_restarts: 1,
            ..RestartPolicy::default()
        });
        worker.recent_restarts.push_back(t0);
        worker.step(Event::Spawned { pid: 7 }, t0);
        worker.step(Event::MonitorConnected, t0);
        while !matches!(worker.phase, Phase::Stopping { .. }) {
            fire(&mut worker);
        }
        let actions = worker.step(
            Event::Exited {
                status: ExitKind::Signal(9),
            },
            t0 + Duration::from_secs(3),
        );
        assert!(!actions.contains(&Action::Spawn), "{actions:?}");
        assert_eq!(state(&worker), "errored");
        assert_eq!((worker.hangs, worker.restarts), (1, 0));
    }

    #[test]
    fn a_failed_spawn_backs_off_and_retries_until_the_budget_is_spent() {
        let t0 = Instant::now();
        let mut worker = with_policy(RestartPolicy {
            max_restarts: 2,
            ..RestartPolicy::default()
        });
        let mut now = t0;
        for round in 0..2 {
            worker.step(
                Event::SpawnFailed {
                    error: "no such file".into(),
                },
                now,
            );
            assert_eq!(state(&worker), "backoff", "round {round}");
            assert_eq!(
                worker.last_exit.as_deref(),
                Some("spawn failed: no such file")
            );
            let (at, actions) = fire(&mut worker);
            assert_eq!(actions, [Action::Spawn], "round {round}");
            now = at;
        }
        worker.step(
            Event::SpawnFailed {
                error: "no such file".into(),
            },
            now,
        );
        let Phase::Errored { why } = &worker.phase else {
            panic!("not errored: {:?}", worker.phase);
        };
        assert!(why.contains("spawn failed: no such file"), "{why}");
        assert_eq!(worker.restarts, 2);
    }

    #[test]
    fn a_failed_spawn_that_succeeds_on_retry_runs() {
        let t0 = Instant::now();
        let mut worker = Worker::new(timing());
        worker.step(
            Event::SpawnFailed {
                error: "no such file".into(),
            },
            t0,
        );
        let (at, actions) = fire(&mut worker);
        assert_eq!(actions, [Action::Spawn]);
        worker.step(Event::Spawned { pid: 9 }, at);
        assert_eq!(state(&worker), "starting");
    }

    #[test]
    fn ready_timeouts_in_a_row_over_the_budget_end_errored_however_slow() {
        let t0 = Instant::now();
        let mut worker = cluster(t0, false);
        worker.timing.policy.max_restarts = 2;
        let mut now = t0;
        for round in 0..3 {
            // Far apart: the window alone would never see more than one of them.
            now += Duration::from_secs(600);
            worker.step(Event::Spawned { pid: 7 }, now);
            now += 2_000 * MS;
            worker.step(Event::Timer { scheduled: now }, now);
            let actions = worker.step(
                Event::Exited {
                    status: ExitKind::Signal(9),
                },
                now,
            );
            if round < 2 {
                assert!(
                    actions.contains(&Action::Spawn),
                    "round {round}: {actions:?}"
                );
            }
        }
        let Phase::Errored { why } = &worker.phase else {
            panic!("not errored: {:?}", worker.phase);
        };
        assert!(why.contains("not ready 3 times in a row"), "{why}");
        assert_eq!(worker.finished, Some(false));
    }

    /// A cluster-mode worker: ready only at `Ready`, within 2 s.
    fn cluster(t0: Instant, fail_fast: bool) -> Worker {
        let mut worker = Worker::new(timing());
        worker.ready_timeout = Some(2_000 * MS);
        worker.fail_fast = fail_fast;
        worker.step(Event::Spawned { pid: 7 }, t0);
        worker.step(Event::MonitorConnected, t0);
        worker
    }

    #[test]
    fn a_stop_without_a_monitor_sends_sigterm() {
        let t0 = Instant::now();
        let mut worker = Worker::new(timing());
        worker.step(Event::Spawned { pid: 7 }, t0);
        let actions = worker.step(Event::Stop, t0 + MS);
        assert_eq!(
            actions,
            [Action::SignalGroup {
                pgid: 7,
                signal: StopSignal::Terminate
            }]
        );
    }

    #[test]
    fn a_cluster_worker_is_ready_at_ready_not_at_its_first_pong() {
        let t0 = Instant::now();
        let mut worker = cluster(t0, true);
        fire(&mut worker);
        worker.step(
            Event::Pong {
                rss: None,
                stack_on_sigint: false,
            },
            t0 + MS,
        );
        assert_eq!(state(&worker), "starting");
        let actions = worker.step(Event::Ready, t0 + 300 * MS);
        assert_eq!(
            actions,
            [Action::Report(Report::Ready {
                pid: 7,
                after: 300 * MS
            })]
        );
        assert_eq!(state(&worker), "running");
        assert!(!worker.fail_fast, "readiness ends the fail-fast probation");
        // A second Ready changes nothing.
        assert_eq!(worker.step(Event::Ready, t0 + 400 * MS), []);
    }

    #[test]
    fn a_fail_fast_worker_that_misses_its_ready_timeout_is_killed_and_rests_errored() {
        let t0 = Instant::now();
        let mut worker = cluster(t0, true);
        let deadline = t0 + 2_000 * MS;
        // Keep it answering heartbeats up to the deadline: only readiness is missing.
        let mut now = t0;
        while now < deadline {
            let at = worker.next_deadline().expect("a deadline");
            assert!(at <= deadline);
            let actions = worker.step(Event::Timer { scheduled: at }, at);
            now = at;
            if at == deadline {
                assert_eq!(
                    actions,
                    [
                        Action::Report(Report::NotReady {
                            pid: 7,
                            waited: 2_000 * MS
                        }),
                        Action::SignalGroup {
                            pgid: 7,
                            signal: StopSignal::Kill
                        },
                    ]
                );
                break;
            }
            worker.step(
                Event::Pong {
                    rss: None,
                    stack_on_sigint: false,
                },
                at + MS,
            );
        }
        assert_eq!(state(&worker), "stopping");
        worker.step(
            Event::Exited {
                status: ExitKind::Signal(9),
            },
            deadline + MS,
        );
        match &worker.phase {
            Phase::Errored { why } => assert!(why.contains("not ready within 2.0s"), "{why}"),
            other => panic!("expected errored, got {other:?}"),
        }
        assert_eq!(worker.restarts, 0);
    }

    #[test]
    fn a_fail_fast_worker_that_exits_before_ready_rests_errored_without_a_restart() {
        let t0 = Instant::now();
        let mut worker = cluster(t0, true);
        let actions = worker.step(
            Event::Exited {
                status: ExitKind::Code(1),
            },
            t0 + 50 * MS,
        );
        assert!(!actions.contains(&Action::Spawn));
        match &worker.phase {
            Phase::Errored { why } => {
                assert!(why.starts_with("exited before it was ready"), "{why}")
            }
            other => panic!("expected errored, got {other:?}"),
        }
    }

    #[test]
    fn an_ordinary_cluster_worker_that_misses_its_ready_timeout_is_restarted() {
        let t0 = Instant::now();
        let mut worker = cluster(t0, false);
        worker.step(Event::MonitorLost, t0);
        // Unmonitored, the start grace (1 s) makes it ready before the 2 s ready timeout.
        let (at, actions) = fire(&mut worker);
        assert_eq!(at, t0 + 1_000 * MS);
        assert_eq!(actions, [Action::Report(Report::Unmonitored)]);
        assert_eq!(state(&worker), "running");

        let mut worker = cluster(t0, false);
        worker.step(
            Event::Timer {
                scheduled: t0 + 2_000 * MS,
            },
            t0 + 2_000 * MS,
        );
        assert_eq!(state(&worker), "stopping");
        let actions = worker.step(
            Event::Exited {
                status: ExitKind::Signal(9),
            },
            t0 + 2_001 * MS,
        );
        assert!(actions.contains(&Action::Spawn));
        assert_eq!(worker.restarts, 1);
    }
}
