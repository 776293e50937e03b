//! The heartbeat's timer: pings, misses, late checks voided, the probe of the monitor's native
//! thread, and declaring a hang (stack first when the process can print one).

use super::*;

impl Worker {
    pub(super) fn on_timer(&mut self, scheduled: Instant, now: Instant, actions: &mut Vec<Action>) {
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
                    actions.push(Action::Report(if *capturing && self.capture_by_interrupt {
                        Report::InterruptTimeout { pid }
                    } else if *capturing {
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

    pub(super) fn on_probe_reply(
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

    /// The live process is hung: count it, then ask for its JS stack when it can give one (from
    /// its monitor, SIGKILL on arrival or after [`INTERRUPT_STACK_TIMEOUT`]; else SIGINT, SIGKILL
    /// after [`STACK_TIMEOUT`]), or kill it at once.
    pub(super) fn declare_hung(
        &mut self,
        now: Instant,
        evidence: HangEvidence,
        actions: &mut Vec<Action>,
    ) {
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
            HangEvidence::StuckInJs { .. } if heartbeat.stack_by_interrupt => StackPlan::Interrupt,
            HangEvidence::StuckInJs { .. } if heartbeat.stack_on_sigint => StackPlan::Requested,
            HangEvidence::StuckInJs { .. } => StackPlan::AppHandlesSigint,
        };
        self.hangs += 1;
        self.last_exit = Some(format!(
            "killed: event loop silent for {}",
            crate::core::exit::human(silent_for)
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
        let by_interrupt = stack == StackPlan::Interrupt;
        let capturing = by_interrupt || stack == StackPlan::Requested;
        self.capture_by_interrupt = by_interrupt;
        let wait = if by_interrupt {
            INTERRUPT_STACK_TIMEOUT
        } else {
            STACK_TIMEOUT
        };
        self.phase = Phase::Stopping {
            pid,
            spawned_at,
            kill_at: capturing.then(|| later(now, wait)),
            then,
            capturing,
        };
        actions.push(if by_interrupt {
            Action::RequestStack { pid }
        } else if capturing {
            Action::CaptureStack { pid }
        } else {
            Action::SignalGroup {
                pgid: pid,
                signal: StopSignal::Kill,
            }
        });
    }
}
