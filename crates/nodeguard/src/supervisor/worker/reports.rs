//! The machine's reports as log lines and describe events, and the hang's stack.

use crate::core::exit::human;
use crate::core::machine::{HangEvidence, Phase, Report, StackPlan, StopSignal, STACK_TIMEOUT};
use crate::io::forensics::{self};
use crate::io::logfile::timestamp;
use crate::io::platform;
use nodeguard_proto::control::AppEvent;
use std::time::{Duration, SystemTime};

use super::*;

/// What confirmed a hang, for its log line.
pub(super) fn evidence_text(evidence: HangEvidence) -> String {
    match evidence {
        HangEvidence::StuckInJs { queued_for } => {
            format!("a ping waited {} for the JS thread", human(queued_for))
        }
        HangEvidence::NoAnswer => "the monitor's own thread did not answer either".to_string(),
    }
}

/// Why missed heartbeats were not the app's fault, for its log line.
pub(super) fn disproof_text(queued_for: Option<Duration>) -> String {
    match queued_for {
        Some(queued_for) => format!(
            "the monitor had the latest ping for only {}",
            human(queued_for)
        ),
        None => "the monitor had no ping waiting for JS".to_string(),
    }
}

impl WorkerTask {
    /// For a hang: remembers to collect the stack, or returns the line saying why there is none.
    pub(super) fn hang_note(&mut self, report: &Report) -> Option<String> {
        let Report::Hung {
            silent_for, stack, ..
        } = report
        else {
            return None;
        };
        let why = match stack {
            StackPlan::Requested => {
                self.capture = Some(*silent_for);
                return None;
            }
            StackPlan::AppHandlesSigint => {
                "the app listens for SIGINT, which turns off Node's --trace-sigint"
            }
            StackPlan::ProcessUnresponsive => {
                "the process did not answer at all (not even the monitor's own thread)"
            }
        };
        Some(forensics::summary(*silent_for, Err(why)))
    }

    /// The hung process exited after SIGINT (or SIGKILL at the deadline): reads the stack it
    /// printed and records where it was stuck.
    pub(super) async fn report_stack(&mut self, silent_for: Duration) {
        if let Phase::Stopping { pid, .. } = self.machine.phase {
            // Whatever else holds the stderr pipe goes now, so the pipe ends.
            let _ = platform::signal_group(pid, StopSignal::Kill);
        }
        let Some(tap) = self.tap.clone() else {
            return;
        };
        let lines = tap.finish(STACK_DRAIN).await;
        let text = match forensics::parse_trace(&lines, &self.spec.cwd) {
            Some(frames) => forensics::summary(silent_for, Ok(&frames)),
            None => forensics::summary(
                silent_for,
                Err(&format!(
                    "the process printed none within {} of SIGINT",
                    human(STACK_TIMEOUT)
                )),
            ),
        };
        self.note(text).await;
    }

    /// Records a forensic line: in `describe`, the supervisor's log, and the app's own log.
    pub(super) async fn note(&mut self, text: String) {
        tracing::error!("{text}");
        self.record("stack", text.clone());
        if let Some(origin) = &self.origin {
            self.ctx
                .output
                .note(origin, format!("[nodeguard] {text}"))
                .await;
        }
    }

    pub(super) fn record(&mut self, kind: &str, message: String) {
        self.remember(AppEvent {
            at: timestamp(SystemTime::now()),
            kind: kind.to_string(),
            message,
        });
    }

