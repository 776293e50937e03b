//! Cluster instances: readiness from a Ready event, fail-fast replacements, ready timeouts.

use super::*;

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
