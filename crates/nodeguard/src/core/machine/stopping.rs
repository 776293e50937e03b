//! Stopping: graceful shutdown then SIGKILL at the kill timeout, operator stop/restart/force
//! stop, and an instance that missed its ready timeout.

use super::*;

impl Worker {
    /// A process missed its ready timeout: it is killed; a fail-fast one then rests errored, any
    /// other is restarted under the restart budget.
    pub(super) fn on_not_ready(
        &mut self,
        pid: u32,
        spawned_at: Instant,
        waited: Duration,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        self.last_exit = Some(format!(
            "not ready within {} (it must listen on its shared socket{})",
            crate::core::exit::human(waited),
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
    pub(super) fn stop_gracefully(
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

    pub(super) fn on_stop(&mut self, now: Instant, actions: &mut Vec<Action>) {
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

    pub(super) fn on_restart(&mut self, now: Instant, actions: &mut Vec<Action>) {
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

    pub(super) fn on_force_stop(&mut self, actions: &mut Vec<Action>) {
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