    /// Logs a report and keeps it in the event history.
    pub(super) fn log(&mut self, report: Report) {
        let (kind, message) = self.describe_report(&report);
        self.record(kind, message);
        match report {
            Report::Started { pid } => tracing::info!(pid, "started"),
            Report::Ready { pid, after } => tracing::info!(pid, "ready after {}", human(after)),
            Report::NotReady { pid, waited } => tracing::error!(
                pid,
                "not ready within {}; killing it",
                human(waited)
            ),
            Report::Exited {
                pid,
                status,
                uptime,
                restart_in,
            } => match restart_in {
                Some(delay) if delay.is_zero() => {
                    tracing::warn!(pid, "exited with {status} after {}; restarting", human(uptime))
                }
                Some(delay) => tracing::warn!(
                    pid,
                    "exited with {status} after {}; restarting in {}",
                    human(uptime),
                    human(delay)
                ),
                None => tracing::warn!(pid, "exited with {status} after {}", human(uptime)),
            },
            Report::Hung {
                pid,
                silent_for,
                misses,
                evidence,
                ..
            } => tracing::error!(
                pid,
                "hung: event loop silent for {} ({misses} heartbeats missed; {}); killing and restarting",
                human(silent_for),
                evidence_text(evidence)
            ),
            Report::HangDisproved { misses, queued_for } => tracing::warn!(
                "{misses} heartbeats missed, but {}: not a hang",
                disproof_text(queued_for)
            ),
            Report::StackTimeout { pid } => tracing::warn!(
                pid,
                "no stack within {} of SIGINT; sending SIGKILL",
                human(STACK_TIMEOUT)
            ),
            Report::KillTimeout { pid } => tracing::warn!(
                pid,
                "still running {} after SIGTERM; sending SIGKILL",
                human(self.spec.timing.kill_timeout)
            ),
            Report::Stopped { pid, status } => tracing::info!(pid, "stopped ({status})"),
            Report::SpawnFailed { error } => tracing::error!("{error}"),
            Report::MemoryExceeded { pid, rss, limit } => tracing::warn!(
                pid,
                "memory: rss {} over the limit of {}; restarting gracefully",
                crate::core::units::bytes(rss),
                crate::core::units::bytes(limit)
            ),
            Report::GaveUp { restarts, window } => tracing::error!(
                "{restarts} failures within {}: over the restart budget; giving up until an operator restarts it",
                human(window)
            ),
            Report::Unmonitored => tracing::warn!(
                "no monitor connected within {}; hang detection is off for this process",
                human(self.spec.timing.start_grace)
            ),
            Report::LateCheckVoided { late_by } => tracing::warn!(
                "supervisor ran {} late; not counting a missed heartbeat",
                human(late_by)
            ),
        }
    }

    /// The event-history form of a report: its kind and one line.
    pub(super) fn describe_report(&self, report: &Report) -> (&'static str, String) {
        match report {
            Report::Started { pid } => ("started", format!("pid {pid}")),
            Report::Ready { pid, after } => ("ready", format!("pid {pid}: ready after {}", human(*after))),
            Report::NotReady { pid, waited } => (
                "not_ready",
                format!(
                    "pid {pid}: not ready within {} (no listen on the shared socket, or no \
                     monitor.ready() with wait-ready); killed",
                    human(*waited)
                ),
            ),
            Report::Exited {
                pid,
                status,
                uptime,
                restart_in,
            } => (
                "exited",
                match restart_in {
                    Some(delay) if delay.is_zero() => {
                        format!("pid {pid}: {status} after {}; restarted at once", human(*uptime))
                    }
                    Some(delay) => format!(
                        "pid {pid}: {status} after {}; restart in {} (backoff)",
                        human(*uptime),
                        human(*delay)
                    ),
                    None => format!("pid {pid}: {status} after {}", human(*uptime)),
                },
            ),
            Report::Hung {
                pid,
                silent_for,
                misses,
                evidence,
                ..
            } => (
                "hung",
                format!(
                    "pid {pid}: event loop silent for {} ({misses} heartbeats missed; {}); killed and restarted",
                    human(*silent_for),
                    evidence_text(*evidence)
                ),
            ),
            Report::HangDisproved { misses, queued_for } => (
                "hang_disproved",
                format!(
                    "{misses} heartbeats missed, but {}: not a hang",
                    disproof_text(*queued_for)
                ),
            ),
            Report::StackTimeout { pid } => (
                "stack_timeout",
                format!("pid {pid}: no stack within {} of SIGINT; sent SIGKILL", human(STACK_TIMEOUT)),
            ),
            Report::KillTimeout { pid } => (
                "kill_timeout",
                format!(
                    "pid {pid}: still running {} after SIGTERM; sent SIGKILL",
                    human(self.spec.timing.kill_timeout)
                ),
            ),
            Report::Stopped { pid, status } => ("stopped", format!("pid {pid}: {status}")),
            Report::SpawnFailed { error } => ("spawn_failed", error.clone()),
            Report::MemoryExceeded { pid, rss, limit } => (
                "memory",
                format!(
                    "pid {pid}: rss {} over the limit of {}; restarting gracefully",
                    crate::core::units::bytes(*rss),
                    crate::core::units::bytes(*limit)
                ),
            ),
            Report::GaveUp { restarts, window } => (
                "errored",
                format!(
                    "{restarts} failures within {}: over the restart budget; not restarting until an operator does",
                    human(*window)
                ),
            ),
            Report::Unmonitored => (
                "unmonitored",
                "no monitor connected; hang detection is off for this process".to_string(),
            ),
            Report::LateCheckVoided { late_by } => (
                "late_check",
                format!("supervisor ran {} late; a heartbeat check was voided", human(*late_by)),
            ),
        }
    }
}
