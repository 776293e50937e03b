//! Heartbeats: the ping grid, misses, late checks, probes, hangs and their stacks, the memory guard.

use super::*;

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

/// A monitor that captures the stack itself is asked for it, whatever the app does with SIGINT,
/// also before its first pong (a hang while starting); SIGKILL follows the stack's arrival, or
/// the interrupt timeout when the JS thread never takes the interrupt.
#[test]
fn a_monitor_that_captures_the_stack_is_asked_then_killed_on_arrival_or_at_the_timeout() {
    for arrives in [true, false] {
        let t0 = Instant::now();
        let mut worker = connected(t0);
        worker.step(Event::MonitorCapturesStack, t0);
        // No pong ever: the loop hung while starting.
        let (at, seq) = until_probe(&mut worker);
        let actions = worker.step(
            Event::ProbeReply {
                seq,
                queued_for: Some(1_000 * MS),
            },
            at,
        );
        assert!(
            matches!(
                actions[0],
                Action::Report(Report::Hung {
                    stack: StackPlan::Interrupt,
                    ..
                })
            ),
            "{actions:?}"
        );
        assert_eq!(actions[1], Action::RequestStack { pid: 7 });
        assert_eq!(worker.next_deadline(), Some(at + INTERRUPT_STACK_TIMEOUT));
        let kill = Action::SignalGroup {
            pgid: 7,
            signal: StopSignal::Kill,
        };
        if arrives {
            assert_eq!(worker.step(Event::StackReceived, at + MS), [kill]);
            assert_eq!(worker.next_deadline(), None);
            // A second (late) stack changes nothing.
            assert!(worker.step(Event::StackReceived, at + 2 * MS).is_empty());
        } else {
            let (when, actions) = fire(&mut worker);
            assert_eq!(when, at + INTERRUPT_STACK_TIMEOUT);
            assert_eq!(
                actions,
                [Action::Report(Report::InterruptTimeout { pid: 7 }), kill]
            );
        }
    }
}
