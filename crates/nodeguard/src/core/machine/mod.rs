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
//! whose monitor captures the JS stack itself (V8's interrupt) is asked for it, and SIGKILL follows
//! its arrival or [`INTERRUPT_STACK_TIMEOUT`]; else one whose process would print its stack on
//! SIGINT (`--trace-sigint`) gets a SIGINT first, and SIGKILL after [`STACK_TIMEOUT`] at the
//! latest.
//!
//! Readiness: an ordinary app is ready at its first pong. A cluster-mode app (shared listen
//! addresses, or wait-ready) is ready only at a `Ready` event from its monitor, which must come
//! within the ready timeout; one that misses it is killed. A reload's replacement instance is
//! `fail_fast`: if it exits or misses the timeout before it was ever ready, it rests errored with
//! the reason instead of being restarted, so the reload can abort.

mod exits;
mod heartbeats;
mod stopping;
#[cfg(test)]
mod tests;

use std::time::Duration;

use tokio::time::Instant;

use crate::core::duration::MAX_DURATION;

use crate::core::exit::ExitKind;

pub use crate::core::heartbeat::{on_grid, Heartbeat, OutstandingPing, OutstandingProbe};
pub use crate::core::policy::*;
pub use crate::core::report::{HangEvidence, Report, StackPlan};

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
    /// The connected monitor captures the JS stack itself (through V8's interrupt).
    MonitorCapturesStack,
    /// The stack asked for with [`Action::RequestStack`] arrived.
    StackReceived,
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
    /// SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2: an app's `kill_signal`, sent where the machine
    /// says `Terminate`.
    Interrupt,
    Hangup,
    Quit,
    User1,
    User2,
}

impl StopSignal {
    /// The signals `kill_signal` may name, with and without the `SIG` prefix, as PM2 accepts them.
    pub const NAMES: &'static [(&'static str, StopSignal)] = &[
        ("SIGTERM", StopSignal::Terminate),
        ("SIGINT", StopSignal::Interrupt),
        ("SIGHUP", StopSignal::Hangup),
        ("SIGQUIT", StopSignal::Quit),
        ("SIGUSR1", StopSignal::User1),
        ("SIGUSR2", StopSignal::User2),
        ("SIGKILL", StopSignal::Kill),
    ];

    /// `SIGINT`, `sigint`, `INT`; an unknown name is an error naming the accepted ones.
    pub fn parse(name: &str) -> Result<Self, String> {
        let upper = name.trim().to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        Self::NAMES
            .iter()
            .find(|(known, _)| *known == full)
            .map(|(_, signal)| *signal)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::NAMES.iter().map(|(known, _)| *known).collect();
                format!("unknown signal '{name}' (one of {})", names.join(", "))
            })
    }

    /// `SIGINT` and so on.
    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, signal)| *signal == self)
            .map_or("SIGTERM", |(known, _)| known)
    }
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
    /// Ask the monitor for the JS stack (captured through V8's interrupt); SIGKILL follows its
    /// arrival ([`Event::StackReceived`]) or [`INTERRUPT_STACK_TIMEOUT`].
    RequestStack {
        pid: u32,
    },
    Report(Report),
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
    /// The current capture (`Phase::Stopping { capturing: true }`) is the monitor's interrupt,
    /// not SIGINT.
    pub capture_by_interrupt: bool,
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
            capture_by_interrupt: false,
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
            Event::MonitorCapturesStack => {
                if let Phase::Live { heartbeat, .. } = &mut self.phase {
                    heartbeat.stack_by_interrupt = true;
                }
            }
            Event::StackReceived => {
                if let Phase::Stopping {
                    pid,
                    kill_at,
                    capturing: capturing @ true,
                    ..
                } = &mut self.phase
                {
                    *capturing = false;
                    *kill_at = None;
                    actions.push(Action::SignalGroup {
                        pgid: *pid,
                        signal: StopSignal::Kill,
                    });
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
                            crate::core::units::bytes(rss),
                            crate::core::units::bytes(limit)
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
                stack_by_interrupt: false,
            },
        };
        actions.push(Action::Report(Report::Started { pid }));
    }
}
