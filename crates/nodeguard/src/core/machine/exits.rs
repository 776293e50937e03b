//! How the machine answers an exit: restart now, after a backoff, or rest (stopped, finished,
//! errored once the restart budget is spent).

use super::*;

impl Worker {
    pub(super) fn on_exited(&mut self, status: ExitKind, now: Instant, actions: &mut Vec<Action>) {
        match self.phase.clone() {
            Phase::Live {
                pid,
                spawned_at,
                ready,
                ..
            } => {
                let uptime = now.saturating_duration_since(spawned_at);
                self.last_exit = Some(format!(
                    "{status} after {}",
                    crate::core::exit::human(uptime)
                ));
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
                            crate::core::exit::human(uptime)
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
                        self.last_exit = Some(format!(
                            "{status} after {}",
                            crate::core::exit::human(uptime)
                        ));
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
    pub(super) fn on_spawn_failed(
        &mut self,
        error: String,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
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
        self.phase = Phase::Backoff {
            until: later(now, delay),
        };
    }

    /// Records a restart about to happen; false (with a report) if it would exceed the budget.
    pub(super) fn within_budget(&mut self, now: Instant, actions: &mut Vec<Action>) -> bool {
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
    pub(super) fn give_up(&mut self) {
        let policy = self.timing.policy;
        self.finished = Some(false);
        let why = format!(
            "failed {} times within {} (the budget is {} restarts); not restarting until an \
             operator does (last: {})",
            self.recent_restarts.len(),
            crate::core::exit::human(policy.restart_window),
            policy.max_restarts,
            self.last_exit.clone().unwrap_or_default()
        );
        self.recent_restarts.clear();
        self.phase = Phase::Errored { why };
    }

    /// Over budget while a process still runs: stop it, then rest as errored.
    pub(super) fn stop_after_budget(&mut self, pid: u32, now: Instant) {
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
    pub(super) fn restart_delay(&mut self, uptime: Duration) -> Duration {
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
}
