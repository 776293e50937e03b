//! Scenario and table tests of the machine, one file per concern; shared fixtures here.

mod budget;
mod cluster;
mod heartbeat;
mod stop;

use super::*;

pub(super) const MS: Duration = Duration::from_millis(1);

pub(super) fn timing() -> Timing {
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
pub(super) fn connected(t0: Instant) -> Worker {
    let mut worker = Worker::new(timing());
    worker.step(Event::Spawned { pid: 7 }, t0);
    worker.step(Event::MonitorConnected, t0);
    worker
}

pub(super) fn pong() -> Event {
    Event::Pong {
        rss: None,
        stack_on_sigint: false,
    }
}

/// Fires the timer until the last allowed miss sends a probe; returns when and its seq.
pub(super) fn until_probe(worker: &mut Worker) -> (Instant, u64) {
    for _ in 0..50 {
        let (at, actions) = fire(worker);
        if let Some(Action::SendProbe { seq }) = actions.last() {
            return (at, *seq);
        }
    }
    panic!("no probe sent");
}

/// Fires the timer at exactly its deadline and returns the actions.
pub(super) fn fire(worker: &mut Worker) -> (Instant, Vec<Action>) {
    let at = worker.next_deadline().expect("a deadline");
    (at, worker.step(Event::Timer { scheduled: at }, at))
}

pub(super) fn state(worker: &Worker) -> &'static str {
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

pub(super) fn with_policy(policy: RestartPolicy) -> Worker {
    Worker::new(Timing { policy, ..timing() })
}

pub(super) fn exit_with(worker: &mut Worker, code: i32, at: Instant) -> Vec<Action> {
    worker.step(
        Event::Exited {
            status: ExitKind::Code(code),
        },
        at,
    )
}

/// A cluster-mode worker: ready only at `Ready`, within 2 s.
pub(super) fn cluster(t0: Instant, fail_fast: bool) -> Worker {
    let mut worker = Worker::new(timing());
    worker.ready_timeout = Some(2_000 * MS);
    worker.fail_fast = fail_fast;
    worker.step(Event::Spawned { pid: 7 }, t0);
    worker.step(Event::MonitorConnected, t0);
    worker
}
