//! Stopping: graceful shutdown, SIGKILL at the kill timeout, operator stop, restart and start.

use super::*;

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
