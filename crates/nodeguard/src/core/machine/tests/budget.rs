//! Exits and restarts: backoff, the restart budget, autorestart modes and clean exit codes.

use super::*;

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
    assert!(exit_with(&mut on_failure, 2, later + Duration::from_secs(5)).contains(&Action::Spawn));

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
