//! What an app task publishes for status, describe and metrics: the snapshot and the event history.

use crate::config::AppSpec;
use crate::core::machine::Phase;
use crate::io::proctree::TreeSnapshot;
use nodeguard_proto::control::{AppEvent, AppState, AppStatus};
use nodeguard_proto::worker::{LoopDelay, MemoryUsage};
use std::time::Duration;
use tokio::time::Instant;

use super::*;

/// What `status` shows of one app, kept with `Instant`s and turned into ages on demand.
#[derive(Debug, Clone)]
pub struct WorkerSnapshot {
    pub state: AppState,
    pub pid: Option<u32>,
    pub restarts: u64,
    pub hangs: u64,
    pub spawned_at: Option<Instant>,
    pub monitored: bool,
    /// The monitored process, when it is not the main one (an app run through `npm start`).
    pub monitored_descendant: Option<u32>,
    pub memory: Option<MemoryUsage>,
    pub loop_delay: Option<LoopDelay>,
    pub last_pong_at: Option<Instant>,
    pub pong_round_trip: Option<Duration>,
    pub last_exit: Option<String>,
    /// Came to rest on its own: cleanly or not (see [`Worker::finished`]).
    pub finished: Option<bool>,
}

impl WorkerSnapshot {
    pub(super) fn initial() -> Self {
        Self {
            state: AppState::Starting,
            pid: None,
            restarts: 0,
            hangs: 0,
            spawned_at: None,
            monitored: false,
            monitored_descendant: None,
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
        let age_ms = |at: Instant| crate::core::duration::millis(now.saturating_duration_since(at));
        let descendants = self.pid.and_then(|pid| tree.of(pid));
        let tree_rss = self
            .memory
            .map(|memory| match (self.monitored_descendant, descendants) {
                // The monitored process is among the descendants: add the main process's own.
                (Some(_), Some(tree)) => tree.root_rss.saturating_add(tree.descendants_rss),
                _ => memory
                    .rss
                    .saturating_add(descendants.map_or(0, |tree| tree.descendants_rss)),
            });
        let processes = self.pid.map(|_| {
            let descendants = descendants.map_or(0, |tree| tree.descendants.len());
            u32::try_from(descendants).map_or(u32::MAX, |n| n.saturating_add(1))
        });
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
            cpu_percent: descendants.and_then(|tree| tree.cpu_percent),
        }
    }
}

impl WorkerTask {
    pub(super) fn publish(&self) {
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
        let monitored_descendant = self
            .connection
            .as_ref()
            .map(|c| c.pid)
            .filter(|monitored| Some(*monitored) != pid);
        let mut changed = None;
        self.snapshot.send_modify(|snapshot| {
            let before = (
                snapshot.state,
                snapshot.pid,
                snapshot.restarts,
                snapshot.hangs,
                snapshot.finished,
            );
            snapshot.state = state;
            snapshot.pid = pid;
            snapshot.spawned_at = spawned_at;
            snapshot.restarts = machine.restarts;
            snapshot.hangs = machine.hangs;
            snapshot.monitored = monitored;
            snapshot.monitored_descendant = monitored_descendant;
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
            let after = (
                snapshot.state,
                snapshot.pid,
                snapshot.restarts,
                snapshot.hangs,
                snapshot.finished,
            );
            if after != before {
                changed = Some(after);
            }
        });
        if let Some((state, pid, restarts, hangs, finished)) = changed {
            self.announce(Happening::State {
                state,
                pid,
                restarts,
                hangs,
                finished,
            });
        }
    }

    /// Publishes what happened to this app on the event bus.
    pub(super) fn announce(&self, what: Happening) {
        self.ctx.events.publish(BusEvent {
            app: self.spec.name.as_str().into(),
            id: self.spec.id,
            instance: self.spec.shown_instance(),
            at: crate::io::logfile::timestamp(std::time::SystemTime::now()),
            what,
        });
    }

    /// Keeps an event in the bounded history.
    pub(super) fn remember(&mut self, event: AppEvent) {
        if self.events.len() == EVENT_HISTORY {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}
